"""Tile work on every core: the per-tile jobs of the pyramid and the process pool that runs them.

Each tile is independent: a top-level tile needs only the thumbnails of its cells, a tile of
a lower level only its (up to four) children, a piece of ``mosaic.jpg`` only one tile, a
block of ``tsne.jpg`` only its points. :func:`draw_block` does a block's whole work: its
4 x 4 top-level tiles (decode, draw, encode, write) and the two levels below them, from the
encoded tiles it holds; :func:`reduce_block` does one reduction step's (read the tiles of one
level below a root, halve, paste, encode and write each level down to the root); both return
what the pipeline passes on; :func:`mosaic_piece`, :func:`mosaic_strip` (a row of pieces)
and :func:`paint_tsne_block` do one piece of an overview;
:class:`TileQueue` runs them inline, or in batches on a shared pool of worker processes
(:func:`acquire_pool`), so one Beam worker process can keep every core of its machine busy.

Processes, not threads: most of a small tile's time is Python around Pillow (opening each
thumbnail, parsing its JPEG header, pasting), during which Pillow holds the GIL, so threads
barely scale (``benchmarks/render_scale.py`` measures both). Workers are fresh interpreters
(:class:`TilePool`). Where the output lives only in this process's memory (``memory://``) the
workers hand the encoded bytes back and the caller reads and writes them; anywhere else the
worker writes its own tiles, so no tile's pixels cross a process boundary twice.
"""
import atexit
import collections
import concurrent.futures
import dataclasses
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import traceback
import typing

import fsspec
from PIL import Image

from gridtsne import storage
from gridtsne.overview import (TSNE_OVERVIEW, TsneCanvas, encode_jpeg, fit_piece, pack_points,
                               paint_block, paste_pieces, stitch_blocks, unpack_points)
from gridtsne.tiles import (MosaicGeometry, assemble_parent, decode_image, encode_tile,
                            half_of_encoded, render_top_tile)

# Levels drawn inside one block (:func:`draw_block`): 4 x 4 top-level tiles, the 2 x 2 tiles
# below them and their root, in one work item, so the runner handles a sixteenth of the
# top-level items and none of the two levels below.
BLOCK_LEVELS = 2
# Once a level has at most this many tiles, one work item makes every level below it (reading
# them all back is cheaper than a runner stage per level).
FINAL_TILES = 64
# Tiles per task sent to a worker process: enough to make the hand-over (pickling, a pipe
# round trip) small next to the work, few enough that a stage of a few hundred tiles still
# spreads over many workers.
BATCH_TILES = 16
# Tasks sent ahead to each worker process: one running, one waiting in its pipe.
TASKS_AHEAD = 2
# Tasks in flight per worker process (sent or queued): keeps every worker busy while the
# caller emits results, and bounds how many finished tiles wait in memory.
TASKS_PER_WORKER = 3


