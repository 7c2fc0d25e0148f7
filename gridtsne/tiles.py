"""Deep Zoom (DZI) pyramid of the grid mosaic: geometry, tile pixels and the DZI descriptor.

Pure functions, no Beam: :class:`MosaicGeometry` says which tiles exist at each level and which
cells each top-level tile covers; :func:`render_top_tile` draws one full-resolution tile from
the thumbnails of its cells only; :func:`half` and :func:`assemble_parent` build every lower
level by 2x2 reduction of the level above, so no worker ever needs the whole mosaic.
"""
import dataclasses
import functools
import io
import logging
import math
import typing

from PIL import Image, ImageDraw, UnidentifiedImageError

log = logging.getLogger(__name__)

# Neutral dark grey: photos of any palette read well on it, and OpenSeadragon's page is dark too.
BACKGROUND = (40, 40, 40)
# A missing or undecodable thumbnail: lighter grey with a cross, unmistakable next to holes.
PLACEHOLDER_FILL = (88, 88, 88)
PLACEHOLDER_MARK = (150, 150, 150)

# Format name -> (file extension in the DZI, Pillow encoder name).
FORMATS = {"jpeg": ("jpg", "JPEG"), "webp": ("webp", "WEBP")}

DZI_NAME = "mosaic.dzi"
DZI_FILES = "mosaic_files"
DZI_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"

