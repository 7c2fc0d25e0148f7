"""The pyramid core without Beam: geometry, top-level tile pixels, 2x2 reduction, DZI XML."""
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from gridtsne import tiles
from gridtsne.tiles import BACKGROUND, MosaicGeometry
from tests.render_tables import real_photos, thumbnail_jpeg


@pytest.fixture(scope="module")
def thumbs():
    photos = real_photos()
    return {name: thumbnail_jpeg(arr) for name, arr in sorted(photos.items())}


def _region(img, box):
    return np.asarray(img.crop(box), dtype=np.float64)


def _expected_cell(data, g):
    """What a cell should look like: the thumbnail fitted inside the padding and centred."""
    canvas = Image.new("RGB", (g.cell, g.cell), BACKGROUND)
    fitted = tiles.fit_thumbnail(data, g.inner)
    canvas.paste(fitted, ((g.cell - fitted.width) // 2, (g.cell - fitted.height) // 2))
    return np.asarray(canvas, dtype=np.float64)


def test_levels_follow_deep_zoom():
    g = MosaicGeometry(rows=3, cols=5, cell=100, tile=256)
    assert (g.width, g.height) == (500, 300)
    assert g.max_level == math.ceil(math.log2(500)) == 9
    assert g.level_size(9) == (500, 300)
    assert g.level_size(8) == (250, 150)
    assert g.level_size(7) == (125, 75)
    assert g.level_size(6) == (63, 38)  # rounds up, as OpenSeadragon expects
    assert g.level_size(0) == (1, 1)
    assert g.tile_counts(9) == (2, 2)
    assert g.tile_box(9, 1, 1) == (256, 256, 500, 300)
    assert g.tile_path(9, 1, 0) == "mosaic_files/9/1_0.jpg"
    assert g.tile_count() == 4 + sum(1 for level in range(9))
    with pytest.raises(ValueError, match="outside"):
        g.tile_box(9, 2, 0)
    with pytest.raises(ValueError, match="level must be in 0..9"):
        g.level_size(10)


def test_cells_map_to_the_tiles_they_overlap():
    g = MosaicGeometry(rows=4, cols=4, cell=96, tile=128)
    # Cell (0, 1) spans x 96..192: tiles 0 and 1 of the first row.
    assert g.tiles_of_cell(0, 1) == [(0, 0), (1, 0)]
    assert g.owner_tile(0, 1) == (0, 0)
    assert g.tiles_of_cell(1, 1) == [(0, 0), (1, 0), (0, 1), (1, 1)]
    rows, cols = g.cells_of_tile(1, 1)
    assert list(rows) == [1, 2] and list(cols) == [1, 2]
    # Every cell is owned by exactly one tile and covered by each tile it overlaps.
    owned = {}
    for r in range(4):
        for c in range(4):
            assert g.owner_tile(r, c) in g.tiles_of_cell(r, c)
            owned[(r, c)] = g.owner_tile(r, c)
    assert len(owned) == 16
    with pytest.raises(ValueError, match=r"outside the 4x4 grid"):
        g.tiles_of_cell(4, 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"tile": 255}, "even integer"),
    ({"cell": 0}, "cell must be a positive integer"),
    ({"fmt": "png"}, "tile format must be one of"),
    ({"rows": -1}, "rows must be a positive integer"),
    ({"cell": 8, "pad": 4}, r"pad must be an integer in 0..3"),
])
def test_bad_geometry_is_a_clear_error(kwargs, message):
    args = {"rows": 2, "cols": 2, "cell": 64, "tile": 256, **kwargs}
    with pytest.raises(ValueError, match=message):
        MosaicGeometry(**args)


def test_top_tile_places_thumbnails_in_their_cells(thumbs):
    g = MosaicGeometry(rows=2, cols=3, cell=128, tile=256)
    names = list(thumbs)
    cells = [("chelsea.jpg", 0, 0, thumbs["chelsea"]),
             ("rocket.jpg", 0, 1, thumbs["rocket"]),
             ("coffee.jpg", 1, 0, thumbs["coffee"])]
    top = tiles.render_top_tile(g, 0, 0, cells)
    assert top.image.size == (256, 256)
    for _, row, col, data in cells:
        got = _region(top.image, (col * 128, row * 128, col * 128 + 128, row * 128 + 128))
        diff = np.abs(got - _expected_cell(data, g)).mean()
        assert diff < 1.0, (row, col, diff)
    # Chelsea's cell does not hold the rocket.
    wrong = np.abs(_region(top.image, (0, 0, 128, 128)) - _expected_cell(thumbs["rocket"], g))
    assert wrong.mean() > 20
    # The hole (1, 1) is plain background.
    hole = _region(top.image, (128, 128, 256, 256))
    assert np.abs(hole - np.array(BACKGROUND)).max() == 0
    assert top.missing == [] and set(top.decoded) == {(0, 0), (0, 1), (1, 0)}
    # The 2 px padding (128 // 64) keeps neighbours apart: the rocket's top rows are background.
    assert g.pad == 2 and g.inner == 124
    assert np.abs(_region(top.image, (128, 0, 256, 2)) - np.array(BACKGROUND)).max() == 0
    assert len(names) >= 3


