"""Fault injection: ``gridtsne run`` killed (SIGKILL) at every phase boundary and inside every
phase never changes a byte of the published map, and the next run publishes a complete one.

The kills are deterministic: ``GRIDTSNE_FAULT=<point>`` makes :func:`gridtsne.faults.point`
kill the run's own process at that point (a test hook, see gridtsne/faults.py). Each killed
run must end by that signal, so a point the run never reaches fails the test instead of
passing silently. Real parts: the DirectRunner in a child process, the tiny real CNN of
``tests/tiny_model.py``, real PNG files.
"""
import datetime as dt
import json
import os
import signal
import subprocess
import sys

import pytest

from gridtsne import faults, storage, versions
from pipelines import run as job
from tests.test_run_job import (FAST, _tree_digest, digits, make_collection,  # noqa: F401
                                run_job, write_digit)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def published_state(out):
    """Every byte a reader of the map can see: the pointer, the root page, the version."""
    pointer = json.loads((out / "latest.json").read_text())
    return {"latest.json": (out / "latest.json").read_bytes(),
            "index.html": (out / "index.html").read_bytes(),
            "version": _tree_digest(str(out / "versions" / pointer["version"]))}


class KilledRuns:
    """``tests/fault_runner.py`` in a child process: each :meth:`run` is ``gridtsne run`` in a
    fresh fork of it with the fault hook at a point; returns its exit status."""

    def __init__(self, inp, out, tmp_path):
        env = {**os.environ, "PYTHONPATH": REPO}
        env.pop(faults.ENV, None)
        self._log = open(tmp_path / "killed-runs.log", "w+b")
        cmd = [sys.executable, "-m", "tests.fault_runner", "--input", str(inp), "--output",
               str(out), "--progress", "off", *FAST]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True)

    def run(self, point):
        self.proc.stdin.write(point + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        assert answer and answer[0] == point, f"the fault runner died: {self.log()}"
        return int(answer[1])

    def log(self):
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-3000:]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self._log.close()


def test_killed_at_every_point_the_published_map_does_not_change(tmp_path, digits):
    inp, out = tmp_path / "photos", tmp_path / "map"
    make_collection(str(inp), range(30), digits)
    first = run_job(inp, out)
    before = published_state(out)

    # A version id is written once: re-using the published one is refused before any write.
    with pytest.raises(versions.VersionExists, match="published version"):
        job.run(["--input", str(inp), "--output", str(out), "--version_id", first["version"],
                 *FAST])
    assert published_state(out) == before

    added = [write_digit(str(inp), i, digits) for i in range(100, 130)]
    runs = KilledRuns(inp, out, tmp_path)
    try:
        killed = []
        for point in faults.POINTS:
            if point == "published":
                continue  # past the pointer move: below
            code = runs.run(point)
            assert code == -signal.SIGKILL, \
                f"{point}: the run was not killed there ({code}):\n{runs.log()}"
            assert published_state(out) == before, \
                f"killed at {point!r}, the published map changed"
            killed.append(point)
        assert len(killed) == len(faults.POINTS) - 1
        leftovers = set(versions.list_versions(str(out))) - {first["version"]}
        assert len(leftovers) == len(killed)  # each killed run left its unpublished folder

        # The next run publishes a complete version with every image, the new ones included.
        resumed = run_job(inp, out)
        assert resumed["counts"] == {"new": 30, "changed": 0, "unchanged": 30, "removed": 0,
                                     "failed": 0}
        current = versions.current_version_url(str(out))
        uris = storage.read_parquet(storage.url_join(current, "vectors"),
                                    columns=["uri"]).column("uri").to_pylist()
        assert sorted(uris) == sorted(str(p) for p in inp.glob("*/*.png"))
        assert set(added) <= set(uris)
        assert storage.count_parquet_rows(storage.url_join(current, "layout.parquet")) == 60
        # The killed runs' folders are young: they may belong to a run still going and stay;
        # once abandoned, a later prune removes them and keeps the published versions.
        assert leftovers <= set(versions.list_versions(str(out)))
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(
            seconds=versions.ABANDONED_AFTER_S + 60)
        assert set(versions.prune_versions(str(out), keep=3, now=later)) == leftovers
        assert versions.list_versions(str(out)) == sorted([first["version"],
                                                           resumed["version"]])

        # Killed just after the pointer moved: the new version is the published one, complete,
        # and it keeps its place in the commit order although its commit record is missing.
        for i in range(200, 206):
            write_digit(str(inp), i, digits)
        assert runs.run("published") == -signal.SIGKILL, runs.log()
    finally:
        runs.close()
    pointer = versions.read_pointer(str(out))
    assert pointer["version"] not in (first["version"], resumed["version"])
    assert versions.read_commit(str(out), pointer["version"]) is None  # killed before it
    assert storage.count_parquet_rows(storage.url_join(
        versions.version_url(str(out), pointer["version"]), "vectors")) == 66
    assert versions.committed_versions(str(out)) == [first["version"], resumed["version"],
                                                     pointer["version"]]
    again = run_job(inp, out, "--keep_versions", "2")
    assert again["counts"]["unchanged"] == 66
    assert versions.committed_versions(str(out)) == [pointer["version"], again["version"]]
    assert versions.list_versions(str(out)) == sorted([pointer["version"], again["version"]])
