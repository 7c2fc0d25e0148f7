"""Decoding over a corpus of bad and odd files that the tests generate (no pipeline)."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from gridtsne.decode import DecodeConfig, DecodeError, decode_image, to_rgb
from gridtsne.ingest import read_and_decode
from gridtsne.listing import expand_pattern
from gridtsne.sniff import image_format
from tests import image_corpus as corpus

CFG = DecodeConfig()


def _close(pixel, colour, tol=40):
    return all(abs(int(p) - c) <= tol for p, c in zip(pixel, colour))


def test_real_photo_gives_model_input_size_and_thumbnail():
    image = corpus.photo("chelsea")  # 451 x 300
    d = decode_image(corpus.jpeg_bytes(image), CFG)
    assert (d.width, d.height) == (451, 300)
    assert d.pixels.shape == (224, 224, 3) and d.pixels.dtype == np.uint8
    thumb = Image.open(io.BytesIO(d.thumbnail))
    assert thumb.format == "JPEG" and max(thumb.size) == 128 and thumb.size == (128, 85)


def test_thumbnail_size_is_configurable_and_never_enlarges():
    small = corpus.png_bytes(Image.new("RGB", (40, 20), corpus.RED))
    d = decode_image(small, DecodeConfig(thumbnail_size=256))
    assert Image.open(io.BytesIO(d.thumbnail)).size == (40, 20)
    big = corpus.jpeg_bytes(corpus.photo("coffee"))
    assert max(Image.open(io.BytesIO(decode_image(big, DecodeConfig(
        thumbnail_size=64)).thumbnail)).size) == 64


def test_zero_bytes():
    with pytest.raises(DecodeError) as err:
        decode_image(b"", CFG)
    assert (err.value.stage, err.value.error_type) == ("read", "EmptyFile")


def test_truncated_jpeg():
    data = corpus.jpeg_bytes(corpus.photo("chelsea"))[:3000]
    with pytest.raises(DecodeError) as err:
        decode_image(data, CFG)
    assert err.value.stage == "decode" and err.value.error_type == "OSError"
    assert "truncated" in err.value.message


def test_text_named_jpg():
    with pytest.raises(DecodeError) as err:
        decode_image(b"this is not a picture\n", CFG)
    assert err.value.error_type == "UnidentifiedImageError"
    assert "not an image" in err.value.message


def test_png_declaring_50000_squared_pixels_is_refused_before_decoding():
    data = corpus.png_declaring(50_000, 50_000)
    assert len(data) < 200
    with pytest.raises(DecodeError) as err:
        decode_image(data, CFG)
    assert err.value.error_type == "DecompressionBombError"


def test_pixel_limit_is_configurable():
    data = corpus.png_bytes(Image.new("RGB", (100, 100), corpus.RED))
    with pytest.raises(DecodeError) as err:
        decode_image(data, DecodeConfig(max_pixels=9_999))
    assert err.value.error_type == "DecompressionBombError" and "100 x 100" in err.value.message
    assert decode_image(data, DecodeConfig(max_pixels=10_000)).width == 100


def test_pixel_limit_above_pillows_own_is_honoured():
    # 12,000 x 16,000 = 192M pixels: Pillow alone refuses it (more than 2 x 89M).
    data = corpus.png_declaring(12_000, 16_000)
    with pytest.raises(DecodeError) as err:
        decode_image(data, CFG)
    assert err.value.error_type == "DecompressionBombError"
    with pytest.raises(DecodeError) as err:  # allowed now; fails later on the fake pixel data
        decode_image(data, DecodeConfig(max_pixels=200_000_000))
    assert err.value.error_type != "DecompressionBombError"


def test_byte_limit():
    data = corpus.jpeg_bytes(corpus.photo("chelsea"))
    with pytest.raises(DecodeError) as err:
        decode_image(data, DecodeConfig(max_bytes=len(data) - 1))
    assert (err.value.stage, err.value.error_type) == ("read", "FileTooLarge")


def test_cmyk_jpeg_becomes_red_rgb():
    d = decode_image(corpus.cmyk_jpeg(), CFG)
    assert _close(d.pixels[112, 112], (255, 0, 0), tol=30)


@pytest.mark.parametrize("make", [corpus.png16, corpus.tiff16], ids=["png16", "tiff16"])
def test_16_bit_grey_is_scaled_not_clipped(make):
    d = decode_image(make(value=32768), CFG)
    assert d.pixels.min() >= 125 and d.pixels.max() <= 131  # mid grey, not white
    dark = decode_image(make(value=2570), CFG)
    assert dark.pixels.max() <= 12


def test_palette_png_transparency_is_composited_on_grey():
    d = decode_image(corpus.palette_png_with_transparency(), CFG)
    assert _close(d.pixels[112, 20], (128, 128, 128), tol=3)  # transparent half
    assert _close(d.pixels[112, 200], corpus.GREEN, tol=3)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_modes_are_composited(mode):
    image = Image.new("RGBA", (20, 20), (250, 250, 250, 0)).convert(mode)
    assert to_rgb(image, (10, 20, 30)).getpixel((5, 5)) == (10, 20, 30)


@pytest.mark.parametrize("mode", ["1", "L", "I", "F", "YCbCr"])
def test_other_modes_convert(mode):
    image = Image.new("L", (20, 20), 255).convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and _close(rgb.getpixel((3, 3)), (255, 255, 255), tol=2)


def test_animated_gif_uses_first_frame():
    d = decode_image(corpus.animated_gif(), CFG)
    assert _close(d.pixels[100, 100], corpus.RED, tol=30)


def test_exif_rotation_is_applied_with_draft_mode():
    data = corpus.exif_rotated_jpeg(size=(1600, 800), orientation=6)
    d = decode_image(data, CFG)
    assert (d.width, d.height) == (800, 1600)  # full-size, upright, not the draft size
    # Orientation 6 turns the stored image 90 degrees clockwise: its left (red) goes on top.
    assert _close(d.pixels[20, 112], corpus.RED) and _close(d.pixels[200, 112], corpus.BLUE)
    assert Image.open(io.BytesIO(d.thumbnail)).size == (64, 128)


def test_draft_mode_gives_the_same_picture():
    data = corpus.jpeg_bytes(corpus.photo("astronaut").resize((2048, 2048)))
    fast = decode_image(data, CFG).pixels.astype(np.int16)
    full = decode_image(data, DecodeConfig(draft=False)).pixels.astype(np.int16)
    assert np.abs(fast - full).mean() < 3.0


def test_sniff_recognises_formats_by_content():
    image = Image.new("RGB", (16, 16), corpus.RED)
    for fmt, expected in [("JPEG", "jpeg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"),
                          ("BMP", "bmp"), ("TIFF", "tiff"), ("ICO", "ico"), ("PPM", "pnm")]:
        out = io.BytesIO()
        image.save(out, fmt)
        assert image_format(out.getvalue()[:32]) == expected, fmt
    assert image_format(b"this is not a picture") is None
    assert image_format(b"") is None


def test_names_with_spaces_and_non_ascii_and_unreadable_files(tmp_path):
    good = tmp_path / "Ferien Größe été 写真.jpg"
    good.write_bytes(corpus.jpeg_bytes(corpus.photo("coffee")))
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(corpus.jpeg_bytes(corpus.photo("coffee")))
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone" / "nothing.jpg")
    if os.geteuid() != 0:  # root reads anything; the dangling link stands in for it there
        locked.chmod(0)
    results = {}
    for info in expand_pattern(str(tmp_path)):
        try:
            results[os.path.basename(info.uri)] = read_and_decode(info, CFG)[0].width
        except DecodeError as exc:
            results[os.path.basename(info.uri)] = (exc.stage, exc.error_type)
    assert results["Ferien Größe été 写真.jpg"] == 600
    assert results["dangling.jpg"] == ("read", "FileNotFoundError")
    if os.geteuid() != 0:
        assert results["locked.jpg"] == ("read", "PermissionError")
