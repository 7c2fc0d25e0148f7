"""Where a job's wall time goes: its named phases as wall-clock spans, and the gaps between them.

A span is ``(start, end)`` in seconds since the epoch (``time.time()``), so spans measured in
different processes of one machine (or on workers with synchronised clocks) line up.
:func:`breakdown` turns a ``{phase: span}`` dict into the ``timings`` of a run's summary:
each phase's start (from the job's start) and length, the wall time, and the idle gaps, the
time that no phase covers. Phases may overlap (the evaluation runs beside the render): a
moment covered by several phases counts once.
"""
import os
import time

# The phases of `gridtsne run`, in the order a run enters them.
ORDER = ("launch", "listing", "embedding", "writing vectors", "reading vectors",
         "neighbours/affinities", "t-SNE", "assignment", "refinement", "writing layout",
         "evaluation", "render", "publish")
# (phase, the layout's duration key): the layout's steps, back to back from its start.
LAYOUT_STEPS = (("reading vectors", "read_s"), ("neighbours/affinities", "affinities_s"),
                ("t-SNE", "optimise_s"), ("assignment", "assign_s"),
                ("refinement", "refine_s"), ("writing layout", "write_s"))
# Gaps shorter than this are rounding, not idle time worth a line.
MIN_GAP_S = 0.05


def process_started_at():
    """When this process started, in epoch seconds (Linux ``/proc``), else None.

    The launch phase starts there, so the interpreter's own start and the imports count.
    """
    try:
        with open("/proc/self/stat") as fh:
            # The command name (2nd field) may hold spaces: split after its closing bracket.
            fields = fh.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of proc(5), counted from field 3
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration, AttributeError):
        return None


def layout_spans(started_at, timings):
    """``{phase: span}`` of the layout's steps, laid back to back from ``started_at``.

    ``timings`` are :func:`gridtsne.layout.run_layout`'s (``read_s``, ``affinities_s``,
    ``optimise_s``, ``assign_s``, ``refine_s``, ``write_s``); a step it did not time (a
    ``--stable`` run fits no t-SNE) is left out.
    """
    spans, at = {}, float(started_at)
    for name, key in LAYOUT_STEPS:
        seconds = timings.get(key)
        if seconds is None:
            continue
        spans[name] = (at, at + float(seconds))
        at += float(seconds)
    return spans


# The marks a job records (see transforms/phase_marks.py): when elements passed these points.
JOB_START, LISTED, EMBEDDED, VECTORS_WRITTEN, RENDERED = (
    "job start", "listed", "embedded", "vectors written", "rendered")


def job_spans(marks, layout_summary, evaluation_span=None, publish_span=None, launched_at=None):
    """``{phase: span}`` of a whole run from what its steps recorded.

    ``marks`` maps each mark name to ``(first, last)`` (see above): listing runs from the
    job's start to the last listed file, embedding from there to the last embedded row (so it
    holds the re-index join and the model's loading), writing the vectors until the last part
    is written. The layout's steps come from its summary (``started_at`` and ``timings``); the
    render runs from the layout's end to the render's summary. ``launched_at`` (the
    launching process's start) begins the launch phase, which ends when the job starts.
    """
    def last(name):
        return (marks.get(name) or (None, None))[1]

    start = (marks.get(JOB_START) or (None, None))[0]
    spans = {}
    if launched_at is not None and start is not None:
        spans["launch"] = (launched_at, start)
    listed = last(LISTED)
    spans["listing"] = (start, listed)
    embedded = last(EMBEDDED)
    spans["embedding"] = (listed, embedded)
    written = last(VECTORS_WRITTEN)
    spans["writing vectors"] = (max(t for t in (listed, embedded) if t is not None)
                                if listed is not None else None, written)
    layout_end = None
    if layout_summary.get("started_at") is not None:
        steps = layout_spans(layout_summary["started_at"], layout_summary.get("timings") or {})
        spans.update(steps)
        layout_end = layout_summary["started_at"] + (layout_summary.get("timings") or {}).get(
            "total_s", 0.0)
    spans["render"] = (layout_end, last(RENDERED))
    spans["evaluation"] = evaluation_span
    spans["publish"] = publish_span
    return {k: v for k, v in spans.items() if v and None not in v}


