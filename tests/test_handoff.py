"""The render's in-process handoff: thumbnails and tsne points that skip the in-memory
runner's coders, and only where every stage runs in this process."""
import gc
import logging
import multiprocessing

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.beam_runner import new_pipeline
from tests.render_tables import (real_photos, site_digests, thumbnail_jpeg,
                                 write_tables)
from transforms import render
from transforms.handoff import Handoff, Ref, kept, runs_in_this_process
from transforms.render import RenderConfig, RenderMosaic


def test_a_value_is_kept_until_taken_once_and_a_ref_from_elsewhere_is_refused():
    h = Handoff(True)
    value = [("key", (b"thumbnail", 96, 128, 5000))]
    before = kept()
    ref = h.send(value)
    assert isinstance(ref, Ref) and kept() == before + 1
    assert h.receive(ref) is value
    assert kept() == before
    with pytest.raises(RuntimeError, match="not in this process"):
        h.receive(ref)  # taken twice: an error, never an empty list of thumbnails
    with pytest.raises(RuntimeError, match="not in this process"):
        h.receive(Ref("0" * 32, ref.process, 7))  # a ref of another run
    off = Handoff(False)
    assert off.send(value) is value and off.receive(value) is value


def _send_in_a_child(handoff, upto):
    """In a fresh process: ``handoff`` sends values numbered 0..``upto``; the last ref."""
    for n in range(upto):
        handoff.send(("child's", n))
    return handoff.send(("child's", upto))


def test_a_ref_made_in_another_process_is_refused_even_where_its_number_is_kept():
    """Each process numbers its refs from 0: a stage run in another process than the one that
    sent (a worker process of the runner) must not take the value of the same number kept
    here, which would swap one band's thumbnails for another's without a word."""
    h = Handoff(True)
    mine = h.send(("parent's", 0))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        theirs = pool.apply(_send_in_a_child, (h, mine.number))
    assert (theirs.handoff, theirs.number) == (mine.handoff, mine.number)
    with pytest.raises(RuntimeError, match="another process"):
        h.receive(theirs)
    assert h.receive(mine) == ("parent's", 0)  # still here for its own ref


def test_drop_forgets_only_its_own_values():
    a, b = Handoff(True), Handoff(True)
    a.send(1), a.send(2)
    ref = b.send(3)
    assert a.drop() == 2 and a.drop() == 0
    assert b.receive(ref) == 3