@dataclasses.dataclass(frozen=True)
class MosaicGeometry:
    """The pixel geometry of a ``rows`` x ``cols`` grid of ``cell``-pixel cells cut into tiles.

    Levels follow the Deep Zoom convention: level ``max_level`` is full resolution, and each
    level below halves the one above (rounding up) down to level 0, a single pixel. Tiles have
    no overlap, so a parent tile is exactly the 2x2 reduction of its (up to four) children.
    ``pad`` px of background stay free on each side of a thumbnail, so neighbouring photos do
    not merge into one; default ``cell // 64`` (2 px for 128 px cells).
    """

    rows: int
    cols: int
    cell: int = 128
    tile: int = 256
    fmt: str = "jpeg"
    pad: typing.Optional[int] = None

    def __post_init__(self):
        for name in ("rows", "cols", "cell"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.tile, int) or self.tile < 2 or self.tile % 2:
            # Halving a tile must give whole pixels for the 2x2 reduction to line up.
            raise ValueError(f"tile size must be an even integer >= 2, got {self.tile!r}")
        if self.fmt not in FORMATS:
            raise ValueError(f"tile format must be one of {sorted(FORMATS)}, got {self.fmt!r}")
        if self.pad is None:
            object.__setattr__(self, "pad", self.cell // 64)
        if not isinstance(self.pad, int) or self.pad < 0 or 2 * self.pad >= self.cell:
            raise ValueError(f"pad must be an integer in 0..{(self.cell - 1) // 2} for "
                             f"{self.cell} px cells, got {self.pad!r}")

    @property
    def inner(self):
        """The square a thumbnail is fitted into: the cell less its padding."""
        return self.cell - 2 * self.pad

    @property
    def width(self):
        return self.cols * self.cell

    @property
    def height(self):
        return self.rows * self.cell

    @functools.cached_property
    def max_level(self):
        """The full-resolution level: the number of halvings down to one pixel (computed once:
        every tile's arithmetic asks for it)."""
        return max(0, math.ceil(math.log2(max(self.width, self.height))))

    @property
    def ext(self):
        return FORMATS[self.fmt][0]

    def level_size(self, level):
        """(width, height) of ``level``: the full size halved, rounding up, per level below."""
        self._check_level(level)
        scale = 2 ** (self.max_level - level)
        return -(-self.width // scale), -(-self.height // scale)

    def tile_counts(self, level):
        """(columns, rows) of tiles at ``level``."""
        w, h = self.level_size(level)
        return -(-w // self.tile), -(-h // self.tile)

    def tile_box(self, level, tx, ty):
        """(x0, y0, x1, y1) of tile ``(tx, ty)`` in ``level`` pixels; edge tiles are smaller."""
        w, h = self.level_size(level)
        nx, ny = self.tile_counts(level)
        if not (0 <= tx < nx and 0 <= ty < ny):
            raise ValueError(f"tile {(level, tx, ty)!r} is outside the {nx}x{ny} tiles of level "
                             f"{level}")
        x0, y0 = tx * self.tile, ty * self.tile
        return x0, y0, min(x0 + self.tile, w), min(y0 + self.tile, h)

    def tile_keys(self, level):
        """Every ``(tx, ty)`` of ``level``, row by row."""
        nx, ny = self.tile_counts(level)
        for ty in range(ny):
            for tx in range(nx):
                yield tx, ty

    def tile_path(self, level, tx, ty):
        """The tile's path relative to the site: ``mosaic_files/<level>/<col>_<row>.<ext>``."""
        return f"{DZI_FILES}/{level}/{tx}_{ty}.{self.ext}"

    def check_cell(self, row, col):
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise ValueError(f"cell (row={row!r}, col={col!r}) is outside the "
                             f"{self.rows}x{self.cols} grid")

    def cell_box(self, row, col):
        """(x0, y0, x1, y1) of a cell in full-resolution pixels."""
        self.check_cell(row, col)
        x0, y0 = col * self.cell, row * self.cell
        return x0, y0, x0 + self.cell, y0 + self.cell

    def tiles_of_cell(self, row, col):
        """The top-level tiles a cell overlaps (one, unless the cell straddles tile edges)."""
        x0, y0, x1, y1 = self.cell_box(row, col)
        return [(tx, ty)
                for ty in range(y0 // self.tile, (y1 - 1) // self.tile + 1)
                for tx in range(x0 // self.tile, (x1 - 1) // self.tile + 1)]

    def owner_tile(self, row, col):
        """The top-level tile holding the cell's top-left pixel: it alone counts the cell."""
        x0, y0, _, _ = self.cell_box(row, col)
        return x0 // self.tile, y0 // self.tile

    def cells_of_tile(self, tx, ty):
        """(row range, col range) of the cells that overlap top-level tile ``(tx, ty)``."""
        x0, y0, x1, y1 = self.tile_box(self.max_level, tx, ty)
        return (range(y0 // self.cell, (y1 - 1) // self.cell + 1),
                range(x0 // self.cell, (x1 - 1) // self.cell + 1))

    def children(self, level, tx, ty):
        """The ``(dx, dy)`` offsets of the tiles at ``level + 1`` that tile ``(tx, ty)`` reduces."""
        nx, ny = self.tile_counts(level + 1)
        return [(dx, dy) for dy in (0, 1) for dx in (0, 1)
                if 2 * tx + dx < nx and 2 * ty + dy < ny]

    def tile_count(self):
        """Tiles in the whole pyramid."""
        total = 0
        for level in range(self.max_level + 1):
            nx, ny = self.tile_counts(level)
            total += nx * ny
        return total

    def dzi_xml(self):
        """The ``mosaic.dzi`` descriptor that OpenSeadragon and other DZI viewers read."""
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<Image xmlns="{DZI_NAMESPACE}" Format="{self.ext}" Overlap="0" '
                f'TileSize="{self.tile}">\n'
                f'  <Size Width="{self.width}" Height="{self.height}"/>\n'
                f'</Image>\n').encode()

    def _check_level(self, level):
        if not (isinstance(level, int) and 0 <= level <= self.max_level):
            raise ValueError(f"level must be in 0..{self.max_level}, got {level!r}")


def decode_thumbnail(data, cell):
    """Decode a thumbnail to RGB, at no less than ``cell`` px where JPEG can decode smaller.

    Returns None when ``data`` is empty or not a decodable image (the caller draws a
    placeholder): one bad thumbnail must never stop a render of millions.
    """
    if not data:
        return None
    try:
        # The embedding stage writes JPEG; naming it skips Pillow's format probing.
        try:
            img = Image.open(io.BytesIO(data), formats=("JPEG",))
        except UnidentifiedImageError:
            img = Image.open(io.BytesIO(data))
        # JPEG can decode at 1/2, 1/4, 1/8 scale for free; never below the target size.
        img.draft("RGB", (cell, cell))
        return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        log.debug("undecodable thumbnail (%d bytes): %s", len(data), exc)
        return None


def fit_image(img, cell):
    """Scale ``img`` to fit inside a ``cell`` square, keeping its aspect (up or down)."""
    w, h = img.size
    scale = cell / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != img.size:
        img = img.resize(size, Image.BILINEAR, reducing_gap=2.0)
    return img


def fit_thumbnail(data, cell):
    """Decode a thumbnail and fit it inside a ``cell`` square; None if undecodable."""
    img = decode_thumbnail(data, cell)
    return None if img is None else fit_image(img, cell)


@functools.lru_cache(maxsize=8)
def placeholder(cell):
    """The image drawn in a cell whose thumbnail is missing or undecodable."""
    img = Image.new("RGB", (cell, cell), PLACEHOLDER_FILL)
    draw = ImageDraw.Draw(img)
    width = max(1, cell // 32)
    draw.line([(0, 0), (cell - 1, cell - 1)], fill=PLACEHOLDER_MARK, width=width)
    draw.line([(0, cell - 1), (cell - 1, 0)], fill=PLACEHOLDER_MARK, width=width)
    return img


@dataclasses.dataclass
class TopTile:
    """A rendered full-resolution tile and what it found.

    ``image`` is the tile; ``decoded`` maps each cell the tile *owns* (see
    :meth:`MosaicGeometry.owner_tile`) to its decoded thumbnail before fitting (None for a
    placeholder), from which smaller views are cheaper to make than from the fitted one;
    ``missing`` lists the URIs of owned cells that got a placeholder, so every cell is
    counted exactly once even when it straddles tiles.
    """

    image: Image.Image
    decoded: dict
    missing: list


def render_top_tile(geometry, tx, ty, cells):
    """Draw full-resolution tile ``(tx, ty)`` from the cells that overlap it.

    Parameters
    ----------
    geometry : MosaicGeometry
    tx, ty : int
        The tile's column and row at ``geometry.max_level``.
    cells : iterable of (uri, row, col, thumbnail bytes or None)
        Only the cells this tile covers; cells not given stay background (grid holes).

    Raises
    ------
    ValueError
        When a cell lies outside this tile, or two images claim the same cell.
    """
    x0, y0, x1, y1 = geometry.tile_box(geometry.max_level, tx, ty)
    tile = Image.new("RGB", (x1 - x0, y1 - y0), BACKGROUND)
    owner = (tx, ty)
    seen = {}
    decoded, missing = {}, []
    for uri, row, col, data in cells:
        if (row, col) in seen:
            raise ValueError(f"cell (row={row}, col={col}) is claimed by both {seen[(row, col)]!r} "
                             f"and {uri!r}")
        seen[(row, col)] = uri
        if (tx, ty) not in geometry.tiles_of_cell(row, col):
            raise ValueError(f"cell (row={row}, col={col}) of {uri!r} is not in tile {owner!r}")
        source = decode_thumbnail(data, geometry.inner)
        cx, cy, _, _ = geometry.cell_box(row, col)
        shown = placeholder(geometry.inner) if source is None else fit_image(source,
                                                                             geometry.inner)
        w, h = shown.size
        tile.paste(shown, (cx - x0 + (geometry.cell - w) // 2, cy - y0 + (geometry.cell - h) // 2))
        if geometry.owner_tile(row, col) == owner:
            decoded[(row, col)] = source
            if source is None:
                missing.append(uri)
    return TopTile(tile, decoded, missing)


def half(img):
    """The 2x2 box reduction of a tile: its contribution to the parent level."""
    return img.reduce(2) if img.size != (1, 1) else img


def half_of_encoded(data):
    """:func:`half` of an encoded tile, decoding a JPEG straight at half size when it can.

    libjpeg scales by 1/2 inside the inverse DCT, which is faster than decoding the full tile
    and reducing it, and matches the box reduction to within JPEG noise. Odd sizes and other
    formats take the exact path.
    """
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if img.format == "JPEG" and w % 2 == 0 and h % 2 == 0 and w > 1 and h > 1:
        img.draft("RGB", (w // 2, h // 2))
        if img.size == (w // 2, h // 2):
            return img.convert("RGB")
    return half(img.convert("RGB"))


def parent_size(geometry, level, tx, ty):
    x0, y0, x1, y1 = geometry.tile_box(level, tx, ty)
    return x1 - x0, y1 - y0


def assemble_parent(geometry, level, tx, ty, halves):
    """Tile ``(tx, ty)`` of ``level`` from the halves of its children at ``level + 1``.

    ``halves`` is an iterable of ``(dx, dy, image)`` with ``dx, dy`` in {0, 1}. Because tiles
    have no overlap and an even size, pasting the halves side by side equals reducing the 2x2
    block of children, exactly.
    """
    size = parent_size(geometry, level, tx, ty)
    canvas = Image.new("RGB", size, BACKGROUND)
    step = geometry.tile // 2
    got = 0
    for dx, dy, img in halves:
        if dx not in (0, 1) or dy not in (0, 1):
            raise ValueError(f"child offset must be 0 or 1, got {(dx, dy)!r}")
        canvas.paste(img, (dx * step, dy * step))
        got += 1
    if got == 0:
        raise ValueError(f"tile {(level, tx, ty)!r} has no children")
    return canvas


def encode_tile(img, fmt, quality=85):
    """Encode a tile in the pyramid's format (``jpeg`` or ``webp``)."""
    if fmt not in FORMATS:
        raise ValueError(f"tile format must be one of {sorted(FORMATS)}, got {fmt!r}")
    buf = io.BytesIO()
    if fmt == "webp":
        # method 2 is ~5x faster than Pillow's default 4 for a few percent in size.
        img.save(buf, "WEBP", quality=quality, method=2)
    else:
        img.save(buf, "JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def decode_image(data):
    """Decode encoded image bytes to RGB."""
    img = Image.open(io.BytesIO(data))
    return img.convert("RGB")
