"""Progress of a run: where it is, for a person (tqdm bars or log lines) and for programs.

The stages call the module functions :func:`phase`, :func:`advance` and :func:`report` from
wherever the work happens (a DoFn, the t-SNE loop). They cost one list check when nobody
listens, which is the case on a remote worker; the launcher, when the work runs in its own
process (Beam's DirectRunner, the PortableRunner with LOOPBACK), registers a
:class:`Reporter` that turns them into

* tqdm bars on a terminal, or one plain line every ``interval`` seconds otherwise (cron, CI,
  a log file), and
* a small JSON document (``progress.json``) rewritten at most every ``doc_interval`` seconds,
  and at least every :data:`HEARTBEAT_S` seconds while the run goes on, so a scheduler or a
  service can show progress without parsing logs, and tell a running version from one whose
  run is over.

All output happens on the reporter's own thread: the hooks only update a few integers under a
lock, and a failed write of the document is logged and ignored, never raised.
When the workers run elsewhere (Dataflow, Flink) the launcher feeds the same figures from the
job's metrics into :meth:`Reporter.merge` instead.
"""
import contextlib
import datetime as _dt
import json
import logging
import sys
import threading
import time

log = logging.getLogger(__name__)

# The order a run goes through; a phase never goes back (a late listing update during
# embedding leaves the run "embedding").
PHASES = ("launch", "listing", "embedding", "layout", "rendering", "publishing", "done",
          "failed")
_RANK = {name: i for i, name in enumerate(PHASES)}
# The steps of a phase, in order; a step never goes back either (unknown steps always count).
STEPS = {"layout": ("reading vectors", "t-SNE", "t-SNE transform", "assignment", "writing")}
# Counts that are bookkeeping for the display, not part of the document.
_INTERNAL = frozenset({"list_failed"})
# The document is rewritten at least this often while the run goes on, even when nothing
# moved: a version whose document is much older belongs to a run that is over
# (gridtsne.versions.is_abandoned).
HEARTBEAT_S = 60.0

_sinks = []  # replaced, never changed in place (see attached)
_sinks_lock = threading.Lock()


def phase(name, step=None):
    """The run entered ``name`` (one of :data:`PHASES`); ``step`` is a detail for people."""
    for sink in _sinks:
        sink.enter(name, step)


def advance(name, n=1):
    """Add ``n`` to the count ``name`` (``listed``, ``embedded``, ``failed``, ``tiles_done`` ...)."""
    for sink in _sinks:
        sink.advance(name, n)


def report(**values):
    """Set counts to absolute values (``tsne_iteration=300, tsne_iterations=750``)."""
    for sink in _sinks:
        sink.report(values)


@contextlib.contextmanager
def attached(sink):
    """Send this process's progress calls to ``sink`` (an object with ``enter``, ``advance``
    and ``report``) while the block runs."""
    global _sinks
    # Copy on write: the hooks iterate over the list without a lock, from any thread.
    with _sinks_lock:
        _sinks = _sinks + [sink]
    try:
        yield sink
    finally:
        with _sinks_lock:
            _sinks = [s for s in _sinks if s is not sink]


