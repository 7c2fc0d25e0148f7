"""What a JPEG's header says (size, components, coding, EXIF orientation), read without decoding.

The batched image path (:mod:`gridtsne.batch_decode`) uses it to decide, before any pixel is
decoded, whether a file can go to the fast decoder (baseline or progressive Huffman, 8-bit,
grey or YCbCr, within the pixel limit) and how to turn the decoded pixels upright. It walks the
marker segments up to the first scan, so it costs microseconds per file.

The bytes are untrusted, and Pillow (:mod:`gridtsne.decode`) is the reference: the header
reports Pillow's size and the orientation Pillow applies, which means reading the markers as
Pillow does (every EXIF block before the scan, concatenated; XMP's ``tiff:Orientation`` where
EXIF has none). Whatever it cannot read the way Pillow would (an odd marker, a second frame
header, an EXIF block Pillow reads only in part) makes the file go to Pillow, never a guess.
``tests/test_jpeg_fuzz.py`` checks this against Pillow on random and mutated files.
"""
import dataclasses
import re
import struct

_SOI = b"\xff\xd8"
_APP1 = 0xE1
_APP14 = 0xEE
_SOS = 0xDA
# Start-of-frame markers: C0-C3, C5-C7, C9-CB, CD-CF (C4 = DHT, C8 = JPG, CC = DAC are not).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Huffman-coded 8-bit frames that libjpeg-turbo and nvjpeg both decode.
FAST_SOF = frozenset({0xC0, 0xC1, 0xC2})
_RST = frozenset(range(0xD0, 0xD8))  # no length field, in Pillow and libjpeg alike
# Markers with a length field in Pillow and libjpeg alike (SOFn, DHT, DAC, DQT, DNL, DRI, DHP,
# EXP, APPn, COM). Any other (TEM, SOI or EOI before the scan, JPGn, reserved) is read
# differently by the two, so such a file goes to Pillow.
_SEGMENTS = (frozenset(range(0xC0, 0xD0)) - {0xC8}) | frozenset(range(0xDB, 0xF0)) | {0xFE}
_READ = _SOF | {_APP1, _APP14}  # the segments whose content the header needs
_EXIF = b"Exif\x00\x00"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')  # as Pillow's getexif
_EXIF_ORIENTATION = 0x0112
_TIFF_ORDER = {b"MM\x00\x2a": ">", b"II\x2a\x00": "<", b"MM\x2a\x00": ">", b"II\x00\x2a": "<"}
# Bytes per value of the TIFF field types Pillow reads (others it skips).
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
              13: 4, 16: 8}
_SHORT, _LONG = 3, 4
_EOI_BYTES = b"\xff\xd9"
_TAIL = 1024  # an end-of-image marker further from the end (trailing junk): Pillow decides


class _Unsure(Exception):
    """The orientation cannot be read the way Pillow reads it."""


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
        The EXIF orientation Pillow applies, 1..8 (1 when absent or out of range; from XMP's
        ``tiff:Orientation`` when EXIF has none).
    adobe : bool
        Whether an Adobe APP14 segment is present (colour transform chosen by the encoder;
        such files, typically CMYK from Photoshop, go to Pillow).
    complete : bool
        Whether an end-of-image marker closes the file (a truncated file goes to Pillow, which
        refuses it with its usual message; GPU decoders may fill the missing part silently).
    orientation_known : bool
        False when the EXIF block is one Pillow reads only in part or with a value type this
        reader does not interpret (the file goes to Pillow).
    """

    width: int
    height: int
    components: int
    precision: int
    sof: int
    orientation: int = 1
    adobe: bool = False
    complete: bool = True
    orientation_known: bool = True

    @property
    def fast_decodable(self):
        """Whether the fast decoder handles it exactly as Pillow would (else: Pillow)."""
        return (self.sof in FAST_SOF and self.precision == 8 and self.components in (1, 3)
                and not self.adobe and self.complete and self.orientation_known
                and self.width > 0 and self.height > 0)

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
    if bytes(buf[:3]) != _SOI + b"\xff":
        return None
    pos, n = 2, len(buf)
    frame, exif, xmp, adobe = None, None, None, False
    while pos + 2 <= n:
        if buf[pos] != 0xFF:
            return None  # junk between segments: Pillow skips it, libjpeg warns
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _RST:
            pos += 2
            continue
        if marker == _SOS:
            break
        if marker not in _SEGMENTS or pos + 4 > n:
            return None
        (length,) = struct.unpack_from(">H", buf, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > n:
            return None
        if marker not in _READ:  # tables, comments, other APPn: skipped unread
            pos = end
            continue
        segment = bytes(buf[pos + 4:end])
        if marker == _APP1 and segment.startswith(_EXIF):
            exif = segment[6:] if exif is None else exif + segment[6:]
        elif marker == _APP1 and segment.startswith(_XMP):
            xmp = segment[len(_XMP):]
        elif marker == _APP14 and segment.startswith(b"Adobe"):
            adobe = True
        elif marker in _SOF:
            if frame is not None or len(segment) < 6:
                return None  # a second frame header: Pillow takes the last, libjpeg refuses
            frame = (marker,) + struct.unpack_from(">BHHB", segment)
        pos = end
    else:
        return None  # no scan: Pillow refuses the file
    if frame is None:
        return None
    sof, precision, height, width, components = frame
    try:
        orientation, known = _orientation(exif, xmp), True
    except (_Unsure, IndexError, struct.error):
        orientation, known = 1, False
    return JpegHeader(width=width, height=height, components=components, precision=precision,
                      sof=sof, orientation=orientation, adobe=adobe,
                      complete=_EOI_BYTES in bytes(buf[-_TAIL:]), orientation_known=known)


def _orientation(exif, xmp):
    """The orientation Pillow's ``getexif()`` gives, 1 for none or out of range."""
    value = None
    while exif and exif.startswith(_EXIF):
        exif = exif[6:]
    if exif:
        value = _exif_orientation(exif)
    if value is None and xmp is not None:
        match = _XMP_ORIENTATION.search(xmp)
        value = int(match[2]) if match else None
    return value if value in range(1, 9) else 1


def _exif_orientation(tiff):
    """The orientation tag of IFD0 of an EXIF TIFF block (the last one, as Pillow keeps), or
    None; raises :class:`_Unsure` where Pillow would stop reading or decode the value
    otherwise."""
    endian = _TIFF_ORDER.get(tiff[:4])
    if endian is None or len(tiff) < 8:
        raise _Unsure("not a classic TIFF header")
    (ifd,) = struct.unpack_from(endian + "I", tiff, 4)
    (count,) = struct.unpack_from(endian + "H", tiff, ifd)
    value = None
    for i in range(count):
        tag, kind, number, offset = struct.unpack_from(endian + "HHII", tiff, ifd + 2 + 12 * i)
        size = number * _TYPE_SIZE.get(kind, 0)
        if kind not in _TYPE_SIZE or size == 0:
            continue  # Pillow skips the entry
        if size > 4 and offset + size > len(tiff):
            raise _Unsure("an entry's data lies outside the block: Pillow stops there")
        if tag != _EXIF_ORIENTATION:
            continue
        if kind not in (_SHORT, _LONG) or number != 1:
            raise _Unsure(f"orientation of type {kind} x {number}")
        (value,) = struct.unpack_from(endian + ("H" if kind == _SHORT else "I"), tiff,
                                      ifd + 2 + 12 * i + 8)
    return value
