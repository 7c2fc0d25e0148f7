"""TestPipeline tests of the embedding transforms, with a tiny real CNN."""
import os

import apache_beam as beam
import fsspec
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to, is_not_empty

from gridtsne import schema, storage
from gridtsne.decode import DecodeConfig
from gridtsne.listing import FileInfo, expand_pattern
from tests import image_corpus as corpus
from transforms.embed import EmbedConfig, EmbedImages, ReadAndDecodeFn
from transforms.listing import ListFiles
from transforms.write import WriteTable, beam_can_write

TINY = "tests.tiny_model:TINY"
CONFIG = EmbedConfig(model=TINY, device="cpu", batch_size=4,
                     decode=DecodeConfig(input_size=32, thumbnail_size=32))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    counts = corpus.write_mixed_folder(str(folder))
    return folder, counts


def _basenames(rows):
    return sorted(os.path.basename(r["uri"]) for r in rows)


BAD = ["bomb.png", "empty.jpg", "text.jpg", "truncated.jpg"]


def test_list_files_reports_patterns_that_fail_or_match_nothing(mixed):
    folder, (good, bad, other) = mixed
    with BeamTestPipeline() as p:
        files, errors = p | ListFiles([str(folder), str(folder / "*.nothing"),
                                       str(folder / "missing.jpg")])
        assert_that(files | beam.combiners.Count.Globally(), equal_to([good + bad + other]),
                    label="CountFiles")
        assert_that(errors | beam.Map(lambda r: (os.path.basename(r["uri"]), r["stage"],
                                                 r["error_type"])),
                    equal_to([("*.nothing", "list", "NoMatch"),
                              ("missing.jpg", "list", "FileNotFoundError")]),
                    label="CheckErrors")


def test_list_files_gives_a_file_matched_by_two_inputs_once(mixed):
    folder, (good, bad, other) = mixed
    with BeamTestPipeline() as p:
        files, errors = p | ListFiles([str(folder), str(folder / "*.jpg"),
                                       str(folder / "coffee.png")])
        uris = files | beam.Map(lambda f: f.uri)
        assert_that(uris | "Count" >> beam.combiners.Count.Globally(),
                    equal_to([good + bad + other]), label="CountFiles")
        assert_that(uris | "CountDistinct" >> beam.Distinct()
                    | "CountUnique" >> beam.combiners.Count.Globally(),
                    equal_to([good + bad + other]), label="Unique")
        # The explicitly named file keeps its flag (a named non-image must reach errors/).
        assert_that(files | beam.Filter(lambda f: f.explicit) | beam.Map(
            lambda f: os.path.basename(f.uri)), equal_to(["coffee.png"]), label="Explicit")


@pytest.mark.parametrize("threads", [1, 3])
def test_read_and_decode_tags_every_bad_image_and_skips_other_files(mixed, threads):
    folder, (good, bad, other) = mixed
    infos = list(expand_pattern(str(folder)))
    with BeamTestPipeline() as p:
        decoded, errors = (p | beam.Create(infos) | beam.ParDo(
            ReadAndDecodeFn(CONFIG.decode, threads=threads, in_flight=2))
            .with_outputs("errors", main="decoded"))
        assert_that(decoded | beam.Map(lambda kv: kv[1].shape) | beam.Distinct(),
                    equal_to([(32, 32, 3)]), label="Shapes")
        assert_that(decoded | beam.combiners.Count.Globally(), equal_to([good]),
                    label="CountDecoded")
        assert_that(errors | beam.combiners.ToList() | beam.Map(_basenames), equal_to([BAD]),
                    label="ErrorUris")


def _check_vectors(rows):
    assert rows, "no vectors"
    for r in rows:
        v = np.asarray(r["vector"])
        assert v.shape == (16,) and v.dtype == np.float32
        assert abs(np.linalg.norm(v) - 1.0) < 1e-4
        assert r["thumbnail"][:2] == b"\xff\xd8" and len(r["sha256"]) == 64
        assert r["width"] > 0 and r["height"] > 0 and r["bytes"] > 0


def test_embed_images_gives_one_row_per_image(mixed):
    folder, (good, bad, other) = mixed
    infos = list(expand_pattern(str(folder)))
    with BeamTestPipeline() as p:
        vectors, errors = p | beam.Create(infos) | EmbedImages(CONFIG)
        assert_that(vectors | "VectorList" >> beam.combiners.ToList(), _check_vectors_matcher(good),
                    label="Vectors")
        assert_that(errors | "ErrorList" >> beam.combiners.ToList() | beam.Map(_basenames),
                    equal_to([BAD]), label="Errors")


def _check_vectors_matcher(expected_count):
    def check(lists):
        (rows,) = lists
        assert len(rows) == expected_count, len(rows)
        _check_vectors(rows)
        names = _basenames(rows)
        assert "Café photo ü.jpg" in names and "no_extension" in names
    return check


