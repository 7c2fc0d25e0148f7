"""The render's inputs routed to bands of the mosaic, and joined there by URI.

Each layout row ``(uri, row, col, x, y)`` needs its thumbnail (and sizes) from the vectors
table and its label from the labels CSV. Joining them one row at a time, then keying the
joined cells by tile, costs the runner two shuffles of every thumbnail. Here each row is sent
once, straight to the **band** of the mosaic that draws it: a band is a strip of rows of
blocks (:func:`gridtsne.tile_workers.block_depth`), holding about :data:`CELLS_PER_BAND`
cells. A layout row knows its band from its cell; a thumbnail or label row from the
:class:`Routes` table, made from the layout's URIs before the tables are read: 8 bytes of
hash and 4 of band per image, so 12 MB for a million images. A band then joins its rows
(:func:`join_band`) and draws its blocks while the next band is joined.

Rows travel in lists, one per band and table part (:func:`split_by_band`), so the runner
handles a few elements per part instead of one per row.
"""
import collections
import dataclasses
import hashlib

import numpy as np

from gridtsne import storage
from gridtsne.site import CELL_BLOCK, cell_block, search_prefix, uri_key

# Cells per band: what one band holds in memory (thumbnails of about 5 KB each) while it is
# joined, and how soon the first blocks can start drawing.
CELLS_PER_BAND = 2048


