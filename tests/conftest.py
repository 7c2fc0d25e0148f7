"""Fixtures shared across the suite: a real S3 server on loopback and the real photo sets."""
import os
import socket
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def require_or_skip(reason):
    """Skip, or fail when GRIDTSNE_REQUIRE_ALL is set (CI): a missing part there is a failure."""
    if os.environ.get("GRIDTSNE_REQUIRE_ALL") == "1":
        pytest.fail(f"required in CI but unavailable: {reason}")
    pytest.skip(reason)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's real S3-compatible HTTP server on 127.0.0.1; yields its endpoint URL.

    Sets the AWS variables so that s3fs, boto3 and Beam's S3 IO all talk to it.
    Create buckets with ``s3_bucket`` (boto3): s3fs's mkdir fails against moto.
    """
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
        "FSSPEC_S3_ENDPOINT_URL")}
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
        # s3fs reads its endpoint from fsspec's config variables.
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
    })
    import fsspec.config
    fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = endpoint
    try:
        yield endpoint
    finally:
        fsspec.config.conf.get("s3", {}).pop("endpoint_url", None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, empty bucket on the loopback S3 server; yields its name."""
    import uuid

    import boto3
    import s3fs

    name = "gridtsne-" + uuid.uuid4().hex[:12]
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    s3fs.S3FileSystem.clear_instance_cache()
    return name


@pytest.fixture(scope="session")
def shared_data():
    """``../shared/data`` beside the checkout; skips cleanly where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (real photo sets live beside the checkout)")
    return SHARED_DATA
