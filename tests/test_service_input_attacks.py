"""Issue 23's input attacks against a real ``gridtsne serve``: its job reads nothing outside
the allowlist.

Real parts: ``gridtsne serve`` on 127.0.0.1 running a real ``gridtsne run`` child (DirectRunner,
the tiny CNN of tests/tiny_model.py), real photos, real symlinks, and two real HTTP servers
on 127.0.0.1: an allowed one (named by address in ``--allow_input``) that serves a photo and
redirects to the other, and a private one that records every request it gets.

The attacks sit where only the job can see them, past the submission check: lines of a
manifest that is itself inside the allowed folder, symlinks inside the allowed folder, and a
redirect. Each must become an ``errors/`` row saying why, and none of their bytes may reach
the errors table, the vectors table or the published map.
"""
import hashlib
import os
import shutil

import httpx
import pytest
from PIL import Image

from gridtsne import storage
from tests import image_corpus as corpus
from tests.conftest import SHARED_DATA
from tests.service_server import FAST_OPTIONS, Server, wait_for
from tests.test_input_policy import web_server

pytestmark = pytest.mark.slow
N_PHOTOS = 20
SECRET_TEXT = b"TOP-SECRET-MARKER 51c0ffee\n"


def _photos(folder):
    """``N_PHOTOS`` real photos (clothing-small where ../shared is present, else crops of the
    photos scikit-image and scikit-learn ship)."""
    folder.mkdir(parents=True)
    source = SHARED_DATA / "clothing-small" / "test"
    if source.is_dir():
        for path in sorted(source.glob("*/*.jpg"))[:N_PHOTOS]:
            shutil.copy(path, folder / f"{path.parent.name}_{path.name}")
        return sorted(str(p) for p in folder.iterdir())
    from gridtsne.demo_data import offline_photos

    originals = [Image.open(path).convert("RGB") for path in offline_photos()]
    for i in range(N_PHOTOS):
        image = originals[i % len(originals)]
        w, h = image.size
        k = i // len(originals)
        box = (k * w // 8 % (w // 4), k * h // 8 % (h // 4), w - w // 8, h - h // 8)
        image.crop(box).save(folder / f"photo_{i:02d}.jpg", quality=90)
    return sorted(str(p) for p in folder.iterdir())


def _first_bytes(path, n=24):
    try:
        with open(path, "rb") as fh:
            return fh.read(n).strip()
    except OSError:
        return b""


def _all_bytes_under(folder):
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                yield os.path.join(root, name), fh.read()


def test_the_job_refuses_what_lies_outside_the_allowlist(tmp_path):
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    photos = _photos(allowed / "photos")
    secret.mkdir()
    secret_jpg = corpus.jpeg_bytes(corpus.photo("chelsea").rotate(90, expand=True))
    (secret / "secret.jpg").write_bytes(secret_jpg)
    (secret / "notes.txt").write_bytes(SECRET_TEXT)
    os.symlink("/etc/passwd", allowed / "photos" / "passwd.jpg")
    os.symlink(secret / "secret.jpg", allowed / "photos" / "secret_link.jpg")

    private, private_hits, stop_private = web_server({"/secret.jpg": (200, {}, secret_jpg),
                                                      "/notes.txt": (200, {}, SECRET_TEXT)})
    web_jpg = corpus.jpeg_bytes(corpus.photo("chelsea").resize((300, 200)))
    public, public_hits, stop_public = web_server({
        "/public/web.jpg": (200, {}, web_jpg),
        "/public/jump.jpg": (302, {"Location": f"{private}/secret.jpg"}, b"")})
    private_port = private.rsplit(":", 1)[1]

    server = Server(tmp_path / "srv", "--output_root", tmp_path / "maps",
                    "--allow_input", allowed, "--allow_input", f"{public}/public/",
                    "--allow_input", "http://", "--allow_model", FAST_OPTIONS["model"])
    key = server.create_key("mallory")
    try:
        with server, server.client(key) as c:
            healthz = httpx.get(f"{server.url}/healthz").content
            manifest = allowed / "list.txt"
            attacks = {
                "/etc/hostname": "outside the prefixes",
                str(secret / "notes.txt"): "outside the prefixes",
                f"{server.url}/healthz": "127.0.0.1, a loopback address",
                f"{private}/secret.jpg": "127.0.0.1, a loopback address",
                f"http://localhost:{private_port}/notes.txt": "a loopback address",
                f"{allowed}/../secret/secret.jpg": "'..' segment",
                f"simplecache::{secret}/secret.jpg": "'::' URL chain",
                f"{public}/public/jump.jpg": f"redirects to '{private}/secret.jpg'",
                str(allowed / "photos" / "passwd.jpg"): "outside the prefixes",
                str(allowed / "photos" / "secret_link.jpg"): "outside the prefixes",
            }
            lines = [u for u in attacks if "/photos/" not in u and "/../" not in u]
            manifest.write_text("\n".join(["# attacks, and one web photo that is allowed",
                                           *lines, "../secret/secret.jpg",
                                           f"{public}/public/web.jpg"]) + "\n")
            r = c.post("/v2/visualizations", json={
                "inputs": [str(allowed / "photos")], "manifests": [str(manifest)],
                "options": FAST_OPTIONS})
            assert r.status_code == 202, r.text
            out = wait_for(c, r.json()["output"]["id"], ("SUCCEEDED",))
            log = c.get(f"/v2/visualizations/{out['id']}/log").text
    finally:
        stop_public()
        stop_private()

    assert "published" in log
    assert private_hits == []  # nothing reached the private server, directly or redirected
    assert set(public_hits) == {"/public/web.jpg", "/public/jump.jpg"}
    version = storage.url_join(out["output_url"], "versions", out["version"])

    # Every attack is an errors/ row that says why; nothing else failed.
    rows = storage.read_parquet(storage.url_join(version, "errors")).to_pylist()
    by_uri = {}
    for row in rows:
        by_uri.setdefault(row["uri"], []).append(row)
    assert set(by_uri) == set(attacks), sorted(by_uri)
    for uri, reason in attacks.items():
        for row in by_uri[uri]:
            assert row["error_type"] == "Refused", row
            assert reason in row["message"] and "--allow_input" in row["message"], row
    assert out["data"]["counts"]["failed"] == len(rows)

    # The map holds the allowed photos and the allowed web photo, nothing else.
    vectors = storage.read_parquet(storage.url_join(version, "vectors"),
                                   columns=["uri", "sha256"]).to_pylist()
    assert sorted(v["uri"] for v in vectors) == sorted([*photos, f"{public}/public/web.jpg"])
    assert hashlib.sha256(secret_jpg).hexdigest() not in {v["sha256"] for v in vectors}
    assert out["data"]["images"] == N_PHOTOS + 1
    assert not any(healthz in row["message"].encode() for row in rows)

    # No byte of what lies outside reached any file of the map: errors, vectors, site.
    leaks = [SECRET_TEXT.strip(), _first_bytes("/etc/passwd")]
    hostname = _first_bytes("/etc/hostname")
    if len(hostname) >= 6:
        leaks.append(hostname)
    for path, data in _all_bytes_under(out["output_url"]):
        for leak in leaks:
            assert leak not in data, (path, leak)
