"""Names of the embedding stage's Beam counters, in one place for the DoFns and the summary."""
from apache_beam.metrics import Metrics

from transforms import progress_metrics

NAMESPACE = "gridtsne.embed"

PATTERNS = "patterns_expanded"
FILES_LISTED = "files_listed"
HIDDEN_SKIPPED = "hidden_files_skipped"
LISTING_ERRORS = "listing_errors"
DUPLICATES_DROPPED = "duplicate_listings_dropped"
NOT_IMAGES = "files_skipped_not_images"
IMAGES_FOUND = "images_found"
BYTES_READ = "bytes_read"
DECODE_ERRORS = "decode_errors"
EMBED_ERRORS = "embed_errors"
VECTORS = "vectors"
DECODE_MSEC = "decode_msec"
BATCH_MSEC = "batch_msec"


def counter(name):
    """The counter ``name``; its increments also drive the launcher's progress display."""
    return progress_metrics.counter(NAMESPACE, name)


def distribution(name):
    return Metrics.distribution(NAMESPACE, name)
