"""The client's address, trusting C{X-Forwarded-For} only from our own proxies."""

from __future__ import annotations

import ipaddress
from typing import Sequence

from twisted.web.iweb import IRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(request: IRequest, trusted: Sequence[Network]) -> str:
    """The address of whoever sent C{request}.

    The socket's peer, unless that peer is one of the C{trusted} proxies: then
    C{X-Forwarded-For} is walked from the right, past every trusted hop, and
    the first untrusted (or last valid) address is the client.  A client can
    put anything in that header; only hops our proxies appended are believed.
    """
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    current = _address(host) if isinstance(host, str) else None
    if current is None:
        return host if isinstance(host, str) else "local"
    if not trusted or not any(current in net for net in trusted):
        return str(current)
    header = request.getHeader(b"X-Forwarded-For")
    hops = header.decode("latin-1").split(",") if header else []
    for hop in reversed(hops[-32:]):
        address = _address(hop)
        if address is None:
            break
        current = address
        if not any(current in net for net in trusted):
            break
    return str(current)
