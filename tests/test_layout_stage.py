"""The layout stage end to end: compute_layout, run_layout on local and S3 URLs, the Beam
transform on the DirectRunner, ``gridtsne layout`` / ``gridtsne evaluate``, stable placement."""
import datetime
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from gridtsne import schema, storage
from gridtsne.layout import LayoutConfig, compute_layout, run_layout
from gridtsne.tsne import place_new_points, reduce_dimensions
from transforms.layout import LayOutVectors, LayoutJob

FAST = dict(n_iter=80, early_exaggeration_iter=40, n_jobs=2, verbose=False)


def _vectors(n=240, dim=24, k=4, seed=0):
    """Clustered unit vectors and their cluster labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    labels = rng.integers(0, k, n)
    v = centres[labels] + 0.35 * rng.normal(size=(n, dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32), labels


def _uris(n, base="s3://photos/set"):
    return [f"{base}/class{i % 4}/img{i:05d}.jpg" for i in range(n)]


def write_vectors(url, vectors, uris, files=2):
    """A vectors/ table in the embedding stage's schema, split over ``files`` Parquet files."""
    n, dim = vectors.shape
    sch = schema.vectors_schema(dim, {"model": "toy"})
    bounds = np.linspace(0, n, files + 1).astype(int)
    for i in range(files):
        s, e = bounds[i], bounds[i + 1]
        table = pa.Table.from_arrays([
            pa.array(uris[s:e]),
            pa.array([f"{j:064x}" for j in range(s, e)]),
            pa.array(np.full(e - s, 1000, np.int64)),
            pa.array([datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)] * (e - s),
                     pa.timestamp("us", tz="UTC")),
            pa.array(np.full(e - s, 32, np.int32)), pa.array(np.full(e - s, 32, np.int32)),
            pa.array([b"jpeg"] * (e - s)),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors[s:e].ravel()), dim),
        ], schema=sch)
        storage.write_parquet(storage.url_join(url, f"part-{i:05d}-of-{files:05d}.parquet"), table)


def _check_injection(row, col, rows, cols, n):
    assert len(row) == n
    assert row.min() >= 0 and row.max() < rows and col.min() >= 0 and col.max() < cols
    assert len(set(zip(row.tolist(), col.tolist()))) == n


def test_fixed_seed_gives_identical_layouts():
    v, _ = _vectors()
    cfg = LayoutConfig(**FAST, seed=3)
    a = compute_layout(v, cfg)
    b = compute_layout(v, cfg)
    for x, y in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(x, y)
    assert a[4]["method"] == "exact" and (a[4]["rows"], a[4]["cols"]) == (15, 16)
    _check_injection(a[2], a[3], 15, 16, 240)
    c = compute_layout(v, LayoutConfig(**FAST, seed=4))
    assert not np.array_equal(a[0], c[0])
    # FFT gradients (the default from 10,000 images on) are deterministic too.
    fft = LayoutConfig(**{**FAST, "n_iter": 20, "early_exaggeration_iter": 20}, gradient="fft")
    d, e = compute_layout(v[:100], fft), compute_layout(v[:100], fft)
    assert d[4]["tsne"]["gradient"] == "fft" and a[4]["tsne"]["gradient"] == "bh"
    np.testing.assert_array_equal(d[0], e[0])
    np.testing.assert_array_equal(d[2] * 100 + d[3], e[2] * 100 + e[3])


def test_layout_keeps_clusters_together():
    v, labels = _vectors()
    x, y, row, col, _ = compute_layout(v, LayoutConfig(**FAST, assign="scalable"))
    from gridtsne.metrics import dpq, neighbour_label_agreement
    assert neighbour_label_agreement(row, col, labels) > 0.85
    perm = np.random.default_rng(0).permutation(len(v))
    assert dpq(v, row, col) > dpq(v, row[perm], col[perm]) + 0.15


def test_holes_and_fixed_grid():
    v, _ = _vectors(200)
    for assign in ("exact", "scalable"):
        x, y, row, col, info = compute_layout(v, LayoutConfig(**FAST, grid="16x20", assign=assign,
                                                              leaf_cells=32, window=6))
        _check_injection(row, col, 16, 20, 200)
        assert info["method"] == assign