def test_missing_and_undecodable_thumbnails_get_a_placeholder_counted_once(thumbs):
    # 96 px cells on 128 px tiles: cell (0, 1) straddles tiles (0, 0) and (1, 0).
    g = MosaicGeometry(rows=2, cols=3, cell=96, tile=128, pad=0)
    cells = [("gone.jpg", 0, 1, None), ("bad.jpg", 1, 0, b"\xff\xd8 truncated")]
    placeholder = np.asarray(tiles.placeholder(96), dtype=np.float64)
    counted = []
    for tx, ty in g.tile_keys(g.max_level):
        mine = [c for c in cells if (tx, ty) in g.tiles_of_cell(c[1], c[2])]
        top = tiles.render_top_tile(g, tx, ty, mine)
        counted += top.missing
    assert sorted(counted) == ["bad.jpg", "gone.jpg"]
    top = tiles.render_top_tile(g, 0, 0, [cells[0]])
    # The left 32 px of cell (0, 1) are in tile (0, 0): x 96..128, and they are placeholder.
    got = _region(top.image, (96, 0, 128, 96))
    assert np.abs(got - placeholder[:, :32]).max() == 0
    assert not np.allclose(placeholder, np.array(BACKGROUND))
    assert top.missing == ["gone.jpg"]  # tile (0, 0) holds the cell's top-left pixel: owner
    right = tiles.render_top_tile(g, 1, 0, [cells[0]])
    assert right.missing == []  # ... so tile (1, 0) draws it too but does not count it again
    got = _region(right.image, (0, 0, 64, 96))
    assert np.abs(got - placeholder[:, 32:]).max() == 0


def test_two_images_in_one_cell_is_an_error(thumbs):
    g = MosaicGeometry(rows=1, cols=2, cell=64, tile=128)
    with pytest.raises(ValueError, match="claimed by both 'a' and 'b'"):
        tiles.render_top_tile(g, 0, 0, [("a", 0, 0, thumbs["coins"]), ("b", 0, 0, None)])
    with pytest.raises(ValueError, match="not in tile"):
        tiles.render_top_tile(MosaicGeometry(1, 4, 64, 128), 0, 0, [("c", 0, 3, None)])


def test_fit_keeps_aspect_and_fills_the_cell(thumbs):
    img = tiles.fit_thumbnail(thumbs["rocket"], 100)  # a 128x85 thumbnail (rocket: 640x427)
    assert img.size == (100, 66)
    small = Image.new("RGB", (32, 16), (200, 10, 10))
    import io
    buf = io.BytesIO()
    small.save(buf, "PNG")
    assert tiles.fit_thumbnail(buf.getvalue(), 128).size == (128, 64)  # scaled up to fit
    assert tiles.fit_thumbnail(b"", 128) is None
    assert tiles.fit_thumbnail(b"GIF89a junk", 128) is None


def test_parent_from_halves_equals_reducing_the_children(thumbs):
    """The level below is exactly the 2x2 box reduction of the level above, edges included."""
    g = MosaicGeometry(rows=3, cols=5, cell=100, tile=256)  # 500x300: partial edge tiles
    names = sorted(thumbs)
    cells = [(n, i // 5, i % 5, thumbs[n]) for i, n in enumerate(names)]
    top_level = g.max_level
    full = Image.new("RGB", (g.width, g.height), BACKGROUND)
    halves = {}
    for tx, ty in g.tile_keys(top_level):
        mine = [c for c in cells if (tx, ty) in g.tiles_of_cell(c[1], c[2])]
        img = tiles.render_top_tile(g, tx, ty, mine).image
        full.paste(img, g.tile_box(top_level, tx, ty)[:2])
        halves[(tx, ty)] = tiles.half(img)
    parent = tiles.assemble_parent(
        g, top_level - 1, 0, 0, [(tx % 2, ty % 2, h) for (tx, ty), h in halves.items()])
    assert parent.size == g.level_size(top_level - 1) == (250, 150)
    assert np.array_equal(np.asarray(parent), np.asarray(full.reduce(2)))
    with pytest.raises(ValueError, match="no children"):
        tiles.assemble_parent(g, top_level - 1, 0, 0, [])


def test_half_of_an_encoded_tile_matches_the_box_reduction(thumbs):
    tile = Image.new("RGB", (256, 256), BACKGROUND)
    for i, name in enumerate(["chelsea", "coffee", "rocket", "astronaut"]):
        tile.paste(tiles.fit_thumbnail(thumbs[name], 124), (2 + 128 * (i % 2), 2 + 128 * (i // 2)))
    for size in [(256, 256), (255, 131), (2, 1)]:  # even: JPEG's scaled decode; odd: exact
        img = tile.crop((0, 0) + size)
        for fmt in ("jpeg", "webp"):
            data = tiles.encode_tile(img, fmt, 90)
            got = tiles.half_of_encoded(data)
            want = tiles.half(tiles.decode_image(data))
            assert got.size == want.size == ((size[0] + 1) // 2, (size[1] + 1) // 2)
            assert np.abs(np.asarray(got, float) - np.asarray(want, float)).mean() < 2


def test_dzi_xml_describes_the_pyramid():
    g = MosaicGeometry(rows=40, cols=50, cell=128, tile=512, fmt="webp")
    root = ET.fromstring(g.dzi_xml())
    ns = {"dz": tiles.DZI_NAMESPACE}
    assert root.tag == f"{{{tiles.DZI_NAMESPACE}}}Image"
    assert root.attrib == {"Format": "webp", "Overlap": "0", "TileSize": "512"}
    size = root.find("dz:Size", ns)
    assert size.attrib == {"Width": "6400", "Height": "5120"}


def test_encodings_round_trip(thumbs):
    img = tiles.fit_thumbnail(thumbs["astronaut"], 128)
    for fmt, magic in (("jpeg", b"\xff\xd8"), ("webp", b"RIFF")):
        data = tiles.encode_tile(img, fmt, 85)
        assert data[:len(magic)] == magic
        back = tiles.decode_image(data)
        assert back.size == img.size
        assert np.abs(np.asarray(back, float) - np.asarray(img, float)).mean() < 6
    with pytest.raises(ValueError, match="tile format"):
        tiles.encode_tile(img, "gif")
