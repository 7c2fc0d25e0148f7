"""``gridtsne serve`` over real HTTP: keys, isolation, limits and every bad input.

A real uvicorn server on 127.0.0.1 (a child process), a real HTTP client (httpx). These
servers run no job (``--max_concurrent_jobs 0`` queues them) or only refuse requests, so the
file is fast; the end-to-end jobs are in test_service_jobs.py.
"""
import concurrent.futures
import json
import os
import sqlite3

import pytest

from gridtsne.service import keys, security
from gridtsne.service.store import Store
from tests.service_server import Server


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    photos = root / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"not decoded: the queue-only server never runs a job")
    return root


def body(folders, **extra):
    return {"inputs": [str(folders / "photos")], **extra}


@pytest.fixture(scope="module")
def queue_server(folders):
    """Jobs are queued, never run; 3 pending jobs per key at most."""
    server = Server(folders / "queue", "--output_root", folders / "maps",
                    "--allow_input", folders / "photos", "--max_concurrent_jobs", "0",
                    "--max_active_per_key", "3", "--requests_per_minute", "0")
    keys_ = {name: server.create_key(name) for name in ("alice", "bob")}
    with server:
        yield server, keys_


@pytest.fixture(scope="module")
def strict_server(folders):
    """Refuses: a small body limit, 100 requests a minute, web inputs allowed but checked."""
    server = Server(folders / "strict", "--output_root", folders / "maps",
                    "--allow_input", folders / "photos", "--allow_input", "https://",
                    "--allow_input", "http://", "--max_body_bytes", "2048",
                    "--requests_per_minute", "100", "--allow_model", "efficientnet_lite0")
    keys_ = {name: server.create_key(name) for name in ("alice", "carol")}
    with server:
        yield server, keys_


def test_keys_are_stored_only_as_hashes(queue_server):
    server, keys_ = queue_server
    assert all(k.startswith(keys.PREFIX) and len(k) > 40 for k in keys_.values())
    with sqlite3.connect(server.database) as db:
        dump = "\n".join(db.iterdump())
    for key in keys_.values():
        assert key not in dump
        assert keys.hash_key(key) in dump


def test_twenty_concurrent_posts_two_keys_per_key_limit(queue_server, folders):
    server, keys_ = queue_server
    clients = {name: server.client(key) for name, key in keys_.items()}

    def post(i):
        name = ("alice", "bob")[i % 2]
        r = clients[name].post("/v2/visualizations", json=body(folders, options={"seed": i}))
        return name, r.status_code, r.headers.get("retry-after"), r.json()

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(post, range(20)))
    for name in ("alice", "bob"):
        mine = [r for r in results if r[0] == name]
        accepted = [r[3]["output"] for r in mine if r[1] == 202]
        refused = [r for r in mine if r[1] == 429]
        # The limit holds under concurrency, and every request got a definite answer.
        assert len(accepted) == 3 and len(refused) == 7, [r[1] for r in mine]
        assert all(int(r[2]) > 0 and "pending or running" in r[3]["detail"] for r in refused)
        assert all(o["status"]["code"] == "PENDING" for o in accepted)
        # Nothing lost: each accepted job is listed, and only the key's own.
        listed = clients[name].get("/v2/visualizations").json()
        assert listed["pagination"]["total"] == 3
        assert sorted(o["id"] for o in listed["outputs"]) == sorted(o["id"] for o in accepted)
    alice_job = next(r[3]["output"]["id"] for r in results if r[0] == "alice" and r[1] == 202)
    bob = clients["bob"]
    # Another key's visualization does not exist for bob: 404 on every endpoint.
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/log")):
        r = bob.request(method, f"/v2/visualizations/{alice_job}{path}")
        assert r.status_code == 404, (method, path, r.text)
    # Cancelling a pending job frees a slot of alice's limit.
    alice = clients["alice"]
    r = alice.delete(f"/v2/visualizations/{alice_job}")
    assert r.status_code == 200 and r.json()["output"]["status"]["code"] == "CANCELLED"
    assert alice.delete(f"/v2/visualizations/{alice_job}").status_code == 409
    assert alice.post("/v2/visualizations", json=body(folders)).status_code == 202
    assert alice.post("/v2/visualizations", json=body(folders)).status_code == 429
    page = alice.get("/v2/visualizations", params={"limit": 2}).json()
    assert len(page["outputs"]) == 2 and page["pagination"]["next_offset"] == 2
    assert page["pagination"]["total"] == 4
    created = [o["created_at"] for o in alice.get("/v2/visualizations").json()["outputs"]]
    assert created == sorted(created, reverse=True)


