"""Which inputs a job may read: an allowlist of URL prefixes, checked wherever bytes are read.

``gridtsne serve`` checks the URLs of a request with it, and passes the same allowlist to each
job (``--allow_input``), which checks every URL it would open: manifest lines, the entries a
listing finds (local ones by the real path their symlinks lead to), each file again just before
its bytes are read, and every hop of an HTTP redirect. Web fetches connect only to the
addresses their check resolved (:meth:`InputPolicy.storage_options`), so a host name that
re-resolves to an internal address between the check and the connection is not reached.

A job without ``--allow_input`` (``gridtsne run`` on one's own machine) checks nothing.
"""
import dataclasses
import ipaddress
import os
import re
import socket
import urllib.parse

# What a refusal is, and which addresses are refused, live below both this module and the
# connections it makes (gridtsne.pinned_http).
from gridtsne.refusals import Refused, address_refusal

WEB_SCHEMES = ("http://", "https://")
_IPV6_HOST = re.compile(r"\[[0-9A-Fa-f:.%]*\]")


def split_url(url):
    """``(scheme, normalized URL)``; a local path (or ``file://``) becomes ``file`` + a real path.

    Raises ValueError for what is never accepted whatever the allowlist: ``::`` chains, ``..``
    segments (also percent-encoded), relative local paths, control characters, and web URLs
    with a user name or a backslash in their host part.
    """
    url = str(url).strip()
    if "::" in _IPV6_HOST.sub("", url):
        raise ValueError("is a '::' URL chain, which is not accepted here")
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
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
    if ".." in urllib.parse.unquote(rest).replace("\\", "/").split("/"):
        raise ValueError("contains a '..' segment")
    if scheme + "://" in WEB_SCHEMES:
        netloc, slash, path = rest.partition("/")
        if "@" in netloc or "\\" in netloc:
            raise ValueError("names a user or a backslash in its host part")
        rest = netloc.lower() + slash + path  # host names are case-insensitive
    return scheme, f"{scheme}://{rest}"


def under(url, prefix):
    """Whether normalized ``url`` lies under normalized ``prefix`` (a whole path segment)."""
    if prefix.endswith("://"):
        return url.startswith(prefix)
    base = prefix.rstrip("/")
    return url == base or url.startswith(base + "/")


def normalize_prefix(prefix):
    """An allowlist entry in the form :func:`split_url` gives (``s3://`` alone allows all of S3)."""
    if prefix.endswith("://"):
        return prefix.lower()
    return split_url(prefix)[1]


def resolve(host):
    """Every address ``host`` resolves to (``getaddrinfo``), as strings."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({info[4][0] for info in infos})


def unsafe_address(host):
    """Why ``host`` must not be fetched (it resolves to an internal address), or None."""
    try:
        addresses = resolve(host)
    except (OSError, UnicodeError) as err:
        return f"names a host that does not resolve ({err})"
    for address in addresses:
        why = address_refusal(address)
        if why:
            return why
    return None


def _literal_host(url):
    """``(ip address, port)`` of a web URL whose host is an IP address, else None."""
    parts = urllib.parse.urlsplit(url)
    try:
        return ipaddress.ip_address(parts.hostname or ""), parts.port
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class InputPolicy:
    """The allowlist: inputs must lie under one of ``prefixes``.

    Web URLs must also reach public addresses only, with one exception an operator asks for by
    name: a prefix whose host is an IP address (``http://10.0.0.5:8000/photos/``) allows that
    address and port, and only under that prefix. A host *name* never lets a non-public address
    through, since whoever controls its DNS could point it anywhere.

    Parameters
    ----------
    prefixes : iterable of str
        URL prefixes or local folders, as given to ``--allow_input``; ``https://`` alone
        allows every public web address. Empty: nothing is allowed.
    """

    prefixes: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "prefixes",
                           tuple(normalize_prefix(str(p)) for p in self.prefixes))

    @property
    def schemes(self):
        return sorted({p.split("://", 1)[0] if "://" in p else "file" for p in self.prefixes})

    def check(self, url, resolve_hosts=True):
        """``url`` (a local one as its real path) if the policy allows it; else :class:`Refused`.

        ``resolve_hosts=False`` skips resolving web host names: for a fetch made through
        :meth:`storage_options`, whose connections check the addresses they connect to. A
        callable instead of True judges a host name in place of :func:`unsafe_address` (a
        cached one, say, for a listing of many URLs on one host).
        """
        try:
            scheme, normal = split_url(url)
        except ValueError as err:
            raise Refused(url, str(err)) from None
        if scheme not in self.schemes:
            raise Refused(url, f"uses the scheme {scheme!r}, which is not allowed here "
                               f"(allowed: {', '.join(self.schemes) or 'none'})")
        inside = [p for p in self.prefixes if under(normal, p)]
        if not inside:
            raise Refused(url, "is outside the prefixes allowed here "
                               f"({', '.join(self.prefixes) or 'none'})")
        if scheme + "://" in WEB_SCHEMES and not self._named_address(normal, inside):
            host = urllib.parse.urlsplit(normal).hostname
            literal = _literal_host(normal)
            if not host:
                why = "has no host"
            elif literal is not None:
                why = address_refusal(literal[0])
            else:
                judge = resolve_hosts if callable(resolve_hosts) else unsafe_address
                why = judge(host) if resolve_hosts else None
            if why:
                raise Refused(url, why)
        return normal if scheme == "file" else url

    def refusal(self, url, resolve_hosts=True):
        """Why ``url`` is refused, or None when it is allowed."""
        try:
            self.check(url, resolve_hosts)
        except Refused as err:
            return err.why
        return None

    def _named_address(self, url, prefixes):
        """Whether one of ``prefixes`` (those ``url`` is under) names its host by address."""
        literal = _literal_host(url)
        return literal is not None and any(_literal_host(p) == literal for p in prefixes
                                           if p.split("://", 1)[0] + "://" in WEB_SCHEMES)

    def storage_options(self, storage_options=None):
        """``storage_options`` whose ``http``/``https`` filesystems check every connection.

        Their aiohttp sessions (:func:`gridtsne.pinned_http.client`) resolve each host once,
        refuse it when any address is not public, connect to the addresses they checked, and
        check every redirect hop with this policy before following it.
        """
        options = {k: dict(v) for k, v in (storage_options or {}).items()}
        for protocol in ("http", "https"):
            entry = options.setdefault(protocol, {})
            entry["get_client"] = _pinned_client
            entry["client_kwargs"] = {**entry.get("client_kwargs", {}),
                                      "allow_input": list(self.prefixes)}
        return options

    def guard(self, url, storage_options=None):
        """The storage options to read ``url`` with; raises :class:`Refused` when it may not be.

        Called just before a file's bytes are read: a local file is judged by the real path its
        symlinks lead to now, a web URL by its prefix (its address is checked by the connection
        the returned options make).
        """
        self.check(url, resolve_hosts=False)
        return self.storage_options(storage_options)


def from_prefixes(prefixes):
    """The :class:`InputPolicy` of ``--allow_input`` values, or None when none are given."""
    prefixes = tuple(prefixes or ())
    return InputPolicy(prefixes) if prefixes else None


def refused_message(why):
    """The ``errors/`` message of an input the policy refused (its bytes were never read)."""
    return f"refused by the input allowlist (--allow_input), not read: it {why}"


async def _pinned_client(loop=None, allow_input=(), **kwargs):
    # Imported here: aiohttp is only needed where a job reads web inputs under a policy.
    from gridtsne import pinned_http

    return await pinned_http.client(InputPolicy(tuple(allow_input)), loop=loop, **kwargs)
