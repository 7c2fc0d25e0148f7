"""Attacks on ``gridtsne serve`` by one API key against another's maps and against the server.

Each attack of issue 23 (part B) is tried against a real server on 127.0.0.1 (uvicorn in a
child process, httpx) and its refusal asserted with status and message; the store and the job
runner are exercised with real SQLite files and real child processes. The attacks on what a
job reads (manifest lines, symlinks, redirects) are in test_service_input_attacks.py.
"""
import json
import math
import os
import sqlite3
import stat
import subprocess
import time

import pytest

from gridtsne import versions
from gridtsne.service import jobs, keys, responses, security
from gridtsne.service import store as S
from gridtsne.service.config import ServiceConfig
from tests.service_server import REPO, Server, _cli, _env, wait_for


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    (root / "photos").mkdir()
    (root / "photos" / "a.jpg").write_bytes(b"never decoded: this server queues only")
    return root


@pytest.fixture(scope="module")
def queue_server(folders):
    """Queues jobs, never runs them; no rate limits; any registered model."""
    server = Server(folders / "srv", "--output_root", folders / "maps",
                    "--allow_input", folders / "photos", "--max_concurrent_jobs", "0",
                    "--max_active_per_key", "0", "--requests_per_minute", "0")
    keys_ = {name: server.create_key(name) for name in ("alice", "bob")}
    with server:
        yield server, keys_


def post(client, folders, **extra):
    return client.post("/v2/visualizations", json={"inputs": [str(folders / "photos")], **extra})


def test_no_output_inside_or_above_another_keys_map(queue_server, folders):
    server, keys_ = queue_server
    root = str(folders / "maps")
    with server.client(keys_["alice"]) as alice, server.client(keys_["bob"]) as bob:
        r = post(alice, folders, output="family")
        assert r.status_code == 202, r.text
        assert r.json()["output"]["output_url"] == f"{root}/family"
        r = post(alice, folders, output=f"{root}/deep/inside")
        assert r.status_code == 202, r.text
        attacks = [
            "family",                                       # the same map, by name
            f"{root}/family",                               # ... by URL
            f"{root}//family/",                             # ... spelled differently
            f"file://{root}/./family",
            f"{root}/family/versions/v1/site",              # inside it (the page takeover)
            f"{root}/family/x",
            f"{root}/deep",                                 # above a map of alice's
            "deep",
        ]
        for output in attacks:
            r = post(bob, folders, output=output)
            assert r.status_code == 403, (output, r.text)
            assert "a map of another API key" in r.json()["detail"], r.text
        # Near misses by spelling are other maps: a common string prefix is not a path prefix.
        for output in ("family2", f"{root}/famil", f"{root}/deep-end"):
            r = post(bob, folders, output=output)
            assert r.status_code == 202, (output, r.text)
        # Bob's refused attempts created nothing.
        listed = bob.get("/v2/visualizations").json()["outputs"]
        assert sorted(o["output_url"] for o in listed) == sorted(
            [f"{root}/family2", f"{root}/famil", f"{root}/deep-end"])
        # Alice may re-index her own map, but not nest a map in it (its pruning would delete
        # the nested one).
        assert post(alice, folders, output="family").status_code == 202
        r = post(alice, folders, output=f"{root}/family/versions/v1/site")
        assert r.status_code == 409 and "lies inside or contains your map" in r.text


def test_overlap_rule_is_by_canonical_path_prefix():
    assert security.overlaps("/m/a", "/m/a/versions/v/site")
    assert security.overlaps("/m/a/versions", "/m/a")
    assert security.overlaps("s3://b/m/a", "S3://b//m/./a/")
    assert not security.overlaps("/m/a", "/m/ab")
    assert not security.overlaps("s3://b/m/a", "gs://b/m/a")
    assert security.canonical_output("S3://b//x/./y/") == "s3://b/x/y"


