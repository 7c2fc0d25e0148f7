"""Progress of a run: the reporter's lines and document, and ``gridtsne run`` watched from outside.

The end-to-end test runs the real ``gridtsne`` command in a subprocess whose output is a pipe,
not a terminal (as under cron or CI), on the DirectRunner with the tiny real model.
"""
import io
import json
import logging
import os
import re
import subprocess
import sys

import pytest

from gridtsne import progress, storage, versions
from tests.test_run_job import FAST, make_collection
from transforms import progress_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def reporter(**kwargs):
    clock = Clock()
    stream = io.StringIO()
    r = progress.Reporter(version="v1", mode="lines", stream=stream, interval=10,
                          clock=clock, **kwargs)
    return r, clock, stream


def test_lines_follow_the_phases_with_totals_rate_and_eta():
    r, clock, stream = reporter()
    with progress.attached(r):
        progress.advance("listed", 120)
        r.tick()
        progress.phase("embedding")
        progress.advance("to_embed", 100)
        progress.advance("unchanged", 20)
        clock.now = 1.0
        progress.advance("embedded", 10)
        clock.now = 3.0
        progress.advance("embedded", 40)
        progress.advance("failed", 2)
        r.tick()
        clock.now = 5.0
        progress.phase("layout", "t-SNE")
        progress.report(tsne_iteration=0, tsne_iterations=750)
        progress.report(tsne_iteration=300)
        r.tick()
        progress.phase("embedding")  # a late update never moves the run backwards
        progress.phase("layout", "assignment")
        progress.phase("rendering")
        progress.report(tiles_total=85)
        progress.advance("tiles_done", 85)
        progress.phase("publishing")
    r.finish(counts={"embedded": 50, "failed": 2})
    lines = stream.getvalue().splitlines()
    assert "listing: 120 files found" in lines[0]
    # 40 images in the 2 s after the first batch: 20 images/s; 48 files left: 2 s.
    embedding = [x for x in lines if "embedding:" in x]
    assert "52/100 images (52%), 20.0 images/s, ETA 2s, 2 failed" in embedding[-1]
    assert any("layout: t-SNE iteration 300/750" in x for x in lines)
    assert any("layout: assignment" in x for x in lines)
    assert any("rendering: 85/85 tiles" in x for x in lines)
    assert "done: 50 images embedded, 2 failed" in lines[-1]
    doc = r.snapshot()
    assert doc["phase"] == "done" and doc["total"] == 100 and doc["rate"] == 20.0
    assert doc["counts"]["tiles_done"] == 85 and "list_failed" not in doc["counts"]


def test_a_phase_shorter_than_a_tick_still_gets_its_line():
    r, clock, stream = reporter()
    r.tick()
    r.enter("embedding")
    r.report({"to_embed": 7})
    r.advance("embedded", 7)
    r.enter("layout")
    r.tick()
    assert "embedding: 7/7 images (100%)" in stream.getvalue()


def test_bars_on_a_terminal_leave_one_line_per_finished_phase():
    clock = Clock()
    stream = io.StringIO()
    r = progress.Reporter(mode="bars", stream=stream, clock=clock, phase="layout")
    r.enter("layout", "t-SNE")
    r.report({"tsne_iteration": 50, "tsne_iterations": 90})
    r.tick()
    assert "t-SNE" in stream.getvalue() and "50/90" in stream.getvalue()  # the live bar
    r.report({"tsne_iteration": 90})
    r.enter("layout", "assignment")
    r.enter("rendering")
    r.report({"tiles_total": 12, "tiles_done": 5})
    r.tick()
    assert "5/12" in stream.getvalue()
    r.finish(counts={"tiles_done": 12})
    out = stream.getvalue()
    assert "layout: t-SNE iteration 90/90" in out and "rendering: 12/12 tiles" in out
    assert "done: 12 tiles" in out.splitlines()[-1]


def test_document_is_written_at_most_every_interval_and_never_fails_the_run(caplog):
    writes = []

    def write(data):
        writes.append(json.loads(data))
        if len(writes) >= 2:
            raise OSError("bucket unreachable")

    r, clock, _ = reporter(write_document=write, doc_interval=3)
    for step in range(20):  # 10 s of ticks every 0.5 s, the counts changing every time
        clock.now = step * 0.5
        r.advance("listed", 1)
        with caplog.at_level(logging.DEBUG, logger="gridtsne.progress"):
            r.tick()
    assert [round(w["counts"]["listed"]) for w in writes] == [1, 7, 13, 19]
    warnings = [m for m in caplog.records if m.levelno == logging.WARNING]
    assert len(warnings) == 1 and "bucket unreachable" in warnings[0].getMessage()
    r.finish()  # the last document goes out (and fails) without raising
    assert writes[-1]["phase"] == "done"
    doc = writes[0]
    assert set(doc) == {"version", "phase", "counts", "total", "rate", "eta_s", "started",
                        "updated"}
    assert doc["version"] == "v1" and doc["started"].endswith("Z")


def test_document_is_rewritten_every_heartbeat_while_nothing_moves():
    """A long step without news still rewrites the document, so a version whose document is
    old belongs to a run that is over (gridtsne.versions.is_abandoned)."""
    writes = []
    r, clock, _ = reporter(write_document=lambda data: writes.append(clock.now), doc_interval=3)
    r.advance("listed", 1)
    for step in range(0, 200):
        clock.now = float(step)
        r.tick()
    assert writes == [0.0, 60.0, 120.0, 180.0]
    assert progress.HEARTBEAT_S == 60


