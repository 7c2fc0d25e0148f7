"""What a caller may name: URL prefixes on the operator's allowlist, no internal hosts, and
no output inside or above another map.

Every URL of a request is checked before a job is created; a refusal is a :class:`Refused`
that names the field and says why (the app answers 400 with it and starts nothing). The rule
itself is :mod:`gridtsne.input_policy`, which each job applies again where it reads. Outputs
are compared in their canonical form (:func:`canonical_output`) by prefix (:func:`overlaps`),
so ``<root>/theirs/versions/v/site`` is recognised as part of ``<root>/theirs``.
"""
import re

from gridtsne import input_policy
from gridtsne.input_policy import (  # noqa: F401 (WEB_SCHEMES, unsafe_address: the app and tests)
    WEB_SCHEMES, normalize_prefix, split_url, unsafe_address)

_MAP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


class Refused(ValueError):
    """A URL the service will not touch; ``str()`` is the message for the caller."""

    def __init__(self, field, url, why):
        super().__init__(f"{field}: {url!r} {why}")
        self.field = field


def check_url(field, url, prefixes):
    """``url`` as the caller spelled it, if it may be used; raises :class:`Refused` saying why not.

    The rule is :class:`gridtsne.input_policy.InputPolicy`'s, the same one each job applies
    again (``--allow_input``) to everything it opens: manifest lines, listed files, redirects.
    """
    try:
        input_policy.InputPolicy(tuple(prefixes)).check(url)
    except input_policy.Refused as err:
        raise Refused(field, url, err.why) from None
    # The job gets the caller's own spelling (the map then names images as the caller does,
    # not by the server's resolved paths); the job enforces the same policy where it reads.
    return str(url).strip()


def output_url(field, output, root, default_name):
    """Where a job writes: ``<root>/<default_name>``, ``<root>/<name>``, or a URL under root."""
    if output is None:
        return _join(root, default_name)
    if "/" not in output and ":" not in output:
        if not _MAP_NAME.fullmatch(output):
            raise Refused(field, output, "is not a usable map name (1-64 letters, digits, _.-)")
        return _join(root, output)
    check_url(field, output, [root])
    normal = canonical_output(split_url(output)[1])
    if normal == canonical_output(normalize_prefix(root)):
        raise Refused(field, output, "is the output root itself; name a map under it")
    return normal


def _join(root, name):
    return canonical_output(normalize_prefix(root).rstrip("/") + "/" + name)


def canonical_output(url):
    """``url`` in the one spelling used to compare outputs: scheme in lower case, no empty or
    ``.`` segments, no trailing slash (a local path is already a ``realpath``)."""
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        scheme, rest = "", scheme
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    lead = "/" if not sep and rest.startswith("/") else ""
    return (f"{scheme.lower()}://" if sep else "") + lead + "/".join(parts)


def overlaps(a, b):
    """True when output ``a`` is ``b``, lies inside it, or contains it (canonical forms)."""
    a, b = canonical_output(a), canonical_output(b)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")
