"""Beam side of rendering: :class:`RenderMosaic` writes the pyramid, overviews, indexes and page.

Work items and what each holds:

* a band of the mosaic (a strip of blocks, about 2,048 cells): the layout rows, thumbnails
  and labels of its cells, each row routed straight to its band (:mod:`gridtsne.render_join`)
  and joined there by URI; the band hands its blocks to the tile workers as soon as they are
  joined, so the next band is joined while they draw;
* a block of 4 x 4 top-level tiles: the thumbnails of the cells it covers, drawn once, and
  the two levels below it made from those tiles (:func:`gridtsne.tile_workers.draw_block`);
* a root of a reduction step: the tiles of one level below it (up to sixteen), keyed by the
  root and read back from the output, one Beam stage per step; the first step shares its
  stage with the rest the bands hand on (:class:`FinishBandsFn`);
* a block of ``tsne.jpg``, a cell-index block, a search-index prefix: only their own rows;
* a row of ``mosaic.jpg``: the tiles of one row of its level, read back
  (:func:`gridtsne.render_outputs.write_overviews`).

Every count the last steps check is gathered in one combine (:class:`RenderTally`). Where
every stage runs in the launching process (the in-memory DirectRunner), the bulk of the
bytes, the thumbnails and the tsne points, skip the runner's coders: the runner carries refs
to them (:mod:`transforms.handoff`).

So no worker ever holds the full mosaic. Every file goes through :mod:`gridtsne.storage`.
Tiles are drawn by :mod:`gridtsne.tile_workers`, on ``RenderConfig.render_workers`` processes
per Beam worker process. The pixels and file formats are in the Beam-free modules
:mod:`gridtsne.tiles`, :mod:`gridtsne.overview`, :mod:`gridtsne.site` and
:mod:`gridtsne.projector`; the last writes (overviews, indexes, page, ``site.json``) and their
checks in :mod:`gridtsne.render_outputs`.
"""
import dataclasses
import heapq
import typing

import apache_beam as beam
from apache_beam import typehints
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsList, AsSingleton, TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from gridtsne import faults, storage
from gridtsne.overview import DEFAULT_LONGEST, check_longest
from gridtsne.projector import export_projector
from gridtsne.render_inputs import (declared_geometry, plan_render, read_layout_part,
                                    read_thumbnail_part, table_parts)
from gridtsne.render_join import Bands, group_band, join_band, route_table, split_by_band
from gridtsne.render_outputs import (cell_shard_work, reduction_stages, search_chunks_work,
                                     tile_job, write_overviews, write_site)
from gridtsne.labels import LabelsCsv, labels_csv
from gridtsne.site import DEFAULT_OSD_URL, is_url, read_labels, read_osd_files
from gridtsne.tile_workers import (TileQueue, acquire_pool, block_depth, check_workers,
                                   draw_block, paint_tsne_block, process_local, reduce_block,
                                   release_pool, step_depth, subtree)
from gridtsne.tiles import MosaicGeometry
from transforms import progress_metrics
from transforms.handoff import Handoff, runs_in_this_process

NAMESPACE = "gridtsne.render"
TALLY = "tally"
# What a band hands on, keyed by kind (FinishBandsFn): tiles for the first reduction step,
# points for tsne.jpg, entries of the cell and search indexes.
TILES, TSNE, SHARDS, NAMES = "tiles", "tsne", "shards", "names"
# What is routed to a band: layout rows, vectors rows (thumbnails), labels, and one empty
# "band" entry per band, so that a band of holes only is a work item too.
INPUTS = ("layout", "thumbs", "labels", "band")
EXAMPLES = 20  # placeholders named in site.json
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
    DirectRunner, see :func:`pipelines.render.default_render_workers`); handoff: whether the
    thumbnails (read step to bands) and the ``tsne.jpg`` points (bands to ``FinishBands``)
    skip the runner (None: where every stage runs in the launching process,
    :func:`transforms.handoff.runs_in_this_process`).
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
    handoff: typing.Optional[bool] = None

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
        if self.handoff not in (None, True, False):
            raise ValueError(f"handoff must be None, True or False, got {self.handoff!r}")


def _timer(name):
    return Metrics.distribution(NAMESPACE, name)


