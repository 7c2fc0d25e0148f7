"""Classifying images on a re-run: only unchanged fingerprints are carried over."""
import datetime as dt

import pytest

from gridtsne import reindex

T = dt.datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)


def test_fingerprint_is_integers_only():
    us = 1_777_636_800_123_456
    assert reindex.fingerprint(10, us) == (10, us)
    assert reindex.fingerprint(10, None) == (10, None)
    assert reindex.fingerprint(10, us) != reindex.fingerprint(10, us + 1)
    with pytest.raises(TypeError, match="mtime_us"):
        reindex.fingerprint(10, us / 1e6)  # float seconds are no fingerprint
    with pytest.raises(TypeError, match="mtime_us"):
        reindex.fingerprint(10, T)


def test_listed_file_and_its_row_read_back_have_the_same_fingerprint(tmp_path):
    """What ClassifyFiles compares: a listed FileInfo and the vectors/ row written for it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gridtsne import schema
    from gridtsne.ingest import ImageRecord
    from gridtsne.listing import FileInfo
    from gridtsne.rows import vector_row

    infos = [FileInfo("s3://b/x.jpg", 1234, 1_700_000_000_123_456),
             FileInfo("s3://b/old.jpg", 5, -86_400_000_001),  # before 1970
             FileInfo("s3://b/y.jpg", 99, None)]
    rows = [vector_row(ImageRecord(i.uri, "0" * 64, i.size, i.mtime_us, 4, 3, b""), [0.0, 1.0])
            for i in infos]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.vectors_schema(2)),
                   tmp_path / "v.parquet")
    back = pq.read_table(tmp_path / "v.parquet").to_pylist()
    assert [reindex.row_fingerprint(r) for r in back] == \
        [reindex.file_fingerprint(i) for i in infos]
    assert [reindex.classify(reindex.file_fingerprint(i), reindex.row_fingerprint(r))
            for i, r in zip(infos, back)] == [reindex.UNCHANGED, reindex.UNCHANGED,
                                              reindex.CHANGED]


def test_one_reindex_mechanism(tmp_path):
    """ClassifyFiles is the only re-index path: in the whole job, EmbedImages reads exactly
    its ``to_embed`` output and the written vectors are exactly the embedded rows plus its
    ``carried`` rows; and it sends each file where its fingerprint says."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    import transforms.listing
    from gridtsne.listing import FileInfo
    from pipelines import run as job
    from transforms.reindex import CARRIED, FATES, TO_EMBED, ClassifyFiles

    assert not hasattr(transforms.listing, "SkipKnownFiles")  # the old key-based skip
    options = PipelineOptions(["--input", str(tmp_path), "--output", str(tmp_path / "map"),
                               "--model", "tests.tiny_model:TINY"])
    p = beam.Pipeline(options=options)
    job.build_pipeline(p, job.job_from_options(options))
    producer, inputs = {}, {}

    class Visit(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            self.visit_transform(node)

        def visit_transform(self, node):
            inputs[node.full_label] = list(node.inputs)
            for tag, pc in node.outputs.items():
                producer.setdefault(pc, (node.full_label, tag))  # the outermost transform

    p.visit(Visit())
    assert [producer[pc] for pc in inputs["EmbedImages"]] == [("ClassifyFiles", TO_EMBED)]
    merged = sorted(producer[pc] for pc in inputs["MergeRows"])
    assert [label for label, _ in merged] == ["ClassifyFiles", "EmbedImages"], merged
    assert merged[0][1] == CARRIED
    assert [producer[pc][0] for pc in inputs["WriteVectors"]] == ["MergeRows"]

    us = 1_777_636_800_000_000
    listed = [FileInfo("a.jpg", 10, us), FileInfo("b.jpg", 10, us + 1),
              FileInfo("c.jpg", 5, us)]
    previous = [("a.jpg", {"uri": "a.jpg", "bytes": 10, "mtime": T, "id": "row-a"}),
                ("b.jpg", {"uri": "b.jpg", "bytes": 10, "mtime": T, "id": "row-b"}),
                ("d.jpg", {"uri": "d.jpg", "bytes": 1, "mtime": T, "id": "row-d"})]
    listed[0] = FileInfo("a.jpg", 10, reindex.row_fingerprint(previous[0][1])[1])
    with TestPipeline() as tp:
        out = (tp | "Files" >> beam.Create(listed)) | ClassifyFiles(
            tp | "Previous" >> beam.Create(previous))
        assert_that(out[TO_EMBED] | beam.Map(lambda f: f.uri), equal_to(["b.jpg", "c.jpg"]),
                    label="ToEmbed")
        assert_that(out[CARRIED] | beam.Map(lambda r: r["id"]), equal_to(["row-a"]),
                    label="Carried")
        assert_that(out[FATES], equal_to([("a.jpg", reindex.UNCHANGED),
                                          ("b.jpg", reindex.CHANGED), ("c.jpg", reindex.NEW),
                                          ("d.jpg", reindex.REMOVED)]), label="Fates")


@pytest.mark.parametrize("listed, previous, expected", [
    ((10, 1), None, reindex.NEW),
    (None, (10, 1), reindex.REMOVED),
    ((10, 1), (10, 1), reindex.UNCHANGED),
    ((11, 1), (10, 1), reindex.CHANGED),
    ((10, 2), (10, 1), reindex.CHANGED),
    # No modification time: cannot be proven unchanged.
    ((10, None), (10, None), reindex.CHANGED),
])
def test_classify(listed, previous, expected):
    assert reindex.classify(listed, previous) == expected


def test_classify_needs_something():
    with pytest.raises(ValueError):
        reindex.classify(None, None)


def _publish_vectors(output, metadata):
    """A committed version whose vectors/ table was written with ``metadata``."""
    import pyarrow as pa

    from gridtsne import schema, storage, versions

    table = pa.Table.from_pylist([], schema=schema.vectors_schema(16, metadata))
    vid = versions.new_version_id()
    storage.write_parquet(storage.url_join(versions.version_url(output, vid), "vectors",
                                           "part-0.parquet"), table)
    versions.write_pointer(output, vid)


def test_previous_rows_are_reused_only_with_the_same_thumbnails(tmp_path):
    """A changed --thumbnail_size (or any preprocessing) re-embeds: no mixed thumbnails."""
    import dataclasses

    from gridtsne import models
    from gridtsne.decode import DecodeConfig
    from transforms.reindex import previous_vector_parts

    spec = models.get_spec("tests.tiny_model:TINY")
    meta = models.describe(spec, "ab" * 32, "test")
    decode = DecodeConfig(input_size=32, thumbnail_size=128)
    then = {**meta, "preprocessing": decode.describe()}
    _publish_vectors(str(tmp_path), then)

    same = {**meta, "preprocessing": DecodeConfig(input_size=32, thumbnail_size=128).describe()}
    assert len(previous_vector_parts(str(tmp_path), same)) == 1
    bigger = {**meta, "preprocessing": dataclasses.replace(decode, thumbnail_size=256).describe()}
    assert previous_vector_parts(str(tmp_path), bigger) == []
    assert "thumbnail_size" in reindex.reuse_mismatch(then, bigger)
    other_weights = {**same, "weights_sha256": "cd" * 32}
    assert previous_vector_parts(str(tmp_path), other_weights) == []
    assert reindex.reuse_mismatch(then, same) is None


def test_a_changed_precision_re_embeds(tmp_path):
    """--precision is part of the re-use key, as pooling is: bf16 vectors are not fp32 ones."""
    import dataclasses

    from gridtsne.decode import DecodeConfig
    from pipelines.embed import describe_job
    from transforms.embed import EmbedConfig
    from transforms.reindex import previous_vector_parts

    cfg = EmbedConfig(model="tests.tiny_model:TINY", device="cpu",
                      decode=DecodeConfig(input_size=32))
    fp32 = describe_job(cfg)
    bf16 = describe_job(dataclasses.replace(cfg, precision="bf16"))
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    _publish_vectors(str(tmp_path), fp32)
    assert len(previous_vector_parts(str(tmp_path), fp32)) == 1
    assert previous_vector_parts(str(tmp_path), bf16) == []
    assert "precision" in reindex.reuse_mismatch(fp32, bf16)
    # Tables written before precision was recorded hold fp32 vectors.
    older = {k: v for k, v in fp32.items() if k != "precision"}
    assert reindex.reuse_mismatch(older, fp32) is None
    assert "precision" in reindex.reuse_mismatch(older, bf16)
