"""Reading a batch of listed files' bytes and hashing them, at close to the cost of the reads.

Three ways, chosen per file, all giving the same :class:`Fetched` as
:func:`gridtsne.ingest.fetch` would:

* a local file named as an image: plain ``open`` + ``read`` on a thread, a contiguous slice of
  the batch per thread (fsspec's per-file path handling costs more than the read itself);
* an image on an async filesystem (s3fs, gcsfs, http): the whole batch in one ``cat_ranges``
  call, so the requests run concurrently on fsspec's event loop instead of one per thread;
* anything else (a file to sniff first, ``memory://``, ``::`` chains, a file too large or of
  unknown size): :func:`gridtsne.ingest.fetch`, one file per thread, as before.

A file whose concurrent read fails is read again alone by :func:`gridtsne.ingest.fetch`, so
its error (or its bytes) are exactly what that path gives.

Under an input policy (``--allow_input``) a local file is checked by the policy (where its
symlinks lead now) just before its plain read, and every other file goes through
:func:`gridtsne.ingest.fetch` with the policy (web reads then use connections that check their
address and every redirect), never through the batched ``cat_ranges``.
"""
import concurrent.futures
import dataclasses
import hashlib
import logging
import os

from gridtsne.decode import STAGE_DECODE, STAGE_READ, DecodeError
from gridtsne.failures import is_machine_failure
from gridtsne.ingest import fetch, is_candidate, too_large
from gridtsne.input_policy import refused_message
from gridtsne.refusals import Refused
from gridtsne.storage import filesystem

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Fetched:
    """One listed file after :func:`fetch_batch`: its bytes, or why there are none.

    ``data`` is None and ``error`` None for a file whose content is not an image (skipped).
    """

    info: object  # gridtsne.listing.FileInfo
    data: bytes = None
    sha256: str = None
    error: DecodeError = None


def _fetched(info, data):
    if data is None:
        return Fetched(info)
    return Fetched(info, data=data, sha256=hashlib.sha256(data).hexdigest())


def fetch_one(info, max_bytes, storage_options, policy=None):
    """:class:`Fetched` of one file through :func:`gridtsne.ingest.fetch` (never raises)."""
    try:
        data = fetch(info, max_bytes, storage_options, policy)
    except DecodeError as exc:
        return Fetched(info, error=exc)
    except Exception as exc:  # a bug must cost one file, not its batch
        if is_machine_failure(exc):  # the machine's: the bundle fails and is retried
            raise
        log.exception("unexpected failure reading %s", info.uri)
        return Fetched(info, error=DecodeError.from_exception(STAGE_DECODE, exc))
    return _fetched(info, data)


def local_path(uri):
    """The operating system path of a local file ``uri`` (plain path or ``file://``), else None."""
    if "::" in uri:
        return None
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if "://" in uri or uri.startswith("file:"):
        return None
    return uri


def read_local(info, path, max_bytes, policy=None):
    """:class:`Fetched` of a local image file read with ``open``; errors as :func:`fetch`'s."""
    if policy is not None:
        try:
            policy.guard(info.uri)
        except Refused as err:
            return Fetched(info, error=DecodeError(STAGE_READ, "Refused",
                                                   refused_message(err.why)))
    if info.size is not None and info.size > max_bytes:
        return Fetched(info, error=too_large(info.size, max_bytes))
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                return Fetched(info, error=too_large(size, max_bytes))
            # Ask for one byte more than the file has: a file grown since (or a special file
            # reporting size 0) is read on, up to max_bytes + 1, as fetch() does.
            data = fh.read(size + 1)
            if len(data) > size:
                data += fh.read(max_bytes + 1 - len(data))
    except Exception as exc:
        if is_machine_failure(exc):  # the machine's: the bundle fails and is retried
            raise
        return Fetched(info, error=DecodeError.from_exception(STAGE_READ, exc))
    if len(data) > max_bytes:
        return Fetched(info, error=too_large(f"more than {max_bytes:,}", max_bytes))
    return _fetched(info, data)


def _read_locals(items, max_bytes, policy=None):
    return [read_local(info, path, max_bytes, policy) for info, path in items]