class _PoolFn(beam.DoFn):
    """Base of the DoFns whose work runs in :class:`gridtsne.tile_workers.TileQueue`.

    Inline with ``config.render_workers == 1`` (one item at a time, in the runner's thread),
    otherwise on a pool of that many processes shared by every such DoFn in this worker
    process; items still unfinished at the end of a bundle are emitted from ``finish_bundle``.
    A DoFn may queue more than one kind of work (one queue per work function).
    """

    work = None  # the per-item function of gridtsne.tile_workers
    batch = 16  # items per task sent to a worker process

    def __init__(self, output, config, handoff=Handoff(False)):
        self.output = output
        self.config = config
        self.handoff = handoff  # what the stages before and after hand on in this process

    def setup(self):
        self.pool = acquire_pool(self.config.render_workers)
        self.queues = {}

    def start_bundle(self):
        self.queues = {}  # a bundle that failed half-way leaves nothing behind for a retry

    def teardown(self):
        release_pool(self.pool)
        self.pool = None

    def _writes(self):
        """Whether the work writes its own tiles: with a pool, unless the output lives only in
        this process's memory; inline, this thread writes as before."""
        return self.pool is None or not process_local(self.output)

    def _put(self, plan, item, work=None, batch=None):
        """Queue ``work(job, *item)`` (default ``self.work``); the outputs of what finished."""
        work = work or self.work
        queue = self.queues.get(work)
        if queue is None:
            job = tile_job(plan, self.output, self.config, self._writes())
            queue = self.queues[work] = TileQueue(work, job, self.pool,
                                                  self.config.render_workers,
                                                  batch or self.batch)
        return self._outputs(queue.put(*item), queue.job, work)

    def finish_bundle(self):
        queues, self.queues = self.queues, {}
        for work, queue in queues.items():
            for out in self._outputs(queue.drain(), queue.job, work):
                if isinstance(out, TaggedOutput):
                    yield TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
                else:
                    yield GlobalWindows.windowed_value(out)

    def _outputs(self, done, job, work):
        """The outputs of finished items of ``work``: by default each result as it is."""
        return done


class _BlockFn(_PoolFn):
    """Base of the DoFns whose items finish as :class:`gridtsne.tile_workers.BlockDone`: they
    emit the tiles the workers could not write, ``tally`` ``("tiles", (level, n))`` counts
    (:class:`RenderTally`), and (main output) the root's place in the next reduction step,
    ``((root level, rx, ry), (level, tx, ty))`` (:func:`gridtsne.tile_workers.step_parent`),
    as :meth:`_keyed` keys it."""

    def infer_output_type(self, input_type):
        # Inference sees the TaggedOutputs too; the main output is always a key-value pair.
        return typehints.Tuple[typehints.Any, typehints.Any]

    def setup(self):
        super().setup()
        self.top_tiles = progress_metrics.counter(NAMESPACE, "top_tiles_written")
        self.lower_tiles = progress_metrics.counter(NAMESPACE, "lower_tiles_written")

    def _outputs(self, done, job, work):
        top = job.geometry.max_level
        for block in done:
            for level, tx, ty, data in block.tiles:
                storage.write_bytes(job.tile_url(level, tx, ty), data,
                                    self.config.storage_options)
            for level, count in block.written.items():
                (self.top_tiles if level == top else self.lower_tiles).inc(count)
                yield TaggedOutput(TALLY, ("tiles", (level, count)))
            yield from self._emit(block)
            if block.parent is not None:
                yield self._keyed(TILES, *block.parent)

    def _keyed(self, kind, key, value):
        """A main output: ``(key, value)``, for the next reduction step."""
        return key, value

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
    batch = 1  # an item is up to sixteen tiles' decoding: spread them, the steps are short

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
        if self._writes():
            children = [(tx, ty, None) for _, tx, ty in got]
        else:  # the workers cannot see this process's memory: hand them the tiles' bytes
            children = [(tx, ty, storage.read_bytes(
                storage.url_join(self.output, g.tile_path(level, tx, ty)),
                self.config.storage_options)) for _, tx, ty in got]
        yield from self._put(plan, (root, rx, ry, level, children))