@pytest.mark.parametrize("decoder", ["pillow", "batched"])
def test_failed_inference_fails_the_bundle_not_the_images(mixed, decoder):
    """A forward pass that fails is the machine's problem: the bundle (here the pipeline)
    fails, so the runner retries it; the images are never recorded as bad."""
    folder, (good, bad, other) = mixed
    infos = [i for i in expand_pattern(str(folder)) if i.uri.endswith((".png", ".gif"))]
    config = EmbedConfig(model="tests.tiny_model:FAILING", device="cpu", batch_size=2,
                         decode=CONFIG.decode, decoder=decoder, share_model=False)
    with pytest.raises(Exception, match="simulated inference failure"):
        with BeamTestPipeline() as p:
            p | beam.Create(infos) | EmbedImages(config)


def test_write_table_through_fsspec_for_urls_beam_cannot_write():
    assert beam_can_write("/tmp/x") and beam_can_write("s3://b/x") and beam_can_write("gs://b/x")
    assert not beam_can_write("memory://x") and not beam_can_write("zip://a::/tmp/b.zip")
    # Options Beam's file systems would not see: the fsspec writer carries them.
    assert not beam_can_write("s3://b/x", {"s3": {"endpoint_url": "http://127.0.0.1:9"}})
    assert beam_can_write("s3://b/x", {"gs": {"project": "p"}})
    rows = [{"uri": f"u{i}", "stage": "decode", "error_type": "E", "message": "m"}
            for i in range(5)]
    with BeamTestPipeline() as p:
        written = (p | "Rows" >> beam.Create(rows)
                   | "Write" >> WriteTable("memory://wt-test/errors/part", schema.ERRORS_SCHEMA))
        empty = (p | "NoRows" >> beam.Create([]) | "WriteEmpty" >> WriteTable(
            "memory://wt-test/empty/part", schema.ERRORS_SCHEMA))
        assert_that(written, is_not_empty(), label="Written")
        assert_that(empty, equal_to(["memory://wt-test/empty/part-00000-of-00001.parquet"]),
                    label="Empty")
    table = storage.read_parquet("memory://wt-test/errors")
    assert sorted(table.column("uri").to_pylist()) == [f"u{i}" for i in range(5)]
    assert table.schema.equals(schema.ERRORS_SCHEMA)
    assert storage.read_parquet("memory://wt-test/empty").num_rows == 0
    fs = fsspec.filesystem("memory")
    assert not [p for p in fs.find("/wt-test") if ".temp-" in p]  # temporary parts are gone
    fs.rm("/wt-test", recursive=True)


@pytest.mark.parametrize("share", [False, True])
def test_batch_embed_teardown_releases_the_embedder(mixed, share):
    """A torn-down DoFn lets go of its model: a private embedder is closed; the machine's
    shared one loses this process's reference, so it is freed once no process holds one
    (in one process, multi_process_shared serves it from this process's own registry)."""
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.multi_process_shared import _process_level_singleton_manager
    from apache_beam.utils.timestamp import Timestamp

    from gridtsne.listing import FileInfo
    from transforms.embed import BatchEmbedFn

    cfg = EmbedConfig(model="tests.tiny_model:TINY", device="cpu", decoder="batched",
                      share_model=share, decode=DecodeConfig(input_size=32), batch_size=2)
    fn = BatchEmbedFn(cfg)
    fn.setup()
    embedder = fn._embedder
    entry = _process_level_singleton_manager.entries.get(fn._share_tag) if share else None
    if share:
        assert entry.refcount == 1 and entry.initialied
    fn.start_bundle()
    path = os.path.join(str(mixed[0]), "chelsea.jpg")
    rows = list(fn.process([FileInfo(path, os.path.getsize(path), None, explicit=True)],
                           timestamp=Timestamp(0), window=GlobalWindow()))
    rows += list(fn.finish_bundle())
    assert len(rows) == 1
    fn.teardown()
    assert fn._embedder is None and fn._pool is None
    if share:
        assert entry.refcount == 0 and not entry.initialied  # the model is gone
    else:
        assert embedder.model is None and embedder._pool._shutdown


def test_a_worker_unpickles_the_batched_step_without_importing_torch(tmp_path):
    """A multi-processing worker that only reads files and sends their bytes to the machine's
    shared model never imports torch (about 1.2 CPU-s per process): the step as Beam pickles it
    is loaded in a fresh interpreter, as a worker loads it, and torch must still be absent."""
    from apache_beam.internal import pickler

    from tests.fresh_python import run_python

    from transforms.embed import BatchEmbedFn

    fn = BatchEmbedFn(EmbedConfig(model="tests.tiny_model:TINY", device="cpu",
                                  decoder="batched", decode=DecodeConfig(input_size=32)))
    path = tmp_path / "step.pickle"
    path.write_bytes(pickler.dumps(fn))
    code = ("import sys\n"
            "from apache_beam.internal import pickler\n"
            f"fn = pickler.loads(open({str(path)!r}, 'rb').read())\n"
            "assert type(fn).__name__ == 'BatchEmbedFn', fn\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'timm', 'scipy') if m in sys.modules))\n")
    out = run_python(code, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
