"""Listing: fsspec URLs, globs, directories, archives and manifests -> file infos, no bytes read."""
import datetime
import os
import zipfile

import fsspec
import pytest

from gridtsne.ingest import read_and_decode
from gridtsne.listing import (FileInfo, NoMatch, expand_pattern, parse_manifest, read_manifest,
                              resolve_entries, to_epoch_us, walk_local)
from tests import image_corpus as corpus


@pytest.fixture
def tree(tmp_path):
    jpg = corpus.jpeg_bytes(corpus.photo("chelsea"))
    for rel in ["a.jpg", "sub/b.jpg", "sub/deep/c.JPG", "sub/notes.txt", ".hidden.jpg",
                "sub/.cache/d.jpg"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpg)
    return tmp_path


def _names(infos, root):
    return sorted(os.path.relpath(i.uri, root) for i in infos)


def test_directory_is_searched_recursively_and_hidden_files_are_skipped(tree):
    hidden = []
    infos = list(expand_pattern(str(tree), on_hidden=hidden.append))
    assert _names(infos, tree) == ["a.jpg", "sub/b.jpg", "sub/deep/c.JPG", "sub/notes.txt"]
    # .hidden.jpg, and the folder sub/.cache once: a hidden folder is not searched.
    assert sorted(os.path.relpath(h, tree) for h in hidden) == [".hidden.jpg", "sub/.cache"]
    info = next(i for i in infos if i.uri.endswith("a.jpg"))
    assert info.size == os.path.getsize(tree / "a.jpg") and not info.explicit
    assert abs(info.mtime_us / 1e6 - os.path.getmtime(tree / "a.jpg")) < 1e-3


def test_globs(tree):
    assert _names(expand_pattern(str(tree / "*.jpg")), tree) == ["a.jpg"]
    assert _names(expand_pattern(str(tree / "**" / "*.jpg")), tree) == ["a.jpg", "sub/b.jpg"]
    assert _names(expand_pattern(str(tree / "**")), tree) == [
        "a.jpg", "sub/b.jpg", "sub/deep/c.JPG", "sub/notes.txt"]
    # A glob that matches a directory searches it.
    assert _names(expand_pattern(str(tree / "su*")), tree) == [
        "sub/b.jpg", "sub/deep/c.JPG", "sub/notes.txt"]


def test_relative_paths_and_file_urls(tree, monkeypatch):
    monkeypatch.chdir(tree)
    (info,) = expand_pattern("sub/b.jpg")
    assert info.uri == str(tree / "sub" / "b.jpg") and info.explicit
    (info,) = expand_pattern(f"file://{tree}/a.jpg")
    assert info.uri == f"file://{tree}/a.jpg"
    assert read_and_decode(info)[0].width == 451


def test_missing_file_raises():
    with pytest.raises(FileNotFoundError):
        list(expand_pattern("/no/such/file.jpg"))


def test_memory_urls_can_be_opened_again():
    fs = fsspec.filesystem("memory")
    fs.pipe("/listing-test/x/one.jpg", corpus.jpeg_bytes(corpus.photo("coffee")))
    fs.pipe("/listing-test/x/two.png", corpus.png_bytes(corpus.photo("coffee")))
    infos = list(expand_pattern("memory://listing-test/x/*"))
    assert [i.uri for i in infos] == ["memory:///listing-test/x/one.jpg",
                                      "memory:///listing-test/x/two.png"]
    assert all(read_and_decode(i)[0].width == 600 for i in infos)
    fs.rm("/listing-test", recursive=True)


def test_zip_chain(tmp_path):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("in/cat.jpg", corpus.jpeg_bytes(corpus.photo("chelsea")))
        zf.writestr("in/readme.txt", "hi")
    infos = list(expand_pattern(f"zip://in/*.jpg::{archive}"))
    assert [i.uri for i in infos] == [f"zip://in/cat.jpg::{archive}"]
    assert infos[0].mtime_us is not None and infos[0].size > 0
    assert read_and_decode(infos[0])[0].width == 451


