"""Beam side of :mod:`gridtsne.listing`: patterns and manifests in, file-info records out.

Globs are expanded by workers (one DoFn call per pattern) and manifests read by workers in
chunks of lines that a reshuffle spreads. Listed files travel in lists of up to
:data:`LIST_BATCH` records, never one element per file, until the end: one grouping of those
lists by a shard of the uri (:data:`URI_SHARDS` keys, a stable hash) drops duplicates and
spreads the files over the workers, then each file leaves as its own element. Listing a million
objects therefore never happens on the launching machine, and costs Beam a few thousand
elements instead of several per file. Under an :class:`~gridtsne.input_policy.InputPolicy` a
refused manifest, pattern, manifest line or listed file becomes an ``errors/`` row,
``Refused``, and is never read.
"""
import functools
import logging
import typing
import zlib

import apache_beam as beam

from gridtsne.decode import STAGE_LIST
from gridtsne.failures import is_machine_failure
from gridtsne.input_policy import refused_message, unsafe_address
from gridtsne.refusals import refusal_in
from gridtsne.listing import (FileInfo, expand_pattern, merge_duplicates, read_manifest,
                              resolve_entries)
from gridtsne.rows import error_row
from transforms import embed_counters as C

log = logging.getLogger(__name__)

ERRORS = "errors"
# A marker each listing call emits when it begins (see ListFiles.started).
STARTED = "started"
# Manifest lines per element: few elements to move, and enough lines per folder for one listing.
MANIFEST_CHUNK = 10_000
# Listed files per element until the duplicates are dropped: Beam's cost is per element.
LIST_BATCH = 5_000
# Keys of the grouping that drops duplicates: the files of one key are merged (and go on) on
# one worker, so this many keys also bound how widely the listed files are spread.
URI_SHARDS = 256


class _ListingFn(beam.DoFn):
    """What both listing DoFns hold: storage options, the input policy and the counters."""

    def __init__(self, storage_options=None, policy=None):
        self._storage_options = dict(storage_options or {})
        self._policy = policy
        self._refusal = None
        self._patterns = C.counter(C.PATTERNS)
        self._listed = C.counter(C.FILES_LISTED)
        self._hidden = C.counter(C.HIDDEN_SKIPPED)
        self._errors = C.counter(C.LISTING_ERRORS)

    def setup(self):
        self._refusal = _refusal_of(self._policy)

    def _take(self, info, batch):
        """One listed file: its ``Refused`` row, or into ``batch``, which goes out full."""
        refused = self._refusal(info.uri)
        if refused:  # a symlink leading outside, a link of a web listing ...
            self._errors.inc()
            yield refused
            return
        batch.append(file_fields(info))
        if len(batch) >= LIST_BATCH:
            yield from self._flush(batch)

    def _flush(self, batch):
        """``batch`` out as one element (if it holds any file), and emptied."""
        if batch:
            self._listed.inc(len(batch))
            yield list(batch)
            batch.clear()


class ExpandPatternsFn(_ListingFn):
    """A URL, directory or glob -> its files as lists of up to :data:`LIST_BATCH`
    :class:`~gridtsne.listing.FileInfo` records, each as its :func:`file_fields` tuple.

    A pattern that fails to list or matches nothing becomes an ``errors/`` row (stage
    ``list``) on the ``errors`` output, so a mistyped ``--input`` is reported, not ignored.
    """

    def process(self, pattern):
        yield beam.pvalue.TaggedOutput(STARTED, pattern)
        self._patterns.inc()
        count = 0
        refused = self._refusal(pattern)
        if refused:
            self._errors.inc()
            yield refused
            return
        batch = []
        try:
            for info in expand_pattern(pattern, self._storage_options,
                                       on_hidden=lambda _: self._hidden.inc()):
                count += 1
                yield from self._take(info, batch)
        except Exception as exc:
            # Storage down: retry the bundle, never publish half a listing.
            if is_machine_failure(exc) and not refusal_in(exc):
                raise
            self._errors.inc()
            log.warning("cannot list %r: %s: %s", pattern, type(exc).__name__, exc)
            yield from self._flush(batch)  # the files listed before the failure go on
            yield beam.pvalue.TaggedOutput(ERRORS, _list_error(pattern, exc))
            return
        yield from self._flush(batch)
        if count == 0:
            self._errors.inc()
            log.warning("input %r matched no files", pattern)
            yield beam.pvalue.TaggedOutput(ERRORS, error_row(
                pattern, STAGE_LIST, "NoMatch", "the input matched no files"))


