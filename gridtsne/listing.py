"""Expand an fsspec URL, glob, directory or manifest into file-info records, reading no bytes.

A :class:`FileInfo` carries what a re-index needs to tell a new or changed file from a known
one (``uri``, ``size``, ``mtime_us``, ``etag``; see :mod:`gridtsne.reindex`), so that decision
happens before any image is fetched.

Listing runs at the speed of the store: a local folder is one ``os.scandir`` walk
(:func:`walk_local`, the ``stat`` the walk already has, no fsspec call per file); manifest
lines are parsed by :func:`parse_manifest` and resolved in batches by :func:`resolve_entries`
(one ``stat`` per local line; on an object store one paged listing of each folder that many
lines name instead of a request per line).
"""
import collections
import dataclasses
import datetime
import logging
import os
import posixpath
import stat as stat_module

from fsspec.implementations.local import LocalFileSystem

from gridtsne.storage import filesystem

log = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
# Keys that object stores and archives use for the modification time, most specific first.
_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "date_time",
               "created", "ctime")
_ETAG_KEYS = ("ETag", "etag", "md5Hash", "md5_hash")


class NoMatch(FileNotFoundError):
    """An input (a glob, a folder, a manifest line) that matched no files."""


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


def _local_root(pattern, fs):
    """The uri prefix of files under a local ``pattern`` (``""`` for a plain path, ``file://``
    for a file URL), or None when ``pattern`` is not on the local disk (or is a ``::`` chain)."""
    if "::" in pattern or not isinstance(fs, LocalFileSystem):
        return None
    return "" if "://" not in pattern else "file://"


def _local_info(uri, st, explicit=False):
    # The same arithmetic as to_epoch_us(st_mtime): a re-index compares these to stored values.
    return FileInfo(uri=uri, size=st.st_size, mtime_us=int(round(st.st_mtime * 1_000_000)),
                    explicit=explicit)


def walk_local(folder, on_hidden=None, uri_prefix=""):
    """Every file below the local ``folder``, as :class:`FileInfo` records: one ``find``-like walk.

    ``os.scandir`` gives each entry's type without a system call; one ``stat`` per file gives
    its size and modification time. Names starting with ``.`` are hidden: such a file, or such
    a folder (not searched: a ``.git`` or ``.cache`` can hold many files), is passed to
    ``on_hidden`` instead. A symbolic link to a file is followed (its target's size and time);
    a dangling one is still yielded (size and time None), so reading it fails into ``errors/``
    instead of vanishing. Links to folders are not followed, as ``find`` without ``-L``, which
    also keeps a link loop from walking forever. Folders are visited in name order, so the
    order is the same on every run. ``uri_prefix`` goes before each path (``file://`` when
    the user gave a file URL).
    """
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except NotADirectoryError:
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                if on_hidden:
                    on_hidden(entry.path)
                continue
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(entry.path)
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:  # a dangling link
                yield FileInfo(uri=uri_prefix + entry.path)
                continue
            if stat_module.S_ISDIR(st.st_mode):
                log.debug("not following the link to a folder %s", entry.path)
                continue
            yield _local_info(uri_prefix + entry.path, st)
        stack.extend(reversed(subfolders))


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
    local = _local_root(pattern, fs)
    if has_glob(pattern):
        root = _glob_root(path)
        found = fs.glob(path, detail=True)
        # "dir/**" matches the folders and the files inside them: yield every file once.
        seen = set()
        for p in sorted(found):
            details = found[p]
            if details.get("type") != "directory":
                walked = _one(fs, p, details, root, pattern, on_hidden)
            elif local is not None and not _is_hidden(p, root):
                walked = walk_local(p, on_hidden, local)
            else:
                walked = _walk(fs, p, pattern, on_hidden, root)
            for info in walked:
                if info.uri not in seen:
                    seen.add(info.uri)
                    yield info
    elif local is not None:
        st = os.stat(path)  # FileNotFoundError names the missing path
        if stat_module.S_ISDIR(st.st_mode):
            yield from walk_local(path, on_hidden, local)
        else:
            yield _local_info(local + path, st, explicit=True)
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


