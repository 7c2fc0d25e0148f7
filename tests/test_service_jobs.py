"""``gridtsne serve`` running real jobs: local and S3 maps, a killed server, a cancelled job.

Real parts: uvicorn on 127.0.0.1, httpx, ``gridtsne run`` child processes on the DirectRunner,
moto's S3 server on loopback, 30 real photos (clothing-small, or scikit-image's photos). Jobs are tiny
(the tiny CNN, a short t-SNE, 32 px cells) but each still takes tens of seconds: slow.
"""
import io
import json
import os
import shutil
import signal
import sqlite3
import time

import httpx
import pytest
from PIL import Image

from gridtsne import storage, versions
from tests.conftest import SHARED_DATA
from tests.service_server import FAST_OPTIONS, Server, wait_for

pytestmark = pytest.mark.slow
N_PHOTOS = 30


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of 30 real photos (copied: the service allowlist resolves symlinks).

    clothing-small's phone photos where ../shared/data is present; elsewhere (a fresh clone in
    CI) crops of the real photos scikit-image and scikit-learn ship, so these jobs always run.
    """
    folder = tmp_path_factory.mktemp("photos")
    source = SHARED_DATA / "clothing-small" / "test"
    if source.is_dir():
        for path in sorted(source.glob("*/*.jpg"))[:N_PHOTOS]:
            shutil.copy(path, folder / f"{path.parent.name}_{path.name}")
        return folder
    from gridtsne.demo_data import offline_photos

    originals = [Image.open(path).convert("RGB") for path in offline_photos()]
    for i in range(N_PHOTOS):
        image = originals[i % len(originals)]
        w, h = image.size
        k = i // len(originals)  # later rounds: a different quarter-trimmed crop
        box = (k * w // 8 % (w // 4), k * h // 8 % (h // 4), w - w // 8, h - h // 8)
        image.crop(box).save(folder / f"photo_{i:02d}.jpg", quality=90)
    return folder


def post(client, inputs, **extra):
    r = client.post("/v2/visualizations",
                    json={"inputs": inputs, "options": FAST_OPTIONS, **extra})
    assert r.status_code == 202, r.text
    return r.json()["output"]["id"]


def check_mosaic(jpeg_bytes, data):
    image = Image.open(io.BytesIO(jpeg_bytes))
    grid, cell = data["grid"], FAST_OPTIONS["cell"]
    assert image.format == "JPEG"
    assert image.size == (grid["cols"] * cell, grid["rows"] * cell)
    assert grid["rows"] * grid["cols"] >= N_PHOTOS


def job_pid(server, job_id):
    with sqlite3.connect(server.database) as db:
        return db.execute("SELECT pid FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


def gone(pid, timeout=20):
    """True once no process ``pid`` exists (a zombie counts as gone only once reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().split(") ", 1)[1].startswith("Z"):
                return True  # dead; its parent (a killed server) is no longer there to reap
        time.sleep(0.2)
    return False


RUNNING_MARKS = ("loaded model", "every image is new", "Creating state cache")


def wait_until_embedding(client, job_id):
    """Wait until the job's child is inside its Beam pipeline (its log says so)."""
    wait_for(client, job_id, ("RUNNING",), timeout=60)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        log = client.get(f"/v2/visualizations/{job_id}/log").text
        if any(mark in log for mark in RUNNING_MARKS):
            assert "published" not in log
            return
        time.sleep(0.5)  # under the server's per-key request limit
    raise AssertionError(f"the job never got going:\n{log[-2000:]}")


def test_local_map_end_to_end(photos, tmp_path):
    server = Server(tmp_path / "srv", "--output_root", tmp_path / "maps",
                    "--allow_input", photos, "--allow_model", FAST_OPTIONS["model"],
                    "--max_concurrent_jobs", "2")
    key = server.create_key("alice")
    with server, server.client(key) as c:
        job_id = post(c, [str(photos)], output="family")
        # Same output, posted at once: it waits for the first, then re-indexes on top of it.
        second_id = post(c, [str(photos)], output="family")
        out = wait_for(c, job_id, ("SUCCEEDED",))
        second = wait_for(c, second_id, ("SUCCEEDED",))
        assert second["started_at"] >= out["finished_at"]
        assert second["data"]["counts"] == {"new": 0, "changed": 0, "unchanged": N_PHOTOS,
                                            "removed": 0, "failed": 0}
        data = out["data"]
        assert data["counts"]["new"] == N_PHOTOS and data["counts"]["failed"] == 0
        assert data["images"] == N_PHOTOS and data["quality"]["dpq"] > 0
        # The map's files are served read-only at an unguessable path, no key needed.
        url = data["image"]["url"]
        token = url.split("/maps/", 1)[1].split("/", 1)[0]
        assert len(token) >= 40
        with httpx.Client(timeout=30) as browser:
            image = browser.get(url)
            assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
            check_mosaic(image.content, data)
            page = browser.get(data["page"]["url"])
            assert page.status_code == 200 and "<html" in page.text.lower()
            assert "<Image" in browser.get(data["dzi"]["url"]).text
            base = url.rsplit("/", 1)[0]
            for bad in ("/../../../summary.json", "/%2e%2e/summary.json", "/../latest.json"):
                assert browser.get(base + bad, follow_redirects=True).status_code == 404, bad
            assert browser.get(url.replace(token, "x" * len(token))).status_code == 404
            assert browser.post(url).status_code == 405
        log = c.get(f"/v2/visualizations/{job_id}/log").text
        assert "published" in log
        assert out["version"] == f"{job_id}-1"
        assert versions.read_pointer(out["output_url"])["version"] == second["version"]
    # What anyone with the link gets, and the pointer, name images by the caller's URLs and
    # hold no path of the server's own (its output root), nor any third party's address.
    site = tmp_path / "maps" / "family" / "versions" / second["version"] / "site"
    published = [tmp_path / "maps" / "family" / "latest.json",
                 *[p for p in site.rglob("*") if p.suffix in (".js", ".json", ".html")
                   and "openseadragon" not in p.parts]]
    assert len(published) > 5
    cells = "".join((site / "cells" / name).read_text() for name in os.listdir(site / "cells"))
    assert cells.count(str(photos)) == N_PHOTOS
    for path in published:
        text = path.read_text()
        assert str(tmp_path / "maps") not in text, path
        assert "cdn." not in text, path


def test_s3_map_with_signed_urls(photos, s3_server, s3_bucket, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    for path in sorted(photos.iterdir()):
        s3.upload_file(str(path), s3_bucket, f"photos/{path.name}")
    flags = tmp_path / "runner.flags"
    flags.write_text(f"# the runner flags of every job\n--s3_endpoint_url {s3_server}\n")
    server = Server(tmp_path / "srv", "--output_root", f"s3://{s3_bucket}/maps",
                    "--allow_input", f"s3://{s3_bucket}/photos/", "--flags_file", flags,
                    "--allow_model", FAST_OPTIONS["model"], "--signed_url_expiry", "600")
    key = server.create_key("alice")
    with server, server.client(key) as c:
        # Outside the allowed prefix of the same bucket: refused.
        r = c.post("/v2/visualizations", json={"inputs": [f"s3://{s3_bucket}/other/**"]})
        assert r.status_code == 400 and "outside" in r.json()["detail"]
        job_id = post(c, [f"s3://{s3_bucket}/photos/**"], output="family")
        out = wait_for(c, job_id, ("SUCCEEDED",))
        assert out["output_url"] == f"s3://{s3_bucket}/maps/family"
        data = out["data"]
        url = data["image"]["url"]
        assert url.startswith(s3_server) and "Signature" in url and "Expires" in url
        assert data["image"]["expires_at"]
        image = httpx.get(url, timeout=30)
        assert image.status_code == 200, image.text
        check_mosaic(image.content, data)
        assert "<Image" in httpx.get(data["dzi"]["url"], timeout=30).text
        summary = json.loads(storage.read_bytes(f"s3://{s3_bucket}/maps/family/latest.json"))
        assert summary["version"] == out["version"]


def test_killed_server_reruns_the_job_on_restart(photos, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"not a JPEG at all")
    flags = ("--output_root", tmp_path / "maps", "--allow_input", photos,
             "--allow_input", junk, "--allow_model", FAST_OPTIONS["model"])
    server = Server(tmp_path / "srv", *flags)
    key = server.create_key("alice")
    server.start()
    with server.client(key) as c:
        job_id = post(c, [str(photos)])
        # Queued behind the first (one job at a time); it fails: nothing in it decodes.
        junk_id = post(c, [str(junk)])
        wait_until_embedding(c, job_id)
        assert c.get(f"/v2/visualizations/{junk_id}").json()["output"]["status"]["code"] == \
            "PENDING"
    child = job_pid(server, job_id)
    server.stop(signal.SIGKILL)
    # The child dies with its server (PR_SET_PDEATHSIG) instead of running on unsupervised.
    assert gone(child)
    output = str(tmp_path / "maps" / job_id)
    assert versions.read_pointer(output) is None

    again = Server(tmp_path / "srv", *flags)
    with again, again.client(key) as c:
        out = wait_for(c, job_id, ("SUCCEEDED",))
        # The job that was pending when the server died still runs, and fails readably.
        failed = wait_for(c, junk_id, ("FAILED",))
    assert out["status"]["attempts"] == 2
    assert out["version"] == f"{job_id}-2"
    assert out["data"]["images"] == N_PHOTOS and out["data"]["counts"]["failed"] == 0
    pointer = versions.read_pointer(output)
    assert pointer["version"] == out["version"]
    vectors = storage.read_parquet(storage.url_join(versions.version_url(output, out["version"]),
                                                    "vectors"), columns=["uri"])
    assert vectors.num_rows == N_PHOTOS
    assert failed["status"]["attempts"] == 1 and "Error" in failed["status"]["error"]
    assert "data" not in failed


def test_cancel_a_running_job(photos, tmp_path):
    server = Server(tmp_path / "srv", "--output_root", tmp_path / "maps",
                    "--allow_input", photos, "--allow_model", FAST_OPTIONS["model"])
    key = server.create_key("alice")
    with server, server.client(key) as c:
        job_id = post(c, [str(photos)])
        wait_until_embedding(c, job_id)
        child = job_pid(server, job_id)
        r = c.delete(f"/v2/visualizations/{job_id}")
        assert r.status_code == 200 and r.json()["output"]["status"]["code"] == "CANCELLED"
        assert gone(child)
        time.sleep(1.5)  # a few scheduler rounds: the job must stay cancelled
        out = c.get(f"/v2/visualizations/{job_id}").json()["output"]
        assert out["status"]["code"] == "CANCELLED" and "data" not in out
        assert c.delete(f"/v2/visualizations/{job_id}").status_code == 409
    output = tmp_path / "maps" / job_id
    # Nothing was published, and the half-written version is gone.
    assert versions.read_pointer(str(output)) is None
    assert not (output / "versions" / f"{job_id}-1").exists()


def test_a_child_job_killed_mid_render_changes_nothing_published(photos, tmp_path, monkeypatch):
    """``gridtsne serve``'s child killed by SIGKILL (the fault hook, gridtsne/faults.py) while it
    writes tiles: the job fails, the published map keeps every byte, the next run publishes."""
    from gridtsne import faults
    from pipelines import run as job
    from tests.test_faults import published_state

    out = tmp_path / "maps" / "family"
    fast = [f"--{k}={v}" for k, v in FAST_OPTIONS.items()]
    first = job.run(["--input", str(photos), "--output", str(out), "--progress", "off", *fast])
    before = published_state(out)

    flags = ("--output_root", tmp_path / "maps", "--allow_input", photos,
             "--allow_model", FAST_OPTIONS["model"])
    armed = Server(tmp_path / "srv", *flags)
    key = armed.create_key("alice")
    monkeypatch.setenv(faults.ENV, "rendering")  # the server's children inherit it
    with armed, armed.client(key) as c:
        job_id = post(c, [str(photos)], output="family")
        failed = wait_for(c, job_id, ("FAILED",))
        log = c.get(f"/v2/visualizations/{job_id}/log").text
    monkeypatch.delenv(faults.ENV)
    assert "exited with status -9" in log, log[-2000:]
    assert "data" not in failed
    killed = out / "versions" / failed["version"]
    tiles = [f for f in (killed / "site").rglob("*.jpg")]
    assert (killed / "layout.parquet").is_file() and tiles  # killed while rendering
    assert not (killed / "summary.json").exists() and not (killed / "commit.json").exists()
    assert published_state(out) == before
    assert versions.read_pointer(str(out))["version"] == first["version"]

    summary = job.run(["--input", str(photos), "--output", str(out), "--progress", "off",
                       *fast])
    assert summary["images"] == N_PHOTOS and summary["counts"]["unchanged"] == N_PHOTOS
    assert versions.committed_versions(str(out)) == [first["version"], summary["version"]]
