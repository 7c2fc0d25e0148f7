"""The rendering stage: vectors + layout in, a zoomable Deep Zoom mosaic and its web page out.

    python -m pipelines.render --vectors s3://maps/run1/vectors \\
        --layout s3://maps/run1/layout.parquet --output s3://maps/run1/site \\
        [--cell 128] [--tile 256] [--format jpeg|webp] [--labels labels.csv] [--projector] \\
        [--osd_url URL-or-local-file] [--render_workers N] \\
        [Beam flags: --runner, --direct_num_workers ...]

Then open ``<output>/index.html``. ``run()`` parses and validates, ``build_pipeline()`` only
wires :class:`transforms.render.RenderMosaic`, which a bigger job can also apply itself.
"""
import argparse
import dataclasses
import json
import logging
import sys

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from gridtsne import storage
from gridtsne.flagfiles import expand_flags_files
from gridtsne.labels import labels_csv
from pipelines import watch
from pipelines.beam_runner import is_direct, new_pipeline
from pipelines.options import (StorageOptions, add_flag, local_abs, refuse_empty_values,
                               stage_help, storage_options_from, wants_help)
from gridtsne.render_inputs import plan_render
from gridtsne.render_outputs import reduction_stages
from gridtsne.site import DEFAULT_OSD_URL, SUMMARY_FILE, is_url
from gridtsne.tile_workers import available_cores
from gridtsne.tiles import FORMATS
from transforms.render import RenderConfig, RenderMosaic

log = logging.getLogger(__name__)


class RenderOptions(PipelineOptions):
    """Flags of the rendering stage; everything else passes to Beam untouched.

    ``--labels`` is taken out of the command line before Beam sees it (Beam's own
    ``--labels`` means Dataflow job labels; give those as ``--label key=value``).
    """

    @classmethod
    def _add_argparse_args(cls, parser):
        defaults = RenderConfig()
        add_flag(parser, "--vectors", default=None, help="the embedding stage's vectors/ folder")
        add_flag(parser, "--layout", default=None, help="the layout stage's layout.parquet")
        add_flag(parser, "--output", default=None,
                 help="folder (any fsspec URL) for index.html, mosaic.dzi, mosaic_files/ ...")
        add_flag(parser, "--cell", type=int, default=defaults.cell, help="grid cell side, px")
        add_flag(parser, "--tile", type=int, default=defaults.tile, help="pyramid tile side, px")
        add_flag(parser, "--format", dest="tile_format", default=defaults.fmt,
                 choices=sorted(FORMATS), help="tile image format")
        add_flag(parser, "--pad", type=int, default=None,
                 help="background px left around each thumbnail (default: cell // 64)")
        add_flag(parser, "--quality", type=int, default=defaults.quality, help="tile quality 1-100")
        add_flag(parser, "--overview", type=int, default=defaults.overview,
                 help="longest side of mosaic.jpg and tsne.jpg, px")
        add_flag(parser, "--title", default=None,
                 help=f"the collection's name, the page's title (default: the input folder's "
                      f"name in gridtsne run, {defaults.title!r} here)")
        add_flag(parser, "--osd_url", default=DEFAULT_OSD_URL,
                 help="OpenSeadragon script: a local openseadragon.min.js, copied next to "
                     "the page with its images/ folder (default: the copy that ships with "
                     "gridtsne), or a URL the page loads it from")
        add_flag(parser, "--projector", action="store_true", default=False,
                 help="also write a TensorBoard Projector folder under <output>/projector")
        add_flag(parser, "--projector_max_points", type=int, default=None,
                 help="at most this many points in the Projector export (default 16,384)")
        add_flag(parser, "--render_workers", type=int, default=None,
                 help="processes drawing tiles in each Beam worker process (default: every "
                      "core on the DirectRunner, 1 on other runners, which spread tiles over "
                      "their workers)")


