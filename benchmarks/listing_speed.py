"""Listing speed: local files/s of gridtsne's walk against `find`, fsspec's walk, and a manifest.

    python benchmarks/listing_speed.py                       # 200,000 files, 1,000,000 lines
    python benchmarks/listing_speed.py --files 50000 --manifest_lines 200000 --beam

Makes ``--files`` empty files in a scratch folder (100 per folder, as photo folders are), then,
side by side in one run (best of ``--repeat``):

* ``find DIR -type f -printf '%s %T@ %p'``: the file system's own speed (a walk and a stat
  each, as a listing needs size and time);
* fsspec's ``find(detail=True)``, what gridtsne listed with before;
* :func:`gridtsne.listing.walk_local`, the walk ``--input DIR`` uses now;
* a ``--manifest_lines`` manifest (the files' paths, repeated to that many lines) parsed and
  resolved by :func:`gridtsne.listing.resolve_entries` in chunks, as workers do;
* with ``--beam``: the ``ListFiles`` transform of the job on the DirectRunner (directory and
  manifest), Beam's per-element costs and the grouping by uri included.
"""
import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_tree(root, n, per_folder=100):
    for i in range(n):
        folder = root / f"d{i // (per_folder * 100):03d}" / f"e{(i // per_folder) % 100:02d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"photo{i:07d}.jpg").touch()


def best(fn, repeat):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def run_find(root):
    out = subprocess.run(["find", str(root), "-type", "f", "-printf", "%s %T@ %p\n"],
                         check=True, capture_output=True).stdout
    return out.count(b"\n")


def run_fsspec(root):
    import fsspec

    from gridtsne.listing import file_info_from_details

    found = fsspec.filesystem("file").find(str(root), detail=True, withdirs=False)
    return sum(1 for p in sorted(found) if file_info_from_details(p, found[p]))


def run_walk(root):
    from gridtsne.listing import walk_local

    return sum(1 for _ in walk_local(str(root)))


def run_manifest(manifest, chunk):
    from gridtsne.listing import FileInfo, read_manifest, resolve_entries

    entries = read_manifest(str(manifest))
    count = 0
    while True:
        batch = list(itertools.islice(entries, chunk))
        if not batch:
            return count
        count += sum(isinstance(f, FileInfo) for _, f in resolve_entries(batch))


def run_beam(inputs=(), manifests=()):
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.beam_runner import new_pipeline
    from transforms.listing import ListFiles

    p = new_pipeline(PipelineOptions([]))
    files, _ = p | ListFiles(inputs, manifests)
    _ = (files | beam.combiners.Count.Globally()
         | beam.Map(lambda n: Metrics.counter("bench", "files").inc(n)))
    result = p.run()
    result.wait_until_finish()
    (found,) = result.metrics().query(MetricsFilter().with_name("files"))["counters"]
    return found.committed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--manifest_lines", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="manifest lines per element")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--beam", action="store_true", help="also time the ListFiles transform")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="gridtsne-listing-"))
    tree = work / "tree"
    try:
        start = time.perf_counter()
        make_tree(tree, args.files)
        print(f"made {args.files:,} files under {tree} in {time.perf_counter() - start:.1f} s",
              flush=True)
        rows = []
        for name, fn in [("find -printf (size, time)", lambda: run_find(tree)),
                         ("fsspec find(detail=True)", lambda: run_fsspec(tree)),
                         ("gridtsne walk_local", lambda: run_walk(tree))]:
            seconds, n = best(fn, args.repeat)
            assert n == args.files, (name, n)
            rows.append((name, n, seconds))
            print(f"  {name}: {n:,} files in {seconds:.2f} s", flush=True)
        manifest = work / "manifest.txt"
        paths = [i.uri for i in __import__("gridtsne.listing", fromlist=["walk_local"])
                 .walk_local(str(tree))]
        with open(manifest, "w") as fh:
            for line in itertools.islice(itertools.cycle(paths), args.manifest_lines):
                fh.write(line + "\n")
        seconds, n = best(lambda: run_manifest(manifest, args.chunk), args.repeat)
        assert n == args.manifest_lines, n
        rows.append((f"manifest, {args.manifest_lines:,} lines (resolve_entries)", n, seconds))
        if args.beam:
            for name, kw in [("ListFiles on the DirectRunner, --input DIR",
                              {"inputs": [str(tree)]}),
                             ("ListFiles on the DirectRunner, --manifest",
                              {"manifests": [str(manifest)]})]:
                seconds, n = best(lambda: run_beam(**kw), 1)
                rows.append((name, n, seconds))
                print(f"  {name}: {n:,} files in {seconds:.2f} s", flush=True)
        find_rate = rows[0][1] / rows[0][2]
        print()
        print(f"{'':56}{'items':>11}{'seconds':>9}{'items/s':>11}{'vs find':>9}")
        for name, n, seconds in rows:
            print(f"{name:56}{n:11,}{seconds:9.2f}{n / seconds:11,.0f}"
                  f"{n / seconds / find_rate:9.2f}")
        print(f"(best of {args.repeat}; {os.cpu_count()} cores; Beam rows: one run, and a "
              f"manifest's repeated lines are grouped into {len(paths):,} files)")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
