"""Render throughput and memory: the Beam stage on 1, 2 ... cores, and the ways to split it.

    python benchmarks/render_scale.py [--sizes 10000,60000] [--workers 1,2] [--repeat 1]
        [--thumbnails clothing|cifar] [--kinds beam,core,threads,pool,runner,naive]
        [--cell 128] [--tile 256] [--stages]

Inputs: thumbnails made exactly as the embedding stage makes them
(``gridtsne.decode.make_thumbnail``, 128 px, cached once under ``benchmarks/.cache/``) from
``../shared/data``: ``clothing`` (default; 3,781 real 400x533 photos, so 96x128 px
thumbnails, reused round-robin up to the size asked for) or ``cifar`` (60,000 photos of
32x32 px: thumbnails that small decode 10x faster than real ones); a row-major layout on
the auto grid. Each measurement runs in a fresh process whose whole process tree is sampled
for resident memory; ``--repeat`` runs each that many times, in rounds (every measurement
once, then again), and reports the median.

* ``beam``: the real stage, ``RenderMosaic`` on the DirectRunner (``in_memory``: all levels,
  overviews, indexes, page), once per ``--workers`` value as ``RenderConfig.render_workers``
  (1: tiles drawn in the runner's thread, as before; N: a pool of N tile processes);
* ``core``: the top level only, in one process: ``draw_top_tile`` (draw, encode, write) per
  tile, thumbnails preloaded: the per-core speed of the top level;
* ``threads``: the same top level on a thread pool of the largest ``--workers``;
* ``pool``: the same top level on a :class:`gridtsne.tile_workers.TilePool` of that many
  processes, in batches as the stage sends them;
* ``runner``: the Beam stage with tiles drawn inline (``render_workers`` 1) but the
  DirectRunner in ``multi_processing`` mode with that many workers: bundles the runner
  spreads;
* ``naive``: the top level by drawing the whole mosaic into one image and cutting tiles
  from it, which is what the tile-by-tile design avoids: its memory grows with the grid.

``--stages`` also prints, for each Beam run, the seconds of every runner stage over 0.05 s
(a timer around the in-memory runner's bundles), from the clock's start: where the tile
processes wait for the Beam process.

Targets: on 2 cores, the Beam stage's cells/s with ``--workers 2`` at least 1.7x that with 1
(median of 3, a quiet machine); on a 16-core machine, at least 5,000 cells/s; peak memory of
the Beam render about flat from 10,000 to 60,000 cells.
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
DATA = ROOT.parent / "shared" / "data"
SETS = {"clothing": "clothing-small", "cifar": "cifar10"}


# ---- inputs ---------------------------------------------------------------------------------

def cache_path(name):
    return HERE / ".cache" / f"{SETS[name]}_thumbnails.parquet"


def build_cache(name):
    """Thumbnails of all photos of one set as the embedding stage makes them (read once)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from gridtsne.decode import make_thumbnail

    cache = cache_path(name)
    if cache.exists():
        return
    folder = DATA / SETS[name]
    if not folder.is_dir():
        sys.exit(f"{folder} is missing: the benchmark needs ../shared/data/{SETS[name]}")
    files = sorted(folder.glob("*/*/*.jpg"))
    print(f"building {cache} from {len(files)} files (once)...", flush=True)
    uris, thumbs, sizes = [], [], []
    for f in files:
        data = f.read_bytes()
        rgb = Image.open(io.BytesIO(data)).convert("RGB")
        uris.append(str(f))
        thumbs.append(make_thumbnail(rgb, 128, 85))
        sizes.append(len(data))
    cache.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"uri": uris, "thumbnail": thumbs, "bytes": sizes}), cache)


