"""A TensorBoard Projector folder of the vectors, written without TensorFlow.

``tensorboard --logdir <folder>`` then shows the embeddings in its Projector tab, each point
drawn with its thumbnail. The folder holds ``projector_config.pbtxt``, the tensor as raw
float32 (``tensor.bytes`` with its shape in the config), ``metadata.tsv`` and ``sprite.jpg``.

The Projector limits the sprite to 8192 x 8192 px: at most 16,384 thumbnails of 64 px. Larger
collections are sampled (uniformly, with a seed) and the export says so, in the log, in a
comment of the config and in the returned summary. Memory stays bounded by the sample size:
the vectors are streamed once.
"""
import io
import json
import logging
import math

import numpy as np
from PIL import Image

from gridtsne import storage
from gridtsne.site import read_labels, uri_key
from gridtsne.tiles import BACKGROUND, fit_thumbnail, placeholder

log = logging.getLogger(__name__)

CONFIG_FILE = "projector_config.pbtxt"
TENSOR_FILE = "tensor.bytes"
TENSOR_TSV_FILE = "tensor.tsv"
METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.jpg"
MAX_SPRITE_SIDE = 8192
DEFAULT_SPRITE_CELL = 64
DEFAULT_TENSOR_NAME = "gridtsne"


def max_points_for(cell):
    """How many ``cell``-px thumbnails fit in the largest sprite the Projector accepts."""
    per_side = MAX_SPRITE_SIDE // cell
    return per_side * per_side


def choose_rows(total, limit, seed=0):
    """The sorted row numbers to export: all of them, or ``limit`` sampled uniformly."""
    if total <= limit:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=limit, replace=False))


def _tsv_field(value):
    # A tab or line break inside a field would shift every column after it.
    return str("" if value is None else value).replace("\t", " ").replace("\r", " ") \
        .replace("\n", " ")


def metadata_tsv(uris, labels=None):
    """``metadata.tsv``: one line per point; a header row only with two or more columns.

    The Projector treats a first line containing a tab as a header, and a single column
    file as header-less, so one column must not get a header.
    """
    lines = []
    if labels is not None:
        lines.append("uri\tlabel")
        lines += [f"{_tsv_field(u)}\t{_tsv_field(labels.get(uri_key(u)))}" for u in uris]
    else:
        lines += [_tsv_field(u) for u in uris]
    return ("\n".join(lines) + "\n").encode("utf-8")


def tensor_file(vectors):
    """``(file name, bytes)`` of the tensor: raw float32, unless those bytes are valid UTF-8.

    TensorBoard first tries to read a tensor file as TSV text and only falls back to raw
    float32 when that fails to decode, so raw bytes that happen to be valid UTF-8 (all-zero
    vectors, tiny tensors) would be misread; those get written as TSV instead.
    """
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    raw = vectors.tobytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return TENSOR_FILE, raw
    text = "\n".join("\t".join(repr(float(v)) for v in row) for row in vectors) + "\n"
    return TENSOR_TSV_FILE, text.encode()


def projector_config(tensor_name, tensor_path, shape, sprite_cell, note=""):
    """The ``projector_config.pbtxt`` text (protobuf text format, written by hand)."""
    comment = "".join(f"# {line}\n" for line in note.splitlines() if line)
    return (f"{comment}embeddings {{\n"
            f"  tensor_name: {json.dumps(tensor_name)}\n"
            f"  tensor_path: {json.dumps(tensor_path)}\n"
            f"  tensor_shape: {int(shape[0])}\n"
            f"  tensor_shape: {int(shape[1])}\n"
            f"  metadata_path: {json.dumps(METADATA_FILE)}\n"
            f"  sprite {{\n"
            f"    image_path: {json.dumps(SPRITE_FILE)}\n"
            f"    single_image_dim: {sprite_cell}\n"
            f"    single_image_dim: {sprite_cell}\n"
            f"  }}\n"
            f"}}\n").encode()


