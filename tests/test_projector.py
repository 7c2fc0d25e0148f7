"""The TensorBoard Projector export, checked with the real ``tensorboard`` server."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gridtsne import cli, projector
from tests.conftest import require_or_skip
from tests.render_tables import real_photos, thumbnail_jpeg, write_tables


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """60 rows: the real photos repeated under distinct URIs, with a few labels."""
    base = tmp_path_factory.mktemp("projector")
    photos = real_photos()
    names = sorted(photos)
    rng = np.random.default_rng(3)
    records = []
    for i in range(60):
        name = names[i % len(names)]
        records.append({"uri": f"/photos/{i:03d}_{name}.jpg",
                        "thumbnail": thumbnail_jpeg(photos[name]) if i != 7 else None,
                        "vector": rng.normal(size=8).astype(np.float32)})
    cells = [(r["uri"], i // 8, i % 8) for i, r in enumerate(records)]
    vectors, _ = write_tables(str(base / "in"), records, cells, 8, 8)
    labels = base / "labels.csv"
    labels.write_text("uri,label\n" + "".join(f"{r['uri']},{r['uri'].split('_', 1)[1][:-4]}\n"
                                              for r in records[::2]))
    return vectors, str(labels), records


def test_metadata_header_only_with_two_columns():
    assert projector.metadata_tsv(["a", "b\tc"]) == b"a\nb c\n"
    assert projector.metadata_tsv(["a", "b"], {"a": "cat"}) == b"uri\tlabel\na\tcat\nb\t\n"


def test_sprite_limit_and_sampling():
    assert projector.max_points_for(64) == 16_384
    rows = projector.choose_rows(100_000, 16_384, seed=1)
    assert len(rows) == 16_384 and len(set(rows)) == 16_384 and np.all(np.diff(rows) > 0)
    assert np.array_equal(projector.choose_rows(10, 16_384), np.arange(10))
    with pytest.raises(ValueError, match="max_points must be in 1..16384"):
        projector.export_projector("unused", "unused", max_points=20_000)


def test_tensor_that_reads_as_text_is_written_as_tsv():
    name, data = projector.tensor_file(np.zeros((2, 3), np.float32))  # bytes all 0x00
    assert name == "tensor.tsv" and data == b"0.0\t0.0\t0.0\n0.0\t0.0\t0.0\n"
    name, data = projector.tensor_file(np.full((1, 2), -1.5, np.float32))
    assert name == "tensor.bytes" and np.frombuffer(data, "<f4").tolist() == [-1.5, -1.5]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.headers.get("Content-Type"), resp.read()


def test_tensorboard_serves_the_export(tmp_path, table, capsys):
    tensorboard = Path(sys.executable).parent / "tensorboard"
    if not tensorboard.exists():
        require_or_skip("the tensorboard package is not installed in the venv")
    vectors, labels, records = table
    out = tmp_path / "projector"
    assert cli.main(["export-projector", "--vectors", vectors, "--output", str(out),
                     "--labels", labels, "--max_points", "40", "--seed", "5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["points"] == 40 and summary["total"] == 60 and summary["sampled"]
    assert summary["missing_thumbnails"] in (0, 1)
    assert "sampled uniformly at random (seed 5)" in (out / "projector_config.pbtxt").read_text()

    port = _free_port()
    proc = subprocess.Popen([str(tensorboard), "--logdir", str(out), "--host", "127.0.0.1",
                             "--port", str(port), "--load_fast", "false"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    base = f"http://127.0.0.1:{port}/data/plugin/projector"
    try:
        deadline, runs = time.time() + 90, None
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail("tensorboard exited: " + proc.stdout.read().decode()[-2000:])
            try:
                runs = json.loads(_get(f"{base}/runs")[2])
                if runs:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        assert runs == ["."], runs
        q = urllib.parse.urlencode({"run": ".", "name": "gridtsne"})
        info = json.loads(_get(f"{base}/info?run=.")[2])
        emb = info["embeddings"][0]
        assert emb["tensorName"] == "gridtsne"
        assert [int(v) for v in emb["tensorShape"]] == [40, 8]
        assert emb["sprite"]["singleImageDim"] == [64, 64]

        status, ctype, body = _get(f"{base}/tensor?{q}")
        tensor = np.frombuffer(body, "<f4").reshape(40, 8)
        status, ctype, meta = _get(f"{base}/metadata?{q}")
        lines = meta.decode().splitlines()
        assert lines[0] == "uri\tlabel" and len(lines) == 41
        by_uri = {r["uri"]: r["vector"] for r in records}
        for k in (0, 17, 39):  # tensor row k belongs to metadata row k
            uri, label = lines[k + 1].split("\t")
            assert np.allclose(tensor[k], by_uri[uri])
            assert label == ("" if int(uri[8:11]) % 2 else uri.split("_", 1)[1][:-4])

        status, ctype, sprite = _get(f"{base}/sprite_image?{q}")
        assert status == 200 and ctype == "image/jpeg"
        img = Image.open(__import__("io").BytesIO(sprite))
        assert img.size == (7 * 64, 7 * 64)  # ceil(sqrt(40)) thumbnails a side
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
