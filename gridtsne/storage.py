"""Reading and writing any fsspec URL: local paths, ``s3://``, ``gs://``, ``memory://`` ...

Everything a stage reads or writes goes through here, so every destination behaves the same
way. Each function takes ``storage_options``, a mapping from protocol to that filesystem's
options (``{"s3": {"endpoint_url": ..., "key": ...}}``), which every job config carries to its
workers: fsspec's process-wide configuration, set on a launcher, never reaches a Dataflow or
Flink worker, so nothing here relies on it.
"""
import logging
import mimetypes
import posixpath

import fsspec

# pyarrow is imported by the Parquet functions that need it: tile worker processes import
# this module for plain files and start faster without it.

log = logging.getLogger(__name__)

# Object stores need an explicit content type to serve files to a browser correctly.
_EXTRA_TYPES = {".dzi": "application/xml", ".webp": "image/webp", ".pbtxt": "text/plain",
                ".tsv": "text/tab-separated-values", ".parquet": "application/vnd.apache.parquet",
                ".json": "application/json", ".js": "text/javascript", ".bytes": "application/octet-stream"}


def url_join(base, *parts):
    """Join path parts onto a URL or a local path, keeping the protocol and any ``::`` chain."""
    base = str(base)
    tail = posixpath.join(*[str(p).strip("/") for p in parts]) if parts else ""
    if not tail:
        return base
    return base.rstrip("/") + "/" + tail


def filesystem(url, storage_options=None):
    """The fsspec filesystem and the protocol-less path of ``url``.

    ``storage_options`` maps a protocol to its options (``{"s3": {"endpoint_url": ...}}``);
    a ``::`` chain gets each link's options.
    """
    url = str(url)
    options = dict(storage_options or {})
    if "::" in url:
        return fsspec.core.url_to_fs(url, **options)
    protocol = fsspec.core.split_protocol(url)[0] or "file"
    return fsspec.core.url_to_fs(url, **options.get(protocol, {}))


def content_type(url):
    """The MIME type object stores should serve ``url`` with."""
    ext = posixpath.splitext(str(url))[1].lower()
    return _EXTRA_TYPES.get(ext) or mimetypes.guess_type(str(url))[0] or "application/octet-stream"


def _is_object_store(fs):
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(p in ("s3", "s3a", "gs", "gcs") for p in protocols)


def _make_parent(fs, path):
    """Create the folder ``path`` goes into; object stores have no folders to create."""
    parent = posixpath.dirname(path)
    if parent and not _is_object_store(fs):
        fs.makedirs(parent, exist_ok=True)


def write_bytes(url, data, storage_options=None):
    """Write ``data`` to ``url`` in one piece, with the right content type on object stores."""
    fs, path = filesystem(url, storage_options)
    _make_parent(fs, path)
    if _is_object_store(fs):
        key = "ContentType" if "s3" in str(fs.protocol) else "content_type"
        fs.pipe_file(path, data, **{key: content_type(url)})
    else:
        fs.pipe_file(path, data)


def read_bytes(url, storage_options=None):
    """The whole content of ``url``."""
    fs, path = filesystem(url, storage_options)
    return fs.cat_file(path)


def exists(url, storage_options=None):
    fs, path = filesystem(url, storage_options)
    return fs.exists(path)


def makedirs(url, storage_options=None):
    """Create a local-style directory; object stores need none, so this is a no-op there."""
    fs, path = filesystem(url, storage_options)
    if not _is_object_store(fs):
        fs.makedirs(path, exist_ok=True)


def parquet_files(url, storage_options=None):
    """The Parquet files that make up ``url``: the file itself, or every ``*.parquet`` under it."""
    fs, path = filesystem(url, storage_options)
    if fs.isfile(path):
        return fs, [path]
    files = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
    return fs, files


def read_parquet(url, columns=None, storage_options=None):
    """Read a Parquet file or a directory of Parquet files at ``url`` into one Arrow table."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    fs, files = parquet_files(url, storage_options)
    if not files:
        raise FileNotFoundError(f"no Parquet files at {url!r}")
    tables = [pq.read_table(f, columns=columns, filesystem=fs) for f in files]
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def count_parquet_rows(url, storage_options=None):
    """Rows in the Parquet file(s) at ``url``, from their footers alone (0 when none)."""
    import pyarrow.parquet as pq
    fs, files = parquet_files(url, storage_options)
    total = 0
    for f in files:
        with fs.open(f, "rb") as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


def iter_parquet_batches(url, columns=None, batch_size=65536, storage_options=None):
    """Stream record batches of the Parquet file(s) at ``url`` without loading them whole."""
    import pyarrow.parquet as pq
    fs, files = parquet_files(url, storage_options)
    if not files:
        raise FileNotFoundError(f"no Parquet files at {url!r}")
    for f in files:
        with fs.open(f, "rb") as fh:
            yield from pq.ParquetFile(fh).iter_batches(batch_size=batch_size, columns=columns)


def write_parquet(url, table, storage_options=None, **kwargs):
    """Write ``table`` as one Parquet file at ``url`` through fsspec."""
    import pyarrow.parquet as pq
    fs, path = filesystem(url, storage_options)
    _make_parent(fs, path)
    with fs.open(path, "wb") as fh:
        pq.write_table(table, fh, **kwargs)
