"""Refinement of a grid layout by greedy swaps of neighbouring cells, in the full vector space.

t-SNE and the grid assignment only see 2-D positions; this step looks at the image vectors
themselves. Its objective is local: the weighted sum, over every pair of grid neighbours
(side by side; diagonals at DIAGONAL_WEIGHT), of a cost of the distance between their vectors
(default ``gauss``, a saturated squared distance: near pairs count, far pairs saturate;
``euclidean`` is the distance itself; see DISTANCES). A sweep tries to swap every cell with its
right, lower, lower-right and lower-left neighbour (an empty cell swaps as a move) and keeps
each swap that lowers the objective. Swaps are evaluated in batches whose cells are at least
two cells apart, so every batch is evaluated exactly and in one vectorised step: the objective
never increases.
Pairs whose neighbourhood did not change since their last evaluation are skipped, so later
sweeps cost little. Time and memory are linear in the number of images.

Measured on real CNN vectors (see docs/layout.md): 8-neighbour objectives help, wider
neighbourhoods (radius 2-3) and FLAS-style smoothing towards a blurred target made maps worse.
"""
import logging
import time

import numpy as np

log = logging.getLogger(__name__)

# Grid neighbours of a cell and their weights in the objective.
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
# Weight of diagonal neighbours in the objective (side by side: 1). Measured on 4,096 CIFAR-10
# photos after the same assignment: DPQ16 0.8677 at 1/sqrt(2), 0.8802 at 0.5, 0.8843 at 0.25,
# 0.8868 at 0 (label agreement 0.540-0.537): DPQ rewards the nearest grid neighbours most.
DIAGONAL_WEIGHT = 0.0
# Pair costs (see refine_swaps). Measured after the default scalable assignment (16x16
# windows), 3 seeds each (docs/layout.md): on 4,096 CIFAR-10 photos euclidean DPQ16 0.8809 /
# label agreement 0.5502, gauss 0.8876 / 0.5518 (recipe 0.8636 / 0.5477); on the 3,781
# clothing-small photos euclidean 0.8944 / 0.6890, gauss 0.8997 / 0.6888 (recipe 0.8753 /
# 0.6843). Squared distances, capped distances, k-NN bonuses or rank costs, k-NN-smoothed
# vectors, t-SNE coordinates or k-means memberships added to the vectors, swaps 2 cells apart
# and checkerboard window assignments were no better.
DISTANCES = ("gauss", "euclidean")
DISTANCE = "gauss"
# Scale of the gauss cost, times the median squared distance of side-by-side neighbours
# (0.5 beat 1 and 2 on DPQ16 at equal label agreement).
GAUSS_SCALE = 0.5
# Swap partners: right, down, down-right, down-left (each unordered pair once).
PARTNERS = ((0, 1), (1, 0), (1, 1), (1, -1))
# Pairs evaluated per vectorised chunk (bounds memory to CHUNK * 16 * dim floats).
CHUNK = 4096


def _owner_grid(row, col, shape, pad=2):
    """(rows + 2 pad, cols + 2 pad) grid of item indices, -1 for empty and padding cells."""
    rows, cols = shape
    grid = np.full((rows + 2 * pad, cols + 2 * pad), -1, dtype=np.int64)
    grid[np.asarray(row) + pad, np.asarray(col) + pad] = np.arange(len(row))
    return grid


def _weights(diagonal_weight):
    """(offsets, weights) of the neighbours in the objective (diagonals left out at weight 0)."""
    pairs = [(o, diagonal_weight if o[0] and o[1] else 1.0) for o in NEIGHBOURS]
    pairs = [(o, w) for o, w in pairs if w > 0]
    return [o for o, _ in pairs], np.array([w for _, w in pairs])


def layout_objective(vectors, row, col, shape, diagonal_weight=DIAGONAL_WEIGHT,
                     distance=DISTANCE, scale_from=None):
    """The refinement objective: weighted sum of pair costs over neighbouring cells.

    The gauss cost's scale comes from the layout ``scale_from`` (``(row, col)``, the input of
    the refinement), else from this one."""
    x = np.asarray(vectors, dtype=np.float32)
    cost = _pair_cost(distance, x, *(scale_from or (row, col)), shape)
    grid = _owner_grid(row, col, shape)
    rows, cols = shape
    a = grid[2:2 + rows, 2:2 + cols]
    total = 0.0
    for (dr, dc), w in zip(*_weights(diagonal_weight)):
        if (dr, dc) < (0, 0):
            continue  # each unordered pair once
        b = grid[2 + dr:2 + dr + rows, 2 + dc:2 + dc + cols]
        both = (a >= 0) & (b >= 0)
        diff = x[a[both]] - x[b[both]]
        d = cost(np.einsum("ij,ij->i", diff, diff).astype(np.float64))
        total += w * float(d.sum(dtype=np.float64))
    return total