class FinishBandsFn(ReduceStepFn):
    """Everything the bands hand on, in one stage: the first reduction step, the blocks of
    ``tsne.jpg`` and both indexes. As stages of their own, each cost the in-memory runner its
    start and end while the tile workers waited; here the workers paint, reduce and write the
    indexes (this process writes the indexes only where they cannot: ``memory://``).

    Input: ``((kind, key), values)``, as :class:`RenderBandFn` keys them:

    * ``tiles``: a root and its tiles, as :class:`ReduceStepFn` takes them;
    * ``tsne``: a 512 px block of ``tsne.jpg`` and its points (packed per mosaic block that
      made them, :func:`gridtsne.tile_workers.draw_block`; through the handoff where it is
      on, :class:`transforms.handoff.Handoff`), painted into ``(bx, by, JPEG,
      points whose top-left pixel lies in it)`` (output ``tsne``);
    * ``shards``: a 32 x 32 block of cells and its cell-index entries, written as one file,
      ``("shards", (1, images))`` (tally);
    * ``names``: a search prefix and its entries, written in chunks, ``("chunk", directory
      entry)`` each (tally).
    """

    def process(self, element, plan):
        (kind, key), values = element
        if kind == TILES:
            yield from super().process((key, values), plan)
        elif kind == TSNE:
            yield from self._put(plan, (key[0], key[1], [self.handoff.receive(v)
                                                         for v in values]),
                                 paint_tsne_block, 4)
        elif kind in (SHARDS, NAMES):
            work = cell_shard_work if kind == SHARDS else search_chunks_work
            if self._writes():  # the workers write the index files (or this thread, inline)
                yield from self._put(plan, (key, list(values)), work, 8)
            else:
                for entry in work(tile_job(plan, self.output, self.config, True), key, values):
                    yield TaggedOutput(TALLY, entry)
        else:
            raise ValueError(f"unknown kind {kind!r} of a band's output")

    def _outputs(self, done, job, work):
        if work is paint_tsne_block:
            return (TaggedOutput(TSNE, block) for block in done)
        if work in (cell_shard_work, search_chunks_work):
            return (TaggedOutput(TALLY, entry) for entries in done for entry in entries)
        return super()._outputs(done, job, work)


class RenderBandFn(_BlockFn):
    """Join one band of the mosaic and draw its blocks: the 4 x 4 top-level tiles of each and
    the two levels below them.

    Input: ``(band, [(kind, [(key, row), ...]), ...])``, the lists of rows routed to this band
    (:func:`_read_to_bands`), ``kind`` one of :data:`INPUTS`. Outputs: main, ``((kind, key),
    value)`` for :class:`FinishBandsFn`: each block root's place in the first reduction step
    (``tiles``, :class:`_BlockFn`), points for one block of ``tsne.jpg`` (``tsne``, through
    the handoff where it is on) and
    lists of entries of the cell and search indexes (``shards``, ``names``); ``tally``:
    ``("tiles", (level, tiles))``, ``("missing", uri)`` for each placeholder and ``("cells",
    n)``, the cells the band owns (:class:`RenderTally`).
    """

    work = staticmethod(draw_block)
    batch = 1  # a block is sixteen tiles' work

    def setup(self):
        super().setup()
        self.cells = Metrics.counter(NAMESPACE, "cells_drawn")
        self.placeholders = Metrics.counter(NAMESPACE, "placeholders")
        self.ms = _timer("top_block_ms")

    def process(self, element, plan):
        band, batches = element
        groups = {kind: [] for kind in INPUTS}
        for kind, batch in batches:
            groups[kind].append(self.handoff.receive(batch))
        bands = _bands(plan)
        cells, counts = join_band(band, bands, groups["layout"], groups["thumbs"],
                                  groups["labels"])
        for name, count in counts.items():
            Metrics.counter(NAMESPACE, name).inc(count)
        blocks, shards, names, owned = group_band(band, bands, cells)
        del cells
        for (bx, by), batch in blocks.items():
            yield from self._put(plan, (bx, by, batch))
        for key, batch in shards.items():
            yield (SHARDS, key), batch
        for key, batch in names.items():
            yield (NAMES, key), batch
        yield TaggedOutput(TALLY, ("cells", owned))

    def _keyed(self, kind, key, value):
        return (kind, key), value

    def _emit(self, block):
        faults.point("rendering")  # a block of top tiles is written
        self.cells.inc(block.owned)
        self.placeholders.inc(len(block.missing))
        self.ms.update(int(block.ms))
        for uri in block.missing:
            yield TaggedOutput(TALLY, ("missing", uri))
        for key, points in block.points.items():
            yield (TSNE, key), self.handoff.send(points)


