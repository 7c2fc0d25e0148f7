"""The hand-written parsers of untrusted bytes, attacked: the JPEG header reader
(:mod:`gridtsne.jpeg`) and the format sniffer (:mod:`gridtsne.sniff`), against Pillow.

Crafted cases first, then fuzzing with hypothesis: mutated seed files from
``tests/fuzz_corpus/`` (``python -m tests.make_fuzz_corpus`` rewrites them), JPEGs built from
random EXIF and XMP blocks, and random bytes. Neither parser may raise; wherever Pillow opens
a file, a header the reader returns must give Pillow's size, and an orientation it claims to
know must be the one Pillow applies. The example counts fit CI (about 20 s); a longer run:

    GRIDTSNE_FUZZ_EXAMPLES=50000 python -m pytest -q tests/test_jpeg.py -k fuzz

(the number of examples of each fuzz test; without it the run is derandomised, so CI sees the
same examples every time; with it every run draws new ones).
"""
import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gridtsne.decode import DecodeConfig, decode_image, upright_size
from gridtsne.jpeg import read_header
from gridtsne.sniff import HEADER_BYTES, image_format
from tests import jpeg_segments as js

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
SEEDS = {p.name: p.read_bytes() for p in sorted(CORPUS.glob("*.jpg"))}
SOF0 = 0xC0
_LONG_RUN = int(os.environ.get("GRIDTSNE_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples):
    """``examples`` in CI (derandomised), GRIDTSNE_FUZZ_EXAMPLES for a longer run."""
    return settings(max_examples=_LONG_RUN or examples, derandomize=not _LONG_RUN,
                    deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def pillow_view(data):
    """``(stored size, upright size, orientation)`` as the Pillow path (:mod:`gridtsne.decode`)
    sees a file, or None when Pillow does not open it. The orientation is the one
    ``ImageOps.exif_transpose`` applies (1: none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = Image.open(io.BytesIO(data))
        except Exception:
            return None
        try:
            value = image.getexif().get(js.ORIENTATION)
        except Exception:  # decode.py keeps the pixels unrotated
            value = None
        try:
            orientation = {k: k for k in range(2, 9)}.get(value, 1)
        except TypeError:  # an unhashable value rotates nothing
            orientation = 1
        return image.size, upright_size(image), orientation


def check_against_pillow(data):
    """The properties every input must have (see the module docstring)."""
    header = read_header(data)
    image_format(data[:HEADER_BYTES])
    pillow = pillow_view(data)
    if header is None or pillow is None:
        return header, pillow
    size, upright, orientation = pillow
    assert (header.width, header.height) == size
    if header.orientation_known:
        assert header.orientation == orientation
        assert header.upright_size == upright
    return header, pillow


# --- crafted cases ------------------------------------------------------------------------

def test_exif_after_the_frame_header_turns_the_image_as_pillow_does():
    from gridtsne.batch_decode import decode_batch

    plain = js.without_app(js.tiny_jpeg((64, 32), quality=90))
    data = js.insert(plain, 0xE1, js.exif(6), after=SOF0)
    markers = [m for m, _ in js.split(data)[0]]
    assert markers.index(0xE1) > markers.index(SOF0)  # EXIF after the frame header
    header, (_, upright, orientation) = check_against_pillow(data)
    assert orientation == 6 and header.orientation == 6 and header.orientation_known
    cfg = DecodeConfig(input_size=32)
    ref = decode_image(data, cfg)
    out = decode_batch([data], cfg)
    meta = out.outcomes[0]
    assert meta.fast and (meta.width, meta.height) == (ref.width, ref.height) == (32, 64)
    got = out.pixels[0].permute(1, 2, 0).numpy()
    assert np.abs(got - ref.pixels.astype(np.float32)).mean() < 6


def _entries(*entries, order=b"II", **kwargs):
    return js.insert(SEEDS["baseline.jpg"], 0xE1, b"Exif\x00\x00" + js.tiff(list(entries), order,
                                                                            **kwargs), 0xD8)


O = js.ORIENTATION
CASES = {
    # name: (file, orientation the reader must know, or None: it must defer to Pillow)
    "exif split over two segments": (SEEDS["exif5_split.jpg"], 5),
    "xmp only": (SEEDS["xmp8.jpg"], 8),
    "exif wins over xmp": (js.insert(SEEDS["exif6.jpg"], 0xE1, js.xmp(8), 0xD8), 6),
    "exif without orientation, then xmp": (
        js.insert(_entries((0x010F, 2, 4, b"abc\x00")), 0xE1, js.xmp(3), 0xD8), 3),
    "big-endian long": (SEEDS["exif3_big_endian_long.jpg"], 3),
    "out of range": (_entries((O, js.SHORT, 1, 9)), 1),
    "zero": (_entries((O, js.SHORT, 1, 0)), 1),
    "the last of two entries": (_entries((O, js.SHORT, 1, 3), (O, js.SHORT, 1, 6)), 6),
    "an unknown type is skipped": (_entries((O, js.SHORT, 1, 3), (O, 99, 1, 6)), 3),
    "odd but accepted tiff magic": (_entries((O, js.SHORT, 1, 8), order=b"MM",
                                             magic=b"\x2a\x00"), 8),
    "empty exif, xmp": (js.insert(js.insert(SEEDS["baseline.jpg"], 0xE1, b"Exif\x00\x00", 0xD8),
                                  0xE1, js.xmp(7), 0xD8), 7),
    "orientation as a rational": (_entries((O, 5, 1, 64)), None),
    "two shorts": (_entries((O, js.SHORT, 2, 6)), None),
    "bigtiff header": (_entries((O, js.SHORT, 1, 6), magic=b"\x2b\x00"), None),
    "entry data outside the block before it": (
        _entries((0x010F, 2, 40, 10_000), (O, js.SHORT, 1, 6)), None),
    "ifd outside the block": (js.insert(SEEDS["baseline.jpg"], 0xE1,
                                        b"Exif\x00\x00II*\x00\xff\x00\x00\x00", 0xD8), None),
}


@pytest.mark.parametrize("name", CASES)
def test_orientation_is_pillows_or_left_to_pillow(name):
    data, expected = CASES[name]
    header, pillow = check_against_pillow(data)
    assert header is not None and pillow is not None
    if expected is None:
        assert not header.orientation_known and not header.fast_decodable
    else:
        assert header.orientation_known and header.fast_decodable
        assert header.orientation == expected == pillow[2]


def test_files_pillow_and_libjpeg_read_differently_go_to_pillow():
    plain = SEEDS["baseline.jpg"]
    segments, scan = js.split(plain)
    sof = next(p for m, p in segments if m == SOF0)
    bigger = sof[:1] + struct.pack(">HH", 99, 99) + sof[5:]
    for data in (js.join(segments + [(0xC1, bigger)], scan),  # a second frame header
                 plain[:2] + b"\x00" + plain[2:],  # junk before a marker
                 plain[:2] + b"\xff\x00" + plain[2:],  # a stuffed zero outside a scan
                 plain[:2] + b"\xff\xd8" + plain[2:],  # SOI again (Pillow: no length)
                 plain[:2] + b"\xff\xf0\x00\x04ab" + plain[2:],  # JPG0
                 js.join(segments, b"")):  # no scan at all
        assert read_header(data) is None


def test_seed_corpus_is_read_like_pillow():
    assert len(SEEDS) >= 8 and sum(map(len, SEEDS.values())) < 16_000
    for name, data in SEEDS.items():
        header, pillow = check_against_pillow(data)
        assert header is not None and pillow is not None, name
        assert header.orientation_known, name
        assert header.fast_decodable == (name != "cmyk_adobe.jpg"), name


# --- fuzzing ------------------------------------------------------------------------------

MUTATION = st.tuples(st.sampled_from(["set", "insert", "delete", "truncate", "duplicate"]),
                     st.integers(0, 1 << 16), st.binary(min_size=1, max_size=6))


def mutate(data, mutations):
    for op, at, value in mutations:
        at %= max(len(data), 1)
        if op == "set":
            data = data[:at] + value + data[at + len(value):]
        elif op == "insert":
            data = data[:at] + value + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + value[0]:]
        elif op == "truncate":
            data = data[:at]
        else:  # a stretch of the file again, as a segment repeated or spliced
            data = data[:at] + data[at:at + 4 * value[0]] + data[at:]
    return data


@fuzz_settings(2000)
@given(st.sampled_from(sorted(SEEDS)), st.lists(MUTATION, min_size=1, max_size=5))
def test_fuzz_mutated_seed_files(name, mutations):
    # Mutations in the header, where the reader works, far more often than in the scan.
    check_against_pillow(mutate(SEEDS[name], mutations))


TAGS = st.one_of(st.just(js.ORIENTATION), st.sampled_from([0x010F, 0x0128, 0x8769, 0x011A]),
                 st.integers(0, 0xFFFF))
ENTRY = st.tuples(TAGS, st.one_of(st.sampled_from([js.SHORT, js.LONG]), st.integers(0, 20)),
                  st.one_of(st.integers(0, 3), st.integers(0, 1 << 20)),
                  st.one_of(st.integers(0, 10), st.integers(0, (1 << 32) - 1),
                            st.binary(min_size=4, max_size=4)))


@st.composite
def crafted_jpegs(draw):
    """A real JPEG with a random EXIF block (valid or not, maybe split over segments, before
    or after the frame header) and maybe an XMP block."""
    plain = SEEDS[draw(st.sampled_from(["baseline.jpg", "grey.jpg", "progressive.jpg"]))]
    order = draw(st.sampled_from([b"II", b"MM"]))
    magic = draw(st.one_of(st.none(), st.sampled_from([b"\x00\x2a", b"\x2a\x00", b"\x00\x2b",
                                                       b"\x2b\x00"]),
                           st.binary(min_size=2, max_size=2)))
    block = js.tiff(draw(st.lists(ENTRY, max_size=5)), order, magic,
                    ifd=draw(st.one_of(st.just(8), st.integers(0, 64))),
                    tail=draw(st.binary(max_size=24)))
    block = block[:draw(st.integers(0, len(block)))] if draw(st.booleans()) else block
    cuts = sorted(draw(st.lists(st.integers(0, len(block)), max_size=2)))
    parts = [block[a:b] for a, b in zip([0] + cuts, cuts + [len(block)])]
    data = plain
    for part in reversed(parts):
        prefix = b"Exif\x00\x00" * draw(st.integers(1, 2))
        data = js.insert(data, 0xE1, prefix + part, draw(st.sampled_from([0xD8, js.FRAME])))
    if draw(st.booleans()):
        text = draw(st.one_of(st.builds(js.xmp, st.integers(0, 12)),
                              st.binary(max_size=40).map(lambda b: js.XMP_NAMESPACE + b)))
        data = js.insert(data, 0xE1, text, draw(st.sampled_from([0xD8, js.FRAME])))
    return data


@fuzz_settings(1200)
@given(crafted_jpegs())
def test_fuzz_crafted_exif_and_xmp(data):
    header, pillow = check_against_pillow(data)
    assert header is not None and pillow is not None  # the frame and the scan are intact


@fuzz_settings(800)
@given(st.binary(max_size=200).map(lambda b: b"\xff\xd8\xff" + b))
def test_fuzz_random_bytes_after_a_jpeg_signature(data):
    check_against_pillow(data)


def _small_files():
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    files = {}
    for fmt, kwargs in [("PNG", {}), ("GIF", {}), ("WEBP", {}), ("BMP", {}), ("TIFF", {}),
                        ("ICO", {"sizes": [(4, 4)]}), ("PPM", {}), ("JPEG2000", {}), ("JPEG", {})]:
        out = io.BytesIO()
        image.save(out, fmt, **kwargs)
        files[fmt] = out.getvalue()
    for name, mode in (("PGM", "L"), ("PFM", "F")):  # PFM: Pillow writes floats as "Pf"
        out = io.BytesIO()
        image.convert(mode).save(out, "PPM")
        files[name] = out.getvalue()
    return files


SMALL = _small_files()
# Pillow's format name -> the sniffer's, for the formats the sniffer knows.
SNIFFED = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "GIF": "gif", "WEBP": "webp",
           "BMP": "bmp", "DIB": "bmp", "TIFF": "tiff", "JPEG2000": "jp2", "ICO": "ico",
           "PPM": "pnm", "PSD": "psd", "AVIF": "avif", "HEIF": "heif"}


def test_sniffer_names_every_small_file():
    for name, data in SMALL.items():
        assert SNIFFED[Image.open(io.BytesIO(data)).format] == image_format(data), name


@fuzz_settings(1200)
@given(st.sampled_from(sorted(SMALL)), st.lists(MUTATION, max_size=3),
       st.integers(0, HEADER_BYTES))
def test_fuzz_sniffer_agrees_with_pillow(name, mutations, keep):
    """A file Pillow opens in a format the sniffer knows is named by it (a photo without an
    extension is not skipped), and the sniffer names no file Pillow reads as another format."""
    data = mutate(SMALL[name], [(op, at % HEADER_BYTES, v) for op, at, v in mutations])
    sniffed = image_format(data[:keep])  # a short read of a short file
    assert sniffed is None or isinstance(sniffed, str)
    sniffed = image_format(data[:HEADER_BYTES])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fmt = Image.open(io.BytesIO(data)).format
        except Exception:
            return
    if fmt in SNIFFED:
        assert sniffed == SNIFFED[fmt], (fmt, data[:HEADER_BYTES])