def _list_error(url, exc):
    why = refusal_in(exc)  # a redirect or an address the policy refused, wrapped by fsspec
    if why:
        return error_row(url, STAGE_LIST, "Refused", refused_message(why))
    return error_row(url, STAGE_LIST, type(exc).__name__, str(exc) or repr(exc))


def _refusal_of(policy):
    """``uri -> None or its errors/ row`` under ``policy`` (host verdicts cached per worker)."""
    if policy is None:
        return lambda uri: None
    judge = functools.lru_cache(maxsize=1024)(unsafe_address)

    def refusal(uri):
        why = policy.refusal(uri, resolve_hosts=judge)
        if why is None:
            return None
        log.warning("refused %r: %s", uri, why)
        return beam.pvalue.TaggedOutput(ERRORS, error_row(uri, STAGE_LIST, "Refused",
                                                          refused_message(why)))
    return refusal


class ReadManifestFn(beam.DoFn):
    """A manifest URL -> its entries, in lists of up to ``chunk`` lines (so a million-line
    manifest is a hundred elements to spread over workers, not a million)."""

    def __init__(self, storage_options=None, chunk=MANIFEST_CHUNK, policy=None):
        self._storage_options = dict(storage_options or {})
        self._chunk = chunk
        self._policy = policy
        self._refusal = None
        self._errors = C.counter(C.LISTING_ERRORS)

    def setup(self):
        self._refusal = _refusal_of(self._policy)

    def process(self, manifest):
        yield beam.pvalue.TaggedOutput(STARTED, manifest)
        refused = self._refusal(manifest)
        if refused:
            self._errors.inc()
            yield refused
            return
        try:
            chunk = []
            for entry in read_manifest(manifest, self._storage_options):
                chunk.append(entry)
                if len(chunk) >= self._chunk:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
        except Exception as exc:
            if is_machine_failure(exc) and not refusal_in(exc):
                raise
            self._errors.inc()
            yield beam.pvalue.TaggedOutput(ERRORS, _list_error(manifest, exc))


class ResolveEntriesFn(_ListingFn):
    """A list of manifest entries -> their files (:func:`gridtsne.listing.resolve_entries`), as
    lists of up to :data:`LIST_BATCH` :class:`~gridtsne.listing.FileInfo` records, each as its
    :func:`file_fields` tuple.

    An entry that cannot be listed or matches nothing becomes an ``errors/`` row (stage
    ``list``) on the ``errors`` output; the other entries of the list go on. Under a policy each
    entry is checked before it is listed, and each file it lists before it goes on (a ``Refused``
    row otherwise); a failure of the machine (storage down) fails the bundle instead.
    """

    def process(self, entries):
        self._patterns.inc(len(entries))
        allowed = []
        for entry in entries:
            refused = self._refusal(entry)
            if refused:
                self._errors.inc()
                yield refused
            else:
                allowed.append(entry)
        batch = []
        for entry, found in resolve_entries(allowed, self._storage_options,
                                            on_hidden=lambda _: self._hidden.inc()):
            if isinstance(found, FileInfo):
                yield from self._take(found, batch)
                continue
            if is_machine_failure(found) and not refusal_in(found):
                raise found
            self._errors.inc()
            log.warning("cannot list %r: %s: %s", entry, type(found).__name__, found)
            yield beam.pvalue.TaggedOutput(ERRORS, _list_error(entry, found))
        yield from self._flush(batch)


# (shard, [file_fields tuples]): declared, so that Beam never infers a coder from FileInfo's
# annotations (a None size or etag would not encode as the int or str they say).
_SHARD_TYPE = typing.Tuple[int, typing.Any]


def uri_shard(uri, shards=URI_SHARDS):
    """The shard of ``uri``: a hash that every worker computes alike (not Python's ``hash``,
    which differs between processes), so the duplicates of a file always meet."""
    return zlib.crc32(uri.encode("utf-8", "surrogatepass")) % shards


