"""Assignment of 2-D points to grid cells, minimising the total squared Euclidean distance.

Three methods:

``exact``
    The optimal assignment of a dense cost matrix with SciPy's ``linear_sum_assignment``
    (measured here 2-3x faster than ``lap.lapjv`` on such grid costs: 1,024 points 0.38 s vs
    0.84 s, 4,096 points 26 s vs 60 s). Time grows roughly cubically and memory quadratically,
    so it is only practical up to a few thousand points.
``scalable``
    Near-linear time and memory for 10,000 to 1,000,000+ points: a recursive balanced
    partition splits the grid into halves along its longer side and the points at the
    matching quantile of that axis (the 1-D optimal transport of their marginal), down to
    small blocks solved exactly; then sweeps of overlapping windows, each re-solved exactly
    with the points it holds, remove the seams the partition leaves between blocks. Every
    window solve can only lower the total cost, so the refinement never makes things worse.
    Disjoint blocks are solved in parallel threads (SciPy releases the GIL).
``auto``
    ``exact`` up to :data:`EXACT_AUTO_LIMIT` (2,048) points as long as the cost matrix stays
    small, ``scalable`` above. Alone, exact is slightly better (3,781 clothing-small photos:
    DPQ16 0.8738 vs 0.8725), but the layout's refinement step (:mod:`gridtsne.refine`) more than
    makes that up: on 4,096 CIFAR-10 photos scalable + refinement scored DPQ16 0.8825 in 1.3 s
    against 0.8619 for exact alone in 42 s (docs/layout.md).

All functions take points already in grid units (see :func:`gridtsne.grid.to_grid_units`)
and return the flat cell index (``row * cols + col``) of every point.
"""
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.optimize import linear_sum_assignment

from gridtsne.grid import cell_centres

log = logging.getLogger(__name__)

METHODS = ("exact", "scalable", "auto")
# Side of the scalable assignment's refinement windows. 16 (not 12): on real 4,096-image
# CIFAR-10 t-SNE maps (3 seeds) the mean squared displacement fell from 43.20 to 42.87 cells²
# (exact: 42.51) and neighbour label agreement after the layout's refinement rose from 0.5463
# to 0.5518, for 1.3 s instead of 0.7 s (docs/layout.md); 24 matched exact's cost (42.59) in
# 3.5 s with no better maps after refinement.
WINDOW = 16
# Largest N for which ``auto`` still solves exactly (2 s at 2,048; 16-26 s at 3,781-4,096 here;
# above 2,048 the scalable solve plus the refinement step is both faster and better).
EXACT_AUTO_LIMIT = 2048
# ... and only while its cost matrix stays small (points x cells entries, 8 bytes each).
EXACT_AUTO_MAX_ENTRIES = 4 * EXACT_AUTO_LIMIT ** 2


def squared_costs(points, centres):
    """Dense (n_points, n_cells) matrix of squared Euclidean distances."""
    dx = points[:, 0, None] - centres[None, :, 0]
    dy = points[:, 1, None] - centres[None, :, 1]
    return dx * dx + dy * dy


def solve_cells(points, cells, shape):
    """Optimal assignment of ``points`` to the flat cell indices ``cells`` (len(points) <= len(cells)).

    Returns the cell index given to each point, in the order of ``points``.
    """
    cells = np.asarray(cells)
    if len(points) > len(cells):
        raise ValueError(f"{len(points)} points cannot fit into {len(cells)} cells")
    if len(points) == 0:
        return np.empty(0, dtype=np.int64)
    cost = squared_costs(np.asarray(points, dtype=np.float64), cell_centres(shape, cells))
    _, col = linear_sum_assignment(cost)
    return cells[col]


def assign_exact(points, shape):
    """The optimal assignment of every point to a distinct cell of a ``shape`` grid."""
    rows, cols = shape
    return solve_cells(points, np.arange(rows * cols), shape)


def _threads(n_jobs):
    return os.cpu_count() or 1 if n_jobs in (None, -1) else max(1, int(n_jobs))


def _solve_blocks(points, shape, blocks, pool):
    """Solve independent blocks ``[(point_indices, cells), ...]``; returns their cell arrays.

    SciPy's solver releases the GIL, so disjoint blocks solve in parallel threads; the
    result does not depend on the number of threads.
    """
    def solve(block):
        idx, cells = block
        return solve_cells(points[idx], cells, shape)
    if pool is None or len(blocks) < 2:
        return [solve(b) for b in blocks]
    return list(pool.map(solve, blocks))


