"""What a caller may name: URL prefixes on the operator's allowlist, no internal hosts, and
no output inside or above another map.

Every URL of a request is checked before a job is created; a refusal is a :class:`Refused`
that names the field and says why (the app answers 400 with it and starts nothing). Outputs are
compared in their canonical form (:func:`canonical_output`) by prefix (:func:`overlaps`), so
``<root>/theirs/versions/v/site`` is recognised as part of ``<root>/theirs``.
"""
import ipaddress
import os
import re
import socket
import urllib.parse

WEB_SCHEMES = ("http://", "https://")
_IPV6_HOST = re.compile(r"\[[0-9A-Fa-f:.%]*\]")
_MAP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


class Refused(ValueError):
    """A URL the service will not touch; ``str()`` is the message for the caller."""

    def __init__(self, field, url, why):
        super().__init__(f"{field}: {url!r} {why}")
        self.field = field


def split_url(url):
    """``(scheme, normalized URL)``; a local path (or ``file://``) becomes ``file`` + a real path.

    Raises ValueError for what is never accepted whatever the allowlist: ``::`` chains, ``..``
    segments, relative local paths.
    """
    url = str(url).strip()
    if "::" in _IPV6_HOST.sub("", url):
        raise ValueError("is a '::' URL chain, which the service does not accept")
    if "\x00" in url or any(ord(c) < 32 for c in url):
        raise ValueError("contains control characters")
    scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
    if scheme == "file":
        path = url[len("file://"):] if url.lower().startswith("file://") else url
        if not path.startswith("/"):
            raise ValueError("is a relative path; give an absolute path or a URL")
        if ".." in path.split("/"):
            raise ValueError("contains a '..' segment")
        # realpath: a symlink inside an allowed folder must not lead outside it.
        return "file", os.path.realpath(path)
    rest = url.split("://", 1)[1]
    if ".." in rest.split("/"):
        raise ValueError("contains a '..' segment")
    return scheme, f"{scheme}://{rest}"


def _under(url, prefix):
    if prefix.endswith("://"):
        return url.startswith(prefix)
    base = prefix.rstrip("/")
    return url == base or url.startswith(base + "/")


def normalize_prefix(prefix):
    """An allowlist entry in the form :func:`split_url` gives (``s3://`` alone allows all of S3)."""
    if prefix.endswith("://"):
        return prefix.lower()
    return split_url(prefix)[1]


def unsafe_address(host):
    """Why ``host`` must not be fetched (it resolves to an internal address), or None."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as err:
        return f"names a host that does not resolve ({err})"
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        mapped = getattr(address, "ipv4_mapped", None)
        address = mapped or address
        for kind in ("loopback", "link_local", "private", "reserved", "multicast",
                     "unspecified"):
            if getattr(address, f"is_{kind}"):
                return f"resolves to {address}, a {kind.replace('_', '-')} address"
        if not address.is_global:
            return f"resolves to {address}, which is not a public address"
    return None


def check_url(field, url, prefixes):
    """The normalized ``url`` if it may be used; raises :class:`Refused` saying why not."""
    try:
        scheme, normal = split_url(url)
    except ValueError as err:
        raise Refused(field, url, str(err)) from None
    allowed = [normalize_prefix(p) for p in prefixes]
    schemes = sorted({p.split("://", 1)[0] if "://" in p else "file" for p in allowed})
    if scheme not in schemes:
        raise Refused(field, url, f"uses the scheme {scheme!r}, which is not allowed here "
                                  f"(allowed: {', '.join(schemes) or 'none'})")
    if scheme + "://" in WEB_SCHEMES:
        host = urllib.parse.urlsplit(normal).hostname
        why = unsafe_address(host) if host else "has no host"
        if why:
            raise Refused(field, url, why)
    if not any(_under(normal, p) for p in allowed):
        raise Refused(field, url, "is outside the prefixes this server accepts "
                                  f"({', '.join(allowed)})")
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
