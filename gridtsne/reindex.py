"""Deciding, per image, what a scheduled re-run must do: embed it again, or keep its row.

An image is unchanged when its ``uri``, size and modification time match the previous
version's row; only then is its previous row (vector, thumbnail) carried over unread.
"""
import json
import numbers

from gridtsne.listing import to_epoch_us

NEW = "new"
CHANGED = "changed"
UNCHANGED = "unchanged"
REMOVED = "removed"


def fingerprint(size, mtime_us):
    """What identifies one version of a file without reading it: ``(bytes, mtime in µs)``.

    Both are integers (``None`` when the store does not report them): the listing's
    :attr:`~gridtsne.listing.FileInfo.mtime_us` and the ``mtime`` column (``timestamp[us]``)
    hold the same integer, so no float conversion can make an unchanged file look changed.
    """
    return (_as_int(size, "size"), _as_int(mtime_us, "mtime_us"))


def _as_int(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer (µs for mtime_us), got {value!r}")
    return int(value)


def file_fingerprint(info):
    """The fingerprint of a listed :class:`~gridtsne.listing.FileInfo`."""
    return fingerprint(info.size, info.mtime_us)


def row_fingerprint(row):
    """The fingerprint of a ``vectors/`` row (its ``bytes`` and ``mtime`` columns)."""
    return fingerprint(row["bytes"], to_epoch_us(row["mtime"]))


# What a previous row's vector and thumbnail depend on besides the image itself: a row made
# with any of these different cannot stand beside new rows (e.g. --thumbnail_size; --precision:
# bf16 vectors are only within cosine 0.98 of fp32 ones, the two decoders' within 0.995).
REUSE_KEYS = ("model", "weights_sha256", "vector_dim", "input_size", "mean", "std",
              "preprocessing", "pooling", "precision")
# What a key added to the metadata later meant in tables written before it existed.
BEFORE_KEY = {"pooling": "avg", "precision": "fp32"}


def reuse_mismatch(previous, current):
    """Why rows described by ``previous`` metadata cannot be re-used now, or None if they can.

    Both are ``vectors/`` schema metadata documents; values are compared as JSON (lists and
    tuples alike), so a table read back matches the metadata it was written with.
    """
    for key in REUSE_KEYS:
        before = _as_json(previous.get(key, BEFORE_KEY.get(key)))
        now = _as_json(current.get(key, BEFORE_KEY.get(key)))
        if before != now:
            if isinstance(before, dict) and isinstance(now, dict):
                diff = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
                return f"{key} differs in {', '.join(diff)}: {[before.get(k) for k in diff]!r} " \
                       f"then, {[now.get(k) for k in diff]!r} now"
            return f"{key} was {before!r}, is now {now!r}"
    return None


def _as_json(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def classify(listed, previous):
    """The fate of one uri, given what the listing found and what the previous version held.

    Parameters
    ----------
    listed : fingerprint or None
        ``fingerprint(size, mtime_us)`` of the file found now, None if it is gone.
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
