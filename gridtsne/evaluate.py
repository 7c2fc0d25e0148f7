"""Quality figures of a written layout: DPQ_p against its vectors, and neighbour label agreement.

Joins ``layout.parquet`` to the vectors table by ``uri`` (vectorised with Arrow) and to an
optional labels CSV (``path,label`` or ``uri,label``), where a label row matches an image whose
uri equals it or ends with ``/<path>``.
"""
import logging

import numpy as np
import pyarrow.compute as pc

from gridtsne import schema, storage
from gridtsne.labels import read_label_rows
from gridtsne.layout import read_vectors
from gridtsne.metrics import dpq, neighbour_label_agreement, sample_for_metrics

log = logging.getLogger(__name__)


def layout_url(url):
    """``url`` itself when it names a Parquet file, else ``<url>/layout.parquet``."""
    return url if str(url).endswith(".parquet") else storage.url_join(url, schema.LAYOUT_FILE)


def read_labels(url):
    """``{key: label}`` from a CSV with a ``label`` column and a ``uri`` or ``path`` column."""
    key, rows = read_label_rows(url)
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


def evaluate_layout(layout, vectors_url, labels_url=None, p=16, max_items=10_000, seed=0):
    """DPQ_p (on at most ``max_items`` images, a seeded sample) and label agreement of a layout.

    Returns a dict with ``images``, ``rows``, ``cols``, ``dpq`` (with ``p`` and
    ``dpq_items``), and, when labels are given, ``label_agreement`` and ``labelled``.
    """
    table = storage.read_parquet(layout_url(layout), columns=["uri", "row", "col"])
    meta = schema.read_metadata(table.schema)
    uri_v, _, vectors, _ = read_vectors(vectors_url)
    pos = pc.index_in(table.column("uri"), value_set=uri_v)
    if pos.null_count:
        missing = table.column("uri").filter(pc.is_null(pos))
        raise ValueError(f"{pos.null_count} laid-out images have no vector in {vectors_url!r}, "
                         f"e.g. {missing[0].as_py()!r}")
    pos = pos.to_numpy(zero_copy_only=False).astype(np.int64)
    row = table.column("row").to_numpy().astype(np.int64)
    col = table.column("col").to_numpy().astype(np.int64)
    result = {"images": len(row), "rows": meta.get("rows", int(row.max()) + 1),
              "cols": meta.get("cols", int(col.max()) + 1), "method": meta.get("method"), "p": p}
    pick = sample_for_metrics(len(row), max_items, seed)
    result["dpq"] = dpq(vectors[pos[pick]], row[pick], col[pick], p=p)
    result["dpq_items"] = len(pick)
    if labels_url:
        labels = match_labels(table.column("uri").to_pylist(), read_labels(labels_url))
        result["labelled"] = sum(lab is not None for lab in labels)
        if result["labelled"] == 0:
            raise ValueError(f"no laid-out image matches a row of {labels_url!r}")
        result["label_agreement"] = neighbour_label_agreement(row, col, labels)
    return result
