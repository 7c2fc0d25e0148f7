"""The batched image path run on the CPU (torchvision's libjpeg-turbo batch decoder: the same
code that drives nvjpeg on CUDA), checked against the Pillow path; CUDA-only checks skip."""
import concurrent.futures
import csv
import io
import multiprocessing
import os
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from gridtsne import models
from gridtsne.batch_decode import decode_batch, thumbnail_size
from gridtsne.batch_embed import BatchEmbedder, EmbedderConfig
from gridtsne.decode import DecodeConfig, DecodeError, decode_image
from gridtsne.jpeg import read_header
from tests import image_corpus as corpus

CFG = DecodeConfig()
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry")


@pytest.fixture(scope="module")
def lite0():
    return models.load_model(device="cpu")


def _cosines(a, b):
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _pillow_vectors(model, datas):
    return models.embed_batch(model, np.stack([decode_image(d, CFG).pixels for d in datas]))


def _batched_vectors(model, datas, device="cpu"):
    out = decode_batch(datas, CFG, device)
    assert out.rows == list(range(len(datas)))
    return models.embed_tensor(model, out.pixels), out


def _photo_jpegs():
    datas = [corpus.jpeg_bytes(corpus.photo(name)) for name in PHOTOS]
    # ImageNet-sized re-encodes, as the benchmark's corpus, and a grey one.
    datas.append(corpus.jpeg_bytes(corpus.photo("chelsea").resize((500, 375)), quality=90))
    datas.append(corpus.jpeg_bytes(corpus.photo("coffee").convert("L")))
    return datas


def test_vectors_agree_with_the_pillow_path_on_skimage_photos(lite0):
    datas = _photo_jpegs()
    got, out = _batched_vectors(lite0, datas)
    cos = _cosines(got, _pillow_vectors(lite0, datas))
    assert cos.min() >= 0.995, cos
    assert all(o.fast for o in out.outcomes)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_vectors_agree_with_the_pillow_path_on_real_phone_photos(lite0, shared_data):
    folder = shared_data / "clothing-small"
    with open(folder / "labels.csv", newline="") as fh:
        paths = [folder / row["path"] for row in csv.DictReader(fh)][::120][:32]
    datas = [p.read_bytes() for p in paths]
    got, out = _batched_vectors(lite0, datas)
    cos = _cosines(got, _pillow_vectors(lite0, datas))
    assert cos.min() >= 0.995, (cos.min(), paths[int(cos.argmin())])
    for data, meta in zip(datas, out.outcomes):
        ref = decode_image(data, CFG)
        assert (meta.width, meta.height) == (ref.width, ref.height)
        assert Image.open(io.BytesIO(meta.thumbnail)).size == \
            Image.open(io.BytesIO(ref.thumbnail)).size


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation):
    # Four quadrants of different colours: any wrong flip or turn changes the pixels.
    array = np.zeros((120, 200, 3), np.uint8)
    array[:60, :100], array[:60, 100:] = corpus.RED, corpus.BLUE
    array[60:, :100], array[60:, 100:] = corpus.GREEN, (240, 240, 240)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = corpus.jpeg_bytes(Image.fromarray(array), exif=exif.tobytes())
    assert read_header(data).orientation == orientation
    ref = decode_image(data, CFG)
    out = decode_batch([data], CFG)
    meta = out.outcomes[0]
    assert meta.fast and (meta.width, meta.height) == (ref.width, ref.height)
    got = out.pixels[0].permute(1, 2, 0).numpy()
    assert np.abs(got - ref.pixels.astype(np.float32)).mean() < 4


