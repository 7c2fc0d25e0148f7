"""The phase timeline of a run: spans from the steps' own marks, overlaps and idle gaps."""
import os
import time

from gridtsne import phases


def test_breakdown_counts_overlaps_once_and_names_the_gaps():
    spans = {"launch": (100.0, 102.0), "listing": (102.0, 103.0), "embedding": (104.0, 110.0),
             "evaluation": (111.0, 113.0), "render": (111.5, 112.5), "publish": (113.0, 113.5)}
    t = phases.breakdown(spans)
    assert t["wall_s"] == 13.5
    # 103 -> 104 and 110 -> 111 are idle; the render inside the evaluation adds nothing.
    assert t["outside_phases_s"] == 2.0
    assert [(g["after"], g["before"], g["seconds"]) for g in t["gaps"]] == [
        ("listing", "embedding", 1.0), ("embedding", "evaluation", 1.0)]
    assert list(t["phases"]) == ["launch", "listing", "embedding", "evaluation", "render",
                                 "publish"]
    assert t["phases"]["render"] == {"start_s": 11.5, "seconds": 1.0}
    table = phases.format_breakdown(t)
    assert "idle after listing" in table and "14.8% of the wall" in table


def test_job_spans_from_marks_and_the_layout_summary():
    marks = {phases.JOB_START: (10.0, 10.0), phases.LISTED: (11.0, 12.0),
             phases.EMBEDDED: (13.0, 20.0), phases.VECTORS_WRITTEN: (20.5, 21.0),
             phases.RENDERED: (30.0, 30.0)}
    layout = {"started_at": 21.0, "timings": {"read_s": 1.0, "affinities_s": 2.0,
                                              "optimise_s": 3.0, "assign_s": 0.5,
                                              "refine_s": 0.5, "write_s": 0.5, "total_s": 8.0}}
    spans = phases.job_spans(marks, layout, evaluation_span=(29.0, 31.0),
                             publish_span=(31.0, 31.5), launched_at=5.0)
    assert spans["launch"] == (5.0, 10.0) and spans["listing"] == (10.0, 12.0)
    assert spans["embedding"] == (12.0, 20.0) and spans["writing vectors"] == (20.0, 21.0)
    assert spans["reading vectors"] == (21.0, 22.0) and spans["t-SNE"] == (24.0, 27.0)
    assert spans["writing layout"] == (28.0, 28.5) and spans["render"] == (29.0, 30.0)
    t = phases.breakdown(spans)
    assert t["outside_phases_s"] == 0.5  # writing layout ends at 28.5, the render starts at 29
    # A run that embedded nothing (all unchanged) has no embedding span, and no launch time.
    spans = phases.job_spans({**marks, phases.EMBEDDED: (None, None)}, layout)
    assert "embedding" not in spans and "launch" not in spans


def test_process_start_is_before_now():
    started = phases.process_started_at()
    if os.path.exists("/proc/self/stat"):
        assert started is not None and time.time() - 3600 * 24 < started <= time.time()