def _union_gaps(spans):
    """Gaps between the union of ``spans`` (sorted by start): ``[(after, before, start, end)]``."""
    gaps, covered_to, last = [], None, None
    for name, (start, end) in sorted(spans.items(), key=lambda kv: (kv[1][0], kv[1][1])):
        if covered_to is not None and start - covered_to >= MIN_GAP_S:
            gaps.append((last, name, covered_to, start))
        if covered_to is None or end > covered_to:
            covered_to, last = end, name
    return gaps


def breakdown(spans):
    """The ``timings`` of a summary from ``{phase: (start, end)}`` (spans of None are skipped).

    Returns a dict: ``phases`` (``{phase: {"start_s", "seconds"}}``, start from the earliest
    span, in :data:`ORDER` then any other), ``wall_s`` (earliest start to latest end),
    ``outside_phases_s`` (wall time no phase covers) and ``gaps`` (``[{"after", "before",
    "start_s", "seconds"}]``, each stretch of it, between the phase that ended and the one
    that began).
    """
    spans = {k: (float(v[0]), max(float(v[0]), float(v[1])))
             for k, v in spans.items() if v and v[0] is not None and v[1] is not None}
    if not spans:
        return {"phases": {}, "wall_s": 0.0, "outside_phases_s": 0.0, "gaps": []}
    t0 = min(s for s, _ in spans.values())
    wall = max(e for _, e in spans.values()) - t0
    order = {name: i for i, name in enumerate(ORDER)}
    phases = {name: {"start_s": round(s - t0, 3), "seconds": round(e - s, 3)}
              for name, (s, e) in sorted(spans.items(),
                                         key=lambda kv: (order.get(kv[0], len(order)), kv[1]))}
    gaps = [{"after": a, "before": b, "start_s": round(s - t0, 3), "seconds": round(e - s, 3)}
            for a, b, s, e in _union_gaps(spans)]
    # All uncovered time, short stretches included, so the figure adds up.
    covered, covered_to = 0.0, None
    for s, e in sorted(spans.values()):
        if covered_to is None or s > covered_to:
            covered += e - s
            covered_to = e
        elif e > covered_to:
            covered += e - covered_to
            covered_to = e
    return {"phases": phases, "wall_s": round(wall, 3),
            "outside_phases_s": round(max(0.0, wall - covered), 3), "gaps": gaps}


def format_breakdown(timings):
    """A plain-text table of :func:`breakdown`'s result, for a terminal or a commit message."""
    lines = [f"{'phase':24}{'starts at s':>12}{'seconds':>10}"]
    order = {name: i for i, name in enumerate(ORDER)}
    # A summary read back from JSON has its keys sorted: order them as the run goes.
    for name, p in sorted(timings["phases"].items(),
                          key=lambda kv: (order.get(kv[0], len(order)), kv[1]["start_s"])):
        lines.append(f"{name:24}{p['start_s']:12.2f}{p['seconds']:10.2f}")
    for g in timings["gaps"]:
        lines.append(f"{'  idle after ' + g['after']:24}{g['start_s']:12.2f}{g['seconds']:10.2f}"
                     f"  (until {g['before']})")
    wall, outside = timings["wall_s"], timings["outside_phases_s"]
    share = outside / wall if wall else 0.0
    lines.append(f"{'whole job (wall)':24}{'':12}{wall:10.2f}")
    lines.append(f"{'outside named phases':24}{'':12}{outside:10.2f}  ({share:.1%} of the wall)")
    return "\n".join(lines)


def now():
    """The wall clock spans are measured with (seconds since the epoch)."""
    return time.time()