def _batches(shape, partner):
    """First cells (rows, cols) of the pairs of each batch for one partner direction: every
    pair of neighbours in that direction is in exactly one batch, and pairs of one batch are
    at least two cells apart, so their deltas do not interact."""
    rows, cols = shape
    dr, dc = partner
    sr, sc = abs(dr) + 2, abs(dc) + 2
    # A pair's first cell (r, c) and its partner (r + dr, c + dc) both lie on the grid.
    r0, r1 = max(0, -dr), rows - max(dr, 0)
    c0, c1 = max(0, -dc), cols - max(dc, 0)
    for pr in range(sr):
        for pc in range(sc):
            r = np.arange(r0 + pr, r1, sr)
            c = np.arange(c0 + pc, c1, sc)
            if len(r) and len(c):
                rr, cc = np.meshgrid(r, c, indexing="ij")
                yield rr.ravel(), cc.ravel()


def _pair_cost(distance, x, row, col, shape):
    """The cost of a neighbouring pair as a function of its squared distance (see refine_swaps)."""
    if distance == "euclidean":
        return np.sqrt
    if distance != "gauss":
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    grid = _owner_grid(row, col, shape, pad=0)
    a, b = grid[:, :-1].ravel(), grid[:, 1:].ravel()
    both = (a >= 0) & (b >= 0)
    if not both.any():
        return np.sqrt
    d2 = np.einsum("ij,ij->i", x[a[both]] - x[b[both]], x[a[both]] - x[b[both]])
    scale = GAUSS_SCALE * float(np.median(d2))
    if scale <= 0:
        return np.sqrt
    return lambda d2: 1.0 - np.exp(-d2 / scale)


def _side_terms(x, sq, grid, r, c, offsets, weights, who, cost=np.sqrt):
    """For cells (r, c) (padded coordinates), the weighted distance sums of item ``who`` to the
    items at ``offsets`` around the cell: (len(r),) float64; 0 where ``who`` is -1 (empty)."""
    nb = np.stack([grid[r + dr, c + dc] for dr, dc in offsets], axis=1)  # (p, k)
    valid = (nb >= 0) & (who >= 0)[:, None]
    safe_nb = np.where(nb >= 0, nb, 0)
    safe_who = np.where(who >= 0, who, 0)
    dots = np.einsum("pd,pkd->pk", x[safe_who], x[safe_nb]).astype(np.float64)
    d = cost(np.maximum(sq[safe_who][:, None] + sq[safe_nb] - 2.0 * dots, 0.0))
    return (np.where(valid, d, 0.0) * weights).sum(1)


