"""Beam side of rendering: :class:`RenderMosaic` writes the pyramid, overviews, indexes and page.

Work items and what each holds:

* a band of the mosaic (a strip of blocks, about 2,048 cells): the layout rows, thumbnails
  and labels of its cells, each row routed straight to its band (:mod:`gridtsne.render_join`)
  and joined there by URI; the band hands its blocks to the tile workers as soon as they are
  joined, so the next band is joined while they draw;
* a block of 4 x 4 top-level tiles: the thumbnails of the cells it covers, drawn once, and
  the two levels below it made from those tiles (:func:`gridtsne.tile_workers.draw_block`);
* a tile of a lower level: its (up to four) children, keyed by parent and read back from
  the output, one Beam stage per level;
* a block of ``tsne.jpg``, a cell-index block, a search-index prefix: only their own rows.

So no worker ever holds the full mosaic. Every file goes through :mod:`gridtsne.storage`.
Tiles are drawn by :mod:`gridtsne.tile_workers`, on ``RenderConfig.render_workers`` processes
per Beam worker process. The pixels and file formats are in the Beam-free modules
:mod:`gridtsne.tiles`, :mod:`gridtsne.overview`, :mod:`gridtsne.site` and
:mod:`gridtsne.projector`.
"""
import dataclasses
import json
import logging
import typing

import apache_beam as beam
from apache_beam import typehints
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton, TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from gridtsne import __version__, faults, storage
from gridtsne.overview import (DEFAULT_LONGEST, MOSAIC_OVERVIEW, TSNE_OVERVIEW, check_longest,
                               compose_mosaic_overview, encode_jpeg, mosaic_pieces, paste_pieces)
from gridtsne.projector import export_projector
from gridtsne.render_inputs import (declared_geometry, plan_render, read_layout_part,
                                    read_thumbnail_part, table_parts)
from gridtsne.render_join import Bands, group_band, join_band, route_table, split_by_band
from gridtsne.labels import LabelsCsv, labels_csv
from gridtsne.site import (CELL_BLOCK, DEFAULT_OSD_URL, SEARCH_DIRECTORY, SUMMARY_FILE, PageConfig,
                           cell_shard, is_url, read_labels, read_osd_files, search_chunks,
                           search_directory, write_osd_files, write_page)
from gridtsne.tile_workers import (TileJob, TileQueue, acquire_pool, block_depth, check_workers,
                                   draw_block, mosaic_piece, paint_tsne_block, process_local,
                                   reduce_block, reduction_steps, release_pool, step_depth,
                                   subtree, write_tsne_overview)
from gridtsne.tiles import DZI_NAME, MosaicGeometry, decode_image
from transforms import progress_metrics

log = logging.getLogger(__name__)

