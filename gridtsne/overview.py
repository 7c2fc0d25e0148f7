"""The two overview pictures: ``mosaic.jpg`` (the whole grid) and ``tsne.jpg`` (ungridded).

Both are memory-bounded: ``mosaic.jpg`` is pasted together from the one pyramid level just
large enough, one tile at a time; ``tsne.jpg`` is painted in independent blocks (each needing
only the points that overlap it) and then stitched, so no step holds every thumbnail.
"""
import dataclasses
import io
import logging
import math

import numpy as np
from PIL import Image

from gridtsne.tiles import BACKGROUND

log = logging.getLogger(__name__)

MOSAIC_OVERVIEW = "mosaic.jpg"
TSNE_OVERVIEW = "tsne.jpg"
DEFAULT_LONGEST = 4096
# Side of the square blocks tsne.jpg is painted in.
TSNE_BLOCK = 512


def check_longest(longest):
    if not isinstance(longest, int) or longest < 16:
        raise ValueError(f"overview longest side must be an integer >= 16, got {longest!r}")


def mosaic_plan(geometry, longest=DEFAULT_LONGEST):
    """(level, (width, height)) for ``mosaic.jpg``.

    The level is the smallest whose longest side reaches ``longest`` (so it is only ever
    scaled down, by less than 2x); a mosaic smaller than that is written at full resolution.
    """
    check_longest(longest)
    for level in range(geometry.max_level + 1):
        w, h = geometry.level_size(level)
        if max(w, h) >= longest:
            scale = longest / max(w, h)
            return level, (max(1, round(w * scale)), max(1, round(h * scale)))
    return geometry.max_level, geometry.level_size(geometry.max_level)


def mosaic_pieces(geometry, longest=DEFAULT_LONGEST):
    """``(level, (width, height), [(tx, ty, box)])``: what ``mosaic.jpg`` is made of.

    Every tile of ``level`` (see :func:`mosaic_plan`) that shows, with ``box`` its own
    rectangle of the output (edges rounded consistently, so neighbours meet exactly and no
    two overlap).
    """
    level, (ow, oh) = mosaic_plan(geometry, longest)
    lw, lh = geometry.level_size(level)
    sx, sy = ow / lw, oh / lh
    pieces = []
    for tx, ty in geometry.tile_keys(level):
        x0, y0, x1, y1 = geometry.tile_box(level, tx, ty)
        box = round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)
        if box[2] > box[0] and box[3] > box[1]:
            pieces.append((tx, ty, box))
    return level, (ow, oh), pieces


def fit_piece(geometry, level, tx, ty, box, img):
    """Tile ``(tx, ty)`` of ``level`` checked and scaled to its ``box`` of ``mosaic.jpg``."""
    x0, y0, x1, y1 = geometry.tile_box(level, tx, ty)
    if img.size != (x1 - x0, y1 - y0):
        raise ValueError(f"tile {(level, tx, ty)!r} is {img.size!r}, expected "
                         f"{(x1 - x0, y1 - y0)!r}")
    ox0, oy0, ox1, oy1 = box
    if (ox1 - ox0, oy1 - oy0) != img.size:
        img = img.resize((ox1 - ox0, oy1 - oy0), Image.LANCZOS)
    return img


def paste_pieces(size, pieces):
    """``mosaic.jpg`` from ``(box, image)`` pieces, in any order (their boxes never overlap)."""
    out = Image.new("RGB", size, BACKGROUND)
    for box, img in pieces:
        out.paste(img, box[:2])
    return out


def compose_mosaic_overview(geometry, read_tile, longest=DEFAULT_LONGEST):
    """``mosaic.jpg`` as an image, from the tiles of one level read one at a time.

    ``read_tile(level, tx, ty)`` returns that tile as a PIL image; each is scaled to its own
    rectangle of the output (:func:`mosaic_pieces`). The pieces are independent:
    :func:`gridtsne.tile_workers.mosaic_strip` makes them a tile row at a time on a pool
    instead.
    """
    level, size, pieces = mosaic_pieces(geometry, longest)
    return paste_pieces(size, ((box, fit_piece(geometry, level, tx, ty, box,
                                               read_tile(level, tx, ty)))
                               for tx, ty, box in pieces))