class RenderTally(beam.CombineFn):
    """Everything the last steps check and summarise, gathered in one combine from
    ``(kind, value)`` pairs: ``tiles`` ``(level, n)`` written; ``cells`` owned by a band;
    ``missing``, a placeholder's URI (the first :data:`EXAMPLES` by URI are kept as
    examples); ``shards`` ``(cell-index files, images)``; ``chunk``, a search chunk's
    directory entry. Only small values: a combine's accumulators are encoded more than once
    (50 MB of pixels in them cost the in-memory runner a second)."""

    def create_accumulator(self):
        return {"tiles": {}, "cells": 0, "placeholders": 0, "examples": [], "shards": [0, 0],
                "chunks": []}

    def add_input(self, acc, element):
        kind, value = element
        if kind == "tiles":
            level, n = value
            acc["tiles"][level] = acc["tiles"].get(level, 0) + n
        elif kind == "cells":
            acc["cells"] += value
        elif kind == "missing":
            acc["placeholders"] += 1
            acc["examples"] = heapq.nsmallest(EXAMPLES, acc["examples"] + [value])
        elif kind == "shards":
            acc["shards"] = [acc["shards"][0] + value[0], acc["shards"][1] + value[1]]
        elif kind == "chunk":
            acc["chunks"].append(value)
        else:
            raise ValueError(f"unknown tally kind {kind!r}")
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            for level, n in acc["tiles"].items():
                out["tiles"][level] = out["tiles"].get(level, 0) + n
            out["cells"] += acc["cells"]
            out["placeholders"] += acc["placeholders"]
            out["examples"] = heapq.nsmallest(EXAMPLES, out["examples"] + acc["examples"])
            out["shards"] = [out["shards"][0] + acc["shards"][0],
                             out["shards"][1] + acc["shards"][1]]
            out["chunks"] += acc["chunks"]
        return out

    def extract_output(self, acc):
        return acc


def _bands(plan):
    return Bands.plan(plan.geometry, block_depth(plan.geometry))


def _routes(_, layout_url, plan, storage_options=None):
    return route_table(layout_url, _bands(plan), storage_options)


def _input_items(_, layout_url, vectors_url, labels, storage_options=None):
    """What the read step reads, one item each: ``(kind, source)``: every row group of the
    layout and of the vectors table, the labels CSV (``labels``: a URL or a
    :class:`gridtsne.labels.LabelsCsv`, if any) and the list of bands."""
    items = [("layout", part) for part in table_parts(layout_url, storage_options)]
    items += [("thumbs", part) for part in table_parts(vectors_url, storage_options)]
    if labels:
        items.append(("labels", labels))
    items.append(("band", None))
    return items


def _read_to_bands(item, plan, routes, handoff, storage_options=None):
    """One input item's rows, one list per band: ``(band, (kind, [(key, row), ...]))``.

    Layout rows go to the bands of their cell, vectors rows and labels to those their URI is
    routed to (rows of no band are counted: ``vectors_not_in_layout``,
    ``labels_not_in_layout``); the ``band`` item gives every band an empty entry. Lists of
    vectors rows (the thumbnails: nearly all the bytes) go through ``handoff``
    (:class:`transforms.handoff.Handoff`): where it is on, the runner carries a ref.
    """
    kind, source = item
    bands = _bands(plan)
    if kind == "layout":
        rows, _ = split_by_band(read_layout_part(source, storage_options),
                                lambda key, row: bands.bands_of_cell(row[1], row[2]))
    elif kind == "band":
        rows = [(band, []) for band in range(bands.count)]
    else:
        if kind == "thumbs":
            pairs, counter = read_thumbnail_part(source, storage_options), "vectors_not_in_layout"
        else:
            pairs, counter = read_labels(source, storage_options), "labels_not_in_layout"
        rows, unrouted = routes.split(pairs)
        if unrouted:
            Metrics.counter(NAMESPACE, counter).inc(unrouted)
    for band, batch in rows:
        yield band, (kind, handoff.send(batch) if kind == "thumbs" else batch)


