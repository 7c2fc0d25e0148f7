"""Layout quality and speed: the original recipe, the old default and candidates, side by side.

    python benchmarks/layout_quality.py                              # the full table (slow)
    python benchmarks/layout_quality.py --sets cifar4096 --seeds 0   # one set, one seed
    python benchmarks/layout_quality.py --candidates recipe,default  # just these two
    python benchmarks/layout_quality.py --jitter 4 ...               # 5 runs per seed

Sets: ``clothing`` (all 3,781 clothing-small photos), ``cifar4096`` and ``cifar16384`` (fixed
shuffled CIFAR-10 subsets), as EfficientNet-Lite0 vectors (``benchmarks/cifar_vectors.py``,
cached outside the repository; the first run embeds them, which takes minutes), each pooled
two ways: ``avg``, the network's own average pooling, which the original recipe used, and
``gem``, the GeM pooling gridtsne's embedding stage uses by default (:mod:`gridtsne.pooling`).

For every set and seed it runs the original recipe (openTSNE's defaults, points scaled to
[0, 1], a dense squared-distance cost matrix to a square grid filled row by row, ``lap.lapjv``)
on the average-pooled vectors and each candidate through
:func:`gridtsne.layout.compute_layout` on its vectors (``default``: GeM, as a user gets;
``default-avg``: today's layout on the recipe's vectors; ``recipe-gem``: the recipe on the GeM
vectors; older candidates: average-pooled), and prints DPQ16 on the layout's own vectors and
on the average-pooled ones, neighbour label agreement (NLA) and seconds per stage (t-SNE,
assignment, refinement), then the differences to the recipe: mean over seeds and their range
(min..max). Candidates with the
same t-SNE settings share one fit per seed (its seconds are counted in each of them). The
recipe's dense solve is skipped above ``--recipe-max`` images (16,384 would need a 2 GB matrix
and hours): there the recipe row uses the scalable assignment and says so. DPQ16 is computed on
all images up to ``--dpq-items``, else on a seeded sample of that many (a sample scores lower).
The CPU is shared: times are noisy; the ratios within one run are what count.

A t-SNE run is chaotic: ``--jitter K`` also runs every seed on K copies of the vectors changed
at the level of float32 rounding (each element times 1 + 1e-7 N(0, 1)), which give t-SNE other
runs of equal standing. The table then spans seeds x (K + 1) runs, and below it come the
paired differences to the recipe with their standard error, and each layout's spread of NLA:
what a difference must exceed to be more than chance.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

SETS = ("clothing", "cifar4096", "cifar16384")
# Relative size of the --jitter perturbation (float32 resolution is about 6e-8).
JITTER = 1e-7
OLD_EXACT_LIMIT = 4096
OLD = dict(perplexity=30.0, assign="old-auto", refine="none")
# name -> LayoutConfig fields ("old-auto": exact up to 4,096 images, scalable above, as the
# default assignment was before refinement existed).
# A candidate's "vectors" ("avg" unless it says) names the pooling of the vectors it is given.
CANDIDATES = {
    "old-default": OLD,
    "p15": {**OLD, "perplexity": 15.0},
    "p15-cosine": {**OLD, "perplexity": 15.0, "metric": "cosine"},
    "p15-iter1000": {**OLD, "perplexity": 15.0, "n_iter": 1000},
    "swaps": {**OLD, "refine": "swaps"},
    "scalable-swaps": {**OLD, "assign": "scalable", "refine": "swaps"},
    "p15-exact-swaps": {**OLD, "perplexity": 15.0, "assign": "exact", "refine": "swaps"},
    # The default before 16x16 assignment windows and the gauss pair cost.
    "previous-default": {"window": 12, "refine_distance": "euclidean"},
    "euclidean-swaps": {"refine_distance": "euclidean"},
    "window12-swaps": {"window": 12},
    "window24-swaps": {"window": 24},
    "exact-swaps": {"assign": "exact"},
    "iter1000-swaps": {"n_iter": 1000},
    # t-SNE fitted on transformed vectors (assignment, refinement and the metrics use the
    # vectors as they are): element-wise square root then unit length, and the same centred
    # on the set's mean (power normalisation; see TSNE_INPUTS).
    "sqrt-tsne": {"tsne_input": "sqrt"},
    "sqrt-centred-tsne": {"tsne_input": "sqrt-centred"},
    "default-avg": {},
    "default": {"vectors": "gem"},
}
# The original recipe on each pooling's vectors ("recipe" is what the differences are to).
RECIPES = {"recipe": "avg", "recipe-gem": "gem"}


def pooling_of(cand):
    """The pooling of the vectors a recipe or candidate is given."""
    return RECIPES[cand] if cand in RECIPES else CANDIDATES[cand].get("vectors", "avg")


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _sqrt_unit(x):
    return _unit(np.sqrt(np.maximum(x, 0)))


def _sqrt_centred(x):
    s = _sqrt_unit(x)
    return _unit(s - s.mean(0))


# Inputs a candidate's t-SNE can be fitted on instead of the vectors (non-negative CNN
# features, as EfficientNet-Lite0's pooled activations are).
TSNE_INPUTS = {
    "sqrt": _sqrt_unit,
    "sqrt-centred": _sqrt_centred,
}


def load_set(name, poolings):
    """``({pooling: vectors}, labels)`` of a named set, or None when its photos are absent.

    Only the named poolings are loaded (embedded on the first run): a GeM set costs minutes.
    """
    from cifar_vectors import cifar_vectors, clothing_vectors
    got = {}
    for pooling in poolings:
        one = (clothing_vectors(pooling=pooling) if name == "clothing"
               else cifar_vectors(int(name[5:]), pooling=pooling))
        if one is None:
            return None
        got[pooling] = one[0]
    return got, one[1]


def recipe(vectors, seed, dense_max):
    """The original recipe: ``(row, col, timings)``."""
    import lap
    from openTSNE import TSNE
    from scipy.spatial.distance import cdist
    n = len(vectors)
    start = time.perf_counter()
    xy = np.asarray(TSNE(n_jobs=-1, random_state=seed).fit(vectors))
    t_tsne = time.perf_counter() - start
    start = time.perf_counter()
    side = int(np.ceil(np.sqrt(n)))
    if n <= dense_max:
        xy = (xy - xy.min(0)) / (xy.max(0) - xy.min(0))
        gx, gy = np.meshgrid(np.linspace(0, 1, side), np.linspace(0, 1, side))
        grid = np.column_stack([gx.ravel(), gy.ravel()])[:n]
        cost = cdist(grid, xy, "sqeuclidean")
        cost = cost * (100000 / cost.max())
        _, row_of_grid, _ = lap.lapjv(cost)
        cell = np.empty(n, dtype=np.int64)
        cell[row_of_grid] = np.arange(n)
        row, col = np.divmod(cell, side)
        how = "lap.lapjv dense"
    else:
        from gridtsne.assign import assign_to_grid
        from gridtsne.grid import auto_grid, to_grid_units
        shape = auto_grid(n)
        row, col, _ = assign_to_grid(to_grid_units(xy, shape), shape, "scalable")
        how = "scalable (dense too large)"
    return row, col, {"tsne_s": t_tsne, "assign_s": time.perf_counter() - start,
                      "refine_s": 0.0, "how": how}


def candidate(vectors, fields, seed, fits):
    """One candidate through compute_layout, reusing a t-SNE fit with the same settings."""
    from gridtsne.layout import LayoutConfig, compute_layout
    from gridtsne.tsne import embed_2d
    fields = dict(fields)
    tsne_input = fields.pop("tsne_input", None)
    if fields.get("assign") == "old-auto":
        fields["assign"] = "exact" if len(vectors) <= OLD_EXACT_LIMIT else "scalable"
    config = LayoutConfig(seed=seed, verbose=False, **fields)
    key = (config.perplexity, config.metric, config.n_iter, config.early_exaggeration_iter,
           tsne_input)
    xy, tsne_s = fits.get(key, (None, None))
    if xy is None and tsne_input is not None:
        # The fit (and the transform, counted in its seconds) on the transformed vectors.
        start = time.perf_counter()
        x_in = TSNE_INPUTS[tsne_input](np.asarray(vectors, dtype=np.float64)).astype(np.float32)
        xy, _ = embed_2d(x_in, **config.tsne_options())
        tsne_s = time.perf_counter() - start
        fits[key] = (xy, tsne_s)
    x, y, row, col, info = compute_layout(vectors, config, xy=xy)
    t = dict(info["timings"])
    if xy is None:
        fits[key] = (np.column_stack([x, y]), t["tsne_s"])
    else:
        t["tsne_s"] = tsne_s
    t["how"] = f"{info['method']}" + (", swaps" if info["refine"]["method"] == "swaps" else "")
    return row, col, t


def knn_label_agreement(x, labels, k, chunk=2048):
    """Fraction of each point's ``k`` nearest neighbours (Euclidean, brute force in chunks)
    that share its label: what a layout whose neighbours were exactly these would score."""
    x = np.asarray(x, dtype=np.float32)
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    sq = np.einsum("ij,ij->i", x, x)
    hits = 0
    for s in range(0, len(x), chunk):
        d = sq[s:s + chunk, None] + sq[None, :] - 2.0 * (x[s:s + chunk] @ x.T)
        d[np.arange(len(d)), np.arange(s, s + len(d))] = np.inf
        nn = np.argpartition(d, k, axis=1)[:, :k]
        hits += int((y[nn] == y[s:s + chunk, None]).sum())
    return hits / (len(x) * k)


def quality(vectors, avg_vectors, labels, row, col, dpq_items):
    """DPQ16 on the layout's own vectors and on the average-pooled ones, and NLA."""
    from gridtsne.metrics import dpq, neighbour_label_agreement, sample_for_metrics
    pick = sample_for_metrics(len(vectors), dpq_items, seed=0)
    r, c = np.asarray(row)[pick], np.asarray(col)[pick]
    own = dpq(vectors[pick], r, c)
    on_avg = own if avg_vectors is vectors else dpq(avg_vectors[pick], r, c)
    return own, on_avg, neighbour_label_agreement(row, col, labels)