def test_concurrent_claims_of_nested_outputs_leave_one_owner(queue_server, folders):
    """Two keys racing for a map and a map inside it: exactly one wins."""
    import concurrent.futures

    server, keys_ = queue_server
    root = str(folders / "maps")
    outputs = [("alice", "race"), ("bob", f"{root}/race/versions/x")] * 4

    def claim(who_output):
        who, output = who_output
        with server.client(keys_[who]) as c:
            return who, post(c, folders, output=output).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(claim, outputs))
    winners = {who for who, code in results if code == 202}
    assert len(winners) == 1, results
    assert all(code in (202, 403, 409) for _, code in results), results


def _runner_config(tmp_path, python):
    return ServiceConfig(database=str(tmp_path / "jobs.db"), output_root=str(tmp_path / "maps"),
                         max_concurrent_jobs=4, job_nice=0, python=python,
                         workdir=str(tmp_path))


def test_busy_check_keeps_nested_outputs_apart(tmp_path):
    """Jobs on a map and on a folder inside it (stored before submission refused that) never
    run together; a job on another map does. Real child processes: a stand-in 'python' that
    only sleeps, since what matters is which jobs the scheduler starts."""
    sleeper = tmp_path / "python"
    sleeper.write_text("#!/bin/sh\nexec sleep 60\n")
    sleeper.chmod(0o755)
    config = _runner_config(tmp_path, str(sleeper))
    store = S.Store(config.database)
    store.add_key("k", "h")
    root = config.output_root
    for job_id, output in (("j1", f"{root}/a"), ("j2", f"{root}/a/versions/v/site"),
                           ("j3", f"{root}/b"), ("j4", f"{root}")):
        store.create_job({"id": job_id, "key_id": 1, "status": S.PENDING,
                          "request": {"inputs": ["/x"]}, "output": output,
                          "request_hash": job_id, "share_hash": job_id, "created": time.time()})
    runner = jobs.JobRunner(config, store)
    os.makedirs(config.log_dir, exist_ok=True)
    try:
        runner._launch()
        assert set(runner.running_pids()) == {"j1", "j3"}
    finally:
        for proc, *_ in runner._running.values():
            jobs._kill_group(proc)
        store.close()


def test_nan_figures_are_null_for_stored_jobs(tmp_path):
    """A finished job whose label agreement is NaN (labels matched almost nothing), stored
    before the fix: its GET and the list that holds it answer 200 with ``null``."""
    server = Server(tmp_path / "srv", "--output_root", tmp_path / "maps",
                    "--max_concurrent_jobs", "0", "--requests_per_minute", "0")
    key = server.create_key("alice")
    output = str(tmp_path / "maps" / "nan")
    version = "vnan-1"
    summary = {"counts": {"new": 3}, "images": 3,
               "quality": {"dpq": 0.5, "label_agreement": math.nan, "p": 16},
               "grid": {"rows": 2, "cols": 2}, "tiles": float("inf")}
    versions.write_pointer(output, version, summary)
    token = keys.share_token(keys.load_secret(server.database + ".secret"), "vnan")
    share_hash = keys.hash_key(token)
    store = S.Store(server.database)
    store.create_job({"id": "vnan", "key_id": 1, "status": S.SUCCEEDED,
                      "request": {"inputs": ["/x"], "options": {}}, "output": output,
                      "request_hash": "h", "share_hash": share_hash, "created": time.time(),
                      "finished": time.time(), "version_id": version,
                      "result": {"version": version, "summary": summary}})
    store.close()
    with sqlite3.connect(server.database) as db:
        assert "NaN" in db.execute("SELECT result FROM jobs").fetchone()[0]
    with server, server.client(key) as c:
        r = c.get("/v2/visualizations/vnan")
        assert r.status_code == 200, r.text
        data = json.loads(r.text)["output"]["data"]  # strict JSON: no NaN token
        assert data["quality"] == {"dpq": 0.5, "label_agreement": None, "p": 16}
        assert data["tiles"] is None
        r = c.get("/v2/visualizations")
        assert r.status_code == 200 and "NaN" not in r.text and "Infinity" not in r.text
        # The share link of that map: odd paths are 404, never a 500.
        site = os.path.join(output, "versions", version, "site")
        os.makedirs(site)
        with open(os.path.join(site, "index.html"), "w") as fh:
            fh.write("<html>the map</html>")
        assert c.get(f"/maps/{token}/").text == "<html>the map</html>"
        for bad in ("%00", "a%00b", "..%2f..%2f..%2fjobs.db", "%2e%2e/latest.json",
                    "%ff%fe", "x" * 5000):
            assert c.get(f"/maps/{token}/{bad}").status_code == 404, bad
        assert c.get("/maps/%00/index.html").status_code == 404
    assert responses.finite({"a": [1.0, math.nan, {"b": -math.inf}]}) == {"a": [1.0, None,
                                                                                 {"b": None}]}


