"""Images per second of the batched (GPU) embedding path: model, decoders, plain loop and stage.

    python benchmarks/embed_gpu.py [--device cuda] [--count 20480] [--batch_size 256]
        [--processes 16] [--skip stage_mp,...] [--json results.json]
    python benchmarks/embed_gpu.py --device cpu --limit 256      # runs without a GPU
    python benchmarks/embed_gpu.py --host_only [--count 4096] [--repeats 3] [--json FILE]

Corpus: real photos (``../shared/data/clothing-small``, or scikit-image's photos where that
is absent) re-encoded at ImageNet size (500x375 or 375x500, JPEG quality 90) and replicated
to ``--count`` files in a temporary folder (``--limit`` caps it). In one process, on the same
files, it times:

* ``model``: the model alone, ``--precision`` (auto: bf16 on CUDA), input already on the
  device, batches of ``--batch_size``;
* ``decode pillow``: ``gridtsne.decode.decode_image`` (the CPU path's decode, resize and
  thumbnail) on a pool of one thread per core;
* ``decode torchvision``: ``torchvision.io.decode_jpeg`` on a list of files per batch, full
  size, on the device (nvjpeg on CUDA), nothing else;
* ``decode nvimgcodec``: ``nvidia.nvimgcodec.Decoder.decode`` per batch, when installed
  (``pip install gridtsne[gpu]``); DALI likewise when ``nvidia.dali`` imports;
* ``decode batched``: ``gridtsne.batch_decode.decode_batch``, the stage's decode: decoding,
  EXIF orientation, grouped resize on the device and thumbnails;
* ``plain``: a plain loop doing the stage's work without Beam: the next batch's bytes read by
  threads while this one is decoded and embedded, rows built, one Parquet file written;
* ``stage``: ``pipelines.embed.run --decoder batched`` on the DirectRunner, in memory and
  with ``--direct_running_mode=multi_processing --direct_num_workers=--processes``.

Prints images/s of each and the ratios stage/model and stage/plain (targets on one H100:
stage >= 5,000 images/s and >= 0.9x plain).

``--host_only`` (no GPU needed) times the stage's host work once the bytes are in memory, with
decode, resize and the model replaced by precomputed arrays of the right shapes: ``header
parse`` (``gridtsne.jpeg.read_header``), ``thumbnails N thread(s)`` (128 px thumbnails encoded
from uint8 batches by ``batch_decode.submit_thumbnails``, beside Pillow, torchvision's
``encode_jpeg`` on the CPU and PyTurboJPEG when installed), ``rows`` (``embed_fetched`` +
``vector_row``), ``parquet`` (as Beam's ``WriteToParquet`` writes them) and ``host``, all of it
per batch on ``--threads`` threads; and, with ``--read_threads`` threads on the same files,
``fetch`` (``batch_fetch.start_fetch``) beside ``raw reads`` (``open`` + ``read`` + ``sha256``)
and the former per-file fsspec fetch. ``sha256 control`` is a GIL-free reference: what a second
thread gives on the machine at that moment. Each piece is run ``--repeats`` times in rounds and
the median printed, in images/s and CPU µs per image (targets on 2 cores: host >= 8,000
images/s, thumbnails 2 threads >= 1.6x 1 thread, fetch >= 0.8x raw reads).
"""
import argparse
import concurrent.futures
import csv
import hashlib
import io
import json
import os
import shlex
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from gridtsne import models, schema  # noqa: E402
from gridtsne.batch_decode import (THUMBNAIL_CHUNK, decode_batch, encode_thumbnail,  # noqa: E402
                                   encode_thumbnails, submit_thumbnails, thread_pool,
                                   thumbnail_size)
from gridtsne.batch_embed import BatchEmbedder, EmbedderConfig, embed_fetched  # noqa: E402
from gridtsne.batch_fetch import fetch_one, start_fetch  # noqa: E402
from gridtsne.decode import DecodeConfig, decode_image  # noqa: E402
from gridtsne.jpeg import read_header  # noqa: E402
from gridtsne.listing import FileInfo, expand_pattern  # noqa: E402
from gridtsne.rows import error_row_from, vector_row  # noqa: E402

DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "data", "clothing-small")
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry",
                  "retina", "hubble_deep_field", "motorcycle_left", "page")


