"""Reading a batch of files (gridtsne.batch_fetch): the same outcome per file as the per-file path.

Local files are read with plain ``open``; objects on S3 (moto's real server on loopback) are
fetched in one concurrent ``cat_ranges`` call; every refusal (too large, missing, a directory,
an empty object) matches what :func:`gridtsne.batch_fetch.fetch_one` says for that file.
"""
import concurrent.futures
import hashlib
import os

import pytest

from gridtsne.batch_fetch import fetch_batch, fetch_one, local_path
from gridtsne.listing import FileInfo, expand_pattern
from tests import image_corpus as corpus

MAX_BYTES = 300_000


def _outcome(fetched):
    error = fetched.error
    return (fetched.info.uri, fetched.data, fetched.sha256,
            None if error is None else (error.stage, error.error_type))


def _check_same_as_per_file(infos, storage_options=None, threads=3):
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        got = fetch_batch(infos, MAX_BYTES, storage_options, pool)
    want = [fetch_one(info, MAX_BYTES, storage_options) for info in infos]
    assert [_outcome(f) for f in got] == [_outcome(f) for f in want]
    return got


def test_local_paths():
    assert local_path("/data/a.jpg") == "/data/a.jpg"
    assert local_path("file:///data/a.jpg") == "/data/a.jpg"
    assert local_path("s3://bucket/a.jpg") is None
    assert local_path("file:/data/a.jpg") is None  # left to fsspec
    assert local_path("simplecache::s3://bucket/a.jpg") is None


def test_local_batch_matches_the_per_file_path(tmp_path):
    jpeg = corpus.jpeg_bytes(corpus.photo("rocket"))
    files = {"a.jpg": jpeg, "b.jpg": corpus.jpeg_bytes(corpus.photo("coffee")),
             "empty.jpg": b"", "big.jpg": b"\xff\xd8" + b"\0" * MAX_BYTES,
             "notes.txt": b"just text", "noext": jpeg}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "dir.jpg").mkdir()
    infos = [info for name in files for info in expand_pattern(str(tmp_path / name))]
    infos = [FileInfo(uri=i.uri, size=None, mtime_us=i.mtime_us, explicit=False) for i in infos]
    infos += [FileInfo(uri=str(tmp_path / "gone.jpg"), size=10),
              FileInfo(uri=str(tmp_path / "dir.jpg")),
              FileInfo(uri="file://" + str(tmp_path / "a.jpg"), size=len(jpeg))]
    got = _check_same_as_per_file(infos)
    by_name = {os.path.basename(f.info.uri): f for f in got}
    assert by_name["a.jpg"].data == jpeg
    assert by_name["a.jpg"].sha256 == hashlib.sha256(jpeg).hexdigest()
    assert by_name["big.jpg"].error.error_type == "FileTooLarge"
    assert by_name["gone.jpg"].error.error_type == "FileNotFoundError"
    assert by_name["dir.jpg"].error.stage == "read"
    assert by_name["notes.txt"].data is None and by_name["notes.txt"].error is None
    assert by_name["noext"].data == jpeg  # sniffed, then read


def test_a_file_grown_since_listing_is_refused_once_over_max_bytes(tmp_path):
    path = tmp_path / "grown.jpg"
    path.write_bytes(b"\xff\xd8" + b"\0" * (MAX_BYTES + 10))
    (got,) = fetch_batch([FileInfo(uri=str(path), size=100)], MAX_BYTES)
    assert got.error.error_type == "FileTooLarge"


@pytest.fixture
def s3_objects(s3_bucket, s3_server):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    objects = {f"img/{i:03d}.jpg": corpus.jpeg_bytes(corpus.photo("coffee"), quality=50 + i)
               for i in range(12)}
    objects["img/empty.jpg"] = b""
    objects["img/big.jpg"] = b"\xff\xd8" + b"\0" * MAX_BYTES
    for key, data in objects.items():
        client.put_object(Bucket=s3_bucket, Key=key, Body=data)
    return s3_bucket, objects


def test_s3_batch_is_one_concurrent_call_with_the_per_file_outcomes(s3_objects, s3_server,
                                                                     monkeypatch):
    import s3fs

    bucket, objects = s3_objects
    calls = []
    real = s3fs.S3FileSystem._cat_ranges

    async def counting(self, paths, *args, **kwargs):  # the real call, counted
        calls.append(list(paths))
        return await real(self, paths, *args, **kwargs)

    # fsspec binds an instance's sync methods when it is created: patch, then create.
    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_ranges", counting)
    s3fs.S3FileSystem.clear_instance_cache()
    options = {"s3": {"endpoint_url": s3_server}}
    infos = list(expand_pattern(f"s3://{bucket}/img/*.jpg", options))
    assert len(infos) == len(objects)
    infos.append(FileInfo(uri=f"s3://{bucket}/img/deleted.jpg", size=1000))
    got = _check_same_as_per_file(infos, options)
    # One call for the batch: every image whose listed size is within max_bytes (the empty
    # and the oversized one go the per-file way).
    assert len(calls) == 1 and len(calls[0]) == 13
    by_key = {f.info.uri.split(f"{bucket}/", 1)[1]: f for f in got}
    for key, data in objects.items():
        if key not in ("img/empty.jpg", "img/big.jpg"):
            assert by_key[key].data == data and by_key[key].error is None
    assert by_key["img/big.jpg"].error.error_type == "FileTooLarge"
    assert by_key["img/deleted.jpg"].error.stage == "read"
