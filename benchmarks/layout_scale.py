"""Layout stage vs the original gridded t-SNE recipe, side by side, and assignment scaling.

    python benchmarks/layout_scale.py                 # 1,024 and 4,096 vs the recipe; 16,384 and
                                                      # 65,536 alone; assignment at 10k and 100k
    python benchmarks/layout_scale.py --huge          # also 1,000,000 (stage and assignment)
    python benchmarks/layout_scale.py --exact-assign 10000   # also exact assignment at 10,000

The original recipe (as in the gridded t-SNE blog post): openTSNE, points scaled to [0, 1],
a dense (N x N) squared-distance cost matrix to a regular grid, and ``lap.lapjv`` over all of
it. This stage: ``gridtsne.layout.compute_layout`` with its defaults.

Vectors: real EfficientNet-Lite0 embeddings of CIFAR-10 photos (``benchmarks/cifar_vectors.py``,
cached by that script outside the repository) for as many images as are cached or embeddable
(``--cifar-max``, default 16,384), synthetic clustered vectors beyond. Each measurement runs in
its own process, so "peak MB" is that process's peak resident memory (Python, libraries and
the input included). DPQ16 is on all images up to 10,000, else on a seeded sample of 10,000.
The CPU is shared: times are noisy, the ratios are what matter.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

DPQ_ITEMS = 10_000


def synthetic_vectors(n, dim=64, clusters=100, seed=0):
    """Unit vectors in ``clusters`` Gaussian clusters of unequal size and spread."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    which = rng.choice(clusters, size=n, p=rng.dirichlet(np.full(clusters, 2.0)))
    spread = rng.uniform(0.2, 0.6, clusters).astype(np.float32)
    v = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        w = which[s:s + 100_000]
        v[s:s + 100_000] = centres[w] + spread[w, None] * rng.standard_normal(
            (len(w), dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def synthetic_points(n, clusters=60, seed=0):
    """2-D points shaped like a t-SNE map: many blobs of unequal size and spread."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-40, 40, size=(clusters, 2))
    which = rng.choice(clusters, size=n, p=rng.dirichlet(np.full(clusters, 2.0)))
    return centres[which] + rng.normal(size=(n, 2)) * rng.uniform(1, 5, clusters)[which, None]


def load_vectors(n, cifar_max):
    if n <= cifar_max:
        from cifar_vectors import cifar_vectors
        got = cifar_vectors(n, embed_missing=True)
        if got is not None:
            return got[0], "cifar10"
    return synthetic_vectors(n), "synthetic"


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _quality(vectors, row, col):
    from gridtsne.metrics import dpq, sample_for_metrics
    pick = sample_for_metrics(len(vectors), DPQ_ITEMS, seed=0)
    return dpq(vectors[pick], np.asarray(row)[pick], np.asarray(col)[pick])


def task_recipe(n, cifar_max):
    """openTSNE + lap.lapjv over the full dense cost matrix (the original recipe)."""
    import lap
    from openTSNE import TSNE
    from scipy.spatial.distance import cdist
    vectors, source = load_vectors(n, cifar_max)
    base_mb = _peak_mb()
    start = time.perf_counter()
    xy = np.asarray(TSNE(n_jobs=-1, random_state=0).fit(vectors))
    t_tsne = time.perf_counter() - start
    side = int(np.ceil(np.sqrt(n)))
    xy = (xy - xy.min(0)) / (xy.max(0) - xy.min(0))
    gx, gy = np.meshgrid(np.linspace(0, 1, side), np.linspace(0, 1, side))
    grid = np.column_stack([gx.ravel(), gy.ravel()])[:n]
    start = time.perf_counter()
    cost = cdist(grid, xy, "sqeuclidean")
    cost = cost * (100000 / cost.max())
    _, row_of_grid, _ = lap.lapjv(cost)
    t_assign = time.perf_counter() - start
    cell = np.empty(n, dtype=np.int64)
    cell[row_of_grid] = np.arange(n)
    row, col = np.divmod(cell, side)
    return dict(source=source, tsne_s=t_tsne, assign_s=t_assign, total_s=t_tsne + t_assign,
                peak_mb=_peak_mb(), input_mb=base_mb, dpq16=_quality(vectors, row, col))


def task_ours(n, cifar_max, exact_compare=False):
    """This stage's compute_layout with default settings (optionally also exact assignment)."""
    from gridtsne.assign import assign_exact, total_cost
    from gridtsne.grid import to_grid_units
    from gridtsne.layout import LayoutConfig, compute_layout
    vectors, source = load_vectors(n, cifar_max)
    base_mb = _peak_mb()
    start = time.perf_counter()
    x, y, row, col, info = compute_layout(vectors, LayoutConfig(verbose=False))
    total = time.perf_counter() - start
    out = dict(source=source, tsne_s=info["timings"]["tsne_s"], assign_s=info["timings"]["assign_s"],
               refine_s=info["timings"].get("refine_s", 0.0), refine=info["refine"],
               total_s=total, peak_mb=_peak_mb(), input_mb=base_mb, method=info["method"],
               grid=f"{info['rows']}x{info['cols']}", tsne=info["tsne"],
               dpq16=_quality(vectors, row, col))
    if exact_compare and info["method"] != "exact":
        shape = (info["rows"], info["cols"])
        pts = to_grid_units(np.column_stack([x, y]), shape)
        start = time.perf_counter()
        r, c = np.divmod(assign_exact(pts, shape), shape[1])
        out["exact_assign_s"] = time.perf_counter() - start
        out["exact_dpq16"] = _quality(vectors, r, c)
        out["exact_cost"] = total_cost(pts, r, c) / n
        out["cost"] = total_cost(pts, row, col) / n
    return out


def task_assign(n, exact=False):
    """Grid assignment alone on t-SNE-like points: scalable (and exact when asked)."""
    from gridtsne.assign import assign_exact, assign_scalable, total_cost
    from gridtsne.grid import auto_grid, to_grid_units
    shape = auto_grid(n)
    pts = to_grid_units(synthetic_points(n), shape)
    base_mb = _peak_mb()
    start = time.perf_counter()
    cells = assign_exact(pts, shape) if exact else assign_scalable(pts, shape)
    elapsed = time.perf_counter() - start
    row, col = np.divmod(cells, shape[1])
    ok = len(np.unique(cells)) == n
    return dict(method="exact" if exact else "scalable", assign_s=elapsed, peak_mb=_peak_mb(),
                input_mb=base_mb, cost=total_cost(pts, row, col) / n, valid=bool(ok))


def _child(args):
    kind, n = args.child[0], int(args.child[1])
    if kind == "recipe":
        result = task_recipe(n, args.cifar_max)
    elif kind == "ours":
        result = task_ours(n, args.cifar_max, exact_compare=n <= args.exact_stage)
    else:
        result = task_assign(n, exact=kind == "assign-exact")
    print("RESULT " + json.dumps(result))


def _spawn(kind, n, args):
    cmd = [sys.executable, __file__, "--child", kind, str(n), "--cifar-max", str(args.cifar_max),
           "--exact-stage", str(args.exact_stage)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    sys.stderr.write(proc.stderr[-3000:])
    raise RuntimeError(f"{kind} at N={n} failed (exit {proc.returncode})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", default="1024,4096", help="sizes run against the recipe")
    parser.add_argument("--alone", default="16384,65536", help="sizes run with this stage only")
    parser.add_argument("--assign-sizes", default="10000,100000")
    parser.add_argument("--huge", action="store_true", help="also N = 1,000,000")
    parser.add_argument("--exact-assign", type=int, nargs="*", default=[],
                        help="also exact assignment alone at these sizes (slow)")
    parser.add_argument("--exact-stage", type=int, default=4096,
                        help="up to this N, also solve the stage's t-SNE output exactly and "
                             "compare DPQ16 with the default (scalable) assignment")
    parser.add_argument("--cifar-max", type=int, default=16384,
                        help="use real CIFAR-10 vectors up to this N, synthetic above")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)
    sizes = lambda text: [int(s) for s in text.split(",") if s]  # noqa: E731
    print(f"layout_scale on {os.cpu_count()} cores; peak MB = peak resident memory of the "
          f"measuring process", flush=True)
    print("\n== whole stage: this stage vs the original recipe ==")
    head = f"{'N':>8} {'who':<7} {'vectors':<9} {'t-SNE s':>8} {'assign s':>9} {'total s':>8} " \
           f"{'peak MB':>8} {'DPQ16':>7}  notes"
    print(head, flush=True)
    for n in sizes(args.compare):
        rec = _spawn("recipe", n, args)
        ours = _spawn("ours", n, args)
        for who, r in (("recipe", rec), ("ours", ours)):
            notes = f"{r.get('method', 'lapjv')} {r.get('grid', '')}"
            if "exact_dpq16" in r:
                notes += f", exact on our t-SNE: DPQ16 {r['exact_dpq16']:.4f} in {r['exact_assign_s']:.1f} s"
            print(f"{n:>8} {who:<7} {r['source']:<9} {r['tsne_s']:>8.1f} {r['assign_s']:>9.2f} "
                  f"{r['total_s']:>8.1f} {r['peak_mb']:>8.0f} {r['dpq16']:>7.4f}  {notes}")
        print(f"{n:>8} ratio ours/recipe: total time x{ours['total_s'] / rec['total_s']:.2f}, "
              f"assignment time x{ours['assign_s'] / rec['assign_s']:.3f}, "
              f"peak memory x{ours['peak_mb'] / rec['peak_mb']:.2f}, "
              f"DPQ16 {ours['dpq16'] - rec['dpq16']:+.4f}", flush=True)
    alone = sizes(args.alone) + ([1_000_000] if args.huge else [])
    for n in alone:
        r = _spawn("ours", n, args)
        notes = f"{r['method']} {r['grid']} fit_sample={r['tsne']['fit_sample']} " \
                f"pca={r['tsne']['pca_dims']}, refinement {r['refine'].get('method')} " \
                f"{r['refine_s']:.1f} s ({r['refine'].get('passes', 0)} passes)"
        if "exact_dpq16" in r:
            notes += f", exact on our t-SNE: DPQ16 {r['exact_dpq16']:.4f} in {r['exact_assign_s']:.1f} s"
        print(f"{n:>8} {'ours':<7} {r['source']:<9} {r['tsne_s']:>8.1f} {r['assign_s']:>9.2f} "
              f"{r['total_s']:>8.1f} {r['peak_mb']:>8.0f} {r['dpq16']:>7.4f}  {notes}", flush=True)
    print("\n== grid assignment alone (t-SNE-like synthetic points) ==")
    print(f"{'N':>8} {'method':<9} {'seconds':>8} {'peak MB':>8} {'mean sq. displacement':>22}")
    runs = [(n, "assign") for n in sizes(args.assign_sizes) + ([1_000_000] if args.huge else [])]
    runs += [(n, "assign-exact") for n in args.exact_assign]
    results = {}
    for n, kind in runs:
        r = _spawn(kind, n, args)
        results[(n, r["method"])] = r
        extra = ""
        if r["method"] == "exact" and (n, "scalable") in results:
            s = results[(n, "scalable")]
            extra = f"  scalable/exact: time x{s['assign_s'] / r['assign_s']:.3f}, " \
                    f"cost x{s['cost'] / r['cost']:.4f}"
        print(f"{n:>8} {r['method']:<9} {r['assign_s']:>8.2f} {r['peak_mb']:>8.0f} "
              f"{r['cost']:>22.3f}{'' if r['valid'] else '  INVALID'}{extra}", flush=True)


if __name__ == "__main__":
    main()
