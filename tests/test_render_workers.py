"""Rendering on every core: the tile pool gives the very same site as one tile at a time."""
import os

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from gridtsne import tile_workers, tiles
from gridtsne.render_inputs import plan_render
from pipelines import render as render_pipeline
from tests.render_tables import (real_photos, site_digests, thumbnail_jpeg,
                                 write_tables)
from transforms.render import RenderConfig

ROWS, COLS = 8, 8


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """40 real thumbnails, an undecodable one and a layout row without a vectors row on an
    8 x 8 grid (23 holes)."""
    photos = [thumbnail_jpeg(arr) for _, arr in sorted(real_photos().items())]
    records = [{"uri": f"/photos/{i:02d}.jpg", "thumbnail": photos[i % len(photos)]}
               for i in range(40)]
    records.append({"uri": "/photos/broken.jpg", "thumbnail": b"\xff\xd8 not really"})
    places = np.random.default_rng(1).permutation(ROWS * COLS - 1)  # (7, 7) is no-vector's
    cells = [(r["uri"], int(p) // COLS, int(p) % COLS) for r, p in zip(records, places)]
    cells.append(("/photos/no-vector.jpg", 7, 7))
    folder = str(tmp_path_factory.mktemp("tables"))
    return write_tables(folder, records, cells, ROWS, COLS)


def _render(tables, output, workers, *flags):
    vectors, layout = tables
    return render_pipeline.run(["--vectors", vectors, "--layout", layout, "--output", output,
                                "--render_workers", str(workers), *flags])


@pytest.mark.parametrize("cell,tile,fmt", [(48, 64, "jpeg"), (64, 128, "webp")])
def test_pool_renders_the_same_bytes_as_one_tile_at_a_time(tmp_path, tables, cell, tile, fmt):
    """Every file of the site (tiles of every level, both overviews, indexes, page) is
    byte-identical whether one thread or a pool of processes draws it, also to memory://
    (where the workers hand the bytes back) and with cells that straddle tiles (48 px in
    64 px tiles)."""
    flags = ["--cell", str(cell), "--tile", str(tile), "--format", fmt]
    inline = _render(tables, str(tmp_path / "one"), 1, *flags)
    pooled = _render(tables, str(tmp_path / "pool"), 3, *flags)
    memory = f"memory://render-workers-{cell}"
    in_memory = _render(tables, memory, 2, *flags)
    assert inline == pooled == in_memory
    assert inline["placeholders"] == 2 and inline["images"] == 42
    one = site_digests(str(tmp_path / "one"))
    assert len([f for f in one if "mosaic_files/" in f]) == inline["tiles_total"]
    assert one == site_digests(str(tmp_path / "pool"))
    assert one == site_digests(memory)


def test_each_thumbnail_is_decoded_once_for_every_level(tmp_path, tables, monkeypatch):
    """Lower levels are made from the tiles above them, tsne.jpg from the decoded images the
    top level already has: a render decodes each thumbnail exactly once."""
    decoded = []
    real = tiles.decode_thumbnail

    def counting(data, cell):
        if data is not None:
            decoded.append(data)
        return real(data, cell)

    monkeypatch.setattr(tiles, "decode_thumbnail", counting)
    summary = _render(tables, str(tmp_path / "site"), 1, "--cell", "64", "--tile", "128")
    assert summary["levels"] == 10
    assert len(decoded) == 41  # 40 photos and the broken one; no-vector has no thumbnail


def test_render_workers_default_to_every_core_only_where_the_runner_does_not_spread(tmp_path):
    def workers(*flags):
        return render_pipeline.render_config_from_options(PipelineOptions(list(flags))) \
            .render_workers

    cores = tile_workers.available_cores()
    assert cores == len(os.sched_getaffinity(0))
    assert workers() == cores
    assert workers("--runner", "DirectRunner", "--direct_running_mode", "multi_threading") == cores
    assert workers("--direct_running_mode", "multi_processing", "--direct_num_workers", "2") == 1
    assert workers("--runner", "DataflowRunner") == 1
    assert workers("--runner", "FlinkRunner") == 1
    assert workers("--render_workers", "3", "--runner", "FlinkRunner") == 3
    for bad in ("0", "-2"):
        with pytest.raises(ValueError, match=f"render workers must be an integer >= 1, "
                                             f"got {bad}"):
            workers("--render_workers", bad)
    with pytest.raises(ValueError, match="render workers"):
        RenderConfig(render_workers=True)


def _job(tmp_path, rows=2, cols=2):
    layout = write_tables(str(tmp_path / "t"), [{"uri": "/a.jpg", "thumbnail": None}],
                          [("/a.jpg", 0, 0)], rows, cols)[1]
    plan = plan_render(layout, cell=64, tile=64)
    return tile_workers.TileJob(plan.geometry, plan.tsne, str(tmp_path / "site"))


def test_an_error_in_a_worker_is_raised_with_its_type_message_and_traceback(tmp_path):
    job = _job(tmp_path)
    pool = tile_workers.TilePool(2)
    try:
        queue = tile_workers.TileQueue(tile_workers.draw_top_tile, job, pool, 2)
        thumb = thumbnail_jpeg(next(iter(real_photos().values())))
        queue.put(0, 0, [("/a.jpg", 0, 0, thumb, 0.0, 0.0), ("/b.jpg", 0, 0, thumb, 1.0, 1.0)])
        with pytest.raises(ValueError, match=r"claimed by both '/a.jpg' and '/b.jpg'") as info:
            queue.drain()
        assert any("in tile worker" in note and "render_top_tile" in note
                   for note in info.value.__notes__)
        # The pool survives a task's error, and a worker's prints never reach the replies.
        assert pool.submit(print, "a worker printing to stdout").result() is None
        done = tile_workers.TileQueue(tile_workers.draw_top_tile, job, pool, 2)
        assert [t.tx for t in done.put(1, 0, []) + done.drain()] == [1]
        assert (tmp_path / "site" / job.geometry.tile_path(job.geometry.max_level, 1, 0)).exists()
    finally:
        pool.shutdown()


def test_a_worker_that_dies_fails_its_task_and_the_pool_clearly(tmp_path):
    pool = tile_workers.acquire_pool(2)
    try:
        with pytest.raises(RuntimeError, match=r"tile worker \d+ exited \(code 3\)"):
            pool.submit(os._exit, 3).result(timeout=60)
        with pytest.raises(RuntimeError, match="the tile worker pool is broken"):
            pool.submit(sum, [1, 2]).result(timeout=60)
        fresh = tile_workers.acquire_pool(2)  # a broken pool is never handed out again
        try:
            assert fresh is not pool and fresh.submit(sum, [1, 2]).result(timeout=60) == 3
        finally:
            tile_workers.release_pool(fresh)
    finally:
        tile_workers.release_pool(pool)