def manifest_base(url):
    """The folder that relative lines of the manifest at ``url`` are relative to."""
    return url.rsplit("/", 1)[0] if "/" in url else "."


def parse_manifest(lines, base):
    """The entries of manifest ``lines`` (an iterable of str): one URL, path or glob per line.

    Blank lines and lines starting with ``#`` are ignored. Relative paths are joined to
    ``base`` (the manifest's own folder, see :func:`manifest_base`), so a manifest can travel
    with its collection.
    """
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if "://" not in entry and "::" not in entry and not entry.startswith("/"):
            entry = posixpath.join(base, entry)
        yield entry


def read_manifest(url, storage_options=None):
    """The entries of the manifest at ``url`` (see :func:`parse_manifest`), read as a stream."""
    fs, path = filesystem(url, storage_options)
    with fs.open(path, "rt", encoding="utf-8") as fh:
        yield from parse_manifest(fh, manifest_base(url))


# Protocols whose folders one paged request lists (keys and their size, time and ETag).
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
# An object-store folder is listed (paged, ~1,000 keys a request) instead of asking for each
# line's object when at least this many lines name files in it.
LIST_FOLDER_MIN = 16


def resolve_entries(entries, storage_options=None, on_hidden=None):
    """``(entry, FileInfo or exception)`` pairs for a batch of manifest entries.

    A plain local path costs one ``stat``; on other stores, lines naming files of one folder
    (at least :data:`LIST_FOLDER_MIN` of them) are answered by one paged listing of that folder.
    Everything else (globs, folders, entries the listing does not hold) goes through
    :func:`expand_pattern`, one pair per file it finds. An entry that cannot be listed comes
    back with its exception, so the caller can record it and go on with the others.
    """
    by_folder = collections.defaultdict(list)
    for entry in entries:
        head = entry.partition("::")[0]
        if has_glob(entry) or "::" in entry:
            yield from _expand_entry(entry, storage_options, on_hidden)
        elif "://" not in head or head.startswith("file://"):
            yield from _resolve_local(entry, on_hidden)
        elif head.split("://", 1)[0].lower() in OBJECT_STORES:
            by_folder[entry.rsplit("/", 1)[0]].append(entry)
        else:
            yield from _expand_entry(entry, storage_options, on_hidden)
    for folder, group in by_folder.items():
        fs, listed = (_list_folder(folder, storage_options) if len(group) >= LIST_FOLDER_MIN
                      else (None, {}))
        for entry in group:
            details = listed.get(entry.split("://", 1)[1])
            if details is not None and details.get("type") != "directory":
                yield entry, file_info_from_details(fs.unstrip_protocol(details["name"]),
                                                    details, explicit=True)
            else:
                yield from _expand_entry(entry, storage_options, on_hidden)


def _expand_entry(entry, storage_options, on_hidden):
    try:
        found = list(expand_pattern(entry, storage_options, on_hidden))
    except Exception as exc:  # reported per entry by the caller
        yield entry, exc
        return
    if not found:
        yield entry, NoMatch("the input matched no files")
    for info in found:
        yield entry, info


def _resolve_local(entry, on_hidden):
    if entry.startswith("file://"):
        prefix, path = "file://", entry[len("file://"):]
    else:  # as expand_pattern takes a plain path: absolute, ~ expanded
        prefix, path = "", os.path.abspath(os.path.expanduser(entry))
    try:
        st = os.stat(path)
    except OSError as exc:
        yield entry, exc
        return
    if stat_module.S_ISDIR(st.st_mode):
        found = list(walk_local(path, on_hidden, prefix))
        if not found:
            yield entry, NoMatch("the input matched no files")
        for info in found:
            yield entry, info
    else:
        yield entry, _local_info(prefix + path, st, explicit=True)


def _list_folder(folder, storage_options):
    """``(fs, {path: details})``: one paged listing of an object-store folder ({} on failure)."""
    fs, path = filesystem(folder, storage_options)
    try:
        return fs, {d["name"]: d for d in fs.ls(path, detail=True)}
    except Exception as exc:  # the entries are then asked for one by one
        log.debug("cannot list %r: %s", folder, exc)
        return fs, {}
