"""Run C{twistd} with C{TCP_NODELAY} on every TCP connection: an experiment, not a fix.

    python bench/_nodelay.py -n msisdnd --config PATH      # what `twistd ...` would take

C{bench/load.py --nodelay} starts the daemons and the fake SMSC through this
wrapper to measure what turning Nagle's algorithm off would change: msisdnd
sets no socket option on its SMPP, Redis or HTTP connections, so a small
write that follows an unacknowledged one (a C{submit_sm} after a
C{deliver_sm_resp}, say) waits for the peer's ACK, which Linux may delay
by 40 ms when the peer has nothing to send back.

It patches L{twisted.internet.tcp.Connection.__init__} (every accepted and
every outgoing TCP connection goes through it) before twistd imports
anything else; Unix sockets refuse the option, which is ignored.
"""

from __future__ import annotations

import socket
import sys

from twisted.internet import tcp

_original_init = tcp.Connection.__init__


def _init_nodelay(self, skt, protocol, reactor=None):
    _original_init(self, skt, protocol, reactor)
    try:
        skt.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


tcp.Connection.__init__ = _init_nodelay  # type: ignore[method-assign]

if __name__ == "__main__":
    from twisted.scripts.twistd import run

    sys.argv = ["twistd"] + sys.argv[1:]
    run()
