"""What a JPEG's header says (size, components, coding, EXIF orientation), read without decoding.

The batched image path (:mod:`gridtsne.batch_decode`) uses it to decide, before any pixel is
decoded, whether a file can go to the fast decoder (baseline or progressive Huffman, 8-bit,
grey or YCbCr, within the pixel limit) and how to turn the decoded pixels upright. It walks the
marker segments up to the first scan, so it costs microseconds per file.
"""
import dataclasses
import struct

_SOI = b"\xff\xd8"
_APP1 = 0xE1
_SOS = 0xDA
_EOI = 0xD9
# Start-of-frame markers: C0-C3, C5-C7, C9-CB, CD-CF (C4 = DHT, C8 = JPG, CC = DAC are not).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Huffman-coded 8-bit frames that libjpeg-turbo and nvjpeg both decode.
FAST_SOF = frozenset({0xC0, 0xC1, 0xC2})
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn, TEM: no length field
_EXIF_ORIENTATION = 0x0112
_EOI_BYTES = b"\xff\xd9"
_TAIL = 1024  # an end-of-image marker further from the end (trailing junk): Pillow decides


@dataclasses.dataclass(frozen=True)
class JpegHeader:
    """The frame header of a JPEG and its EXIF orientation.

    Attributes
    ----------
    width, height : int
        Stored size (before EXIF orientation).
    components : int
        1 = grey, 3 = YCbCr (or RGB), 4 = CMYK/YCCK.
    precision : int
        Bits per sample (8, or 12 for rare medical/pro files).
    sof : int
        The start-of-frame marker (0xC0 baseline, 0xC1 extended, 0xC2 progressive, others
        lossless, hierarchical or arithmetic-coded).
    orientation : int
        EXIF orientation 1..8 (1 when absent or unreadable).
    adobe : bool
        Whether an Adobe APP14 segment is present (colour transform chosen by the encoder;
        such files, typically CMYK from Photoshop, go to Pillow).
    complete : bool
        Whether an end-of-image marker closes the file (a truncated file goes to Pillow, which
        refuses it with its usual message; GPU decoders may fill the missing part silently).
    """

    width: int
    height: int
    components: int
    precision: int
    sof: int
    orientation: int = 1
    adobe: bool = False
    complete: bool = True

    @property
    def fast_decodable(self):
        """Whether the fast decoder handles it exactly as Pillow would (else: Pillow)."""
        return (self.sof in FAST_SOF and self.precision == 8 and self.components in (1, 3)
                and not self.adobe and self.complete and self.width > 0 and self.height > 0)

    @property
    def upright_size(self):
        """``(width, height)`` once the EXIF orientation is applied."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


def read_header(data):
    """The :class:`JpegHeader` of JPEG bytes ``data``, or None when it is not a readable JPEG.

    Never raises: anything malformed gives None, and the file then goes the Pillow way, which
    gives the proper error message.
    """
    try:
        return _read_header(memoryview(data))
    except (IndexError, ValueError, struct.error):
        return None


def _read_header(buf):
    if bytes(buf[:2]) != _SOI:
        return None
    pos, n = 2, len(buf)
    orientation, adobe = 1, False
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (_SOS, _EOI):
            return None  # a scan before any frame header
        (length,) = struct.unpack_from(">H", buf, pos + 2)
        if length < 2:
            return None
        body = pos + 4
        if marker == _APP1 and bytes(buf[body:body + 6]) == b"Exif\x00\x00":
            orientation = _exif_orientation(buf[body + 6:pos + 2 + length]) or orientation
        elif marker == 0xEE and bytes(buf[body:body + 5]) == b"Adobe":
            adobe = True
        elif marker in _SOF:
            precision, height, width, components = struct.unpack_from(">BHHB", buf, body)
            return JpegHeader(width=width, height=height, components=components,
                              precision=precision, sof=marker, orientation=orientation,
                              adobe=adobe, complete=_EOI_BYTES in bytes(buf[-_TAIL:]))
        pos += 2 + length
    return None


def _exif_orientation(tiff):
    """The orientation tag of IFD0 of an EXIF TIFF block, or None."""
    order = bytes(tiff[:2])
    if order == b"II":
        endian = "<"
    elif order == b"MM":
        endian = ">"
    else:
        return None
    (ifd,) = struct.unpack_from(endian + "I", tiff, 4)
    (count,) = struct.unpack_from(endian + "H", tiff, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind, _ = struct.unpack_from(endian + "HHI", tiff, entry)
        if tag == _EXIF_ORIENTATION:
            if kind == 3:  # SHORT
                (value,) = struct.unpack_from(endian + "H", tiff, entry + 8)
            elif kind == 4:  # LONG
                (value,) = struct.unpack_from(endian + "I", tiff, entry + 8)
            else:
                return None
            return value if 1 <= value <= 8 else None
    return None
