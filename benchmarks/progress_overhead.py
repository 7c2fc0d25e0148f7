"""What progress reporting costs a job: counters that also feed the launcher, and the document.

    python benchmarks/progress_overhead.py [--elements 200000] [--repeats 3]

Runs the same DirectRunner pipeline side by side, its DoFn incrementing (a) a plain Beam
counter, (b) the stages' :func:`transforms.progress_metrics.counter` with a live
:class:`gridtsne.progress.Reporter` listening (drawing lines and writing its document), once
per element, and prints the per-element cost and the ratio. Then times writes of the progress
document (the reporter writes one at most every 3 s) to a local folder.

An image costs milliseconds to decode and embed; the per-increment overhead printed here is
what one image pays (about four increments per image).
"""
import argparse
import io
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import apache_beam as beam  # noqa: E402
from apache_beam.metrics import Metrics  # noqa: E402

from gridtsne import progress, versions  # noqa: E402
from transforms import progress_metrics  # noqa: E402


class PlainFn(beam.DoFn):
    def setup(self):
        self.c = Metrics.counter("gridtsne.embed", "vectors")

    def process(self, x):
        self.c.inc()
        yield x


class ProgressFn(PlainFn):
    def setup(self):
        self.c = progress_metrics.counter("gridtsne.embed", "vectors")


def run_once(fn, n):
    p = beam.Pipeline()
    _ = p | beam.Create(range(n)) | beam.ParDo(fn) | beam.combiners.Count.Globally()
    start = time.perf_counter()
    p.run().wait_until_finish()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--elements", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n = args.elements
    run_once(PlainFn(), 1000)  # warm up imports and the runner
    with tempfile.TemporaryDirectory() as tmp:
        doc = os.path.join(tmp, "progress.json")
        reporter = progress.Reporter(version="bench", mode="lines", stream=io.StringIO(),
                                     interval=1.0, doc_interval=3.0,
                                     write_document=lambda data: versions.replace_file(doc, data))
        plain, with_progress = [], []
        with progress.reporting(reporter):
            reporter.enter("embedding")
            for _ in range(args.repeats):
                plain.append(run_once(PlainFn(), n))
                with_progress.append(run_once(ProgressFn(), n))
            reporter.finish()
        counted = reporter.snapshot()["counts"]["embedded"]
        assert counted == n * args.repeats, counted

        writes = []
        snap = reporter.snapshot()
        import json
        data = json.dumps(snap).encode()
        for _ in range(50):
            start = time.perf_counter()
            versions.replace_file(doc, data)
            writes.append(time.perf_counter() - start)

    a, b = statistics.median(plain), statistics.median(with_progress)
    print(f"{n:,} elements, median of {args.repeats} DirectRunner runs each")
    print(f"  plain Beam counter:         {a:6.2f} s  ({a / n * 1e6:5.2f} us/element)")
    print(f"  progress counter + reporter: {b:6.2f} s  ({b / n * 1e6:5.2f} us/element)")
    print(f"  ratio progress/plain: {b / a:.3f}  (extra {(b - a) / n * 1e6:+.2f} us per increment)")
    w = statistics.median(writes)
    print(f"progress document write (local, fsync + rename): median {w * 1e3:.2f} ms; "
          f"at one write per 3 s that is {w / 3 * 100:.3f}% of one core")


if __name__ == "__main__":
    main()