def _partition(points, shape, leaf_cells, pool=None):
    """Recursive balanced partition of points and grid into blocks, each solved exactly."""
    rows, cols = shape
    n = len(points)
    cell_of = np.empty(n, dtype=np.int64)
    stack = [(0, rows, 0, cols, np.arange(n))]
    leaves = []
    while stack:
        r0, r1, c0, c1, idx = stack.pop()
        h, w = r1 - r0, c1 - c0
        m = len(idx)
        if m == 0:
            continue
        if h * w <= leaf_cells:
            cells = (np.arange(r0, r1)[:, None] * cols + np.arange(c0, c1)[None, :]).ravel()
            leaves.append((idx, cells))
            continue
        if w >= h:
            axis, mid = 0, c0 + w // 2
            k1, k2 = h * (mid - c0), h * (c1 - mid)
            halves = ((r0, r1, c0, mid), (r0, r1, mid, c1))
        else:
            axis, mid = 1, r0 + h // 2
            k1, k2 = (mid - r0) * w, (r1 - mid) * w
            halves = ((r0, mid, c0, c1), (mid, r1, c0, c1))
        coord = points[idx, axis]
        # Points stay on their side of the cut when capacity allows, so holes (fewer points
        # than cells) end up where the embedding is sparse, as in the exact solution.
        n1 = int(np.count_nonzero(coord < mid))
        n1 = min(max(n1, m - k2), k1)
        if n1 == 0:
            first, second = idx[:0], idx
        elif n1 == m:
            first, second = idx, idx[:0]
        else:
            order = np.argpartition(coord, n1)
            first, second = idx[order[:n1]], idx[order[n1:]]
        stack.append((*halves[1], second))
        stack.append((*halves[0], first))
    for (idx, _), cells in zip(leaves, _solve_blocks(points, shape, leaves, pool)):
        cell_of[idx] = cells
    return cell_of


def _sweep(points, shape, cell_of, owner, window, offset, pool):
    """Re-solve the disjoint ``window`` x ``window`` blocks of one tiling exactly, in place.

    Returns the number of points that changed cell. Each block keeps its own points and cells,
    so the total cost can only go down.
    """
    rows, cols = shape
    oy, ox = offset
    blocks = []
    for r0 in range(-oy, rows, window):
        ra, rb = max(r0, 0), min(r0 + window, rows)
        for c0 in range(-ox, cols, window):
            ca, cb = max(c0, 0), min(c0 + window, cols)
            if rb <= ra or cb <= ca:
                continue
            cells = (np.arange(ra, rb)[:, None] * cols + np.arange(ca, cb)[None, :]).ravel()
            who = owner[cells]
            who = who[who >= 0]
            if len(who) >= 2:
                blocks.append((who, cells))
    moved = 0
    for (who, _), new in zip(blocks, _solve_blocks(points, shape, blocks, pool)):
        changed = new != cell_of[who]
        if changed.any():
            moved += int(changed.sum())
            owner[cell_of[who]] = -1
            owner[new] = who
            cell_of[who] = new
    return moved


def window_offsets(window):
    """Offsets of successive refinement tilings: half-window shifts first, then quarter ones,
    so every seam of the partition and of earlier tilings falls inside a later window."""
    h, q = window // 2, window // 4
    return [(h, h), (0, 0), (h, 0), (0, h), (q, q), (h + q, h + q), (q, h + q), (h + q, q)]


