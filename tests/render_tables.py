"""Vectors and layout tables for the render tests, made from real photos.

The photos ship offline with scikit-image and scikit-learn; thumbnails are JPEGs made with
Pillow exactly as the embedding stage stores them (longest side 128 px by default).
"""
import datetime as _dt
import hashlib
import io

import numpy as np
import pyarrow as pa
from PIL import Image

from gridtsne import schema, storage

DIM = 8


def real_photos():
    """``{name: RGB array}`` of real photographs that need no download."""
    import skimage.data as sk
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins",
             "immunohistochemistry")
    photos = {name: getattr(sk, name)() for name in names}
    sample = load_sample_images()
    for fname, img in zip(sample.filenames, sample.images):
        photos[fname.rsplit("/", 1)[-1].split(".")[0]] = img
    out = {}
    for name, arr in photos.items():
        img = Image.fromarray(arr)
        out[name] = np.asarray(img.convert("RGB"))
    return out


def thumbnail_jpeg(arr, longest=128, quality=90):
    img = Image.fromarray(arr).convert("RGB")
    img.thumbnail((longest, longest), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def vectors_table(records, dim=DIM):
    """A ``vectors/`` table: ``records`` are dicts with uri, thumbnail and optionally vector."""
    n = len(records)
    rng = np.random.default_rng(0)
    vecs = [r.get("vector") if r.get("vector") is not None else rng.random(dim).astype(np.float32)
            for r in records]
    now = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)
    sch = schema.vectors_schema(dim, {"model": "test"})
    return pa.table({
        "uri": [r["uri"] for r in records],
        "sha256": [hashlib.sha256(r["uri"].encode()).hexdigest() for r in records],
        "bytes": [r.get("bytes", 1000 + i) for i, r in enumerate(records)],
        "mtime": [now] * n,
        "width": [r.get("width", 640) for r in records],
        "height": [r.get("height", 480) for r in records],
        "thumbnail": [r.get("thumbnail") for r in records],
        "vector": pa.array([list(map(float, v)) for v in vecs], type=pa.list_(pa.float32(), dim)),
    }, schema=sch)


def layout_table(cells, rows, cols, meta_keys=("rows", "cols")):
    """A ``layout.parquet`` table: ``cells`` are (uri, row, col) with x, y derived from them."""
    meta = {}
    if meta_keys:
        meta = {meta_keys[0]: rows, meta_keys[1]: cols}
    rng = np.random.default_rng(1)
    return pa.table({
        "uri": [c[0] for c in cells],
        "sha256": [hashlib.sha256(c[0].encode()).hexdigest() for c in cells],
        "x": np.array([c[2] + rng.normal(0, 0.3) for c in cells], np.float32),
        "y": np.array([c[1] + rng.normal(0, 0.3) for c in cells], np.float32),
        "row": np.array([c[1] for c in cells], np.int32),
        "col": np.array([c[2] for c in cells], np.int32),
    }, schema=schema.layout_schema(meta))


def write_tables(base, records, cells, rows, cols, parts=2, meta_keys=("rows", "cols")):
    """Write ``<base>/vectors/part-*.parquet`` (in ``parts`` files) and ``<base>/layout.parquet``.

    Returns (vectors URL, layout URL).
    """
    vectors_url = storage.url_join(base, schema.VECTORS_DIR)
    table = vectors_table(records)
    step = -(-table.num_rows // parts)
    for i in range(parts):
        part = table.slice(i * step, step)
        if part.num_rows:
            storage.write_parquet(storage.url_join(vectors_url, f"part-{i:05d}.parquet"), part,
                                  row_group_size=3)
    layout_url = storage.url_join(base, schema.LAYOUT_FILE)
    storage.write_parquet(layout_url, layout_table(cells, rows, cols, meta_keys))
    return vectors_url, layout_url


def site_digests(url):
    """Every file under ``url`` (any fsspec URL): ``{path below it: SHA-256 of its bytes}``,
    to compare two sites file by file."""
    fs, base = storage.filesystem(url)
    return {p[len(base):]: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in fs.find(base)}