def source_photos(data, distinct):
    """Up to ``distinct`` real photos as RGB Pillow images."""
    labels = os.path.join(data, "labels.csv")
    if os.path.exists(labels):
        with open(labels, newline="") as fh:
            paths = [os.path.join(data, row["path"]) for row in csv.DictReader(fh)]
        step = max(1, len(paths) // distinct)
        return [Image.open(p).convert("RGB") for p in paths[::step][:distinct]], data
    from skimage import data as skdata

    photos = [Image.fromarray(getattr(skdata, n)()).convert("RGB") for n in SKIMAGE_PHOTOS]
    return photos, "scikit-image photos (shared data absent)"


def make_corpus(folder, photos, count):
    """``count`` JPEGs in ``folder``: the photos at 500x375 (or 375x500), quality 90, repeated."""
    encoded = []
    for image in photos:
        size = (500, 375) if image.width >= image.height else (375, 500)
        out = io.BytesIO()
        image.resize(size, Image.Resampling.BICUBIC).save(out, "JPEG", quality=90)
        encoded.append(out.getvalue())
    paths = []
    for i in range(count):
        sub = os.path.join(folder, f"{i // 1000:03d}")
        os.makedirs(sub, exist_ok=True)
        path = os.path.join(sub, f"{i:06d}.jpg")
        with open(path, "wb") as fh:
            fh.write(encoded[i % len(encoded)])
        paths.append(path)
    return paths


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def batches(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


def read_all(paths):
    out = []
    for p in paths:
        with open(p, "rb") as fh:
            out.append(fh.read())
    return out


def time_model(model, n, batch_size):
    size = model.spec.input_size
    x = torch.randint(0, 256, (batch_size, 3, size, size), device=model.device).float()
    models.embed_tensor(model, x)  # warm-up (cuDNN autotuning)
    sync(model.device)
    start = time.perf_counter()
    done = 0
    while done < n:
        models.embed_tensor(model, x)
        done += batch_size
    sync(model.device)
    return done, time.perf_counter() - start


def time_pillow(datas, config, threads):
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(lambda d: decode_image(d, config), datas))
        return time.perf_counter() - start


def time_torchvision(datas, device, batch_size):
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    decode_jpeg(tensors[:2], mode=ImageReadMode.RGB, device=device)
    sync(device)
    start = time.perf_counter()
    for chunk in batches(tensors, batch_size):
        decode_jpeg(chunk, mode=ImageReadMode.RGB, device=device)
    sync(device)
    return time.perf_counter() - start


def time_nvimgcodec(datas, device, batch_size):
    from nvidia import nvimgcodec

    backends = None if device.type == "cuda" else [nvimgcodec.Backend(
        nvimgcodec.BackendKind.CPU_ONLY)]
    decoder = nvimgcodec.Decoder(backends=backends) if backends else nvimgcodec.Decoder()
    decoder.decode(datas[:2])
    sync(device)
    start = time.perf_counter()
    for chunk in batches(datas, batch_size):
        decoder.decode(chunk)
    sync(device)
    return time.perf_counter() - start


def time_dali(datas, device, batch_size):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch_size, num_threads=os.cpu_count(), device_id=0)
    def pipe():
        raw = fn.external_source(name="raw", dtype=types.UINT8)
        return fn.decoders.image(raw, device="mixed" if device.type == "cuda" else "cpu",
                                 output_type=types.RGB)

    p = pipe()
    p.build()
    start = time.perf_counter()
    for chunk in batches(datas, batch_size):
        p.feed_input("raw", [np.frombuffer(d, np.uint8) for d in chunk])
        p.run()
    return time.perf_counter() - start


def time_batched(datas, config, device, batch_size, threads):
    with thread_pool(threads) as pool:
        decode_batch(datas[:2], config, device, pool)
        sync(device)
        start = time.perf_counter()
        for chunk in batches(datas, batch_size):
            decode_batch(chunk, config, device, pool)
        sync(device)
        return time.perf_counter() - start


