"""The refinement step (greedy neighbour swaps in vector space) and its wiring into the layout."""
import numpy as np
import pytest

from gridtsne.layout import LayoutConfig, compute_layout
from gridtsne.metrics import dpq
from gridtsne.refine import PARTNERS, _batches, layout_objective, refine_layout, refine_swaps


def _scrambled_ramp(rows=12, cols=12, holes=0, swaps=60, seed=0):
    """Vectors varying smoothly over a grid, laid out in order and then locally scrambled."""
    rng = np.random.default_rng(seed)
    n = rows * cols - holes
    r, c = np.divmod(np.arange(n), cols)
    v = np.stack([r, c, np.sin(r / 2.0), np.cos(c / 3.0)], 1).astype(np.float32)
    v += 0.05 * rng.normal(size=v.shape).astype(np.float32)
    cell = np.arange(n)
    for _ in range(swaps):  # random nearby exchanges, also into empty cells
        a = rng.integers(n)
        b = cell[a] + rng.choice([1, cols, cols + 1])
        if b >= rows * cols:
            continue
        other = np.flatnonzero(cell == b)
        if len(other):
            cell[other[0]] = cell[a]
        cell[a] = b
    row, col = np.divmod(cell, cols)
    return v, row.astype(np.int32), col.astype(np.int32), (rows, cols)


@pytest.mark.parametrize("holes,distance", [(0, "gauss"), (7, "gauss"), (0, "euclidean")])
def test_swaps_lower_the_objective_and_keep_a_valid_layout(holes, distance):
    v, row, col, shape = _scrambled_ramp(holes=holes)
    before = layout_objective(v, row, col, shape, distance=distance)
    r2, c2, info = refine_swaps(v, row, col, shape, passes=20, distance=distance)
    after = layout_objective(v, r2, c2, shape, distance=distance, scale_from=(row, col))
    assert after < before * 0.97 and sum(info["swaps"]) > 0
    cells = r2.astype(np.int64) * shape[1] + c2
    assert len(np.unique(cells)) == len(v) and cells.min() >= 0 and cells.max() < 144
    if not holes:  # a full grid: the same cells, permuted
        assert np.array_equal(np.sort(cells), np.arange(144))
    assert dpq(v, r2, c2) > dpq(v, row, col)


def test_every_pass_never_increases_the_objective():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(90, 16)).astype(np.float32)
    cell = rng.permutation(100)[:90]
    row, col = np.divmod(cell, 10)
    shape = (10, 10)
    values = [layout_objective(v, row, col, shape, distance="euclidean")]
    for _ in range(5):
        row, col, _ = refine_swaps(v, row, col, shape, passes=1, distance="euclidean")
        values.append(layout_objective(v, row, col, shape, distance="euclidean"))
    assert all(b <= a + 1e-6 for a, b in zip(values, values[1:]))
    assert values[-1] < values[0]


def test_pinned_images_keep_their_cells():
    v, row, col, shape = _scrambled_ramp(holes=5, seed=1)
    pinned = np.zeros(len(v), dtype=bool)
    pinned[::3] = True
    r2, c2, info = refine_swaps(v, row, col, shape, passes=20, pinned=pinned)
    assert np.array_equal(r2[pinned], row[pinned]) and np.array_equal(c2[pinned], col[pinned])
    assert sum(info["swaps"]) > 0 and ((r2 != row) | (c2 != col))[~pinned].any()
    assert (layout_objective(v, r2, c2, shape, scale_from=(row, col))
            < layout_objective(v, row, col, shape))


def test_refine_none_and_bad_arguments():
    v, row, col, shape = _scrambled_ramp()
    r2, c2, info = refine_layout(v, row, col, shape, "none")
    assert info == {"method": "none"} and r2 is row and c2 is col
    with pytest.raises(ValueError, match="shuffle"):
        refine_layout(v, row, col, shape, "shuffle")
    with pytest.raises(ValueError, match="pinned"):
        refine_swaps(v, row, col, shape, pinned=np.zeros(3, bool))
    with pytest.raises(ValueError, match="distance"):
        refine_swaps(v, row, col, shape, distance="manhattan")
    with pytest.raises(ValueError, match="refine_distance"):
        LayoutConfig(refine_distance="manhattan")


def test_compute_layout_runs_refinement_as_its_own_step():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(150, 12)).astype(np.float32)
    xy = rng.normal(size=(150, 2))
    fast = dict(verbose=False, n_jobs=1)
    _, _, r0, c0, i0 = compute_layout(v, LayoutConfig(refine="none", **fast), xy=xy)
    _, _, r1, c1, i1 = compute_layout(v, LayoutConfig(**fast), xy=xy)
    assert i0["refine"] == {"method": "none"} and i1["refine"]["method"] == "swaps"
    assert "refine_s" in i1["timings"]
    shape = (i1["rows"], i1["cols"])
    assert (layout_objective(v, r1, c1, shape, scale_from=(r0, c0))
            < layout_objective(v, r0, c0, shape))
    assert i1["refine"]["distance"] == "gauss"  # the default pair cost
    # --stable pins the kept images: with refinement they stay where the assignment put them.
    pinned = np.arange(150) < 120
    _, _, r2, c2, i2 = compute_layout(v, LayoutConfig(**fast), xy=xy, pinned=pinned)
    assert np.array_equal(r2[pinned], r0[pinned]) and np.array_equal(c2[pinned], c0[pinned])
    assert i2["refine"]["pinned"] == 120


@pytest.mark.parametrize("bad", [dict(refine="blur"), dict(refine_passes=-1),
                                 dict(metric="manhattan")])
def test_config_rejects_bad_refinement_values(bad):
    (_, value), = bad.items()
    with pytest.raises(ValueError, match=str(value)):
        LayoutConfig(**bad)


@pytest.mark.parametrize("partners", [PARTNERS, ((0, 1), (1, 0), (1, 1), (1, -1), (2, -1))])
def test_each_pass_tries_every_neighbouring_pair_exactly_once(partners):
    """On a 6x8 grid: 42 side-by-side, 40 one-above-the-other and 35 pairs per diagonal, each in
    exactly one batch, and the pairs of a batch at least two cells apart."""
    rows, cols = 6, 8
    for dr, dc in partners:
        expected = {(r, c) for r in range(rows) for c in range(cols)
                    if 0 <= r + dr < rows and 0 <= c + dc < cols}
        seen = []
        for r, c in _batches((rows, cols), (dr, dc)):
            seen += zip(r.tolist(), c.tolist())
            cells = np.concatenate([np.stack([r, c], 1), np.stack([r + dr, c + dc], 1)])
            pair = np.concatenate([np.arange(len(r))] * 2)
            apart = np.abs(cells[:, None] - cells[None]).max(-1)
            other = pair[:, None] != pair[None]
            assert apart[other].min() >= 2, (dr, dc)  # no shared or touching cells
        assert len(seen) == len(set(seen)), (dr, dc)  # none twice
        assert set(seen) == expected, (dr, dc, sorted(expected - set(seen)))  # none left out
    if partners == PARTNERS:
        assert sum(len(r) for p in partners for r, _ in _batches((rows, cols), p)) == \
            42 + 40 + 35 + 35