NAMESPACE = "gridtsne.render"
WRITTEN, MISSING, TSNE = "written", "missing", "tsne"
SHARDS, NAMES, CELLS = "shards", "names", "cells"
# Reduction stages built into the graph. The grid is only known at run time (the layout may
# be written by the same job), so the graph carries enough stages for any pyramid of up to
# 2**24 px a side with tiles of 64 px or more (reduction_steps: 7 for 256 px tiles);
# stages past the last step receive nothing and cost little.
DEFAULT_MAX_LEVELS = 8


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Rendering parameters (validated on construction, before any worker starts).

    cell: side of a grid cell in px; tile: side of a pyramid tile (even); fmt: ``jpeg`` or
    ``webp``; pad: background px around each thumbnail (default ``cell // 64``); quality: tile
    encoder quality; overview: longest side of ``mosaic.jpg`` and ``tsne.jpg``; osd_url: the
    page's ``<script src>`` for OpenSeadragon (a URL, or a local file whose bytes, read on
    construction, go into ``osd_files`` and are copied next to the page); labels: optional CSV
    (``uri``/``path``, ``label``), a URL or a local path read on construction
    (:func:`gridtsne.labels.labels_csv`); title: the page's title; projector:
    also export a TensorBoard Projector folder to ``<output>/projector``; max_levels: reduction
    stages to build, one per step of :func:`gridtsne.tile_workers.reduction_steps` (the
    blocks draw the top three levels; default: exactly the pyramid's when the layout exists
    before the pipeline runs, else ``DEFAULT_MAX_LEVELS``); storage_options: per-protocol
    fsspec options for every file read and written (see :func:`gridtsne.storage.filesystem`);
    render_workers: processes that draw, encode and write tiles in each Beam worker process
    (1: the runner's own thread, one item at a time, as on Dataflow and Flink, where the
    runner spreads tiles over workers; ``pipelines.render`` defaults to every core on the
    DirectRunner, see :func:`pipelines.render.default_render_workers`).
    """

    cell: int = 128
    tile: int = 256
    fmt: str = "jpeg"
    pad: typing.Optional[int] = None
    quality: int = 85
    overview: int = DEFAULT_LONGEST
    osd_url: str = DEFAULT_OSD_URL
    labels: typing.Optional[LabelsCsv] = None
    title: str = "gridtsne mosaic"
    projector: bool = False
    projector_max_points: typing.Optional[int] = None
    max_levels: typing.Optional[int] = None
    osd_files: typing.Optional[tuple] = None
    storage_options: typing.Optional[dict] = None
    render_workers: int = 1

    def __post_init__(self):
        # Local files are read here, on the launcher: workers cannot see its disk.
        object.__setattr__(self, "labels", labels_csv(self.labels))
        if self.osd_url and not is_url(self.osd_url) and self.osd_files is None:
            object.__setattr__(self, "osd_files", read_osd_files(self.osd_url))
        MosaicGeometry(1, 1, cell=self.cell, tile=self.tile, fmt=self.fmt, pad=self.pad)
        if not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be an integer in 1..100, got {self.quality!r}")
        check_longest(self.overview)
        if self.max_levels is not None and (not isinstance(self.max_levels, int)
                                            or not 1 <= self.max_levels <= 40):
            raise ValueError(f"max_levels must be an integer in 1..40, got {self.max_levels!r}")
        if not self.osd_url:
            raise ValueError(f"osd_url must not be empty, got {self.osd_url!r}")
        check_workers(self.render_workers)


def _timer(name):
    return Metrics.distribution(NAMESPACE, name)


class _PoolFn(beam.DoFn):
    """Base of the DoFns whose work runs in :class:`gridtsne.tile_workers.TileQueue`.

    Inline with ``config.render_workers == 1`` (one item at a time, in the runner's thread),
    otherwise on a pool of that many processes shared by every such DoFn in this worker
    process; items still unfinished at the end of a bundle are emitted from ``finish_bundle``.
    """

    work = None  # the per-item function of gridtsne.tile_workers
    batch = 16  # items per task sent to a worker process

    def __init__(self, output, config):
        self.output = output
        self.config = config

    def setup(self):
        self.pool = acquire_pool(self.config.render_workers)
        self.queue = None

    def start_bundle(self):
        self.queue = None  # a bundle that failed half-way leaves nothing behind for a retry

    def teardown(self):
        release_pool(self.pool)
        self.pool = None

    def _queue(self, plan):
        if self.queue is None:
            # With a pool, workers write their own tiles unless the output lives only in this
            # process's memory; inline, this thread writes as before.
            job = TileJob(plan.geometry, plan.tsne, self.output, self.config.quality,
                          self.config.storage_options,
                          write=self.pool is None or not process_local(self.output))
            self.queue = TileQueue(self.work, job, self.pool, self.config.render_workers,
                                   self.batch)
        return self.queue

    def finish_bundle(self):
        if self.queue is None:
            return
        queue, self.queue = self.queue, None
        for out in self._outputs(queue.drain(), queue.job):
            if isinstance(out, TaggedOutput):
                yield TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
            else:
                yield GlobalWindows.windowed_value(out)

    def _outputs(self, done, job):
        """The outputs of finished items: by default each result as it is."""
        return done


class PaintTsneBlockFn(_PoolFn):
    """Paint one 512 px block of ``tsne.jpg`` from its points (grouped by the top-level tile
    that made them): ``(bx, by, JPEG, points whose top-left pixel lies in this block)``."""

    work = staticmethod(paint_tsne_block)

    def process(self, element, plan):
        (bx, by), groups = element
        queue = self._queue(plan)
        yield from self._outputs(queue.put(bx, by, list(groups)), queue.job)


class _BlockFn(_PoolFn):
    """Base of the DoFns whose items finish as :class:`gridtsne.tile_workers.BlockDone`: they
    emit the tiles the workers could not write, ``written`` counts per level, and (main
    output) the root's place in the next reduction step, ``((root level, rx, ry), (level,
    tx, ty))`` (:func:`gridtsne.tile_workers.step_parent`)."""

    def infer_output_type(self, input_type):
        # Inference sees the TaggedOutputs too; the main output is always a key-value pair.
        return typehints.Tuple[typehints.Any, typehints.Any]

    def setup(self):
        super().setup()
        self.top_tiles = progress_metrics.counter(NAMESPACE, "top_tiles_written")
        self.lower_tiles = progress_metrics.counter(NAMESPACE, "lower_tiles_written")

    def _outputs(self, done, job):
        top = job.geometry.max_level
        for block in done:
            for level, tx, ty, data in block.tiles:
                storage.write_bytes(job.tile_url(level, tx, ty), data,
                                    self.config.storage_options)
            for level, count in block.written.items():
                (self.top_tiles if level == top else self.lower_tiles).inc(count)
                yield TaggedOutput(WRITTEN, (level, count))
            yield from self._emit(block)
            if block.parent is not None:
                yield block.parent

    def _emit(self, block):
        """The block's own outputs besides its tiles and its root."""
        return ()