def time_plain(paths, embedder_config, batch_size, read_threads, out):
    """The stage's work in a plain loop: model load, read ahead one batch, decode + embed,
    rows, one Parquet file."""
    start = time.perf_counter()
    embedder = BatchEmbedder(embedder_config)
    infos = [info for p in paths for info in expand_pattern(p)]
    vectors, errors = [], []
    max_bytes = embedder.config.decode.max_bytes
    with concurrent.futures.ThreadPoolExecutor(read_threads) as pool:
        pending = None
        for chunk in batches(infos, batch_size) + [None]:
            started = start_fetch(chunk, max_bytes, None, pool) if chunk else None
            if pending is not None:
                for f, record, value in embed_fetched(embedder, pending.result()):
                    if record is not None:
                        vectors.append(vector_row(record, value))
                    elif value is not None:
                        errors.append(error_row_from(f.info.uri, value))
            pending = started
    model = embedder.model
    meta = models.describe(model.spec, model.weights_sha256, model.weights_source,
                           model.pooling)
    pq.write_table(pa.Table.from_pylist(vectors, schema=schema.vectors_schema(
        model.spec.dim, meta)), out)
    embedder.close()
    assert len(vectors) == len(paths), (len(vectors), errors[:3])
    return time.perf_counter() - start


def time_stage(manifest, out, args, extra):
    from pipelines import embed

    start = time.perf_counter()
    summary = embed.run(["--manifest", manifest, "--output", out, "--model", args.model,
                         "--batch_size", str(args.batch_size), "--device", args.device,
                         "--precision", args.precision, "--decoder", "batched",
                         "--read_threads", str(args.read_threads),
                         "--decode_threads", str(args.threads)]
                        + shlex.split(args.stage_flags) + extra)
    elapsed = time.perf_counter() - start
    assert summary["vectors"] == sum(1 for _ in open(manifest)), summary
    return elapsed


# --- --host_only: the stage's host work, without decode, resize or model ------------------

class _Precomputed:
    """Stands in for the BatchEmbedder: per file, the size, thumbnail and vector it would give."""

    def __init__(self, results):
        self._results = results

    def embed(self, datas):
        return [self._results[k % len(self._results)] for k in range(len(datas))]


def _thumbnail_groups(datas, config):
    """Per file a ``(h, w, 3)`` uint8 thumbnail-sized array, as decode_batch resizes them."""
    cache, out = {}, []
    for data in datas:
        if data not in cache:
            image = Image.open(io.BytesIO(data)).convert("RGB")
            size = thumbnail_size(image.width, image.height, config.thumbnail_size)
            cache[data] = np.asarray(image.resize(size, Image.Resampling.BICUBIC))
        out.append(cache[data])
    return out


def _stacks(small):
    """The arrays of one batch stacked by shape, as decode_batch hands them to the encoder."""
    groups = {}
    for a in small:
        groups.setdefault(a.shape, []).append(a)
    return [np.stack(g) for g in groups.values()]


def time_thumbnails(stacked, quality, threads, encode=None):
    """Encode every batch's stacks on ``threads`` threads; seconds."""
    (encode or encode_thumbnails)(stacked[0][0][:2], quality)  # warm-up: imports, tables
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        for stacks in stacked:
            if encode is None:
                futures = [f for s in stacks for f, _ in submit_thumbnails(s, quality,
                                                                            pool.submit)]
            else:
                futures = [pool.submit(encode, s[i:i + THUMBNAIL_CHUNK], quality)
                           for s in stacks for i in range(0, len(s), THUMBNAIL_CHUNK)]
            for f in futures:
                f.result()
        return time.perf_counter() - start


