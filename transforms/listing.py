"""Beam side of :mod:`gridtsne.listing`: patterns and manifests in, file-info records out.

Globs are expanded by workers (one DoFn call per pattern, then a reshuffle that spreads the
files), so listing millions of objects never happens on the launching machine. Under an
:class:`~gridtsne.input_policy.InputPolicy` a refused manifest, pattern (manifest lines are
patterns too) or listed file becomes an ``errors/`` row, ``Refused``, and is never read.
"""
import functools
import logging

import apache_beam as beam

from gridtsne.decode import STAGE_LIST
from gridtsne.failures import is_machine_failure
from gridtsne.input_policy import refusal_in, refused_message, unsafe_address
from gridtsne.listing import expand_pattern, merge_duplicates, read_manifest
from gridtsne.rows import error_row
from transforms import embed_counters as C

log = logging.getLogger(__name__)

ERRORS = "errors"


class ExpandPatternsFn(beam.DoFn):
    """A URL, directory or glob -> its files as :class:`~gridtsne.listing.FileInfo`.

    A pattern that fails to list or matches nothing becomes an ``errors/`` row (stage
    ``list``) on the ``errors`` output, so a mistyped ``--input`` is reported, not ignored.
    """

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

    def process(self, pattern):
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
    """A manifest URL -> its entries (one URL, path or glob per line), each checked later as a
    pattern by :class:`ExpandPatternsFn`."""

    def __init__(self, storage_options=None, policy=None):
        self._storage_options = dict(storage_options or {})
        self._policy = policy
        self._errors = C.counter(C.LISTING_ERRORS)

    def process(self, manifest):
        refused = _refusal_of(self._policy)(manifest)
        if refused:
            self._errors.inc()
            yield refused
            return
        try:
            yield from read_manifest(manifest, self._storage_options)
        except Exception as exc:
            if is_machine_failure(exc) and not refusal_in(exc):
                raise
            self._errors.inc()
            yield beam.pvalue.TaggedOutput(ERRORS, _list_error(manifest, exc))


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
    the files over all workers).
    """

    def __init__(self, inputs=(), manifests=(), storage_options=None, policy=None):
        super().__init__()
        self._inputs = list(inputs)
        self._manifests = list(manifests)
        self._policy = policy
        self._storage_options = policy.storage_options(storage_options) if policy \
            else dict(storage_options or {})
        if not self._inputs and not self._manifests:
            raise ValueError("ListFiles needs at least one input pattern or manifest")

    def expand(self, pbegin):
        patterns = [pbegin | "CreatePatterns" >> beam.Create(self._inputs)]
        errors = []
        if self._manifests:
            entries, manifest_errors = (
                pbegin
                | "CreateManifests" >> beam.Create(self._manifests)
                | "ReadManifests" >> beam.ParDo(ReadManifestFn(self._storage_options,
                                                              self._policy))
                .with_outputs(ERRORS, main="entries"))
            patterns.append(entries | "ReshuffleManifestEntries" >> beam.Reshuffle())
            errors.append(manifest_errors)
        files, list_errors = (
            patterns
            | "FlattenPatterns" >> beam.Flatten()
            | "ExpandPatterns" >> beam.ParDo(ExpandPatternsFn(self._storage_options,
                                                              self._policy))
            .with_outputs(ERRORS, main="files"))
        errors.append(list_errors)
        files = (files
                 | "KeyFilesByUri" >> beam.Map(lambda info: (info.uri, info))
                 | "GroupFilesByUri" >> beam.GroupByKey()
                 | "MergeDuplicateFiles" >> beam.Map(_merge_listings))
        return files, errors | "FlattenListingErrors" >> beam.Flatten()