class ReduceStepFn(_BlockFn):
    """One reduction step below a root tile: the tiles of one level below it, written one
    stage earlier, made into every level down to the root (one level per step, or all the
    levels left once they are few: :func:`gridtsne.tile_workers.reduction_steps`).

    Input: ``((root level, rx, ry), [(level, tx, ty), ...])``: only which tiles exist; their
    pixels are read back from the output, so the runner never carries pyramid pixels and its
    memory does not grow with the collection. Each is decoded once.
    """

    work = staticmethod(reduce_block)

    def process(self, element, plan):
        (root, rx, ry), tiles = element
        g = plan.geometry
        got = sorted(tiles)
        level = got[0][0] if got else root + 1
        expected = [(level, tx, ty) for tx, ty in sorted(subtree(g, root, rx, ry, level))]
        if got != expected or level != root + step_depth(g, level):
            # A quarter drawn as background would go unnoticed: fail loudly instead.
            raise ValueError(f"tile {(root, rx, ry)!r} got tiles {got!r}, expected "
                             f"{expected!r}: the runner lost or duplicated data")
        queue = self._queue(plan)
        if queue.job.write:
            children = [(tx, ty, None) for _, tx, ty in got]
        else:  # the workers cannot see this process's memory: hand them the tiles' bytes
            children = [(tx, ty, storage.read_bytes(
                storage.url_join(self.output, g.tile_path(level, tx, ty)),
                self.config.storage_options)) for _, tx, ty in got]
        yield from self._outputs(queue.put(root, rx, ry, level, children), queue.job)


class RenderBandFn(_BlockFn):
    """Join one band of the mosaic and draw its blocks: the 4 x 4 top-level tiles of each and
    the two levels below them.

    Input: ``(band, {"layout": [[(key, row)], ...], "thumbs": [...], "labels": [...],
    "band": [...]})``, lists of rows routed to this band. Outputs: main, each block root's
    place in the first reduction step (:class:`_BlockFn`); ``written``: ``(level, tiles)``;
    ``missing``: URIs drawn as placeholders; ``tsne``: ``(block, [point, ...])``, points for
    one block of ``tsne.jpg``; ``shards``, ``names``: ``(key, [entry, ...])`` for the cell and
    search indexes; ``cells``: how many cells the band owns.
    """

    work = staticmethod(draw_block)
    batch = 1  # a block is sixteen tiles' work

    def setup(self):
        super().setup()
        self.cells = Metrics.counter(NAMESPACE, "cells_drawn")
        self.placeholders = Metrics.counter(NAMESPACE, "placeholders")
        self.ms = _timer("top_block_ms")

    def process(self, element, plan):
        band, groups = element
        bands = _bands(plan)
        cells, counts = join_band(band, bands, groups["layout"], groups["thumbs"],
                                  groups.get("labels", ()))
        for name, count in counts.items():
            Metrics.counter(NAMESPACE, name).inc(count)
        blocks, shards, names, owned = group_band(band, bands, cells)
        del cells
        queue = self._queue(plan)
        for (bx, by), batch in blocks.items():
            yield from self._outputs(queue.put(bx, by, batch), queue.job)
        for key, batch in shards.items():
            yield TaggedOutput(SHARDS, (key, batch))
        for key, batch in names.items():
            yield TaggedOutput(NAMES, (key, batch))
        yield TaggedOutput(CELLS, owned)

    def _emit(self, block):
        faults.point("rendering")  # a block of top tiles is written
        self.cells.inc(block.owned)
        self.placeholders.inc(len(block.missing))
        self.ms.update(int(block.ms))
        for uri in block.missing:
            yield TaggedOutput(MISSING, uri)
        for key, points in block.points.items():
            yield TaggedOutput(TSNE, (key, points))