def split_labels(argv):
    """``(labels CSV or None, argv without --labels)``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--labels", default=None)
    known, rest = parser.parse_known_args(argv)
    return known.labels, rest



@dataclasses.dataclass(frozen=True)
class RenderJob:
    """A validated render: inputs, output and :class:`RenderConfig`."""

    vectors: str
    layout: str
    output: str
    config: RenderConfig


def default_render_workers(options):
    """Tile-drawing processes when ``--render_workers`` is not given.

    The DirectRunner's default ``in_memory`` mode (and ``multi_threading``) runs every bundle
    in this one process: a pool of one process per available core draws its tiles. Everywhere
    else (``multi_processing``, Dataflow, Flink ...) the runner already spreads bundles over
    worker processes, one or more per core: 1, the runner's own thread.
    """
    if is_direct(options) and options.view_as(DirectOptions).direct_running_mode in (
            "in_memory", "multi_threading"):
        return available_cores()
    return 1


def render_config_from_options(options, labels=None, default_title=None):
    """Validate the rendering flags into a :class:`RenderConfig` (reads no input, so a job
    that writes the layout itself can call it before the layout exists). ``default_title``
    names the page when ``--title`` is not given."""
    o = options.view_as(RenderOptions)
    osd_url = o.osd_url if is_url(o.osd_url) else local_abs(o.osd_url)
    # Local --labels and --osd_url files are read now, on this machine (the workers cannot see
    # its disk); remote ones on the workers, so that this machine needs no credentials for them.
    return RenderConfig(cell=o.cell, tile=o.tile, fmt=o.tile_format, pad=o.pad, quality=o.quality,
                        overview=o.overview, osd_url=osd_url, labels=labels_csv(labels),
                        title=o.title or default_title or RenderConfig.title,
                        projector=o.projector,
                        projector_max_points=o.projector_max_points,
                        storage_options=storage_options_from(options),
                        render_workers=(default_render_workers(options)
                                        if o.render_workers is None else o.render_workers))


def job_from_options(options, labels=None):
    """Validate the flags (and the layout, read once here) into a :class:`RenderJob`.

    Reading the layout before building the graph lets a bad table fail before any worker
    starts, and gives the exact number of pyramid levels to build stages for.
    """
    o = options.view_as(RenderOptions)
    for flag in ("vectors", "layout", "output"):
        if not getattr(o, flag):
            raise ValueError(f"--{flag} is required")
    config = render_config_from_options(options, labels)
    layout = local_abs(o.layout)
    plan = plan_render(layout, config.cell, config.tile, config.fmt, config.overview,
                       config.pad, config.storage_options)
    config = dataclasses.replace(config, max_levels=reduction_stages(plan.geometry))
    log.info("rendering %d images on a %dx%d grid: %d levels, %d tiles", plan.images,
             plan.geometry.rows, plan.geometry.cols, plan.geometry.max_level + 1,
             plan.geometry.tile_count())
    return RenderJob(local_abs(o.vectors), layout, local_abs(o.output), config)


def build_pipeline(p, job):
    """Wire the render into ``p``; returns the PCollection holding the summary dict."""
    return p | "RenderMosaic" >> RenderMosaic(job.vectors, job.layout, job.output, job.config)


def run(argv=None):
    """Parse ``argv``, render, print and return the summary (also in ``<output>/site.json``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if wants_help(argv):
        def labels_flag(parser):
            parser.add_argument("--labels", default=None,
                                help="CSV of path,label (or uri,label) shown on the page")

        print(stage_help("gridtsne render", __doc__.split("\n\n")[0], RenderOptions,
                         StorageOptions, watch.WatchOptions, extra=labels_flag))
        return 0
    refuse_empty_values(argv)
    argv = expand_flags_files(argv)
    labels, argv = split_labels(argv)
    options = PipelineOptions(argv)
    job = job_from_options(options, labels)
    p = new_pipeline(options)
    build_pipeline(p, job)
    with watch.watching(options, phase="rendering") as w:
        w.run(p)
    summary = json.loads(storage.read_bytes(storage.url_join(job.output, SUMMARY_FILE),
                                            job.config.storage_options))
    print(f"render: {summary['images']} images on a {summary['grid']['rows']}x"
          f"{summary['grid']['cols']} grid, {summary['tiles_total']} tiles in "
          f"{summary['levels']} levels, {summary['placeholders']} placeholders\n"
          f"  page: {storage.url_join(job.output, 'index.html')}")
    return summary


if __name__ == "__main__":
    run()
