"""Listing speed: files/s of the job's Beam listing beside gridtsne's walk, `find` and fsspec.

    python benchmarks/listing_speed.py                       # 200,000 files, 1,000,000 lines
    python benchmarks/listing_speed.py --files 50000 --manifest_lines 200000
    python benchmarks/listing_speed.py --files 200000 --manifest_lines 0 --repeat 3

Makes ``--files`` empty files in a scratch folder (100 per folder, as photo folders are), then,
side by side in one run (best of ``--repeat``):

* ``find DIR -type f -printf '%s %T@ %p'``: the file system's own speed (a walk and a stat
  each, as a listing needs size and time);
* fsspec's ``find(detail=True)``, what gridtsne listed with before;
* :func:`gridtsne.listing.walk_local`, the walk ``--input DIR`` uses;
* a ``--manifest_lines`` manifest (the files' paths, repeated to that many lines) parsed and
  resolved by :func:`gridtsne.listing.resolve_entries` in chunks, as workers do;
* the job's listing on the DirectRunner (``--input DIR``, and ``--manifest``), built as
  ``gridtsne run`` builds it: ``ListFiles``, then the re-index join (``ClassifyFiles``, a first
  run) and the job's phase marks. Its rate is files / the job's ``listing`` phase (from the
  first listing call to the last listed file, as the run's summary times it); the runner's
  start and the rest of the pipeline are shown apart (``whole run``). ``--no_beam`` skips it.

Ratios are to ``find`` and to ``walk_local``.
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
    """The job's listing on the DirectRunner: ``(files, listing phase s, whole run s)``.

    The phase is timed as the job's summary times it (:func:`gridtsne.phases.job_spans`):
    from the job's start (its first stage or the first listing call) to the last listed file,
    with a wall-clock stamp taken where each of those PCollections is made.
    """
    import json

    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.beam_runner import new_pipeline
    from transforms.listing import ListFiles
    from transforms.reindex import TO_EMBED, ClassifyFiles

    marks_file = Path(tempfile.mkstemp(prefix="gridtsne-marks-", suffix=".json")[1])
    p = new_pipeline(PipelineOptions([]))
    lister = ListFiles(inputs, manifests)
    files, _ = p | "ListFiles" >> lister
    previous = p | "NoPreviousVersion" >> beam.Create([])  # a first run: every file is new
    classified = files | "ClassifyFiles" >> ClassifyFiles(previous)
    _ = (classified[TO_EMBED] | "CountToEmbed" >> beam.combiners.Count.Globally()
         | beam.Map(lambda n: Metrics.counter("bench", "files").inc(n)))
    started = lister.started
    started = list(started) if isinstance(started, (tuple, list)) else [started]
    starts = [p | "StartJob" >> beam.Create([None])] + started
    # ("start", -t) and ("listed", t): one max per key gives the first start, the last file.
    stamps = [pcoll | f"Stamp{i}" >> beam.Map(lambda _, k=k, sign=sign: (k, sign * time.time()))
              for i, (k, sign, pcoll) in enumerate([("start", -1, s) for s in starts]
                                                   + [("listed", 1, files)])]
    _ = (stamps | "FlattenStamps" >> beam.Flatten()
         | "FirstAndLast" >> beam.CombinePerKey(max)
         | beam.combiners.ToDict()
         | beam.Map(lambda marks: marks_file.write_text(json.dumps(marks))))
    began = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    whole = time.perf_counter() - began
    (found,) = result.metrics().query(MetricsFilter().with_name("files"))["counters"]
    marks = json.loads(marks_file.read_text())
    marks_file.unlink()
    listing = marks["listed"] + marks["start"]
    return found.committed, listing, whole


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--manifest_lines", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="manifest lines per element")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no_beam", action="store_true",
                        help="skip the job's listing on the DirectRunner")
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
        if args.manifest_lines:
            with open(manifest, "w") as fh:
                for line in itertools.islice(itertools.cycle(paths), args.manifest_lines):
                    fh.write(line + "\n")
            seconds, n = best(lambda: run_manifest(manifest, args.chunk), args.repeat)
            assert n == args.manifest_lines, n
            rows.append((f"manifest, {args.manifest_lines:,} lines (resolve_entries)", n,
                         seconds))
        if not args.no_beam:
            for name, kw, items in [
                    ("job's listing (Beam, DirectRunner), --input DIR",
                     {"inputs": [str(tree)]}, args.files),
                    (f"job's listing (Beam), --manifest, {args.manifest_lines:,} lines",
                     {"manifests": [str(manifest)]} if args.manifest_lines else None,
                     args.manifest_lines)]:
                if kw is None:
                    continue
                runs = [run_beam(**kw) for _ in range(args.repeat)]
                n, listing, whole = min(runs, key=lambda r: r[1])
                assert n == args.files, (name, n)  # duplicate lines merged into one file each
                rows.append((name, items, listing))
                print(f"  {name}: {n:,} files, listing phase {listing:.2f} s (whole run "
                      f"{whole:.2f} s, of which the runner's start, the re-index join ...)",
                      flush=True)
        find_rate = rows[0][1] / rows[0][2]
        walk_rate = rows[2][1] / rows[2][2]
        print()
        print(f"{'':56}{'items':>11}{'seconds':>9}{'items/s':>11}{'vs find':>9}{'vs walk':>9}")
        for name, n, seconds in rows:
            print(f"{name:56}{n:11,}{seconds:9.2f}{n / seconds:11,.0f}"
                  f"{n / seconds / find_rate:9.2f}{n / seconds / walk_rate:9.2f}")
        print(f"(best of {args.repeat}; {os.cpu_count()} cores; items: files, or manifest lines; "
              f"the job's listing merges a manifest's repeated lines into {len(paths):,} files)")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