def file_fields(info):
    """``info`` as a tuple, ``FileInfo(*file_fields(info)) == info``.

    A tuple of str, int, None and bool crosses between stages through Beam's compiled coder;
    a FileInfo itself is pickled there, one call per file (and more for Beam's size samples):
    the most of what listing cost in Beam before.
    """
    return (info.uri, info.size, info.mtime_us, info.etag, info.explicit)


def shard_batch(batch, shards=URI_SHARDS):
    """A list of :func:`file_fields` tuples -> ``(shard, [those of that shard])`` pairs, one
    per shard used."""
    by_shard = {}
    for fields in batch:
        by_shard.setdefault(uri_shard(fields[0], shards), []).append(fields)
    return list(by_shard.items())


def merge_shard(element):
    """``(shard, lists of file-info fields)`` -> each uri's :class:`FileInfo` once
    (:func:`~gridtsne.listing.merge_duplicates`)."""
    _, lists = element
    by_uri = {}
    duplicates = 0
    for batch in lists:
        for fields in batch:
            info = FileInfo(*fields)
            seen = by_uri.get(info.uri)
            if seen is None:
                by_uri[info.uri] = info
            else:
                duplicates += 1
                by_uri[info.uri] = merge_duplicates([seen, info])
    if duplicates:
        C.counter(C.DUPLICATES_DROPPED).inc(duplicates)
    return by_uri.values()


class ListFiles(beam.PTransform):
    """``--input`` patterns and ``--manifest`` files -> (file infos, listing error rows).

    Applied to a pipeline (``p | ListFiles(...)``). Returns a tuple ``(files, errors)``; a
    file that several inputs match comes out once (the lists of listed files are grouped by a
    shard of the uri, which also spreads reading the files over the workers). Once applied,
    ``started`` is a tuple of PCollections (patterns, and manifests if any) of one marker per
    pattern and manifest, emitted as its listing begins (a job times its listing with them;
    not flattened, so that a mark taken on them is taken where they are made, see
    :class:`transforms.phase_marks.MarkTimes`).
    """

    def __init__(self, inputs=(), manifests=(), storage_options=None, policy=None):
        super().__init__()
        self._inputs = list(inputs)
        self._manifests = list(manifests)
        self._storage_options = dict(storage_options or {})
        self._policy = policy
        if not self._inputs and not self._manifests:
            raise ValueError("ListFiles needs at least one input pattern or manifest")

    def expand(self, pbegin):
        expanded = (
            pbegin
            | "CreatePatterns" >> beam.Create(self._inputs)
            | "ExpandPatterns" >> beam.ParDo(ExpandPatternsFn(self._storage_options,
                                                              self._policy))
            .with_outputs(ERRORS, STARTED, main="batches"))
        # Sharded where they are listed: what crosses stages is tuples (see file_fields).
        found = [expanded.batches | "ShardListedFiles" >> beam.FlatMap(
            shard_batch).with_output_types(_SHARD_TYPE)]
        errors, started = [expanded[ERRORS]], [expanded[STARTED]]
        if self._manifests:
            read = (
                pbegin
                | "CreateManifests" >> beam.Create(self._manifests)
                | "ReadManifests" >> beam.ParDo(ReadManifestFn(self._storage_options,
                                                              policy=self._policy))
                .with_outputs(ERRORS, STARTED, main="entries"))
            listed, entry_errors = (
                read.entries
                | "ReshuffleManifestEntries" >> beam.Reshuffle()
                | "ResolveManifestEntries" >> beam.ParDo(ResolveEntriesFn(self._storage_options,
                                                                          self._policy))
                .with_outputs(ERRORS, main="batches"))
            found.append(listed | "ShardManifestFiles" >> beam.FlatMap(
                shard_batch).with_output_types(_SHARD_TYPE))
            errors += [read[ERRORS], entry_errors]
            started.append(read[STARTED])
        self.started = tuple(started)
        files = (found
                 | "FlattenShards" >> beam.Flatten()
                 | "GroupFilesByShard" >> beam.GroupByKey()
                 | "MergeDuplicateFiles" >> beam.FlatMap(merge_shard))
        return files, errors | "FlattenListingErrors" >> beam.Flatten()