def assign_scalable(points, shape, leaf_cells=144, window=WINDOW, passes=12, n_jobs=-1):
    """Near-linear assignment: balanced recursive partition, then overlapping-window refinement.

    Parameters
    ----------
    points : (n, 2) array in grid units, n <= rows * cols.
    shape : (rows, cols).
    leaf_cells : blocks of at most this many cells are solved exactly by the partition.
    window : side of the square refinement windows (``window**2`` cells solved exactly each).
    passes : refinement sweeps, each a tiling of the grid by windows at a new offset
        (:func:`window_offsets`); stops early when a sweep moves nothing.

    On a real 16,384-image t-SNE map (128x128) the largest jump in map position across a grid
    line, relative to the median jump, fell from 5.2 after the partition alone to 1.5 (12x12
    windows, 12 sweeps, 3.5 s), the level the exact solution shows on smaller maps (1.6 at
    2,048). The window is now :data:`WINDOW` (16): lower cost, closer to the exact solution,
    and better maps once the layout is refined, at about twice the time.
    n_jobs : threads solving disjoint blocks in parallel (-1: all cores); the result is the
        same for any number.
    """
    rows, cols = shape
    points = np.asarray(points, dtype=np.float64)
    if len(points) > rows * cols:
        raise ValueError(f"{len(points)} points cannot fit into a {rows}x{cols} grid")
    if leaf_cells < 1 or window < 2 or passes < 0:
        raise ValueError(f"bad scalable parameters leaf_cells={leaf_cells!r} window={window!r} "
                         f"passes={passes!r}")
    threads = _threads(n_jobs)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        start = time.perf_counter()
        cell_of = _partition(points, shape, leaf_cells, pool)
        log.info("partitioned %d points into blocks of <= %d cells in %.1f s", len(points),
                 leaf_cells, time.perf_counter() - start)
        owner = np.full(rows * cols, -1, dtype=np.int64)
        owner[cell_of] = np.arange(len(cell_of))
        offsets = window_offsets(window)
        for i in range(passes):
            moved = _sweep(points, shape, cell_of, owner, window, offsets[i % len(offsets)], pool)
            log.info("refinement sweep %d/%d moved %d points (%.1f s)", i + 1, passes, moved,
                     time.perf_counter() - start)
            if moved == 0:
                break
    finally:
        if pool is not None:
            pool.shutdown()
    return cell_of


def choose_method(method, n, cells=None):
    """The concrete method (``exact`` or ``scalable``) that ``method`` means for ``n`` points.

    ``auto`` also looks at the number of ``cells``: a few points in a huge grid would still
    make a dense cost matrix too large to solve in seconds.
    """
    if method not in METHODS:
        raise ValueError(f"assignment method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        cells = n if cells is None else cells
        small = n <= EXACT_AUTO_LIMIT and n * cells <= EXACT_AUTO_MAX_ENTRIES
        return "exact" if small else "scalable"
    return method


def assign_to_grid(points, shape, method="auto", **scalable_options):
    """Assign each point (grid units) to a distinct cell; returns ``(row, col, method_used)``.

    ``row`` and ``col`` are int32 arrays in the order of ``points``.
    """
    rows, cols = shape
    n = len(points)
    if n > rows * cols:
        raise ValueError(f"{n} images do not fit into a {rows}x{cols} grid ({rows * cols} cells)")
    used = choose_method(method, n, rows * cols)
    start = time.perf_counter()
    if used == "exact":
        cell_of = assign_exact(points, shape)
    else:
        cell_of = assign_scalable(points, shape, **scalable_options)
    log.info("assigned %d points to a %dx%d grid (%s) in %.2f s", n, rows, cols, used,
             time.perf_counter() - start)
    row, col = np.divmod(cell_of, cols)
    return row.astype(np.int32), col.astype(np.int32), used


def assign_to_free_cells(points, shape, taken, max_entries=100_000_000):
    """Optimal assignment of new ``points`` (grid units) to the cells not in ``taken``.

    For incremental layouts (``--stable``): images already laid out keep their cells (the flat
    indices ``taken``), new images fill the free cells nearest to their map positions. An exact
    solve over ``len(points) x free cells`` squared costs, refused above ``max_entries``
    matrix entries (8 bytes each) with a ValueError rather than exhausting memory.

    Returns ``(row, col)`` int32 arrays in the order of ``points``.
    """
    rows, cols = shape
    taken = np.asarray(taken, dtype=np.int64)
    if len(taken) and (taken.min() < 0 or taken.max() >= rows * cols):
        raise ValueError(f"taken cells must lie in a {rows}x{cols} grid, got "
                         f"{taken.min()}..{taken.max()}")
    free = np.setdiff1d(np.arange(rows * cols), taken)
    if len(points) > len(free):
        raise ValueError(f"{len(points)} new images do not fit into the {len(free)} free cells "
                         f"of a {rows}x{cols} grid")
    if len(points) * len(free) > max_entries:
        raise ValueError(f"{len(points)} new images x {len(free)} free cells exceeds "
                         f"max_entries={max_entries}: lay the collection out afresh instead")
    cells = solve_cells(np.asarray(points, dtype=np.float64), free, shape)
    row, col = np.divmod(cells, cols)
    return row.astype(np.int32), col.astype(np.int32)


def total_cost(points, row, col):
    """Total squared distance of points (grid units) to the centres of their cells."""
    dx = points[:, 0] - (np.asarray(col) + 0.5)
    dy = points[:, 1] - (np.asarray(row) + 0.5)
    return float(np.sum(dx * dx + dy * dy))