def _write_site(_, handoff, *args):
    """:func:`gridtsne.render_outputs.write_site`, once every handed-off value was taken: a
    list of thumbnails left over was meant for a band that never ran, points for a block of
    ``tsne.jpg`` never painted."""
    left = handoff.drop()
    if left:
        raise RuntimeError(f"{left} handed-off thumbnail lists or tsne points were never "
                           f"taken: the runner never ran the stage they were meant for")
    return write_site(*args)


def _plan(_, layout_url, cfg):
    plan = plan_render(layout_url, cfg.cell, cfg.tile, cfg.fmt, cfg.overview, cfg.pad,
                       cfg.storage_options)
    progress_metrics.counter(NAMESPACE, "tiles_planned").inc(plan.geometry.tile_count())
    return plan


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
        handoff = Handoff(runs_in_this_process(pcoll.pipeline) if cfg.handoff is None
                          else cfg.handoff).drop_with(pcoll.pipeline)
        plan = start | "PlanRender" >> beam.Map(_plan, layout_url, cfg)
        plan_si = AsSingleton(plan)

        routes = AsSingleton(start | "RouteUris" >> beam.Map(_routes, layout_url, plan_si, opts))
        # One read step for every input, so the rows meet in one grouping with nothing in
        # between: a CoGroupByKey of several reads costs the in-memory runner a stage that
        # decodes and encodes every thumbnail once more. It is its own stage (the Reshuffle):
        # fused with Start, the routes it waits for (made from Start's element) would never
        # be ready.
        top = (start
               | "ListInputs" >> beam.FlatMap(_input_items, layout_url, vectors_url, cfg.labels,
                                              opts)
               | "SpreadInputs" >> beam.Reshuffle()
               | "ReadToBands" >> beam.FlatMap(_read_to_bands, plan_si, routes, handoff,
                                                opts)
               | "GroupRowsByBand" >> beam.GroupByKey()
               | "RenderBands" >> beam.ParDo(RenderBandFn(out, cfg, handoff), plan_si)
               .with_outputs(TALLY, main="handed_on"))
        finish = (top.handed_on
                  | "GroupBandOutputs" >> beam.GroupByKey()
                  | "FinishBands" >> beam.ParDo(FinishBandsFn(out, cfg, handoff), plan_si)
                  .with_outputs(TALLY, TSNE, main="parents"))
        tally = [top[TALLY], finish[TALLY]]
        parents = finish.parents
        for stage in range(2, self._stages(pcoll) + 1):
            reduce_fn = ReduceStepFn(out, cfg)
            lower = (parents
                     | f"GroupTilesStage{stage:02d}" >> beam.GroupByKey()
                     | f"ReduceTilesStage{stage:02d}" >> beam.ParDo(reduce_fn, plan_si)
                     .with_outputs(TALLY, main="parents"))
            tally.append(lower[TALLY])
            parents = lower.parents
        # Every count and small result in one combine: each combine of its own costs the
        # in-memory runner a stage or two. Never empty (every band tallies its cells).
        tally = AsSingleton(tally
                            | "FlattenTally" >> beam.Flatten()
                            | "Tally" >> beam.CombineGlobally(RenderTally()).without_defaults())
        overviews = start | "WriteOverviews" >> beam.Map(
            lambda _, *args: write_overviews(*args), out, cfg, plan_si, tally,
            AsList(finish[TSNE]))

        if cfg.projector:
            labels_url, max_points = cfg.labels, cfg.projector_max_points
            projector = start | "ExportProjector" >> beam.Map(
                lambda _: export_projector(vectors_url, storage.url_join(out, "projector"),
                                           labels_url, max_points=max_points,
                                           storage_options=opts))
        else:
            projector = start | "NoProjector" >> beam.Map(lambda _: None)

        return start | "WriteSite" >> beam.Map(
            _write_site, handoff, out, cfg, plan_si, tally, AsSingleton(overviews),
            AsSingleton(projector))
