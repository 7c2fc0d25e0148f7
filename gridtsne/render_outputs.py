"""The render's last writes, without Beam: ``mosaic.jpg`` and ``tsne.jpg``, the cell and
search indexes, ``mosaic.dzi``, the page and ``site.json``, with the checks that nothing was
lost on the way. :mod:`transforms.render` calls them once the pyramid exists.
"""
import json
import logging

from PIL import Image

from gridtsne import __version__, storage
from gridtsne.overview import (MOSAIC_OVERVIEW, TSNE_OVERVIEW, compose_mosaic_overview,
                               encode_jpeg, mosaic_pieces, paste_pieces)
from gridtsne.site import (CELL_BLOCK, SEARCH_DIRECTORY, SUMMARY_FILE, PageConfig, cell_shard,
                           search_chunks, search_directory, write_osd_files, write_page)
from gridtsne.tile_workers import (TileJob, acquire_pool, mosaic_strip, process_local,
                                   reduction_steps, release_pool, write_tsne_overview)
from gridtsne.tiles import DZI_NAME, decode_image

log = logging.getLogger(__name__)


def tile_job(plan, output, config, write):
    """The :class:`gridtsne.tile_workers.TileJob` of a render plan and its config."""
    return TileJob(plan.geometry, plan.tsne, output, config.quality, config.storage_options,
                   write)


def reduction_stages(geometry):
    """Runner stages the pyramid's reduction steps need (at least 1)."""
    return max(1, len(reduction_steps(geometry)))


def write_overviews(output, config, plan, tally, tsne_blocks):
    """Write ``mosaic.jpg`` and ``tsne.jpg`` once the pyramid is complete (``tally``),
    ``tsne.jpg`` from its painted blocks (:class:`transforms.render.FinishBandsFn`):
    ``(mosaic summary, tsne summary)``. ``config``: a :class:`transforms.render.RenderConfig`.

    With a tile pool, the workers make ``mosaic.jpg`` row by row (a row of tiles of its
    level, each read, decoded and scaled: :func:`gridtsne.tile_workers.mosaic_strip`) while
    this process stitches and encodes ``tsne.jpg``, then this process pastes and encodes
    ``mosaic.jpg``. Its 50 MB of rows come back through the pool's pipes: as a runner's
    output they cost the in-memory runner a quarter of a second more. Without a pool, or
    where the workers cannot read the tiles (``memory://``), this process does it all.
    """
    g = plan.geometry
    expected = g.tile_count()
    tiles_written = sum(tally["tiles"].values())
    if tiles_written != expected:
        raise ValueError(f"the pyramid has {tiles_written} tiles, expected {expected}: give "
                         f"RenderConfig(max_levels={reduction_stages(g)}) or more "
                         f"for this {g.max_level + 1}-level pyramid")
    pool = acquire_pool(config.render_workers)
    try:
        job = tile_job(plan, output, config, write=True)
        if pool is None or process_local(output):  # no workers, or they cannot read the tiles
            mosaic = _save_mosaic(job, config, compose_mosaic_overview(
                g, lambda level, tx, ty: decode_image(storage.read_bytes(
                    job.tile_url(level, tx, ty), config.storage_options)), config.overview))
            return mosaic, write_tsne_overview(job, tsne_blocks)
        level, size, pieces = mosaic_pieces(g, config.overview)
        rows = {}
        for tx, ty, box in pieces:
            rows.setdefault(ty, []).append((tx, ty, box))
        # Every row queued at once (at most 50 MB of pixels in all), before tsne.jpg.
        strips = [pool.submit(mosaic_strip, job, level, rows[ty]) for ty in sorted(rows)]
        tsne = write_tsne_overview(job, tsne_blocks)
        img = paste_pieces(size, [(box, Image.frombytes(
            "RGB", (box[2] - box[0], box[3] - box[1]), raw))
            for box, raw in (strip.result() for strip in strips)])
        return _save_mosaic(job, config, img), tsne
    finally:
        release_pool(pool)


def _save_mosaic(job, config, img):
    storage.write_bytes(storage.url_join(job.output, MOSAIC_OVERVIEW), encode_jpeg(img),
                        config.storage_options)
    return {"file": MOSAIC_OVERVIEW, "width": img.width, "height": img.height}


def write_cell_shard(element, output, storage_options=None):
    """Write one block's cell index (its entries come in lists); ``("shards", (1, images))``."""
    (br, bc), batches = element
    entries = [entry for batch in batches for entry in batch]
    name, data = cell_shard(br, bc, entries, CELL_BLOCK)
    storage.write_bytes(storage.url_join(output, name), data, storage_options)
    return "shards", (1, len(entries))


