"""The whole job in one Beam pipeline: embed, lay out, render, then commit a new version.

    gridtsne run --input 's3://photos/**' --output s3://maps/family [--labels labels.csv]
                 [--stable] [--full] [Beam flags: --runner, --flags_file configs/... ]

``--input`` (or ``--manifest``) and ``--output`` are required: the offline demo is its own
command, ``gridtsne demo`` (``pipelines/demo.py``), so a forgotten ``--input`` never publishes
demo photos into a real map.

Every run writes into ``<output>/versions/<id>/`` and moves ``<output>/latest.json`` only at
the very end, so a run killed at any moment leaves the previous version complete. Images whose
``uri``, size and modification time are unchanged since that version are not read again.
"""
import dataclasses
import json
import logging
import re
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions
from apache_beam.pvalue import AsList, AsSingleton

from gridtsne import evaluate, faults, input_policy, phases, progress, schema, storage, versions
from gridtsne.flagfiles import expand_flags_files
from gridtsne.labels import LabelsCsv, labels_csv
from gridtsne.layout import LayoutConfig
from gridtsne.site import collection_title
from pipelines import embed as embed_stage
from pipelines import layout as layout_stage
from pipelines import render as render_stage
from pipelines import watch
from pipelines.beam_runner import is_direct, new_pipeline
from pipelines.options import (StorageOptions, add_flag, refuse_empty_values, stage_help,
                               wants_help)
from transforms import embed_counters as C
from transforms.embed import EmbedImages
from transforms.evaluation import StartEvaluationFn, finish_evaluation
from transforms.layout import LayOutVectors, LayoutJob
from transforms.listing import ListFiles
from transforms.phase_marks import MarkTimes
from transforms.progress_metrics import counter
from transforms.reindex import CARRIED, FATES, TO_EMBED, ClassifyFiles, CountFates, ReadPreviousRows
from transforms.render import RenderConfig, RenderMosaic
from transforms.write import WriteTable

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
SITE_DIR = "site"
VERSION_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


