"""The versioned-prefix protocol: the pointer moves atomically and old versions survive."""
import json
import os

import pytest

from gridtsne import storage, versions


@pytest.fixture(params=["local", "memory", "s3"])
def output(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    if request.param == "memory":
        return f"memory://versions-{os.getpid()}-{id(request)}"
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/maps"


def test_no_pointer_before_first_run(output):
    assert versions.read_pointer(output) is None
    assert versions.current_version_url(output) is None
    assert versions.list_versions(output) == []


def test_pointer_moves_to_the_newest_committed_version(output):
    first, second = "20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb"
    for vid in (first, second):
        storage.write_bytes(storage.url_join(versions.version_url(output, vid), "x.txt"), vid.encode())
    versions.write_pointer(output, first, {"new": 3})
    assert versions.read_pointer(output)["version"] == first
    assert versions.read_pointer(output)["summary"] == {"new": 3}
    versions.write_pointer(output, second)
    assert versions.current_version_url(output).endswith(f"versions/{second}")
    assert versions.list_versions(output) == [first, second]


def test_prune_keeps_the_pointed_version_even_if_old(output):
    ids = [f"2026010{i}T000000Z-00000{i}" for i in range(1, 5)]
    for vid in ids:
        storage.write_bytes(storage.url_join(versions.version_url(output, vid), "f"), b"1")
    versions.write_pointer(output, ids[0])
    pruned = versions.prune_versions(output, keep=2)
    assert pruned == [ids[1]]
    assert versions.list_versions(output) == [ids[0], ids[2], ids[3]]
    with pytest.raises(ValueError, match="keep must be at least 1"):
        versions.prune_versions(output, keep=0)


def test_local_pointer_leaves_no_temporary_files(tmp_path):
    out = str(tmp_path)
    versions.write_pointer(out, "v1")
    versions.write_pointer(out, "v2")
    assert sorted(os.listdir(tmp_path)) == ["latest.json"]
    assert json.loads((tmp_path / "latest.json").read_text())["version"] == "v2"


def test_a_foreign_pointer_is_a_clear_error(tmp_path):
    (tmp_path / "latest.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a gridtsne pointer"):
        versions.read_pointer(str(tmp_path))


def test_version_ids_sort_by_time():
    import datetime as dt

    early = versions.new_version_id(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    late = versions.new_version_id(dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc))
    assert early < late and early != versions.new_version_id(
        dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
