"""Versioned output prefixes and the ``latest.json`` pointer that makes a run all-or-nothing.

Each run writes everything into ``<output>/versions/<id>/`` and, only once that is complete,
replaces ``<output>/latest.json`` in one atomic step (``os.replace`` on a local disk, a single PUT
on an object store). A run killed at any moment therefore leaves the previous version complete
and still pointed to; the half-written prefix is ignored and later cleaned up.

Once the pointer has moved (:func:`publish`), the version gets its commit record
(``commit.json``: when, and its place in the order of commits). Versions are ordered by that
record, never by their names (ids chosen by a caller such as ``gridtsne serve`` do not sort by
time); a folder without one was never published (a killed, failed or still running run) and is
removed once it is abandoned. A version id is written once: a run refuses an id that already
has files (:func:`check_unused`).
"""
import datetime as _dt
import json
import logging
import os
import posixpath
import uuid

from gridtsne import faults, storage

log = logging.getLogger(__name__)

POINTER_FILE = "latest.json"
VERSIONS_DIR = "versions"
# A running (or finished) version's progress document, see gridtsne.progress.
PROGRESS_FILE = "progress.json"
# Written into a version once latest.json points to it (see record_commit).
COMMIT_FILE = "commit.json"
# An unpublished version whose progress document has not been rewritten for this long is
# abandoned (a running launcher rewrites it at least every progress.HEARTBEAT_S = 60 s).
ABANDONED_AFTER_S = 3600


class VersionExists(ValueError):
    """A run was given the id of a version that already has files."""


