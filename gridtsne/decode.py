"""Bytes of one image file -> the model's input pixels, the upright size and a JPEG thumbnail.

Pure functions over Pillow. Anything that goes wrong raises :class:`DecodeError`, which carries
what the ``errors/`` table records (stage, exception type, readable message), so a bad file
becomes a row instead of a crashed job.
"""
import dataclasses
import io
import logging

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

# Stages a file can fail at; the ``stage`` column of ``errors/``.
STAGE_LIST = "list"
STAGE_READ = "read"
STAGE_DECODE = "decode"
STAGE_EMBED = "embed"

# EXIF orientations that turn the stored image by 90 or 270 degrees (width and height swap).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "lanczos": Image.Resampling.LANCZOS}


class DecodeError(Exception):
    """A file that cannot be used, with what ``errors/`` records about it.

    Parameters
    ----------
    stage : str
        Where it failed: ``"read"`` (fetching bytes, size limits), ``"decode"`` (Pillow),
        ``"list"`` or ``"embed"``.
    error_type : str
        The exception's class name (``"UnidentifiedImageError"``, ``"FileTooLarge"`` ...).
    message : str
        A sentence a user can act on.
    """

    def __init__(self, stage, error_type, message):
        super().__init__(f"{stage}: {error_type}: {message}")
        self.stage = stage
        self.error_type = error_type
        self.message = message

    def __reduce__(self):  # travels between processes (a machine-wide shared model)
        return type(self), (self.stage, self.error_type, self.message)

    @classmethod
    def from_exception(cls, stage, exc):
        return cls(stage, type(exc).__name__, str(exc) or repr(exc))


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """How images are decoded; one frozen value shared by every worker.

    Attributes
    ----------
    input_size : int
        Side of the square the model sees. The whole image is resized to it (aspect ratio is
        not kept, nothing is cropped), so the map groups by the whole picture.
    thumbnail_size : int
        Longest side of the stored JPEG thumbnail; smaller images are not enlarged.
    thumbnail_quality : int
        JPEG quality of the thumbnail.
    max_pixels : int
        Decompression-bomb guard: images whose header declares more pixels are refused before
        any pixel is decoded.
    max_bytes : int
        Files larger than this are refused without being read in full.
    background : tuple of int
        RGB colour that transparent pixels are composited on (neutral grey by default, so
        neither black nor white logos get an unfair neighbour).
    draft : bool
        Let libjpeg decode large JPEGs at 1/2, 1/4 or 1/8 scale directly (1.5-2.5x faster);
        the reduced image is never smaller than ``input_size`` / ``thumbnail_size`` need.
    resample : str
        ``"bilinear"``, ``"bicubic"`` or ``"lanczos"`` for the model input.
    """

    input_size: int = 224
    thumbnail_size: int = 128
    thumbnail_quality: int = 85
    max_pixels: int = 89_478_485  # Pillow's own default limit
    max_bytes: int = 256 * 2**20
    background: tuple = (128, 128, 128)
    draft: bool = True
    resample: str = "bicubic"

    def __post_init__(self):
        for name in ("input_size", "thumbnail_size", "max_pixels", "max_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 1 <= self.thumbnail_quality <= 95:
            raise ValueError(f"thumbnail_quality must be in 1..95, got {self.thumbnail_quality!r}")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {self.resample!r}")
        if len(self.background) != 3 or not all(0 <= int(c) <= 255 for c in self.background):
            raise ValueError(f"background must be an RGB triple in 0..255, got {self.background!r}")
        object.__setattr__(self, "background", tuple(int(c) for c in self.background))

    def describe(self):
        """The preprocessing, for the ``vectors/`` schema metadata."""
        return {"resize": f"{self.resample}, whole image squashed to "
                          f"{self.input_size}x{self.input_size}, aspect not kept",
                "input_size": self.input_size, "exif_transpose": True,
                "alpha_background": list(self.background), "jpeg_draft": self.draft,
                "thumbnail_size": self.thumbnail_size,
                "thumbnail_quality": self.thumbnail_quality}


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """One decoded image.

    Attributes
    ----------
    width, height : int
        Full-resolution size after EXIF rotation (not the reduced draft size).
    pixels : numpy.ndarray
        ``(input_size, input_size, 3)`` uint8 RGB, what the model sees.
    thumbnail : bytes
        JPEG, longest side at most ``thumbnail_size``.
    format : str
        Pillow's name of the file format (``"JPEG"``, ``"PNG"`` ...).
    """

    width: int
    height: int
    pixels: np.ndarray
    thumbnail: bytes
    format: str


def check_bytes(data, config):
    """Refuse an empty file or one above ``config.max_bytes`` (both decoders, before any
    decoding)."""
    if len(data) == 0:
        raise DecodeError(STAGE_READ, "EmptyFile", "the file is empty (0 bytes)")
    if len(data) > config.max_bytes:
        raise DecodeError(STAGE_READ, "FileTooLarge",
                          f"{len(data):,} bytes is more than max_bytes={config.max_bytes:,}")


def check_pixels(width, height, config):
    """Refuse an image whose header declares more than ``config.max_pixels`` (both decoders,
    before any pixel is decoded)."""
    if width * height > config.max_pixels:
        raise DecodeError(STAGE_DECODE, "DecompressionBombError",
                          f"the image declares {width} x {height} = {width * height:,} "
                          f"pixels, more than max_pixels={config.max_pixels:,}")


def _raise_pillow_ceiling(max_pixels):
    # Pillow refuses images above 2x its own global limit while opening them, before our
    # check runs; a user who allows more pixels must get them. Only ever raised, never lowered:
    # the per-config limit below is what decides.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def to_rgb(image, background=(128, 128, 128)):
    """``image`` in RGB, whatever its mode.

    Transparent modes (RGBA, LA, PA, P or L with a transparent colour) are composited on
    ``background``; 16-bit and 32-bit grey (I;16, I, F) are scaled down to 8 bits instead of
    being clipped (Pillow's plain ``convert`` would turn most 16-bit images white); 1-bit, L,
    P, CMYK and YCbCr go through Pillow's conversions.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_grey_to_uint8(np.asarray(image), mode), "L").convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise DecodeError(STAGE_DECODE, "UnsupportedMode",
                          f"cannot convert Pillow mode {mode!r} to RGB: {exc}") from exc


def _grey_to_uint8(array, mode):
    array = array.astype(np.float64)
    if mode.startswith("I;16"):
        scaled = array / 257.0
    elif mode == "F" and array.size and np.nanmax(array) <= 1.0:
        scaled = array * 255.0  # float images in 0..1
    elif mode == "I" and array.size and array.max() > 255:
        scaled = array / 257.0  # 16-bit data that Pillow widened to 32-bit ints
    else:
        scaled = array
    return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)


def upright_size(image):
    """Width and height of ``image`` once its EXIF orientation is applied."""
    width, height = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block must not cost the image
        orientation = None
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def _exif_transpose(image):
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # keep the pixels, lose only the rotation
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return image


def decode_image(data, config=DecodeConfig()):
    """Decode one image file's bytes.

    Parameters
    ----------
    data : bytes
        The whole file.
    config : DecodeConfig

    Returns
    -------
    DecodedImage

    Raises
    ------
    DecodeError
        For an empty or oversized file, content Pillow cannot identify, a declared size above
        ``max_pixels``, a truncated or corrupt stream, or a mode that has no RGB conversion.
    """
    check_bytes(data, config)
    _raise_pillow_ceiling(config.max_pixels)
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        head = bytes(data[:8])
        raise DecodeError(STAGE_DECODE, "UnidentifiedImageError",
                          f"not an image Pillow can read (first bytes {head!r})") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(STAGE_DECODE, "DecompressionBombError",
                          f"{exc} (max_pixels={config.max_pixels:,})") from None
    except Exception as exc:
        raise DecodeError.from_exception(STAGE_DECODE, exc) from exc
    try:
        return _decode_opened(image, config)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError.from_exception(STAGE_DECODE, exc) from exc
    finally:
        image.close()


def _decode_opened(image, config):
    check_pixels(*image.size, config)
    width, height = upright_size(image)
    fmt = image.format or "unknown"
    if config.draft and fmt == "JPEG":
        need = max(config.input_size, config.thumbnail_size)
        image.draft("RGB", (need, need))
    image.load()  # first frame of an animation: Pillow opens on frame 0
    rgb = to_rgb(_exif_transpose(image), config.background)
    pixels = np.array(rgb.resize((config.input_size, config.input_size),
                                   _RESAMPLE[config.resample], reducing_gap=3.0))
    return DecodedImage(width=int(width), height=int(height),
                        pixels=pixels,
                        thumbnail=make_thumbnail(rgb, config.thumbnail_size,
                                                 config.thumbnail_quality),
                        format=fmt)


def make_thumbnail(rgb, size, quality=85):
    """JPEG bytes of ``rgb`` with its longest side at most ``size`` (never enlarged)."""
    thumb = rgb.copy()
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=quality)
    return out.getvalue()