def test_the_handoff_is_on_only_where_every_stage_runs_in_this_process():
    def pipeline(*flags):
        return beam.Pipeline(options=PipelineOptions(list(flags)))

    assert runs_in_this_process(pipeline())
    assert runs_in_this_process(pipeline("--direct_running_mode=in_memory"))
    assert not runs_in_this_process(pipeline("--direct_running_mode=multi_processing",
                                             "--direct_num_workers=2"))
    assert not runs_in_this_process(pipeline("--direct_running_mode=multi_threading"))
    assert not runs_in_this_process(pipeline("--runner=PortableRunner",
                                             "--job_endpoint=embed",
                                             "--environment_type=LOOPBACK"))
    # Every bundle replayed (a dry run first): a value can be taken once.
    assert not runs_in_this_process(pipeline("--direct_runner_bundle_repeat=1"))
    # The DirectRunner's first choice, Prism, told to run Python in worker processes.
    assert not runs_in_this_process(pipeline("--environment_type=PROCESS",
                                             "--environment_config={\"command\": \"x\"}"))
    # gridtsne's own DirectRunner pipelines: the FnApiRunner, in this process unless given
    # an environment of its own.
    assert runs_in_this_process(new_pipeline(PipelineOptions([])))
    assert not runs_in_this_process(new_pipeline(PipelineOptions([
        "--direct_running_mode=multi_processing"])))
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.environments import SubprocessSDKEnvironment
    elsewhere = FnApiRunner(default_environment=SubprocessSDKEnvironment.from_command_string(
        "python -m apache_beam.runners.worker.sdk_worker_main"))
    assert not runs_in_this_process(beam.Pipeline(runner=elsewhere))


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """30 real thumbnails and a broken one on a 6 x 6 grid, in two Parquet files."""
    photos = [thumbnail_jpeg(arr) for _, arr in sorted(real_photos().items())]
    records = [{"uri": f"/photos/{i:02d}.jpg", "thumbnail": photos[i % len(photos)]}
               for i in range(30)]
    records.append({"uri": "/photos/broken.jpg", "thumbnail": b"\xff\xd8 not really"})
    places = np.random.default_rng(3).permutation(36)
    cells = [(r["uri"], int(p) // 6, int(p) % 6) for r, p in zip(records, places)]
    return write_tables(str(tmp_path_factory.mktemp("tables")), records, cells, 6, 6)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_render_hands_off_thumbnails_and_points_and_writes_the_same_bytes(
        tmp_path, tables, monkeypatch, workers):
    """On the in-memory runner, with the handoff on (the default there), the thumbnails and
    tsne points go through it, every value sent is taken, and every file of the site is the
    same as with the handoff off (all through the runner)."""
    sent = []
    send = Handoff.send

    def counting_send(self, value):
        ref = send(self, value)
        if isinstance(ref, Ref):
            sent.append(type(value).__name__)
        return ref

    monkeypatch.setattr(Handoff, "send", counting_send)
    vectors, layout = tables
    before = kept()
    sites = {}
    for name, on in (("on", None), ("off", False)):
        p = new_pipeline(PipelineOptions([]))
        _ = p | RenderMosaic(vectors, layout, str(tmp_path / name),
                             RenderConfig(cell=48, tile=64, render_workers=workers,
                                          handoff=on))
        p.run().wait_until_finish()
        sites[name] = site_digests(str(tmp_path / name))
    assert "list" in sent and "tuple" in sent  # thumbnails (row lists) and packed points
    assert kept() == before  # every handed-off value was taken
    assert sites["on"] == sites["off"]
    assert len([f for f in sites["on"] if "mosaic_files/" in f]) > 10


def test_a_value_left_over_after_the_bands_fails_the_render():
    """A list handed to a band that never ran means lost images: the last step refuses to
    write ``site.json`` (and the values are freed)."""
    h = Handoff(True)
    h.send([("key", (b"thumbnail", 1, 1, 1))])
    with pytest.raises(RuntimeError, match="never taken"):
        render._write_site(None, h, "unused")
    assert h.drop() == 0


def test_drop_with_drops_the_values_left_when_the_owner_goes():
    class Owner:
        pass

    owner = Owner()
    h = Handoff(True).drop_with(owner)
    h.send(1), h.send(2)
    del owner
    gc.collect()
    assert h.drop() == 0


def test_a_failed_render_leaves_no_values_once_its_pipeline_is_gone(tmp_path, tables,
                                                                      monkeypatch, caplog):
    """A band that fails before taking its thumbnails (here: its first take fails) leaves
    them kept; they go with the pipeline, not with the process."""
    caplog.set_level(logging.CRITICAL)  # a log record of the failure holds its frames
    receive = Handoff.receive

    def failing_receive(self, value):
        if isinstance(value, Ref):
            raise OSError("injected: the band failed before taking its thumbnails")
        return receive(self, value)

    monkeypatch.setattr(Handoff, "receive", failing_receive)
    vectors, layout = tables
    before = kept()

    def run():
        p = new_pipeline(PipelineOptions([]))
        _ = p | RenderMosaic(vectors, layout, str(tmp_path / "out"),
                             RenderConfig(cell=48, tile=64))
        with pytest.raises(Exception, match="injected"):
            p.run().wait_until_finish()
        assert kept() > before  # left by the failed run while its pipeline lives

    run()
    gc.collect()
    assert kept() == before