def export_projector(vectors_url, output_url, labels_url=None, max_points=None,
                     sprite_cell=DEFAULT_SPRITE_CELL, seed=0, tensor_name=DEFAULT_TENSOR_NAME,
                     storage_options=None):
    """Write a TensorBoard Projector folder for the ``vectors/`` table at ``vectors_url``.

    Parameters
    ----------
    vectors_url : str
        The embedding stage's ``vectors`` folder (or one Parquet file).
    output_url : str
        Folder to write (any fsspec URL; ``tensorboard --logdir`` needs it local or on GCS).
    labels_url : str, optional
        CSV with ``uri`` or ``path`` and ``label``: adds a label column to ``metadata.tsv``.
    max_points : int, optional
        At most this many points (default: as many as the sprite can hold).
    sprite_cell : int
        Side of each thumbnail in the sprite, px.
    storage_options : dict, optional
        Per-protocol fsspec options (see :func:`gridtsne.storage.filesystem`).

    Returns
    -------
    dict
        ``points``, ``total``, ``sampled``, ``dim``, ``sprite`` (side in px) and ``files``.
    """
    if not isinstance(sprite_cell, int) or not 8 <= sprite_cell <= MAX_SPRITE_SIDE:
        raise ValueError(f"sprite cell must be an integer in 8..{MAX_SPRITE_SIDE}, "
                         f"got {sprite_cell!r}")
    limit = max_points_for(sprite_cell) if max_points is None else int(max_points)
    if not 1 <= limit <= max_points_for(sprite_cell):
        raise ValueError(f"max_points must be in 1..{max_points_for(sprite_cell)} for "
                         f"{sprite_cell} px sprites, got {max_points!r}")
    if not storage.parquet_files(vectors_url, storage_options)[1]:
        raise FileNotFoundError(f"no Parquet files at {vectors_url!r}")
    total = storage.count_parquet_rows(vectors_url, storage_options)
    if total == 0:
        raise ValueError(f"the vectors table at {vectors_url!r} has no rows")
    rows = choose_rows(total, limit, seed)
    sampled = len(rows) < total
    note = f"gridtsne export of {len(rows)} of {total} images"
    if sampled:
        note += (f"\nsampled uniformly at random (seed {seed}): the Projector's sprite holds at "
                 f"most {limit} thumbnails of {sprite_cell} px")
        log.warning("projector export: %d images exceed the sprite's %d; exporting a uniform "
                    "sample of %d (seed %d)", total, limit, len(rows), seed)

    per_side = math.ceil(math.sqrt(len(rows)))
    sprite = Image.new("RGB", (per_side * sprite_cell, per_side * sprite_cell), BACKGROUND)
    uris, vectors, missing = [], None, 0
    offset, k = 0, 0
    for batch in storage.iter_parquet_batches(vectors_url, columns=["uri", "vector", "thumbnail"],
                                              batch_size=4096, storage_options=storage_options):
        n = batch.num_rows
        lo, hi = np.searchsorted(rows, [offset, offset + n])
        local = rows[lo:hi] - offset
        offset += n
        if not len(local):
            continue
        vec_col = batch.column("vector")
        dim = vec_col.type.list_size
        block = vec_col.values.to_numpy(zero_copy_only=False).reshape(-1, dim)[local]
        if vectors is None:
            vectors = np.empty((len(rows), dim), dtype=np.float32)
        vectors[k:k + len(local)] = block
        batch_uris = batch.column("uri").to_pylist()
        thumbs = batch.column("thumbnail")
        for i in local:
            i = int(i)
            uris.append(batch_uris[i])
            img = fit_thumbnail(thumbs[i].as_py(), sprite_cell)
            if img is None:
                img, missing = placeholder(sprite_cell), missing + 1
            x, y = (k % per_side) * sprite_cell, (k // per_side) * sprite_cell
            sprite.paste(img, (x + (sprite_cell - img.width) // 2,
                               y + (sprite_cell - img.height) // 2))
            k += 1
    if k != len(rows):
        raise ValueError(f"the vectors table at {vectors_url!r} changed while exporting: "
                         f"expected {len(rows)} rows, read {k}")

    labels = None
    if labels_url:
        wanted = {uri_key(u) for u in uris}
        labels = {key: label for key, label in read_labels(labels_url, storage_options)
                  if key in wanted}
    tensor_name_file, tensor_bytes = tensor_file(vectors)
    buf = io.BytesIO()
    sprite.save(buf, "JPEG", quality=90)
    files = {
        TENSOR_FILE if tensor_name_file == TENSOR_FILE else TENSOR_TSV_FILE: tensor_bytes,
        METADATA_FILE: metadata_tsv(uris, labels),
        SPRITE_FILE: buf.getvalue(),
        CONFIG_FILE: projector_config(tensor_name, tensor_name_file, vectors.shape, sprite_cell,
                                      note),
    }
    for name, data in files.items():
        storage.write_bytes(storage.url_join(output_url, name), data, storage_options)
    log.info("projector export: %d points of dimension %d, sprite %d px, to %s",
             len(rows), vectors.shape[1], sprite.width, output_url)
    return {"points": int(len(rows)), "total": int(total), "sampled": bool(sampled),
            "seed": int(seed), "dim": int(vectors.shape[1]), "sprite": int(sprite.width),
            "missing_thumbnails": int(missing), "files": sorted(files)}
