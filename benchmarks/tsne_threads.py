"""Does t-SNE use the cores it is given? Seconds per optimisation iteration, BH and FFT, by threads.

    python benchmarks/tsne_threads.py                 # 20,480 CIFAR-like vectors, 1 and all threads
    python benchmarks/tsne_threads.py --n 20480 --iters 100 --threads 1,4,16

openTSNE 1.0's FFT gradients (what ``gradient="auto"`` picks from 10,000 points on) compute the
negative gradient without ``n_jobs`` (``kl_divergence_fft`` calls
``estimate_negative_gradient_fft_2d`` on one thread); only the attractive part runs on
``n_jobs`` threads. Barnes-Hut runs both parts on ``n_jobs`` threads. This script times the
same affinities optimised ``--iters`` iterations each way, side by side in one run, and prints
seconds per iteration and the speed-up from more threads: where BH on all cores beats FFT, the
``auto`` rule leaves those cores idle.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_480)
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}")
    args = parser.parse_args(argv)
    from openTSNE import TSNEEmbedding, affinity, initialization

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, args.dims)) * 4
    x = (centres[rng.integers(0, 10, args.n)] + rng.normal(size=(args.n, args.dims))).astype(
        np.float32)
    threads = [int(t) for t in args.threads.split(",")]
    start = time.perf_counter()
    aff = affinity.PerplexityBasedNN(x, perplexity=30, n_jobs=max(threads), random_state=0)
    print(f"{args.n:,} points, {args.dims}-d: affinities on {max(threads)} threads in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    init = initialization.pca(x, random_state=0)
    rows = []
    for method in ("bh", "fft"):
        for t in threads:
            emb = TSNEEmbedding(init.copy(), aff, negative_gradient_method=method, n_jobs=t,
                                random_state=0, learning_rate=args.n / 12)
            emb.optimize(n_iter=5, exaggeration=12, inplace=True)  # warm up, spread the points
            start = time.perf_counter()
            emb.optimize(n_iter=args.iters, exaggeration=1, inplace=True)
            per = (time.perf_counter() - start) / args.iters
            rows.append((method, t, per))
            print(f"  {method} on {t} threads: {per * 1000:.1f} ms/iteration", flush=True)
    base = {m: p for m, t, p in rows if t == threads[0]}
    print()
    print(f"{'gradient':10}{'threads':>8}{'ms/iter':>10}{'speed-up':>10}{'750 iters s':>13}")
    for method, t, per in rows:
        print(f"{method:10}{t:8}{per * 1000:10.1f}{base[method] / per:10.2f}{per * 750:13.1f}")
    print(f"({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