def reduction_stages(geometry):
    """Runner stages the pyramid's reduction steps need (at least 1)."""
    return max(1, len(reduction_steps(geometry)))


def _bands(plan):
    return Bands.plan(plan.geometry, block_depth(plan.geometry))


def _routes(_, layout_url, plan, storage_options=None):
    return route_table(layout_url, _bands(plan), storage_options)


def _layout_to_bands(part, plan, storage_options=None):
    """One layout part's rows, one list per band: ``(band, [(key, row), ...])``."""
    bands = _bands(plan)
    rows, _ = split_by_band(read_layout_part(part, storage_options),
                            lambda key, row: bands.bands_of_cell(row[1], row[2]))
    return rows


def _routed(pairs, routes, counter):
    """Pairs routed to their bands by URI key; those of no band are counted on ``counter``."""
    rows, unrouted = split_by_band(pairs, lambda key, _: routes.bands_of(key))
    if unrouted:
        Metrics.counter(NAMESPACE, counter).inc(unrouted)
    return rows


def _plan(_, layout_url, cfg):
    plan = plan_render(layout_url, cfg.cell, cfg.tile, cfg.fmt, cfg.overview, cfg.pad,
                       cfg.storage_options)
    progress_metrics.counter(NAMESPACE, "tiles_planned").inc(plan.geometry.tile_count())
    return plan


def _write_overviews(_, output, config, plan, tiles_written, tsne_blocks):
    """Write ``mosaic.jpg`` and ``tsne.jpg``: ``(mosaic summary, tsne summary)``.

    With a tile pool, ``tsne.jpg`` is stitched and encoded by one worker while the pool's
    others and this process make ``mosaic.jpg``.
    """
    g = plan.geometry
    expected = g.tile_count()
    if tiles_written != expected:
        raise ValueError(f"the pyramid has {tiles_written} tiles, expected {expected}: give "
                         f"RenderConfig(max_levels={reduction_stages(g)}) or more "
                         f"for this {g.max_level + 1}-level pyramid")
    pool = acquire_pool(config.render_workers)
    try:
        write = pool is not None and not process_local(output)
        job = TileJob(g, plan.tsne, output, config.quality, config.storage_options, write)
        tsne = pool.submit(write_tsne_overview, job, tsne_blocks) if write else None
        mosaic = _write_mosaic_overview(job, config, pool)
        tsne = tsne.result() if tsne else write_tsne_overview(job, tsne_blocks)
    finally:
        release_pool(pool)
    return mosaic, tsne


def _write_mosaic_overview(job, config, pool):
    g, output = job.geometry, job.output

    def read_tile(level, tx, ty):
        url = storage.url_join(output, g.tile_path(level, tx, ty))
        return decode_image(storage.read_bytes(url, config.storage_options))

    if pool is None:
        img = compose_mosaic_overview(g, read_tile, config.overview)
    else:  # each piece is a tile read, decoded and scaled: spread them over the pool
        queue = TileQueue(mosaic_piece, job, pool, config.render_workers)
        level, size, pieces = mosaic_pieces(g, config.overview)
        done = []
        for tx, ty, box in pieces:
            data = None if job.write else storage.read_bytes(
                storage.url_join(output, g.tile_path(level, tx, ty)), config.storage_options)
            done += queue.put(level, tx, ty, box, data)
        img = paste_pieces(size, done + queue.drain())
    storage.write_bytes(storage.url_join(output, MOSAIC_OVERVIEW), encode_jpeg(img),
                        config.storage_options)
    return {"file": MOSAIC_OVERVIEW, "width": img.width, "height": img.height}


