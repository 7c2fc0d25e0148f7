"""What rendering reads: the grid plan from ``layout.parquet`` and both tables piece by piece.

:func:`plan_render` reads only the layout's small numeric columns to learn the grid shape,
the t-SNE bounds and the image count; :func:`table_parts` cuts a table into row groups so
that workers read thumbnails in parallel, each holding one row group at a time.
"""
import dataclasses
import logging

import numpy as np
import pyarrow.parquet as pq

from gridtsne import schema, storage
from gridtsne.overview import DEFAULT_LONGEST, TsneCanvas
from gridtsne.site import uri_key
from gridtsne.tiles import MosaicGeometry

log = logging.getLogger(__name__)

LAYOUT_COLUMNS = ("uri", "row", "col", "x", "y")
THUMBNAIL_COLUMNS = ("uri", "thumbnail")
# Read when present: shown on the page next to each image.
THUMBNAIL_EXTRA = ("width", "height", "bytes")
BATCH_ROWS = 1024


@dataclasses.dataclass(frozen=True)
class RenderPlan:
    """The grid and canvases of one render, known before any pixel is drawn."""

    geometry: MosaicGeometry
    tsne: TsneCanvas
    images: int

    @property
    def holes(self):
        return self.geometry.rows * self.geometry.cols - self.images


def grid_shape(metadata):
    """(rows, cols) from the layout's metadata, or None when it does not say.

    The layout stage writes ``rows``/``cols``; ``grid_rows``/``grid_cols`` and
    ``grid: [rows, cols]`` are accepted too.
    """
    for r, c in (("rows", "cols"), ("grid_rows", "grid_cols")):
        if metadata.get(r) is not None and metadata.get(c) is not None:
            return int(metadata[r]), int(metadata[c])
    grid = metadata.get("grid")
    if isinstance(grid, (list, tuple)) and len(grid) == 2:
        return int(grid[0]), int(grid[1])
    if isinstance(grid, dict) and "rows" in grid and "cols" in grid:
        return int(grid["rows"]), int(grid["cols"])
    return None


def plan_render(layout_url, cell=128, tile=256, fmt="jpeg", overview=DEFAULT_LONGEST,
                pad=None, storage_options=None):
    """Read ``layout.parquet`` (its row, col, x, y columns only) and plan the render.

    Raises
    ------
    ValueError
        When the layout lacks a column, has no rows, a cell outside its declared grid, a
        negative row/col, or non-finite t-SNE coordinates.
    """
    fs, files = storage.parquet_files(layout_url, storage_options)
    if not files:
        raise FileNotFoundError(f"no Parquet files at {layout_url!r}")
    with fs.open(files[0], "rb") as fh:
        arrow_schema = pq.ParquetFile(fh).schema_arrow
    missing = [c for c in LAYOUT_COLUMNS if c not in arrow_schema.names]
    if missing:
        raise ValueError(f"layout {layout_url!r} lacks columns {missing!r} "
                         f"(has {arrow_schema.names!r})")
    declared = grid_shape(schema.read_metadata(arrow_schema))
    count, max_row, max_col, min_rc = 0, -1, -1, 0
    bounds = [np.inf, -np.inf, np.inf, -np.inf]
    for batch in storage.iter_parquet_batches(layout_url, columns=["row", "col", "x", "y"],
                                              storage_options=storage_options):
        if batch.num_rows == 0:
            continue
        row = batch.column("row").to_numpy(zero_copy_only=False)
        col = batch.column("col").to_numpy(zero_copy_only=False)
        x = batch.column("x").to_numpy(zero_copy_only=False).astype(np.float64)
        y = batch.column("y").to_numpy(zero_copy_only=False).astype(np.float64)
        count += batch.num_rows
        max_row, max_col = max(max_row, int(row.max())), max(max_col, int(col.max()))
        min_rc = min(min_rc, int(row.min()), int(col.min()))
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError(f"layout {layout_url!r} has non-finite t-SNE coordinates")
        bounds = [min(bounds[0], x.min()), max(bounds[1], x.max()),
                  min(bounds[2], y.min()), max(bounds[3], y.max())]
    if count == 0:
        raise ValueError(f"layout {layout_url!r} has no rows: nothing to render")
    if min_rc < 0:
        raise ValueError(f"layout {layout_url!r} has a negative row or col ({min_rc})")
    needed = (max_row + 1, max_col + 1)
    if declared is None:
        log.warning("layout %s does not declare its grid shape; using %dx%d from its cells",
                    layout_url, *needed)
        declared = needed
    elif declared[0] < needed[0] or declared[1] < needed[1]:
        raise ValueError(f"layout {layout_url!r} declares a {declared[0]}x{declared[1]} grid but "
                         f"has a cell at row {max_row}, col {max_col}")
    geometry = MosaicGeometry(declared[0], declared[1], cell=cell, tile=tile, fmt=fmt, pad=pad)
    if count > declared[0] * declared[1]:
        raise ValueError(f"layout {layout_url!r} has {count} rows for {declared[0] * declared[1]} "
                         f"cells: some cells hold two images")
    tsne = TsneCanvas.plan(*bounds, count=count, cell=cell, longest=overview)
    return RenderPlan(geometry, tsne, count)


