"""Quality of a grid layout: Distance Preservation Quality (DPQ_p) and neighbour label agreement.

DPQ_p follows Barthel et al., "Improved Evaluation and Generation of Grid Layouts using
Distance Preservation Quality and Linear Assignment Sorting" (Computer Graphics Forum, 2023):
for each item the others are ordered by grid distance (ties broken by feature distance);
``D_k`` is the mean over items of the mean feature distance to their first ``k`` grid
neighbours, and the same with neighbours ordered by feature distance is the ideal. With
``gain_k = max(0, (mean pairwise distance - D_k) / mean pairwise distance)`` for
``k = 1 .. N-1``, ``DPQ_p = ||gain(layout)||_p / ||gain(ideal)||_p``: 1 for a layout whose
grid neighbourhoods are the true nearest neighbours, near 0 for a random one.
It costs O(N^2 log N) time, so evaluate on up to ~10,000 items (or a sample).
"""
import logging

import numpy as np

log = logging.getLogger(__name__)

# Rows of the N x N distance matrices handled at once: bounds memory to ~CHUNK * N * 40 bytes.
_CHUNK = 256


def _pairwise(a, b):
    """Euclidean distances between the rows of ``a`` and ``b`` (float64, clipped at 0)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0))


def _gain(cum_sum, mean_dist):
    """gain_k from the summed (over items) cumulative neighbour distances."""
    n = len(cum_sum) + 1
    d_k = cum_sum / np.arange(1, n) / n
    return np.maximum(0.0, (mean_dist - d_k) / mean_dist)


def distance_preservation_gains(vectors, row, col):
    """``(gain_layout, gain_ideal, mean_distance)``: the two gain curves over k = 1..N-1."""
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if n < 3:
        raise ValueError(f"DPQ needs at least 3 items, got {n!r}")
    if len(row) != n or len(col) != n:
        raise ValueError(f"{n} vectors but {len(row)} rows and {len(col)} cols")
    grid = np.stack([np.asarray(row, np.float64), np.asarray(col, np.float64)], axis=1)
    # A first pass for the largest feature distance, so the tie-break key stays below 1.
    max_d = 0.0
    total = 0.0
    for s in range(0, n, _CHUNK):
        d = _pairwise(x[s:s + _CHUNK], x)
        max_d = max(max_d, float(d.max()))
        total += float(d.sum())
    mean_dist = total / (n * (n - 1))
    if mean_dist == 0:
        raise ValueError("all vectors are identical: DPQ is undefined")
    scale = 1.0 / (max_d * 1.000001 + 1e-300)
    cum_layout = np.zeros(n - 1)
    cum_ideal = np.zeros(n - 1)
    for s in range(0, n, _CHUNK):
        d = _pairwise(x[s:s + _CHUNK], x)
        g = grid[s:s + _CHUNK, None, :] - grid[None, :, :]
        g2 = (g * g).sum(-1)  # squared grid distance: integers, ordered like the distance
        # Sort by grid distance, ties by feature distance; the item itself sorts first (0, 0).
        order = np.argsort(g2 + d * scale, axis=1, kind="stable")
        by_grid = np.take_along_axis(d, order, axis=1)[:, 1:]
        cum_layout += np.cumsum(by_grid, axis=1).sum(0)
        cum_ideal += np.cumsum(np.sort(d, axis=1)[:, 1:], axis=1).sum(0)
    return _gain(cum_layout, mean_dist), _gain(cum_ideal, mean_dist), mean_dist


def dpq(vectors, row, col, p=16):
    """Distance Preservation Quality DPQ_p of a layout (cells ``row``, ``col`` per vector).

    Empty cells are simply absent: distances are between the cells the items occupy.
    """
    if p <= 0:
        raise ValueError(f"p must be positive, got {p!r}")
    gain_layout, gain_ideal, _ = distance_preservation_gains(vectors, row, col)
    ideal = np.linalg.norm(gain_ideal, ord=p)
    if ideal == 0:
        raise ValueError("the ideal gain is zero: DPQ is undefined for these vectors")
    return float(np.linalg.norm(gain_layout, ord=p) / ideal)


def sample_for_metrics(n, max_items, seed=0):
    """Indices of at most ``max_items`` of ``n`` items (all when ``n <= max_items``), sorted."""
    if n <= max_items:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_items, replace=False))


def neighbour_label_agreement(row, col, labels):
    """Fraction of horizontally or vertically adjacent occupied cell pairs sharing a label.

    Items whose label is ``None`` (unlabelled) are left out of every pair. Returns ``nan`` when
    no labelled pair of neighbours exists.
    """
    row = np.asarray(row, dtype=np.int64)
    col = np.asarray(col, dtype=np.int64)
    labels = np.asarray(labels, dtype=object)
    if not (len(row) == len(col) == len(labels)):
        raise ValueError(f"row, col and labels differ in length: {len(row)}, {len(col)}, "
                         f"{len(labels)}")
    known = np.array([lab is not None for lab in labels], dtype=bool)
    _, codes = np.unique(np.where(known, labels, "").astype(str), return_inverse=True)
    rows, cols = int(row.max()) + 1, int(col.max()) + 1
    grid = np.full((rows, cols), -1, dtype=np.int64)
    if len(np.unique(row * cols + col)) != len(row):
        raise ValueError("two items share a cell: not a valid layout")
    grid[row[known], col[known]] = codes[known]
    same = pairs = 0
    for a, b in ((grid[:, :-1], grid[:, 1:]), (grid[:-1, :], grid[1:, :])):
        both = (a >= 0) & (b >= 0)
        pairs += int(both.sum())
        same += int((both & (a == b)).sum())
    return same / pairs if pairs else float("nan")