def test_idempotency_key_gives_the_same_visualization(queue_server, folders):
    server, keys_ = queue_server
    # A third key: alice's and bob's slots are used by the concurrency test.
    dora = server.client(server.create_key("dora"))
    first = dora.post("/v2/visualizations", json=body(folders),
                      headers={"Idempotency-Key": "order-17"})
    again = dora.post("/v2/visualizations", json=body(folders),
                      headers={"Idempotency-Key": "order-17"})
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json()["output"]["id"] == again.json()["output"]["id"]
    other = dora.post("/v2/visualizations", json=body(folders, options={"seed": 3}),
                      headers={"Idempotency-Key": "order-17"})
    assert other.status_code == 422 and "different request body" in other.json()["detail"]
    assert dora.get("/v2/visualizations").json()["pagination"]["total"] == 1


def test_openapi_documents_the_request_body(queue_server):
    server, _ = queue_server
    with server.client() as c:
        assert c.get("/docs").status_code == 200
        spec = c.get("/openapi.json").json()
    assert "/v2/visualizations" in spec["paths"]
    schema = spec["components"]["schemas"]["VisualizationRequest"]
    assert {"inputs", "manifests", "labels", "output", "options"} <= set(schema["properties"])
    assert "grid" in spec["components"]["schemas"]["JobOptions"]["properties"]


BAD = [
    # (body changes, status, words the message must hold)
    ({"inputs": ["/etc/**"]}, 400, "outside the prefixes"),
    ({"inputs": ["file:///etc/passwd"]}, 400, "outside the prefixes"),
    ({"inputs": ["PHOTOS/../../etc"]}, 400, "'..' segment"),
    ({"inputs": ["relative/photos"]}, 400, "relative path"),
    ({"inputs": ["http://127.0.0.1:8080/a.jpg"]}, 400, "loopback"),
    ({"inputs": ["http://localhost/a.jpg"]}, 400, "loopback"),
    ({"inputs": ["http://169.254.169.254/latest/meta-data/"]}, 400, "link-local"),
    ({"inputs": ["https://10.1.2.3/photos/"]}, 400, "private"),
    ({"inputs": ["http://[::1]/a.jpg"]}, 400, "loopback"),
    ({"inputs": ["ftp://example.com/a.jpg"]}, 400, "scheme 'ftp'"),
    ({"inputs": ["gs://bucket/photos/**"]}, 400, "scheme 'gs'"),
    ({"inputs": ["s3://bucket/a::file:///etc"]}, 400, "'::'"),
    ({"labels": "/etc/passwd"}, 400, "labels"),
    ({"manifests": ["http://127.0.0.1/list.txt"]}, 400, "manifests[0]"),
    ({"output": "/tmp/elsewhere"}, 400, "outside the prefixes"),
    ({"output": "s3://someone/else"}, 400, "scheme 's3'"),
    ({"output": "a/../b"}, 400, "output"),
    ({"options": {"model": "os:system"}}, 400, "options.model"),
    ({"inputs": []}, 422, "inputs or manifests"),
    ({"inputs": "PHOTOS"}, 422, "body.inputs"),
    ({"inputs": ["PHOTOS"], "colour": "red"}, 422, "body.colour"),
    ({"options": {"grid": "lots"}}, 422, "body.options.grid"),
    ({"options": {"perplexity": -1}}, 422, "body.options.perplexity"),
    ({"options": {"runner": "DataflowRunner"}}, 422, "body.options.runner"),
    ({"options": {"n_iter": "100"}}, 422, "body.options.n_iter"),
]