def available_cores():
    """The CPU cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_workers(workers):
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"render workers must be an integer >= 1, got {workers!r}")
    return workers


def process_local(url):
    """True when ``url`` is storage that another process cannot see (``memory://``)."""
    return any(fsspec.core.split_protocol(link)[0] == "memory" for link in str(url).split("::"))


@dataclasses.dataclass(frozen=True)
class TileJob:
    """What every tile of one render shares; small, so it travels with each task.

    ``write``: whether the work items (:func:`draw_top_tile`, :func:`draw_block`,
    :func:`reduce_block`) read and write tiles themselves (False: they take the tiles' bytes
    and return the bytes of those they make).
    """

    geometry: MosaicGeometry
    tsne: TsneCanvas
    output: str
    quality: int = 85
    storage_options: typing.Optional[dict] = None
    write: bool = True

    def tile_url(self, level, tx, ty):
        return storage.url_join(self.output, self.geometry.tile_path(level, tx, ty))


@dataclasses.dataclass
class TileDone:
    """A finished top-level tile (:func:`draw_top_tile`, the block's work one tile at a time).

    ``data``: the encoded tile when the caller must write it (``TileJob.write`` False), else
    None; ``parent``: where it goes in the first reduction step (:func:`step_parent`);
    ``owned``: cells counted by this tile; ``missing``: URIs of owned cells drawn as
    placeholders; ``points``: ``{tsne.jpg block: points}``, the points ``((row, col), px, py,
    width, height, RGB bytes)`` packed (:func:`gridtsne.overview.pack_points`); ``ms``: the
    tile's time.
    """

    level: int
    tx: int
    ty: int
    data: typing.Optional[bytes] = None
    parent: typing.Optional[tuple] = None
    owned: int = 0
    missing: list = dataclasses.field(default_factory=list)
    points: dict = dataclasses.field(default_factory=dict)
    ms: float = 0.0


@dataclasses.dataclass
class BlockDone:
    """A finished block (:func:`draw_block`) or reduction step (:func:`reduce_block`).

    ``level, tx, ty``: the block's root tile; ``parent``: where the root goes in the next
    reduction step (:func:`step_parent`; None at level 0); ``written``: ``{level: tiles}``;
    ``tiles``: ``(level, tx, ty, bytes)`` the caller must write (``TileJob.write`` False),
    else empty; ``owned``, ``missing``, ``points``, ``ms``: as :class:`TileDone`'s, for all
    its top-level tiles together.
    """

    level: int
    tx: int
    ty: int
    parent: typing.Optional[tuple] = None
    written: dict = dataclasses.field(default_factory=dict)
    tiles: list = dataclasses.field(default_factory=list)
    owned: int = 0
    missing: list = dataclasses.field(default_factory=list)
    points: dict = dataclasses.field(default_factory=dict)
    ms: float = 0.0

    def store(self, job, level, tx, ty, data):
        data = _keep(job, level, tx, ty, data)
        if data is not None:
            self.tiles.append((level, tx, ty, data))
        self.written[level] = self.written.get(level, 0) + 1


def step_depth(geometry, level):
    """Levels one reduction step makes from the tiles of ``level``: every level below it once
    ``level`` has at most :data:`FINAL_TILES` tiles, else :data:`BLOCK_LEVELS` (or fewer)."""
    nx, ny = geometry.tile_counts(level)
    return level if nx * ny <= FINAL_TILES else min(BLOCK_LEVELS, level)


def reduction_steps(geometry):
    """``[(level, depth), ...]``: the reduction steps below the blocks, one runner stage each."""
    steps, level = [], geometry.max_level - block_depth(geometry)
    while level > 0:
        steps.append((level, step_depth(geometry, level)))
        level -= steps[-1][1]
    return steps


def step_parent(geometry, level, tx, ty):
    """Where tile ``(tx, ty)`` of ``level`` goes: ``((root level, rx, ry), (level, tx, ty))``,
    the root of the reduction step that starts at ``level`` and the tile; None at level 0."""
    if level == 0:
        return None
    depth = step_depth(geometry, level)
    return (level - depth, tx >> depth, ty >> depth), (level, tx, ty)


def subtree(geometry, root, rx, ry, level):
    """The tiles ``(tx, ty)`` of ``level`` below tile ``(rx, ry)`` of level ``root``."""
    span = 1 << (level - root)
    nx, ny = geometry.tile_counts(level)
    return [(tx, ty) for ty in range(ry * span, min((ry + 1) * span, ny))
            for tx in range(rx * span, min((rx + 1) * span, nx))]


def _top_tile(job, tx, ty, cells):
    """Draw and encode full-resolution tile ``(tx, ty)``: ``(bytes, owned, missing, points)``."""
    g = job.geometry
    top = render_top_tile(g, tx, ty, [(c[0], c[1], c[2], c[3]) for c in cells])
    data = encode_tile(top.image, g.fmt, job.quality)
    points = {}
    for _, row, col, _, x, y in cells:
        source = top.decoded.get((row, col))
        if source is None:
            continue  # not owned by this tile, or a placeholder: not drawn in tsne.jpg
        small = job.tsne.point_image(source)
        px, py = job.tsne.position(x, y)
        point = ((row, col), px, py, small.width, small.height, small.tobytes())
        for block in job.tsne.blocks(px, py, small.width, small.height):
            points.setdefault(block, []).append(point)
    return data, len(top.decoded), top.missing, points


def _reduced(job, level, tx, ty, children):
    """Tile ``(tx, ty)`` of ``level``, encoded, from ``(dx, dy, encoded child)``."""
    g = job.geometry
    halves = [(dx, dy, half_of_encoded(data)) for dx, dy, data in children]
    return encode_tile(assemble_parent(g, level, tx, ty, halves), g.fmt, job.quality)


def _keep(job, level, tx, ty, data):
    """Write a finished tile (``job.write``) and return None, or return its bytes."""
    if not job.write:
        return data
    storage.write_bytes(job.tile_url(level, tx, ty), data, job.storage_options)
    return None


def draw_top_tile(job, tx, ty, cells):
    """Draw, encode and (if ``job.write``) write full-resolution tile ``(tx, ty)``.

    ``cells``: ``(uri, row, col, thumbnail bytes or None, x, y)`` of the cells it covers,
    ``x, y`` their t-SNE coordinates. Each thumbnail is decoded once: the same decoded image
    gives the cell's pixels here and its point in ``tsne.jpg``; lower levels are made from
    this tile, never from the thumbnails again.
    """
    start = time.perf_counter()
    g = job.geometry
    data, owned, missing, points = _top_tile(job, tx, ty, cells)
    return TileDone(g.max_level, tx, ty, _keep(job, g.max_level, tx, ty, data),
                    step_parent(g, g.max_level, tx, ty), owned=owned, missing=missing,
                    points={key: pack_points(p) for key, p in points.items()},
                    ms=(time.perf_counter() - start) * 1000)


def block_depth(geometry):
    """Levels below the top drawn inside one block: :data:`BLOCK_LEVELS`, fewer for a small
    pyramid. A block is the tile ``(bx, by)`` of level ``max_level - depth`` and every tile
    above it: ``2**depth`` x ``2**depth`` top-level tiles."""
    return min(BLOCK_LEVELS, geometry.max_level)


def draw_block(job, bx, by, cells):
    """Draw block ``(bx, by)``: its top-level tiles, then each level below down to its root.

    ``cells``: as :func:`draw_top_tile` takes them, those that overlap the block (a cell that
    straddles two blocks is given to both; the tile holding its top-left pixel counts it).
    Top tiles are drawn as :func:`draw_top_tile` draws them; each lower tile is made from its
    children's encoded bytes, held in memory, exactly as :func:`reduce_block` makes it from
    tiles read back. Returns a :class:`BlockDone`: its root goes to the first reduction step.
    """
    start = time.perf_counter()
    g = job.geometry
    depth = block_depth(g)
    top, root = g.max_level, g.max_level - depth
    per_tile = {}
    for cell in cells:
        mine = [t for t in g.tiles_of_cell(cell[1], cell[2])
                if (t[0] >> depth, t[1] >> depth) == (bx, by)]
        if not mine:
            raise ValueError(f"cell (row={cell[1]}, col={cell[2]}) of {cell[0]!r} is not in "
                             f"block {(bx, by)!r}")
        for tile in mine:
            per_tile.setdefault(tile, []).append(cell)
    done = BlockDone(root, bx, by, parent=step_parent(g, root, bx, by))
    encoded = {}
    for tx, ty in subtree(g, root, bx, by, top):
        data, owned, missing, points = _top_tile(job, tx, ty, per_tile.get((tx, ty), []))
        encoded[(tx, ty)] = data
        done.owned += owned
        done.missing += missing
        for block, pts in points.items():
            done.points.setdefault(block, []).extend(pts)
        done.store(job, top, tx, ty, data)
    done.points = {key: pack_points(p) for key, p in done.points.items()}
    _reduce_below(job, done, encoded, top)
    done.ms = (time.perf_counter() - start) * 1000
    return done


def _reduce_below(job, done, encoded, level):
    """Make every tile from ``level - 1`` down to ``done``'s root from ``encoded``, the tiles
    ``{(tx, ty): bytes}`` of ``level`` below the root, and store them in ``done``."""
    g = job.geometry
    for level in range(level - 1, done.level - 1, -1):
        below, encoded = encoded, {}
        for tx, ty in subtree(g, done.level, done.tx, done.ty, level):
            data = _reduced(job, level, tx, ty, [(dx, dy, below[(2 * tx + dx, 2 * ty + dy)])
                                                 for dx, dy in g.children(level, tx, ty)])
            encoded[(tx, ty)] = data
            done.store(job, level, tx, ty, data)


def reduce_block(job, root, rx, ry, level, children):
    """Make tile ``(rx, ry)`` of level ``root`` and every tile between it and ``level`` from
    the tiles of ``level`` below it (one reduction step, :func:`reduction_steps`).

    ``children``: ``(tx, ty, encoded tile or None)`` for every tile of ``level`` below the
    root; None means read it from the output (``job.write``). Each is decoded once, straight
    at half size where JPEG allows; each tile made is written (or returned) as
    :func:`draw_block` does.
    """
    start = time.perf_counter()
    encoded = {(tx, ty): storage.read_bytes(job.tile_url(level, tx, ty), job.storage_options)
               if data is None else data for tx, ty, data in children}
    done = BlockDone(root, rx, ry, parent=step_parent(job.geometry, root, rx, ry))
    _reduce_below(job, done, encoded, level)
    done.ms = (time.perf_counter() - start) * 1000
    return done


def mosaic_piece(job, level, tx, ty, box):
    """``(box, image)``: tile ``(tx, ty)`` of ``level``, read back from the output, scaled to
    its ``box`` of ``mosaic.jpg`` (:func:`gridtsne.overview.mosaic_pieces`)."""
    data = storage.read_bytes(job.tile_url(level, tx, ty), job.storage_options)
    return box, fit_piece(job.geometry, level, tx, ty, box, decode_image(data))


def mosaic_strip(job, level, pieces):
    """``(box, RGB bytes)``: one row of ``mosaic.jpg``'s ``pieces`` (``(tx, ty, box)`` tiles of
    ``level``, :func:`gridtsne.overview.mosaic_pieces`), each tile read back from the output,
    scaled to its box and pasted into the strip that spans their boxes (they are one tile row,
    so it holds nothing else)."""
    x0, y0 = min(p[2][0] for p in pieces), min(p[2][1] for p in pieces)
    x1, y1 = max(p[2][2] for p in pieces), max(p[2][3] for p in pieces)
    placed = []
    for tx, ty, box in pieces:
        _, img = mosaic_piece(job, level, tx, ty, box)
        placed.append(((box[0] - x0, box[1] - y0), img))
    return (x0, y0, x1, y1), paste_pieces((x1 - x0, y1 - y0), placed).tobytes()


def paint_tsne_block(job, bx, by, groups):
    """``(bx, by, JPEG, points owned)``: block ``(bx, by)`` of ``tsne.jpg`` painted from its
    points, ``groups`` of them packed as :func:`draw_block` makes them; a point is owned by the
    block holding its top-left pixel."""
    decoded = [(order, px, py, Image.frombytes("RGB", (w, h), raw))
               for packed in groups for order, px, py, w, h, raw in unpack_points(packed)]
    block = paint_block(job.tsne, bx, by, decoded)
    x0, y0, x1, y1 = job.tsne.block_box(bx, by)
    owned = sum(1 for _, px, py, _ in decoded if x0 <= px < x1 and y0 <= py < y1)
    return bx, by, encode_jpeg(block, quality=95), owned


def write_tsne_overview(job, blocks):
    """Stitch ``tsne.jpg`` from its painted ``blocks`` (:func:`paint_tsne_block`'s results),
    encode and write it; its summary for ``site.json``."""
    img = stitch_blocks(job.tsne, [(bx, by, decode_image(data)) for bx, by, data, _ in blocks])
    storage.write_bytes(storage.url_join(job.output, TSNE_OVERVIEW), encode_jpeg(img),
                        job.storage_options)
    return {"file": TSNE_OVERVIEW, "width": img.width, "height": img.height,
            "point": job.tsne.point, "points": sum(b[3] for b in blocks)}


def run_batch(fn, job, items):
    """``[fn(job, *item) for item in items]``: one task of a worker process."""
    return [fn(job, *item) for item in items]


# ---- the pool ---------------------------------------------------------------------------------

class TilePool:
    """``workers`` fresh Python processes running :func:`run_batch` tasks, fed from one queue.

    Each worker is ``python -m gridtsne.tile_workers``, talking pickles over its stdin and
    stdout: unlike :mod:`multiprocessing`'s spawn, it never imports the caller's ``__main__``
    (a script without an ``if __name__ == "__main__"`` guard would render again in every
    worker; ``python -m pipelines.run`` would import Beam and torch there), and unlike fork it
    copies none of the caller's threads or GPU state. ``submit`` returns a
    :class:`concurrent.futures.Future`; a worker that dies fails its tasks and the pool.

    Each worker has a writer and a reader thread here and up to ``TASKS_AHEAD`` tasks sent:
    the next task already waits in its pipe when one finishes, so a worker never idles while
    the caller's busy thread holds the GIL.
    """

    def __init__(self, workers):
        self.workers = check_workers(workers)
        self.tasks = queue.SimpleQueue()
        self.broken = None
        self.closing = False
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        self.procs = [subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, env=env)
                      for _ in range(workers)]
        self.threads = []
        for proc in self.procs:
            sent, slots = collections.deque(), threading.Semaphore(TASKS_AHEAD)
            for target in (self._write, self._read):
                self.threads.append(threading.Thread(target=target, args=(proc, sent, slots),
                                                     daemon=True, name=f"tile-worker-{proc.pid}"))
        for thread in self.threads:
            thread.start()

    def submit(self, fn, *args):
        if self.broken:
            raise RuntimeError(f"the tile worker pool is broken: {self.broken}")
        future = concurrent.futures.Future()
        self.tasks.put((future, fn, args))
        return future

    def _write(self, proc, sent, slots):
        while True:
            slots.acquire()
            task = self.tasks.get()
            if task is None:
                break
            future, fn, args = task
            if self.broken:
                future.set_exception(RuntimeError(f"the tile worker pool is broken: "
                                                  f"{self.broken}"))
                break
            if not future.set_running_or_notify_cancel():
                slots.release()
                continue
            sent.append(future)
            try:
                pickle.dump((fn, args), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                proc.stdin.flush()
            except OSError:
                break  # the worker is gone: its reader fails what was sent
        try:
            proc.stdin.close()
        except OSError:
            pass

    def _read(self, proc, sent, slots):
        while True:
            try:
                ok, value = pickle.load(proc.stdout)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                if not sent and self.closing:
                    return  # shut down with nothing outstanding
                try:
                    code = proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    code = None
                self.broken = (f"tile worker {proc.pid} exited (code {code}) while running "
                               f"a task: {exc!r}")
                while sent:
                    sent.popleft().set_exception(RuntimeError(self.broken))
                self._fail_queued()
                slots.release()  # lets the writer see the pool is broken and stop
                return
            future = sent.popleft()
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
            slots.release()

    def _fail_queued(self):
        while True:
            try:
                task = self.tasks.get_nowait()
            except queue.Empty:
                return
            if task is None:
                self.tasks.put(None)  # keep the shutdown sentinel for a writer
                return
            task[0].set_exception(RuntimeError(f"the tile worker pool is broken: "
                                               f"{self.broken}"))

    def shutdown(self):
        """Let the workers finish what they were sent, then end them."""
        self.closing = True
        for _ in self.procs:
            self.tasks.put(None)
        for thread in self.threads:
            thread.join()
        for proc in self.procs:
            proc.wait()
            proc.stdout.close()


def _serve(stdin, stdout):
    """A worker's loop: ``(fn, args)`` in, ``(True, result)`` or ``(False, exception)`` out."""
    while True:
        try:
            fn, args = pickle.load(stdin)
        except EOFError:
            return
        try:
            reply = (True, fn(*args))
        except Exception as exc:  # handed to the caller, raised where it waits for the result
            exc.add_note("in tile worker %d:\n%s" % (os.getpid(), traceback.format_exc()))
            reply = (False, exc)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            data = pickle.dumps((False, RuntimeError(f"unpicklable result: {exc!r}")))
        stdout.write(data)
        stdout.flush()


_pools = {}  # workers -> [pool, users]
_pools_lock = threading.Lock()


def acquire_pool(workers):
    """A pool of ``workers`` processes shared by every caller in this process (None for 1).

    Every stage of the pyramid (and every DoFn instance a runner makes) shares one pool;
    release it with :func:`release_pool`, which shuts it down when its last user is done.
    """
    if check_workers(workers) == 1:
        return None
    with _pools_lock:
        entry = _pools.get(workers)
        if entry is None or entry[0].broken:
            entry = _pools[workers] = [TilePool(workers), 0]
        entry[1] += 1
        return entry[0]


def release_pool(pool):
    if pool is None:
        return
    with _pools_lock:
        for workers, entry in list(_pools.items()):
            if entry[0] is pool:
                entry[1] -= 1
                if entry[1] > 0:
                    return
                del _pools[workers]
                break
    pool.shutdown()


@atexit.register
def _shutdown_pools():
    with _pools_lock:
        entries = list(_pools.values())
        _pools.clear()
    for pool, _ in entries:
        pool.shutdown()


class TileQueue:
    """Tiles in, ``fn(job, *tile)`` out: inline without a pool, in batches of ``batch`` items
    on one with a pool (one item per task for blocks, whose work is a tile's times sixteen).

    ``put`` and ``drain`` return the results finished so far (in no particular order with a
    pool); every put tile's result comes out of exactly one of them, and an error in a tile's
    work is raised from the call that would have returned it.
    """

    def __init__(self, fn, job, pool=None, workers=1, batch=BATCH_TILES):
        self.fn, self.job, self.pool, self.size = fn, job, pool, batch
        self.limit = TASKS_PER_WORKER * max(1, workers)
        self.batch = []
        self.pending = collections.deque()

    def put(self, *item):
        if self.pool is None:
            return [self.fn(self.job, *item)]
        self.batch.append(item)
        if len(self.batch) >= self.size:
            self._submit()
        done = []
        while self.pending and (len(self.pending) > self.limit or self.pending[0].done()):
            done += self.pending.popleft().result()
        return done

    def drain(self):
        if self.batch:
            self._submit()
        done = []
        while self.pending:
            done += self.pending.popleft().result()
        return done

    def _submit(self):
        self.pending.append(self.pool.submit(run_batch, self.fn, self.job, self.batch))
        self.batch = []


if __name__ == "__main__":
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the replies
    sys.stdout = sys.stderr
    _serve(sys.stdin.buffer, replies)