def test_more_images_than_cells_needs_sample():
    v, _ = _vectors(120)
    with pytest.raises(ValueError, match=r"120 images do not fit into the '10x10' grid.*--sample"):
        compute_layout(v, LayoutConfig(**FAST, grid="10x10"))
    x, y, row, col, info = compute_layout(v, LayoutConfig(**FAST, grid="10x10", sample=True))
    _check_injection(row, col, 10, 10, 100)
    assert len(info["index"]) == 100 and len(set(info["index"].tolist())) == 100
    x, y, row, col, info = compute_layout(v, LayoutConfig(**FAST, sample_size=50))
    assert len(row) == 50 and (info["rows"], info["cols"]) == (7, 8)


def test_fit_sample_then_transform_places_everyone():
    v, labels = _vectors(300)
    x, y, row, col, info = compute_layout(v, LayoutConfig(**FAST, fit_sample=150))
    assert info["tsne"]["fit_sample"] == 150 and "transform_s" in info["tsne"]
    assert np.isfinite(x).all() and np.isfinite(y).all()
    _check_injection(row, col, info["rows"], info["cols"], 300)
    from gridtsne.metrics import neighbour_label_agreement
    assert neighbour_label_agreement(row, col, labels) > 0.8


@pytest.mark.parametrize("bad", [dict(grid="12"), dict(assign="greedy"), dict(perplexity=-1),
                                 dict(seed=-2), dict(n_jobs=0), dict(pca_dims=1),
                                 dict(fit_sample="half"), dict(sample_size=2), dict(window=1),
                                 dict(gradient="exact")])
def test_config_rejects_bad_values_quoting_them(bad):
    (name, value), = bad.items()
    with pytest.raises(ValueError, match=repr(value).replace("'", "").strip("-") or "."):
        LayoutConfig(**bad)