def test_each_refused_file_falls_back_alone_and_every_file_has_an_outcome():
    good = corpus.jpeg_bytes(corpus.photo("chelsea"))
    cfg = DecodeConfig(max_pixels=1_000_000)
    files = {
        "good": good,
        "progressive": corpus.jpeg_bytes(corpus.photo("coffee"), progressive=True),
        "grey": corpus.jpeg_bytes(corpus.photo("camera")),
        "rotated": corpus.exif_rotated_jpeg(size=(320, 160)),
        "cmyk": corpus.cmyk_jpeg(),
        "png": corpus.png_bytes(corpus.photo("coffee")),
        "palette": corpus.palette_png_with_transparency(),
        "truncated": good[:3000],
        "text": b"this is not a picture\n",
        "empty": b"",
        "jpeg_bomb": corpus.jpeg_bytes(Image.new("RGB", (1200, 1000), corpus.RED)),
        "png_bomb": corpus.png_declaring(50_000, 50_000),
    }
    out = decode_batch(list(files.values()), cfg, pool=None)
    fast = {"good", "progressive", "grey", "rotated"}
    for (name, data), outcome in zip(files.items(), out.outcomes):
        try:
            ref = decode_image(data, cfg)
        except DecodeError as exc:
            assert isinstance(outcome, DecodeError), name
            assert (outcome.stage, outcome.error_type) == (exc.stage, exc.error_type), name
            continue
        assert not isinstance(outcome, DecodeError), (name, outcome)
        assert outcome.fast == (name in fast), name
        assert (outcome.width, outcome.height) == (ref.width, ref.height), name
        row = out.rows.index(list(files).index(name))
        got = out.pixels[row].permute(1, 2, 0).numpy()
        assert np.abs(got - ref.pixels.astype(np.float32)).mean() < 6, name
    assert len(out.rows) == 7 and out.pixels.shape == (7, 3, 224, 224)


def test_a_truncated_jpeg_never_reaches_the_batched_decoder(monkeypatch):
    """nvjpeg decodes a truncated JPEG without complaint (grey where data is missing), so the
    header check must send it to Pillow. The CPU decoder refuses it anyway, which is why the
    outcome alone cannot show the check: the batched decoder's inputs are recorded (the real
    decoder still runs; nvjpeg itself needs a GPU, see test_nvjpeg_agrees_...)."""
    from gridtsne import batch_decode

    good = corpus.jpeg_bytes(corpus.photo("chelsea"))
    truncated = good[:3000]
    header = read_header(truncated)
    assert header is not None and not header.complete and not header.fast_decodable
    assert read_header(good).fast_decodable
    seen = []
    real = batch_decode._fast_decode

    def recording(datas, device):
        seen.extend(bytes(d) for d in datas)
        return real(datas, device)

    monkeypatch.setattr(batch_decode, "_fast_decode", recording)
    out = decode_batch([good, truncated], CFG, pool=None)
    assert seen == [good]
    assert out.outcomes[0].fast and isinstance(out.outcomes[1], DecodeError)


def test_pillow_fallbacks_run_on_the_pool_and_keep_input_order():
    from gridtsne.batch_decode import thread_pool

    datas = [corpus.png_bytes(corpus.photo("coffee")), corpus.jpeg_bytes(corpus.photo("rocket")),
             corpus.cmyk_jpeg(), corpus.jpeg_bytes(corpus.photo("chelsea"))]
    with thread_pool(2) as pool:
        out = decode_batch(datas, CFG, pool=pool)
    assert out.rows == [0, 1, 2, 3]
    assert [o.fast for o in out.outcomes] == [False, True, False, True]
    for data, row in zip(datas, out.pixels):
        ref = decode_image(data, CFG).pixels.astype(np.float32)
        assert np.abs(row.permute(1, 2, 0).numpy() - ref).mean() < 4


def test_thumbnail_size_rounds_like_pillow():
    for size in [(451, 300), (300, 451), (533, 400), (1000, 3), (3, 1000), (100, 100),
                 (129, 128), (50, 20)]:
        image = Image.new("RGB", size)
        image.thumbnail((128, 128))
        assert thumbnail_size(*size, 128) == image.size, size


def test_header_reader():
    assert read_header(corpus.cmyk_jpeg()).components == 4
    assert not read_header(corpus.cmyk_jpeg()).fast_decodable
    progressive = read_header(corpus.jpeg_bytes(corpus.photo("coffee"), progressive=True))
    assert progressive.sof == 0xC2 and progressive.fast_decodable
    assert (progressive.width, progressive.height) == (600, 400)
    truncated = read_header(corpus.jpeg_bytes(corpus.photo("coffee"))[:5000])
    assert truncated is not None and not truncated.complete and not truncated.fast_decodable
    assert read_header(b"") is None and read_header(corpus.png_bytes(corpus.photo("cat"))) is None
    rotated = read_header(corpus.exif_rotated_jpeg(size=(320, 160), orientation=8))
    assert rotated.orientation == 8 and rotated.upright_size == (160, 320)


def test_precision():
    assert models.resolve_precision("auto", "cuda") == "bf16"
    assert models.resolve_precision("auto", "cpu") == "fp32"
    assert models.resolve_precision("auto", "auto") == "auto"
    assert models.resolve_precision("fp16", "cpu") == "fp16"
    with pytest.raises(ValueError, match="precision must be one of"):
        models.resolve_precision("int8", "cpu")


