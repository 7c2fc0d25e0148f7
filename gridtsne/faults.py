"""A test hook: kill this process with SIGKILL at a named point of a run.

``GRIDTSNE_FAULT=NAME`` (or ``NAME:N``, at the N-th time the point is reached, from 1) makes
:func:`point` kill its own process there, with no chance to clean up: what a crash, an OOM
kill or a preempted machine does. The fault-injection tests (``tests/test_faults.py``) use it
to kill ``gridtsne run`` at each phase boundary and inside each phase, then check that the
published version did not change by one byte. Unset (always, outside those tests), a point
costs one dictionary lookup. It is not a feature: never set it in a deployment.
"""
import os
import signal
import threading

ENV = "GRIDTSNE_FAULT"

# The points a run passes, in order (see docs/deploy.md).
POINTS = (
    "listed",           # files listed, nothing embedded yet
    "embedding",        # inside the embedding: a batch of vectors computed
    "vectors-written",  # vectors/ and errors/ written, layout not started
    "tsne",             # inside t-SNE: an iteration done
    "layout-written",   # layout.parquet written, rendering not started
    "rendering",        # inside the render: some tiles written
    "rendered",         # the site written, the commit not started
    "publishing",       # the new version checked and its summary written, latest.json not moved
    "published",        # latest.json moved, the commit record not yet written
)

_seen = {}
_lock = threading.Lock()


def point(name):
    """Kill this process now if ``GRIDTSNE_FAULT`` names this point (and this occurrence)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    with _lock:
        _seen[name] = _seen.get(name, 0) + 1
        count = _seen[name]
    if count >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
