"""The layout stage: a ``vectors/`` table in, ``layout.parquet`` and ``layout.json`` out.

    python -m pipelines.layout --vectors s3://maps/run1/vectors --output s3://maps/run1 \\
        [--grid 32x32 | --grid auto] [--assign exact|scalable|auto] [--perplexity 30] \\
        [--seed 0] [--sample] [--refine swaps|none] [Beam flags: --runner ...]

Three named steps, each with its own flags: t-SNE (``--perplexity``, ``--tsne_*``, ``--n_iter``),
grid assignment (``--assign``) and refinement (``--refine``, ``--refine_passes``).

The stage runs on one worker (see ``transforms/layout.py``); ``run()`` validates the flags
before anything starts and ``build_pipeline()`` only wires the transform.
"""
import json
import logging
import sys

from apache_beam.options.pipeline_options import PipelineOptions

from gridtsne import storage
from gridtsne.assign import METHODS
from gridtsne.flagfiles import expand_flags_files
from pipelines import watch
from pipelines.beam_runner import new_pipeline
from pipelines.options import (StorageOptions, add_flag, local_abs, refuse_empty_values,
                               stage_help, storage_options_from, wants_help)
from gridtsne.layout import LAYOUT_SUMMARY_FILE, LayoutConfig
from gridtsne.refine import DISTANCES, REFINEMENTS
from gridtsne.tsne import METRICS
from transforms.layout import LayOutVectors, LayoutJob

log = logging.getLogger(__name__)


def _auto_or_int(text):
    """``auto`` stays ``auto``; ``none`` means 0 (never); anything else must be an integer."""
    if text == "auto":
        return "auto"
    if str(text).lower() == "none":
        return 0
    return int(text)


