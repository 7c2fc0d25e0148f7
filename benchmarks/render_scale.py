"""Render throughput and memory at 10,000 and 60,000 cells, three approaches side by side.

    python benchmarks/render_scale.py [--sizes 10000,60000] [--cell 128] [--tile 256]
        [--workers 1] [--mode in_memory] [--no-naive]

Inputs: CIFAR-10 photos from ``../shared/data/cifar10`` turned into thumbnails exactly as the
embedding stage does (``gridtsne.decode.make_thumbnail``), cached once under
``benchmarks/.cache/``; a row-major layout on the auto grid. Each measurement runs in a fresh
process whose whole process tree is sampled for resident memory.

* ``beam``: the real stage, ``RenderMosaic`` on the DirectRunner (all levels, overviews,
  indexes, page), ``--workers``/``--mode`` as ``--direct_num_workers``/``--direct_running_mode``
  (default 1, ``in_memory``: on 2 cores ``multi_processing`` is barely faster and needs 3x the
  memory; ``multi_threading`` dropped elements in some runs, which the stage's checks catch);
* ``core``: the top level only, in one process: ``render_top_tile`` + encode + write per
  tile, thumbnails preloaded; the per-worker speed of the top level;
* ``core2``: the same split over two processes (its tiles are independent work items), i.e.
  the top level's speed on both cores;
* ``naive``: the top level by drawing the whole mosaic into one image and cutting tiles
  from it, which is what the tile-by-tile design avoids: its memory grows with the grid.

Targets (2 cores): >= 2,000 cells/s at the top level with 128 px cells; peak memory of the
Beam render < 1 GB at 60,000 cells, and about flat from 10,000 to 60,000.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
CACHE = HERE / ".cache" / "cifar10_thumbnails.parquet"
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"


# ---- inputs ---------------------------------------------------------------------------------

def build_cache():
    """Thumbnails of all CIFAR-10 photos as the embedding stage makes them (read once)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from gridtsne.decode import make_thumbnail

    if CACHE.exists():
        return
    if not CIFAR.is_dir():
        sys.exit(f"{CIFAR} is missing: the benchmark needs ../shared/data/cifar10")
    files = sorted(CIFAR.glob("*/*/*.jpg"))
    print(f"building {CACHE} from {len(files)} CIFAR-10 files (once)...", flush=True)
    uris, thumbs, sizes = [], [], []
    for f in files:
        data = f.read_bytes()
        rgb = Image.open(io.BytesIO(data)).convert("RGB")
        uris.append(str(f))
        thumbs.append(make_thumbnail(rgb, 128, 85))
        sizes.append(len(data))
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"uri": uris, "thumbnail": thumbs, "bytes": sizes}), CACHE)