def _fmt(values, digits=4, signed=False):
    v = np.asarray(values, dtype=float)
    sign = "+" if signed else ""
    text = f"{v.mean():{sign}.{digits}f}"
    if len(v) > 1:
        text += f" ({v.min():{sign}.{digits}f}..{v.max():{sign}.{digits}f})"
    return text


def _mean_se(values):
    """``mean ± standard error`` of paired differences."""
    v = np.asarray(values, dtype=float)
    return f"{v.mean():+.4f} ± {v.std(ddof=1) / np.sqrt(len(v)):.4f}"


def jittered(vectors, j, scale=JITTER):
    """The vectors themselves for ``j == 0``; else a copy with every element multiplied by
    ``1 + scale * N(0, 1)`` (seeded by ``j``): a change at the level of float32 rounding that
    nonetheless gives t-SNE a different run."""
    if j == 0:
        return vectors
    noise = np.random.default_rng(1000 + j).standard_normal(vectors.shape)
    return (vectors * (1.0 + scale * noise)).astype(vectors.dtype)


def report(name, n, results, names):
    """Print the markdown table of one set: results[candidate] = list of per-seed dicts."""
    base = results["recipe"]
    print(f"\n### {name} ({n:,} images, runs: {len(base)})\n")
    print("| layout | vectors | how | DPQ16 | DPQ16 on avg vectors | NLA | ΔDPQ16 vs recipe | "
          "ΔNLA vs recipe | t-SNE s | assign s | refine s | total s | time / recipe |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
          "---: |")
    for cand in ["recipe"] + names:
        rs = results.get(cand)
        if not rs:
            continue
        d = [r["dpq"] - b["dpq"] for r, b in zip(rs, base)]
        a = [r["nla"] - b["nla"] for r, b in zip(rs, base)]
        ratio = [r["total_s"] / b["total_s"] for r, b in zip(rs, base)]
        mean = {k: np.mean([r[k] for r in rs]) for k in ("tsne_s", "assign_s", "refine_s",
                                                         "total_s")}
        print(f"| {cand} | {rs[0]['vectors']} | {rs[0]['how']} | "
              f"{_fmt([r['dpq'] for r in rs])} | {_fmt([r['dpq_avg'] for r in rs])} | "
              f"{_fmt([r['nla'] for r in rs])} | {_fmt(d, signed=True)} | {_fmt(a, signed=True)} | "
              f"{mean['tsne_s']:.1f} | {mean['assign_s']:.1f} | {mean['refine_s']:.1f} | "
              f"{mean['total_s']:.1f} | {_fmt(ratio, 2)} |", flush=True)
    if len(base) > 1:
        print()
        for cand in names:
            rs = results.get(cand)
            if rs:
                print(f"- {cand} - recipe, paired over {len(rs)} runs: ΔDPQ16 "
                      f"{_mean_se([r['dpq'] - b['dpq'] for r, b in zip(rs, base)])}, ΔNLA "
                      f"{_mean_se([r['nla'] - b['nla'] for r, b in zip(rs, base)])}")
        spread = ", ".join(f"{c} {np.std([r['nla'] for r in results[c]], ddof=1):.4f}"
                           for c in ["recipe"] + names if results.get(c))
        print(f"- NLA standard deviation over the runs: {spread}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated of {SETS}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated t-SNE seeds")
    parser.add_argument("--candidates", default=",".join([*RECIPES, *CANDIDATES]),
                        help="comma-separated of " + ",".join([*RECIPES, *CANDIDATES]))
    parser.add_argument("--recipe-max", type=int, default=4096,
                        help="largest set solved densely with lap.lapjv for the recipe")
    parser.add_argument("--dpq-items", type=int, default=10_000,
                        help="DPQ16 on a seeded sample of this many images above it")
    parser.add_argument("--ceiling", action="store_true",
                        help="also print how often the 4 nearest neighbours share a label in the "
                             "vector space and in each t-SNE fit (4 and 10 neighbours): the room "
                             "a grid's label agreement has")
    parser.add_argument("--jitter", type=int, default=0,
                        help="also run every seed on this many copies of the vectors changed at "
                             "the level of float rounding (relative 1e-7): how much of a "
                             "difference is the t-SNE run's chance")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [c for c in args.candidates.split(",") if c]
    unknown = set(names) - {*RECIPES, *CANDIDATES}
    if unknown:
        parser.error(f"unknown candidates {sorted(unknown)}")
    # The recipe runs on every set, and DPQ16 is also measured on its average-pooled vectors.
    poolings = list(dict.fromkeys(["avg", *map(pooling_of, names)]))
    for set_name in args.sets.split(","):
        if set_name not in SETS:
            parser.error(f"unknown set {set_name!r}: one of {SETS}")
        data = load_set(set_name, poolings)
        if data is None:
            print(f"\n{set_name}: photos not found under ../shared/data, skipped")
            continue
        pooled, labels = data
        results = {}
        if args.ceiling:
            for pooling, vectors in pooled.items():
                print(f"{set_name}: 4-NN label agreement in the {pooling} vector space "
                      f"{knn_label_agreement(vectors, labels, 4):.4f}", flush=True)
        for seed, j in [(s, j) for s in seeds for j in range(args.jitter + 1)]:
            fits = {pooling: {} for pooling in pooled}
            run_pooled = {pooling: jittered(v, j) for pooling, v in pooled.items()}
            run = f"{set_name} seed {seed} jitter {j}"
            for cand in ["recipe"] + [c for c in names if c != "recipe"]:
                kind = pooling_of(cand)
                if cand in RECIPES:
                    row, col, t = recipe(run_pooled[kind], seed, args.recipe_max)
                else:
                    fields = {k: v for k, v in CANDIDATES[cand].items() if k != "vectors"}
                    row, col, t = candidate(run_pooled[kind], fields, seed, fits[kind])
                t["vectors"] = kind
                t["total_s"] = t["tsne_s"] + t["assign_s"] + t["refine_s"]
                t["dpq"], t["dpq_avg"], t["nla"] = quality(
                    pooled[kind], pooled["avg"], labels, row, col, args.dpq_items)
                results.setdefault(cand, []).append(t)
                print(f"{run} {cand}: DPQ16 {t['dpq']:.4f} NLA {t['nla']:.4f} "
                      f"t-SNE {t['tsne_s']:.1f} s assign {t['assign_s']:.1f} s refine "
                      f"{t['refine_s']:.1f} s ({t['how']})", file=sys.stderr, flush=True)
            if args.ceiling:
                for kind, kind_fits in fits.items():
                    for key, (xy, _) in kind_fits.items():
                        print(f"{run} t-SNE {kind} {key}: label agreement of the 4 / 10 nearest "
                              f"map neighbours {knn_label_agreement(xy, labels, 4):.4f} / "
                              f"{knn_label_agreement(xy, labels, 10):.4f}", flush=True)
        report(set_name, len(labels), results, [c for c in names if c != "recipe"])


if __name__ == "__main__":
    main()
