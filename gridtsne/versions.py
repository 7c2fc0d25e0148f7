"""Versioned output prefixes and the ``latest.json`` pointer that makes a run all-or-nothing.

Each run writes everything into ``<output>/versions/<id>/`` and, only once that is complete,
replaces ``<output>/latest.json`` in one atomic step (``os.replace`` on a local disk, a single PUT
on an object store). A run killed at any moment therefore leaves the previous version complete
and still pointed to; the half-written prefix is ignored and later cleaned up.
"""
import datetime as _dt
import json
import logging
import os
import posixpath
import uuid

from gridtsne import storage

log = logging.getLogger(__name__)

POINTER_FILE = "latest.json"
VERSIONS_DIR = "versions"
# A running (or finished) version's progress document, see gridtsne.progress.
PROGRESS_FILE = "progress.json"


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
    """Version ids present under ``output`` (complete or not), oldest first."""
    fs, path = storage.filesystem(storage.url_join(output, VERSIONS_DIR), storage_options)
    if not fs.exists(path):
        return []
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def prune_versions(output, keep, storage_options=None):
    """Delete all but the newest ``keep`` versions, never the one ``latest.json`` points to.

    Runs only after the pointer moved, so a crash here loses nothing but disk space.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep!r}")
    pointer = read_pointer(output, storage_options)
    current = pointer["version"] if pointer else None
    versions = list_versions(output, storage_options)
    doomed = [v for v in versions[:-keep] if v != current]
    for vid in doomed:
        fs, path = storage.filesystem(version_url(output, vid), storage_options)
        fs.rm(path, recursive=True)
        log.info("pruned old version %s", vid)
    return doomed