def _cat_batch(fs, items, max_bytes, storage_options):
    """One concurrent ``cat_ranges`` for ``items`` (info, path); failures re-read alone."""
    datas = fs.cat_ranges([path for _, path in items], 0, max_bytes + 1, on_error="return")
    out = []
    for (info, _), data in zip(items, datas):
        if isinstance(data, bytes) and len(data) <= max_bytes and (
                info.size is None or len(data) == info.size):
            out.append(_fetched(info, data))
        else:  # an error, a short read or an oversized file: the per-file path decides
            out.append(fetch_one(info, max_bytes, storage_options))
    return out


def _async_filesystem(uri, storage_options, cache):
    """The async fsspec filesystem that reads ``uri`` (one per protocol per batch), or None."""
    if "::" in uri or "://" not in uri:
        return None
    protocol = uri.split("://", 1)[0]
    if protocol not in cache:
        fs = None
        try:
            import fsspec.asyn

            found, _ = filesystem(uri, storage_options)
            if isinstance(found, fsspec.asyn.AsyncFileSystem):
                fs = found
        except Exception:  # an unknown protocol: the per-file path reports it
            pass
        cache[protocol] = fs
    return cache[protocol]


class PendingFetch:
    """A batch being read by :func:`start_fetch`; :meth:`result` waits for it."""

    def __init__(self, count, parts):
        self._count = count
        self._parts = parts  # (indices, future of a list of Fetched)

    def result(self):
        """:class:`Fetched` per file info, in input order."""
        out = [None] * self._count
        for indices, future in self._parts:
            for i, fetched in zip(indices, future.result()):
                out[i] = fetched
        return out


class _Done:
    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


def _split(items, parts):
    """``items`` in ``parts`` contiguous slices of nearly equal length (none empty)."""
    parts = max(1, min(parts, len(items)))
    step, extra = divmod(len(items), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + step + (1 if k < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def start_fetch(infos, max_bytes, storage_options=None, pool=None, threads=None, policy=None):
    """Start reading ``infos`` on ``pool`` (inline when None); a :class:`PendingFetch`.

    ``threads`` is how many of the pool's threads the local reads are spread over (default:
    the pool's size). ``policy`` (an :class:`~gridtsne.input_policy.InputPolicy`) is checked
    for every file before its bytes are read.
    """
    if threads is None:
        threads = getattr(pool, "_max_workers", 1) if pool is not None else 1
    submit = pool.submit if pool is not None else (lambda fn, *a: _Done(fn(*a)))
    local, by_fs, single = [], {}, []
    fs_cache = {}
    for i, info in enumerate(infos):
        if not is_candidate(info):
            single.append(i)
            continue
        path = local_path(info.uri)
        if path is not None:
            local.append((i, path))
            continue
        fs = None
        if policy is None and (info.size is None or 0 < info.size <= max_bytes):
            fs = _async_filesystem(info.uri, storage_options, fs_cache)
        if fs is None:
            single.append(i)
        else:
            by_fs.setdefault(id(fs), (fs, []))[1].append((i, fs._strip_protocol(info.uri)))
    parts = []
    for fs, members in by_fs.values():
        items = [(infos[i], path) for i, path in members]
        parts.append(([i for i, _ in members],
                      submit(_cat_batch, fs, items, max_bytes, storage_options)))
    for chunk in _split(local, threads) if local else []:
        parts.append(([i for i, _ in chunk],
                      submit(_read_locals, [(infos[i], p) for i, p in chunk], max_bytes,
                             policy)))
    for i in single:
        parts.append(([i], submit(lambda info: [fetch_one(info, max_bytes, storage_options,
                                                          policy)],
                                  infos[i])))
    return PendingFetch(len(infos), parts)


def fetch_batch(infos, max_bytes, storage_options=None, pool=None, policy=None):
    """:class:`Fetched` per file info (threads of ``pool`` when given), in input order."""
    return start_fetch(infos, max_bytes, storage_options, pool, policy=policy).result()


def read_pool(threads):
    """The executor :func:`start_fetch` reads on."""
    return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="ReadBatch")