@pytest.mark.parametrize("change,status,words", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_input_gets_its_status_and_starts_nothing(strict_server, folders, change, status,
                                                      words):
    server, keys_ = strict_server
    photos = str(folders / "photos")
    req = {"inputs": [photos], **change}
    req = json.loads(json.dumps(req).replace("PHOTOS", photos))
    with server.client(keys_["alice"]) as c:
        r = c.post("/v2/visualizations", json=req)
        assert r.status_code == status, r.text
        message = r.json().get("message") or r.json()["detail"]
        assert words in str(message), message
        assert c.get("/v2/visualizations").json()["pagination"]["total"] == 0
    assert not os.listdir(os.path.join(server.folder, "logs"))


def test_auth_body_limit_and_malformed_json(strict_server, folders):
    server, keys_ = strict_server
    good = body(folders)
    with server.client() as anon:
        r = anon.post("/v2/visualizations", json=good)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Key"
        assert anon.get("/v2/visualizations").status_code == 401
    with server.client("gtk_not-a-real-key") as wrong:
        assert wrong.get("/v2/visualizations").status_code == 401
    with server.client(keys_["alice"]) as c:
        big = body(folders, options={"title": "x" * 150})
        big["inputs"] = [str(folders / "photos")] * 80
        r = c.post("/v2/visualizations", json=big)
        assert r.status_code == 413 and "2048 bytes" in r.json()["detail"]
        # Streamed (chunked, no Content-Length): counted as it arrives.
        r = c.post("/v2/visualizations", content=(b" " * 1000 for _ in range(10)))
        assert r.status_code == 413
        r = c.post("/v2/visualizations", content=b'{"inputs": ["/x"')
        assert r.status_code == 422 and "JSON" in r.json()["message"]
        r = c.get("/v2/visualizations", params={"limit": 1000})
        assert r.status_code == 422 and "query.limit" in r.json()["message"]
        assert c.get("/v2/visualizations").json()["pagination"]["total"] == 0


def test_requests_per_minute_give_429_with_retry_after(strict_server):
    server, keys_ = strict_server
    with server.client(keys_["carol"]) as c:
        codes = [c.get("/v2/visualizations").status_code for _ in range(100)]
        assert codes == [200] * 100
        r = c.get("/v2/visualizations")
        assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 60
        assert "requests in a minute" in r.json()["detail"]


def test_ssrf_check_resolves_names():
    # Public addresses pass; the check is on what a name resolves to, not on its spelling.
    assert security.unsafe_address("8.8.8.8") is None
    assert "loopback" in security.unsafe_address("127.1.2.3")
    assert "link-local" in security.unsafe_address("169.254.169.254")
    assert "loopback" in security.unsafe_address("::ffff:127.0.0.1")


def test_create_key_refuses_duplicate_names(tmp_path):
    server = Server(tmp_path)
    assert server.create_key("erin")
    with pytest.raises(Exception):
        server.create_key("erin")
    store = Store(server.database)
    assert [k["name"] for k in store.list_keys()] == ["erin"]
    store.close()


def test_progress_document_is_read_when_present_and_tolerated_when_not(tmp_path):
    from gridtsne import storage, versions
    from gridtsne.service import jobs

    out = str(tmp_path / "map")
    assert jobs.read_progress(out, "v1-1") is None
    url = versions.progress_url(out, "v1-1")
    doc = {"version": "v1-1", "phase": "embedding", "counts": {"listed": 30, "embedded": 12,
                                                               "failed": 0},
           "total": 30, "rate": 4.0, "eta_s": 4.5, "started": "2026-11-23T09:00:00Z",
           "updated": "2026-11-23T09:00:03Z"}
    storage.write_bytes(url, json.dumps(doc).encode())
    assert jobs.read_progress(out, "v1-1") == doc
    storage.write_bytes(url, b'{"version": "v1-1", "pha')  # caught mid-write
    assert jobs.read_progress(out, "v1-1") is None


def test_run_refuses_a_bad_version_id():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines import run as job

    options = PipelineOptions(["--input", "/x", "--output", "/y", "--version_id", "../evil"])
    with pytest.raises(ValueError, match="--version_id must match"):
        job.job_from_options(options)