def _write_cell_shard(element, output, storage_options=None):
    """Write one block's cell index (its entries come in lists); ``(1 shard, images)``."""
    (br, bc), batches = element
    entries = [entry for batch in batches for entry in batch]
    name, data = cell_shard(br, bc, entries, CELL_BLOCK)
    storage.write_bytes(storage.url_join(output, name), data, storage_options)
    return 1, len(entries)


def _sum_pairs(pairs):
    totals = [0, 0]
    for a, b in pairs:
        totals[0] += a
        totals[1] += b
    return tuple(totals)


def _write_search_chunks(element, output, storage_options=None):
    prefix, batches = element
    entries = [entry for batch in batches for entry in batch]
    for name, data, entry in search_chunks(prefix, entries):
        storage.write_bytes(storage.url_join(output, name), data, storage_options)
        yield entry


def _write_search_directory(entries, output, storage_options=None):
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


def _write_site(_, output, config, plan, tiles, placeholders, examples, cells, shards,
                search, overviews, projector):
    """Last step: ``mosaic.dzi``, the page and ``site.json``, once everything else exists."""
    mosaic, tsne = overviews
    check_counts(cells, placeholders, shards, search, tsne)
    g = plan.geometry
    opts = config.storage_options
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


def _start(pcoll):
    """One element that appears only once ``pcoll`` (if a PCollection) is complete."""
    if isinstance(pcoll, beam.pvalue.PBegin):
        return pcoll | "Start" >> beam.Create([None])
    done = pcoll | "CountUpstream" >> beam.combiners.Count.Globally()
    return (pcoll.pipeline | "Start" >> beam.Create([None])
            | "WaitForUpstream" >> beam.Map(lambda _, n: None, AsSingleton(done)))


