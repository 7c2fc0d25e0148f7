"""The whole job against the original gridded t-SNE recipe, side by side, on real photos.

    python benchmarks/end_to_end.py                      # all 3,781 clothing-small photos
    python benchmarks/end_to_end.py --limit 500          # a quick look

Ours: ``gridtsne run`` (DirectRunner, every default: EfficientNet-Lite0, t-SNE, auto grid
assignment, Deep Zoom render), timed per stage from its own summaries.
The original recipe, as in the gridded t-SNE blog post and notebook, with the same model: a
plain loop that opens each photo, resizes it and embeds it batch by batch; openTSNE with its
defaults; a dense N x N squared-distance cost matrix to a regular grid solved by ``lap.lapjv``;
and one big mosaic image pasted from the originals.

Quality is compared on the SAME embeddings (ours), so it measures the layouts alone: DPQ16 and
neighbour label agreement (clothing-small's 10 classes). The recipe's own embeddings are only
timed, and checked to be the same model's (mean cosine similarity to ours).
"""
import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "clothing-small"


def image_list(data, limit):
    with open(data / "labels.csv", newline="") as fh:
        rows = sorted((r["path"], r["label"]) for r in csv.DictReader(fh))
    if limit:
        rows = [rows[i] for i in np.random.default_rng(0).choice(len(rows), limit, replace=False)]
    return rows


def run_ours(rows, data, work):
    """``gridtsne run`` over a manifest of the chosen photos; returns timings and tables."""
    from gridtsne import storage, versions
    from pipelines import run as job

    manifest = work / "manifest.txt"
    manifest.write_text("".join(str(data / p) + "\n" for p, _ in rows))
    out = work / "ours"
    start = time.perf_counter()
    summary = job.run(["--manifest", str(manifest), "--output", str(out),
                       "--labels", str(data / "labels.csv"), "--quality_items", "10000"])
    total = time.perf_counter() - start
    version = versions.current_version_url(str(out))
    layout_json = json.loads(storage.read_bytes(storage.url_join(version, "layout.json")))
    site_json = json.loads(storage.read_bytes(storage.url_join(version, "site", "site.json")))
    return {"total_s": total, "summary": summary, "layout": layout_json, "site": site_json,
            "version": version}


def embed_recipe(paths, batch_size=32):
    """The plain loop of the original recipe: open, resize, normalise, forward, in order."""
    import torch
    from PIL import Image

    from gridtsne.models import load_model

    # The same weights, loaded plainly: no batch-norm folding, no channels_last, and the
    # network's own average pooling.
    net = load_model(channels_last=False, fold_bn=False, device="cpu", pooling="avg").module
    size = 224
    vectors = []
    with torch.inference_mode():
        for s in range(0, len(paths), batch_size):
            batch = []
            for p in paths[s:s + batch_size]:
                img = Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                batch.append(np.asarray(img, dtype=np.float32) / 255.0)
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
            x = (x - 0.5) / 0.5
            f = net(x)
            f = torch.nn.functional.normalize(f.flatten(1), dim=1)
            vectors.append(f.numpy())
    return np.concatenate(vectors)