class RunOptions(PipelineOptions):
    """Flags of the whole job (the stages' own flags come from their option classes)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flag(parser, "--stable", action="store_true", default=False,
                 help="keep the previous map's t-SNE positions and place only new images")
        add_flag(parser, "--refit_fraction", type=float, default=0.2,
                 help="with --stable, refit t-SNE fully when more than this fraction is new")
        add_flag(parser, "--full", action="store_true", default=False,
                 help="embed every image again instead of re-using the previous version")
        add_flag(parser, "--keep_versions", type=int, default=3,
                 help="versions kept under <output>/versions after a successful run")
        add_flag(parser, "--quality_items", type=int, default=5000,
                 help="DPQ16 is computed on a seeded sample of at most this many images")
        add_flag(parser, "--version_id", default=None,
                 help="id of the version this run writes (default: a new timestamped id); "
                      "lets a caller such as `gridtsne serve` know where it goes; an id is "
                      "written once (an existing version's id is refused)")


@dataclasses.dataclass(frozen=True)
class RunJob:
    """A validated run: where it writes and the configuration of each stage."""

    output: str
    version: str
    embed: embed_stage.EmbedJobConfig
    layout: LayoutConfig
    render: RenderConfig
    labels: LabelsCsv = None
    stable: bool = False
    refit_fraction: float = 0.2
    full: bool = False
    keep_versions: int = 3
    quality_items: int = 5000
    # Epoch seconds the launching process started (the launch phase), when known.
    launched_at: float = None
    # The stages run in the launching process (DirectRunner): evaluate beside the render.
    in_process: bool = False

    @property
    def storage_options(self):
        """Per-protocol fsspec options of every read and write (the same in every stage)."""
        return self.embed.embed.storage_options

    @property
    def version_url(self):
        return versions.version_url(self.output, self.version)

    @property
    def vectors_url(self):
        return storage.url_join(self.version_url, schema.VECTORS_DIR)

    @property
    def errors_url(self):
        return storage.url_join(self.version_url, schema.ERRORS_DIR)

    @property
    def layout_url(self):
        return storage.url_join(self.version_url, schema.LAYOUT_FILE)

    @property
    def site_url(self):
        return storage.url_join(self.version_url, SITE_DIR)



def check_inputs(argv):
    """Fail, naming the flags, when ``argv`` gives no ``--input``/``--manifest`` or no
    ``--output``: nothing is read or written then."""
    def given(*flags):
        return any(a in flags or a.startswith(tuple(f + "=" for f in flags)) for a in argv)

    if not given("--input", "--manifest"):
        raise ValueError("gridtsne run needs at least one --input URL (or --manifest URL) of "
                         "the images to map; for the offline demo run `gridtsne demo`")
    if not given("--output"):
        raise ValueError("gridtsne run needs --output URL, the map's root")


def version_of(options, version=None):
    """The id of the version this run writes: ``version``, ``--version_id`` or a new one."""
    version = version or options.view_as(RunOptions).version_id or versions.new_version_id()
    if not VERSION_ID.fullmatch(version):
        raise ValueError(f"--version_id must match [0-9A-Za-z_-]{{1,64}}, got {version!r}")
    return version


def job_from_options(options, labels=None, version=None):
    """Validate every flag into a :class:`RunJob` before any worker starts."""
    o = options.view_as(RunOptions)
    if o.keep_versions < 1:
        raise ValueError(f"--keep_versions must be at least 1, got {o.keep_versions!r}")
    if not 0 <= o.refit_fraction <= 1:
        raise ValueError(f"--refit_fraction must be in [0, 1], got {o.refit_fraction!r}")
    version = version_of(options, version)
    base = embed_stage.config_from_options(options)
    output = base.output
    embed = dataclasses.replace(base, output=versions.version_url(output, version),
                                run_id=version, vectors_prefix=None, errors_prefix=None)
    layout = layout_stage.layout_config_from_options(options)
    if labels is not None and embed.embed.input_policy is not None:
        try:
            embed.embed.input_policy.check(labels)
        except input_policy.Refused as err:
            raise ValueError(f"--labels {err}: refused by --allow_input") from None
    labels = labels_csv(labels)  # a local file is read here: workers cannot see this disk
    render = render_stage.render_config_from_options(
        options, labels, default_title=collection_title(base.inputs + base.manifests))
    return RunJob(output=output, version=version, embed=embed, layout=layout, render=render,
                  labels=labels, stable=o.stable, refit_fraction=o.refit_fraction, full=o.full,
                  keep_versions=o.keep_versions, quality_items=o.quality_items,
                  in_process=is_direct(options))


def _evaluate(layout_summary, job):
    """DPQ16 and neighbour label agreement of the new layout (on a sample when large)."""
    # A labels file that matches nothing is reported in the summary, never a reason to
    # withhold a valid version.
    result = evaluate.evaluate_layout(job.layout_url, job.vectors_url, job.labels,
                                      max_items=job.quality_items, seed=job.layout.seed,
                                      labels_required=False,
                                      storage_options=job.storage_options)
    return {k: result[k] for k in ("dpq", "dpq_items", "p", "label_agreement", "labelled",
                                   "label_problem") if k in result}


def _root_page(version):
    target = f"{versions.VERSIONS_DIR}/{version}/{SITE_DIR}/index.html"
    return (f'<!doctype html><meta charset="utf-8"><title>gridtsne</title>'
            f'<meta http-equiv="refresh" content="0; url={target}">'
            f'<a href="{target}">the current map</a>').encode()


def commit_version(_, job, render_summary, layout_summary, evaluation, fates, failed,
                   errors_written=(), marks=None):
    """Check the new version, write its summary, then move ``latest.json`` to it.

    Runs only once ``errors/`` is written (``errors_written``, its files, is a side input).
    Raises (and so leaves the pointer where it was) when the vectors table does not hold
    exactly the new, changed and unchanged images, or ``errors/`` not exactly the failures: a
    version that lost rows is never published. ``evaluation`` is
    :func:`transforms.evaluation.timed`'s result; ``marks`` (``{mark: (first, last)}``) and
    the steps' own timings become the summary's phase ``timings`` (:mod:`gridtsne.phases`).
    The pointer moves and the version gets its commit record in
    :func:`gridtsne.versions.publish`; then old and abandoned versions are pruned.
    """
    faults.point("rendered")
    publish_start = phases.now()
    counter("gridtsne.run", "publishing_started").inc()
    quality = (evaluation or {}).get("quality", evaluation)
    rows = layout_summary["input_images"]
    expected = fates["new"] + fates["changed"] + fates["unchanged"]
    if rows != expected:
        raise RuntimeError(f"version {job.version}: {rows} rows in vectors/, but new + changed "
                           f"+ unchanged = {expected}: not publishing it")
    opts = job.storage_options
    error_rows = storage.count_parquet_rows(job.errors_url, opts)
    if error_rows != failed:
        raise RuntimeError(f"version {job.version}: {error_rows} rows in errors/ "
                           f"({len(errors_written)} files), but {failed} images failed: not "
                           f"publishing it")
    summary = {
        "version": job.version,
        "counts": {**fates, "failed": failed},
        "images": rows,
        "laid_out": layout_summary["images"],
        "grid": {"rows": layout_summary["rows"], "cols": layout_summary["cols"]},
        "layout_method": layout_summary["method"],
        "positions": layout_summary.get("positions"),
        "quality": quality,
        "timings": {"layout": layout_summary.get("timings")},
        "tiles": render_summary.get("tiles_total"),
        "placeholders": render_summary.get("placeholders"),
        "site": f"{versions.VERSIONS_DIR}/{job.version}/{SITE_DIR}/index.html",
    }
    spans = phases.job_spans(marks or {}, layout_summary, (evaluation or {}).get("span"),
                             (publish_start, phases.now()), job.launched_at)
    summary["timings"].update(phases.breakdown(spans))
    storage.write_bytes(storage.url_join(job.version_url, SUMMARY_FILE),
                        json.dumps(summary, indent=2, sort_keys=True, default=str).encode(), opts)
    faults.point("publishing")
    versions.publish(job.output, job.version, summary, opts)
    storage.write_bytes(storage.url_join(job.output, "index.html"), _root_page(job.version), opts)
    versions.prune_versions(job.output, job.keep_versions, opts)
    return summary


def build_pipeline(p, job):
    """Wire the whole job into ``p``; returns the PCollection of the committed summary."""
    emb, opts = job.embed, job.storage_options
    lister = ListFiles(emb.inputs, emb.manifests, opts, emb.embed.input_policy)
    files, list_errors = p | "ListFiles" >> lister
    previous = p | "ReadPreviousVersion" >> ReadPreviousRows(job.output, emb.metadata, job.full,
                                                             opts)
    classified = files | "ClassifyFiles" >> ClassifyFiles(previous)
    new_rows, embed_errors = classified[TO_EMBED] | "EmbedImages" >> EmbedImages(emb.embed)
    rows = (new_rows, classified[CARRIED]) | "MergeRows" >> beam.Flatten()
    errors = (list_errors, embed_errors) | "FlattenErrors" >> beam.Flatten()
    written = rows | "WriteVectors" >> WriteTable(emb.vectors_prefix, emb.vectors_schema, opts)
    errors_written = errors | "WriteErrors" >> WriteTable(emb.errors_prefix,
                                                          schema.ERRORS_SCHEMA, opts)
    fates = classified[FATES] | "CountFates" >> CountFates(new_rows)
    failed = errors | "CountFailed" >> beam.combiners.Count.Globally()

    layout_job = LayoutJob(job.vectors_url, job.version_url, job.layout,
                           stable_from=job.output if job.stable else None,
                           refit_fraction=job.refit_fraction, storage_options=opts)
    laid_out = written | "LayOutVectors" >> LayOutVectors(layout_job)
    # The evaluation starts as soon as the layout exists and runs beside the render.
    evaluating = laid_out | "StartEvaluation" >> beam.ParDo(
        StartEvaluationFn(_evaluation_of(job), job.version, job.in_process))
    rendered = evaluating | "RenderMosaic" >> RenderMosaic(job.vectors_url, job.layout_url,
                                                           job.site_url, job.render)
    quality = evaluating | "EvaluateLayout" >> beam.Map(
        finish_evaluation, _evaluation_of(job), job.version, after=AsSingleton(rendered))
    marks = phase_marks(p, listing=lister.started, files=files, embedded=new_rows,
                        written=written, rendered=rendered)
    return (p
            | "StartCommit" >> beam.Create([None])
            | "CommitVersion" >> beam.Map(
                commit_version, job, AsSingleton(rendered), AsSingleton(laid_out),
                AsSingleton(quality), AsSingleton(fates), AsSingleton(failed),
                AsList(errors_written), marks=AsSingleton(marks)))


def _evaluation_of(job):
    return lambda layout_summary: _evaluate(layout_summary, job)


def phase_marks(p, listing, files, embedded, written, rendered):
    """One ``{mark: (first, last)}`` dict: when the job started (the first listing call, or
    any earlier stage) and when the listed files, embedded rows, written vector parts and the
    render's summary passed (see :func:`gridtsne.phases.job_spans`)."""
    start = p | "StartJob" >> beam.Create([None])
    marks = {phases.JOB_START: (start, *listing), phases.LISTED: files, phases.EMBEDDED: embedded,
             phases.VECTORS_WRITTEN: written, phases.RENDERED: rendered}
    return marks | "MarkTimes" >> MarkTimes()