def utc_now():
    """ISO-8601 UTC with a ``Z``, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Reporter:
    """The launcher's view of a run's progress; see the module docstring.

    Parameters
    ----------
    version : str or None
        The run's version id, written into the document.
    mode : {"bars", "lines", "off"}
        tqdm bars (a terminal), plain lines every ``interval`` seconds, or nothing.
    stream : file
        Where bars and lines go (stderr by default; the summary goes to stdout).
    interval : float
        Seconds between plain lines.
    write_document : callable or None
        ``write_document(bytes)``; called with the JSON document at most every
        ``doc_interval`` seconds, from the reporter's thread. Exceptions are logged, not raised.
    clock : callable
        Monotonic seconds (tests pass their own).
    phase : str
        Where the run starts: ``listing`` for a whole run, a stage's own phase otherwise.
    """

    def __init__(self, version=None, mode="lines", stream=None, interval=10.0,
                 write_document=None, doc_interval=3.0, clock=time.monotonic, phase="listing"):
        if mode not in ("bars", "lines", "off"):
            raise ValueError(f"mode must be bars, lines or off, got {mode!r}")
        if interval <= 0 or doc_interval <= 0:
            raise ValueError(f"intervals must be positive, got {interval!r}, {doc_interval!r}")
        self.version = version
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.interval = float(interval)
        self.doc_interval = float(doc_interval)
        self._write_document = write_document
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if phase not in _RANK:
            raise ValueError(f"unknown phase {phase!r}; one of {PHASES}")
        self._phase, self._step = phase, None
        self._counts = {"listed": 0, "embedded": 0, "failed": 0}
        self._total_override = None
        self._started_wall = utc_now()
        self._started = clock()
        self._phase_started = self._started
        # When the first and the latest image were embedded: the rate is between the two.
        self._embed_started = self._embed_last = None
        self._embed_base = 0
        self._output_lock = threading.Lock()
        self._changed = True
        self._printed_phase = None
        self._last_line = None
        self._last_write = None
        self._write_failures = 0
        self._bar = None
        self._bar_phase = None
        self._closing = []
        self._printed_text = None
        self._held = False

    # ---- the sink interface (any thread) ------------------------------------------------

    def enter(self, name, step=None):
        if name not in _RANK:
            raise ValueError(f"unknown phase {name!r}; one of {PHASES}")
        with self._lock:
            if _RANK[name] < _RANK[self._phase]:
                return
            if name != self._phase:
                # The phase that ends gets a last line with its final figures, printed by
                # the reporter's thread even when it began and ended between two ticks.
                self._closing.append(self._line(self._clock()))
                self._phase, self._phase_started = name, self._clock()
                self._step = step
                self._changed = True
            elif step is not None and step != self._step and not self._step_before(step):
                if self._step is not None:  # a finished step (t-SNE ...) leaves its line too
                    self._closing.append(self._line(self._clock()))
                self._step = step
                self._changed = True

    def _step_before(self, step):
        """True when ``step`` comes before the current step of the phase (a late update)."""
        order = STEPS.get(self._phase, ())
        return step in order and self._step in order and order.index(step) < order.index(
            self._step)

    def advance(self, name, n=1):
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n
            if name == "embedded":
                self._embed_last = self._clock()
                if self._embed_started is None:
                    self._embed_started = self._embed_last
                    self._embed_base = self._counts[name]
            self._changed = True

    def report(self, values):
        with self._lock:
            self._counts.update(values)
            self._changed = True

    def merge(self, counts, phase_name=None, step=None):
        """Raise counts to at least ``counts`` (figures from the job's metrics) and the phase
        to at least ``phase_name``: in-process hooks and metrics may both report one run."""
        with self._lock:
            for name, value in counts.items():
                if value is not None and value > self._counts.get(name, 0):
                    self._counts[name] = value
                    self._changed = True
                    if name == "embedded":
                        self._embed_last = self._clock()
                        if self._embed_started is None:
                            self._embed_started = self._embed_last
                            self._embed_base = value
        if phase_name:
            self.enter(phase_name, step)

    # ---- figures ---------------------------------------------------------------------------

    def _total(self):
        """Files to embed: listed - unchanged while files are still being classified (the
        classification may run fused with the embedding), the re-index's new + changed once
        the embedding is over. Files that turn out not to be images count as done when
        skipped."""
        if self._total_override is not None:
            return self._total_override
        c = self._counts
        if "to_embed" in c and _RANK[self._phase] > _RANK["embedding"]:
            return c["to_embed"]
        if not c.get("listed") and not c.get("to_embed"):
            return None
        return max(c.get("to_embed", 0), c.get("listed", 0) - c.get("unchanged", 0))

    def _embed_done(self):
        c = self._counts
        return (c.get("embedded", 0) + c.get("skipped", 0)
                + c.get("failed", 0) - c.get("list_failed", 0))

    def _rate(self, now):
        """Images/s between the first and the latest batch embedded (the first batch starts
        the clock, so it does not count); None until two batches arrived."""
        if self._embed_started is None:
            return None
        elapsed = self._embed_last - self._embed_started
        done = self._counts.get("embedded", 0) - self._embed_base
        if elapsed <= 0 or done < 1:
            return None
        return done / elapsed

    def snapshot(self):
        """The progress document as a dict (see docs: the contract with ``gridtsne serve``)."""
        with self._lock:
            return self._snapshot(self._clock())

    def _snapshot(self, now):
        total = self._total()
        rate = self._rate(now)
        eta = None
        if self._phase == "embedding" and rate and total is not None:
            eta = round(max(0, total - self._embed_done()) / rate, 1)
        return {
            "version": self.version,
            "phase": self._phase,
            "counts": {k: v for k, v in self._counts.items() if k not in _INTERNAL},
            "total": total,
            "rate": None if rate is None else round(rate, 3),
            "eta_s": eta,
            "started": self._started_wall,
            "updated": utc_now(),
        }

    def line(self):
        """One plain line saying where the run is."""
        with self._lock:
            return self._line(self._clock())

    def _line(self, now):
        c, phase_name = self._counts, self._phase
        text = f"{phase_name}:"
        if phase_name == "launch":
            text += f" {self._step or 'starting'}"
        elif phase_name == "listing":
            text += f" {c.get('listed', 0):,} files found"
        elif phase_name == "embedding":
            total, done, rate = self._total(), self._embed_done(), self._rate(now)
            text += f" {done:,}/{'?' if total is None else format(total, ',')} images"
            if total:
                text += f" ({100 * min(done, total) // total}%)"
            if rate:
                text += f", {rate:.1f} images/s"
                if total is not None:
                    text += f", ETA {_duration(max(0, total - done) / rate)}"
            if c.get("failed"):
                text += f", {c['failed']} failed"
        elif phase_name == "layout":
            if c.get("tsne_iterations") and self._step in ("t-SNE", None):
                text += (f" t-SNE iteration {c.get('tsne_iteration', 0)}/"
                         f"{c['tsne_iterations']}")
            else:
                text += f" {self._step or 'starting'}"
        elif phase_name == "rendering":
            text += f" {c.get('tiles_done', 0):,}/{c.get('tiles_total', '?')} tiles"
        elif phase_name in ("done", "failed"):
            if c.get("listed") or c.get("embedded"):
                text += f" {c.get('embedded', 0):,} images embedded, {c.get('failed', 0)} failed,"
            if c.get("tiles_done"):
                text += f" {c['tiles_done']:,} tiles,"
            text += f" {_duration(now - self._started)} in all"
        elif phase_name == "publishing":
            text += f" {self._step or 'checking and committing the new version'}"
        elif self._step:
            text += f" {self._step}"
        return f"[{_duration(now - self._started):>6}] {text}"

    # ---- output (the reporter's thread) ---------------------------------------------------

    def start(self):
        """Start the thread that draws, prints and writes; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="gridtsne-progress",
                                            daemon=True)
            self._thread.start()
        return self

    def _loop(self):
        tick = min(0.25, self.interval / 4, self.doc_interval / 4)
        while not self._stop.wait(tick):
            self.tick()

    def write_document_to(self, write_document):
        """Start writing the document through ``write_document(bytes)`` (a launcher that shows
        progress before its flags are checked names the document once they are)."""
        with self._lock:
            self._write_document = write_document
            self._changed = True

    def tick(self, force=False):
        """Draw, print and write whatever is due (called by the thread; ``force`` for the end)."""
        with self._output_lock:
            self._tick(force)

    def hold(self):
        """Draw nothing more until :meth:`finish` (the launcher prints its summary meanwhile);
        the document is still written."""
        with self._output_lock:
            self._held = True
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def _tick(self, force):
        now = self._clock()
        with self._lock:
            snap = self._snapshot(now)
            line = self._line(now)
            changed, self._changed = self._changed, False
            phase_name = self._phase
            bar_figures = self._bar_figures()
            closing, self._closing = self._closing, []
        if self._held and not force:
            with self._lock:
                self._closing[:0] = closing  # kept for the end
        elif self.mode == "bars":
            self._draw_bars(phase_name, bar_figures, closing, line)
        elif self.mode == "lines":
            for text in closing:
                self._print_line(text)
            due = self._last_line is None or now - self._last_line >= self.interval
            if phase_name != self._printed_phase or due:
                self._print_line(line, repeat=due)
                self._last_line, self._printed_phase = now, phase_name
        heartbeat = self._last_write is not None and now - self._last_write >= HEARTBEAT_S
        if self._write_document is not None and (changed or force or heartbeat):
            due = self._last_write is None or now - self._last_write >= self.doc_interval
            if due or force:
                self._write(snap)
                self._last_write = now
            else:
                with self._lock:
                    self._changed = True  # not written yet: try again on a later tick

    def _print_line(self, line, repeat=False):
        """Print ``line`` unless it says what the last one said (the time aside), which a
        phase's closing line often does; ``repeat`` prints it anyway (the periodic line)."""
        text = line.split("] ", 1)[-1]
        if repeat or text != self._printed_text:
            print(line, file=self.stream, flush=True)
            self._printed_text = text

    def _write(self, snap):
        try:
            self._write_document(json.dumps(snap, sort_keys=True).encode())
        except Exception as exc:  # progress must never fail or stop the job
            self._write_failures += 1
            level = logging.WARNING if self._write_failures == 1 else logging.DEBUG
            log.log(level, "could not write the progress document (%s: %s); the run goes on",
                    type(exc).__name__, exc)

    def _bar_figures(self):
        c = self._counts
        if self._phase == "listing":
            return "files found", c.get("listed", 0), None, "file"
        if self._phase == "embedding":
            return "embedding", self._embed_done(), self._total(), "img"
        if self._phase == "layout":
            if c.get("tsne_iterations") and self._step in (None, "t-SNE"):
                return "t-SNE", c.get("tsne_iteration", 0), c["tsne_iterations"], "it"
            return f"layout: {self._step or 'starting'}", 0, None, "step"
        if self._phase == "rendering":
            return "tiles", c.get("tiles_done", 0), c.get("tiles_total"), "tile"
        return self._phase, 0, None, "step"

    def _draw_bars(self, phase_name, figures, closing, line):
        """One live tqdm bar for the current phase; a finished phase leaves a plain line."""
        from tqdm import tqdm

        desc, n, total, unit = figures
        if self._bar is not None and (closing or desc != self._bar_phase):
            self._bar.close()
            self._bar = None
        for text in closing:
            tqdm.write(text, file=self.stream)
        if phase_name in ("done", "failed"):
            tqdm.write(line, file=self.stream)
            return
        if self._bar is None:
            # A step without figures shows its name and the time spent on it.
            fmt = "{desc}: {elapsed}" if unit == "step" else None
            self._bar = tqdm(total=total, initial=n, desc=desc, unit=unit, file=self.stream,
                             leave=False, dynamic_ncols=True, mininterval=0.2, bar_format=fmt)
            self._bar_phase = desc
        if total != self._bar.total:
            self._bar.total = total
        if n > self._bar.n:
            self._bar.update(n - self._bar.n)
        else:
            self._bar.refresh()

    def finish(self, counts=None, total=None, failed=False):
        """End the run: the final counts (e.g. the summary's), phase ``done`` or ``failed``;
        the last line and the last document are written now. Stops the thread."""
        with self._lock:
            if counts:
                self._counts.update(counts)
            if total is not None:
                self._total_override = total
            if self._phase not in ("done", "failed"):
                self._closing.append(self._line(self._clock()))
            self._phase = "failed" if failed else "done"
            self._changed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.tick(force=True)


@contextlib.contextmanager
def reporting(reporter):
    """Run the block with ``reporter`` listening and drawing; on an exception the run is
    marked ``failed`` (and the exception goes on). Call ``reporter.finish`` for success."""
    reporter.start()
    with attached(reporter):
        try:
            yield reporter
        except BaseException:
            reporter.finish(failed=True)
            raise
        finally:
            if reporter._thread is not None:  # the block did not finish it: stop quietly
                reporter.finish()