def time_sha256_control(datas, threads):
    """sha256 of the files on ``threads`` threads (hashlib releases the GIL for each file): how
    much a second thread can give on this machine right now, the ceiling of thumbnail scaling."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        for chunk in batches(datas, 256):
            list(pool.map(lambda part: [hashlib.sha256(d).digest() for d in part],
                          [chunk[k::threads] for k in range(threads)]))
        return time.perf_counter() - start


def _pillow_encode(images, quality):
    out = []
    for a in images:
        buf = io.BytesIO()
        Image.fromarray(a, "RGB").save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def _torchvision_encode(images, quality):
    from torchvision.io import encode_jpeg

    return encode_jpeg([torch.from_numpy(a).permute(2, 0, 1) for a in images], quality=quality)


def _turbojpeg_encode(images, quality, _jpeg=[]):
    if not _jpeg:
        from turbojpeg import TJPF_RGB, TJSAMP_420, TurboJPEG

        _jpeg.append((TurboJPEG(), TJPF_RGB, TJSAMP_420))
    jpeg, pf, samp = _jpeg[0]
    return [jpeg.encode(a, quality=quality, pixel_format=pf, jpeg_subsample=samp)
            for a in images]


def _infos(paths, datas):
    return [FileInfo(uri=p, size=len(d), mtime_us=0, explicit=True)
            for p, d in zip(paths, datas)]


def _raw_read(path):
    with open(path, "rb") as fh:
        data = fh.read()
    return data, hashlib.sha256(data).hexdigest()


def time_raw_reads(paths, batch_size, pool):
    start = time.perf_counter()
    for chunk in batches(paths, batch_size):
        list(pool.map(_raw_read, chunk))
    return time.perf_counter() - start


def time_fetch(infos, batch_size, pool, max_bytes, per_file=False):
    start = time.perf_counter()
    for chunk in batches(infos, batch_size):
        if per_file:
            [f.result() for f in [pool.submit(fetch_one, i, max_bytes, None) for i in chunk]]
        else:
            start_fetch(chunk, max_bytes, None, pool).result()
    return time.perf_counter() - start


def time_header(datas):
    start = time.perf_counter()
    for d in datas:
        read_header(d)
    return time.perf_counter() - start


def _rows(fetched, embedder):
    return [vector_row(record, value) for _, record, value in embed_fetched(embedder, fetched)
            if record is not None]


def time_rows(fetched_batches, embedder):
    start = time.perf_counter()
    for fetched in fetched_batches:
        _rows(fetched, embedder)
    return time.perf_counter() - start


def write_rows(rows, vectors_schema, out):
    """Rows to Parquet as the stage's writer (Beam's ``WriteToParquet``) does: a column array
    per field, no compression, pyarrow's other defaults."""
    pq.write_table(pa.Table.from_pylist(rows, schema=vectors_schema), out, compression="none")


def time_parquet(rows, vectors_schema, out):
    start = time.perf_counter()
    write_rows(rows, vectors_schema, out)
    return time.perf_counter() - start


def time_host(datas, fetched_batches, stacked, embedder, config, threads, vectors_schema,
              out):
    """Per batch: headers parsed, thumbnails encoded on ``threads``, rows; one Parquet file."""
    rows = []
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        for fetched, stacks in zip(fetched_batches, stacked):
            for f in fetched:
                read_header(f.data)
            futures = [f for s in stacks for f, _ in submit_thumbnails(
                s, config.thumbnail_quality, pool.submit)]
            for f in futures:
                f.result()
            rows.extend(_rows(fetched, embedder))
        write_rows(rows, vectors_schema, out)
        return time.perf_counter() - start


