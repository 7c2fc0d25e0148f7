"""The layout stage: vectors table -> t-SNE -> grid cells -> ``layout.parquet`` + ``layout.json``.

:func:`compute_layout` is the in-memory composition (arrays in, arrays out);
:func:`run_layout` adds the I/O: it streams the ``uri``, ``sha256`` and ``vector`` columns of a
``vectors/`` table from any fsspec URL into one float32 matrix (no Python object per row),
and writes the layout table and a short JSON summary through fsspec.
"""
import dataclasses
import json
import logging
import time
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gridtsne import __version__, faults, progress, schema, storage
from gridtsne.assign import METHODS, WINDOW, assign_to_grid, total_cost
from gridtsne.grid import parse_grid, resolve_grid, to_grid_units
from gridtsne.refine import DISTANCE, DISTANCES, REFINEMENTS, refine_layout
from gridtsne.tsne import METRICS, embed_2d, resolve_gradient

log = logging.getLogger(__name__)

LAYOUT_SUMMARY_FILE = "layout.json"


def _auto_or_int(value, name, minimum):
    if value == "auto" or value is None or (value == 0 and not isinstance(value, bool)):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be 'auto', None, 0 or an integer >= {minimum}, "
                         f"got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class LayoutConfig:
    """Every parameter of the layout stage, validated on construction.

    Attributes
    ----------
    grid : ``"auto"`` (smallest near-square grid holding every image) or ``"RxC"``.
    assign : ``"exact"``, ``"scalable"`` or ``"auto"`` (exact up to 2,048 images, see
        :data:`gridtsne.assign.EXACT_AUTO_LIMIT`).
    perplexity, seed, n_jobs, n_iter, early_exaggeration_iter : t-SNE settings.
    pca_dims : ``"auto"`` (200 dimensions above 200,000 images), None or 0 (never) or a number.
    fit_sample : ``"auto"``, None or 0 (fit all images), or the number of images to fit
        t-SNE on, placing the rest with openTSNE's ``transform`` (faster, worse maps).
    gradient : t-SNE gradients: ``"auto"`` (FFT from 10,000 images on, Barnes-Hut below, as
        openTSNE chooses), ``"fft"`` or ``"bh"``.
    sample : lay out a seeded random sample when there are more images than cells, instead
        of failing.
    sample_size : lay out a seeded random sample of at most this many images.
    leaf_cells, window, passes : parameters of the scalable assignment (see
        :func:`gridtsne.assign.assign_scalable`).
    metric : distance of the t-SNE input affinities, ``"euclidean"`` or ``"cosine"``.
    refine : refinement of the solved grid in the full vector space: ``"swaps"`` (greedy
        neighbour swaps, see :mod:`gridtsne.refine`) or ``"none"``.
    refine_distance : pair cost of the refinement: ``"gauss"`` or ``"euclidean"`` (see
        :func:`gridtsne.refine.refine_swaps`).
    refine_passes : sweeps of the refinement (it stops earlier when a sweep changes nothing).
    verbose : log t-SNE progress every 50 iterations.
    """

    grid: str = "auto"
    assign: str = "auto"
    perplexity: float = 30.0
    seed: int = 0
    n_jobs: int = -1
    pca_dims: Union[str, int, None] = "auto"
    n_iter: int = 500
    early_exaggeration_iter: int = 250
    fit_sample: Union[str, int, None] = "auto"
    gradient: str = "auto"
    sample: bool = False
    sample_size: Optional[int] = None
    leaf_cells: int = 144
    window: int = WINDOW
    passes: int = 12
    metric: str = "euclidean"
    refine: str = "swaps"
    refine_passes: int = 20
    refine_distance: str = DISTANCE
    verbose: bool = True

    def __post_init__(self):
        parse_grid(self.grid)  # raises on a malformed grid
        if self.assign not in METHODS:
            raise ValueError(f"assign must be one of {METHODS}, got {self.assign!r}")
        if not isinstance(self.perplexity, (int, float)) or not self.perplexity > 0:
            raise ValueError(f"perplexity must be a positive number, got {self.perplexity!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.n_jobs, int) or self.n_jobs == 0 or self.n_jobs < -1:
            raise ValueError(f"n_jobs must be -1 (all cores) or a positive integer, "
                             f"got {self.n_jobs!r}")
        for name in ("n_iter", "early_exaggeration_iter"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        _auto_or_int(self.pca_dims, "pca_dims", 2)
        _auto_or_int(self.fit_sample, "fit_sample", 100)
        resolve_gradient(self.gradient, 0)  # raises on an unknown method
        if self.sample_size is not None and (not isinstance(self.sample_size, int)
                                             or self.sample_size < 4):
            raise ValueError(f"sample_size must be an integer >= 4, got {self.sample_size!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.refine not in REFINEMENTS:
            raise ValueError(f"refine must be one of {REFINEMENTS}, got {self.refine!r}")
        if self.refine_distance not in DISTANCES:
            raise ValueError(f"refine_distance must be one of {DISTANCES}, "
                             f"got {self.refine_distance!r}")
        if not isinstance(self.refine_passes, int) or self.refine_passes < 0:
            raise ValueError(f"refine_passes must be a non-negative integer, "
                             f"got {self.refine_passes!r}")
        if self.leaf_cells < 1 or self.window < 2 or self.passes < 0:
            raise ValueError(f"bad scalable assignment parameters: leaf_cells={self.leaf_cells!r}, "
                             f"window={self.window!r}, passes={self.passes!r}")

    def to_dict(self):
        return dataclasses.asdict(self)

    def tsne_options(self):
        """The keyword arguments of :func:`gridtsne.tsne.embed_2d` this config asks for."""
        return dict(perplexity=self.perplexity, seed=self.seed, n_jobs=self.n_jobs,
                    pca_dims=self.pca_dims, n_iter=self.n_iter,
                    early_exaggeration_iter=self.early_exaggeration_iter,
                    fit_sample=self.fit_sample, gradient=self.gradient, metric=self.metric,
                    verbose=self.verbose)


def select_images(n, config):
    """``(indices, (rows, cols))``: which of ``n`` images to lay out, and the grid shape.

    Raises a ValueError when the images do not fit the requested grid and sampling is off.
    """
    shape = parse_grid(config.grid)
    keep = n if config.sample_size is None else min(n, config.sample_size)
    if shape is not None and keep > shape[0] * shape[1]:
        if not config.sample:
            raise ValueError(
                f"{keep} images do not fit into the {config.grid!r} grid of "
                f"{shape[0] * shape[1]} cells: use a larger --grid, --grid auto, or --sample to "
                f"lay out a random sample")
        keep = shape[0] * shape[1]
    if keep < 4:
        raise ValueError(f"a layout needs at least 4 images, got {keep!r}")
    if keep == n:
        index = np.arange(n)
    else:
        index = np.sort(np.random.default_rng(config.seed).choice(n, size=keep, replace=False))
        log.info("laying out a random sample of %d of %d images", keep, n)
    return index, resolve_grid(config.grid, keep)


def compute_layout(vectors, config=LayoutConfig(), xy=None, pinned=None):
    """t-SNE of ``vectors``, assignment of each to a grid cell, refinement of the grid.

    Three named steps, each switchable in ``config``: t-SNE (skipped when ``xy`` is given),
    assignment (``config.assign``) and refinement (``config.refine``).

    Parameters
    ----------
    vectors : (n, d) float array.
    config : :class:`LayoutConfig`.
    xy : (n, 2) float array, optional
        2-D positions to grid instead of running t-SNE (``--stable`` re-indexing keeps the
        previous map's positions and places only the new images).
    pinned : (n,) bool array, optional
        Images the refinement must not move (``--stable`` pins the images it kept).

    Returns
    -------
    x, y : float32 t-SNE coordinates of the laid-out images.
    row, col : int32 cells of the laid-out images.
    info : dict with ``index`` (int64 positions in ``vectors`` of the laid-out images, in the
        order of the other arrays: all of them unless sampling), ``rows``, ``cols``,
        ``method`` (the one used), ``cost`` (mean squared displacement in cells, before the
        refinement), ``refine`` (what it did) and ``timings`` (seconds per step; the t-SNE's
        ``tsne_s`` split into ``affinities_s`` and ``optimise_s``).
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be an (n, d) array, got shape {vectors.shape!r}")
    index, shape = select_images(len(vectors), config)
    chosen = vectors if len(index) == len(vectors) else vectors[index]
    timings = {}
    start = time.perf_counter()
    if xy is None:
        progress.phase("layout", "t-SNE")
        xy, tsne_info = embed_2d(chosen, **config.tsne_options())
    else:
        xy = np.asarray(xy, dtype=np.float32)
        if xy.shape != (len(vectors), 2):
            raise ValueError(f"xy must have shape ({len(vectors)}, 2), got {xy.shape!r}")
        xy = xy if len(index) == len(vectors) else xy[index]
        tsne_info = {"method": "given positions"}
    timings["tsne_s"] = round(time.perf_counter() - start, 3)
    # The fit's two parts: input affinities (PCA, neighbours, initialisation), optimisation.
    before = tsne_info.get("pca_s", 0) + tsne_info.get("affinities_s", 0)
    timings["affinities_s"] = round(before, 3)
    timings["optimise_s"] = round(max(0.0, timings["tsne_s"] - before), 3)
    start = time.perf_counter()
    progress.phase("layout", "assignment")
    points = to_grid_units(xy, shape)
    row, col, used = assign_to_grid(points, shape, config.assign, leaf_cells=config.leaf_cells,
                                    window=config.window, passes=config.passes,
                                    n_jobs=config.n_jobs)
    timings["assign_s"] = round(time.perf_counter() - start, 3)
    cost = total_cost(points, row, col) / len(points)
    start = time.perf_counter()
    if pinned is not None:
        pinned = np.asarray(pinned, dtype=bool)
        if pinned.shape != (len(vectors),):
            raise ValueError(f"pinned must have shape ({len(vectors)},), got {pinned.shape!r}")
        pinned = pinned[index]
    row, col, refine_info = refine_layout(chosen, row, col, shape, config.refine,
                                          passes=config.refine_passes, pinned=pinned,
                                          distance=config.refine_distance)
    timings["refine_s"] = round(time.perf_counter() - start, 3)
    info = {
        "index": index,
        "rows": shape[0],
        "cols": shape[1],
        "method": used,
        "cost": cost,
        "tsne": tsne_info,
        "refine": refine_info,
        "timings": timings,
    }
    return xy[:, 0].copy(), xy[:, 1].copy(), row, col, info


def _vector_matrix(column, dim, where):
    """A (rows, dim) float32 view of an Arrow list column, refusing nulls and ragged rows."""
    if column.null_count:
        raise ValueError(f"{column.null_count} null vectors in {where}")
    if pa.types.is_fixed_size_list(column.type):
        if column.type.list_size != dim:
            raise ValueError(f"vector width {column.type.list_size} in {where} differs from {dim}")
    else:
        lengths = pc.list_value_length(column)
        if pc.min(lengths).as_py() != dim or pc.max(lengths).as_py() != dim:
            raise ValueError(f"vectors of varying width in {where} (expected {dim})")
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(-1, dim)


def read_vectors(vectors_url, storage_options=None):
    """Stream a ``vectors/`` table into ``(uri, sha256, vectors, metadata)``.

    ``uri`` and ``sha256`` stay Arrow arrays, ``vectors`` is one preallocated float32 matrix,
    ``metadata`` the table's gridtsne metadata (model, ...). Only those three columns are read.
    """
    fs, files = storage.parquet_files(vectors_url, storage_options)
    if not files:
        raise FileNotFoundError(f"no Parquet files at {vectors_url!r}")
    total, dim, metadata = 0, None, {}
    for f in files:
        with fs.open(f, "rb") as fh:
            pf = pq.ParquetFile(fh)
            arrow_schema = pf.schema_arrow
            missing = {"uri", "vector"} - set(arrow_schema.names)
            if missing:
                raise ValueError(f"{f!r} lacks the column(s) {sorted(missing)}: not a vectors table")
            vtype = arrow_schema.field("vector").type
            if not (pa.types.is_list(vtype) or pa.types.is_fixed_size_list(vtype)
                    or pa.types.is_large_list(vtype)):
                raise ValueError(f"column 'vector' of {f!r} has type {vtype}, not a list of floats")
            if pa.types.is_fixed_size_list(vtype):
                if dim not in (None, vtype.list_size):
                    raise ValueError(f"vector width {vtype.list_size} in {f!r} differs from {dim}")
                dim = vtype.list_size
            metadata = metadata or schema.read_metadata(arrow_schema)
            total += pf.metadata.num_rows
    has_sha = True
    uris, shas, vectors, filled = [], [], None, 0
    start = time.perf_counter()
    for f in files:
        with fs.open(f, "rb") as fh:
            pf = pq.ParquetFile(fh)
            columns = [c for c in ("uri", "sha256", "vector") if c in pf.schema_arrow.names]
            has_sha = has_sha and "sha256" in columns
            for batch in pf.iter_batches(batch_size=16384, columns=columns):
                col = batch.column("vector")
                if dim is None:
                    first = pc.list_value_length(col)[0].as_py() if len(col) else None
                    dim = first
                if vectors is None and dim:
                    vectors = np.empty((total, dim), dtype=np.float32)
                if len(col) == 0:
                    continue
                vectors[filled:filled + len(col)] = _vector_matrix(col, dim, f)
                filled += len(col)
                uris.append(batch.column("uri"))
                shas.append(batch.column("sha256") if "sha256" in columns
                            else pa.nulls(len(col), pa.string()))
        log.info("read %d/%d vectors (%.1f s)", filled, total, time.perf_counter() - start)
    if not filled:
        raise ValueError(f"the vectors table at {vectors_url!r} is empty")
    uri = pa.concat_arrays([a.cast(pa.string()) for a in uris])
    sha = pa.concat_arrays([a.cast(pa.string()) for a in shas])
    if uri.null_count:
        raise ValueError(f"{uri.null_count} rows of {vectors_url!r} have no uri")
    return uri, sha, vectors[:filled], metadata


def permute_rows_in_place(a, order):
    """``a[:] = a[order]`` without a second copy of ``a`` (5 GB for a million 1,280-d vectors).

    Follows each cycle of the permutation with one row of scratch space; rows already in
    place cost nothing, so an already sorted table costs one pass over ``order``.
    """
    order = np.asarray(order)
    if len(order) != len(a):
        raise ValueError(f"order has {len(order)} entries for {len(a)} rows")
    moved = np.flatnonzero(order != np.arange(len(order)))
    done = np.zeros(len(order), dtype=bool)
    for start in moved:
        if done[start]:
            continue
        first = a[start].copy()
        j = start
        while True:
            done[j] = True
            k = order[j]
            if k == start:
                a[j] = first
                break
            a[j] = a[k]
            j = k
    return a


def layout_table(uri, sha256, x, y, row, col, metadata):
    """The ``layout.parquet`` table, with ``metadata`` in the schema (see gridtsne.schema)."""
    return pa.Table.from_arrays(
        [uri, sha256, pa.array(np.asarray(x, np.float32)), pa.array(np.asarray(y, np.float32)),
         pa.array(np.asarray(row, np.int32)), pa.array(np.asarray(col, np.int32))],
        schema=schema.layout_schema(metadata))


def run_layout(vectors_url, output_url, config=LayoutConfig(), positions=None,
               storage_options=None):
    """Lay out the vectors table at ``vectors_url``; write ``<output_url>/layout.parquet`` and
    ``<output_url>/layout.json``. Returns the summary written to ``layout.json`` (a dict; its
    ``started_at``, epoch seconds, and ``timings`` place each step on the job's timeline).

    Rows are sorted by ``uri`` first: a table written by parallel workers comes in no fixed
    order, and the same images must give the same layout for a fixed seed.

    ``positions``, optional, is ``positions(uri, sha256, vectors) -> (xy, info)``: 2-D
    positions to grid instead of a t-SNE fit (see :mod:`gridtsne.stable`); ``info`` goes into
    the summary under ``positions``, except its optional ``pinned`` (an (n,) bool array of the
    images the refinement must leave in their cells). ``storage_options``: per-protocol fsspec
    options for both URLs (see :func:`gridtsne.storage.filesystem`).
    """
    faults.point("vectors-written")
    started_at = time.time()
    started = time.perf_counter()
    start = time.perf_counter()
    progress.phase("layout", "reading vectors")
    uri, sha, vectors, vectors_meta = read_vectors(vectors_url, storage_options)
    order = pc.sort_indices(uri)
    uri, sha = uri.take(order), sha.take(order)
    permute_rows_in_place(vectors, order.to_numpy())
    read_s = time.perf_counter() - start
    log.info("read %d vectors of %d dimensions from %s in %.1f s", len(vectors),
             vectors.shape[1], vectors_url, read_s)
    xy, positions_info = positions(uri, sha, vectors) if positions else (None, None)
    # The hook marks the images it kept in place; the refinement must not move them.
    pinned = (positions_info or {}).pop("pinned", None)
    x, y, row, col, info = compute_layout(vectors, config, xy=xy, pinned=pinned)
    index = pa.array(info["index"])
    timings = {"read_s": round(read_s, 3), **info["timings"]}
    summary = {
        "images": int(len(info["index"])),
        "input_images": int(len(vectors)),
        "rows": info["rows"],
        "cols": info["cols"],
        "cells": info["rows"] * info["cols"],
        "holes": info["rows"] * info["cols"] - int(len(info["index"])),
        "method": info["method"],
        "mean_squared_displacement": round(info["cost"], 6),
        "seed": config.seed,
        "parameters": config.to_dict(),
        "tsne": info["tsne"],
        "refine": info["refine"],
        "positions": positions_info,
        "vectors": vectors_url,
        "vectors_metadata": vectors_meta,
        "vector_dim": int(vectors.shape[1]),
        "gridtsne_version": __version__,
        "started_at": started_at,
        "timings": timings,
    }
    start = time.perf_counter()
    progress.phase("layout", "writing")
    table = layout_table(uri.take(index), sha.take(index), x, y, row, col, summary)
    storage.write_parquet(storage.url_join(output_url, schema.LAYOUT_FILE), table,
                          storage_options)
    timings["write_s"] = round(time.perf_counter() - start, 3)
    timings["total_s"] = round(time.perf_counter() - started, 3)
    storage.write_bytes(storage.url_join(output_url, LAYOUT_SUMMARY_FILE),
                        json.dumps(summary, indent=2, sort_keys=True).encode(), storage_options)
    faults.point("layout-written")
    log.info("wrote a %dx%d layout of %d images to %s in %.1f s", summary["rows"],
             summary["cols"], summary["images"], output_url, timings["total_s"])
    return summary
