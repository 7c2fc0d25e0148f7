"""Start-up and throughput of the embedding stage, in memory beside multi-processing, in one run.

    python benchmarks/embed_startup.py [--limit 128] [--workers 2 --workers 16] [--repeats 1]
        [--device cpu] [--decoder batched] [--json FILE]

On the same photos (the first ``--limit`` files of ``../shared/data/clothing-small`` by
``labels.csv`` order) it runs ``pipelines.embed.run`` on the DirectRunner in memory and with
``--direct_running_mode=multi_processing --direct_num_workers=N`` for each ``--workers``, in
alternating order, each in a fresh launcher process (so its imports count, as in a real job),
and prints for each: seconds from starting that process to the first embedded batch (the
``gridtsne.embed.first_batch`` line each ``BatchEmbedFn`` logs once; worker processes' log lines
reach the launcher's root logger through Beam's logging service), seconds in all, images/s
over the whole launch, and the CPU seconds of the launcher and its worker processes together.
Ratios: each multi-processing mode's images/s over in memory's (target: at least 1.0), and
its first batch (target: within 15 s of launch).
"""
import argparse
import csv
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Worker processes import gridtsne from this checkout too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "data", "clothing-small")
FIRST_BATCH = "gridtsne.embed.first_batch"  # transforms.embed.FIRST_BATCH, kept in step


class _FirstBatch(logging.Handler):
    """Remembers when the first ``FIRST_BATCH`` line reached the launcher's logging."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.at = None

    def emit(self, record):
        if self.at is None and FIRST_BATCH in record.getMessage():
            self.at = time.time()


def select_files(data, limit):
    with open(os.path.join(data, "labels.csv"), newline="") as fh:
        paths = [os.path.join(data, row["path"]) for row in csv.DictReader(fh)]
    return [os.path.abspath(p) for p in paths[:limit]]


def cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_stage(manifest, out, args, extra):
    """One mode in this process, which ``launch`` started for it: times from ``--launched_at``."""
    start = args.launched_at
    from pipelines import embed

    watcher = _FirstBatch()
    root = logging.getLogger()
    root.addHandler(watcher)
    try:
        model = ["--model", args.model] if args.model else []
        summary = embed.run(["--manifest", manifest, "--output", out] + model + [
                             "--batch_size", str(args.batch_size), "--device", args.device,
                             "--decoder", args.decoder] + extra)
    finally:
        root.removeHandler(watcher)
    elapsed = time.time() - start
    first = None if watcher.at is None else watcher.at - start
    return {"seconds": elapsed, "first_batch_s": first, "vectors": summary["vectors"],
            "images_per_s": summary["vectors"] / elapsed, "cpu_s": cpu_seconds()}


RESULT = "embed_startup result: "


def launch(manifest, out, argv, extra):
    """Run one mode in a fresh launcher process; its result line, parsed."""
    import subprocess

    command = [sys.executable, os.path.abspath(__file__)] + argv + [
        "--_manifest", manifest, "--_out", out, "--_launched_at", repr(time.time())] + \
        [f"--_extra={e}" for e in extra]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    raise RuntimeError(f"the launcher failed (rc {done.returncode}): {done.stderr[-3000:]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=128)
    parser.add_argument("--workers", type=int, action="append",
                        help="--direct_num_workers of a multi-processing run (repeatable; "
                             "default 2)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--decoder", default="batched")
    parser.add_argument("--model", help="default: the stage's default model")
    parser.add_argument("--json", help="also write the results to this JSON file")
    # One mode's launcher process (started by this script itself).
    parser.add_argument("--_manifest", dest="manifest", help=argparse.SUPPRESS)
    parser.add_argument("--_out", dest="out", help=argparse.SUPPRESS)
    parser.add_argument("--_launched_at", dest="launched_at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--_extra", dest="extra", action="append", default=[],
                        help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    workers = args.workers or [2]

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().setLevel(logging.INFO)  # let the first-batch lines through
    for name in ("apache_beam", "gridtsne", "pipelines", "transforms"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("transforms.embed").setLevel(logging.INFO)
    # Worker processes' lines arrive through this logger (Beam's local job service).
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)  # the console stays quiet
    if args.manifest:
        result = run_stage(args.manifest, args.out, args, args.extra)
        print(RESULT + json.dumps(result), flush=True)
        return

    paths = select_files(args.data, args.limit)
    modes = [("in memory", [])] + [
        (f"multi_processing x{n}", ["--direct_running_mode=multi_processing",
                                    f"--direct_num_workers={n}"]) for n in workers]
    results = {name: [] for name, _ in modes}
    with tempfile.TemporaryDirectory(prefix="embed-startup-") as tmp:
        manifest = os.path.join(tmp, "manifest.txt")
        with open(manifest, "w") as fh:
            fh.write("\n".join(paths) + "\n")
        for r in range(args.repeats):
            for i, (name, extra) in enumerate(modes if r % 2 == 0 else modes[::-1]):
                out = os.path.join(tmp, f"out-{r}-{i}")
                result = launch(manifest, out, argv, extra)
                assert result["vectors"] == len(paths), result
                results[name].append(result)
                print(f"  {name}: {result['seconds']:.1f} s, first batch "
                      f"{result['first_batch_s'] or float('nan'):.1f} s", flush=True)

    def med(name, key):
        values = [r[key] for r in results[name] if r[key] is not None]
        return statistics.median(values) if values else None

    base = med("in memory", "images_per_s")
    print(f"\n{len(paths)} images, --device {args.device} --decoder {args.decoder} "
          f"--batch_size {args.batch_size}, median of {args.repeats}")
    print(f"{'mode':<22}{'first batch s':>14}{'total s':>9}{'images/s':>10}{'CPU s':>8}"
          f"{'vs in memory':>14}")
    summary = {}
    for name, _ in modes:
        rate = med(name, "images_per_s")
        first = med(name, "first_batch_s")
        summary[name] = {k: med(name, k) for k in ("first_batch_s", "seconds", "images_per_s",
                                                    "cpu_s")}
        summary[name]["vs_in_memory"] = rate / base
        print(f"{name:<22}{first if first is not None else float('nan'):>14.1f}"
              f"{med(name, 'seconds'):>9.1f}{rate:>10.1f}{med(name, 'cpu_s'):>8.1f}"
              f"{rate / base:>13.2f}x")
    for name, _ in modes[1:]:
        s = summary[name]
        print(f"target {name}: images/s >= in memory: "
              f"{'met' if s['vs_in_memory'] >= 1.0 else 'NOT met'}; first batch <= 15 s: "
              f"{'met' if s['first_batch_s'] is not None and s['first_batch_s'] <= 15 else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"images": len(paths), "modes": summary, "runs": results}, fh, indent=2)


if __name__ == "__main__":
    main()
