"""aiohttp sessions for web inputs read under an :class:`~gridtsne.input_policy.InputPolicy`.

fsspec's HTTP filesystem makes its session with :func:`client` when the job's storage options
come from :meth:`InputPolicy.storage_options`. Such a session

* checks every request it sends, and every redirect hop before following it, with the policy
  (prefix, scheme, and the address of a host given as an IP address);
* resolves each host name once and refuses it when any address is not public (the ipaddress
  module's classification), then connects to exactly the addresses it checked, so a name that
  re-resolves to an internal address after the check is never reached (DNS rebinding);
* uses no proxy from the environment.
"""
import socket
import urllib.parse

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver

from gridtsne.refusals import Refused, RefusedConnection, address_refusal


class CheckingResolver(AbstractResolver):
    """aiohttp's threaded resolver, refusing a host when any of its addresses is not public.

    What it returns is what the connector connects to: the check and the connection use the
    same addresses. (Hosts written as IP addresses never reach a resolver; the request checks
    of :func:`client` judge those.)
    """

    def __init__(self):
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host, port=0, family=socket.AF_INET):
        results = await self._inner.resolve(host, port, family)
        for result in results:
            why = address_refusal(result["host"])
            if why:
                raise RefusedConnection(f"names {host}, which {why}; not connected")
        return results

    async def close(self):
        await self._inner.close()


def _check(policy, url):
    """Raise :class:`Refused` unless ``policy`` allows the yarl ``url`` a session requests."""
    text = str(url)
    if (urllib.parse.urlsplit(text).hostname or "") != (url.raw_host or "").lower():
        raise Refused(text, "has a host part that URL parsers disagree on")
    policy.check(text, resolve_hosts=False)  # names: CheckingResolver judges their addresses


def _trace_config(policy):
    async def on_start(session, ctx, params):
        _check(policy, params.url)

    async def on_redirect(session, ctx, params):
        location = (params.response.headers.get("Location")
                    or params.response.headers.get("URI"))
        if location is None:
            return
        target = params.response.url.join(yarl.URL(location))
        try:
            _check(policy, target)
        except Refused as err:
            raise Refused(str(params.url), f"redirects to {str(target)!r}, which {err.why}; "
                                           "the redirect was not followed") from None

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_start)
    config.on_request_redirect.append(on_redirect)
    return config


async def client(policy, loop=None, **kwargs):
    """An ``aiohttp.ClientSession`` enforcing ``policy`` (fsspec's ``get_client`` signature)."""
    kwargs.pop("trust_env", None)  # proxies from the environment would connect elsewhere
    connector = aiohttp.TCPConnector(resolver=CheckingResolver())
    trace_configs = [*kwargs.pop("trace_configs", []), _trace_config(policy)]
    kwargs.pop("connector", None)
    return aiohttp.ClientSession(loop=loop, connector=connector, trace_configs=trace_configs,
                                 **kwargs)
