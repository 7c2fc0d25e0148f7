"""The job's listing on the DirectRunner (transforms.listing.ListFiles): the files travel in
lists and meet again by a shard of their uri, and none is lost, duplicated or mistaken.

Real files (12,000+ empty ones in a temporary folder), the real runner, Beam's own counters.
"""
import collections
import dataclasses
import json
import os

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from gridtsne.listing import FileInfo
from pipelines.beam_runner import new_pipeline
from transforms import embed_counters as C
from transforms import listing as listing_transforms
from transforms.listing import ListFiles, file_fields, merge_shard, shard_batch, uri_shard

FOLDERS, PER_FOLDER = 41, 301  # 12,341 files: batches of 5,000 end part-full


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("listing")
    paths = []
    for f in range(FOLDERS):
        folder = root / "photos" / f"f{f:02d}"
        folder.mkdir(parents=True)
        for i in range(PER_FOLDER):
            path = folder / f"img{i:03d}.jpg"
            path.touch()
            paths.append(str(path))
    (root / "photos" / ".hidden.jpg").touch()
    return root, paths


def _run(inputs, manifests=(), out=None):
    """``(files, error rows, counters)`` of ListFiles run alone on the DirectRunner; what came
    out is written to files under ``out`` and read back, as the runner delivered it."""
    p = new_pipeline(PipelineOptions([]))
    files, errors = p | ListFiles(inputs, manifests)
    for name, pcoll, row in (("files", files, dataclasses.astuple),
                             ("errors", errors, lambda r: [r["uri"], r["stage"],
                                                           r["error_type"]])):
        _ = (pcoll | f"Rows{name}" >> beam.Map(row)
             | f"Collect{name}" >> beam.combiners.ToList()
             | f"Save{name}" >> beam.Map(
                 lambda rows, path=str(out / f"{name}.json"): open(path, "w").write(
                     json.dumps(rows))))
    result = p.run()
    result.wait_until_finish()
    counters = collections.Counter()  # summed over the steps that count the same name
    for r in result.metrics().query(MetricsFilter().with_namespace(C.NAMESPACE))["counters"]:
        counters[r.key.metric.name] += r.committed
    found = [FileInfo(*row) for row in json.loads((out / "files.json").read_text())]
    failed = [tuple(row) for row in json.loads((out / "errors.json").read_text())]
    return found, failed, counters


@pytest.mark.parametrize("batch", [listing_transforms.LIST_BATCH, 7])
def test_every_file_comes_out_once_whatever_the_batches(tree, batch, monkeypatch, tmp_path):
    """12,341 files listed twice over (the folder, and a glob of a quarter of its folders) and
    a manifest naming 1,000 of them again, twice, plus a missing line: each file comes out
    exactly once, the named ones as named, and every bad input is an error row."""
    root, paths = tree
    monkeypatch.setattr(listing_transforms, "LIST_BATCH", batch)
    named = paths[::12][:1000]
    manifest = root / "manifest.txt"
    manifest.write_text("".join(p + "\n" for p in named + named)
                        + str(root / "photos" / "gone.jpg") + "\n")
    inputs = [str(root / "photos"), str(root / "photos" / "f0[0-9]" / "*.jpg"),
              str(root / "photos" / "*.nothing"), str(root / "missing")]
    found, failed, counters = _run(inputs, [str(manifest)], tmp_path)

    uris = [f.uri for f in found]
    assert len(uris) == len(paths) == FOLDERS * PER_FOLDER
    assert set(uris) == set(paths)  # none lost, none invented, none twice (count above)
    assert all(isinstance(f, FileInfo) and f.size == 0 and f.mtime_us for f in found)
    assert {f.uri for f in found if f.explicit} == set(named)  # a named file stays named
    assert sorted((os.path.basename(uri), stage, kind) for uri, stage, kind in failed) == [
        ("*.nothing", "list", "NoMatch"), ("gone.jpg", "list", "FileNotFoundError"),
        ("missing", "list", "FileNotFoundError")]
    in_glob = 10 * PER_FOLDER
    assert counters[C.FILES_LISTED] == len(paths) + in_glob + 2 * len(named)
    assert counters[C.DUPLICATES_DROPPED] == in_glob + 2 * len(named)
    assert counters[C.LISTING_ERRORS] == 3
    assert counters[C.HIDDEN_SKIPPED] >= 1


def test_one_folder_alone_is_listed_whole_and_counts_no_duplicates(tree, tmp_path):
    root, paths = tree
    found, failed, counters = _run([str(root / "photos")], out=tmp_path)
    assert sorted(f.uri for f in found) == sorted(paths)
    assert failed == [] and C.DUPLICATES_DROPPED not in counters


def test_shards_are_the_same_in_every_process_and_keep_duplicates_together():
    """The shard is a stable hash (Python's ``hash`` of a str differs between processes, which
    would let a file's two listings miss each other on two workers)."""
    import zlib

    assert uri_shard("/photos/a.jpg") == zlib.crc32(b"/photos/a.jpg") % 256
    a, b = FileInfo("/p/x.jpg", 3, 7), FileInfo("/p/x.jpg", 3, 7, "e", explicit=True)
    assert FileInfo(*file_fields(b)) == b
    others = [file_fields(FileInfo(f"/p/{i}.jpg")) for i in range(50)]
    shards = dict(shard_batch([file_fields(a)] + others)), dict(shard_batch([file_fields(b)]))
    key = uri_shard("/p/x.jpg")
    merged = list(merge_shard((key, [shards[0][key], shards[1][key]])))
    assert [f for f in merged if f.uri == "/p/x.jpg"] == [b]  # once, the named record
    assert sum(len(v) for v in shards[0].values()) == 51


def test_files_listed_before_a_listing_fails_are_kept(tmp_path, monkeypatch):
    """A pattern whose listing fails half-way (a file's problem, not the machine's) gives its
    error row and keeps the files it had listed, as when each went on at once. The failure is
    staged (a listing that raises after three real files): running as root here, no real
    folder refuses to be read."""
    files = []
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(b"x")
        files.append(FileInfo(str(tmp_path / f"{i}.jpg"), 1, 0, None, True))

    def failing(pattern, storage_options=None, on_hidden=None):
        yield from files
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))

    monkeypatch.setattr(listing_transforms, "expand_pattern", failing)
    fn = listing_transforms.ExpandPatternsFn()
    fn.setup()
    out = list(fn.process(str(tmp_path)))
    listed = [FileInfo(*fields) for o in out if isinstance(o, list) for fields in o]
    errors = [o.value for o in out if isinstance(o, beam.pvalue.TaggedOutput)
              and o.tag == listing_transforms.ERRORS]
    assert listed == files
    assert len(errors) == 1 and "Permission denied" in json.dumps(errors[0])
