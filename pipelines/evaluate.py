"""``gridtsne evaluate``: print the quality figures of a layout.

    python -m pipelines.evaluate --layout s3://maps/run1 --vectors s3://maps/run1/vectors \\
        [--labels labels.csv] [--p 16] [--max_items 10000]

No Beam job: reads the two tables (and labels) with pyarrow/fsspec and prints DPQ_p and the
neighbour label agreement.
"""
import argparse
import json
import logging
import sys

from gridtsne.evaluate import evaluate_layout
from pipelines.options import add_storage_args, storage_options_from_args


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="gridtsne evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--layout", required=True,
                        help="layout.parquet, or the folder (URL) that holds it")
    parser.add_argument("--vectors", required=True, help="URL of the vectors table")
    parser.add_argument("--labels", default=None,
                        help="CSV with columns path,label or uri,label")
    parser.add_argument("--p", type=float, default=16, help="the p of DPQ_p (default 16)")
    parser.add_argument("--max_items", type=int, default=10_000,
                        help="evaluate DPQ on a seeded sample of at most this many images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_storage_args(parser)
    return parser.parse_args(argv)


def run(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.max_items < 3:
        raise ValueError(f"--max_items must be at least 3, got {args.max_items!r}")
    result = evaluate_layout(args.layout, args.vectors, args.labels, p=args.p,
                             max_items=args.max_items, seed=args.seed,
                             storage_options=storage_options_from_args(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        p = int(args.p) if float(args.p).is_integer() else args.p
        print(f"layout: {result['images']} images on a {result['rows']}x{result['cols']} grid "
              f"({result['method']})")
        print(f"DPQ{p}: {result['dpq']:.4f} (on {result['dpq_items']} images)")
        if "label_agreement" in result:
            print(f"neighbour label agreement: {result['label_agreement']:.4f} "
                  f"({result['labelled']} labelled images)")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run()
