"""Write the seed corpus of the JPEG header fuzzing (``tests/fuzz_corpus/``):

    python -m tests.make_fuzz_corpus

Tiny real JPEGs (a few hundred bytes each), with their EXIF and XMP orientation where encoders
put it and where they rarely do (after the frame header, split over two segments, XMP only).
The fuzz tests (``tests/test_jpeg.py``) mutate these files.
"""
from pathlib import Path

from tests import jpeg_segments as js

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
SOF0 = 0xC0


def corpus_files():
    """``{name: bytes}`` of the seed corpus."""
    plain = js.without_app(js.tiny_jpeg())
    split_ifd = js.tiff([(js.ORIENTATION, js.SHORT, 1, 5)], ifd=16)
    return {
        "baseline.jpg": plain,
        "grey.jpg": js.without_app(js.tiny_jpeg((8, 8), "L")),
        "progressive.jpg": js.without_app(js.tiny_jpeg(progressive=True)),
        "restart.jpg": js.without_app(js.tiny_jpeg((32, 16), restart_marker_blocks=1)),
        "cmyk_adobe.jpg": js.tiny_jpeg((8, 8), "CMYK"),
        "exif6.jpg": js.insert(plain, 0xE1, js.exif(6), after=0xD8),
        "exif6_after_sof.jpg": js.insert(plain, 0xE1, js.exif(6), after=SOF0),
        "exif3_big_endian_long.jpg": js.insert(plain, 0xE1, js.exif(3, b"MM", js.LONG),
                                               after=0xD8),
        # One TIFF block over two EXIF segments: Pillow reads them as one.
        "exif5_split.jpg": js.insert(js.insert(plain, 0xE1, b"Exif\x00\x00" + split_ifd[16:],
                                               after=0xD8),
                                     0xE1, b"Exif\x00\x00" + split_ifd[:16], after=0xD8),
        "xmp8.jpg": js.insert(plain, 0xE1, js.xmp(8), after=0xD8),
    }


if __name__ == "__main__":
    CORPUS.mkdir(exist_ok=True)
    for name, data in corpus_files().items():
        (CORPUS / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")