def test_manifest_entries_resolve_relative_to_the_manifest(tree):
    manifest = tree / "list.txt"
    manifest.write_text(f"# photos\na.jpg\n\n{tree}/sub/b.jpg\nsub/deep/*.JPG\n")
    entries = list(read_manifest(str(manifest)))
    assert entries == [f"{tree}/a.jpg", f"{tree}/sub/b.jpg", f"{tree}/sub/deep/*.JPG"]


def test_walk_follows_file_links_keeps_dangling_ones_and_never_loops(tree):
    os.symlink(tree / "a.jpg", tree / "sub" / "link.jpg")
    os.symlink(tree / "gone.jpg", tree / "dangling.jpg")
    os.symlink(tree, tree / "sub" / "loop")  # a folder link back to the root: not followed
    infos = {os.path.relpath(i.uri, tree): i for i in walk_local(str(tree))}
    assert sorted(infos) == ["a.jpg", "dangling.jpg", "sub/b.jpg", "sub/deep/c.JPG",
                             "sub/link.jpg", "sub/notes.txt"]
    assert infos["sub/link.jpg"].size == os.path.getsize(tree / "a.jpg")
    # Kept, so that reading it fails into errors/ instead of the file vanishing.
    assert infos["dangling.jpg"].size is None
    # The same records as fsspec's own listing gives for the plain files.
    fs = fsspec.filesystem("file")
    for rel in ("a.jpg", "sub/deep/c.JPG"):
        details = fs.info(str(tree / rel))
        assert infos[rel].size == details["size"]
        assert infos[rel].mtime_us == to_epoch_us(details["mtime"])


def test_parse_manifest_is_pure():
    assert list(parse_manifest(["# c\n", " a.jpg \n", "\n", "/x/b.jpg\n", "s3://b/c.jpg"],
                               "/base")) == ["/base/a.jpg", "/x/b.jpg", "s3://b/c.jpg"]


def test_resolve_entries_reports_each_bad_entry_and_goes_on(tree):
    entries = [f"{tree}/a.jpg", f"{tree}/missing.jpg", f"{tree}/sub/deep", f"{tree}/*.png",
               f"file://{tree}/sub/b.jpg", f"{tree}/sub/notes.txt"]
    out = list(resolve_entries(entries))
    found = [(e, f.uri) for e, f in out if isinstance(f, FileInfo)]
    failed = {e: type(f) for e, f in out if not isinstance(f, FileInfo)}
    assert found == [(f"{tree}/a.jpg", f"{tree}/a.jpg"),
                     (f"{tree}/sub/deep", f"{tree}/sub/deep/c.JPG"),
                     (f"file://{tree}/sub/b.jpg", f"file://{tree}/sub/b.jpg"),
                     (f"{tree}/sub/notes.txt", f"{tree}/sub/notes.txt")]
    assert failed == {f"{tree}/missing.jpg": FileNotFoundError, f"{tree}/*.png": NoMatch}
    named = {f.uri: f.explicit for _, f in out if isinstance(f, FileInfo)}
    assert named[f"{tree}/a.jpg"] and not named[f"{tree}/sub/deep/c.JPG"]


