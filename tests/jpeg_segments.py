"""Crafting JPEG files segment by segment: EXIF and XMP blocks where encoders do not put them,
for the header reader's tests, its fuzzing and the seed corpus in ``tests/fuzz_corpus/``."""
import io
import struct

import numpy as np
from PIL import Image

SOI = b"\xff\xd8"
SOS = 0xDA
XMP_NAMESPACE = b"http://ns.adobe.com/xap/1.0/\x00"
ORIENTATION = 0x0112
SHORT, LONG = 3, 4


def tiny_jpeg(size=(16, 8), mode="RGB", **kwargs):
    """A small real JPEG (four colour quadrants, so any turn or flip shows in the pixels)."""
    w, h = size
    array = np.zeros((h, w, 3), np.uint8)
    array[: h // 2, : w // 2], array[: h // 2, w // 2:] = (220, 20, 20), (20, 20, 220)
    array[h // 2:, : w // 2], array[h // 2:, w // 2:] = (20, 200, 20), (240, 240, 240)
    out = io.BytesIO()
    Image.fromarray(array).convert(mode).save(out, "JPEG", quality=kwargs.pop("quality", 50),
                                              **kwargs)
    return out.getvalue()


def split(data):
    """``(segments, scan)``: the marker segments between SOI and the first SOS as
    ``(marker, payload)`` pairs, and the bytes from the SOS marker to the end."""
    assert data[:2] == SOI
    pos, segments = 2, []
    while data[pos + 1] != SOS:
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segments.append((marker, data[pos + 4:pos + 2 + length]))
        pos += 2 + length
    return segments, data[pos:]


def join(segments, scan):
    """The inverse of :func:`split`."""
    body = b"".join(bytes([0xFF, m]) + struct.pack(">H", len(p) + 2) + p for m, p in segments)
    return SOI + body + scan


def without_app(data):
    """``data`` with its APPn segments removed (no JFIF, EXIF or XMP left)."""
    segments, scan = split(data)
    return join([(m, p) for m, p in segments if not 0xE0 <= m <= 0xEF], scan)


FRAME = "frame"  # ``after`` for "after the frame header", whichever SOF marker it has


def insert(data, marker, payload, after):
    """``data`` with a ``marker`` segment inserted after the first segment of marker ``after``
    (0xD8: right after SOI; FRAME: after the frame header)."""
    segments, scan = split(data)
    markers = [m for m, _ in segments]
    if after == FRAME:
        after = next(m for m in markers if m in (0xC0, 0xC1, 0xC2))
    index = 0 if after == 0xD8 else 1 + markers.index(after)
    return join(segments[:index] + [(marker, payload)] + segments[index:], scan)


def tiff(entries, order=b"II", magic=None, ifd=8, tail=b""):
    """A TIFF block with one IFD of ``entries``, each ``(tag, type, count, value)`` where
    value is an int (packed in the 4-byte value field) or 4 raw bytes."""
    endian = "<" if order == b"II" else ">"
    if magic is None:
        magic = struct.pack(endian + "H", 42)
    head = order + magic + struct.pack(endian + "I", ifd)
    body = struct.pack(endian + "H", len(entries))
    for tag, kind, count, value in entries:
        if isinstance(value, int):
            if kind == SHORT and count == 1:
                value = struct.pack(endian + "HH", value & 0xFFFF, 0)
            else:
                value = struct.pack(endian + "I", value)
        body += struct.pack(endian + "HHI", tag, kind, count) + value
    body += struct.pack(endian + "I", 0)
    return head + b"\x00" * (ifd - len(head)) + body + tail


def exif(orientation, order=b"II", kind=SHORT):
    """The payload of an APP1 EXIF segment holding only ``orientation``."""
    return b"Exif\x00\x00" + tiff([(ORIENTATION, kind, 1, orientation)], order)


def xmp(orientation):
    """The payload of an APP1 XMP segment with ``tiff:Orientation``."""
    return XMP_NAMESPACE + (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
                            b'tiff:Orientation="%d"/></rdf:RDF></x:xmpmeta>' % orientation)
