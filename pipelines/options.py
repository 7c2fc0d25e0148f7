"""What the stages' PipelineOptions classes share."""
import argparse


def add_flag(parser, *args, **kwargs):
    """``parser.add_argument``, sharing a flag another stage already defines.

    Every PipelineOptions subclass imported in a process adds its flags to one parser, so
    ``--output`` (embed, layout, render, run) must be defined once and shared, not a crash.
    """
    try:
        parser.add_argument(*args, **kwargs)
    except argparse.ArgumentError:
        pass
