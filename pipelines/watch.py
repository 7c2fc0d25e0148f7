"""How a launcher shows a job while it runs: the ``--verbose`` and ``--progress`` flags, the log
level, and a :class:`gridtsne.progress.Reporter` fed by the stages and the job's metrics.

    with watching(options, version=job.version, document_url=...) as watch:
        result = watch.run(p)
        summary = ...
        watch.finish(counts=summary_counts)

Beam's own INFO lines are hidden unless ``--verbose``; progress goes to stderr (tqdm bars on a
terminal, one plain line every ``--progress_interval`` seconds otherwise), the summary stays
on stdout.
"""
import contextlib
import logging
import sys

from apache_beam.options.pipeline_options import PipelineOptions, TestOptions
from tqdm.contrib.logging import logging_redirect_tqdm

from gridtsne import progress, versions
from pipelines.options import add_flag
from transforms.progress_metrics import MetricsPoller

log = logging.getLogger(__name__)

MODES = ("auto", "bars", "lines", "off")
# Seconds between two writes of the progress document ("at most every few seconds").
DOCUMENT_INTERVAL = 3.0
# Seconds between two reads of the job's metrics while waiting (Dataflow and Flink).
METRICS_INTERVAL = 5.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class WatchOptions(PipelineOptions):
    """How the launcher shows the job's progress and logs."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flag(parser, "--verbose", action="store_true", default=False,
                 help="show Beam's and gridtsne's INFO log lines (hidden by default)")
        add_flag(parser, "--progress", default="auto", choices=MODES,
                 help="auto: tqdm bars on a terminal, plain lines otherwise; bars; lines; off")
        add_flag(parser, "--progress_interval", type=float, default=10.0,
                 help="seconds between two plain progress lines (when not on a terminal)")


def configure_logging(verbose):
    """INFO for everything with ``verbose``, else warnings only.

    A program that set up logging itself (a test runner, a service) keeps its handlers; only
    a bare interpreter gets one, as ``python -m pipelines.run`` and ``gridtsne`` are.
    """
    level = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=LOG_FORMAT)
    elif verbose:
        root.setLevel(level)
    # Beam logs a failing DoFn's traceback before re-raising it; the launcher reports the
    # error once, as one line (gridtsne.cli), unless --verbose asks for the traceback.
    logging.getLogger("apache_beam.runners.common").setLevel(
        logging.NOTSET if verbose else logging.CRITICAL)


def resolve_mode(choice, stream):
    """``bars`` or ``lines`` for ``auto`` (a terminal or not); other choices unchanged."""
    if choice not in MODES:
        raise ValueError(f"--progress must be one of {MODES}, got {choice!r}")
    if choice != "auto":
        return choice
    isatty = getattr(stream, "isatty", None)
    return "bars" if isatty is not None and isatty() else "lines"


def document_writer(url, storage_options=None):
    """``write(bytes)`` replacing the progress document at ``url`` in one step."""
    return lambda data: versions.replace_file(url, data, storage_options)


class Watch:
    """A running job's reporter and how the launcher waits for the job (see the module)."""

    def __init__(self, reporter, dry_run=False):
        self.reporter = reporter
        self.dry_run = dry_run

    def write_document_to(self, url, storage_options=None):
        """Write the progress document to ``url`` from now on (not in a dry run)."""
        if not self.dry_run:
            self.reporter.write_document_to(document_writer(url, storage_options))

    def run(self, p):
        """``p.run()`` and wait for the end, reading the job's metrics meanwhile.

        The DirectRunner returns from ``p.run()`` when the job is done (its stages report
        to this process directly); the PortableRunner, Dataflow and Flink return at
        submission, and their metrics are merged in while waiting.
        """
        result = p.run()
        poller = MetricsPoller(result, self.reporter, METRICS_INTERVAL).start()
        try:
            result.wait_until_finish()
        finally:
            poller.stop()
        self.reporter.tick()  # the last phases' lines before the launcher prints its summary
        self.reporter.hold()
        return result

    def finish(self, counts=None, total=None):
        """The run succeeded: ``counts`` (the summary's) are the final figures."""
        self.reporter.finish(counts=counts, total=total)


@contextlib.contextmanager
def watching(options, version=None, document_url=None, stream=None, phase="listing",
             storage_options=None):
    """Configure logging and show the progress of the job run inside the block.

    ``document_url``, if given, receives the progress document (``progress.json``) at most
    every :data:`DOCUMENT_INTERVAL` seconds and at the end, written with ``storage_options``
    (the job's per-protocol fsspec options). A dry run shows and writes
    nothing. An exception in the block marks the run ``failed`` and goes on. ``phase`` is
    where the job starts (a stage run alone starts at its own).
    """
    o = options.view_as(WatchOptions)
    configure_logging(o.verbose)
    stream = sys.stderr if stream is None else stream
    dry_run = options.view_as(TestOptions).dry_run
    mode = "off" if dry_run else resolve_mode(o.progress, stream)
    if o.progress_interval <= 0:
        raise ValueError(f"--progress_interval must be positive, got {o.progress_interval!r}")
    writer = document_writer(document_url, storage_options) if document_url and not dry_run else None
    reporter = progress.Reporter(version=version, mode=mode, stream=stream,
                                 interval=o.progress_interval, write_document=writer,
                                 doc_interval=DOCUMENT_INTERVAL, phase=phase)
    # Under bars, log lines (warnings; everything with --verbose) go through tqdm, so that
    # they print above the bar instead of through it.
    redirect = logging_redirect_tqdm() if mode == "bars" else contextlib.nullcontext()
    with redirect, progress.reporting(reporter):
        yield Watch(reporter, dry_run)
