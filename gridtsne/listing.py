"""Expand an fsspec URL, glob, directory or manifest into file-info records, reading no bytes.

A :class:`FileInfo` carries what a re-index needs to tell a new or changed file from a known
one (``uri``, ``size``, ``mtime_us``, ``etag``; see :mod:`gridtsne.reindex`), so that decision
happens before any image is fetched.
"""
import dataclasses
import datetime
import logging
import os
import posixpath

from gridtsne.storage import filesystem

log = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
# Keys that object stores and archives use for the modification time, most specific first.
_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "date_time",
               "created", "ctime")
_ETAG_KEYS = ("ETag", "etag", "md5Hash", "md5_hash")


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """One listed file, before any of its bytes are read.

    Attributes
    ----------
    uri : str
        What ``fsspec.open`` (and the ``uri`` column) uses: a plain absolute path for local
        inputs given without a protocol, otherwise a full URL, ``::`` chains included.
    size : int or None
        Bytes, when the store reports them.
    mtime_us : int or None
        Modification time in microseconds since the Unix epoch (UTC), the resolution of the
        ``mtime`` column, so a key read back from ``vectors/`` compares equal.
    etag : str or None
        The store's entity tag (S3 ``ETag``, GCS ``etag``/``md5Hash``), quotes removed.
    explicit : bool
        True when the user named this file itself (a plain URL or a manifest line) rather than a
        search finding it: such a file is always treated as an image, so a non-image ends up in
        ``errors/`` instead of being skipped.
    """

    uri: str
    size: int = None
    mtime_us: int = None
    etag: str = None
    explicit: bool = False

    @property
    def mtime(self):
        """The modification time as an aware UTC datetime, or None."""
        return None if self.mtime_us is None else _EPOCH + datetime.timedelta(
            microseconds=self.mtime_us)


def merge_duplicates(infos):
    """One :class:`FileInfo` for records of the same uri that several inputs listed.

    ``--input dir --input 'dir/*.jpg'`` lists each jpg twice; it must be embedded (and laid
    out) once. A record the user named explicitly wins, so a named non-image still reaches
    ``errors/``.
    """
    infos = list(infos)
    if not infos:
        raise ValueError("merge_duplicates needs at least one FileInfo")
    return next((i for i in infos if i.explicit), infos[0])


def to_epoch_us(value):
    """A modification time as fsspec stores report it -> microseconds since the epoch, or None.

    Accepts seconds as int/float, datetimes (naive ones are taken as UTC), ISO-8601 strings and
    the ``(Y, M, D, h, m, s)`` tuples of zip archives.
    """
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) >= 6:
        value = datetime.datetime(*[int(v) for v in value[:6]], tzinfo=datetime.timezone.utc)
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            log.debug("unparseable modification time %r", value)
            return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, (int, float)):
        return int(round(float(value) * 1_000_000))
    return None


def file_info_from_details(uri, details, explicit=False):
    """A :class:`FileInfo` from ``uri`` and the ``info()`` dict of an fsspec filesystem."""
    size = details.get("size")
    mtime = next((to_epoch_us(details[k]) for k in _MTIME_KEYS if details.get(k) is not None),
                 None)
    etag = next((str(details[k]).strip('"') for k in _ETAG_KEYS if details.get(k)), None)
    return FileInfo(uri=uri, size=None if size is None else int(size), mtime_us=mtime,
                    etag=etag, explicit=explicit)


def _make_uri(fs, path, pattern):
    head, _, tail = pattern.partition("::")
    if not tail and "://" not in head:
        return path  # a local path given without protocol stays a plain path
    uri = fs.unstrip_protocol(path)
    return f"{uri}::{tail}" if tail else uri


def _is_hidden(path, root):
    rel = posixpath.relpath(path, root) if root and path.startswith(root.rstrip("/") + "/") \
        else posixpath.basename(path)
    return any(part.startswith(".") for part in rel.split("/") if part not in ("", ".", ".."))


def _glob_root(path):
    parts = path.split("/")
    for i, part in enumerate(parts):
        if _GLOB_CHARS & set(part):
            return "/".join(parts[:i])
    return path


def has_glob(url):
    """Whether the path part of ``url`` (the first link of a ``::`` chain) holds a wildcard."""
    head = url.partition("::")[0]
    path = head.split("://", 1)[-1]
    return bool(_GLOB_CHARS & set(path))


def expand_pattern(pattern, storage_options=None, on_hidden=None):
    """Every file that ``pattern`` names, as :class:`FileInfo` records, without reading them.

    Parameters
    ----------
    pattern : str
        A file URL or path (yields it, ``explicit=True``), a directory (searched recursively),
        or a glob (``*``, ``?``, ``[...]``, ``**`` for any depth; matched directories are
        searched recursively too). Any fsspec protocol and ``::`` chains work.
    storage_options : dict, optional
        Per-protocol fsspec options, see :func:`gridtsne.storage.filesystem`.
    on_hidden : callable, optional
        Called with the path of each hidden file or folder content (a name starting with ``.``,
        such as ``.DS_Store`` or macOS ``._photo.jpg`` forks) that a search passes over.

    Raises
    ------
    FileNotFoundError
        When a plain (non-glob) ``pattern`` does not exist.
    """
    pattern = str(pattern)
    if "://" not in pattern.partition("::")[0] and "::" not in pattern:
        pattern = os.path.abspath(os.path.expanduser(pattern))
    fs, path = filesystem(pattern, storage_options)
    if has_glob(pattern):
        root = _glob_root(path)
        found = fs.glob(path, detail=True)
        # "dir/**" matches the folders and the files inside them: yield every file once.
        seen = set()
        for p in sorted(found):
            details = found[p]
            walked = _walk(fs, p, pattern, on_hidden, root) if details.get("type") == "directory" \
                else _one(fs, p, details, root, pattern, on_hidden)
            for info in walked:
                if info.uri not in seen:
                    seen.add(info.uri)
                    yield info
    elif fs.isdir(path):
        yield from _walk(fs, path, pattern, on_hidden)
    else:
        details = fs.info(path)
        yield file_info_from_details(_make_uri(fs, path, pattern), details, explicit=True)


def _one(fs, path, details, root, pattern, on_hidden):
    if _is_hidden(path, root):
        if on_hidden:
            on_hidden(path)
        return
    yield file_info_from_details(_make_uri(fs, path, pattern), details)


def _walk(fs, folder, pattern, on_hidden, root=None):
    # Hidden is judged below ``root`` (the searched folder, or the fixed part of a glob).
    found = fs.find(folder, detail=True, withdirs=False)
    for p in sorted(found):
        if _is_hidden(p, root or folder):
            if on_hidden:
                on_hidden(p)
            continue
        yield file_info_from_details(_make_uri(fs, p, pattern), found[p])


def read_manifest(url, storage_options=None):
    """The entries of a manifest: one URL, path or glob per line.

    Blank lines and lines starting with ``#`` are ignored. Relative paths are taken relative to
    the manifest's own folder, so a manifest can travel with its collection.
    """
    fs, path = filesystem(url, storage_options)
    base = url.rsplit("/", 1)[0] if "/" in url else "."
    with fs.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            if "://" not in entry and "::" not in entry and not entry.startswith("/"):
                entry = posixpath.join(base, entry)
            yield entry
