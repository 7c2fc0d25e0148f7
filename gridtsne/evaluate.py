"""Quality figures of a written layout: DPQ_p against its vectors, and neighbour label agreement.

Joins ``layout.parquet`` to the vectors table by ``uri`` (vectorised with Arrow) and to an
optional labels CSV (``path,label`` or ``uri,label``), where a label row matches an image whose
uri equals it or ends with ``/<path>``.
"""
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gridtsne import schema, storage
from gridtsne.labels import read_label_rows
from gridtsne.layout import _vector_matrix
from gridtsne.metrics import dpq, neighbour_label_agreement, sample_for_metrics

log = logging.getLogger(__name__)


def layout_url(url):
    """``url`` itself when it names a Parquet file, else ``<url>/layout.parquet``."""
    return url if str(url).endswith(".parquet") else storage.url_join(url, schema.LAYOUT_FILE)


def read_labels(url, storage_options=None):
    """``{key: label}`` from a CSV with a ``label`` column and a ``uri`` or ``path`` column."""
    key, rows = read_label_rows(url, storage_options)
    return {where.removeprefix("./") if key == "path" else where: label for where, label in rows}


def match_labels(uris, labels):
    """The label of each uri (None when unknown): exact uri, else the longest matching path
    suffix ``.../<path>``."""
    depths = sorted({k.count("/") + 1 for k in labels}, reverse=True)
    out = []
    for uri in uris:
        label = labels.get(uri)
        if label is None:
            parts = uri.split("/")
            for depth in depths:
                if depth < len(parts):
                    label = labels.get("/".join(parts[-depth:]))
                    if label is not None:
                        break
        out.append(label)
    return out


def read_sampled_vectors(vectors_url, uris, batch_size=8192, storage_options=None):
    """The vectors of ``uris`` only (a float32 matrix in their order), streamed from the table.

    Only the ``uri`` and ``vector`` columns are read, one batch at a time, and only the rows
    asked for are kept: scoring a 5,000 sample of a million-image map holds 5,000 vectors.

    Raises
    ------
    ValueError
        When one of ``uris`` has no row in the table.
    """
    unique, order = np.unique(np.asarray(list(uris), dtype=object).astype(str),
                              return_inverse=True)
    wanted = pa.array(unique.tolist(), pa.string())
    found = np.zeros(len(wanted), dtype=bool)
    out = None
    for batch in storage.iter_parquet_batches(vectors_url, columns=["uri", "vector"],
                                              batch_size=batch_size,
                                              storage_options=storage_options):
        keep = pc.is_in(batch.column("uri").cast(pa.string()), value_set=wanted)
        if not pc.any(keep).as_py():
            continue
        hit = batch.filter(keep)
        idx = pc.index_in(hit.column("uri").cast(pa.string()), value_set=wanted)
        idx = idx.to_numpy(zero_copy_only=False).astype(np.int64)
        column = hit.column("vector")
        dim = out.shape[1] if out is not None else pc.list_value_length(column)[0].as_py()
        vectors = _vector_matrix(column, dim, vectors_url)
        if out is None:
            out = np.empty((len(wanted), dim), dtype=np.float32)
        out[idx] = vectors
        found[idx] = True
    if not found.all():
        missing = wanted.filter(pa.array(~found))
        raise ValueError(f"{len(missing)} laid-out images have no vector in {vectors_url!r}, "
                         f"e.g. {missing[0].as_py()!r}")
    return out[order]


def label_figures(uris, row, col, labels_url, storage_options=None):
    """``labelled`` and ``label_agreement`` of a layout against a labels CSV.

    Raises
    ------
    ValueError
        When no laid-out image matches a row of the CSV (a wrong file, or paths relative to
        another folder).
    """
    labels = match_labels(uris, read_labels(labels_url, storage_options))
    labelled = sum(lab is not None for lab in labels)
    if labelled == 0:
        raise ValueError(f"no laid-out image matches a row of {str(labels_url)!r}")
    return {"labelled": labelled,
            "label_agreement": neighbour_label_agreement(row, col, labels)}


def evaluate_layout(layout, vectors_url, labels_url=None, p=16, max_items=10_000, seed=0,
                    labels_required=True, storage_options=None):
    """DPQ_p (on at most ``max_items`` images, a seeded sample) and label agreement of a layout.

    Only the sampled images' vectors are read (:func:`read_sampled_vectors`).

    Returns a dict with ``images``, ``rows``, ``cols``, ``dpq`` (with ``p`` and
    ``dpq_items``), and, when labels are given, ``label_agreement`` and ``labelled``. With
    ``labels_required=False`` a labels file that cannot be read or matches no image does not
    raise: the result says why under ``label_problem`` (a run then still publishes its valid
    version and reports the problem).
    """
    table = storage.read_parquet(layout_url(layout), columns=["uri", "row", "col"],
                                 storage_options=storage_options)
    meta = schema.read_metadata(table.schema)
    row = table.column("row").to_numpy().astype(np.int64)
    col = table.column("col").to_numpy().astype(np.int64)
    result = {"images": len(row), "rows": meta.get("rows", int(row.max()) + 1),
              "cols": meta.get("cols", int(col.max()) + 1), "method": meta.get("method"), "p": p}
    pick = sample_for_metrics(len(row), max_items, seed)
    sampled = table.column("uri").take(pa.array(pick)).to_pylist()
    vectors = read_sampled_vectors(vectors_url, sampled, storage_options=storage_options)
    result["dpq"] = dpq(vectors, row[pick], col[pick], p=p)
    result["dpq_items"] = len(pick)
    if labels_url:
        try:
            result.update(label_figures(table.column("uri").to_pylist(), row, col, labels_url,
                                        storage_options))
        except Exception as exc:
            if labels_required:
                raise
            log.warning("labels not scored: %s", exc)
            result["label_problem"] = f"{type(exc).__name__}: {exc}"
    return result
