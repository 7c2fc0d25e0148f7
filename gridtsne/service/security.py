"""What a caller may name: URL prefixes on the operator's allowlist, and no internal hosts.

Every URL of a request is checked before a job is created; a refusal is a :class:`Refused`
that names the field and says why (the app answers 400 with it and starts nothing). The rule
itself is :mod:`gridtsne.input_policy`, which each job applies again where it reads.
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
    """The normalized ``url`` if it may be used; raises :class:`Refused` saying why not.

    The rule is :class:`gridtsne.input_policy.InputPolicy`'s, the same one each job applies
    again (``--allow_input``) to everything it opens: manifest lines, listed files, redirects.
    """
    try:
        return input_policy.InputPolicy(tuple(prefixes)).check(url)
    except input_policy.Refused as err:
        raise Refused(field, url, err.why) from None


def output_url(field, output, root, default_name):
    """Where a job writes: ``<root>/<default_name>``, ``<root>/<name>``, or a URL under root."""
    if output is None:
        return _join(root, default_name)
    if "/" not in output and ":" not in output:
        if not _MAP_NAME.fullmatch(output):
            raise Refused(field, output, "is not a usable map name (1-64 letters, digits, _.-)")
        return _join(root, output)
    normal = check_url(field, output, [root])
    if normal.rstrip("/") == normalize_prefix(root).rstrip("/"):
        raise Refused(field, output, "is the output root itself; name a map under it")
    return normal.rstrip("/")


def _join(root, name):
    return normalize_prefix(root).rstrip("/") + "/" + name
