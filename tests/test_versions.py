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


def _version(output, vid, progress=None):
    """A version folder with one file (and a progress document when given)."""
    storage.write_bytes(storage.url_join(versions.version_url(output, vid), "f"), b"1")
    if progress is not None:
        storage.write_bytes(versions.progress_url(output, vid), json.dumps(progress).encode())


def _publish(output, vid):
    _version(output, vid)
    versions.publish(output, vid)


def _ago(seconds):
    import datetime as dt

    t = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_prune_keeps_the_pointed_version_even_if_old(output):
    ids = [f"2026010{i}T000000Z-00000{i}" for i in range(1, 5)]
    for vid in ids:
        _publish(output, vid)
    versions.write_pointer(output, ids[0])  # rolled back to the oldest
    pruned = versions.prune_versions(output, keep=2)
    assert pruned == [ids[1]]
    assert versions.list_versions(output) == [ids[0], ids[2], ids[3]]
    with pytest.raises(ValueError, match="keep must be at least 1"):
        versions.prune_versions(output, keep=0)


def test_prune_goes_by_commit_order_not_by_name(output):
    """Ids as `gridtsne serve` makes them do not sort by time: the commit records do."""
    published = ["vf3a-1", "vc21-1", "v9be-1", "v04d-1"]
    for vid in published:
        _publish(output, vid)
    assert versions.committed_versions(output) == published
    assert [versions.read_commit(output, v)["sequence"] for v in published] == [1, 2, 3, 4]
    assert sorted(versions.prune_versions(output, keep=2)) == ["vc21-1", "vf3a-1"]
    assert versions.list_versions(output) == ["v04d-1", "v9be-1"]
    assert versions.read_pointer(output)["version"] == "v04d-1"


def test_unpublished_folders_never_count_and_go_once_abandoned(output):
    for vid in ("a-old", "b-mid", "c-new"):
        _publish(output, vid)
    _version(output, "x-running", {"phase": "layout", "updated": _ago(90)})
    _version(output, "y-failed", {"phase": "failed", "updated": _ago(5)})
    _version(output, "z-stale", {"phase": "rendering", "updated": _ago(2 * 3600)})
    _version(output, "w-summary-only", {"phase": "publishing", "updated": _ago(10)})
    storage.write_bytes(storage.url_join(versions.version_url(output, "w-summary-only"),
                                         "summary.json"), b"{}")
    pruned = versions.prune_versions(output, keep=2)
    # The two newest published versions stay although four newer folders exist; the failed
    # and the stale run's folders go; a run that wrote a minute ago may still be going.
    assert sorted(pruned) == ["a-old", "y-failed", "z-stale"]
    assert versions.list_versions(output) == ["b-mid", "c-new", "w-summary-only", "x-running"]
    assert versions.committed_versions(output) == ["b-mid", "c-new"]


def test_an_unpublished_folder_without_progress_goes_by_its_files_age(tmp_path):
    import datetime as dt

    output = str(tmp_path / "out")
    _publish(output, "v1")
    _version(output, "killed")
    now = dt.datetime.now(dt.timezone.utc)
    assert not versions.is_abandoned(output, "killed", now=now)
    later = now + dt.timedelta(seconds=versions.ABANDONED_AFTER_S + 60)
    assert versions.is_abandoned(output, "killed", now=later)
    assert versions.prune_versions(output, keep=1, now=later) == ["killed"]
    assert versions.list_versions(output) == ["v1"]


def test_a_pointed_version_without_commit_record_is_the_newest(output):
    """Published before commit records existed, or killed between pointer and record."""
    _publish(output, "b")
    _version(output, "a")
    versions.write_pointer(output, "a")
    assert versions.committed_versions(output) == ["b", "a"]
    _version(output, "c")
    versions.publish(output, "c")  # "a" is given its record first, so it keeps its place
    assert [versions.read_commit(output, v)["sequence"] for v in "bac"] == [1, 2, 3]
    assert versions.committed_versions(output) == ["b", "a", "c"]


def test_a_version_id_is_written_once(output):
    versions.check_unused(output, "v1")  # nothing there yet
    _publish(output, "v1")
    with pytest.raises(versions.VersionExists, match="'v1' is the published version"):
        versions.check_unused(output, "v1")
    _version(output, "v2")
    with pytest.raises(versions.VersionExists, match="'v2' is an existing version"):
        versions.check_unused(output, "v2")


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
