"""Where the whole job's time goes: seconds per phase and the idle gaps, from one `gridtsne run`.

    python benchmarks/job_phases.py                                 # 4,096 CIFAR-10 photos
    python benchmarks/job_phases.py --set clothing-small --photos 1000
    python benchmarks/job_phases.py --photos 20480 --tsne_repeat 3 -- --device cuda
    python benchmarks/job_phases.py --folder /tmp/corpus --photos 20480 -- --device cuda

Runs ``gridtsne run`` as a user does (a fresh process, DirectRunner, default flags plus what
follows ``--``) on a seeded sample of real photos from ``../shared/data`` (or of the JPEGs of
any ``--folder``, such as the corpus ``benchmarks/embed_gpu.py --keep`` makes on a machine
without ``../shared``) and prints:

* the run's own phase table (its summary's ``timings``: launch, listing, embedding, writing
  vectors, reading vectors, neighbours/affinities, t-SNE, assignment, refinement, writing
  layout, evaluation, render, publish) with each idle gap and the share of the wall time
  outside the named phases;
* launch to the first progress line, timed from outside (the process's start to the first
  line on stderr);
* t-SNE inside the job against t-SNE alone: ``run_layout`` on the job's own vectors in a fresh
  process, ``--tsne_repeat`` times (median), and the ratio.
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"


def photo_sample(folder, n, seed=0):
    if (folder / "labels.csv").exists():
        with open(folder / "labels.csv", newline="") as fh:
            paths = sorted(r["path"] for r in csv.DictReader(fh))
    else:  # any folder of JPEGs
        paths = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.jp*g"))
    if n and n < len(paths):
        paths = [paths[i] for i in sorted(np.random.default_rng(seed).choice(len(paths), n,
                                                                           replace=False))]
    return [str(folder / p) for p in paths]


def run_job(manifest, out, extra):
    """``gridtsne run`` in a fresh process; (wall s, launch-to-first-line s, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "gridtsne.cli", "run", "--manifest", str(manifest),
           "--output", str(out), "--progress", "lines", "--progress_interval", "5", *extra]
    first = {}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)

    def read_err():
        for line in proc.stderr:
            if line.startswith("[") and "first" not in first:
                first["first"] = time.perf_counter() - start
            sys.stderr.write("    | " + line)

    reader = threading.Thread(target=read_err, daemon=True)
    reader.start()
    stdout = proc.stdout.read()
    proc.wait()
    reader.join()
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"gridtsne run failed ({proc.returncode}):\n{stdout}")
    return wall, first.get("first"), stdout


def tsne_alone(vectors_url, work, i):
    """``run_layout`` on the job's vectors in a fresh process; its timings."""
    code = ("import json, sys; from gridtsne.layout import LayoutConfig, run_layout; "
            "print(json.dumps(run_layout(sys.argv[1], sys.argv[2])['timings']))")
    out = subprocess.run([sys.executable, "-c", code, vectors_url, str(work / f"alone{i}")],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", default="cifar10", help="a folder of ../shared/data")
    parser.add_argument("--photos", type=int, default=4096)
    parser.add_argument("--tsne_repeat", type=int, default=3,
                        help="runs of t-SNE alone on the job's vectors (0: none)")
    parser.add_argument("--folder", type=Path, default=None,
                        help="a folder of JPEGs to sample instead of --set")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    folder = args.folder or DATA / args.set
    if args.folder is None and not (folder / "labels.csv").exists():
        sys.exit(f"no data at {folder} (needs ../shared/data beside the checkout, or --folder)")
    from gridtsne import phases, storage, versions

    work = args.work or Path(tempfile.mkdtemp(prefix="gridtsne-phases-"))
    work.mkdir(parents=True, exist_ok=True)
    paths = photo_sample(folder, args.photos)
    manifest = work / "manifest.txt"
    manifest.write_text("".join(p + "\n" for p in paths))
    out = work / "map"
    print(f"{len(paths):,} photos of {args.folder or args.set}; gridtsne run {' '.join(extra)}; "
          f"scratch {work}",
          flush=True)
    wall, first_line, stdout = run_job(manifest, out, extra)
    version = versions.current_version_url(str(out))
    summary = json.loads(storage.read_bytes(storage.url_join(version, "summary.json")))
    timings = summary["timings"]
    print()
    print(phases.format_breakdown(timings))
    print(f"{'launch to first progress line':32}{first_line or float('nan'):6.2f} s "
          f"(from outside; the process ran {wall:.1f} s in all)")
    layout = timings["layout"]
    in_job = layout["tsne_s"]
    print(f"{'t-SNE in the job':32}{in_job:6.2f} s (neighbours/affinities "
          f"{layout.get('affinities_s', 0):.2f} s, optimisation "
          f"{layout.get('optimise_s', 0):.2f} s)")
    if args.tsne_repeat:
        vectors_url = storage.url_join(version, "vectors")
        alone = [tsne_alone(vectors_url, work, i) for i in range(args.tsne_repeat)]
        times = [a["tsne_s"] for a in alone]
        med = statistics.median(times)
        print(f"{'t-SNE alone, same vectors':32}{med:6.2f} s (median of {len(times)}: "
              f"{', '.join(f'{t:.2f}' for t in times)}; affinities "
              f"{statistics.median(a.get('affinities_s', 0) for a in alone):.2f} s)")
        print(f"{'in the job / alone':32}{in_job / med:6.2f}x")
    outside = timings["outside_phases_s"] / timings["wall_s"] if timings["wall_s"] else 0
    print(f"{'outside named phases':32}{outside:6.1%} of {timings['wall_s']:.1f} s "
          f"({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