def host_only(args, paths, datas, tmp, report):
    """The ``--host_only`` pieces, each timed ``--repeats`` times (the median is reported)."""
    spec = models.get_spec(args.model)
    config = DecodeConfig(input_size=spec.input_size)
    n = len(paths)
    small = _thumbnail_groups(datas, config)
    stacked = [_stacks(b) for b in batches(small, args.batch_size)]
    thumbs = {}
    results = []
    for d, a in zip(datas, small):
        if d not in thumbs:
            header = read_header(d)
            vector = np.random.default_rng(len(thumbs)).standard_normal(spec.dim)
            vector = (vector / np.linalg.norm(vector)).astype(np.float32)
            thumbs[d] = (*header.upright_size, encode_thumbnail(a, config.thumbnail_quality),
                         vector)
            results.append(thumbs[d])
    embedder = _Precomputed(results)
    infos = _infos(paths, datas)
    fetched_batches = [start_fetch(c, config.max_bytes).result()
                       for c in batches(infos, args.batch_size)]
    meta = models.describe(spec, "0" * 64, "precomputed vectors", "avg")
    vectors_schema = schema.vectors_schema(spec.dim, meta)
    all_rows = [r for fetched in fetched_batches for r in _rows(fetched, embedder)]
    quality = config.thumbnail_quality
    out = os.path.join(tmp, "host.parquet")
    thread_counts = sorted({1, 2, args.threads})
    pieces = [("header parse", lambda: time_header(datas)),
              ("rows", lambda: time_rows(fetched_batches, embedder)),
              ("parquet", lambda: time_parquet(all_rows, vectors_schema, out))]
    for t in thread_counts:
        label = f"{t} thread" + ("s" if t > 1 else "")
        pieces.append((f"thumbnails {label}", lambda t=t: time_thumbnails(stacked, quality, t)))
    for name, encode in (("pillow", _pillow_encode), ("torchvision", _torchvision_encode),
                         ("turbojpeg", _turbojpeg_encode)):
        for t in (1, 2):
            label = f"{t} thread" + ("s" if t > 1 else "")
            pieces.append((f"thumbnails {name} {label}",
                           lambda t=t, e=encode: time_thumbnails(stacked, quality, t, e)))
    for t in (1, 2):
        label = f"{t} thread" + ("s" if t > 1 else "")
        pieces.append((f"sha256 control {label}",
                       lambda t=t: time_sha256_control(datas, t)))
    pieces.append(("host", lambda: time_host(datas, fetched_batches, stacked, embedder,
                                             config, args.threads, vectors_schema, out)))
    with concurrent.futures.ThreadPoolExecutor(args.read_threads) as pool:
        pieces += [("raw reads", lambda: time_raw_reads(paths, args.batch_size, pool)),
                   ("fetch", lambda: time_fetch(infos, args.batch_size, pool,
                                                config.max_bytes)),
                   ("fetch fsspec per file", lambda: time_fetch(
                       infos, args.batch_size, pool, config.max_bytes, per_file=True))]
        print(f"host work of the stage on {n} files, batches of {args.batch_size}, "
              f"{args.threads} thumbnail threads, {args.read_threads} read threads; median of "
              f"{args.repeats}", flush=True)
        runs = {}
        for _ in range(args.repeats):  # rounds, so a busy moment hits every piece alike
            for name, fn in pieces:
                if name in runs and runs[name] is None:
                    continue
                cpu = time.process_time()
                try:
                    seconds = fn()
                except ImportError as exc:
                    print(f"  {name:<30} not installed ({exc})", flush=True)
                    runs[name] = None
                    continue
                runs.setdefault(name, []).append((seconds, time.process_time() - cpu))
    for name, _ in pieces:
        if runs.get(name):
            seconds, cpu = sorted(runs[name])[len(runs[name]) // 2]
            report(name, n, seconds, cpu)
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--count", type=int, default=None,
                        help="files in the corpus (default 20,480; 4,096 with --host_only)")
    parser.add_argument("--limit", type=int, default=None, help="cap on --count")
    parser.add_argument("--distinct", type=int, default=256, help="distinct source photos")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--precision", default="auto", choices=models.PRECISIONS)
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="Pillow / thumbnail threads")
    parser.add_argument("--read_threads", type=int, default=16)
    parser.add_argument("--processes", type=int, default=min(16, os.cpu_count()),
                        help="--direct_num_workers of the multi-processing stage run")
    parser.add_argument("--skip", default="", help="comma list: model, pillow, torchvision, "
                        "nvimgcodec, dali, batched, plain, stage, stage_mp")
    parser.add_argument("--stage_flags", default="",
                        help="extra flags for both stage runs, e.g. '--share_model no'")
    parser.add_argument("--keep", help="make the corpus in this folder and keep it")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--host_only", action="store_true",
                        help="time the stage's host work alone (no decode, resize or model; "
                             "no GPU needed) and its fetch beside raw reads")
    parser.add_argument("--repeats", type=int, default=3,
                        help="--host_only: runs of each piece (the median is reported)")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    device = torch.device("cpu" if args.host_only else models.resolve_device(args.device))
    count = args.count or (4096 if args.host_only else 20_480)
    count = min(count, args.limit) if args.limit else count

    tmp = args.keep or tempfile.mkdtemp(prefix="embed-gpu-")
    photos, origin = source_photos(args.data, min(args.distinct, count))
    paths = make_corpus(os.path.join(tmp, "corpus"), photos, count)
    n = len(paths)
    manifest = os.path.join(tmp, "manifest.txt")
    with open(manifest, "w") as fh:
        fh.write("\n".join(paths) + "\n")
    datas = read_all(paths)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "none"
    print(f"{n} JPEGs ({len(photos)} distinct, ~500x375 q90, {sum(map(len, datas)) / n / 1024:.0f}"
          f" KiB each) from {origin}\nmodel {args.model}, batch {args.batch_size}, device "
          f"{device} ({gpu}), precision {models.resolve_precision(args.precision, device.type)}"
          f", {os.cpu_count()} cores, torch {torch.__version__}", flush=True)

    rates, cpu_seconds = {}, {}

    def report(name, images, seconds, cpu):
        rates[name] = images / seconds
        cpu_seconds[name] = cpu / images
        print(f"  {name:<30} {rates[name]:9.1f} images/s  {1e6 * cpu / images:8.1f} µs CPU "
              f"per image  ({seconds:.2f} s)", flush=True)

    if args.host_only:
        host_only(args, paths, datas, tmp, report)
        print()
        print_host_targets(rates)
        finish(args, tmp, n, device, gpu, rates, cpu_seconds)
        return rates

    size = models.get_spec(args.model).input_size
    config = DecodeConfig(input_size=size)
    embedder_config = EmbedderConfig(model=args.model, device=device.type,
                                     precision=args.precision, threads=args.threads,
                                     decode=config)
    embedder = BatchEmbedder(embedder_config)

    def attempt(name, fn):
        if name.split()[-1] in skip or name in skip:
            return
        cpu = time.process_time()
        try:
            seconds = fn()
        except ImportError as exc:
            print(f"  {name:<30} not installed ({exc})", flush=True)
            return
        report(name, n, seconds, time.process_time() - cpu)

    if "model" not in skip:
        cpu = time.process_time()
        images, seconds = time_model(embedder.model, n, args.batch_size)
        report("model", images, seconds, time.process_time() - cpu)
    attempt("decode pillow", lambda: time_pillow(datas, config, args.threads))
    attempt("decode torchvision", lambda: time_torchvision(datas, device, args.batch_size))
    attempt("decode nvimgcodec", lambda: time_nvimgcodec(datas, device, args.batch_size))
    attempt("decode dali", lambda: time_dali(datas, device, args.batch_size))
    attempt("decode batched", lambda: time_batched(datas, config, device, args.batch_size,
                                                   args.threads))
    embedder.close()
    attempt("plain", lambda: time_plain(paths, embedder_config, args.batch_size,
                                        args.read_threads, os.path.join(tmp, "plain.parquet")))
    del embedder
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if not {"stage", "stage_mp"} <= skip:  # warm-up: imports, Beam's runner, first load
        with open(os.path.join(tmp, "warm.txt"), "w") as fh:
            fh.write("\n".join(paths[:8]) + "\n")
        time_stage(os.path.join(tmp, "warm.txt"), os.path.join(tmp, "warm"), args, [])
    attempt("stage", lambda: time_stage(manifest, os.path.join(tmp, "stage"), args, []))
    attempt("stage_mp", lambda: time_stage(
        manifest, os.path.join(tmp, "stage-mp"), args,
        ["--direct_running_mode=multi_processing", f"--direct_num_workers={args.processes}"]))

    print()
    for name in ("stage", "stage_mp"):
        if name not in rates:
            continue
        for ref in ("model", "plain"):
            if ref in rates:
                print(f"{name} / {ref} = {rates[name] / rates[ref]:.2f}x")
    if device.type == "cuda":
        print(f"peak GPU memory of this process: {torch.cuda.max_memory_allocated() / 2**30:.1f}"
              f" GiB")
    finish(args, tmp, n, device, gpu, rates, cpu_seconds)
    return rates