def test_a_run_that_raises_ends_failed_and_an_unwritable_document_fails_nothing(tmp_path,
                                                                               caplog):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines import watch

    options = PipelineOptions(["--progress", "off"])
    url = str(tmp_path / "versions" / "v1" / "progress.json")
    with pytest.raises(RuntimeError, match="boom"):
        with watch.watching(options, "v1", url):
            progress.phase("embedding")
            raise RuntimeError("boom")
    doc = json.loads(open(url).read())
    assert (doc["version"], doc["phase"]) == ("v1", "failed")

    (tmp_path / "a_file").write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="gridtsne.progress"):
        with watch.watching(options, "v2", str(tmp_path / "a_file" / "progress.json")) as w:
            progress.advance("listed", 3)
            w.finish(counts={"embedded": 3})
    assert [r for r in caplog.records if "could not write the progress document" in r.message]


def test_counters_become_progress_figures():
    values = {("gridtsne.embed", "files_listed"): 10, ("gridtsne.embed", "vectors"): 6,
              ("gridtsne.embed", "listing_errors"): 1, ("gridtsne.embed", "decode_errors"): 2,
              ("gridtsne.reindex", "files_new"): 8, ("gridtsne.reindex", "files_changed"): 1,
              ("gridtsne.embed", "images_found"): 8,
              ("gridtsne.layout", "layout_started"): 1,
              ("gridtsne.layout", "tsne_iterations_planned"): 750,
              ("gridtsne.layout", "tsne_iterations_done"): 500}
    counts, phase, step = progress_metrics.figures(values)
    assert counts == {"listed": 10, "embedded": 6, "failed": 3, "list_failed": 1, "to_embed": 9,
                      "tsne_iteration": 500, "tsne_iterations": 750}
    assert (phase, step) == ("layout", "t-SNE")
    r, _, _ = reporter()
    r.merge(counts, phase, step)
    r.merge({"embedded": 3}, "embedding")  # older figures lower nothing
    snap = r.snapshot()
    assert snap["phase"] == "layout" and snap["counts"]["embedded"] == 6


def _report_like_the_layout(_):
    with progress.attached(progress_metrics.CounterSink()):
        progress.report(tsne_iteration=0, tsne_iterations=90)
        progress.report(tsne_iteration=50)
        progress.report(tsne_iteration=90)
        progress.phase("layout", "assignment")
    return 1


def test_layout_core_reports_to_beam_counters_through_the_sink():
    import apache_beam as beam

    p = beam.Pipeline()
    _ = p | beam.Create([None]) | beam.Map(_report_like_the_layout)
    result = p.run()
    result.wait_until_finish()
    values = progress_metrics.counter_values(result.metrics().query())
    assert progress_metrics.figures(values) == (
        {"tsne_iteration": 90, "tsne_iterations": 90}, "layout", "assignment")


@pytest.mark.slow
def test_run_prints_progress_lines_and_writes_the_progress_document(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    inp, out = tmp_path / "photos", tmp_path / "map"
    make_collection(str(inp), range(30), (d.images, d.target))
    (inp / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    # 30 digits, labels.csv and broken.jpg: 32 files.
    cmd = [sys.executable, "-m", "gridtsne.cli", "run", "--input", str(inp), "--output",
           str(out), "--labels", str(inp / "labels.csv"), "--progress_interval", "1", *FAST]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert "listing: 32 files found" in err, err
    assert "embedding: 32/32 images (100%)" in err, err
    assert "images/s" in err
    assert "layout: t-SNE iteration 90/90" in err, err
    assert "layout: assignment" in err
    pointer = versions.read_pointer(str(out))
    summary = pointer["summary"]
    tiles = summary["tiles"]
    assert f"rendering: {tiles}/{tiles} tiles" in err, err
    assert "publishing:" in err
    assert err.rstrip().splitlines()[-1].split("] ", 1)[1].startswith(
        "done: 30 images embedded, 1 failed")
    # Beam's and gridtsne's INFO lines stay hidden without --verbose.
    assert " INFO " not in err and "apache_beam" not in err, err
    assert "gridtsne: version" in proc.stdout

    doc = json.loads(storage.read_bytes(versions.progress_url(str(out), pointer["version"])))
    assert doc["version"] == pointer["version"] and doc["phase"] == "done"
    for name, value in summary["counts"].items():
        assert doc["counts"][name] == value, name
    assert doc["counts"]["embedded"] == 30 and doc["counts"]["listed"] == 32
    assert doc["total"] == 32 and doc["rate"] > 0
    assert doc["started"] <= doc["updated"]

    # A stage on its own, with --verbose: the log lines are back, and progress too.
    layout_out = tmp_path / "layout"
    vectors = versions.version_url(str(out), pointer["version"]) + "/vectors"
    proc = subprocess.run([sys.executable, "-m", "gridtsne.cli", "layout", "--vectors", vectors,
                           "--output", str(layout_out), "--verbose", "--n_iter", "60",
                           "--early_exaggeration_iter", "30", "--perplexity", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"INFO.gridtsne\.layout", proc.stderr), proc.stderr
    assert "layout: t-SNE iteration 90/90" in proc.stderr
    assert "listing" not in proc.stderr and "images embedded" not in proc.stderr