def write_search_chunks(element, output, storage_options=None):
    """Write one prefix's search chunks; ``("chunk", directory entry)`` for each."""
    prefix, batches = element
    entries = [entry for batch in batches for entry in batch]
    for name, data, entry in search_chunks(prefix, entries):
        storage.write_bytes(storage.url_join(output, name), data, storage_options)
        yield "chunk", entry


def cell_shard_work(job, key, batches):
    """:func:`write_cell_shard` as a tile worker's item (``job``: a
    :class:`gridtsne.tile_workers.TileJob` that writes): ``[("shards", (1, images))]``."""
    return [write_cell_shard((key, batches), job.output, job.storage_options)]


def search_chunks_work(job, prefix, batches):
    """:func:`write_search_chunks` as a tile worker's item: its ``("chunk", entry)`` list."""
    return list(write_search_chunks((prefix, batches), job.output, job.storage_options))


def write_search_directory(entries, output, storage_options=None):
    """Write ``search/index.js``; ``(chunks, names indexed)``."""
    storage.write_bytes(storage.url_join(output, SEARCH_DIRECTORY), search_directory(entries),
                        storage_options)
    return len(entries), sum(e[3] for e in entries)


def check_counts(cells, placeholders, shards, search, tsne):
    """Every image must be in the cell index, the search index and (if drawable) tsne.jpg.

    A runner that loses elements would otherwise leave a page that quietly lacks images.
    """
    problems = []
    if shards[1] != cells:
        problems.append(f"the cell index holds {shards[1]} of {cells} images")
    if search[1] != cells:
        problems.append(f"the search index holds {search[1]} of {cells} images")
    if tsne["points"] != cells - placeholders:
        problems.append(f"tsne.jpg shows {tsne['points']} of {cells - placeholders} images")
    if problems:
        raise ValueError("the render lost data: " + "; ".join(problems))


def write_site(output, config, plan, tally, overviews, projector):
    """Last step: ``search/index.js``, ``mosaic.dzi``, the page and ``site.json``, once
    everything else exists (``tally``: :class:`transforms.render.RenderTally`'s)."""
    mosaic, tsne = overviews
    opts = config.storage_options
    tiles, cells, shards = tally["tiles"], tally["cells"], tally["shards"]
    placeholders, examples = tally["placeholders"], tally["examples"]
    search = write_search_directory(tally["chunks"], output, opts)
    check_counts(cells, placeholders, shards, search, tsne)
    g = plan.geometry
    storage.write_bytes(storage.url_join(output, DZI_NAME), g.dzi_xml(), opts)
    osd_url = config.osd_url
    if config.osd_files:
        osd_url = write_osd_files(config.osd_files, output, opts)
    page = PageConfig(title=config.title, rows=g.rows, cols=g.cols, cell=g.cell, tile=g.tile,
                      ext=g.ext, width=g.width, height=g.height, images=cells, osd_url=osd_url,
                      labels=bool(config.labels), projector=projector is not None)
    write_page(output, page, opts)
    summary = {
        "images": cells,
        "grid": {"rows": g.rows, "cols": g.cols, "holes": g.rows * g.cols - cells},
        "cell": g.cell, "tile": g.tile, "format": g.fmt, "quality": config.quality,
        "levels": g.max_level + 1,
        "tiles": {str(level): n for level, n in sorted(tiles.items())},
        "tiles_total": sum(tiles.values()),
        "placeholders": placeholders,
        "placeholder_examples": sorted(examples),
        "index": {"cell_shards": shards[0], "search_chunks": search[0],
                  "cell_block": CELL_BLOCK},
        "overviews": {"mosaic": mosaic, "tsne": tsne},
        "projector": projector,
        "files": {"page": "index.html", "dzi": DZI_NAME, "tiles": "mosaic_files/",
                  "mosaic": MOSAIC_OVERVIEW, "tsne": TSNE_OVERVIEW, "cells": "cells/",
                  "search": "search/index.js", "summary": SUMMARY_FILE},
        "osd_url": osd_url,
        "labels": config.labels and config.labels.url,
        "gridtsne_version": __version__,
    }
    storage.write_bytes(storage.url_join(output, SUMMARY_FILE),
                        json.dumps(summary, indent=2, sort_keys=True).encode(), opts)
    if placeholders:
        log.warning("%d of %d images had a missing or undecodable thumbnail and were drawn as "
                    "placeholders, e.g. %s", placeholders, cells, sorted(examples)[:3])
    log.info("rendered %d images into a %d-level pyramid of %d tiles at %s", cells,
             g.max_level + 1, summary["tiles_total"], output)
    return summary