def _fmt(value, spec=".3f"):
    return "n/a" if value is None else format(value, spec)


def _time_line(timings):
    """``  time: ...`` with the longest phases and the idle share, or "" without timings."""
    phases_ = timings.get("phases") or {}
    wall = timings.get("wall_s")
    if not phases_ or not wall:
        return ""
    top = sorted(phases_.items(), key=lambda kv: -kv[1]["seconds"])[:4]
    parts = ", ".join(f"{name} {p['seconds']:.1f} s" for name, p in top)
    return (f"  time: {wall:.1f} s from launch to publish ({parts}; "
            f"{timings.get('outside_phases_s', 0) / wall:.0%} outside the named phases)\n")


def report(output, version, counters=None, storage_options=None):
    """Print the committed version's summary; returns it (raises if it was not committed).

    ``counters`` are this run's Beam counters of the embedding stage: how many images were
    actually read and embedded (unchanged ones are neither). None (a runner that reports no
    metrics): the images embedded are counted from the version's tables instead (new +
    changed rows, which the commit checked), and the bytes read are said to be unknown.
    """
    pointer = versions.read_pointer(output, storage_options)
    if pointer is None or pointer["version"] != version:
        raise RuntimeError(f"the run finished but {output}/latest.json does not point to "
                           f"version {version}: nothing was published")
    s = pointer["summary"]
    c = s["counts"]
    q = s.get("quality") or {}
    mode = (s.get("positions") or {}).get("mode", "full t-SNE fit")
    unscored = f" (labels not scored: {q['label_problem']})" if q.get("label_problem") else ""
    page = storage.url_join(output, s["site"])
    if counters is None:
        s = {**s, "embedded": c["new"] + c["changed"], "bytes_read": None}
        read = (f"  this run embedded {s['embedded']} images (new + changed rows; bytes read "
                f"unknown: the runner reported no metrics)\n")
    else:
        s = {**s, "embedded": counters.get(C.VECTORS, 0),
             "bytes_read": counters.get(C.BYTES_READ, 0)}
        read = (f"  this run read and embedded {s['embedded']} images "
                f"({s['bytes_read']:,} bytes)\n")
    print(f"gridtsne: version {version} published\n"
          f"{read}"
          f"  images: {s['images']} in the map ({c['new']} new, {c['changed']} changed, "
          f"{c['unchanged']} unchanged, {c['removed']} removed, {c['failed']} failed)\n"
          f"  layout: {s['grid']['rows']}x{s['grid']['cols']} grid, {s['layout_method']} "
          f"assignment, positions: {mode}\n"
          f"  quality: DPQ16 {_fmt(q.get('dpq'))} (on {q.get('dpq_items')} images), "
          f"neighbour label agreement {_fmt(q.get('label_agreement'))}{unscored}\n"
          f"{_time_line(s.get('timings') or {})}"
          f"  page: {page}")
    return s


