"""``gridtsne export-projector``: a TensorBoard Projector folder of a vectors table.

    python -m pipelines.projector --vectors s3://maps/run1/vectors --output ./projector \\
        [--labels labels.csv] [--max_points 16384] [--sprite_cell 64] [--seed 0]
    tensorboard --logdir ./projector     # then open the Projector tab

No Beam job: one process streams the table once (its memory is bounded by the sample the
sprite can show: at most 16,384 points at 64 px). ``gridtsne render --projector`` writes the
same folder as ``<site>/projector`` inside the render job.
"""
import argparse
import json
import logging
import sys

from gridtsne.projector import DEFAULT_SPRITE_CELL, export_projector
from pipelines.options import add_storage_args, storage_options_from_args


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="gridtsne export-projector",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", required=True, help="URL of the vectors table (folder)")
    parser.add_argument("--output", required=True,
                        help="folder to write; tensorboard --logdir needs it local (or gs://)")
    parser.add_argument("--labels", default=None,
                        help="CSV with columns path,label or uri,label: a label column")
    parser.add_argument("--max_points", type=int, default=None,
                        help="export at most this many points, sampled uniformly (default: "
                             "as many as the 8192 px sprite holds)")
    parser.add_argument("--sprite_cell", type=int, default=DEFAULT_SPRITE_CELL,
                        help="side of each thumbnail in the sprite, px")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_storage_args(parser)
    return parser.parse_args(argv)


def run(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    summary = export_projector(args.vectors, args.output, args.labels,
                               max_points=args.max_points, sprite_cell=args.sprite_cell,
                               seed=args.seed, storage_options=storage_options_from_args(args))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        sampled = (f", a uniform sample of {summary['total']} (seed {summary['seed']})"
                   if summary["sampled"] else "")
        print(f"projector: {summary['points']} points of dimension {summary['dim']}{sampled}, "
              f"sprite {summary['sprite']} px\n  tensorboard --logdir {args.output}")
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run()