def encode_jpeg(img, quality=90):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@dataclasses.dataclass(frozen=True)
class TsneCanvas:
    """Where each image goes in ``tsne.jpg``: t-SNE coordinates mapped onto a canvas.

    The longest side is ``longest`` px, or less for small collections (about one cell per
    image across); each thumbnail is drawn ``point`` px wide, about what one image gets if
    they were spread evenly, so dense regions overlap exactly as t-SNE left them.
    """

    xmin: float
    xmax: float
    ymin: float
    ymax: float
    width: int
    height: int
    point: int

    @classmethod
    def plan(cls, xmin, xmax, ymin, ymax, count, cell, longest=DEFAULT_LONGEST):
        check_longest(longest)
        if count < 1:
            raise ValueError(f"t-SNE overview needs at least one point, got {count!r}")
        values = (xmin, xmax, ymin, ymax)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"t-SNE coordinates must be finite, got bounds {values!r}")
        across = math.ceil(math.sqrt(count))
        side = min(longest, max(256, across * cell))
        point = max(2, min(cell, side // across))
        spanx, spany = max(xmax - xmin, 1e-9), max(ymax - ymin, 1e-9)
        if spanx >= spany:
            width, height = side, max(point + 1, round(side * spany / spanx))
        else:
            width, height = max(point + 1, round(side * spanx / spany)), side
        return cls(float(xmin), float(xmax), float(ymin), float(ymax), int(width), int(height),
                   int(point))

    def position(self, x, y):
        """Top-left pixel of the point's square; the square stays inside the canvas."""
        fx = (x - self.xmin) / max(self.xmax - self.xmin, 1e-9)
        fy = (y - self.ymin) / max(self.ymax - self.ymin, 1e-9)
        px = round(fx * (self.width - self.point))
        py = round(fy * (self.height - self.point))
        return (min(max(px, 0), self.width - self.point), min(max(py, 0), self.height - self.point))

    def blocks(self, px, py, w, h):
        """The ``(bx, by)`` blocks that a ``w`` x ``h`` image at ``(px, py)`` overlaps."""
        return [(bx, by)
                for by in range(py // TSNE_BLOCK, (py + h - 1) // TSNE_BLOCK + 1)
                for bx in range(px // TSNE_BLOCK, (px + w - 1) // TSNE_BLOCK + 1)]

    def block_box(self, bx, by):
        x0, y0 = bx * TSNE_BLOCK, by * TSNE_BLOCK
        return x0, y0, min(x0 + TSNE_BLOCK, self.width), min(y0 + TSNE_BLOCK, self.height)

    def block_keys(self):
        for by in range(-(-self.height // TSNE_BLOCK)):
            for bx in range(-(-self.width // TSNE_BLOCK)):
                yield bx, by

    def point_image(self, thumbnail):
        """Scale a decoded thumbnail to the point size (aspect kept)."""
        w, h = thumbnail.size
        scale = self.point / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if size == thumbnail.size:
            return thumbnail
        return thumbnail.resize(size, Image.BILINEAR, reducing_gap=2.0)


def pack_points(points):
    """Points ``((row, col), px, py, width, height, RGB bytes)`` as two bytes objects: their
    numbers (six int32 each) and their pixels, one after another. This is how points travel
    between processes and through the runner: a list of tuples costs every copy and coder
    a few objects per point, two bytes objects cost a memory copy."""
    numbers = np.array([(row, col, px, py, w, h) for (row, col), px, py, w, h, _ in points],
                       dtype="<i4").reshape(-1, 6)
    return numbers.tobytes(), b"".join(point[5] for point in points)


def unpack_points(packed):
    """:func:`pack_points`'s points back: ``[((row, col), px, py, width, height, RGB)]``, each
    RGB a view of the packed pixels."""
    numbers, pixels = packed
    pixels = memoryview(pixels)
    points, at = [], 0
    for row, col, px, py, w, h in np.frombuffer(numbers, dtype="<i4").reshape(-1, 6).tolist():
        points.append(((row, col), px, py, w, h, pixels[at:at + w * h * 3]))
        at += w * h * 3
    if at != len(pixels):
        raise ValueError(f"packed points hold {len(pixels)} bytes of pixels, their sizes {at}")
    return points


def paint_block(canvas, bx, by, points):
    """Paint block ``(bx, by)`` of ``tsne.jpg``.

    ``points`` is an iterable of ``(order, px, py, image)``: painted in ``order`` (a sort key,
    so the result does not depend on how the runner ordered the elements), each at canvas
    pixel ``(px, py)``; the parts outside the block are clipped.
    """
    x0, y0, x1, y1 = canvas.block_box(bx, by)
    block = Image.new("RGB", (x1 - x0, y1 - y0), BACKGROUND)
    for _, px, py, img in sorted(points, key=lambda p: p[0]):
        block.paste(img, (px - x0, py - y0))
    return block


def stitch_blocks(canvas, blocks):
    """The whole ``tsne.jpg`` from ``(bx, by, image)`` blocks; absent blocks stay background."""
    out = Image.new("RGB", (canvas.width, canvas.height), BACKGROUND)
    for bx, by, img in blocks:
        x0, y0, _, _ = canvas.block_box(bx, by)
        out.paste(img, (x0, y0))
    return out
