"""The whole job (``gridtsne run``) end to end on the real DirectRunner and PortableRunner.

Images are real (scikit-learn's scanned digits, upscaled); the model is the tiny real CNN of
``tests/tiny_model.py`` so that each run takes seconds, not minutes.
"""
import hashlib
import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gridtsne import storage, versions
from pipelines import run as job

FAST = ["--model", "tests.tiny_model:TINY", "--batch_size", "16", "--n_iter", "60",
        "--early_exaggeration_iter", "30", "--perplexity", "5", "--cell", "32", "--tile", "128"]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def write_digit(folder, i, digits, invert=False):
    images, target = digits
    pixels = (images[i] * 15.9).astype(np.uint8)
    if invert:
        pixels = 255 - pixels
    path = os.path.join(folder, f"{target[i]}", f"digit_{i:04d}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels, "L").resize((40, 40), Image.Resampling.BICUBIC).save(path)
    return path


def make_collection(folder, indices, digits):
    os.makedirs(folder, exist_ok=True)
    paths = [write_digit(folder, i, digits) for i in indices]
    with open(os.path.join(folder, "labels.csv"), "w") as fh:
        fh.write("path,label\n")
        for i in range(len(digits[1])):
            fh.write(f"{digits[1][i]}/digit_{i:04d}.png,{digits[1][i]}\n")
    return paths


def run_job(inp, out, *extra):
    return job.run(["--input", str(inp), "--output", str(out),
                    "--labels", os.path.join(str(inp), "labels.csv"), *FAST, *extra])


def version_table(out, name, columns=None):
    return storage.read_parquet(storage.url_join(versions.current_version_url(str(out)), name),
                                columns=columns)


def test_end_to_end_local_with_bad_files(tmp_path, digits):
    inp, out = tmp_path / "photos", tmp_path / "map"
    make_collection(str(inp), range(40), digits)
    (inp / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (inp / "empty.png").write_bytes(b"")
    (inp / "notes.txt").write_text("not an image, skipped by content")
    summary = run_job(inp, out)

    assert summary["counts"] == {"new": 40, "changed": 0, "unchanged": 0, "removed": 0,
                                 "failed": 2}
    assert summary["embedded"] == 40
    vectors = version_table(out, "vectors", ["uri", "vector"])
    errors = version_table(out, "errors")
    # Every image is in the output or in errors/, with its reason.
    assert vectors.num_rows + errors.num_rows == 42
    assert sorted(os.path.basename(u) for u in errors.column("uri").to_pylist()) == \
        ["broken.jpg", "empty.png"]
    assert all(errors.column("message").to_pylist())
    layout = version_table(out, "layout.parquet")
    assert sorted(layout.column("uri").to_pylist()) == sorted(vectors.column("uri").to_pylist())
    cells = set(zip(layout.column("row").to_pylist(), layout.column("col").to_pylist()))
    assert len(cells) == 40
    site = tmp_path / "map" / summary["site"]
    assert site.is_file() and (site.parent / "mosaic.dzi").is_file()
    assert summary["quality"]["dpq"] > 0.5 and summary["quality"]["labelled"] == 40
    assert 0 <= summary["quality"]["label_agreement"] <= 1
    # The root page and the pointer name the same version.
    pointer = json.loads((out / "latest.json").read_text())
    assert pointer["version"] == summary["version"]
    assert summary["site"] in (out / "index.html").read_text()
    # The summary's timings: every named phase of the job, on one timeline with its gaps.
    t = summary["timings"]
    assert {"launch", "listing", "embedding", "writing vectors", "reading vectors",
            "neighbours/affinities", "t-SNE", "assignment", "refinement", "writing layout",
            "evaluation", "render", "publish"} <= set(t["phases"]), t["phases"]
    starts = [t["phases"][k]["start_s"] for k in ("launch", "listing", "embedding",
                                                 "reading vectors", "t-SNE", "render", "publish")]
    assert starts == sorted(starts) and starts[0] == 0
    assert 0 <= t["outside_phases_s"] <= t["wall_s"]
    assert t["wall_s"] >= sum(t["phases"][k]["seconds"] for k in ("embedding", "t-SNE", "render"))
    # The evaluation ran beside the render (in this process): it began before the render ended.
    ev, render = t["phases"]["evaluation"], t["phases"]["render"]
    assert ev["start_s"] < render["start_s"] + render["seconds"]


def test_reindex_embeds_only_what_changed(tmp_path, digits):
    inp, out = tmp_path / "photos", tmp_path / "map"
    paths = make_collection(str(inp), range(40), digits)
    first = run_job(inp, out)
    before = version_table(out, "vectors").to_pylist()
    before = {r["uri"]: r for r in before}

    added = [write_digit(str(inp), i, digits) for i in range(100, 110)]
    changed = paths[:2]
    for i, p in enumerate(changed):
        write_digit(str(inp), i, digits, invert=True)  # new content, new size/mtime
    removed = paths[-3:]
    for p in removed:
        os.remove(p)
    second = run_job(inp, out)

    assert second["counts"] == {"new": 10, "changed": 2, "unchanged": 35, "removed": 3,
                                "failed": 0}
    assert second["embedded"] == 12
    assert second["version"] != first["version"]
    after = {r["uri"]: r for r in version_table(out, "vectors").to_pylist()}
    assert set(after) == (set(before) - set(removed)) | set(added)
    for uri in set(paths) - set(changed) - set(removed):
        # Carried over unread: the very same row.
        assert after[uri] == before[uri]
    for uri in changed:
        assert after[uri]["sha256"] != before[uri]["sha256"]
    # The previous version is still complete and readable.
    prev = versions.version_url(str(out), first["version"])
    assert pq.read_table(os.path.join(prev, "layout.parquet")).num_rows == 40


def test_rerun_without_change_is_idempotent_and_full_rebuilds(tmp_path, digits):
    inp, out = tmp_path / "photos", tmp_path / "map"
    make_collection(str(inp), range(30), digits)
    run_job(inp, out)
    first = version_table(out, "layout.parquet", ["uri", "x", "y", "row", "col"])
    again = run_job(inp, out)
    assert again["embedded"] == 0 and again["counts"]["unchanged"] == 30
    assert version_table(out, "layout.parquet", ["uri", "x", "y", "row", "col"]).equals(first)
    full = run_job(inp, out, "--full")
    assert full["embedded"] == 30 and full["counts"]["new"] == 30


def test_stable_keeps_previous_positions(tmp_path, digits):
    inp, out = tmp_path / "photos", tmp_path / "map"
    make_collection(str(inp), range(60), digits)
    run_job(inp, out)
    old = version_table(out, "layout.parquet").to_pylist()
    old_xy = {r["uri"]: (r["x"], r["y"]) for r in old}
    added = [write_digit(str(inp), i, digits) for i in range(200, 206)]  # 10% new
    summary = run_job(inp, out, "--stable")
    assert summary["positions"]["mode"] == "stable"
    assert summary["positions"]["kept"] == 60 and summary["positions"]["placed"] == 6
    new = {r["uri"]: (r["x"], r["y"]) for r in version_table(out, "layout.parquet").to_pylist()}
    for uri, xy in old_xy.items():
        assert new[uri] == xy
    assert set(added) <= set(new)
    # Beyond the refit fraction, t-SNE is fitted again.
    for i in range(300, 330):
        write_digit(str(inp), i, digits)
    refit = run_job(inp, out, "--stable")
    assert refit["positions"]["mode"] == "refit"


def _tree_digest(folder):
    digest = {}
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                digest[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return digest


def test_labels_matching_nothing_are_reported_not_a_withheld_version(tmp_path, digits, capsys):
    inp, out = tmp_path / "photos", tmp_path / "map"
    make_collection(str(inp), range(24), digits)
    wrong = tmp_path / "other-labels.csv"
    wrong.write_text("path,label\nsomewhere/else.png,cat\n")
    summary = job.run(["--input", str(inp), "--output", str(out), "--labels", str(wrong),
                       *FAST])
    assert versions.read_pointer(str(out))["version"] == summary["version"]
    assert summary["images"] == 24 and summary["quality"]["dpq"] > 0
    assert "no laid-out image matches" in summary["quality"]["label_problem"]
    assert "labels not scored: ValueError: no laid-out image matches" in capsys.readouterr().out


def test_commit_waits_for_and_checks_errors(tmp_path):
    """CommitVersion takes the written errors/ files as a side input and checks its rows."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    out = tmp_path / "map"
    options = PipelineOptions(["--input", str(tmp_path), "--output", str(out), *FAST])
    run_job_config = job.job_from_options(options)
    p = beam.Pipeline(options=options)
    job.build_pipeline(p, run_job_config)
    producers = {}

    class Visit(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            for pc in node.outputs.values():
                producers[pc] = node.full_label

    p.visit(Visit())
    commit = p._current_transform().parts[-1]  # the last top-level transform
    assert commit.full_label == "CommitVersion"
    side = {producers[s.pvalue] for s in commit.side_inputs}
    assert any(label.startswith("WriteErrors") for label in side), side

    # Fewer rows in vectors/ than new + changed + unchanged images: not published.
    complete = {"input_images": 4, "images": 4, "rows": 2, "cols": 2, "method": "exact"}
    five = {"new": 3, "changed": 0, "unchanged": 2, "removed": 1}
    with pytest.raises(RuntimeError, match="4 rows in vectors/, but new \\+ changed"):
        job.commit_version(None, run_job_config, {}, complete, {}, five, 0, [])
    assert versions.read_pointer(str(out)) is None
    # Fewer rows in errors/ than failures counted: not published.
    fates = {"new": 0, "changed": 0, "unchanged": 0, "removed": 0}
    with pytest.raises(RuntimeError, match="errors/"):
        job.commit_version(None, run_job_config, {}, {"input_images": 0}, {}, fates, 2, [])
    assert versions.read_pointer(str(out)) is None


def test_a_failing_model_fails_the_job_and_publishes_nothing(tmp_path, digits):
    """The machine's problem (here a forward pass that raises) never becomes error rows that
    let the commit's check pass: the job fails and the published version stays."""
    inp, out = tmp_path / "photos", tmp_path / "map"
    make_collection(str(inp), range(24), digits)
    first = run_job(inp, out)
    pointer = (out / "latest.json").read_bytes()
    write_digit(str(inp), 100, digits)
    with pytest.raises(Exception, match="simulated inference failure"):
        run_job(inp, out, "--model", "tests.tiny_model:FAILING")
    assert (out / "latest.json").read_bytes() == pointer
    assert versions.committed_versions(str(out)) == [first["version"]]


def test_end_to_end_on_s3_with_storage_flags_only(s3_bucket, s3_server, digits, tmp_path,
                                                   monkeypatch):
    """The whole job on S3 with the endpoint and keys given only as flags.

    The ``s3_server`` fixture sets AWS_* variables and fsspec's process-wide S3 endpoint for
    the other tests; they are removed here, because Dataflow and Flink workers get neither:
    every stage (listing, embedding, re-index, layout, render, labels, commit) must use the
    storage options its job config carries.
    """
    import boto3
    import fsspec.config
    import s3fs

    local = tmp_path / "photos"
    paths = make_collection(str(local), range(24), digits)
    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    for p in paths + [str(local / "labels.csv")]:
        s3.upload_file(p, s3_bucket, "photos/" + os.path.relpath(p, local))

    for name in [k for k in os.environ if k.startswith(("AWS_", "FSSPEC_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws either
    monkeypatch.setitem(fsspec.config.conf, "s3", {})
    s3fs.S3FileSystem.clear_instance_cache()
    flags = ["--s3_endpoint_url", s3_server, "--s3_access_key_id", "testing",
             "--s3_secret_access_key", "testing", "--s3_region_name", "us-east-1"]
    with pytest.raises(Exception):  # without the flags nothing reaches the server
        storage.read_bytes(f"s3://{s3_bucket}/photos/labels.csv")

    out = f"s3://{s3_bucket}/maps/family"
    summary = job.run(["--input", f"s3://{s3_bucket}/photos/**", "--output", out,
                       "--labels", f"s3://{s3_bucket}/photos/labels.csv", *flags, *FAST])
    assert summary["counts"]["new"] == 24 and summary["counts"]["failed"] == 0
    assert summary["quality"]["labelled"] == 24
    opts = {"s3": {"endpoint_url": s3_server, "key": "testing", "secret": "testing",
                   "client_kwargs": {"region_name": "us-east-1"}}}
    current = versions.current_version_url(out, opts)
    assert storage.read_parquet(storage.url_join(current, "vectors"),
                                storage_options=opts).num_rows == 24
    head = s3.head_object(Bucket=s3_bucket, Key=f"maps/family/{summary['site']}")
    assert head["ContentType"] == "text/html"
    # The progress document sits in the bucket too, with the summary's final counts.
    key = f"maps/family/versions/{summary['version']}/progress.json"
    doc = json.loads(s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    assert doc["phase"] == "done" and doc["counts"]["new"] == 24
    again = job.run(["--input", f"s3://{s3_bucket}/photos/**", "--output", out, "--stable",
                     *flags, *FAST])
    assert again["embedded"] == 0 and again["counts"]["unchanged"] == 24
    assert again["positions"]["mode"] == "stable"


def test_portable_runner_runs_the_whole_job(tmp_path, digits, capsys):
    inp, out = tmp_path / "photos", tmp_path / "map"
    make_collection(str(inp), range(24), digits)
    summary = run_job(inp, out, "--flags_file", os.path.join(
        os.path.dirname(os.path.dirname(__file__)), "configs", "portable.flags"))
    assert summary["counts"]["new"] == 24
    assert version_table(out, "layout.parquet").num_rows == 24
    # The LOOPBACK workers report progress to the launcher while the job runs.
    err = capsys.readouterr().err
    assert "embedding: 25/25 images (100%)" in err, err  # 24 digits and labels.csv
    assert "layout: t-SNE iteration 90/90" in err, err
    doc = json.loads(storage.read_bytes(versions.progress_url(str(out), summary["version"])))
    assert doc["phase"] == "done" and doc["counts"]["embedded"] == summary["embedded"] == 24


def test_dataflow_dry_run_builds_the_graph(monkeypatch, capsys):
    """The Dataflow GPU configuration builds and validates without credentials."""
    root = os.path.dirname(os.path.dirname(__file__))
    monkeypatch.chdir(root)  # --setup_file ./setup.py
    monkeypatch.setenv("GCP_PROJECT", "demo-project")
    monkeypatch.setenv("GCS_TEMP", "gs://demo-bucket/tmp")
    monkeypatch.setenv("WORKER_IMAGE", "us-docker.pkg.dev/demo-project/gridtsne/worker:0.1.0")
    result = job.run(["--flags_file", "configs/dataflow-gpu.flags", "--dry_run=True",
                      "--no_auth", "--input", "gs://demo-bucket/photos/**",
                      "--output", "gs://demo-bucket/maps/family",
                      "--labels", "gs://demo-bucket/labels.csv",
                      "--model", "tests.tiny_model:TINY"])
    assert result is None
    assert "dry run: the job graph" in capsys.readouterr().out


def test_a_dry_run_on_the_direct_runner_runs_and_writes_nothing(tmp_path, capsys):
    """Beam's in-process runner ignores --dry_run: left to it, the "dry run" embedded,
    rendered and published the map."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"not read in a dry run")
    out = tmp_path / "map"
    result = job.run(["--dry_run=True", "--input", str(photos), "--output", str(out),
                      "--model", "tests.tiny_model:TINY"])
    assert result is None
    assert "dry run: the job graph" in capsys.readouterr().out
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))


def test_demo_argv_uses_the_offline_photos(tmp_path):
    from pipelines import demo

    argv = demo.demo_argv([], folder=str(tmp_path))
    photos = argv[argv.index("--input") + 1]
    labels = argv[argv.index("--labels") + 1]
    assert argv[argv.index("--output") + 1] == str(tmp_path / "map")
    assert len([f for _, _, fs in os.walk(photos) for f in fs if f.endswith(".png")]) >= 1797
    assert open(labels).readline().strip() == "path,label"
    with pytest.raises(ValueError, match="--input"):
        demo.demo_argv(["--input", "x"], folder=str(tmp_path))


def test_run_without_input_is_an_error_not_the_demo(tmp_path, monkeypatch):
    """A forgotten --input must never publish the demo into the user's map."""
    from gridtsne import cli

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "family"
    with pytest.raises(ValueError, match="--input"):
        job.run(["--output", str(out), *FAST])
    assert cli.main(["run", "--output", str(out)]) == 1
    with pytest.raises(ValueError, match="--input"):
        cli.main(["run", "--output", str(out), "--verbose"])
    with pytest.raises(ValueError, match="--output"):
        job.run(["--input", str(tmp_path), *FAST])
    assert not out.exists() and not (tmp_path / "demo-output").exists()


def test_demo_is_an_explicit_command(monkeypatch):
    """``python3 dev.py demo`` runs ``gridtsne demo``, which runs pipelines.demo."""
    import importlib.util

    from gridtsne import cli

    root = os.path.dirname(os.path.dirname(__file__))
    spec = importlib.util.spec_from_file_location("dev", os.path.join(root, "dev.py"))
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    calls = []
    monkeypatch.setattr(dev, "venv", lambda: None)
    monkeypatch.setattr(dev, "_sh", lambda *cmd, **kw: calls.append([str(c) for c in cmd]))
    dev.demo(["--output", "x"])
    assert calls == [[str(dev.PY), "-m", "gridtsne.cli", "demo", "--output", "x"]]
    seen = []
    from pipelines import demo

    monkeypatch.setattr(demo, "run", lambda argv: seen.append(argv) or 0)
    assert cli.main(["demo", "--output", "x"]) == 0 and seen == [["--output", "x"]]


def test_bad_flags_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="keep_versions"):
        job.run(["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--keep_versions",
                 "0", *FAST])
    with pytest.raises(ValueError, match="refit_fraction"):
        job.run(["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--refit_fraction",
                 "2", *FAST])
    assert not os.path.exists(tmp_path / "o")
    shutil.rmtree(tmp_path, ignore_errors=True)
