"""Beam side of :mod:`gridtsne.listing`: patterns and manifests in, file-info records out.

Globs are expanded by workers (one DoFn call per pattern) and manifests read by workers in
chunks of lines that a reshuffle spreads, then one grouping by uri drops duplicates and spreads
the files, so listing millions of objects never happens on the launching machine. Under an
:class:`~gridtsne.input_policy.InputPolicy` a refused manifest, pattern, manifest line or
listed file becomes an ``errors/`` row, ``Refused``, and is never read.
"""
import functools
import logging

import apache_beam as beam

from gridtsne.decode import STAGE_LIST
from gridtsne.failures import is_machine_failure
from gridtsne.input_policy import refusal_in, refused_message, unsafe_address
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


class ExpandPatternsFn(_ListingFn):
    """A URL, directory or glob -> its files as :class:`~gridtsne.listing.FileInfo`.

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
        try:
            for info in expand_pattern(pattern, self._storage_options,
                                       on_hidden=lambda _: self._hidden.inc()):
                count += 1
                refused = self._refusal(info.uri)
                if refused:  # a symlink leading outside, a link of a web listing ...
                    self._errors.inc()
                    yield refused
                    continue
                self._listed.inc()
                yield info
        except Exception as exc:
            # Storage down: retry the bundle, never publish half a listing.
            if is_machine_failure(exc) and not refusal_in(exc):
                raise
            self._errors.inc()
            log.warning("cannot list %r: %s: %s", pattern, type(exc).__name__, exc)
            yield beam.pvalue.TaggedOutput(ERRORS, _list_error(pattern, exc))
            return
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
    """A list of manifest entries -> their files (:func:`gridtsne.listing.resolve_entries`).

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
        listed = 0
        for entry, found in resolve_entries(allowed, self._storage_options,
                                            on_hidden=lambda _: self._hidden.inc()):
            if isinstance(found, FileInfo):
                refused = self._refusal(found.uri)
                if refused:  # a symlink leading outside, a link of a web listing ...
                    self._errors.inc()
                    yield refused
                    continue
                listed += 1
                yield found
                continue
            if is_machine_failure(found) and not refusal_in(found):
                raise found
            self._errors.inc()
            log.warning("cannot list %r: %s: %s", entry, type(found).__name__, found)
            yield beam.pvalue.TaggedOutput(ERRORS, _list_error(entry, found))
        self._listed.inc(listed)


def _merge_listings(element):
    uri, infos = element
    infos = list(infos)
    if len(infos) > 1:
        C.counter(C.DUPLICATES_DROPPED).inc(len(infos) - 1)
    return merge_duplicates(infos)


class ListFiles(beam.PTransform):
    """``--input`` patterns and ``--manifest`` files -> (file infos, listing error rows).

    Applied to a pipeline (``p | ListFiles(...)``). Returns a tuple ``(files, errors)``; a
    file that several inputs match comes out once (grouped by uri, which also spreads reading
    the files over all workers). Once applied, ``started`` is a PCollection of one marker per
    pattern and manifest, emitted as its listing begins (a job times its listing with it).
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
            .with_outputs(ERRORS, STARTED, main="files"))
        found, errors, started = [expanded.files], [expanded[ERRORS]], [expanded[STARTED]]
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
                .with_outputs(ERRORS, main="files"))
            found.append(listed)
            errors += [read[ERRORS], entry_errors]
            started.append(read[STARTED])
        self.started = started | "FlattenStarted" >> beam.Flatten()
        files = (found
                 | "FlattenFiles" >> beam.Flatten()
                 | "KeyFilesByUri" >> beam.Map(lambda info: (info.uri, info))
                 | "GroupFilesByUri" >> beam.GroupByKey()
                 | "MergeDuplicateFiles" >> beam.Map(_merge_listings))
        return files, errors | "FlattenListingErrors" >> beam.Flatten()