def refine_swaps(vectors, row, col, shape, passes=20, pinned=None,
                 diagonal_weight=DIAGONAL_WEIGHT, partners=PARTNERS, tol=1e-6,
                 distance=DISTANCE):
    """Greedy neighbour swaps that lower :func:`layout_objective`; returns ``(row, col, info)``.

    Parameters
    ----------
    vectors : (n, d) float array, the image vectors (in the order of ``row``/``col``).
    row, col : (n,) cells of a valid layout (distinct cells of a ``shape`` grid).
    passes : sweeps over all cells; stops early when a sweep swaps nothing.
    pinned : optional (n,) bool: these images never move (``--stable`` keeps them in place).
    diagonal_weight : weight of diagonal neighbours in the objective (side by side: 1).
    distance : cost of a neighbouring pair from their squared vector distance ``d2``:
        ``"gauss"`` (``1 - exp(-d2 / s)``, ``s`` = GAUSS_SCALE times the median ``d2`` of
        side-by-side neighbours in the input layout: near pairs count, far pairs saturate) or
        ``"euclidean"`` (``sqrt(d2)``).
    partners : offsets (dr, dc) of the cells each cell tries to swap with.
    tol : a swap must lower the objective by more than this (float rounding).

    The result is a permutation of the input cells; ``info`` has ``passes`` (run), ``swaps``
    (per pass) and ``seconds`` (:func:`layout_objective` measures the objective itself).
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    rows, cols = shape
    n = len(x)
    if len(row) != n or len(col) != n:
        raise ValueError(f"{n} vectors but {len(row)} rows and {len(col)} cols")
    if passes < 0:
        raise ValueError(f"passes must be non-negative, got {passes!r}")
    if any(max(abs(dr), abs(dc)) > 2 or (dr, dc) <= (0, 0) for dr, dc in partners):
        raise ValueError(f"partners must be offsets after (0, 0) within 2 cells, got {partners!r}")
    pin = np.zeros(n, dtype=bool) if pinned is None else np.asarray(pinned, dtype=bool)
    if pin.shape != (n,):
        raise ValueError(f"pinned must have shape ({n},), got {pin.shape!r}")
    offsets, weights = _weights(diagonal_weight)
    sq = np.einsum("ij,ij->i", x, x).astype(np.float64)
    cost = _pair_cost(distance, x, row, col, shape)
    grid = _owner_grid(row, col, shape, pad=3)
    # Batch counter at which each (padded) cell last changed, and at which each pair (by its
    # first cell and partner) was last evaluated: pairs whose neighbourhood is unchanged since
    # are skipped (their swap would still not help).
    changed = np.zeros(grid.shape, dtype=np.int64)
    seen = np.full((len(partners),) + grid.shape, -1, dtype=np.int64)
    around = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
    start = time.perf_counter()
    swaps, t = [], 0
    for _ in range(passes):
        done = 0
        for k, (dr, dc) in enumerate(partners):
            side_a = [o for o in offsets if o != (dr, dc)]
            side_b = [o for o in offsets if o != (-dr, -dc)]
            w_a = weights[[offsets.index(o) for o in side_a]]
            w_b = weights[[offsets.index(o) for o in side_b]]
            for r, c in _batches(shape, (dr, dc)):
                t += 1
                r, c = r + 3, c + 3
                ia, ib = grid[r, c], grid[r + dr, c + dc]
                last = np.maximum.reduce([changed[r + a, c + b] for a, b in around]
                                         + [changed[r + dr + a, c + dc + b] for a, b in around])
                ok = ((ia >= 0) | (ib >= 0)) & (last > seen[k, r, c])
                ok &= ~((ia >= 0) & pin[np.maximum(ia, 0)])
                ok &= ~((ib >= 0) & pin[np.maximum(ib, 0)])
                seen[k, r, c] = t
                sel = np.flatnonzero(ok)
                for s in range(0, len(sel), CHUNK):
                    q = sel[s:s + CHUNK]
                    rq, cq, a, b = r[q], c[q], ia[q], ib[q]
                    rb, cb = rq + dr, cq + dc
                    old = (_side_terms(x, sq, grid, rq, cq, side_a, w_a, a, cost)
                           + _side_terms(x, sq, grid, rb, cb, side_b, w_b, b, cost))
                    new = (_side_terms(x, sq, grid, rq, cq, side_a, w_a, b, cost)
                           + _side_terms(x, sq, grid, rb, cb, side_b, w_b, a, cost))
                    go = np.flatnonzero(new < old - tol)
                    if len(go):
                        grid[rq[go], cq[go]] = b[go]
                        grid[rb[go], cb[go]] = a[go]
                        changed[rq[go], cq[go]] = t
                        changed[rb[go], cb[go]] = t
                        done += len(go)
        swaps.append(done)
        log.info("refinement pass %d: %d swaps (%.1f s)", len(swaps), done,
                 time.perf_counter() - start)
        if done == 0:
            break
    inner = grid[3:3 + rows, 3:3 + cols].ravel()
    cell = np.flatnonzero(inner >= 0)
    new_row = np.empty(n, dtype=np.int32)
    new_col = np.empty(n, dtype=np.int32)
    new_row[inner[cell]], new_col[inner[cell]] = np.divmod(cell, cols)
    return new_row, new_col, {"passes": len(swaps), "swaps": swaps,
                              "seconds": round(time.perf_counter() - start, 3)}


REFINEMENTS = ("swaps", "none")


def refine_layout(vectors, row, col, shape, method="swaps", passes=20, pinned=None,
                  distance=DISTANCE):
    """The refinement step of the layout: ``method`` ``"swaps"`` (:func:`refine_swaps`) or
    ``"none"``. Returns ``(row, col, info)``; ``info`` says what was done."""
    if method not in REFINEMENTS:
        raise ValueError(f"refinement must be one of {REFINEMENTS}, got {method!r}")
    if method == "none" or passes == 0:
        return row, col, {"method": "none"}
    row, col, info = refine_swaps(vectors, row, col, shape, passes=passes, pinned=pinned,
                                  distance=distance)
    info = {"method": method, "distance": distance, **info}
    if pinned is not None:
        info["pinned"] = int(np.count_nonzero(pinned))
    return row, col, info
