"""Images per second of the embedding stage against a plain PyTorch loop, side by side.

    python benchmarks/embed_throughput.py [--limit 512] [--batch_size 32] [--repeats 2]
        [--stage_flags "--direct_num_workers=2 --direct_running_mode=multi_threading" ...]

On the same photos (the first ``--limit`` files of ``../shared/data/clothing-small`` by
``labels.csv`` order) it times, in one process and in alternating order:

* ``decode``: ``gridtsne.ingest.read_and_decode`` over every file, nothing else;
* ``plain``: a plain loop doing the same work as the stage: the same decode, the same model
  and batch size through ``gridtsne.models.embed_batch``, the same rows written as one Parquet
  file; model loading included;
* ``stage``: ``pipelines.embed.run`` on the DirectRunner with its defaults over a manifest of
  the same files, everything included (graph construction, listing, Parquet shards, the
  read-back summary); each ``--stage_flags`` (repeatable) adds a variant with those flags.

Prints images/s of each and the ratio stage / plain (target: >= 0.9 on CPU): the median of
the ratios of back-to-back runs (robust on a shared machine), the best-of ratio, and the ratio
of process CPU time.
"""
import argparse
import csv
import json
import os
import shlex
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from gridtsne import models, schema  # noqa: E402
from gridtsne.decode import DecodeConfig  # noqa: E402
from gridtsne.ingest import read_and_decode  # noqa: E402
from gridtsne.listing import expand_pattern  # noqa: E402
from gridtsne.rows import vector_row  # noqa: E402

DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "data", "clothing-small")


def select_files(data, limit):
    with open(os.path.join(data, "labels.csv"), newline="") as fh:
        paths = [os.path.join(data, row["path"]) for row in csv.DictReader(fh)]
    return [os.path.abspath(p) for p in paths[:limit]]


def time_decode(paths, config):
    start = time.perf_counter()
    for path in paths:
        (info,) = expand_pattern(path)
        read_and_decode(info, config)
    return time.perf_counter() - start


def time_plain(paths, config, model_name, batch_size, device, out, channels_last=True):
    start = time.perf_counter()
    model = models.load_model(model_name, device=device, channels_last=channels_last)
    rows, batch = [], []

    def flush():
        vectors = models.embed_batch(model, np.stack([p for _, p in batch]))
        rows.extend(vector_row(rec, vec) for (rec, _), vec in zip(batch, vectors))
        batch.clear()

    for path in paths:
        (info,) = expand_pattern(path)
        batch.append(read_and_decode(info, config))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    meta = models.describe(model.spec, model.weights_sha256, model.weights_source,
                           model.pooling)
    table = pa.Table.from_pylist(rows, schema=schema.vectors_schema(model.spec.dim, meta))
    pq.write_table(table, out)
    return time.perf_counter() - start


def time_stage(manifest, out, model_name, batch_size, device, stage_flags):
    from pipelines import embed

    start = time.perf_counter()
    summary = embed.run(["--manifest", manifest, "--output", out, "--model", model_name,
                         "--batch_size", str(batch_size), "--device", device] + stage_flags)
    return time.perf_counter() - start, summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stage_flags", action="append", default=[],
                        help="a variant of the stage run with these extra (Beam) flags; "
                             "repeatable")
    parser.add_argument("--skip", default="", help="comma list of measurements to leave out")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    paths = select_files(args.data, args.limit)
    n = len(paths)
    size = models.get_spec(args.model).input_size
    config = DecodeConfig(input_size=size)
    skip = set(filter(None, args.skip.split(",")))
    print(f"{n} images from {args.data}; model {args.model}, batch {args.batch_size}, "
          f"device {models.resolve_device(args.device)}, torch threads "
          f"{torch.get_num_threads()}, cores {os.cpu_count()}", flush=True)
    tmp = tempfile.mkdtemp(prefix="embed-bench-")
    manifest = os.path.join(tmp, "manifest.txt")
    with open(manifest, "w") as fh:
        fh.write("\n".join(paths) + "\n")
    variants = {"stage": []}
    variants.update({f"stage {flags}": shlex.split(flags) for flags in args.stage_flags})

    # Warm-up outside the timings: imports (timm, Beam's runner) and first model load would
    # otherwise be charged to whichever approach runs first.
    warm = os.path.join(tmp, "warm-manifest.txt")
    with open(warm, "w") as fh:
        fh.write("\n".join(paths[:4]) + "\n")
    time_plain(paths[:4], config, args.model, args.batch_size, args.device,
               os.path.join(tmp, "warm.parquet"))
    time_stage(warm, os.path.join(tmp, "warm-stage"), args.model, args.batch_size, args.device,
               [])

    times = {"decode": [], "plain": [], **{name: [] for name in variants}}
    cpu = {name: [] for name in times}
    for rep in range(args.repeats):
        order = ["decode", "plain", *variants]
        for what in (order if rep % 2 == 0 else order[::-1]):
            if what.split()[0] in skip:
                continue
            cpu_start = time.process_time()
            if what == "decode":
                t = time_decode(paths, config)
            elif what == "plain":
                t = time_plain(paths, config, args.model, args.batch_size, args.device,
                               os.path.join(tmp, f"plain-{rep}.parquet"))
            else:
                t, summary = time_stage(manifest, os.path.join(tmp, f"stage-{rep}"),
                                        args.model, args.batch_size, args.device,
                                        variants[what])
                assert summary["vectors"] == n, summary
            times[what].append(t)
            cpu[what].append(time.process_time() - cpu_start)
            print(f"  run {rep + 1} {what:<6} {t:7.1f} s  {n / t:6.1f} images/s  "
                  f"(CPU {cpu[what][-1]:.1f} s)", flush=True)

    width = max(len(k) for k in times)
    best = {k: min(v) for k, v in times.items() if v}
    print(f"\nbest of {args.repeats} runs (wall clock):")
    for k, t in best.items():
        print(f"  {k:<{width}} {n / t:7.1f} images/s  ({t:.1f} s, "
              f"CPU {statistics.median(cpu[k]):.1f} s median)")
    result = {"images": n, "model": args.model, "batch_size": args.batch_size,
              "images_per_s": {k: n / t for k, t in best.items()}, "seconds": times,
              "cpu_seconds": cpu, "ratios_over_plain": {}}
    if "plain" in best:
        # On a shared machine one run can be slowed by a neighbour: the median of the ratios
        # of runs taken back to back is the robust figure; best-of and CPU time are beside it.
        print()
        for name in variants:
            if not times[name]:
                continue
            paired = [p / t for p, t in zip(times["plain"], times[name])]
            ratio = statistics.median(paired)
            cpu_ratio = statistics.median(cpu["plain"]) / statistics.median(cpu[name])
            result["ratios_over_plain"][name] = {"median_paired": ratio, "paired": paired,
                                                 "best_of": best["plain"] / best[name],
                                                 "cpu_time": cpu_ratio}
            print(f"{name} / plain loop = {ratio:.2f}x median of paired runs "
                  f"({', '.join(f'{r:.2f}' for r in paired)}); best-of "
                  f"{best['plain'] / best[name]:.2f}x; CPU time {cpu_ratio:.2f}x  "
                  f"(target >= 0.9)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