def layout_recipe(vectors, seed=0):
    """openTSNE defaults, then dense squared-distance JV over the whole grid."""
    import lap
    from openTSNE import TSNE
    from scipy.spatial.distance import cdist

    t0 = time.perf_counter()
    xy = np.asarray(TSNE(n_jobs=-1, random_state=seed).fit(vectors))
    t1 = time.perf_counter()
    n = len(xy)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    xy = (xy - xy.min(0)) / (xy.max(0) - xy.min(0))
    gy, gx = np.meshgrid(np.linspace(0, 1, rows), np.linspace(0, 1, cols), indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    cost = cdist(xy, grid, "sqeuclidean")
    _, col_of_row, _ = lap.lapjv(cost, extend_cost=True)
    t2 = time.perf_counter()
    cell = col_of_row[:n]
    return cell // cols, cell % cols, (rows, cols), {"tsne_s": t1 - t0, "assign_s": t2 - t1}


def render_recipe(paths, row, col, shape, out, cell=128):
    """One big image: every original opened again and pasted into its cell."""
    from PIL import Image

    rows, cols = shape
    canvas = Image.new("RGB", (cols * cell, rows * cell), (40, 40, 40))
    for p, r, c in zip(paths, row, col):
        img = Image.open(p).convert("RGB")
        img.thumbnail((cell, cell))
        canvas.paste(img, (int(c) * cell + (cell - img.width) // 2,
                           int(r) * cell + (cell - img.height) // 2))
    canvas.save(out, quality=85)
    return canvas.size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=0, help="a seeded sample of N photos")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    args = parser.parse_args(argv)
    if not (args.data / "labels.csv").exists():
        sys.exit(f"no data at {args.data} (needs ../shared/data beside the checkout)")
    from gridtsne import storage
    from gridtsne.evaluate import match_labels, read_labels
    from gridtsne.layout import read_vectors
    from gridtsne.metrics import dpq, neighbour_label_agreement

    work = args.work or Path(tempfile.mkdtemp(prefix="gridtsne-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = image_list(args.data, args.limit)
    n = len(rows)
    print(f"{n} photos from {args.data}; scratch in {work}", flush=True)

    ours = run_ours(rows, args.data, work)
    uri, _, vectors, _ = read_vectors(storage.url_join(ours["version"], "vectors"))
    uri = uri.to_pylist()
    order = np.argsort(uri)
    uri, vectors = [uri[i] for i in order], vectors[order]
    labels = match_labels(uri, read_labels(str(args.data / "labels.csv")))

    paths = [str(args.data / p) for p, _ in rows]
    t0 = time.perf_counter()
    recipe_vectors = embed_recipe(paths)
    embed_s = time.perf_counter() - t0
    index = {p: i for i, p in enumerate(paths)}
    same = recipe_vectors[[index[u] for u in uri]]
    cosine = float(np.mean(np.sum(same * vectors, axis=1)))
    r_row, r_col, shape, r_times = layout_recipe(vectors)
    t0 = time.perf_counter()
    # The recipe renders the layout it computed on our vectors (rows in `uri` order).
    render_recipe(uri, r_row, r_col, shape, work / "recipe-mosaic.jpg")
    render_s = time.perf_counter() - t0
    recipe_total = embed_s + r_times["tsne_s"] + r_times["assign_s"] + render_s

    from gridtsne.evaluate import evaluate_layout

    ours_q = evaluate_layout(storage.url_join(ours["version"], "layout.parquet"),
                             storage.url_join(ours["version"], "vectors"),
                             str(args.data / "labels.csv"), max_items=10_000)
    recipe_dpq = dpq(vectors, np.asarray(r_row), np.asarray(r_col), p=16)
    recipe_agree = neighbour_label_agreement(np.asarray(r_row), np.asarray(r_col), labels)

    lt = ours["layout"]["timings"]
    ours_layout = lt.get("tsne_s", 0) + lt.get("assign_s", 0)
    ours_total = ours["total_s"]
    print()
    print(f"{'':34}{'ours':>12}{'recipe':>12}{'ratio':>10}")
    print(f"{'embed + render + Beam (s)':34}{ours_total - ours_layout:12.1f}"
          f"{embed_s + render_s:12.1f}{(embed_s + render_s) / (ours_total - ours_layout):10.2f}")
    print(f"{'  recipe embed alone (s)':34}{'':>12}{embed_s:12.1f}")
    print(f"{'t-SNE (s)':34}{lt.get('tsne_s', 0):12.1f}{r_times['tsne_s']:12.1f}"
          f"{r_times['tsne_s'] / max(lt.get('tsne_s', 1e-9), 1e-9):10.2f}")
    print(f"{'grid assignment (s)':34}{lt.get('assign_s', 0):12.2f}{r_times['assign_s']:12.2f}"
          f"{r_times['assign_s'] / max(lt.get('assign_s', 1e-9), 1e-9):10.2f}")
    print(f"{'  recipe render alone (s)':34}{'':>12}{render_s:12.1f}")
    print(f"{'end to end (s)':34}{ours_total:12.1f}{recipe_total:12.1f}"
          f"{recipe_total / ours_total:10.2f}")
    print(f"{'images/s overall':34}{n / ours_total:12.1f}{n / recipe_total:12.1f}")
    print(f"{'DPQ16 (same embeddings)':34}{ours_q['dpq']:12.4f}{recipe_dpq:12.4f}"
          f"{ours_q['dpq'] - recipe_dpq:+10.4f}")
    print(f"{'neighbour label agreement':34}{ours_q['label_agreement']:12.4f}{recipe_agree:12.4f}"
          f"{ours_q['label_agreement'] - recipe_agree:+10.4f}")
    print(f"(ours: one Beam job embedding, laying out ({ours['layout']['method']}) and rendering "
          f"a {ours['site'].get('levels')}-level pyramid, {ours_layout:.1f} s of it layout; "
          f"recipe vectors vs ours: mean cosine {cosine:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
