"""The batched image path: a batch of files' bytes -> model-input pixels on the device + thumbnails.

JPEGs are decoded together by ``torchvision.io.decode_jpeg`` (nvjpeg's batched decoder on CUDA,
libjpeg-turbo on the CPU, so CI runs this very code), turned upright from the EXIF orientation
read by :mod:`gridtsne.jpeg`, and resized as whole groups of equal size on the device (bicubic
with antialiasing, which matches Pillow's resampling: the vectors are within cosine 0.995 of the
Pillow path's on real photos, which ``tests/test_batch_embed.py`` checks; 0.999 measured on
clothing-small photos). Thumbnails are resized from the same decoded pixels, so each file is
decoded once, and JPEG-encoded by simplejpeg (libjpeg-turbo, the GIL released for the whole
encode) in chunks on the thread pool while the device works on. A file the fast decoder does not
take (not a JPEG, CMYK, 12-bit, arithmetic-coded, or refused by the decoder) goes alone through
the Pillow path of :mod:`gridtsne.decode`; the rest of its batch stays on the fast path.
"""
import concurrent.futures
import dataclasses
import logging
import math
import warnings

import simplejpeg

from gridtsne.decode import (STAGE_DECODE, DecodeConfig, DecodeError, check_bytes, check_pixels,
                             decode_image)
from gridtsne.failures import is_machine_failure
from gridtsne.jpeg import read_header

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImageMeta:
    """What a decoded image contributes to its ``vectors/`` row besides the vector."""

    width: int
    height: int
    thumbnail: bytes
    fast: bool  # decoded by the batched decoder (False: Pillow)


@dataclasses.dataclass
class DecodedBatch:
    """The outcome of :func:`decode_batch`.

    Attributes
    ----------
    pixels : torch.Tensor
        ``(n, 3, S, S)`` float32 in 0..255 on the device, one row per decoded image, in input
        order; not normalised.
    rows : list of int
        For each row of ``pixels``, the index of its file in the input.
    outcomes : list
        Per input file, an :class:`ImageMeta` or the :class:`~gridtsne.decode.DecodeError`
        that makes it unusable.
    """

    pixels: object  # torch.Tensor
    rows: list
    outcomes: list


def thumbnail_size(width, height, size):
    """Pillow's ``Image.thumbnail`` size for a ``width`` x ``height`` image in a ``size`` box.

    The same rounding (the side whose aspect error is smallest, never below 1 pixel), so both
    paths give thumbnails of the same size; never enlarged.
    """
    if width <= size and height <= size:
        return width, height
    aspect = width / height
    x, y = size, size
    if x / y >= aspect:
        x = max(min(math.floor(y * aspect), math.ceil(y * aspect),
                    key=lambda n: abs(aspect - n / y)), 1)
    else:
        y = max(min(math.floor(x / aspect), math.ceil(x / aspect),
                    key=lambda n: 0 if n == 0 else abs(aspect - x / n)), 1)
    return x, y


