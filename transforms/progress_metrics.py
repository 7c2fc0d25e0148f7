"""The stages' progress as Beam counters, and those counters read back by the launcher.

A DoFn counts with :func:`counter` instead of ``Metrics.counter``: the Beam counter is
incremented as before (Dataflow, Flink and the summary read it), and the same increment goes
to :mod:`gridtsne.progress`, which the launcher listens to when the workers run in its own
process (the DirectRunner; the PortableRunner with ``--environment_type=LOOPBACK``). When they
run elsewhere, nobody listens there, and :class:`MetricsPoller` feeds the launcher's reporter
from ``result.metrics()`` while it waits, as far as the runner reports metrics before the end.
Both paths map counters to progress figures through the one table :data:`COUNTS`.
"""
import logging
import threading

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from gridtsne import progress

log = logging.getLogger(__name__)

# (namespace, counter) -> the progress counts it adds to.
COUNTS = {
    ("gridtsne.embed", "files_listed"): ("listed",),
    ("gridtsne.embed", "vectors"): ("embedded",),
    ("gridtsne.embed", "files_skipped_not_images"): ("skipped",),
    ("gridtsne.embed", "listing_errors"): ("failed", "list_failed"),
    ("gridtsne.embed", "decode_errors"): ("failed",),
    ("gridtsne.embed", "embed_errors"): ("failed",),
    ("gridtsne.embed", "files_unchanged"): ("unchanged",),
    ("gridtsne.reindex", "files_new"): ("to_embed",),
    ("gridtsne.reindex", "files_changed"): ("to_embed",),
    ("gridtsne.reindex", "files_unchanged"): ("unchanged",),
    ("gridtsne.layout", "tsne_iterations_done"): ("tsne_iteration",),
    ("gridtsne.layout", "tsne_iterations_planned"): ("tsne_iterations",),
    ("gridtsne.render", "tiles_planned"): ("tiles_total",),
    ("gridtsne.render", "top_tiles_written"): ("tiles_done",),
    ("gridtsne.render", "lower_tiles_written"): ("tiles_done",),
}
# (namespace, counter) -> the (phase, step) that a non-zero value shows has begun.
MARKERS = {
    ("gridtsne.embed", "files_listed"): ("listing", None),
    ("gridtsne.embed", "images_found"): ("embedding", None),
    ("gridtsne.embed", "files_skipped_not_images"): ("embedding", None),
    ("gridtsne.embed", "decode_errors"): ("embedding", None),
    ("gridtsne.layout", "layout_started"): ("layout", None),
    ("gridtsne.layout", "tsne_iterations_planned"): ("layout", "t-SNE"),
    ("gridtsne.layout", "assignment_started"): ("layout", "assignment"),
    ("gridtsne.render", "tiles_planned"): ("rendering", None),
    ("gridtsne.run", "publishing_started"): ("publishing", None),
}
_ORDER = {name: i for i, name in enumerate(progress.PHASES)}
_STEPS = {"t-SNE": 0, "assignment": 1}


class ProgressCounter:
    """A Beam counter whose increments also reach :mod:`gridtsne.progress` in this process."""

    def __init__(self, namespace, name):
        self._counter = Metrics.counter(namespace, name)
        self._counts = COUNTS.get((namespace, name), ())
        self._marker = MARKERS.get((namespace, name))

    def inc(self, n=1):
        self._counter.inc(n)
        if self._marker:
            progress.phase(*self._marker)
        for name in self._counts:
            progress.advance(name, n)


def counter(namespace, name):
    """The counter a DoFn should use for ``namespace``/``name`` (see :class:`ProgressCounter`)."""
    return ProgressCounter(namespace, name)


class CounterSink:
    """Turns the layout core's progress calls into Beam counters, for remote runners.

    Attach it (``progress.attached``) on the worker thread that runs the layout; calls from
    other threads are not its business.
    """

    def __init__(self):
        self._thread = threading.get_ident()
        self._sent = {}
        self._assignment = Metrics.counter("gridtsne.layout", "assignment_started")

    def enter(self, name, step=None):
        if threading.get_ident() == self._thread and name == "layout" and step == "assignment":
            self._assignment.inc()

    def advance(self, name, n=1):
        pass

    def report(self, values):
        if threading.get_ident() != self._thread:
            return
        for key, metric in (("tsne_iteration", "tsne_iterations_done"),
                            ("tsne_iterations", "tsne_iterations_planned")):
            if key in values:
                delta = values[key] - self._sent.get(key, 0)
                if delta > 0:
                    Metrics.counter("gridtsne.layout", metric).inc(delta)
                    self._sent[key] = values[key]


def counter_values(metrics_results):
    """``{(namespace, name): value}`` of a ``MetricResults.query()`` answer (committed
    values where the runner has them, else attempted ones, summed over steps)."""
    values = {}
    for c in metrics_results.get("counters", ()):
        value = c.committed if c.committed is not None else c.attempted
        key = (c.key.metric.namespace, c.key.metric.name)
        values[key] = values.get(key, 0) + (value or 0)
    return values


def figures(values):
    """``(counts, phase, step)`` for :meth:`gridtsne.progress.Reporter.merge` from counter
    values: the counts of :data:`COUNTS`, and the latest phase and step a marker shows."""
    counts = {}
    for key, names in COUNTS.items():
        if key in values:
            for name in names:
                counts[name] = counts.get(name, 0) + values[key]
    begun = [m for key, m in MARKERS.items() if values.get(key)]
    if not begun:
        return counts, None, None
    phase, step = max(begun, key=lambda m: (_ORDER[m[0]], _STEPS.get(m[1], -1)))
    return counts, phase, step


def poll(result, reporter):
    """Merge the job's current metrics into ``reporter``; False when the runner has none."""
    try:
        values = counter_values(result.metrics().query(MetricsFilter()))
    except Exception as exc:  # some runners have no metrics, or none while running
        log.debug("no metrics from the runner yet: %s", exc)
        return False
    finally:
        # The PortableRunner's result keeps the first answer for good, even one taken while
        # the job ran (empty on the embedded job service): drop it so later calls, the
        # summary's included, ask again.
        if getattr(result, "_metrics", None) is not None:
            result._metrics = None
    reporter.merge(*figures(values))
    return True


class MetricsPoller:
    """While the launcher waits for ``result``, merge its metrics into ``reporter`` every
    ``interval`` seconds on a thread of its own; ``stop()`` polls a last time."""

    def __init__(self, result, reporter, interval=5.0):
        self._result, self._reporter, self._interval = result, reporter, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gridtsne-metrics", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(self._interval):
            poll(self._result, self._reporter)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=30)
        poll(self._result, self._reporter)