def new_version_id(now=None):
    """A sortable, unique version id such as ``20261122T190102Z-3fa9c1``."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def version_url(output, version_id):
    """Where the files of ``version_id`` live under ``output``."""
    return storage.url_join(output, VERSIONS_DIR, version_id)


def progress_url(output, version_id):
    """Where ``gridtsne run`` keeps the progress document of ``version_id`` (it may be absent)."""
    return storage.url_join(version_url(output, version_id), PROGRESS_FILE)


def read_pointer(output, storage_options=None):
    """The current ``latest.json`` document under ``output``, or None before the first run."""
    url = storage.url_join(output, POINTER_FILE)
    if not storage.exists(url, storage_options):
        return None
    pointer = json.loads(storage.read_bytes(url, storage_options))
    if "version" not in pointer:
        raise ValueError(f"{url!r} is not a gridtsne pointer: no 'version' key in {pointer!r}")
    return pointer


def current_version_url(output, storage_options=None):
    """The prefix of the version ``latest.json`` points to, or None before the first run."""
    pointer = read_pointer(output, storage_options)
    return None if pointer is None else version_url(output, pointer["version"])


def write_pointer(output, version_id, summary=None, storage_options=None):
    """Point ``latest.json`` at ``version_id`` atomically; returns the document written."""
    doc = {
        "version": version_id,
        "path": f"{VERSIONS_DIR}/{version_id}",
        "site": f"{VERSIONS_DIR}/{version_id}/site/index.html",
        "committed": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "summary": summary or {},
    }
    replace_file(storage.url_join(output, POINTER_FILE),
                 json.dumps(doc, indent=2, sort_keys=True).encode(), storage_options)
    return doc


def replace_file(url, data, storage_options=None):
    """Write ``data`` to ``url`` so that a reader sees the old content or the new, never half.

    A rename on a local disk (``os.replace``), a single PUT on an object store.
    """
    fs, path = storage.filesystem(url, storage_options)
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        # Same directory as the target, so os.replace is a rename within one file system.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    else:
        storage.write_bytes(url, data, storage_options)


def list_versions(output, storage_options=None):
    """Version ids present under ``output`` (complete or not), in name order.

    Names say nothing about age; :func:`committed_versions` gives the order of commits.
    """
    fs, path = storage.filesystem(storage.url_join(output, VERSIONS_DIR), storage_options)
    if not fs.exists(path):
        return []
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def check_unused(output, version_id, storage_options=None):
    """Raise :class:`VersionExists` when ``versions/<version_id>/`` already holds files.

    Called before a run writes anything: re-using an id would overwrite that version in
    place (the published one, even), so a version id is written once.
    """
    fs, path = storage.filesystem(version_url(output, version_id), storage_options)
    if fs.exists(path) and fs.ls(path, detail=False):
        pointer = read_pointer(output, storage_options)
        what = "the published version" if pointer and pointer["version"] == version_id else \
            "an existing version"
        raise VersionExists(f"version {version_id!r} is {what} under {output}: a version id is "
                            f"written once; give a new --version_id or none (a new id is then "
                            f"chosen)")


def commit_url(output, version_id):
    """Where the commit record of ``version_id`` lives (absent: never published)."""
    return storage.url_join(version_url(output, version_id), COMMIT_FILE)


def read_commit(output, version_id, storage_options=None):
    """The commit record of ``version_id``, or None when it has none (or it is unreadable)."""
    try:
        doc = json.loads(storage.read_bytes(commit_url(output, version_id), storage_options))
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("sequence"), int) else None


def record_commit(output, version_id, storage_options=None, now=None):
    """Write ``version_id``'s commit record; call it right after the pointer moved to it.

    The record holds the commit time and a sequence number one past every other record's, so
    versions sort in the order they were published even when clocks disagree. Killed between
    the pointer move and this write, the version is still the current one (always kept) and
    the next commit numbers past it.
    """
    now = now or _dt.datetime.now(_dt.timezone.utc)
    records = [read_commit(output, v, storage_options) for v in list_versions(output,
                                                                            storage_options)]
    sequence = 1 + max((r["sequence"] for r in records if r), default=0)
    doc = {"version": version_id, "committed": now.isoformat(timespec="microseconds"),
           "sequence": sequence}
    storage.write_bytes(commit_url(output, version_id),
                        json.dumps(doc, indent=2, sort_keys=True).encode(), storage_options)
    return doc


def publish(output, version_id, summary=None, storage_options=None):
    """Move ``latest.json`` to ``version_id`` and write its commit record; returns the pointer.

    The version the pointer leaves gets its record first if it has none (published before
    records existed, or its run killed between the two writes), so it keeps its place.
    """
    previous = read_pointer(output, storage_options)
    if previous is not None and read_commit(output, previous["version"],
                                            storage_options) is None:
        record_commit(output, previous["version"], storage_options)
    doc = write_pointer(output, version_id, summary, storage_options)
    faults.point("published")
    record_commit(output, version_id, storage_options)
    return doc


def committed_versions(output, storage_options=None):
    """Ids of the published versions under ``output``, oldest commit first.

    A version counts when it has a commit record, or when ``latest.json`` points to it (one
    published before commit records existed, or killed before its record was written); that
    one is then the newest.
    """
    records = {}
    for vid in list_versions(output, storage_options):
        record = read_commit(output, vid, storage_options)
        if record is not None:
            records[vid] = (record["sequence"], record.get("committed", ""), vid)
    ordered = sorted(records, key=records.get)
    pointer = read_pointer(output, storage_options)
    if pointer is not None and pointer["version"] not in records:
        ordered.append(pointer["version"])
    return ordered


def _parse_time(text):
    try:
        t = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def _modified(info):
    """A listing entry's modification time as an aware datetime, or None if it has none."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return _dt.datetime.fromtimestamp(value, _dt.timezone.utc)
        if isinstance(value, _dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
        if isinstance(value, str) and _parse_time(value):
            return _parse_time(value)
    return None


def is_abandoned(output, version_id, storage_options=None, now=None,
                 after_s=ABANDONED_AFTER_S):
    """Whether an unpublished version's run is over, so that its folder may go.

    Yes when its progress document says ``failed``, or was last rewritten more than
    ``after_s`` seconds ago (a running launcher rewrites it every minute, even when nothing
    moves); without a document, when no file of the folder changed for ``after_s`` seconds.
    When nothing tells, no: a folder that may belong to a running job is never removed.
    """
    now = now or _dt.datetime.now(_dt.timezone.utc)
    try:
        doc = json.loads(storage.read_bytes(progress_url(output, version_id), storage_options))
    except (FileNotFoundError, ValueError):
        doc = None
    if isinstance(doc, dict):
        if doc.get("phase") == "failed":
            return True
        updated = _parse_time(doc.get("updated"))
        if updated is not None:
            return (now - updated).total_seconds() > after_s
    fs, path = storage.filesystem(version_url(output, version_id), storage_options)
    times = [_modified(info) for info in fs.find(path, detail=True).values()]
    times = [t for t in times if t is not None]
    return bool(times) and (now - max(times)).total_seconds() > after_s


def prune_versions(output, keep, storage_options=None, now=None,
                   abandoned_after_s=ABANDONED_AFTER_S):
    """Delete all but the ``keep`` most recently committed versions, and abandoned runs' folders.

    Never the version ``latest.json`` points to, and never an unpublished folder whose run
    may still be going (:func:`is_abandoned`); unpublished folders never count towards
    ``keep``. Runs only after the pointer moved, so a crash here loses nothing but disk space.
    Returns the deleted ids.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep!r}")
    pointer = read_pointer(output, storage_options)
    current = pointer["version"] if pointer else None
    committed = committed_versions(output, storage_options)
    doomed = [v for v in committed[:-keep] if v != current]
    published = set(committed)
    doomed += [v for v in list_versions(output, storage_options)
               if v not in published and v != current
               and is_abandoned(output, v, storage_options, now, abandoned_after_s)]
    for vid in doomed:
        fs, path = storage.filesystem(version_url(output, vid), storage_options)
        fs.rm(path, recursive=True)
        log.info("pruned %s version %s", "old" if vid in published else "abandoned", vid)
    return doomed