def orient(image, orientation):
    """``(3, H, W)`` ``image`` turned upright for EXIF ``orientation`` 1..8 (as Pillow does)."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1).flip(-2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return image.transpose(-1, -2).flip(-1)
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return image.transpose(-1, -2).flip(-2)
    return image


def resize(images, size):
    """``(n, 3, h, w)`` uint8 -> ``(n, 3, size[1], size[0])`` float in 0..255, rounded.

    Bicubic with antialiasing (a filter widened by the scale factor, as Pillow does), rounded
    to whole levels like Pillow's 8-bit output.
    """
    import torch
    width, height = size
    x = images.float()
    if x.shape[-2:] != (height, width):
        x = torch.nn.functional.interpolate(x, size=(height, width), mode="bicubic",
                                            antialias=True, align_corners=False)
    return x.clamp_(0, 255).round_()


def encode_thumbnail(pixels, quality):
    """JPEG bytes of a C-contiguous ``(h, w, 3)`` uint8 array.

    simplejpeg (libjpeg-turbo) with Pillow's settings (4:2:0 chroma subsampling, the same
    quantisation tables for ``quality``), so a thumbnail looks as the Pillow path's does; it
    releases the GIL for the whole encode, which Pillow's ``Image.save`` does only in part.
    """
    return simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB",
                                  colorsubsampling="420")


def encode_thumbnails(images, quality):
    """JPEG bytes of each ``(h, w, 3)`` uint8 array of ``images`` (or of an ``(n, h, w, 3)``)."""
    return [encode_thumbnail(image, quality) for image in images]


# Thumbnails per task on the pool: ~1 ms of encoding, so a task's overhead (tens of µs) is
# spread over many images and a batch still spreads over all threads.
THUMBNAIL_CHUNK = 16


def submit_thumbnails(images, quality, submit):
    """Encode ``images`` (``(n, h, w, 3)`` uint8) in chunks; ``(future, k)`` per image.

    ``future.result()[k]`` is the image's JPEG bytes.
    """
    out = []
    for start in range(0, len(images), THUMBNAIL_CHUNK):
        future = submit(encode_thumbnails, images[start:start + THUMBNAIL_CHUNK], quality)
        out.extend((future, k) for k in range(min(THUMBNAIL_CHUNK, len(images) - start)))
    return out


def _as_tensor(data):
    import torch
    with warnings.catch_warnings():  # decode_jpeg only reads its input
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(data, dtype=torch.uint8)


def _fast_decode(datas, device):
    """Decoded ``(3, H, W)`` uint8 tensors, or the exception, per input; one batched call."""
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [_as_tensor(d) for d in datas]
    try:
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    except Exception as exc:  # one bad file fails the batched call: find it
        log.debug("batched decode failed (%s); decoding one by one", exc)
    out = []
    for t in tensors:
        try:
            out.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
        except Exception as exc:
            out.append(exc)
    return out


def _pillow(data, config):
    try:
        return decode_image(data, config)
    except DecodeError as exc:
        return exc
    except Exception as exc:  # a bug must cost one file, not its batch
        if is_machine_failure(exc):  # the machine's: the bundle fails and is retried
            raise
        log.exception("unexpected failure decoding with Pillow")
        return DecodeError.from_exception(STAGE_DECODE, exc)


# Device memory bounds: decoded uint8 pixels held at once, and float pixels resized at once.
DECODE_CHUNK_PIXELS = 256 * 2**20  # 768 MiB of RGB uint8 (about 20 twelve-megapixel photos)
RESIZE_CHUNK_PIXELS = 64 * 2**20  # 768 MiB of RGB float32


def decode_batch(datas, config=DecodeConfig(), device="cpu", pool=None):
    """Decode a batch of whole files.

    Parameters
    ----------
    datas : sequence of bytes
        Each file's bytes.
    config : DecodeConfig
        Sizes and limits; ``resample`` and ``draft`` concern the Pillow path only (the fast
        path always resizes bicubic with antialiasing from the full decoded image).
    device : str or torch.device
        Where decoding and resizing run (``"cuda"``: nvjpeg).
    pool : concurrent.futures.Executor, optional
        Runs Pillow fallbacks and thumbnail JPEG encoding (both release the GIL; thumbnails
        in chunks of :data:`THUMBNAIL_CHUNK`) alongside the device work; None runs them
        inline.

    Returns
    -------
    DecodedBatch
    """
    import torch
    device = torch.device(device)
    size = config.input_size
    outcomes = [None] * len(datas)
    fast, slow = [], []
    for i, data in enumerate(datas):
        try:
            check_bytes(data, config)
            header = read_header(data)
            if header is not None and header.fast_decodable:
                check_pixels(header.width, header.height, config)
                fast.append((i, header))
            else:
                slow.append(i)
        except DecodeError as exc:
            outcomes[i] = exc
    submit = pool.submit if pool is not None else _inline
    slow_futures = {i: submit(_pillow, datas[i], config) for i in slow}

    pixels, thumbs = {}, {}
    for chunk in _chunks(fast, lambda item: item[1].width * item[1].height,
                         DECODE_CHUNK_PIXELS):
        decoded = _fast_decode([datas[i] for i, _ in chunk], device)
        upright = {}
        for (i, header), image in zip(chunk, decoded):
            if isinstance(image, Exception):
                slow_futures[i] = submit(_pillow, datas[i], config)  # Pillow has the last word
            else:
                upright[i] = orient(image, header.orientation)
                outcomes[i] = header.upright_size
        del decoded
        _resize_groups(upright, config, pixels, thumbs, submit)

    for i, future in slow_futures.items():
        result = future.result()
        if isinstance(result, DecodeError):
            outcomes[i] = result
            continue
        outcomes[i] = ImageMeta(result.width, result.height, result.thumbnail, fast=False)
        pixels[i] = torch.from_numpy(result.pixels).to(device).permute(2, 0, 1).float()
    for i, (future, k) in thumbs.items():
        width, height = outcomes[i]
        outcomes[i] = ImageMeta(width, height, future.result()[k], fast=True)

    rows = sorted(pixels)
    if rows:
        batch = torch.stack([pixels[i] for i in rows])
    else:
        batch = torch.empty((0, 3, size, size), dtype=torch.float32, device=device)
    return DecodedBatch(pixels=batch, rows=rows, outcomes=outcomes)


def _resize_groups(upright, config, pixels, thumbs, submit):
    """Resize images of equal shape together: model input into ``pixels``, thumbnails encoded."""
    import torch
    size = config.input_size
    groups = {}
    for i, image in upright.items():
        groups.setdefault(tuple(image.shape[-2:]), []).append(i)
    for (height, width), members in groups.items():
        tw, th = thumbnail_size(width, height, config.thumbnail_size)
        for part in _chunks(members, lambda i: height * width, RESIZE_CHUNK_PIXELS):
            stack = torch.stack([upright[i] for i in part])
            model_in = resize(stack, (size, size))
            small = resize(stack, (tw, th)).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            encoded = submit_thumbnails(small.cpu().numpy(), config.thumbnail_quality, submit)
            for k, i in enumerate(part):
                pixels[i] = model_in[k]
                thumbs[i] = encoded[k]


def _chunks(items, weight, budget):
    """Consecutive runs of ``items`` whose total ``weight`` stays within ``budget`` (>= 1 item)."""
    chunk, total = [], 0
    for item in items:
        w = weight(item)
        if chunk and total + w > budget:
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += w
    if chunk:
        yield chunk


class _Done:
    """An already-computed result with the ``Future.result()`` interface."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


def _inline(fn, *args):
    return _Done(fn(*args))


def thread_pool(threads):
    """The executor :func:`decode_batch` uses for Pillow fallbacks and thumbnail encoding."""
    return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="BatchDecode")
