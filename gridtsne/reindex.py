"""Deciding, per image, what a scheduled re-run must do: embed it again, or keep its row.

An image is unchanged when its ``uri``, size and modification time match the previous
version's row; only then is its previous row (vector, thumbnail) carried over unread.
"""
import dataclasses
import datetime as _dt

NEW = "new"
CHANGED = "changed"
UNCHANGED = "unchanged"
REMOVED = "removed"


def _mtime_key(mtime):
    """Modification times compared at microsecond precision, as Parquet stores them."""
    if mtime is None:
        return None
    if isinstance(mtime, _dt.datetime):
        if mtime.tzinfo is None:
            mtime = mtime.replace(tzinfo=_dt.timezone.utc)
        return round(mtime.timestamp() * 1_000_000)
    return round(float(mtime) * 1_000_000)


def fingerprint(size, mtime):
    """What identifies one version of a file without reading it: (bytes, mtime in µs)."""
    return (int(size) if size is not None else None, _mtime_key(mtime))


def classify(listed, previous):
    """The fate of one uri, given what the listing found and what the previous version held.

    Parameters
    ----------
    listed : fingerprint or None
        ``fingerprint(size, mtime)`` of the file found now, None if it is gone.
    previous : fingerprint or None
        The same for the previous version's row, None if the uri is new.

    A file whose store gives no modification time can never be proven unchanged, so it is
    treated as changed: re-embedding it costs time, trusting it could serve a stale vector.
    """
    if listed is None and previous is None:
        raise ValueError("classify needs a listed or a previous fingerprint, got neither")
    if listed is None:
        return REMOVED
    if previous is None:
        return NEW
    if listed[1] is None or listed != previous:
        return CHANGED
    return UNCHANGED


@dataclasses.dataclass
class ReindexCounts:
    """How many images of a run were new, changed, unchanged, removed and failed."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0

    def as_dict(self):
        return dataclasses.asdict(self)
