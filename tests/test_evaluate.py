"""Quality figures of a written layout: only sampled vectors are read; labels never withhold."""
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest

from gridtsne import evaluate, storage
from gridtsne.layout import layout_table, read_vectors
from gridtsne.metrics import dpq, sample_for_metrics
from tests.test_layout_stage import write_vectors

N, DIM, SIDE = 6400, 256, 80


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A 6,400-image vectors table (6.5 MB of float32) and a layout of it."""
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    uris = [f"s3://photos/c{i % 5}/img{i:05d}.jpg" for i in range(N)]
    write_vectors(str(root / "vectors"), vectors, uris, files=16)
    cells = rng.permutation(N)
    row, col = cells // SIDE, cells % SIDE
    table = layout_table(pa.array(uris), pa.array(["0" * 64] * N),
                         row.astype(np.float32), col.astype(np.float32), row, col,
                         {"rows": SIDE, "cols": SIDE, "method": "test"})
    storage.write_parquet(str(root / "layout.parquet"), table)
    return root, vectors, uris, row, col


def _peak(fn):
    tracemalloc.start()
    try:
        value = fn()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_only_the_sampled_vectors_are_read(written):
    root, vectors, uris, row, col = written
    pick = sample_for_metrics(N, 200, 3)
    evaluate.evaluate_layout(str(root), str(root / "vectors"), max_items=200, seed=3)  # warm
    expected, metric_peak = _peak(lambda: dpq(vectors[pick], row[pick], col[pick], p=16))
    result, peak = _peak(lambda: evaluate.evaluate_layout(str(root), str(root / "vectors"),
                                                          max_items=200, seed=3))
    assert result["dpq_items"] == 200
    assert result["dpq"] == pytest.approx(expected)
    # The whole matrix is 6.5 MB; the sample 0.2 MB. Beyond what the metric itself needs, the
    # evaluation holds far less than the matrix.
    assert peak - metric_peak < vectors.nbytes / 4, \
        f"peak {peak:,} bytes ({metric_peak:,} for the metric) for a {vectors.nbytes:,} matrix"


def test_sampled_vectors_come_back_in_the_order_asked(written):
    root, vectors, uris, _, _ = written
    asked = [uris[5000], uris[3], uris[5000], uris[4321]]
    got = evaluate.read_sampled_vectors(str(root / "vectors"), asked, batch_size=500)
    np.testing.assert_array_equal(got, vectors[[5000, 3, 5000, 4321]])
    with pytest.raises(ValueError, match="no vector"):
        evaluate.read_sampled_vectors(str(root / "vectors"), ["s3://photos/missing.jpg"])
    uri, _, full, _ = read_vectors(str(root / "vectors"))
    assert uri.to_pylist() == uris and np.array_equal(full, vectors)


def test_labels_that_match_nothing_are_reported_not_fatal(written, tmp_path):
    root = written[0]
    other = tmp_path / "labels.csv"
    other.write_text("path,label\nsomewhere/else.jpg,cat\n")
    with pytest.raises(ValueError, match="no laid-out image matches"):
        evaluate.evaluate_layout(str(root), str(root / "vectors"), str(other), max_items=50)
    result = evaluate.evaluate_layout(str(root), str(root / "vectors"), str(other),
                                      max_items=50, labels_required=False)
    assert "no laid-out image matches" in result["label_problem"]
    assert "label_agreement" not in result and result["dpq_items"] == 50
    gone = evaluate.evaluate_layout(str(root), str(root / "vectors"), str(tmp_path / "no.csv"),
                                    max_items=50, labels_required=False)
    assert gone["label_problem"].startswith("FileNotFoundError")