def declared_geometry(layout_url, cell=128, tile=256, storage_options=None):
    """The pyramid's :class:`MosaicGeometry` from the layout's declared grid, or None.

    Reads only the file's schema; None when the layout does not exist yet or declares no
    grid shape.
    """
    try:
        fs, files = storage.parquet_files(layout_url, storage_options)
    except (FileNotFoundError, OSError):
        return None
    if not files:
        return None
    with fs.open(files[0], "rb") as fh:
        shape = grid_shape(schema.read_metadata(pq.ParquetFile(fh).schema_arrow))
    if shape is None:
        return None
    return MosaicGeometry(shape[0], shape[1], cell=cell, tile=tile)


def table_parts(url, storage_options=None):
    """``(file URL, row group)`` pairs covering the Parquet table at ``url``."""
    fs, files = storage.parquet_files(url, storage_options)
    if not files:
        raise FileNotFoundError(f"no Parquet files at {url!r}")
    parts = []
    for path in files:
        with fs.open(path, "rb") as fh:
            groups = pq.ParquetFile(fh).metadata.num_row_groups
        parts += [(fs.unstrip_protocol(path), g) for g in range(groups)]
    return parts


def _iter_part(part, columns, storage_options=None):
    file_url, group = part
    fs, path = storage.filesystem(file_url, storage_options)
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        names = pf.schema_arrow.names
        missing = [c for c in columns if c not in names and c not in THUMBNAIL_EXTRA]
        if missing:
            raise ValueError(f"{file_url!r} lacks columns {missing!r} (has {names!r})")
        present = [c for c in columns if c in names]
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=present):
            yield {c: batch.column(c).to_pylist() if c in present else [None] * batch.num_rows
                   for c in columns}


def read_layout_part(part, storage_options=None):
    """``(uri key, (uri, row, col, x, y))`` for each row of one layout row group."""
    for cols in _iter_part(part, LAYOUT_COLUMNS, storage_options):
        for uri, row, col, x, y in zip(cols["uri"], cols["row"], cols["col"], cols["x"], cols["y"]):
            if uri is None or row is None or col is None:
                raise ValueError(f"layout row {(uri, row, col)!r} in {part[0]!r} has a null uri, "
                                 f"row or col")
            yield uri_key(uri), (uri, row, col, x, y)


def read_thumbnail_part(part, storage_options=None):
    """``(uri key, (thumbnail, width, height, bytes))`` for each row of one vectors row group."""
    for cols in _iter_part(part, THUMBNAIL_COLUMNS + THUMBNAIL_EXTRA, storage_options):
        for uri, thumb, w, h, n in zip(cols["uri"], cols["thumbnail"], cols["width"],
                                       cols["height"], cols["bytes"]):
            if uri is None:
                continue
            yield uri_key(uri), (thumb, w, h, n)
