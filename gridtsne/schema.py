"""The Parquet tables that stages exchange: the contract between stages and outside tools.

``vectors/`` is written by the embedding stage and read by layout and rendering;
``errors/`` records every input that could not be used; ``layout.parquet`` places each
image in a grid cell.
"""
import json

import pyarrow as pa

from gridtsne import __version__

VECTORS_DIR = "vectors"
ERRORS_DIR = "errors"
LAYOUT_FILE = "layout.parquet"

# Key under which each table's schema metadata stores a JSON document.
METADATA_KEY = b"gridtsne"

ERRORS_SCHEMA = pa.schema([
    ("uri", pa.string()),
    ("stage", pa.string()),
    ("error_type", pa.string()),
    ("message", pa.string()),
])

LAYOUT_FIELDS = [
    ("uri", pa.string()),
    ("sha256", pa.string()),
    ("x", pa.float32()),
    ("y", pa.float32()),
    ("row", pa.int32()),
    ("col", pa.int32()),
]


def vectors_schema(dim, metadata=None):
    """Schema of ``vectors/``: one row per readable image, ``vector`` of fixed size ``dim``.

    ``metadata`` (model name, weights' sha256, preprocessing ...) is stored as JSON under
    the ``gridtsne`` key, together with the dimension and the package version.
    """
    if dim <= 0:
        raise ValueError(f"vector dimension must be positive, got {dim!r}")
    fields = [
        ("uri", pa.string()),
        ("sha256", pa.string()),
        ("bytes", pa.int64()),
        ("mtime", pa.timestamp("us", tz="UTC")),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("thumbnail", pa.binary()),
        ("vector", pa.list_(pa.float32(), dim)),
    ]
    meta = dict(metadata or {})
    meta.update({"vector_dim": int(dim), "gridtsne_version": __version__})
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})


def layout_schema(metadata=None):
    """Schema of ``layout.parquet`` with ``metadata`` (grid shape, method, timings...) as JSON."""
    meta = dict(metadata or {})
    meta.setdefault("gridtsne_version", __version__)
    return pa.schema(LAYOUT_FIELDS,
                     metadata={METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})


def read_metadata(schema):
    """The JSON document a gridtsne table carries in its schema metadata ({} when absent)."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}