def write_inputs(n, folder):
    """A vectors table of ``n`` cached thumbnails and a row-major layout on the auto grid."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gridtsne import schema, storage
    from gridtsne.grid import auto_grid

    cache = pq.read_table(CACHE)
    if n > cache.num_rows:
        sys.exit(f"only {cache.num_rows} thumbnails cached, asked for {n}")
    t = cache.slice(0, n)
    dim = 16
    rng = np.random.default_rng(0)
    meta_schema = schema.vectors_schema(dim, {"model": "benchmark"})
    vec = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * dim, dtype=np.float32)), dim)
    import datetime as dt
    vectors = pa.table({
        "uri": t["uri"], "sha256": pa.array([f"{i:064x}" for i in range(n)]),
        "bytes": t["bytes"].cast(pa.int64()),
        "mtime": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)] * n,
                          pa.timestamp("us", tz="UTC")),
        "width": pa.array([32] * n, pa.int32()), "height": pa.array([32] * n, pa.int32()),
        "thumbnail": t["thumbnail"], "vector": vec}, schema=meta_schema)
    parts = 8
    step = -(-n // parts)
    vectors_url = os.path.join(folder, "vectors")
    for i in range(parts):
        storage.write_parquet(os.path.join(vectors_url, f"part-{i:05d}.parquet"),
                              vectors.slice(i * step, step), row_group_size=2000)
    rows, cols = auto_grid(n)
    idx = np.arange(n)
    layout = pa.table({
        "uri": t["uri"], "sha256": vectors["sha256"],
        "x": (idx % cols + rng.normal(0, 0.3, n)).astype(np.float32),
        "y": (idx // cols + rng.normal(0, 0.3, n)).astype(np.float32),
        "row": (idx // cols).astype(np.int32), "col": (idx % cols).astype(np.int32)},
        schema=schema.layout_schema({"rows": rows, "cols": cols}))
    layout_url = os.path.join(folder, "layout.parquet")
    storage.write_parquet(layout_url, layout)
    return vectors_url, layout_url, (rows, cols)


# ---- the three approaches (each run in a child process) --------------------------------------

def child_beam(args):
    from apache_beam.metrics.metric import MetricsFilter

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from transforms.render import NAMESPACE, RenderConfig, RenderMosaic

    flags = ["--direct_num_workers", str(args.workers), "--direct_running_mode", args.mode]
    start = time.perf_counter()
    p = beam.Pipeline(options=PipelineOptions(flags))
    _ = p | RenderMosaic(args.vectors, args.layout, args.output,
                         RenderConfig(cell=args.cell, tile=args.tile))
    result = p.run()
    result.wait_until_finish()
    wall = time.perf_counter() - start
    summary = json.loads(Path(args.output, "site.json").read_text())
    top_ms = None
    try:
        dists = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["distributions"]
        for d in dists:
            if d.key.metric.name == "top_tile_ms":
                top_ms = (d.committed or d.attempted).sum
    except Exception:  # metrics are best effort on the DirectRunner's process mode
        pass
    top_level = str(summary["levels"] - 1)
    return {"wall_s": wall, "cells": summary["images"], "tiles": summary["tiles_total"],
            "top_tiles": summary["tiles"][top_level], "top_tile_ms_sum": top_ms}


def _fitted_thumbnails(vectors):
    import pyarrow.parquet as pq

    from gridtsne import storage
    fs, files = storage.parquet_files(vectors)
    thumbs = {}
    for f in files:
        t = pq.read_table(f, columns=["uri", "thumbnail"])
        thumbs.update(zip(t["uri"].to_pylist(), t["thumbnail"].to_pylist()))
    return thumbs


def _cells(layout):
    import pyarrow.parquet as pq
    t = pq.read_table(layout, columns=["uri", "row", "col"])
    return list(zip(t["uri"].to_pylist(), t["row"].to_pylist(), t["col"].to_pylist()))


def child_core(args):
    from gridtsne import storage, tiles
    from gridtsne.render_inputs import plan_render

    plan = plan_render(args.layout, args.cell, args.tile)
    g = plan.geometry
    thumbs = _fitted_thumbnails(args.vectors)
    by_tile = {}
    for uri, row, col in _cells(args.layout):
        for key in g.tiles_of_cell(row, col):
            by_tile.setdefault(key, []).append((uri, row, col, thumbs.get(uri)))
    start = time.perf_counter()
    n_tiles = 0
    for i, (tx, ty) in enumerate(g.tile_keys(g.max_level)):
        if i % args.shards != args.shard:
            continue
        top = tiles.render_top_tile(g, tx, ty, by_tile.get((tx, ty), ()))
        storage.write_bytes(os.path.join(args.output, g.tile_path(g.max_level, tx, ty)),
                            tiles.encode_tile(top.image, g.fmt, 85))
        n_tiles += 1
    wall = time.perf_counter() - start
    return {"wall_s": wall, "cells": plan.images, "tiles": n_tiles, "top_tiles": n_tiles}


def child_core2(args):
    """The top level split over two processes, as two workers would split its tiles."""
    cmd = [sys.executable, __file__, "--child", "core", "--vectors", args.vectors, "--layout",
           args.layout, "--output", args.output, "--cell", str(args.cell), "--tile",
           str(args.tile), "--shards", "2"]
    procs = [subprocess.Popen(cmd + ["--shard", str(i)], stdout=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a core shard failed")
    # Both start rendering after loading their inputs; the slower one sets the pace.
    return {"wall_s": max(o["wall_s"] for o in outs), "cells": outs[0]["cells"],
            "tiles": sum(o["tiles"] for o in outs), "top_tiles": sum(o["tiles"] for o in outs)}


def child_naive(args):
    from PIL import Image

    from gridtsne import storage, tiles
    from gridtsne.render_inputs import plan_render

    plan = plan_render(args.layout, args.cell, args.tile)
    g = plan.geometry
    thumbs = _fitted_thumbnails(args.vectors)
    start = time.perf_counter()
    mosaic = Image.new("RGB", (g.width, g.height), tiles.BACKGROUND)
    for uri, row, col in _cells(args.layout):
        img = tiles.fit_thumbnail(thumbs.get(uri), g.inner) or tiles.placeholder(g.inner)
        x0, y0, _, _ = g.cell_box(row, col)
        mosaic.paste(img, (x0 + (g.cell - img.width) // 2, y0 + (g.cell - img.height) // 2))
    n_tiles = 0
    for tx, ty in g.tile_keys(g.max_level):
        tile = mosaic.crop(g.tile_box(g.max_level, tx, ty))
        storage.write_bytes(os.path.join(args.output, g.tile_path(g.max_level, tx, ty)),
                            tiles.encode_tile(tile, g.fmt, 85))
        n_tiles += 1
    wall = time.perf_counter() - start
    return {"wall_s": wall, "cells": plan.images, "tiles": n_tiles, "top_tiles": n_tiles}


CHILDREN = {"beam": child_beam, "core": child_core, "core2": child_core2, "naive": child_naive}


# ---- measuring a child's process tree -------------------------------------------------------

def _tree_rss_bytes(pid):
    """Resident memory of ``pid`` and all its descendants, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        cur = frontier.pop()
        for child, parent in parents.items():
            if parent == cur and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    for p in tree:
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def measure(kind, n, inputs, out, args):
    cmd = [sys.executable, __file__, "--child", kind, "--vectors", inputs[0], "--layout",
           inputs[1], "--output", out, "--cell", str(args.cell), "--tile", str(args.tile),
           "--workers", str(args.workers), "--mode", args.mode]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss_bytes(proc.pid))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        errors = [line for line in stderr.splitlines() if "Error" in line or "error" in line]
        sys.exit(f"{kind} at {n} failed:\n{stderr[-3000:]}\n" + "\n".join(errors[-10:]))
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = peak[0] / 2**20
    result["cells_per_s"] = result["cells"] / result["wall_s"]
    result["tiles_per_s"] = result["tiles"] / result["wall_s"]
    if result.get("top_tile_ms_sum"):
        result["top_level_cells_per_s"] = result["cells"] / (result["top_tile_ms_sum"] / 1000)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,60000")
    parser.add_argument("--cell", type=int, default=128)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1, help="Beam DirectRunner workers")
    parser.add_argument("--mode", default="in_memory",
                        choices=["in_memory", "multi_threading", "multi_processing"],
                        help="the DirectRunner's --direct_running_mode")
    parser.add_argument("--no-naive", action="store_true", help="skip the whole-mosaic baseline")
    parser.add_argument("--workdir", default=str(HERE / ".cache" / "work"),
                        help="where inputs and sites are written (a local disk; deleted after)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--shards", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--vectors", help=argparse.SUPPRESS)
    parser.add_argument("--layout", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return
    build_cache()
    kinds = ["beam", "core", "core2"] + ([] if args.no_naive else ["naive"])
    results = {}
    for n in [int(s) for s in args.sizes.split(",")]:
        os.makedirs(args.workdir, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="render-scale-", dir=args.workdir) as tmp:
            inputs = write_inputs(n, tmp)
            print(f"\n{n:,} cells on a {inputs[2][0]}x{inputs[2][1]} grid, {args.cell} px cells, "
                  f"{args.tile} px tiles", flush=True)
            for kind in kinds:
                out = os.path.join(tmp, f"site-{kind}")
                r = measure(kind, n, inputs, out, args)
                results[(kind, n)] = r
                top = (f", top level {r['top_level_cells_per_s']:,.0f} cells/s of DoFn time"
                       if r.get("top_level_cells_per_s") else "")
                print(f"  {kind:<6} {r['wall_s']:7.1f} s  {r['tiles']:>6} tiles "
                      f"{r['tiles_per_s']:7.0f} tiles/s  {r['cells_per_s']:7.0f} cells/s  "
                      f"peak {r['peak_rss_mb']:6.0f} MB{top}", flush=True)
    sizes = sorted({n for _, n in results})
    print("\nratios")
    for kind in kinds:
        if len(sizes) > 1:
            a, b = results[(kind, sizes[0])], results[(kind, sizes[-1])]
            print(f"  {kind:<6} peak memory {sizes[-1]:,} / {sizes[0]:,} cells: "
                  f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x "
                  f"(cells x{sizes[-1] / sizes[0]:.0f})")
    for n in sizes:
        beam_r, core_r = results[("beam", n)], results[("core", n)]
        line = (f"  {n:,} cells: core top level {core_r['cells_per_s']:,.0f} cells/s; beam "
                f"end to end {beam_r['cells_per_s']:,.0f} cells/s "
                f"({beam_r['cells_per_s'] / core_r['cells_per_s']:.2f}x core)")
        if ("naive", n) in results:
            nv = results[("naive", n)]
            line += (f"; naive peak {nv['peak_rss_mb']:,.0f} MB = "
                     f"{nv['peak_rss_mb'] / beam_r['peak_rss_mb']:.2f}x beam's")
        print(line)
    big, core_big = results[("beam", sizes[-1])], results[("core", sizes[-1])]
    dofn = big.get("top_level_cells_per_s")
    print(f"\ntargets at {sizes[-1]:,} cells, {args.cell} px cells:")
    core2 = results[("core2", sizes[-1])]
    print(f"  top level >= 2,000 cells/s: 1 process {core_big['cells_per_s']:,.0f}, "
          f"2 processes {core2['cells_per_s']:,.0f}"
          + (f", Beam top-level DoFn (1 worker) {dofn:,.0f}" if dofn else ""))
    print(f"  Beam peak memory < 1 GB: {big['peak_rss_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
