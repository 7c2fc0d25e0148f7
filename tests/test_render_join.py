"""Rows routed to bands and joined there; blocks drawn as the tile-by-tile path draws them."""
import collections

import numpy as np
import pytest

from gridtsne import tile_workers, tiles
from gridtsne.overview import TsneCanvas
from gridtsne.render_join import (Bands, Routes, group_band, join_band, key_hash,
                                  split_by_band)
from gridtsne.site import uri_key
from gridtsne.tiles import MosaicGeometry
from tests.fresh_python import run_python
from tests.render_tables import real_photos, thumbnail_jpeg

ROWS, COLS = 23, 19


def _routes(layout_pairs, bands):
    return Routes.of(((key, row, col) for key, (_, row, col, _, _) in layout_pairs), bands)


def test_every_cell_reaches_every_block_it_overlaps_and_is_counted_once():
    # 100 px cells on 128 px tiles straddle tile, block and band edges; small bands.
    g = MosaicGeometry(ROWS, COLS, cell=100, tile=128)
    bands = Bands.plan(g, tile_workers.block_depth(g), cells_per_band=64)
    assert bands.count > 3
    rng = np.random.default_rng(0)
    places = rng.permutation(ROWS * COLS)[:300]
    layout = [(uri_key(f"/p/{i}.jpg"), (f"/p/{i}.jpg", int(p) // COLS, int(p) % COLS, 0.0, 0.0))
              for i, p in enumerate(places)]
    # Thumbnails: none for /p/0, two rows for /p/1, one row for an image not in the layout.
    thumbs = [(key, (f"t{key}".encode(), 1, 1, 1)) for key, _ in layout[1:]]
    # (the second sorts after the first: of two rows the one drawn is chosen by content)
    thumbs += [(layout[1][0], (b"z-second", 1, 1, 1)), (uri_key("/p/extra.jpg"), (b"x", 1, 1, 1))]
    routes = _routes(layout, bands)
    layout_lists, _ = split_by_band(layout, lambda k, v: bands.bands_of_cell(v[1], v[2]))
    thumb_lists, unrouted = split_by_band(thumbs, lambda k, _: routes.bands_of(k))
    assert unrouted == 1  # /p/extra.jpg: the read step counts it
    by_band = collections.defaultdict(lambda: {"layout": [], "thumbs": []})
    for band, rows in layout_lists:
        by_band[band]["layout"].append(rows)
    for band, rows in thumb_lists:
        by_band[band]["thumbs"].append(rows)

    owned, counts, drawn = [], collections.Counter(), collections.defaultdict(set)
    for band in range(bands.count):
        cells, c = join_band(band, bands, by_band[band]["layout"], by_band[band]["thumbs"])
        counts += c
        blocks, shards, names, n = group_band(band, bands, cells)
        assert set(blocks) == set(bands.blocks(band))  # holes-only blocks too
        for key, batch in blocks.items():
            drawn[key] |= {(uri, thumb) for uri, _, _, thumb, _, _ in batch}
        uris = sorted(uri for batch in names.values() for uri, _, _ in batch)
        assert sorted(e[2] for batch in shards.values() for e in batch) == uris
        assert n == len(uris)
        owned += uris
    assert sorted(owned) == sorted(v[0] for _, v in layout)  # each image indexed exactly once
    assert counts == {"layout_rows_without_vectors": 1, "duplicate_vector_rows": 1}
    straddling = 0
    for key, (uri, row, col, _, _) in layout:
        wanted = set(bands.blocks_of_cell(row, col))
        straddling += len(wanted) > 1
        for block in wanted:  # with its own thumbnail (the first row), or None
            thumb = None if uri == "/p/0.jpg" else f"t{key}".encode()
            assert (uri, thumb) in drawn[block]
    assert straddling > 20


def test_the_route_hash_is_the_same_in_another_process():
    """Python's own hash of a str is salted per process: routes made on one worker would
    send rows to the wrong band on another."""
    keys = ["/photos/a.jpg", "s3://b/ü.jpg", ""]
    code = ("from gridtsne.render_join import key_hash; import sys; "
            f"print([key_hash(k) for k in {keys!r}])")
    other = run_python(code, env={"PYTHONHASHSEED": "123"}, check=True)
    assert other.stdout.strip() == str([key_hash(k) for k in keys])


@pytest.mark.parametrize("cell,tile,fmt", [(20, 16, "jpeg"), (24, 16, "webp")])
def test_blocks_and_steps_make_the_bytes_of_tiles_drawn_and_reduced_one_by_one(tmp_path, cell,
                                                                             tile, fmt):
    photos = [thumbnail_jpeg(arr) for _, arr in sorted(real_photos().items())]
    g = MosaicGeometry(37, 31, cell=cell, tile=tile, fmt=fmt)
    depth = tile_workers.block_depth(g)
    assert depth == 2
    tsne = TsneCanvas.plan(0.0, 10.0, 0.0, 10.0, count=37 * 31, cell=cell, longest=256)
    job = tile_workers.TileJob(g, tsne, str(tmp_path), write=False)
    cells = [(f"/p/{r}_{c}.jpg", r, c, photos[(r * 31 + c) % len(photos)] if (r + c) % 7 else None,
              float(c), float(r)) for r in range(37) for c in range(31) if (r * c) % 5 != 1]
    top = g.max_level
    # Tile by tile: every top tile drawn from its cells, each lower tile from its children.
    one = {}
    for tx, ty in g.tile_keys(top):
        mine = [c for c in cells if (tx, ty) in g.tiles_of_cell(c[1], c[2])]
        one[(top, tx, ty)] = tile_workers.draw_top_tile(job, tx, ty, mine).data
    for level in range(top - 1, -1, -1):
        for tx, ty in g.tile_keys(level):
            halves = [(dx, dy, tiles.half_of_encoded(one[(level + 1, 2 * tx + dx, 2 * ty + dy)]))
                      for dx, dy in g.children(level, tx, ty)]
            one[(level, tx, ty)] = tiles.encode_tile(
                tiles.assemble_parent(g, level, tx, ty, halves), fmt, job.quality)
    # Block by block, then step by step.
    bands = Bands.plan(g, depth)
    made, owned, roots = {}, 0, []
    for bx, by in g.tile_keys(top - depth):
        mine = [c for c in cells if (bx, by) in bands.blocks_of_cell(c[1], c[2])]
        done = tile_workers.draw_block(job, bx, by, mine)
        owned += done.owned
        made.update({(level, tx, ty): data for level, tx, ty, data in done.tiles})
        assert sum(done.written.values()) == len(done.tiles)
        roots.append(done.parent)
    steps = tile_workers.reduction_steps(g)
    assert [s[1] for s in steps] == [2, top - depth - 2]  # a 2-level step, then all the rest
    for level, step in steps:
        by_root = collections.defaultdict(list)
        for key, (_, tx, ty) in roots:
            by_root[key].append((tx, ty, made[(level, tx, ty)]))
        assert all(key[0] == level - step for key in by_root)
        roots = []
        for (root, rx, ry), children in sorted(by_root.items()):
            done = tile_workers.reduce_block(job, root, rx, ry, level, children)
            made.update({(lv, tx, ty): data for lv, tx, ty, data in done.tiles})
            if done.parent:
                roots.append(done.parent)
    assert roots == [] and made == one
    assert owned == len(cells)


def test_routes_split_sends_each_pair_where_bands_of_does():
    """``Routes.split`` looks a whole part up at once; per band it must hold exactly what
    ``split_by_band`` with ``bands_of`` gives: keys of one band, of two (a cell straddling a
    band edge), twice in the layout, and of none (counted)."""
    g = MosaicGeometry(ROWS, COLS, cell=100, tile=128)
    bands = Bands.plan(g, tile_workers.block_depth(g), cells_per_band=64)
    places = np.random.default_rng(2).permutation(ROWS * COLS)[:200]
    layout = [(uri_key(f"/p/{i}.jpg"), (f"/p/{i}.jpg", int(p) // COLS, int(p) % COLS, 0.0, 0.0))
              for i, p in enumerate(places)]
    layout.append((layout[0][0], (layout[0][1][0], 22, 18, 0.0, 0.0)))  # /p/0 twice
    routes = _routes(layout, bands)
    pairs = [(key, i) for i, (key, _) in enumerate(layout[:-1])]
    pairs += [(uri_key("/p/extra.jpg"), -1), (pairs[5][0], -5)]  # unrouted; a duplicate row
    assert sum(len(routes.bands_of(key)) > 1 for key, _ in pairs) > 10

    def per_band(split):
        rows, unrouted = split
        out = collections.defaultdict(list)
        for band, batch in rows:
            out[band] += batch
        return {band: sorted(batch) for band, batch in out.items()}, unrouted

    want = per_band(split_by_band(pairs, lambda key, _: routes.bands_of(key)))
    assert want[1] == 1 and len(want[0]) == bands.count
    assert per_band(routes.split(iter(pairs))) == want
    assert routes.split([]) == ([], 0)
    empty = Routes(np.array([], np.uint64), np.array([], np.int32))
    assert empty.split(pairs[:3]) == ([], 3)


def test_a_key_with_two_vectors_rows_gets_the_same_one_in_every_band_and_order():
    """Rows reach a band in lists whose order the runner's grouping does not keep: a key with
    two vectors rows must still get one and the same thumbnail in each band it straddles
    (else the halves of one cell show two images) and in every run."""
    g = MosaicGeometry(ROWS, COLS, cell=100, tile=128)
    bands = Bands.plan(g, tile_workers.block_depth(g), cells_per_band=64)
    row = next(r for r in range(ROWS) if len(bands.bands_of_cell(r, 0)) == 2)
    key = uri_key("/p/x.jpg")
    layout = [[(key, ("/p/x.jpg", row, 0, 0.0, 0.0))]]
    first, second = [(key, (b"one", 10, 10, 100))], [(key, (b"two", 20, 20, 200))]
    made = set()
    for band in bands.bands_of_cell(row, 0):
        for thumbs in ([first, second], [second, first]):
            cells, counts = join_band(band, bands, layout, thumbs)
            made.add(tuple(cells[0][5:9]))
    assert len(made) == 1
    # A row without a thumbnail is never chosen over one with.
    cells, _ = join_band(bands.owner(row, 0), bands, layout,
                         [[(key, (None, None, None, None))], second])
    assert cells[0][5] == b"two"