def write_inputs(n, folder, name):
    """A vectors table of ``n`` cached thumbnails (reused round-robin, each under its own
    URI) and a row-major layout on the auto grid."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gridtsne import schema, storage
    from gridtsne.grid import auto_grid

    cache = pq.read_table(cache_path(name))
    t = cache.take(pa.array(np.arange(n) % cache.num_rows))
    t = t.set_column(0, "uri", pa.array([f"{u}#{i}" for i, u in enumerate(
        t["uri"].to_pylist())]))
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


# ---- the approaches (each run in a child process) ------------------------------------------

def child_beam(args, mode="in_memory", direct_workers=1, render_workers=None):
    from apache_beam.metrics.metric import MetricsFilter

    from apache_beam.options.pipeline_options import PipelineOptions
    from pipelines.beam_runner import new_pipeline
    from transforms.render import NAMESPACE, RenderConfig, RenderMosaic

    render_workers = args.render_workers if render_workers is None else render_workers
    import resource

    flags = ["--direct_num_workers", str(direct_workers), "--direct_running_mode", mode]
    stages = _time_stages() if args.stages and mode == "in_memory" else None
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    p = new_pipeline(PipelineOptions(flags))
    _ = p | RenderMosaic(args.vectors, args.layout, args.output,
                         RenderConfig(cell=args.cell, tile=args.tile,
                                      render_workers=render_workers))
    result = p.run()
    result.wait_until_finish()
    wall = time.perf_counter() - start
    from gridtsne import tile_workers
    pools = len(tile_workers._pools)  # released by the DoFns' teardown: 0
    cpu_self = resource.getrusage(resource.RUSAGE_SELF)
    cpu_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads(Path(args.output, "site.json").read_text())
    top_ms = None
    try:
        dists = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["distributions"]
        for d in dists:
            if d.key.metric.name == "top_block_ms":
                top_ms = (d.committed or d.attempted).sum
    except Exception:  # metrics are best effort on the DirectRunner's process mode
        pass
    top_level = str(summary["levels"] - 1)
    if stages is not None:  # seconds from the clock's start, per stage of the runner
        stages = [(round(t - start, 2), round(d, 2), name) for t, d, name in stages]
    return {"wall_s": wall, "stages": stages,
            "cells": summary["images"], "tiles": summary["tiles_total"],
            "top_tiles": summary["tiles"][top_level], "top_tile_ms_sum": top_ms,
            "cpu_main_s": (cpu_self.ru_utime + cpu_self.ru_stime
                           - cpu_before.ru_utime - cpu_before.ru_stime),
            "cpu_workers_s": cpu_kids.ru_utime + cpu_kids.ru_stime, "pools_left": pools}


def _time_stages():
    """Time every bundle the in-memory runner executes: ``[(start, seconds, stage), ...]``,
    the stage named by its transforms (``RenderMosaic/<name>``, runner plumbing left out)."""
    import re

    from apache_beam.runners.portability.fn_api_runner import fn_runner

    timed, run = [], fn_runner.FnApiRunner._execute_bundle

    def execute(self, context, bundle, data):
        t = time.perf_counter()
        try:
            return run(self, context, bundle, data)
        finally:
            names = sorted(set(re.findall(r"RenderMosaic[/-]([A-Za-z]+)", bundle.stage.name)))
            timed.append((t, time.perf_counter() - t, "+".join(names)))

    fn_runner.FnApiRunner._execute_bundle = execute
    return timed


def child_runner(args):
    """Tiles drawn inline, bundles spread by the DirectRunner over worker processes."""
    return child_beam(args, "multi_processing", args.render_workers, render_workers=1)


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
    t = pq.read_table(layout, columns=["uri", "row", "col", "x", "y"])
    return list(zip(*[t[c].to_pylist() for c in t.column_names]))


def _top_level(args, run):
    """Time ``run(job, items)`` over every top-level tile, inputs loaded beforehand."""
    from gridtsne.render_inputs import plan_render
    from gridtsne.tile_workers import TileJob

    plan = plan_render(args.layout, args.cell, args.tile)
    g = plan.geometry
    job = TileJob(g, plan.tsne, args.output)
    thumbs = _fitted_thumbnails(args.vectors)
    by_tile = {}
    for uri, row, col, x, y in _cells(args.layout):
        for key in g.tiles_of_cell(row, col):
            by_tile.setdefault(key, []).append((uri, row, col, thumbs.get(uri), x, y))
    items = [(tx, ty, by_tile.get((tx, ty), [])) for tx, ty in g.tile_keys(g.max_level)]
    start = time.perf_counter()
    done = run(job, items)
    wall = time.perf_counter() - start
    assert len(done) == len(items)
    return {"wall_s": wall, "cells": plan.images, "tiles": len(items), "top_tiles": len(items)}


def child_core(args):
    from gridtsne.tile_workers import draw_top_tile
    return _top_level(args, lambda job, items: [draw_top_tile(job, *i) for i in items])


def child_threads(args):
    from concurrent.futures import ThreadPoolExecutor

    from gridtsne.tile_workers import draw_top_tile

    def run(job, items):
        with ThreadPoolExecutor(args.render_workers) as ex:
            return list(ex.map(lambda i: draw_top_tile(job, *i), items))
    return _top_level(args, run)


def child_pool(args):
    from gridtsne.tile_workers import TilePool, TileQueue, draw_top_tile

    pool = TilePool(args.render_workers)
    try:
        pool.submit(sum, []).result()  # the workers are up before the clock starts

        def run(job, items):
            queue = TileQueue(draw_top_tile, job, pool, args.render_workers)
            done = []
            for item in items:
                done += queue.put(*item)
            return done + queue.drain()
        return _top_level(args, run)
    finally:
        pool.shutdown()


def child_naive(args):
    from PIL import Image

    from gridtsne import storage, tiles
    from gridtsne.render_inputs import plan_render

    plan = plan_render(args.layout, args.cell, args.tile)
    g = plan.geometry
    thumbs = _fitted_thumbnails(args.vectors)
    start = time.perf_counter()
    mosaic = Image.new("RGB", (g.width, g.height), tiles.BACKGROUND)
    for uri, row, col, _, _ in _cells(args.layout):
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


CHILDREN = {"beam": child_beam, "core": child_core, "threads": child_threads,
            "pool": child_pool, "runner": child_runner, "naive": child_naive}


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


def measure(kind, workers, inputs, out, args):
    os.sync()  # the last run's tiles reach the disk now, not during this run's clock
    cmd = [sys.executable, __file__, "--child", kind, "--vectors", inputs[0], "--layout",
           inputs[1], "--output", out, "--cell", str(args.cell), "--tile", str(args.tile),
           "--render-workers", str(workers)] + (["--stages"] if args.stages else [])
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
        sys.exit(f"{kind} with {workers} failed:\n{stderr[-3000:]}\n" + "\n".join(errors[-10:]))
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = peak[0] / 2**20
    return result


def one_run(kind, workers, inputs, tmp, args, i):
    """One measurement into a fresh folder, deleted after."""
    import shutil

    out = os.path.join(tmp, f"site-{kind}-{workers}-{i}")
    try:
        return measure(kind, workers, inputs, out, args)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def median_of(runs):
    """The run with the median wall time, with every run's wall time."""
    runs = sorted(runs, key=lambda r: r["wall_s"])
    r = dict(runs[len(runs) // 2])
    r["walls"] = [x["wall_s"] for x in runs]
    r["cells_per_s"] = r["cells"] / r["wall_s"]
    r["tiles_per_s"] = r["tiles"] / r["wall_s"]
    if r.get("top_tile_ms_sum"):
        r["top_level_cells_per_s"] = r["cells"] / (r["top_tile_ms_sum"] / 1000)
    return r


LABELS = {"beam": "Beam stage, {w} tile process(es)", "core": "top level, 1 process",
          "threads": "top level, {w} threads", "pool": "top level, TilePool of {w}",
          "runner": "Beam stage, DirectRunner multi_processing x{w}",
          "naive": "top level, whole mosaic then cut"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,60000")
    parser.add_argument("--cell", type=int, default=128)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--workers", default="1,2",
                        help="comma-separated RenderConfig.render_workers for the Beam stage; "
                             "the largest is used by threads, pool and runner")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    parser.add_argument("--thumbnails", default="clothing", choices=sorted(SETS))
    parser.add_argument("--kinds", default="beam,core,threads,pool,naive",
                        help=f"comma-separated, of {sorted(CHILDREN)}")
    parser.add_argument("--workdir", default=str(HERE / ".cache" / "work"),
                        help="where inputs and sites are written (a local disk; deleted after)")
    parser.add_argument("--stages", action="store_true",
                        help="also print where each Beam run's time goes, stage by stage")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--render-workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--vectors", help=argparse.SUPPRESS)
    parser.add_argument("--layout", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return
    kinds = args.kinds.split(",")
    unknown = sorted(set(kinds) - set(CHILDREN))
    if unknown:
        sys.exit(f"unknown --kinds {unknown}, choose from {sorted(CHILDREN)}")
    workers = [int(w) for w in args.workers.split(",")]
    most = max(workers)
    build_cache(args.thumbnails)
    print(f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} available; "
          f"{args.thumbnails} thumbnails; median of {args.repeat}", flush=True)
    plan = [("beam", w) for w in workers if "beam" in kinds]
    plan += [(k, 1 if k in ("core", "naive") else most) for k in kinds if k != "beam"]
    results = {}
    for n in [int(s) for s in args.sizes.split(",")]:
        os.makedirs(args.workdir, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="render-scale-", dir=args.workdir) as tmp:
            inputs = write_inputs(n, tmp, args.thumbnails)
            print(f"\n{n:,} cells on a {inputs[2][0]}x{inputs[2][1]} grid, {args.cell} px cells, "
                  f"{args.tile} px tiles", flush=True)
            # Rounds of every measurement in turn, not each one's repeats in a row: the
            # machine's speed drifts, and a ratio of runs far apart would measure the drift.
            runs = {}
            for i in range(args.repeat):
                for kind, w in plan:
                    runs.setdefault((kind, w), []).append(one_run(kind, w, inputs, tmp, args, i))
            for kind, w in plan:
                r = median_of(runs[(kind, w)])
                results[(kind, w, n)] = r
                top = (f", blocks {r['top_level_cells_per_s']:,.0f} cells/s of block time"
                       if r.get("top_level_cells_per_s") else "")
                walls = "/".join(f"{x:.1f}" for x in r["walls"])
                if "cpu_main_s" in r:
                    top += (f"; CPU s: Beam process {r['cpu_main_s']:.1f}, tile processes "
                            f"{r['cpu_workers_s']:.1f}")
                print(f"  {LABELS[kind].format(w=w):<46} {r['wall_s']:6.1f} s ({walls})  "
                      f"{r['tiles']:>6} tiles {r['cells_per_s']:7,.0f} cells/s  "
                      f"peak {r['peak_rss_mb']:5,.0f} MB{top}", flush=True)
                for t, d, name in (r.get("stages") or []):
                    if d >= 0.05:
                        print(f"      at {t:5.2f} s  {d:5.2f} s  {name}")
    sizes = sorted({n for _, _, n in results})
    print("\nratios")
    for n in sizes:
        base = results.get(("beam", 1, n))
        for w in workers:
            if base and w != 1 and ("beam", w, n) in results:
                r = results[("beam", w, n)]
                print(f"  {n:,} cells: Beam stage cells/s with {w} tile processes / with 1: "
                      f"{r['cells_per_s'] / base['cells_per_s']:.2f}x "
                      f"({r['cells_per_s']:,.0f} vs {base['cells_per_s']:,.0f})")
        if base and ("runner", most, n) in results:
            r = results[("runner", most, n)]
            print(f"  {n:,} cells: Beam stage, DirectRunner multi_processing x{most} / 1 process: "
                  f"{r['cells_per_s'] / base['cells_per_s']:.2f}x, peak memory "
                  f"{r['peak_rss_mb'] / base['peak_rss_mb']:.1f}x")
        core = results.get(("core", 1, n))
        for kind in ("threads", "pool"):
            if core and (kind, most, n) in results:
                r = results[(kind, most, n)]
                print(f"  {n:,} cells: top level, {LABELS[kind].format(w=most).split(', ')[1]} "
                      f"/ 1 process: {r['cells_per_s'] / core['cells_per_s']:.2f}x")
    if len(sizes) > 1:
        for (kind, w) in plan:
            a, b = results[(kind, w, sizes[0])], results[(kind, w, sizes[-1])]
            print(f"  {LABELS[kind].format(w=w)}: peak memory {sizes[-1]:,} / {sizes[0]:,} "
                  f"cells: {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x "
                  f"(cells x{sizes[-1] / sizes[0]:.0f})")


if __name__ == "__main__":
    main()
