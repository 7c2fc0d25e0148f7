"""The storage helpers behave the same on a local path, memory:// and a real S3 server."""
import pyarrow as pa
import pytest

from gridtsne import storage


def _roundtrip(base):
    url = storage.url_join(base, "a", "b.json")
    storage.write_bytes(url, b'{"x": 1}')
    assert storage.read_bytes(url) == b'{"x": 1}'
    assert storage.exists(url)
    table = pa.table({"uri": ["p", "q"], "n": [1, 2]})
    storage.write_parquet(storage.url_join(base, "t", "part-0.parquet"), table)
    storage.write_parquet(storage.url_join(base, "t", "part-1.parquet"), table)
    back = storage.read_parquet(storage.url_join(base, "t"))
    assert back.num_rows == 4 and back.column("uri").to_pylist() == ["p", "q", "p", "q"]
    batches = list(storage.iter_parquet_batches(storage.url_join(base, "t"), batch_size=1))
    assert sum(b.num_rows for b in batches) == 4


def test_local_roundtrip(tmp_path):
    _roundtrip(str(tmp_path))


def test_memory_roundtrip():
    _roundtrip("memory://storage-test")


def test_s3_roundtrip_sets_content_type(s3_bucket, s3_server):
    import boto3

    _roundtrip(f"s3://{s3_bucket}/run")
    storage.write_bytes(f"s3://{s3_bucket}/site/mosaic.dzi", b"<Image/>")
    head = boto3.client("s3", endpoint_url=s3_server).head_object(
        Bucket=s3_bucket, Key="site/mosaic.dzi")
    assert head["ContentType"] == "application/xml"


def test_missing_parquet_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Parquet files"):
        storage.read_parquet(str(tmp_path))


def test_url_join_keeps_protocol():
    assert storage.url_join("s3://b/run/", "vectors", "x.parquet") == "s3://b/run/vectors/x.parquet"
    assert storage.url_join("/tmp/a", "b") == "/tmp/a/b"


def test_storage_options_come_from_flags_not_process_config():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.options import storage_options_from

    options = PipelineOptions(["--s3_endpoint_url", "http://127.0.0.1:9", "--s3_access_key_id",
                               "k", "--s3_secret_access_key", "s", "--s3_region_name", "eu-west-1",
                               "--storage_options", '{"gs": {"project": "p"}, "s3": {"anon": false}}'])
    opts = storage_options_from(options)
    assert opts == {"s3": {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s",
                           "client_kwargs": {"region_name": "eu-west-1"}, "anon": False},
                    "gs": {"project": "p"}}
    fs, path = storage.filesystem("s3://bucket/key.json", opts)
    assert path == "bucket/key.json" and fs.endpoint_url == "http://127.0.0.1:9"
    assert fs.key == "k" and fs.secret == "s"
    assert storage_options_from(PipelineOptions([])) == {}
    with pytest.raises(ValueError, match="--storage_options must be JSON"):
        storage_options_from(PipelineOptions(["--storage_options", "{nope"]))
