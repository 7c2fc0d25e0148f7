"""The input allowlist (``--allow_input``): each attack tried, its refusal and reason asserted.

Real parts: the local disk with real symlinks, real HTTP servers on 127.0.0.1 (one that
redirects, one that counts what reaches it), fsspec's HTTP filesystem with the checking
aiohttp session, and a DirectRunner pipeline for the listing.
"""
import http.server
import os
import threading

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from gridtsne import input_policy
from gridtsne.decode import DecodeError
from gridtsne.ingest import fetch, read_and_decode
from gridtsne.input_policy import InputPolicy, Refused
from gridtsne.listing import FileInfo
from gridtsne.service import jobs
from gridtsne.storage import filesystem
from tests import image_corpus as corpus
from transforms.listing import ListFiles

SECRET_TEXT = b"TOP-SECRET-MARKER 7f3a9c\n"


@pytest.fixture
def disk(tmp_path):
    """``allowed/`` (two photos, symlinks out of it and within it) and ``secret/`` beside it."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir()
    secret.mkdir()
    jpg = corpus.jpeg_bytes(corpus.photo("chelsea"))
    (allowed / "a.jpg").write_bytes(jpg)
    (allowed / "b.jpg").write_bytes(jpg)
    (secret / "secret.jpg").write_bytes(jpg)
    (secret / "notes.txt").write_bytes(SECRET_TEXT)
    os.symlink("/etc/passwd", allowed / "passwd.jpg")
    os.symlink(secret / "secret.jpg", allowed / "secret_link.jpg")
    os.symlink(secret, allowed / "secret_dir")
    os.symlink(allowed / "a.jpg", allowed / "inside_link.jpg")
    return allowed, secret


class _Handler(http.server.BaseHTTPRequestHandler):
    routes = {}  # path -> (status, headers, body); set per server class
    hits = None

    def do_GET(self):
        self.hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"not here"))
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def web_server(routes):
    """A real HTTP server on 127.0.0.1; returns ``(base URL, hits, stop)``."""
    hits = []
    handler = type("Handler", (_Handler,), {"routes": routes, "hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", hits, server.shutdown


@pytest.fixture
def web():
    """``public`` (allowed by its address: a photo, a redirect out, a redirect within) and
    ``private`` (never to be reached: it counts every request)."""
    jpg = corpus.jpeg_bytes(corpus.photo("chelsea"))
    private, private_hits, stop_private = web_server({"/secret.jpg": (200, {}, jpg)})
    routes = {"/public/ok.jpg": (200, {}, jpg),
              "/public/jump.jpg": (302, {"Location": f"{private}/secret.jpg"}, b""),
              "/public/meta.jpg": (302, {"Location": "http://169.254.169.254/latest/"}, b"")}
    public, public_hits, stop_public = web_server(routes)
    routes["/public/within.jpg"] = (301, {"Location": "/public/ok.jpg"}, b"")
    routes["/public/out.jpg"] = (302, {"Location": "/elsewhere.jpg"}, b"")
    yield public, private, private_hits
    stop_public()
    stop_private()


ATTACKS = [
    ("{allowed}/../secret/secret.jpg", "'..' segment"),
    ("{secret}/secret.jpg", "outside the prefixes"),
    ("/etc/hostname", "outside the prefixes"),
    ("file:///etc/passwd", "outside the prefixes"),
    ("simplecache::{secret}/secret.jpg", "'::' URL chain"),
    ("zip://secret.jpg::file://{allowed}/a.zip", "'::' URL chain"),
    ("memory://{allowed}/a.jpg", "scheme 'memory'"),
    ("s3://bucket/a.jpg", "scheme 's3'"),
    ("relative/a.jpg", "relative path"),
    ("{allowed}/a\n.jpg", "control characters"),
    ("{allowed}/passwd.jpg", "outside the prefixes"),  # a symlink to /etc/passwd
    ("{allowed}/secret_link.jpg", "outside the prefixes"),
    ("{allowed}/secret_dir/notes.txt", "outside the prefixes"),
    ("{allowed}/secret_dir/*", "outside the prefixes"),
    ("http://127.0.0.1:9/healthz", "127.0.0.1, a loopback address"),
    ("http://localhost/x.jpg", "a loopback address"),
    ("http://2130706433/x.jpg", "127.0.0.1, a loopback address"),
    ("http://[::1]/x.jpg", "::1, a loopback address"),
    ("http://[::ffff:127.0.0.1]/x.jpg", "127.0.0.1, a loopback address"),
    ("http://[2002:7f00:1::]/x.jpg", "127.0.0.1, a loopback address"),  # 6to4
    ("http://[64:ff9b::a9fe:a9fe]/x.jpg", "169.254.169.254, a link-local address"),  # NAT64
    ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
    ("http://10.1.2.3/x.jpg", "10.1.2.3, a private address"),
    ("http://100.64.0.1/x.jpg", "not a public address"),  # carrier-grade NAT
    ("http://224.0.0.1/x.jpg", "a multicast address"),
    ("http://0.0.0.0/x.jpg", "0.0.0.0"),
    ("https://user@8.8.8.8/x.jpg", "names a user"),
    ("https://8.8.8.8/a/%2e%2e/x.jpg", "'..' segment"),
    ("ftp://8.8.8.8/x.jpg", "scheme 'ftp'"),
]


@pytest.mark.parametrize("attack,reason", ATTACKS, ids=[a for a, _ in ATTACKS])
def test_each_attack_is_refused_with_its_reason(disk, attack, reason):
    allowed, secret = disk
    policy = InputPolicy((str(allowed), "http://", "https://"))
    url = attack.format(allowed=allowed, secret=secret)
    with pytest.raises(Refused) as refused:
        policy.check(url)
    assert reason in refused.value.why, refused.value.why
    assert policy.refusal(url) == refused.value.why


def test_allowed_inputs_pass(disk):
    allowed, _ = disk
    policy = InputPolicy((str(allowed), "https://"))
    assert policy.check(str(allowed / "a.jpg")) == str(allowed / "a.jpg")
    assert policy.check(f"file://{allowed}/a.jpg") == str(allowed / "a.jpg")
    # A symlink within the allowlist is judged by where it leads: allowed.
    assert policy.check(str(allowed / "inside_link.jpg")) == str(allowed / "a.jpg")
    assert policy.check(f"{allowed}/*.jpg") == f"{allowed}/*.jpg"
    assert policy.check("https://8.8.8.8/photos/a.jpg") == "https://8.8.8.8/photos/a.jpg"
    # A prefix is a whole path segment: allowed-but-longer is another folder.
    assert "outside" in policy.refusal(f"{allowed}2/a.jpg")
    assert input_policy.from_prefixes([]) is None
    # Host names compare case-insensitively (the HTTP client lower-cases them).
    mixed = InputPolicy(("https://Photos.Example.COM/a/",))
    assert mixed.refusal("https://photos.example.com/a/x.jpg", resolve_hosts=False) is None
    assert "outside" in mixed.refusal("https://photos.example.com/A/x.jpg", resolve_hosts=False)


def test_a_prefix_naming_an_address_allows_that_address_and_port_only():
    policy = InputPolicy(("http://127.0.0.1:8123/public/",))
    assert policy.refusal("http://127.0.0.1:8123/public/a.jpg") is None
    assert "outside the prefixes" in policy.refusal("http://127.0.0.1:8123/private/a.jpg")
    assert "outside the prefixes" in policy.refusal("http://127.0.0.1:8124/public/a.jpg")
    # Outside the prefix that names it, the address is an internal one like any other.
    wider = InputPolicy(("http://127.0.0.1:8123/public/", "http://"))
    assert wider.refusal("http://127.0.0.1:8123/public/a.jpg") is None
    assert "loopback" in wider.refusal("http://127.0.0.1:8123/private/a.jpg")
    assert "loopback" in wider.refusal("http://localhost:8123/public/a.jpg")
    # A host name is never trusted with an internal address, even one that resolves to it.
    assert "outside the prefixes" in policy.refusal("http://localhost:8123/public/a.jpg")
    assert "names a user" in policy.refusal("http://127.0.0.1:8123@10.0.0.1/public/a.jpg")


def test_fetch_refuses_before_reading_and_keeps_no_bytes(disk):
    allowed, secret = disk
    policy = InputPolicy((str(allowed),))
    for path in ("passwd.jpg", "secret_link.jpg", "secret_dir/notes.txt"):
        info = FileInfo(str(allowed / path), explicit=True)
        with pytest.raises(DecodeError) as err:
            fetch(info, 10_000_000, policy=policy)
        assert err.value.stage == "read" and err.value.error_type == "Refused"
        assert "allowlist" in err.value.message and "outside the prefixes" in err.value.message
        assert "root:" not in err.value.message and "SECRET" not in err.value.message
    record, _ = read_and_decode(FileInfo(str(allowed / "inside_link.jpg"), explicit=True),
                                policy=policy)
    assert record.width == 451
    # Without a policy a symlink is followed as before (a user's own machine).
    assert fetch(FileInfo(str(allowed / "secret_link.jpg"), explicit=True), 10_000_000)


def test_the_batched_fetch_refuses_too(disk):
    # The embedding stage reads a batch through batch_fetch.start_fetch (plain reads for local
    # files): the policy must hold there as in fetch(), and no refused byte may come back.
    from gridtsne.batch_fetch import fetch_batch

    allowed, secret = disk
    policy = InputPolicy((str(allowed),))
    names = ("a.jpg", "passwd.jpg", "secret_link.jpg", "inside_link.jpg")
    infos = [FileInfo(str(allowed / n), explicit=True) for n in names]
    got = {f.info.uri.rsplit("/", 1)[1]: f for f in fetch_batch(infos, 10_000_000, policy=policy)}
    assert got["a.jpg"].data and got["inside_link.jpg"].data
    for name in ("passwd.jpg", "secret_link.jpg"):
        assert got[name].data is None and got[name].error.error_type == "Refused"
        assert "outside the prefixes" in got[name].error.message
    # Without a policy the same batch follows the link (a user's own machine).
    plain = fetch_batch(infos, 10_000_000)
    assert plain[2].data is not None


def test_a_symlink_swapped_after_listing_is_refused_at_read_time(disk):
    allowed, secret = disk
    policy = InputPolicy((str(allowed),))
    link = allowed / "swap.jpg"
    os.symlink(allowed / "a.jpg", link)
    info = FileInfo(str(link), explicit=True)
    assert policy.refusal(info.uri) is None  # what a listing saw
    link.unlink()
    os.symlink(secret / "secret.jpg", link)
    with pytest.raises(DecodeError, match="outside the prefixes"):
        fetch(info, 10_000_000, policy=policy)


def _cat(url, policy):
    fs, path = filesystem(url, policy.storage_options())
    return fs.cat_file(path)


def test_web_redirects_are_checked_at_every_hop(web):
    public, private, private_hits = web
    # The public server is allowed by its address; any other web URL only on a public one.
    policy = InputPolicy((f"{public}/public/", "http://"))
    narrow = InputPolicy((f"{public}/public/",))
    assert _cat(f"{public}/public/ok.jpg", policy)[:2] == b"\xff\xd8"
    assert _cat(f"{public}/public/within.jpg", narrow)[:2] == b"\xff\xd8"
    for path, reason, used in (("jump.jpg", "127.0.0.1, a loopback address", policy),
                               ("meta.jpg", "169.254.169.254, a link-local address", policy),
                               ("out.jpg", "127.0.0.1, a loopback address", policy),
                               ("out.jpg", "outside the prefixes", narrow),
                               ("jump.jpg", "outside the prefixes", narrow)):
        with pytest.raises(Refused) as refused:
            _cat(f"{public}/public/{path}", used)
        assert "redirects to" in refused.value.why and reason in refused.value.why
        assert "not followed" in refused.value.why
    assert private_hits == []  # the private server was never reached
    # Through the embedding stage's fetch: an errors/ row, no bytes.
    info = FileInfo(f"{public}/public/jump.jpg", explicit=True)
    with pytest.raises(DecodeError) as err:
        fetch(info, 10_000_000, policy=policy)
    assert err.value.error_type == "Refused" and "redirects to" in err.value.message
    assert private_hits == []


def test_web_connections_go_only_to_the_addresses_checked(web):
    public, private, private_hits = web
    port = private.rsplit(":", 1)[1]
    # "http://" allows every public web address; "localhost" is a name for a loopback one.
    policy = InputPolicy(("http://",))
    with pytest.raises(Exception) as err:
        _cat(f"http://localhost:{port}/secret.jpg", policy)
    assert "loopback" in str(err.value)
    with pytest.raises(Exception) as err:
        _cat(f"{private}/secret.jpg", policy)
    assert "loopback" in str(err.value)
    # A listing and the embedding stage's fetch both say why, in a Refused row.
    with pytest.raises(DecodeError) as err:
        fetch(FileInfo(f"http://localhost:{port}/secret.jpg", explicit=True), 10_000_000,
              policy=policy)
    assert err.value.error_type == "Refused" and "localhost" in err.value.message
    assert "a loopback address; not connected" in err.value.message
    assert private_hits == []


def test_listing_turns_refusals_into_error_rows_and_reads_nothing(disk, tmp_path):
    allowed, secret = disk
    manifest = allowed / "list.txt"
    manifest.write_text("\n".join([
        "a.jpg", "../secret/secret.jpg", str(secret / "secret.jpg"), "/etc/hostname",
        "http://127.0.0.1:9/healthz", f"simplecache::{secret}/secret.jpg", "passwd.jpg"]))
    (secret / "list.txt").write_text(str(allowed / "b.jpg"))
    policy = InputPolicy((str(allowed),))
    with TestPipeline() as p:
        files, errors = p | ListFiles([str(allowed), str(secret)],
                                      [str(manifest), str(secret / "list.txt")], policy=policy)
        assert_that(files | beam.Map(lambda i: os.path.basename(i.uri)),
                    _sorted_equal(["a.jpg", "b.jpg", "inside_link.jpg", "list.txt"]),
                    label="Files")
        assert_that(errors, _refusals(allowed, secret), label="Errors")


def _sorted_equal(expected):
    def check(actual):
        assert sorted(actual) == sorted(expected), sorted(actual)
    return check


def _refusals(allowed, secret):
    def check(rows):
        by_uri = {r["uri"]: r for r in rows}
        expected = {
            str(secret): "outside the prefixes",
            str(secret / "list.txt"): "outside the prefixes",
            f"{allowed}/../secret/secret.jpg": "'..' segment",
            str(secret / "secret.jpg"): "outside the prefixes",
            "/etc/hostname": "outside the prefixes",
            "http://127.0.0.1:9/healthz": "scheme 'http'",
            f"simplecache::{secret}/secret.jpg": "'::' URL chain",
            f"{allowed}/passwd.jpg": "outside the prefixes",
            f"{allowed}/secret_link.jpg": "outside the prefixes",
            # allowed/secret_dir, a link to a folder, is not followed by the walk at all
            # (gridtsne.listing.walk_local), so it is neither listed nor refused.
        }
        assert set(by_uri) == set(expected), sorted(by_uri)
        for uri, reason in expected.items():
            row = by_uri[uri]
            assert row["stage"] == "list" and row["error_type"] == "Refused", row
            assert reason in row["message"] and "not read" in row["message"], row
            assert "root:" not in row["message"] and "SECRET" not in row["message"]
    return check


def test_a_job_refuses_labels_outside_its_allowlist(disk, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.run import job_from_options

    allowed, secret = disk
    argv = ["--input", str(allowed), "--output", str(tmp_path / "map"),
            "--model", "tests.tiny_model:TINY", "--allow_input", str(allowed)]
    with pytest.raises(ValueError, match="--labels .*outside the prefixes.*--allow_input"):
        job_from_options(PipelineOptions(argv), labels="/etc/passwd")
    job = job_from_options(PipelineOptions(argv), labels=None)
    assert job.embed.embed.input_policy == InputPolicy((str(allowed),))
    assert job.storage_options["https"]["client_kwargs"]["allow_input"] == [str(allowed)]
    # Without --allow_input: no policy, storage options as before.
    job = job_from_options(PipelineOptions(argv[:-2]), labels=None)
    assert job.embed.embed.input_policy is None and "https" not in job.storage_options


def test_the_service_passes_its_allowlist_to_each_job():
    job = {"request": {"inputs": ["/photos"], "manifests": ["/photos/list.txt"]},
           "output": "/maps/m"}
    argv = jobs.job_argv(job, "v-1", ["--runner=DirectRunner"], ("/photos", "https://"))
    assert argv[:2] == ["--allow_input=/photos", "--allow_input=https://"]
    assert "--manifest=/photos/list.txt" in argv