class RenderMosaic(beam.PTransform):
    """Render the site for a vectors table and a layout into ``output``.

    Apply it to a pipeline (``p | RenderMosaic(...)``) or to any PCollection that must be
    complete first, e.g. the result of the step that writes ``layout.parquet``: all reading
    happens at run time, so the layout may be written by the same job. Returns a
    single-element PCollection: the summary dict also written to ``site.json``.

    Parameters
    ----------
    vectors_url : str
        The embedding stage's ``vectors/`` folder (thumbnails are read from it).
    layout_url : str
        The layout stage's ``layout.parquet``.
    output : str
        The site's folder (any fsspec URL): ``index.html`` etc. are written there.
    config : RenderConfig
    """

    def __init__(self, vectors_url, layout_url, output, config=RenderConfig()):
        super().__init__()
        self.vectors_url = str(vectors_url)
        self.layout_url = str(layout_url)
        self.output = str(output)
        self.config = config

    def _stages(self, pcoll):
        """How many reduction stages to build (one per reduction step)."""
        if self.config.max_levels is not None:
            return self.config.max_levels
        if isinstance(pcoll, beam.pvalue.PBegin):
            # The layout exists already (nothing upstream writes it): build exactly enough.
            g = declared_geometry(self.layout_url, self.config.cell, self.config.tile,
                                  self.config.storage_options)
            if g is not None:
                return reduction_stages(g)
        return DEFAULT_MAX_LEVELS

    def expand(self, pcoll):
        cfg, out = self.config, self.output
        opts = cfg.storage_options
        start = _start(pcoll)
        layout_url, vectors_url = self.layout_url, self.vectors_url
        plan = start | "PlanRender" >> beam.Map(_plan, layout_url, cfg)
        plan_si = AsSingleton(plan)

        routes = AsSingleton(start | "RouteUris" >> beam.Map(_routes, layout_url, plan_si, opts))
        layout = (start
                  | "ListLayoutParts" >> beam.FlatMap(lambda _: table_parts(layout_url, opts))
                  | "SpreadLayoutParts" >> beam.Reshuffle()
                  | "ReadLayout" >> beam.FlatMap(_layout_to_bands, plan_si, opts))
        thumbs = (start
                  | "ListVectorParts" >> beam.FlatMap(lambda _: table_parts(vectors_url, opts))
                  | "SpreadVectorParts" >> beam.Reshuffle()
                  | "ReadThumbnails" >> beam.FlatMap(
                      lambda part, r: _routed(read_thumbnail_part(part, opts), r,
                                              "vectors_not_in_layout"), routes))
        # Every band is a work item, even one of holes only.
        sources = {"layout": layout, "thumbs": thumbs,
                   "band": plan | "ListBands" >> beam.FlatMap(
                       lambda p: ((band, None) for band in range(_bands(p).count)))}
        if cfg.labels:
            labels_url = cfg.labels
            # Its own stage (a Reshuffle): fused with Start, the routes it waits for (made from
            # Start's element) would never be ready.
            sources["labels"] = (start
                                 | "SpreadLabels" >> beam.Reshuffle()
                                 | "ReadLabels" >> beam.FlatMap(
                                     lambda _, r: _routed(read_labels(labels_url, opts), r,
                                                          "labels_not_in_layout"), routes))
        top = (sources
               | "GroupRowsByBand" >> beam.CoGroupByKey()
               | "RenderBands" >> beam.ParDo(RenderBandFn(out, cfg), plan_si)
               .with_outputs(WRITTEN, MISSING, TSNE, SHARDS, NAMES, CELLS, main="parents"))
        written = [top[WRITTEN]]
        parents = top.parents
        for stage in range(1, self._stages(pcoll) + 1):
            reduce_fn = ReduceStepFn(out, cfg)
            lower = (parents
                     | f"GroupTilesStage{stage:02d}" >> beam.GroupByKey()
                     | f"ReduceTilesStage{stage:02d}" >> beam.ParDo(reduce_fn, plan_si)
                     .with_outputs(WRITTEN, main="parents"))
            written.append(lower[WRITTEN])
            parents = lower.parents

        tiles = (written
                 | "FlattenWrittenTiles" >> beam.Flatten()
                 | "SumTilesPerLevel" >> beam.CombinePerKey(sum)
                 | "CollectTileCounts" >> beam.combiners.ToDict())
        tiles_total = tiles | "SumTiles" >> beam.Map(lambda d: sum(d.values()))

        tsne = (top[TSNE]
                | "GroupTsnePoints" >> beam.GroupByKey()
                | "PaintTsneBlocks" >> beam.ParDo(PaintTsneBlockFn(out, cfg), plan_si)
                | "CollectTsneBlocks" >> beam.combiners.ToList())
        overviews = start | "WriteOverviews" >> beam.Map(
            _write_overviews, out, cfg, plan_si, AsSingleton(tiles_total), AsSingleton(tsne))

        placeholders = top[MISSING] | "CountPlaceholders" >> beam.combiners.Count.Globally()
        examples = (top[MISSING]
                    | "SamplePlaceholders" >> beam.combiners.Sample.FixedSizeGlobally(20))
        cell_count = top[CELLS] | "CountCells" >> beam.CombineGlobally(sum)

        shards = (top[SHARDS]
                  | "GroupCellsByIndexBlock" >> beam.GroupByKey()
                  | "WriteCellShards" >> beam.Map(_write_cell_shard, out, opts)
                  | "CountCellShards" >> beam.CombineGlobally(_sum_pairs))
        search = (top[NAMES]
                  | "GroupNamesByPrefix" >> beam.GroupByKey()
                  | "WriteSearchChunks" >> beam.FlatMap(_write_search_chunks, out, opts)
                  | "CollectSearchChunks" >> beam.combiners.ToList()
                  | "WriteSearchDirectory" >> beam.Map(_write_search_directory, out, opts))

        if cfg.projector:
            labels_url, max_points = cfg.labels, cfg.projector_max_points
            projector = start | "ExportProjector" >> beam.Map(
                lambda _: export_projector(vectors_url, storage.url_join(out, "projector"),
                                           labels_url, max_points=max_points,
                                           storage_options=opts))
        else:
            projector = start | "NoProjector" >> beam.Map(lambda _: None)

        return start | "WriteSite" >> beam.Map(
            _write_site, out, cfg, plan_si, AsSingleton(tiles), AsSingleton(placeholders),
            AsSingleton(examples), AsSingleton(cell_count), AsSingleton(shards),
            AsSingleton(search), AsSingleton(overviews), AsSingleton(projector))
