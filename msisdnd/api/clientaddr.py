"""The client's address, trusting C{X-Forwarded-For} only from our own proxies."""

from __future__ import annotations

import functools
import ipaddress
from typing import Sequence

from twisted.internet.address import IPv4Address
from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """C{text} as an IP address (an IPv4-mapped IPv6 one as IPv4), or C{None}.

    Cached: parsing costs about 8 us, and a request's peer is mostly one
    seen before (the addresses are immutable; a stranger's many addresses
    only push older ones out)."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)
def _shown(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return str(address)


def client_address(request: IRequest, trusted: Sequence[Network]) -> str:
    """The address of whoever sent C{request}.

    The socket's peer, unless that peer is one of the C{trusted} proxies: then
    C{X-Forwarded-For} is walked from the right, past every trusted hop, and
    the first untrusted (or last valid) address is the client.  A client can
    put anything in that header; only hops our proxies appended are believed.
    A peer on a Unix socket is taken for our own proxy.
    """
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    header = request.getHeader(b"X-Forwarded-For")
    hops = header.decode("latin-1").split(",") if header else []
    if not isinstance(host, str):
        # A Unix socket: only local processes the socket's mode admits can
        # connect, i.e. our own front proxy, whose last hop names the client.
        current = _address(hops[-1]) if hops else None
        if current is None:
            return "local"
        hops = hops[:-1]
        if not any(current in net for net in trusted):
            return _shown(current)
    else:
        current = _address(host)
        if current is None:
            return host
        if not trusted or not any(current in net for net in trusted):
            return _shown(current)
    for hop in reversed(hops[-32:]):
        address = _address(hop)
        if address is None:
            break
        current = address
        if not any(current in net for net in trusted):
            break
    return _shown(current)


class _Forwarded:
    """The request as the access log sees it: the same, but for its client address."""

    def __init__(self, request: IRequest, host: str):
        self._request = request
        self._host = host

    def getClientAddress(self):
        return IPv4Address("TCP", self._host, 0)

    def __getattr__(self, name: str):
        return getattr(self._request, name)


def access_log_formatter(trusted: Sequence[Network]):
    """A Site C{logFormatter}: the combined log format, with the client address
    as L{client_address} finds it (never a header an untrusted peer sent)."""

    def format(timestamp: str, request: IRequest) -> str:
        return combinedLogFormatter(timestamp, _Forwarded(request, client_address(request, trusted)))

    return format
