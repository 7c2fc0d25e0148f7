"""Beam wrapper of the layout stage: :class:`LayOutVectors` runs ``run_layout`` on one worker.

The stage is inherently single-worker (t-SNE and the assignment see all points at once), so
the transform starts from a single element; given an upstream PCollection (e.g. the files the
embedding stage wrote) it first waits for all of it, so both stages fit in one Beam job.
"""
import dataclasses
import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from gridtsne import progress, schema, storage, versions
from gridtsne.layout import LayoutConfig, run_layout
from gridtsne.stable import stable_positions
from transforms import progress_metrics

log = logging.getLogger(__name__)

NAMESPACE = "gridtsne.layout"


@dataclasses.dataclass(frozen=True)
class LayoutJob:
    """What one layout run reads and writes: a vectors table URL, an output URL and settings.

    ``stable_from``, when set, is an output root whose ``latest.json`` names the previous
    version: its layout's positions are kept (``--stable``, see :mod:`gridtsne.stable`) unless
    more than ``refit_fraction`` of the images are new. It is resolved on the worker at run
    time, so the launcher reads nothing. ``storage_options``: per-protocol fsspec options for
    every URL (see :func:`gridtsne.storage.filesystem`), carried to the worker.
    """

    vectors_url: str
    output_url: str
    config: LayoutConfig = LayoutConfig()
    stable_from: str = None
    refit_fraction: float = 0.2
    storage_options: dict = None

    def __post_init__(self):
        for name in ("vectors_url", "output_url"):
            value = getattr(self, name)
            if not value or not isinstance(value, str):
                raise ValueError(f"{name} must be a non-empty URL, got {value!r}")
        if not isinstance(self.config, LayoutConfig):
            raise ValueError(f"config must be a LayoutConfig, got {self.config!r}")


class RunLayoutFn(beam.DoFn):
    """Runs :func:`gridtsne.layout.run_layout` once per input element; emits its summary dict."""

    def __init__(self, job):
        self._job = job
        self._images = Metrics.counter(NAMESPACE, "images_laid_out")
        self._holes = Metrics.counter(NAMESPACE, "empty_cells")
        self._started = progress_metrics.counter(NAMESPACE, "layout_started")

    def process(self, element, upstream_count=None):
        if upstream_count is not None:
            log.info("layout starts after %d upstream elements", upstream_count)
        job = self._job
        opts = job.storage_options
        self._started.inc()
        positions = None
        if job.stable_from:
            previous = versions.current_version_url(job.stable_from, opts)
            previous_layout = previous and storage.url_join(previous, schema.LAYOUT_FILE)
            positions = stable_positions(previous_layout, job.refit_fraction,
                                         seed=job.config.seed, n_jobs=job.config.n_jobs,
                                         storage_options=opts)
        # t-SNE iterations and the assignment step, as counters for runners that report them.
        with progress.attached(progress_metrics.CounterSink()):
            summary = run_layout(job.vectors_url, job.output_url, job.config,
                                 positions=positions, storage_options=opts)
        self._images.inc(summary["images"])
        self._holes.inc(summary["holes"])
        yield summary


class LayOutVectors(beam.PTransform):
    """Lay out the vectors table of ``job`` on exactly one worker.

    Apply it to the pipeline (``p | LayOutVectors(job)``) to run it alone, or to any
    PCollection (``written_vectors | LayOutVectors(job)``) to run it only once that
    PCollection is complete, e.g. after the embedding stage wrote ``vectors/``. The output
    is a PCollection with one element: the summary dict also written to ``layout.json``.
    """

    def __init__(self, job, label=None):
        super().__init__(label)
        if not isinstance(job, LayoutJob):
            raise ValueError(f"LayOutVectors needs a LayoutJob, got {job!r}")
        self._job = job

    def expand(self, pvalue):
        start = pvalue.pipeline | "Start" >> beam.Create([None])
        if isinstance(pvalue, beam.pvalue.PBegin):
            return start | "RunLayout" >> beam.ParDo(RunLayoutFn(self._job))
        # Counting collapses the upstream to one element, so the side input is tiny and the
        # layout cannot start before every upstream element exists.
        done = pvalue | "WaitForUpstream" >> beam.combiners.Count.Globally()
        return start | "RunLayout" >> beam.ParDo(RunLayoutFn(self._job),
                                                 upstream_count=beam.pvalue.AsSingleton(done))
