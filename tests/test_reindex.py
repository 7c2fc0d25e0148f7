"""Classifying images on a re-run: only unchanged fingerprints are carried over."""
import datetime as dt

import pytest

from gridtsne import reindex

T = dt.datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)


def test_fingerprint_matches_across_representations():
    assert reindex.fingerprint(10, T) == reindex.fingerprint(10, T.timestamp())
    assert reindex.fingerprint(10, T.replace(tzinfo=None)) == reindex.fingerprint(10, T)
    assert reindex.fingerprint(10, T) != reindex.fingerprint(11, T)
    assert reindex.fingerprint(10, T) != reindex.fingerprint(10, T + dt.timedelta(microseconds=1))


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
