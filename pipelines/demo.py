"""The offline demo: the whole job on photos and digits that ship with scikit-image and
scikit-learn, written to ``demo-output/map`` unless ``--output`` says otherwise.

    gridtsne demo [--output DIR] [any flag of gridtsne run]
    python3 dev.py demo

The demo is its own command so that ``gridtsne run`` with a forgotten ``--input`` fails
instead of publishing demo photos into the user's map.
"""
import logging
import os
import sys

from gridtsne.flagfiles import expand_flags_files
from pipelines import run as run_stage
from pipelines.options import wants_help

DEMO_DIR = "demo-output"


def _has_flag(argv, *flags):
    return any(a in flags or a.startswith(tuple(f + "=" for f in flags)) for a in argv)


def demo_argv(argv, folder=DEMO_DIR):
    """``argv`` completed with the embedded demo's input, labels and output (no network)."""
    from gridtsne.demo_data import write_demo_images

    if _has_flag(argv, "--input", "--manifest"):
        raise ValueError("gridtsne demo brings its own photos: drop --input/--manifest, or use "
                         "gridtsne run for your own collection")
    photos = os.path.abspath(os.path.join(folder, "photos"))
    labels = write_demo_images(photos)
    print(f"demo: {photos} holds the offline sample photos and digits")
    extra = ["--input", photos, "--labels", labels]
    if not _has_flag(argv, "--output"):
        extra += ["--output", os.path.abspath(os.path.join(folder, "map"))]
    return extra + list(argv)


def run(argv=None):
    """Write the demo photos, then run the whole job on them; returns the summary."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if wants_help(argv):
        print(run_stage.run_help("gridtsne demo", __doc__.split("\n\n")[0].replace("\n", " ")
                                 + " --input and --manifest are not taken."))
        return 0
    argv = expand_flags_files(argv)
    return run_stage.run(demo_argv(argv))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run()
