"""Recognise image files by their first bytes, so that a photo without an extension is found
and a text file named ``.jpg`` is caught before a decoder sees it.
"""
import posixpath

# Enough bytes for every signature below (ISO-BMFF brands sit at offset 8..12).
HEADER_BYTES = 32

# Extensions that make a file an image candidate even when its content says otherwise: such a
# file is reported in ``errors/`` ("not an image") instead of being skipped silently.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".gif", ".bmp", ".dib",
    ".tif", ".tiff", ".jp2", ".j2k", ".jpx", ".ico", ".ppm", ".pgm", ".pbm", ".pnm",
    ".pfm", ".avif", ".heic", ".heif", ".psd", ".tga",
})

_ISO_BMFF_BRANDS = {b"avif": "avif", b"avis": "avif", b"heic": "heic", b"heix": "heic",
                    b"mif1": "heif", b"msf1": "heif"}


def image_format(header):
    """The image format that ``header`` (the first bytes of a file) announces, or None.

    Parameters
    ----------
    header : bytes
        At least :data:`HEADER_BYTES` bytes from the start of the file (fewer for a short file).

    Returns
    -------
    str or None
        ``"jpeg"``, ``"png"``, ``"gif"``, ``"webp"``, ``"bmp"``, ``"tiff"``, ``"jp2"``,
        ``"ico"``, ``"pnm"``, ``"psd"``, ``"avif"``, ``"heic"`` or ``"heif"``.
    """
    h = bytes(header[:HEADER_BYTES])
    if h.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if h.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if h[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        return "webp"
    if h[:2] == b"BM" and len(h) >= 14:
        return "bmp"
    if h[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if h.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or h.startswith(b"\xff\x4f\xff\x51"):
        return "jp2"
    if h[:4] == b"\x00\x00\x01\x00" and len(h) >= 6 and h[4:6] != b"\x00\x00":
        return "ico"
    # Netpbm P1-P6, and Pf (grey PFM, floats), which Pillow also reads.
    if len(h) >= 3 and h[0:1] == b"P" and h[1:2] in b"123456f" and h[2:3] in b" \t\r\n#":
        return "pnm"
    if h[:4] == b"8BPS":
        return "psd"
    if h[4:8] == b"ftyp":
        return _ISO_BMFF_BRANDS.get(h[8:12])
    return None


def has_image_extension(uri):
    """Whether the file name of ``uri`` ends in a known image extension (case-insensitive)."""
    name = str(uri).split("::", 1)[0].split("?", 1)[0]
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS
