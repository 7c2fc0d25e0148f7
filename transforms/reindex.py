"""Beam side of incremental re-indexing: what the previous version holds, and each file's fate.

Listed files are joined by ``uri`` with the rows of the version ``latest.json`` points to (a
CoGroupByKey, so millions of known images need no side input in memory). Unchanged images keep
their previous row, vector and thumbnail included, unread; new and changed ones are embedded.
Everything runs on workers: the launcher reads nothing from the output.
"""
import logging
import typing

import apache_beam as beam
import pyarrow.parquet as pq

from gridtsne import faults, reindex, schema, storage, versions
from gridtsne.listing import FileInfo
from transforms import progress_metrics
from transforms.listing import file_fields

log = logging.getLogger(__name__)

NAMESPACE = "gridtsne.reindex"
TO_EMBED, CARRIED, FATES = "to_embed", "carried", "fates"


def previous_vector_parts(output, metadata, storage_options=None):
    """The Parquet files of the previous version's ``vectors/``, or [] if none can be reused.

    Rows made by another model, other weights or other preprocessing (input size,
    thumbnail size ...) cannot be mixed with new ones, so a change of any of them makes every
    image new (a full rebuild), with a log line saying why (:func:`gridtsne.reindex.reuse_mismatch`).
    """
    pointer = versions.read_pointer(output, storage_options)
    if pointer is None:
        log.info("no previous version under %s: every image is new", output)
        return []
    url = storage.url_join(versions.version_url(output, pointer["version"]), schema.VECTORS_DIR)
    fs, files = storage.parquet_files(url, storage_options)
    if not files:
        log.warning("previous version %s has no vectors: every image is new", pointer["version"])
        return []
    with fs.open(files[0], "rb") as fh:
        previous = schema.read_metadata(pq.ParquetFile(fh).schema_arrow)
    why = reindex.reuse_mismatch(previous, metadata)
    if why:
        log.warning("previous version %s: %s: re-embedding everything", pointer["version"], why)
        return []
    return [fs.unstrip_protocol(f) for f in files]


def read_vector_rows(url, batch_size=1024, storage_options=None):
    """``(uri, row)`` for every row of one ``vectors/`` Parquet file, streamed in batches."""
    fs, path = storage.filesystem(url, storage_options)
    with fs.open(path, "rb") as fh:
        for batch in pq.ParquetFile(fh).iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield row["uri"], row


class ReadPreviousRows(beam.PTransform):
    """``p`` -> ``(uri, row)`` of the previous version (nothing on a first or ``--full`` run)."""

    def __init__(self, output, metadata, full=False, storage_options=None):
        super().__init__()
        self._output = output
        self._metadata = dict(metadata)
        self._full = full
        self._storage_options = dict(storage_options or {})

    def expand(self, pbegin):
        output, metadata, full = self._output, self._metadata, self._full
        opts = self._storage_options
        return (pbegin
                | "CreateOutput" >> beam.Create([output])
                | "ListPreviousParts" >> beam.FlatMap(
                    lambda out: [] if full else previous_vector_parts(out, metadata, opts))
                | "SpreadPreviousParts" >> beam.Reshuffle()
                | "ReadPreviousRows" >> beam.FlatMap(
                    lambda url: read_vector_rows(url, storage_options=opts)))


class ClassifyFilesFn(beam.DoFn):
    """One uri's listed file and previous row -> embed it, carry the row over, or drop it.

    Outputs: ``to_embed`` (FileInfo), ``carried`` (the previous row) and ``fates``
    (``(uri, fate)``) for every uri.
    """

    def setup(self):
        self._counters = {fate: progress_metrics.counter(NAMESPACE, f"files_{fate}")
                          for fate in (reindex.NEW, reindex.CHANGED, reindex.UNCHANGED,
                                       reindex.REMOVED)}

    def process(self, element):
        faults.point("listed")
        uri, groups = element
        listed = list(groups["listed"])  # FileInfo fields (transforms.listing.file_fields)
        previous = list(groups["previous"])
        info = FileInfo(*listed[0]) if listed else None  # a file named twice is embedded once
        row = previous[0] if previous else None
        fate = reindex.classify(None if info is None else reindex.file_fingerprint(info),
                                None if row is None else reindex.row_fingerprint(row))
        self._counters[fate].inc()
        yield beam.pvalue.TaggedOutput(FATES, (uri, fate))
        if fate == reindex.UNCHANGED:
            yield beam.pvalue.TaggedOutput(CARRIED, row)
        elif fate in (reindex.NEW, reindex.CHANGED):
            yield beam.pvalue.TaggedOutput(TO_EMBED, info)


class ClassifyFiles(beam.PTransform):
    """``(files, previous rows)`` -> tagged ``to_embed``, ``carried`` and ``fates``."""

    def __init__(self, previous_rows):
        super().__init__()
        self._previous = previous_rows

    def expand(self, files):
        # The join moves tuples, not FileInfo objects (pickled one by one between stages);
        # typed Any: inferred from FileInfo's annotations, a None size or etag would not encode.
        keyed = files | "KeyListedByUri" >> beam.Map(
            lambda f: (f.uri, file_fields(f))).with_output_types(typing.Tuple[str, typing.Any])
        return ({"listed": keyed,
                 "previous": self._previous}
                | "JoinListedWithPrevious" >> beam.CoGroupByKey()
                | "ClassifyFiles" >> beam.ParDo(ClassifyFilesFn()).with_outputs(
                    TO_EMBED, CARRIED, FATES))


def _settle(element):
    """A new or changed file counts as such only once it produced a vector."""
    _, groups = element
    if list(groups["embedded"]):
        yield from groups["fate"]


class CountFates(beam.PTransform):
    """``fates`` + embedded rows -> one dict ``{new, changed, unchanged, removed}``.

    New and changed files that turn out not to be images (skipped) or that fail (``errors/``)
    are not counted here: failures are counted apart, so the figures add up to the rows.
    """

    def __init__(self, embedded_rows):
        super().__init__()
        self._embedded = embedded_rows

    def expand(self, fates):
        settled = {reindex.UNCHANGED, reindex.REMOVED}
        direct = fates | "KeepSettledFates" >> beam.Filter(lambda kv: kv[1] in settled)
        pending = fates | "KeepPendingFates" >> beam.Filter(lambda kv: kv[1] not in settled)
        embedded = (self._embedded
                    | "KeyEmbeddedByUri" >> beam.Map(lambda r: (r["uri"], True)))
        confirmed = ({"fate": pending, "embedded": embedded}
                     | "JoinFatesWithEmbedded" >> beam.CoGroupByKey()
                     | "SettleFates" >> beam.FlatMap(_settle))
        zero = {reindex.NEW: 0, reindex.CHANGED: 0, reindex.UNCHANGED: 0, reindex.REMOVED: 0}
        return ((direct | "FateNames" >> beam.Map(lambda kv: kv[1]), confirmed)
                | "FlattenFates" >> beam.Flatten()
                | "CountFates" >> beam.combiners.Count.PerElement()
                | "FatesToDict" >> beam.combiners.ToDict()
                | "FillZeroFates" >> beam.Map(lambda d: {**zero, **d}))
