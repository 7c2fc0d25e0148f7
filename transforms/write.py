"""Write row dicts as a Parquet dataset at any URL.

Beam's ``WriteToParquet`` where Beam's file systems know the URL (local paths, ``gs://``,
``s3://``); for every other fsspec URL (``memory://``, ``ftp://``, ``::`` chains ...) an
equivalent writer over fsspec: each bundle writes a temporary part, and one finalising step
renames the parts of successful bundles to ``<prefix>-SSSSS-of-NNNNN.parquet``, so a retried
bundle never leaves a duplicate behind.
"""
import logging
import posixpath
import uuid

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from gridtsne import storage

log = logging.getLogger(__name__)

SUFFIX = ".parquet"
_BEAM_PROTOCOLS = ("", "file", "gs", "s3")
_ROWS_PER_PART = 20_000


def beam_can_write(url, storage_options=None):
    """Whether Beam's own file systems can write ``url`` (so ``WriteToParquet`` is used).

    Not when ``storage_options`` hold options for its protocol: Beam's file systems would not
    see them (only its own ``--s3_*`` flags), so the fsspec writer, which carries them, is used.
    """
    url = str(url)
    if "::" in url:
        return False
    protocol = url.split("://", 1)[0] if "://" in url else ""
    if (storage_options or {}).get(protocol or "file"):
        return False
    return protocol in _BEAM_PROTOCOLS


def _beam_path(url):
    return url[len("file://"):] if url.startswith("file://") else url


class _WritePartsFn(beam.DoFn):
    """Rows -> temporary Parquet parts, one per bundle (or per ``_ROWS_PER_PART`` rows)."""

    def __init__(self, temp_dir, schema, storage_options=None):
        self._temp_dir = temp_dir
        self._schema = schema
        self._storage_options = storage_options
        self._rows = []

    def start_bundle(self):
        self._rows = []

    def process(self, row):
        self._rows.append(row)
        if len(self._rows) >= _ROWS_PER_PART:
            yield self._flush()

    def finish_bundle(self):
        if self._rows:
            yield WindowedValue(self._flush(), GlobalWindow().max_timestamp(), [GlobalWindow()])

    def _flush(self):
        url = storage.url_join(self._temp_dir, uuid.uuid4().hex + SUFFIX)
        table = pa.Table.from_pylist(self._rows, schema=self._schema)
        storage.write_parquet(url, table, self._storage_options)
        self._rows = []
        return url


def _finalize_parts(_, parts, prefix, temp_dir, schema, storage_options=None):
    """Rename the temporary parts to their final shard names; an empty table when none."""
    fs, _ = storage.filesystem(prefix, storage_options)
    parts = sorted(parts)
    final = []
    if not parts:
        url = f"{prefix}-00000-of-00001{SUFFIX}"
        storage.write_parquet(url, schema.empty_table(), storage_options)
        final.append(url)
    for i, part in enumerate(parts):
        url = f"{prefix}-{i:05d}-of-{len(parts):05d}{SUFFIX}"
        fs.mv(storage.filesystem(part, storage_options)[1],
              storage.filesystem(url, storage_options)[1])
        final.append(url)
    temp_fs, temp_path = storage.filesystem(temp_dir, storage_options)
    if temp_fs.exists(temp_path):
        temp_fs.rm(temp_path, recursive=True)
    return final


class WriteTable(beam.PTransform):
    """Row dicts -> ``<prefix>-SSSSS-of-NNNNN.parquet`` with ``schema`` (metadata included).

    An empty input still writes one empty file, so readers always find the table. Returns the
    PCollection of written file names. ``storage_options`` (per-protocol fsspec options) are
    used by the fsspec writer; Beam's own writer takes its settings from the pipeline options
    (``--s3_endpoint_url`` ...), which every worker receives.
    """

    def __init__(self, prefix, schema, storage_options=None):
        super().__init__()
        self._prefix = str(prefix)
        self._schema = schema
        self._storage_options = dict(storage_options or {})

    def expand(self, rows):
        if beam_can_write(self._prefix, self._storage_options):
            return rows | "WriteToParquet" >> beam.io.WriteToParquet(
                _beam_path(self._prefix), self._schema, file_name_suffix=SUFFIX)
        parent, name = posixpath.split(self._prefix)
        temp_dir = storage.url_join(parent, f".temp-{name}-{uuid.uuid4().hex[:12]}")
        parts = rows | "WriteParts" >> beam.ParDo(_WritePartsFn(temp_dir, self._schema,
                                                                self._storage_options))
        return (rows.pipeline
                | "CreateFinalizer" >> beam.Create([None])
                | "FinalizeParts" >> beam.FlatMap(
                    _finalize_parts, beam.pvalue.AsList(parts), self._prefix, temp_dir,
                    self._schema, self._storage_options))