def test_unknown_model_is_refused_at_submission(queue_server, folders):
    server, keys_ = queue_server
    with server.client(keys_["alice"]) as c:
        r = post(c, folders, options={"model": "no_such_model"})
        assert r.status_code == 422, r.text
        assert "options.model" in r.text and "efficientnet_lite0" in r.text
        r = post(c, folders, options={"model": "efficientnet_lite0"})
        assert r.status_code == 202, r.text


def test_option_values_that_begin_with_a_dash_stay_values(queue_server, folders):
    """A title such as ``--runner=DataflowRunner`` is the job's title, not a flag."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.embed import EmbedOptions
    from pipelines.render import RenderOptions

    server, keys_ = queue_server
    evil = "--runner=DataflowRunner --input /etc"
    with server.client(keys_["alice"]) as c:
        r = post(c, folders, options={"title": evil})
        assert r.status_code == 202, r.text
        job_id = r.json()["output"]["id"]
    job = S.Store(server.database).get_job(job_id)
    argv = jobs.job_argv(job, "v-1", ())
    assert f"--title={evil}" in argv
    options = PipelineOptions(argv)
    assert options.view_as(RenderOptions).title == evil
    assert options.view_as(EmbedOptions).input == [str(folders / "photos")]
    assert options.get_all_options().get("runner") is None


def test_restart_note_survives_the_job_starting_again(tmp_path):
    store = S.Store(str(tmp_path / "jobs.db"))
    store.add_key("k", "h")
    store.create_job({"id": "j", "key_id": 1, "status": S.PENDING, "request": {},
                      "output": "/m/j", "request_hash": "x", "share_hash": "y",
                      "created": time.time()})
    assert store.mark_running("j", 1, "j-1")
    assert store.requeue("j", "the server stopped while this job ran; it runs again")
    assert store.mark_running("j", 2, "j-2")
    job = store.get_job("j")
    answer = responses.visualization(job, "http://x/")
    assert answer["status"]["code"] == "RUNNING" and answer["status"]["attempts"] == 2
    assert "runs again" in answer["status"]["note"]
    assert store.finish("j", S.SUCCEEDED, result={"version": "j-2", "summary": {}})
    assert "note" not in responses.visualization(store.get_job("j"), "http://x/")["status"]
    store.close()


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_secrets_are_hashed_and_files_private(queue_server, folders):
    server, keys_ = queue_server
    with server.client(keys_["alice"]) as c:
        job_id = post(c, folders, output="private").json()["output"]["id"]
    secret_file = server.database + ".secret"
    with open(secret_file, "rb") as fh:
        token = keys.share_token(fh.read(), job_id)
    with sqlite3.connect(server.database) as db:
        dump = "\n".join(db.iterdump())
    assert token not in dump and keys.hash_key(token) in dump
    for key in keys_.values():
        assert key not in dump
    for path in (server.database, server.database + "-wal", secret_file):
        assert _mode(path) == 0o600, (path, oct(_mode(path)))


def test_share_links_of_a_database_from_before_hashing_keep_working(tmp_path):
    """A database whose jobs hold clear share tokens is migrated: the clear column goes."""
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as db:
        db.executescript(S._SCHEMA.replace("share_hash", "share_token")
                         .replace("jobs_by_share", "jobs_by_token"))
        db.execute("INSERT INTO keys (name, hash, created) VALUES ('k', 'h', 0)")
        db.execute("INSERT INTO jobs (id, key_id, status, request, output, request_hash, "
                   "share_token, created) VALUES ('j', 1, 'SUCCEEDED', '{}', '/m', 'x', "
                   "'clear-token', 0)")
    store = S.Store(path, share_hash=lambda job_id: keys.hash_key("new-" + job_id))
    assert store.job_by_share_hash(keys.hash_key("new-j"))["id"] == "j"
    store.close()
    with sqlite3.connect(path) as db:
        assert "clear-token" not in "\n".join(db.iterdump())


def test_create_key_twice_is_a_clear_error(tmp_path):
    database = str(tmp_path / "jobs.db")
    first = subprocess.run(_cli("--database", database, "--create_key", "erin"), cwd=REPO,
                           env=_env(), capture_output=True, text=True)
    assert first.returncode == 0 and first.stdout.startswith(keys.PREFIX)
    again = subprocess.run(_cli("--database", database, "--create_key", "erin"), cwd=REPO,
                           env=_env(), capture_output=True, text=True)
    assert again.returncode != 0
    assert "a key named 'erin' already exists" in again.stderr
    assert "Traceback" not in again.stderr
    bad = subprocess.run(_cli("--database", database, "--create_key", "no spaces"), cwd=REPO,
                         env=_env(), capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "key name" in bad.stderr


def test_jobs_run_the_installed_gridtsne_not_the_working_folders(tmp_path):
    """A ``pipelines/`` (and a ``gridtsne/``) folder in the server's working folder is never
    what a job runs."""
    evil = tmp_path / "cwd"
    marker = tmp_path / "EVIL-RAN"
    for package, module in (("pipelines", "run"), ("gridtsne", "cli")):
        (evil / package).mkdir(parents=True)
        (evil / package / "__init__.py").write_text(
            f"open({str(marker)!r}, 'a').write('{package}')\n")
        (evil / package / f"{module}.py").write_text("")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "notes.txt").write_text("no image here: the real job fails at once")
    server = Server(tmp_path / "srv", "--output_root", tmp_path / "maps",
                    "--allow_input", photos, "--requests_per_minute", "0", cwd=evil)
    key = server.create_key("alice")
    with server, server.client(key) as c:
        r = c.post("/v2/visualizations", json={"inputs": [str(photos)]})
        assert r.status_code == 202, r.text
        out = wait_for(c, r.json()["output"]["id"], ("FAILED", "SUCCEEDED"), timeout=180)
        log = c.get(f"/v2/visualizations/{out['id']}/log").text
    assert not marker.exists(), marker.read_text()
    assert out["status"]["code"] == "FAILED" and "child exited with status" in log
    log_file = os.path.join(server.folder, "logs", f"{out['id']}.log")
    assert _mode(log_file) == 0o600



def test_docs_page_serves_its_assets_or_says_how(tmp_path, queue_server):
    server, _ = queue_server
    with server.client() as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "--docs_assets" in page.text
        assert "swagger-ui-dist" in page.text and "fastapi.tiangolo.com" not in page.text
        assert c.get("/redoc").status_code == 404  # a second page of CDN assets: gone
    assets = tmp_path / "swagger"
    assets.mkdir()
    (assets / "swagger-ui-bundle.js").write_text("window.SwaggerUIBundle = function () {};")
    (assets / "swagger-ui.css").write_text("body {}")
    offline = Server(tmp_path / "srv", "--output_root", tmp_path / "maps",
                     "--docs_assets", assets)
    with offline, offline.client() as c:
        page = c.get("/docs").text
        assert "/docs/assets/swagger-ui-bundle.js" in page and "/docs/assets/swagger-ui.css" in page
        assert "https://" not in page and "http://" not in page
        assert c.get("/docs/assets/swagger-ui-bundle.js").text.startswith("window.SwaggerUIBundle")
    bad = subprocess.run(_cli("--database", str(tmp_path / "x.db"), "--output_root",
                              str(tmp_path / "maps"), "--docs_assets", str(tmp_path)),
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "lacks swagger-ui-bundle.js" in bad.stderr