def print_host_targets(rates):
    """The ``--host_only`` figures against the targets (2-core machine)."""
    def ratio(a, b):
        return rates[a] / rates[b] if a in rates and b in rates else float("nan")

    print(f"host: {rates.get('host', float('nan')):,.0f} images/s (target >= 8,000)")
    print(f"thumbnails 2 threads / 1 thread = "
          f"{ratio('thumbnails 2 threads', 'thumbnails 1 thread'):.2f}x (target >= 1.6); "
          f"GIL-free control (sha256) 2 threads / 1 thread = "
          f"{ratio('sha256 control 2 threads', 'sha256 control 1 thread'):.2f}x")
    for name in ("pillow", "torchvision", "turbojpeg"):
        if f"thumbnails {name} 1 thread" in rates:
            print(f"thumbnails 1 thread / {name} 1 thread = "
                  f"{ratio('thumbnails 1 thread', f'thumbnails {name} 1 thread'):.2f}x, "
                  f"{name} 2 threads / 1 thread = "
                  f"{ratio(f'thumbnails {name} 2 threads', f'thumbnails {name} 1 thread'):.2f}x")
    print(f"fetch / raw reads = {ratio('fetch', 'raw reads'):.2f}x (target >= 0.8); "
          f"fetch fsspec per file / raw reads = "
          f"{ratio('fetch fsspec per file', 'raw reads'):.2f}x")


def finish(args, tmp, n, device, gpu, rates, cpu_seconds):
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"images": n, "device": str(device), "gpu": gpu,
                       "images_per_s": rates, "cpu_seconds_per_image": cpu_seconds}, fh,
                      indent=2)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
