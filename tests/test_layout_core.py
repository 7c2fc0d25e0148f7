"""Unit tests of the Beam-free layout core: grid shapes, assignment, quality metrics."""
import numpy as np
import pytest

from gridtsne.assign import (assign_exact, assign_scalable, assign_to_free_cells, assign_to_grid,
                             choose_method, total_cost)
from gridtsne.grid import auto_grid, cell_centres, parse_grid, resolve_grid, to_grid_units
from gridtsne.metrics import dpq, neighbour_label_agreement


def _clustered(n, seed=0, k=8):
    """2-D points in ``k`` Gaussian blobs of unequal size, like a t-SNE map."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, 2)) * 4
    sizes = rng.dirichlet(np.ones(k) * 2)
    which = rng.choice(k, size=n, p=sizes)
    return centres[which] + rng.normal(size=(n, 2)) * rng.uniform(0.3, 1.5, size=k)[which, None]


def _assert_injection(row, col, shape, n):
    rows, cols = shape
    assert len(row) == len(col) == n
    assert row.dtype == np.int32 and col.dtype == np.int32
    assert row.min() >= 0 and row.max() < rows and col.min() >= 0 and col.max() < cols
    assert len(np.unique(row.astype(np.int64) * cols + col)) == n


# ---- grid -------------------------------------------------------------------------------

def test_parse_grid():
    assert parse_grid("32x24") == (32, 24)
    assert parse_grid(" 3X5 ") == (3, 5)
    assert parse_grid("auto") is None
    for bad in ("0x5", "x5", "5", "axb", "3x-1"):
        with pytest.raises(ValueError, match=repr(bad).strip("'")):
            parse_grid(bad)


def test_auto_grid_is_smallest_near_square():
    assert auto_grid(1024) == (32, 32)
    assert auto_grid(1025) == (32, 33)
    assert auto_grid(990) == (31, 32)
    for n in (1, 2, 7, 100, 101, 4097, 65537):
        rows, cols = auto_grid(n)
        assert rows * cols >= n
        assert (rows - 1) * cols < n  # no wholly empty row
        assert cols - rows in (0, 1)
    with pytest.raises(ValueError, match="0"):
        auto_grid(0)
    assert resolve_grid("4x5", 20) == (4, 5)


def test_to_grid_units_spans_cell_centres():
    pts = to_grid_units(np.array([[-3.0, 10.0], [5.0, 20.0], [1.0, 15.0]]), (4, 6))
    np.testing.assert_allclose(pts.min(0), [0.5, 0.5])
    np.testing.assert_allclose(pts.max(0), [5.5, 3.5])
    np.testing.assert_allclose(cell_centres((2, 3), [0, 5]), [[0.5, 0.5], [2.5, 1.5]])


# ---- assignment ---------------------------------------------------------------------------

def test_exact_recovers_a_permuted_grid():
    shape = (12, 15)
    centres = cell_centres(shape)
    perm = np.random.default_rng(1).permutation(len(centres))
    pts = centres[perm] + 0.01
    for method in ("exact", "scalable"):
        row, col, _ = assign_to_grid(pts, shape, method, leaf_cells=16, window=4)
        np.testing.assert_array_equal(row * shape[1] + col, perm)


@pytest.mark.parametrize("n,shape", [(400, (20, 20)), (350, (20, 20)), (1000, (25, 41))])
def test_every_method_gives_a_valid_injection(n, shape):
    pts = to_grid_units(_clustered(n), shape)
    for method in ("exact", "scalable", "auto"):
        row, col, used = assign_to_grid(pts, shape, method, leaf_cells=64, window=8)
        _assert_injection(row, col, shape, n)
        assert used in ("exact", "scalable")


def test_scalable_is_close_to_exact_and_refinement_helps():
    shape = (32, 32)
    pts = to_grid_units(_clustered(1024, seed=3), shape)
    exact = total_cost(pts, *np.divmod(assign_exact(pts, shape), 32))
    rough = total_cost(pts, *np.divmod(assign_scalable(pts, shape, 64, 8, passes=0), 32))
    refined = total_cost(pts, *np.divmod(assign_scalable(pts, shape, 64, 8, passes=2), 32))
    assert exact <= refined <= rough
    assert refined < rough  # the windows did something
    assert refined <= exact * 1.05


def test_scalable_result_does_not_depend_on_threads():
    shape = (40, 40)
    pts = to_grid_units(_clustered(1500, seed=4), shape)
    one = assign_scalable(pts, shape, 64, 8, passes=3, n_jobs=1)
    two = assign_scalable(pts, shape, 64, 8, passes=3, n_jobs=2)
    np.testing.assert_array_equal(one, two)


def test_holes_follow_the_empty_parts_of_the_map():
    # Points only in the left half of the box: the exact and the scalable solution both leave
    # the right-most columns empty rather than spreading holes everywhere.
    rng = np.random.default_rng(0)
    shape = (20, 20)
    pts = np.column_stack([rng.uniform(0.5, 9.5, 180), rng.uniform(0.5, 19.5, 180)])
    for method in ("exact", "scalable"):
        row, col, _ = assign_to_grid(pts, shape, method, leaf_cells=32, window=6)
        _assert_injection(row, col, shape, 180)
        assert col.max() < 12, method


def test_more_points_than_cells_is_an_error():
    with pytest.raises(ValueError, match="101 images do not fit into a 10x10 grid"):
        assign_to_grid(np.zeros((101, 2)), (10, 10), "exact")
    with pytest.raises(ValueError, match="'greedy'"):
        choose_method("greedy", 10)
    assert choose_method("auto", 100) == "exact"
    assert choose_method("auto", 100_000) == "scalable"
    # Few images in a huge grid: the dense matrix would be too large for "exact".
    assert choose_method("auto", 1000, 1000 * 1000) == "scalable"
    assert choose_method("auto", 1000, 40 * 40) == "exact"


def test_new_points_fill_free_cells_next_to_their_positions():
    shape = (6, 6)
    taken = np.array([r * 6 + c for r in range(6) for c in range(6) if not (r >= 4 and c >= 4)])
    # Three new points near the bottom-right corner, one near the top-left.
    pts = np.array([[5.4, 5.6], [4.6, 4.4], [5.5, 4.5], [0.5, 0.5]])
    row, col = assign_to_free_cells(pts[:3], shape, taken)
    assert sorted(zip(row.tolist(), col.tolist())) == [(4, 4), (4, 5), (5, 5)]
    assert (row[0], col[0]) == (5, 5) and (row[1], col[1]) == (4, 4)
    with pytest.raises(ValueError, match="5 new images do not fit into the 4 free cells"):
        assign_to_free_cells(np.vstack([pts, pts[:1]]), shape, taken)
    with pytest.raises(ValueError, match="max_entries=3"):
        assign_to_free_cells(pts, shape, taken, max_entries=3)


def test_reference_frame_scaling():
    old = np.array([[0.0, 0.0], [10.0, 20.0]])
    new = np.array([[5.0, 10.0], [20.0, 20.0]])
    np.testing.assert_allclose(to_grid_units(new, (3, 5), reference=old), [[2.5, 1.5], [8.5, 2.5]])


# ---- metrics ------------------------------------------------------------------------------

def test_ramp_laid_out_in_order_scores_near_one():
    t = np.arange(60, dtype=np.float64)[:, None]
    assert dpq(t, np.zeros(60, int), np.arange(60)) == pytest.approx(1.0, abs=1e-9)
    # A 2-D ramp on an 8x8 grid: the features are the cell coordinates.
    r, c = np.divmod(np.arange(64), 8)
    feats = np.column_stack([r, c]) * 0.7 + 0.01 * np.random.default_rng(0).normal(size=(64, 2))
    assert dpq(feats, r, c) > 0.97


def test_random_layout_scores_clearly_lower_than_sorted():
    rng = np.random.default_rng(0)
    shape = (16, 16)
    feats = _clustered(256, seed=5)  # 2-D features: laying them out by position is ideal
    pts = to_grid_units(feats, shape)
    row, col, _ = assign_to_grid(pts, shape, "exact")
    sorted_q = dpq(feats, row, col)
    perm = rng.permutation(256)
    random_q = dpq(feats, row[perm], col[perm])
    # Even a random layout keeps some gain at k = 1: the nearest of the four equally distant
    # grid neighbours is picked by feature distance (the metric's tie-break), so ~0.5 here.
    assert sorted_q > 0.9
    assert random_q < 0.6
    assert sorted_q - random_q > 0.35


def test_dpq_rejects_bad_input():
    with pytest.raises(ValueError, match="3 items"):
        dpq(np.zeros((2, 2)), [0, 1], [0, 0])
    with pytest.raises(ValueError, match="identical"):
        dpq(np.ones((5, 2)), np.arange(5), np.zeros(5))


def test_neighbour_label_agreement_on_a_toy_grid():
    # 2x3 grid: a a b / a b b -> horizontal pairs: (a,a) (a,b) (a,b) (b,b) = 2/4 same;
    # vertical: (a,a) (a,b) (b,b) = 2/3 same -> 4/7.
    row = np.array([0, 0, 0, 1, 1, 1])
    col = np.array([0, 1, 2, 0, 1, 2])
    labels = ["a", "a", "b", "a", "b", "b"]
    assert neighbour_label_agreement(row, col, labels) == pytest.approx(4 / 7)
    # A hole and an unlabelled item drop their pairs.
    # Left: (a,a) (a,b) horizontally, (a,b) vertically -> 1/3.
    assert neighbour_label_agreement(row[:5], col[:5], ["a", "a", "b", None, "b"]) == \
        pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="share a cell"):
        neighbour_label_agreement([0, 0], [1, 1], ["a", "b"])


def test_permute_rows_in_place_matches_fancy_indexing():
    from gridtsne.layout import permute_rows_in_place

    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 500):
        a = rng.normal(size=(n, 5)).astype(np.float32)
        order = rng.permutation(n)
        expected = a[order]
        out = permute_rows_in_place(a, order)
        assert out is a and np.array_equal(a, expected)
    with pytest.raises(ValueError, match="order has 2 entries for 3 rows"):
        permute_rows_in_place(np.zeros((3, 2)), [0, 1])
