"""What a refused input is, and which network addresses are refused.

The bottom of the input policy: :mod:`gridtsne.input_policy` decides which URLs a job may
read, :mod:`gridtsne.pinned_http` which addresses a web fetch may connect to; both raise and
recognise these refusals, so they live here, below both.
"""
import errno
import ipaddress

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits


class Refused(ValueError):
    """A URL the policy does not allow; ``why`` says why in words a caller can act on."""

    def __init__(self, url, why):
        super().__init__(f"{url!r} {why}")
        self.url = url
        self.why = why

    def __reduce__(self):  # may travel between processes
        return type(self), (self.url, self.why)


class RefusedConnection(OSError):
    """A connection the policy refused (its host resolves to a non-public address).

    An OSError, because that is what an HTTP client reports as a failed connection.
    """

    def __init__(self, why):
        super().__init__(errno.EACCES, why)
        self.why = why

    def __reduce__(self):
        return type(self), (self.why,)


def refusal_in(exc):
    """The policy's reason when ``exc`` or one of its causes is a refusal, else None.

    fsspec and aiohttp wrap what a session raises (a refused redirect surfaces as a
    ``FileNotFoundError``); the reason must still reach the ``errors/`` row.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (Refused, RefusedConnection)):
            return exc.why
        exc = exc.__cause__ or exc.__context__
    return None


def address_refusal(address):
    """Why a connection to ``address`` (str or ipaddress object) is refused, or None.

    The ipaddress module's own classification decides: anything it does not call global
    (loopback, private, link-local, shared, reserved, documentation ...) is refused, and so is
    multicast. An IPv4 address carried inside an IPv6 one (mapped, 6to4, Teredo, NAT64) is
    judged as the IPv4 address it reaches.
    """
    address = ipaddress.ip_address(str(address).split("%", 1)[0])
    if address.version == 6:
        teredo = address.teredo
        embedded = address.ipv4_mapped or address.sixtofour or (teredo and teredo[1])
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            address = embedded
    if address.is_global and not address.is_multicast:
        return None
    kind = next((k for k in ("loopback", "link_local", "private", "multicast", "unspecified",
                             "reserved") if getattr(address, f"is_{k}")), None)
    if kind is None:
        return f"resolves to {address}, which is not a public address"
    return f"resolves to {address}, a {kind.replace('_', '-')} address"