class LayoutOptions(PipelineOptions):
    """Flags of the layout stage (defaults None: :class:`LayoutConfig` holds the real ones)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        d = LayoutConfig()
        add_flag(parser, "--vectors", default=None,
                 help="URL of the vectors table (a folder of Parquet files or one file)")
        add_flag(parser, "--output", default=None,
                 help="URL under which layout.parquet and layout.json are written")
        add_flag(parser, "--grid", default=None,
                 help=f"ROWSxCOLS, or auto: the smallest near-square grid (default {d.grid})")
        add_flag(parser, "--assign", default=None, choices=METHODS,
                 help=f"grid assignment: exact, scalable or auto (default {d.assign})")
        add_flag(parser, "--perplexity", type=float, default=None,
                 help=f"t-SNE perplexity (default {d.perplexity})")
        add_flag(parser, "--seed", type=int, default=None,
                 help=f"random seed; the same seed gives the same layout (default {d.seed})")
        add_flag(parser, "--sample", action="store_true", default=None,
                 help="lay out a random sample when there are more images than grid cells")
        add_flag(parser, "--sample_size", type=int, default=None,
                 help="lay out a random sample of at most this many images")
        add_flag(parser, "--pca_dims", type=_auto_or_int, default=None,
                 help="reduce vectors to this many PCA dimensions first: a number, none, or auto "
                     "(200 above 200,000 images)")
        add_flag(parser, "--fit_sample", type=_auto_or_int, default=None,
                 help="fit t-SNE on this many images and place the rest with transform: a number, "
                  "none/0/auto (all images: transform is faster but gives clearly worse maps)")
        add_flag(parser, "--tsne_gradient", default=None, choices=("auto", "fft", "bh"),
                 help="t-SNE gradients: auto (FFT from 10,000 images on, Barnes-Hut below), "
                      "fft, bh")
        add_flag(parser, "--n_iter", type=int, default=None,
                 help=f"t-SNE iterations after early exaggeration (default {d.n_iter})")
        add_flag(parser, "--early_exaggeration_iter", type=int, default=None,
                 help=f"t-SNE early exaggeration iterations (default {d.early_exaggeration_iter})")
        add_flag(parser, "--tsne_threads", type=int, default=None,
                 help="threads for t-SNE (default -1: all cores)")
        add_flag(parser, "--tsne_metric", default=None, choices=METRICS,
                 help=f"distance of the t-SNE affinities (default {d.metric})")
        add_flag(parser, "--refine", default=None, choices=REFINEMENTS,
                 help=f"refinement of the grid in the full vector space: swaps (greedy swaps of "
                      f"neighbouring cells) or none (default {d.refine})")
        add_flag(parser, "--refine_passes", type=int, default=None,
                 help=f"sweeps of the refinement (default {d.refine_passes})")
        add_flag(parser, "--refine_distance", default=None, choices=DISTANCES,
                 help=f"pair cost of the refinement: gauss (saturating squared distance: near "
                      f"pairs count) or euclidean (default {d.refine_distance})")
        add_flag(parser, "--assign_window", type=int, default=None,
                 help=f"side of the scalable assignment's exactly re-solved windows "
                      f"(default {d.window}; larger: closer to exact, slower)")


def layout_config_from_options(options):
    """The :class:`LayoutConfig` the layout flags describe (unset flags keep its defaults).

    A bigger job (``pipelines/run.py``) calls this so that every layout flag reaches it.
    """
    o = options.view_as(LayoutOptions)
    fields = {"grid": o.grid, "assign": o.assign, "perplexity": o.perplexity, "seed": o.seed,
              "sample": o.sample, "sample_size": o.sample_size, "pca_dims": o.pca_dims,
              "fit_sample": o.fit_sample, "gradient": o.tsne_gradient, "n_iter": o.n_iter,
              "early_exaggeration_iter": o.early_exaggeration_iter, "n_jobs": o.tsne_threads,
              "metric": o.tsne_metric, "refine": o.refine, "refine_passes": o.refine_passes,
              "refine_distance": o.refine_distance, "window": o.assign_window}
    return LayoutConfig(**{k: v for k, v in fields.items() if v is not None})


def config_from_options(options):
    """Validate the flags into a :class:`LayoutJob` (ValueError on anything wrong)."""
    o = options.view_as(LayoutOptions)
    if not o.vectors:
        raise ValueError("--vectors is required (the URL of a vectors table)")
    if not o.output:
        raise ValueError("--output is required")
    config = layout_config_from_options(options)
    vectors, output = o.vectors, o.output
    vectors, output = local_abs(vectors), local_abs(output)
    return LayoutJob(vectors, output, config, storage_options=storage_options_from(options))


def build_pipeline(p, job, upstream=None):
    """Wire the layout stage into ``p`` (after ``upstream`` when given); returns the summary
    PCollection (one dict)."""
    source = p if upstream is None else upstream
    return source | "LayOutVectors" >> LayOutVectors(job)


def run(argv=None):
    """Parse ``argv``, run the stage, print and return the summary dict."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if wants_help(argv):
        from pipelines.watch import WatchOptions

        print(stage_help("gridtsne layout", __doc__.split("\n\n")[0], LayoutOptions,
                         StorageOptions, WatchOptions))
        return 0
    refuse_empty_values(argv)
    argv = expand_flags_files(argv)
    options = PipelineOptions(argv)
    job = config_from_options(options)
    p = new_pipeline(options)
    build_pipeline(p, job)
    with watch.watching(options, phase="layout") as w:
        w.run(p)
    summary = json.loads(storage.read_bytes(storage.url_join(job.output_url, LAYOUT_SUMMARY_FILE),
                                            job.storage_options))
    t = summary["timings"]
    print(f"layout: {summary['images']} images on a {summary['rows']}x{summary['cols']} grid "
          f"({summary['holes']} empty cells, {summary['method']} assignment) in "
          f"{t['total_s']:.1f} s (t-SNE {t['tsne_s']:.1f} s, assignment {t['assign_s']:.1f} s, "
          f"refinement {t['refine_s']:.1f} s) "
          f"-> {storage.url_join(job.output_url, 'layout.parquet')}")
    return summary


if __name__ == "__main__":
    run()