def test_bf16_on_the_cpu_gives_float32_unit_vectors_close_to_fp32(lite0):
    pixels = np.stack([decode_image(d, CFG).pixels for d in _photo_jpegs()[:4]])
    bf16 = models.load_model(device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and lite0.precision == "fp32"
    got, ref = models.embed_batch(bf16, pixels), models.embed_batch(lite0, pixels)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = _cosines(got, ref)
    assert cos.min() > 0.98 and not np.array_equal(got, ref), cos  # really ran in bf16


def test_embedder_rows_and_errors():
    embedder = BatchEmbedder(EmbedderConfig(model="tests.tiny_model:TINY", device="cpu",
                                            decode=DecodeConfig(input_size=32)))
    datas = [corpus.jpeg_bytes(corpus.photo("rocket")), b"not an image",
             corpus.cmyk_jpeg()]
    out = embedder.embed(datas)
    assert isinstance(out[1], DecodeError) and out[1].error_type == "UnidentifiedImageError"
    for result in (out[0], out[2]):
        width, height, thumbnail, vector = result
        assert vector.shape == (16,) and vector.dtype == np.float32
        assert Image.open(io.BytesIO(thumbnail)).format == "JPEG"
    assert out[0][:2] == (640, 427) and out[2][:2] == (64, 48)
    embedder.close()


def build_broken(weights=None):
    """A real model that fails on real input (its linear layer expects another size)."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 4))
    return net, "0" * 64, "tests (broken on purpose)"


BROKEN = models.ModelSpec(name="broken", dim=4, input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                          build=build_broken)


def test_a_failing_forward_pass_raises_instead_of_blaming_the_images():
    """The machine's problem (the model, the device, memory) fails the batch; it never turns
    readable images into error rows (gridtsne.failures)."""
    embedder = BatchEmbedder(EmbedderConfig(model="tests.test_batch_embed:BROKEN", device="cpu",
                                            decode=DecodeConfig(input_size=32)))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        embedder.embed([corpus.jpeg_bytes(corpus.photo("rocket")), b"", corpus.cmyk_jpeg()])
    # A batch with nothing to embed still answers per file.
    out = embedder.embed([b""])
    assert [(o.stage, o.error_type) for o in out] == [("read", "EmptyFile")]
    embedder.close()


def _use_shared(tag, barrier, queue):
    from transforms.embed import acquire_embedder

    config = EmbedderConfig(model="tests.tiny_model:TINY", device="cpu",
                            decode=DecodeConfig(input_size=32))
    embedder = acquire_embedder(config, share_tag=tag)
    barrier.wait(60)  # both processes hold it at once
    vectors = embedder.embed([corpus.jpeg_bytes(corpus.photo("rocket"))])
    queue.put((os.getpid(), embedder.pid(), vectors[0][3].tolist()))
    barrier.wait(60)  # the process that serves it stays up until the other one is done


def test_two_processes_use_one_shared_model():
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    tag = f"gridtsne-test-{uuid.uuid4().hex}"
    procs = [ctx.Process(target=_use_shared, args=(tag, barrier, queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    (pid_a, owner_a, vec_a), (pid_b, owner_b, vec_b) = results
    assert pid_a != pid_b
    assert owner_a == owner_b and owner_a in (pid_a, pid_b)  # one model, in one of them
    np.testing.assert_allclose(vec_a, vec_b, rtol=1e-6)


def _host_shared(tag, ready):
    """Asks first, so the shared model lives in this process; then waits to be killed."""
    import time

    from transforms.embed import acquire_embedder

    acquire_embedder(EmbedderConfig(model="tests.tiny_model:TINY", device="cpu",
                                    decode=DecodeConfig(input_size=32)), share_tag=tag)
    ready.set()
    time.sleep(600)


def _survive_host(tag, photo, acquired, host_gone, queue):
    """A worker process using the model that lives in another process, which then dies."""
    from apache_beam.transforms.window import GlobalWindow

    from gridtsne.listing import FileInfo
    from transforms.embed import BatchEmbedFn, EmbedConfig

    config = EmbedConfig(model="tests.tiny_model:TINY", device="cpu", decoder="batched",
                         decode=DecodeConfig(input_size=32), share_model=True, read_threads=2)
    fn = BatchEmbedFn(config)
    fn._share_tag = tag  # the job's tag, as every process of a job has
    fn.setup()
    owner_before = fn._embedder.pid()
    acquired.set()
    host_gone.wait(120)
    infos = [FileInfo(photo, os.path.getsize(photo), 1, explicit=True)]
    fn.start_bundle()
    rows = list(fn.process(infos, timestamp=0, window=GlobalWindow()))
    rows += list(fn.finish_bundle())
    queue.put((owner_before, fn._embedder.pid(), os.getpid(),
               [(type(r).__name__, getattr(r, "value", r)) for r in rows]))
    fn.teardown()


def test_the_shared_model_comes_back_when_the_process_holding_it_dies(tmp_path):
    """The model lives in the worker process that asked first; SIGKILLed, the others acquire
    it again instead of failing (or, before, turning every image into an error row)."""
    import signal

    photo = tmp_path / "rocket.jpg"
    photo.write_bytes(corpus.jpeg_bytes(corpus.photo("rocket")))
    ctx = multiprocessing.get_context("spawn")
    tag = f"gridtsne-test-{uuid.uuid4().hex}"
    ready, acquired, host_gone, queue = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    host = ctx.Process(target=_host_shared, args=(tag, ready))
    host.start()
    assert ready.wait(120)
    survivor = ctx.Process(target=_survive_host, args=(tag, str(photo), acquired, host_gone,
                                                          queue))
    survivor.start()
    try:
        assert acquired.wait(120)
        os.kill(host.pid, signal.SIGKILL)
        host.join(30)
        host_gone.set()
        owner_before, owner_after, survivor_pid, rows = queue.get(timeout=120)
    finally:
        for p in (host, survivor):
            if p.is_alive():
                p.kill()
            p.join(30)
    assert owner_before == host.pid
    assert owner_after == survivor_pid
    assert len(rows) == 1 and rows[0][0] == "WindowedValue", rows  # a vector row, no error
    assert rows[0][1]["uri"] == str(photo) and len(rows[0][1]["vector"]) == 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvjpeg)")
def test_nvjpeg_agrees_with_the_cpu_batch_decoder():
    datas = _photo_jpegs()
    cpu = decode_batch(datas, CFG, "cpu")
    gpu = decode_batch(datas, CFG, "cuda")
    assert gpu.pixels.device.type == "cuda"
    assert (gpu.pixels.cpu() - cpu.pixels).abs().mean() < 2


def _psnr(jpeg_a, jpeg_b):
    a = np.asarray(Image.open(io.BytesIO(jpeg_a)).convert("RGB"), dtype=np.float64)
    b = np.asarray(Image.open(io.BytesIO(jpeg_b)).convert("RGB"), dtype=np.float64)
    assert a.shape == b.shape
    return 10 * np.log10(255 ** 2 / max(((a - b) ** 2).mean(), 1e-12))


def test_thumbnails_keep_their_size_and_look_as_the_pillow_paths():
    from gridtsne.batch_decode import encode_thumbnail, submit_thumbnails

    datas = _photo_jpegs()
    out = decode_batch(datas, CFG)
    for data, outcome in zip(datas, out.outcomes):
        ref = decode_image(data, CFG)
        thumb = Image.open(io.BytesIO(outcome.thumbnail))
        assert thumb.format == "JPEG"
        assert thumb.size == Image.open(io.BytesIO(ref.thumbnail)).size
        assert _psnr(outcome.thumbnail, ref.thumbnail) >= 28  # resized by another filter
        # The encoder alone, on the very same pixels: Pillow's JPEG within rounding.
        pixels = np.ascontiguousarray(np.asarray(thumb.convert("RGB")))
        pil = io.BytesIO()
        Image.fromarray(pixels).save(pil, "JPEG", quality=CFG.thumbnail_quality)
        ours = encode_thumbnail(pixels, CFG.thumbnail_quality)
        assert _psnr(ours, pil.getvalue()) >= 45
        assert abs(len(ours) - len(pil.getvalue())) <= 0.05 * len(pil.getvalue())
    # Chunks on a pool give each image its own bytes, in order.
    stack = np.stack([np.full((8, 12, 3), v, np.uint8) for v in range(0, 250, 7)])
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = submit_thumbnails(stack, 90, pool.submit)
        got = [f.result()[k] for f, k in futures]
    assert len(got) == len(stack)
    for image, jpeg in zip(stack, got):
        decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=int)
        assert np.abs(decoded - int(image[0, 0, 0])).max() <= 2