def key_hash(key):
    """A 64-bit hash of a URI key, the same in every process (``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little")


@dataclasses.dataclass(frozen=True)
class Bands:
    """How a mosaic is cut into bands: ``rows`` block rows each, ``depth`` as the blocks'."""

    geometry: object
    depth: int
    rows: int

    @classmethod
    def plan(cls, geometry, depth, cells_per_band=CELLS_PER_BAND):
        span = geometry.tile << depth  # px a side of a block
        cells_per_block_row = max(1, (span // geometry.cell) * geometry.cols)
        return cls(geometry, depth, max(1, cells_per_band // cells_per_block_row))

    @property
    def count(self):
        _, by = self.geometry.tile_counts(self.geometry.max_level - self.depth)
        return -(-by // self.rows)

    def blocks(self, band):
        """The blocks ``(bx, by)`` of a band, holes included."""
        g = self.geometry
        nx, ny = g.tile_counts(g.max_level - self.depth)
        return [(bx, by) for by in range(band * self.rows, min((band + 1) * self.rows, ny))
                for bx in range(nx)]

    @property
    def span(self):
        """Side of a block in full-resolution px."""
        return self.geometry.tile << self.depth

    def blocks_of_cell(self, row, col):
        """The blocks a cell overlaps (two or four when it straddles block edges), from the
        cell's pixel box: the same blocks as its top-level tiles' (``tiles_of_cell``)."""
        self.geometry.check_cell(row, col)
        cell, span = self.geometry.cell, self.span
        x0, y0 = col * cell, row * cell
        return [(bx, by) for bx in range(x0 // span, (x0 + cell - 1) // span + 1)
                for by in range(y0 // span, (y0 + cell - 1) // span + 1)]

    def bands_of_cell(self, row, col):
        """The bands a cell's blocks are in (bands are full-width strips: only its rows
        matter)."""
        self.geometry.check_cell(row, col)
        cell, per_band = self.geometry.cell, self.span * self.rows
        y0 = row * cell
        return list(range(y0 // per_band, (y0 + cell - 1) // per_band + 1))

    def owner(self, row, col):
        """The one band that counts and indexes a cell: its owner tile's (the tile holding its
        top-left pixel)."""
        return (row * self.geometry.cell) // (self.span * self.rows)


@dataclasses.dataclass(frozen=True)
class Routes:
    """Which bands each URI key goes to: sorted 64-bit key hashes and their bands (a key in
    two bands, or twice in the layout, has two entries)."""

    hashes: np.ndarray
    bands: np.ndarray

    @classmethod
    def of(cls, cells, bands):
        """The routes of ``(uri key, row, col)`` cells, each to the bands of its cell
        (:class:`Bands`)."""
        hashes, targets = [], []
        for key, row, col in cells:
            h = key_hash(key)
            for band in bands.bands_of_cell(row, col):
                hashes.append(h)
                targets.append(band)
        h = np.array(hashes, dtype=np.uint64)
        order = np.argsort(h, kind="stable")
        return cls(h[order], np.array(targets, dtype=np.int32)[order])

    def bands_of(self, key):
        h = np.uint64(key_hash(key))
        lo = int(np.searchsorted(self.hashes, h, "left"))
        hi = int(np.searchsorted(self.hashes, h, "right"))
        return self.bands[lo:hi].tolist()

    def split(self, pairs):
        """``split_by_band(pairs, lambda key, _: self.bands_of(key))``, looked up for all
        pairs at once (one search of the table per part, not two per row)."""
        pairs = list(pairs)
        if not pairs or not len(self.bands):
            return [], len(pairs)
        h = np.fromiter((key_hash(key) for key, _ in pairs), dtype=np.uint64, count=len(pairs))
        lo = np.searchsorted(self.hashes, h, "left")
        hi = np.searchsorted(self.hashes, h, "right")
        first = self.bands[np.minimum(lo, len(self.bands) - 1)].tolist()
        out, unrouted = {}, 0
        for pair, a, b, band in zip(pairs, lo.tolist(), hi.tolist(), first):
            if b - a == 1:  # one band: most rows
                out.setdefault(band, []).append(pair)
            elif a == b:
                unrouted += 1
            else:
                for band in self.bands[a:b].tolist():
                    out.setdefault(band, []).append(pair)
        return list(out.items()), unrouted


def route_table(layout_url, bands, storage_options=None):
    """:class:`Routes` for every URI of ``layout.parquet`` (its uri, row and col columns)."""
    def cells():
        for batch in storage.iter_parquet_batches(layout_url, columns=["uri", "row", "col"],
                                                  storage_options=storage_options):
            for uri, row, col in zip(batch.column("uri").to_pylist(),
                                     batch.column("row").to_pylist(),
                                     batch.column("col").to_pylist()):
                if uri is not None and row is not None and col is not None:
                    yield uri_key(uri), row, col  # the layout reader names a bad row

    return Routes.of(cells(), bands)


def split_by_band(pairs, bands_of):
    """``([(band, [(key, value), ...]), ...], unrouted)``: pairs in one list per band;
    ``bands_of(key, value)`` gives a pair's bands; ``unrouted`` counts pairs with none."""
    out, unrouted = {}, 0
    for key, value in pairs:
        targets = bands_of(key, value)
        if not targets:
            unrouted += 1
        for band in targets:
            out.setdefault(band, []).append((key, value))
    return list(out.items()), unrouted


def join_band(band, bands, layouts, thumbs, labels=()):
    """Join one band's rows: ``(cells, counts)``.

    ``layouts``, ``thumbs`` and ``labels`` are iterables of lists of ``(key, value)``:
    ``(uri, row, col, x, y)``, ``(thumbnail, width, height, bytes)`` and a label. Each layout
    row becomes one cell ``(uri, row, col, x, y, thumbnail, width, height, bytes, label)``;
    a layout row without a vectors row gets thumbnail None (drawn as a placeholder). Counts,
    for the cells this band owns (:meth:`Bands.owner`), so that each is counted once:
    ``duplicate_vector_rows`` (rows past the first for one key) and
    ``layout_rows_without_vectors`` (keys). Of a key's several vectors rows, the one used is
    chosen by content (:func:`_chosen_row`), not by arrival: the runner's grouping keeps no
    order, and every band a cell straddles must draw the same thumbnail. Thumbnails of keys
    the band's layout lacks are ignored: the read step counts rows that no band wants.
    """
    found = {}
    for batch in thumbs:
        for key, value in batch:
            found.setdefault(key, []).append(value)
    named = {}
    for batch in labels:
        for key, label in batch:
            named.setdefault(key, label)
    counts = collections.Counter()
    cells, counted = [], set()
    for batch in layouts:
        for key, (uri, row, col, x, y) in batch:
            rows = found.get(key)
            if key not in counted and bands.owner(row, col) == band:
                counted.add(key)
                if rows is None:
                    counts["layout_rows_without_vectors"] += 1
                elif len(rows) > 1:
                    counts["duplicate_vector_rows"] += len(rows) - 1
            thumb, width, height, nbytes = _chosen_row(rows) if rows else (None,) * 4
            cells.append((uri, row, col, x, y, thumb, width, height, nbytes, named.get(key)))
    return cells, counts


def _chosen_row(rows):
    """One of a key's vectors rows ``(thumbnail, width, height, bytes)``, the same whatever
    their order: one with a thumbnail if any, then the smallest."""
    if len(rows) == 1:
        return rows[0]
    return min(rows, key=lambda r: (r[0] is None, r[0] or b"",
                                    tuple(-1 if v is None else v for v in r[1:])))


def group_band(band, bands, cells, block=CELL_BLOCK):
    """A joined band's cells, one list per key of each work item they belong to.

    Returns ``(tiles, shards, names, owned)``: ``tiles`` maps each block of this band to its
    cells ``(uri, row, col, thumbnail, x, y)`` (a cell that straddles blocks is in each);
    ``shards`` maps cell-index blocks to ``(row, col, uri, label, width, height, bytes)`` and
    ``names`` search prefixes to ``(uri, row, col)``, for the cells this band owns, whose
    number is ``owned``.
    """
    tiles = {key: [] for key in bands.blocks(band)}
    shards, names, owned = {}, {}, 0
    for uri, row, col, x, y, thumb, width, height, nbytes, label in cells:
        for key in bands.blocks_of_cell(row, col):
            if key in tiles:
                tiles[key].append((uri, row, col, thumb, x, y))
        if bands.owner(row, col) != band:
            continue
        owned += 1
        shards.setdefault(cell_block(row, col, block), []).append(
            (row, col, uri, label, width, height, nbytes))
        names.setdefault(search_prefix(uri), []).append((uri, row, col))
    return tiles, shards, names, owned