def test_pca_reduction_is_deterministic_and_keeps_the_main_directions():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(500, 3)) @ rng.normal(size=(3, 40)) + 0.01 * rng.normal(size=(500, 40)))
    a, b = reduce_dimensions(x, 5), reduce_dimensions(x.copy(), 5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (500, 5) and a.dtype == np.float32
    # Three true directions: the first three components carry nearly all the variance.
    assert a[:, :3].var(0).sum() / x.var(0).sum() > 0.99


def test_place_new_points_lands_next_to_their_twins():
    v, labels = _vectors(300)
    x, y, _, _, _ = compute_layout(v, LayoutConfig(**FAST))
    old_xy = np.column_stack([x, y])
    rng = np.random.default_rng(1)
    pick = rng.choice(300, 20, replace=False)
    new = v[pick] + 0.01 * rng.normal(size=(20, v.shape[1])).astype(np.float32)
    placed = place_new_points(v, old_xy, new, seed=0, n_jobs=2, n_iter=50)
    assert placed.shape == (20, 2)
    spread = np.linalg.norm(old_xy.max(0) - old_xy.min(0))
    dist = np.linalg.norm(placed - old_xy[pick], axis=1)
    assert np.median(dist) < 0.1 * spread
    # Every new point is nearest to an old point of its own cluster.
    nearest = np.linalg.norm(placed[:, None] - old_xy[None], axis=2).argmin(1)
    assert (labels[nearest] == labels[pick]).mean() >= 0.9
    with pytest.raises(ValueError, match=r"\(300, 24\) and \(5, 3\)"):
        place_new_points(v, old_xy, np.zeros((5, 3)))


def _check_output(out_url, n, uris):
    table = storage.read_parquet(storage.url_join(out_url, "layout.parquet"))
    assert table.schema.equals(schema.layout_schema().remove_metadata(), check_metadata=False)
    assert [f.type for f in table.schema] == [pa.string(), pa.string(), pa.float32(),
                                              pa.float32(), pa.int32(), pa.int32()]
    meta = schema.read_metadata(table.schema)
    assert meta["parameters"]["seed"] == 0 and meta["method"] in ("exact", "scalable")
    assert {"read_s", "tsne_s", "assign_s"} <= set(meta["timings"])
    assert meta["gridtsne_version"] and meta["vectors_metadata"]["model"] == "toy"
    assert sorted(table.column("uri").to_pylist()) == sorted(uris)
    assert table.column("sha256").null_count == 0
    _check_injection(table.column("row").to_numpy(), table.column("col").to_numpy(),
                     meta["rows"], meta["cols"], n)
    summary = json.loads(storage.read_bytes(storage.url_join(out_url, "layout.json")))
    assert summary["images"] == n and summary["rows"] == meta["rows"]
    assert summary["timings"]["total_s"] > 0
    return table, summary


def test_run_layout_local(tmp_path):
    v, _ = _vectors(150)
    uris = _uris(150)
    write_vectors(str(tmp_path / "vectors"), v, uris)
    summary = run_layout(str(tmp_path / "vectors"), str(tmp_path / "out"), LayoutConfig(**FAST))
    table, written = _check_output(str(tmp_path / "out"), 150, uris)
    assert written == summary
    # Rows come back sorted by uri (parallel writers give no fixed order), each with its sha256.
    assert table.column("uri").to_pylist() == sorted(uris)
    sha_of = dict(zip(table.column("uri").to_pylist(), table.column("sha256").to_pylist()))
    assert sha_of[uris[7]] == f"{7:064x}"


def test_row_order_of_the_vectors_table_does_not_change_the_layout(tmp_path):
    v, _ = _vectors(150)
    uris = _uris(150)
    write_vectors(str(tmp_path / "a"), v, uris)
    perm = np.random.default_rng(1).permutation(150)
    write_vectors(str(tmp_path / "b"), v[perm], [uris[i] for i in perm], files=3)
    run_layout(str(tmp_path / "a"), str(tmp_path / "out_a"), LayoutConfig(**FAST))
    run_layout(str(tmp_path / "b"), str(tmp_path / "out_b"), LayoutConfig(**FAST))
    cols = ["uri", "x", "y", "row", "col"]
    a = storage.read_parquet(str(tmp_path / "out_a" / "layout.parquet"), columns=cols)
    b = storage.read_parquet(str(tmp_path / "out_b" / "layout.parquet"), columns=cols)
    assert a.equals(b)


def test_run_layout_reads_and_writes_s3(s3_bucket):
    v, _ = _vectors(120)
    uris = _uris(120)
    write_vectors(f"s3://{s3_bucket}/run1/vectors", v, uris, files=3)
    run_layout(f"s3://{s3_bucket}/run1/vectors", f"s3://{s3_bucket}/run1", LayoutConfig(**FAST))
    _check_output(f"s3://{s3_bucket}/run1", 120, uris)
    import boto3
    head = boto3.client("s3").head_object(Bucket=s3_bucket, Key="run1/layout.json")
    assert head["ContentType"] == "application/json"


def test_plain_list_vectors_from_other_writers(tmp_path):
    v, _ = _vectors(60, dim=8)
    pq.write_table(pa.table({"uri": [f"u{i}" for i in range(60)],
                             "vector": [list(map(float, row)) for row in v]}),
                   tmp_path / "v.parquet")
    summary = run_layout(str(tmp_path / "v.parquet"), str(tmp_path / "out"), LayoutConfig(**FAST))
    assert summary["images"] == 60 and summary["vector_dim"] == 8
    table = pq.read_table(tmp_path / "out" / "layout.parquet")
    assert table.column("sha256").null_count == 60  # no sha256 column: nulls, not a crash
    pq.write_table(pa.table({"uri": ["a", "b"], "vector": [[1.0, 2.0], [1.0]]}),
                   tmp_path / "ragged.parquet")
    with pytest.raises(ValueError, match="varying width"):
        run_layout(str(tmp_path / "ragged.parquet"), str(tmp_path / "out2"), LayoutConfig(**FAST))


def test_bad_vectors_tables_are_clear_errors(tmp_path):
    pq.write_table(pa.table({"uri": ["a"], "vec": [[1.0]]}), tmp_path / "x.parquet")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['vector'\]"):
        run_layout(str(tmp_path / "x.parquet"), str(tmp_path / "out"), LayoutConfig(**FAST))
    pq.write_table(pa.table({"uri": ["a", "b"], "vector": [[1.0, 2.0], None]}),
                   tmp_path / "y.parquet")
    with pytest.raises(ValueError, match="1 null vectors"):
        run_layout(str(tmp_path / "y.parquet"), str(tmp_path / "out"), LayoutConfig(**FAST))
    with pytest.raises(FileNotFoundError, match="no Parquet files"):
        run_layout(str(tmp_path / "nothing"), str(tmp_path / "out"), LayoutConfig(**FAST))
    assert not (tmp_path / "out").exists()


def test_beam_transform_runs_once_after_upstream(tmp_path):
    v, _ = _vectors(100)
    uris = _uris(100)
    write_vectors(str(tmp_path / "vectors"), v, uris)
    job = LayoutJob(str(tmp_path / "vectors"), str(tmp_path / "out"), LayoutConfig(**FAST))
    with TestPipeline() as p:
        upstream = p | "Upstream" >> beam.Create(["part-0.parquet", "part-1.parquet"])
        summaries = upstream | LayOutVectors(job)
        assert_that(summaries | beam.Map(lambda s: (s["images"], s["rows"], s["cols"])),
                    equal_to([(100, 10, 10)]))
    _check_output(str(tmp_path / "out"), 100, uris)
    with TestPipeline() as p:
        alone = p | "Alone" >> LayOutVectors(job)
        assert_that(alone | beam.Map(lambda s: s["images"]), equal_to([100]))
    with pytest.raises(ValueError, match="vectors_url"):
        LayoutJob("", "out")


def test_cli_layout_then_evaluate(tmp_path, capsys):
    from gridtsne.cli import main
    v, labels = _vectors(160)
    uris = _uris(160, base=str(tmp_path / "photos"))
    write_vectors(str(tmp_path / "vectors"), v, uris)
    assert main(["layout", "--vectors", str(tmp_path / "vectors"), "--output",
                 str(tmp_path / "out"), "--grid", "12x14", "--assign", "scalable",
                 "--n_iter", "80", "--early_exaggeration_iter", "40", "--tsne_threads", "2",
                 "--runner", "DirectRunner"]) == 0
    assert "160 images on a 12x14 grid (8 empty cells, scalable" in capsys.readouterr().out
    _check_output(str(tmp_path / "out"), 160, uris)
    # Labels by path relative to the photo folder: matched as a suffix of the uri.
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\n" + "".join(
        f"{u.split('/photos/')[1]},{lab}\n" for u, lab in zip(uris, labels)))
    assert main(["evaluate", "--layout", str(tmp_path / "out"), "--vectors",
                 str(tmp_path / "vectors"), "--labels", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "DPQ16: 0." in out and "(160 labelled images)" in out
    from pipelines.evaluate import run as evaluate
    good = evaluate(["--layout", str(tmp_path / "out" / "layout.parquet"), "--vectors",
                     str(tmp_path / "vectors"), "--labels", str(csv_path)])
    assert good["label_agreement"] > 0.85 and good["dpq"] > 0.5
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("uri,label\n" + "".join(
        f"{u},{lab}\n" for u, lab in zip(uris, np.random.default_rng(0).permutation(labels))))
    bad = evaluate(["--layout", str(tmp_path / "out"), "--vectors", str(tmp_path / "vectors"),
                    "--labels", str(shuffled), "--max_items", "50"])
    assert bad["label_agreement"] < 0.5 and bad["dpq_items"] == 50


def test_cli_layout_validates_flags_before_running(tmp_path):
    from pipelines.layout import run
    with pytest.raises(ValueError, match="--vectors is required"):
        run(["--output", str(tmp_path)])
    with pytest.raises(ValueError, match="'7'"):
        run(["--vectors", str(tmp_path), "--output", str(tmp_path), "--grid", "7"])


def test_every_layout_flag_reaches_the_config():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.layout import layout_config_from_options
    cfg = layout_config_from_options(PipelineOptions([
        "--grid", "8x9", "--assign", "exact", "--perplexity", "12", "--seed", "5", "--sample",
        "--sample_size", "70", "--pca_dims", "none", "--fit_sample", "300",
        "--tsne_gradient", "fft", "--n_iter", "10", "--early_exaggeration_iter", "11",
        "--tsne_threads", "1", "--tsne_metric", "cosine", "--refine", "none",
        "--refine_passes", "7", "--refine_distance", "euclidean", "--assign_window", "9",
        "--runner", "DirectRunner"]))
    assert cfg == LayoutConfig(grid="8x9", assign="exact", perplexity=12.0, seed=5, sample=True,
                               sample_size=70, pca_dims=0, fit_sample=300, gradient="fft",
                               n_iter=10, early_exaggeration_iter=11, n_jobs=1, metric="cosine",
                               refine="none", refine_passes=7, refine_distance="euclidean",
                               window=9)
    assert layout_config_from_options(PipelineOptions([])) == LayoutConfig()
