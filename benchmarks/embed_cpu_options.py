"""CPU throughput of the embedding choices, measured side by side: what each option buys.

    python benchmarks/embed_cpu_options.py [--images 64] [--repeats 3]

Decodes ``--images`` photos of ``../shared/data/clothing-small`` once, then times, in
alternating order and best of ``--repeats``:

* inference: batch norms folded into the convolutions or not, ``channels_last`` on/off,
  ``torch.inference_mode`` vs ``torch.no_grad``, batch sizes, torch intra-op threads;
* decoding: JPEG draft mode on/off, bicubic vs bilinear resizing (all of
  ``gridtsne.decode.decode_image``, thumbnail included).

Prints images/s and the ratio of each option to the project's default.
"""
import argparse
import contextlib
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from embed_throughput import DEFAULT_DATA, select_files  # noqa: E402  (same folder)
from gridtsne import models  # noqa: E402
from gridtsne.decode import DecodeConfig, decode_image  # noqa: E402


def _infer(model, pixels, batch_size, grad_mode):
    ctx = torch.inference_mode if grad_mode == "inference_mode" else torch.no_grad
    with ctx():
        for i in range(0, len(pixels), batch_size):
            x = models.to_input_tensor(model, pixels[i:i + batch_size])
            torch.nn.functional.normalize(model.module(x), dim=1).cpu()


def bench_inference(pixels, repeats, threads_options, batch_sizes):
    default_threads = torch.get_num_threads()
    cases = [("default: BN folded, channels_last, inference_mode, batch 32", "default",
              "inference_mode", 32, default_threads),
             ("batch norms not folded", "unfolded", "inference_mode", 32, default_threads),
             ("contiguous NCHW (no channels_last)", "nchw", "inference_mode", 32,
              default_threads),
             ("torch.no_grad instead of inference_mode", "default", "no_grad", 32,
              default_threads)]
    cases += [(f"batch {b}", "default", "inference_mode", b, default_threads)
              for b in batch_sizes if b != 32]
    cases += [(f"{t} torch thread(s)", "default", "inference_mode", 32, t)
              for t in threads_options if t != default_threads]
    loaded = {"default": models.load_model(device="cpu"),
              "unfolded": models.load_model(device="cpu", fold_bn=False),
              "nchw": models.load_model(device="cpu", channels_last=False)}
    for model in loaded.values():  # warm-up (oneDNN primitive cache)
        _infer(model, pixels[:8], 8, "inference_mode")
    best = {}
    for rep in range(repeats):
        for name, variant, grad, batch, threads in (cases if rep % 2 == 0 else cases[::-1]):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            _infer(loaded[variant], pixels, batch, grad)
            best[name] = min(best.get(name, 1e9), time.perf_counter() - start)
    torch.set_num_threads(default_threads)
    return [(name, best[name]) for name, *_ in cases]


def bench_decode(blobs, repeats):
    cases = [("default: draft on, bicubic", DecodeConfig()),
             ("draft off", DecodeConfig(draft=False)),
             ("bilinear resize", DecodeConfig(resample="bilinear"))]
    best = {}
    for rep in range(repeats):
        for name, config in (cases if rep % 2 == 0 else cases[::-1]):
            start = time.perf_counter()
            for blob in blobs:
                decode_image(blob, config)
            best[name] = min(best.get(name, 1e9), time.perf_counter() - start)
    return [(name, best[name]) for name, _ in cases]


def _report(title, n, results):
    print(f"\n{title} ({n} images, best of runs)")
    base = results[0][1]
    for name, t in results:
        print(f"  {name:<50} {n / t:7.1f} images/s   {base / t:5.2f}x default")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large_jpegs", type=int, default=16,
                        help="also time decoding of this many photos upscaled to 2048 px")
    args = parser.parse_args(argv)
    paths = select_files(args.data, args.images)
    blobs = [open(p, "rb").read() for p in paths]
    print(f"{len(paths)} photos, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores")
    pixels = np.stack([decode_image(b).pixels for b in blobs])
    threads = sorted({1, torch.get_num_threads()})
    _report("inference", len(pixels), bench_inference(pixels, args.repeats, threads,
                                                       [8, 16, 32, 64]))
    _report("decode (clothing-small JPEGs, ~400x533)", len(blobs),
            bench_decode(blobs, args.repeats))
    if args.large_jpegs:
        import io

        from PIL import Image

        large = []
        for blob in blobs[:args.large_jpegs]:
            out = io.BytesIO()
            with contextlib.closing(Image.open(io.BytesIO(blob))) as image:
                image.convert("RGB").resize((1536, 2048)).save(out, "JPEG", quality=90)
            large.append(out.getvalue())
        _report("decode (the same photos upscaled to 1536x2048 JPEG)", len(large),
                bench_decode(large, args.repeats))


if __name__ == "__main__":
    main()
