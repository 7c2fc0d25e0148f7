"""What the stages' PipelineOptions classes share."""
import argparse
import os


def add_flag(parser, *args, **kwargs):
    """``parser.add_argument``, sharing a flag another stage already defines.

    Every PipelineOptions subclass imported in a process adds its flags to one parser, so
    ``--output`` (embed, layout, render, run) must be defined once and shared, not a crash.
    """
    try:
        parser.add_argument(*args, **kwargs)
    except argparse.ArgumentError:
        pass


def local_abs(url):
    """``url`` with a plain local path made absolute; URLs and ``::`` chains unchanged.

    Workers may run in another directory than the launcher, so relative paths are resolved
    once, at launch.
    """
    if url is None or "://" in url or "::" in url:
        return url
    return os.path.abspath(url)