def test_s3_manifest_lines_are_one_paged_listing_not_a_request_each(s3_bucket, tmp_path,
                                                                     monkeypatch):
    """Counted by moto's own request recorder on the real loopback S3 server."""
    import requests
    import s3fs
    from moto.moto_api import recorder

    from gridtsne import listing

    fs = s3fs.S3FileSystem()
    data = corpus.jpeg_bytes(corpus.photo("coffee"))
    names = [f"{s3_bucket}/photos/{i:03d}.jpg" for i in range(40)]
    for name in names:
        fs.pipe(name, data)
    fs.pipe(f"{s3_bucket}/few/one.jpg", data)
    entries = [f"s3://{n}" for n in names] + [f"s3://{s3_bucket}/photos/nope.jpg",
                                             f"s3://{s3_bucket}/few/one.jpg"]
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.setattr(recorder, "_location", str(tmp_path / "requests.jsonl"))
    requests.post(f"{endpoint}/moto-api/recorder/reset-recording")
    requests.post(f"{endpoint}/moto-api/recorder/start-recording")
    try:
        fs.invalidate_cache()
        out = list(resolve_entries(entries))
    finally:
        requests.post(f"{endpoint}/moto-api/recorder/stop-recording")
    recorded = (tmp_path / "requests.jsonl").read_text().splitlines()
    infos = {e: f for e, f in out}
    assert all(infos[e].size == len(data) and infos[e].etag and infos[e].explicit
               for e in entries if "nope" not in e)
    assert infos[entries[0]].uri == entries[0]
    assert isinstance(infos[f"s3://{s3_bucket}/photos/nope.jpg"], FileNotFoundError)
    # One listing of photos/ (40 lines >= LIST_FOLDER_MIN), and a request or two each for the
    # missing line and the lone line in few/: far fewer than one per line.
    assert len(entries) >= listing.LIST_FOLDER_MIN * 2
    assert len(recorded) <= 8, recorded


def test_mtime_conversions():
    t = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.timezone.utc)
    us = to_epoch_us(t)
    assert to_epoch_us(t.replace(tzinfo=None)) == us
    assert to_epoch_us("2024-05-06T07:08:09.123456Z") == us
    assert to_epoch_us(t.timestamp()) == us
    assert to_epoch_us((2024, 5, 6, 7, 8, 9)) == us - 123456
    assert to_epoch_us(None) is None and to_epoch_us("yesterday") is None


def test_http_urls_and_directory_indexes(tree):
    """A real HTTP server on loopback (Python's http.server) serving the tree."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tree))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        (info,) = expand_pattern(f"{base}/a.jpg")
        assert info.explicit and info.size == os.path.getsize(tree / "a.jpg")
        assert info.mtime_us is None  # HTTP gives no modification time
        assert read_and_decode(info)[0].width == 451
        found = sorted(i.uri for i in expand_pattern(f"{base}/*.jpg"))
        assert found == [f"{base}/a.jpg"]
    finally:
        server.shutdown()
        server.server_close()


def test_sniffing_a_file_without_extension_is_a_ranged_read(tmp_path):
    """A 3 MB non-image without an image extension costs its signature, not a read-ahead block.

    A real HTTP server on loopback that honours Range requests counts the bytes it sends.
    """
    import http.server
    import threading

    from gridtsne.ingest import fetch

    video = b"\x00\x00\x00\x18ftypmp42" + os.urandom(3_000_000)
    photo = corpus.jpeg_bytes(corpus.photo("chelsea"))
    files = {"/clip": video, "/photo": photo}
    sent = []

    class RangeHandler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self._reply(head=True)

        def do_GET(self):
            self._reply(head=False)

        def _reply(self, head):
            data = files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start, end = 0, len(data) - 1
            ranged = self.headers.get("Range", "").startswith("bytes=")
            if ranged:
                first, _, last = self.headers["Range"][6:].partition("-")
                start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            self.send_response(206 if ranged else 200)
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if not head:
                # Counted before writing: once written, the client may already be checking.
                sent.append(end - start + 1)
                self.wfile.write(data[start:end + 1])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        from gridtsne.listing import FileInfo

        assert fetch(FileInfo(base + "/clip", size=len(video)), 50_000_000) is None
        assert 0 < sum(sent) <= 1024, sent
        sent.clear()
        # An image without an extension is still found, and read whole.
        assert fetch(FileInfo(base + "/photo", size=len(photo)), 50_000_000) == photo
    finally:
        server.shutdown()
        server.server_close()