def run(argv=None):
    """Parse ``argv``, run the job, print and return the summary."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if wants_help(argv):
        print(run_help())
        return 0
    refuse_empty_values(argv)
    argv = expand_flags_files(argv)
    refuse_empty_values(argv)
    check_inputs(argv)
    labels, argv = render_stage.split_labels(argv)
    options = PipelineOptions(argv)
    version = version_of(options)
    dry_run = options.view_as(TestOptions).dry_run
    # Progress shows from here: checking the model and building the graph take seconds.
    with watch.watching(options, version, phase="launch") as w:
        progress.phase("launch", "checking the model and building the job")
        job = dataclasses.replace(job_from_options(options, labels, version),
                                  launched_at=phases.process_started_at())
        if not dry_run:
            # Before anything is written: re-using an id would overwrite that version in place.
            versions.check_unused(job.output, job.version, job.storage_options)
        # Only a valid job writes anything under --output.
        w.write_document_to(versions.progress_url(job.output, job.version), job.storage_options)
        p = new_pipeline(options)
        build_pipeline(p, job)
        if dry_run and job.in_process:
            # Beam's in-process runner knows no dry run: it would run (and publish) the job.
            # The graph still goes through Beam's translation, as a submission's does.
            p.to_runner_api()
            print(f"dry run: the job graph for version {job.version} was built and validated; "
                  f"nothing was run")
            return None
        progress.phase("listing")
        result = w.run(p)
        if dry_run:
            print(f"dry run: the job graph for version {job.version} was built and validated; "
                  f"nothing was submitted")
            return None
        summary = report(job.output, job.version, embed_stage.counters(result),
                         job.storage_options)
        w.finish(counts=final_counts(summary))
    return summary


def run_help(prog="gridtsne run", description=None):
    """The flags of the whole job: its own and every stage's (Beam's are Beam's)."""
    from pipelines.watch import WatchOptions

    def labels(parser):
        parser.add_argument("--labels", default=None,
                            help="CSV of path,label (or uri,label): shown on the page and "
                                 "scored by neighbour label agreement")

    return stage_help(prog, description or __doc__.split("\n\n")[0], RunOptions,
                      embed_stage.EmbedOptions, layout_stage.LayoutOptions,
                      render_stage.RenderOptions, StorageOptions, WatchOptions, extra=labels)


def final_counts(summary):
    """The progress document's last counts: the published summary's."""
    return {**summary["counts"], "embedded": summary["embedded"], "images": summary["images"],
            "tiles_done": summary.get("tiles"), "tiles_total": summary.get("tiles")}


if __name__ == "__main__":
    run()
