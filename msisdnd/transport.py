"""TCP transports that send at the end of the reactor's turn, without asking
the poller first.

Twisted's TCP transport buffers every C{write}, registers the socket for
writing, and sends when the next poll says it is writable; then it
unregisters it (C{FileDescriptor.write}, C{doWrite}): two C{epoll_ctl}
calls and one more poll and dispatch per burst of writes, though a socket
with an empty buffer is almost always writable (Twisted's open enhancement
#5303).  Sending at once instead (write-through) was measured and costs
more: C{twisted.web} writes an answer's head and body in two calls, and
each would be its own C{send()} and segment (bench/RESULTS.md, 2026-12-01).

L{FlushAtTurnEnd} is the C{write}/C{writeSequence} of L{Server} and
L{Client}.  Its contract, beyond C{ITransport.write}'s:

  - A write to a connection with nothing buffered (open, neither
    C{loseConnection} nor C{loseWriteConnection} called, no C{startTLS},
    its producer, if any, a streaming one not paused) is held in Twisted's
    buffer without registering the socket.  At the end of the reactor's
    turn (one C{callLater(0)} per reactor, shared by every connection with
    bytes held) each connection's held bytes go to one C{send()} (at most
    C{SEND_LIMIT}); what the kernel did not take stays buffered and the
    socket is registered, and Twisted's C{doWrite} sends it as usual.
    Any other write is Twisted's own, unchanged.
  - Order: every write of the turn joins the held bytes, in order; a write
    made while bytes are buffered the usual way is Twisted's, behind them.
  - Errors: C{send()} failing leaves the bytes buffered and the socket
    registered, so that the reactor's C{doWrite} meets the error and calls
    C{connectionLost} the normal way.  Neither C{write} nor the flush calls
    C{connectionLost} or any protocol method.  A connection lost before the
    flush drops what it held, as Twisted's drops its buffer.
  - Producers: held bytes past C{bufferSize} pause a registered streaming
    producer, as Twisted's buffer does, and a paused producer's bytes are
    left to C{doWrite}, which resumes it once they are sent.  With a pull
    (non-streaming) producer every write is Twisted's.
  - Half-close and close: C{loseConnection} or C{loseWriteConnection} after
    a held write registers the socket as Twisted does; C{doWrite} sends the
    held bytes, then closes (the flush leaves them alone).  A write after
    the connection or its write side is closed is dropped, as Twisted drops
    it.

Plain TCP is covered (and TLS through C{TLSMemoryBIOFactory}, whose
ciphertext is written here); C{startTLS} and Unix sockets keep Twisted's
transport.  L{listen_flushing} and L{flushing} put these transports on a
listening port and on outgoing connections.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.internet import abstract, tcp
from twisted.internet.posixbase import PosixReactorBase
from zope.interface import directlyProvides, providedBy

#: What L{FlushAtTurnEnd} reads and sets of Twisted's TCP connection, beyond
#: its interfaces: with a Twisted that has not all of them, connections keep
#: Twisted's own transport (L{flushing}, L{listen_flushing}).
_RELIED_ON = ("connected", "disconnecting", "_aborting", "_writeDisconnecting",
              "_writeDisconnected", "TLS", "producer", "streamingProducer", "producerPaused",
              "dataBuffer", "offset", "_maybePauseProducer", "writeSomeData", "startWriting")
_SET_IN_INIT = ("_tempDataBuffer", "_tempDataLen")
FITS_TWISTED = (all(hasattr(tcp.Connection, name) for name in _RELIED_ON)
                and all(name in abstract.FileDescriptor.__init__.__code__.co_names
                        for name in _SET_IN_INIT))

#: Per reactor, the connections holding bytes for the end of this turn.
_held: dict[Any, list[FlushAtTurnEnd]] = {}


def _flush(reactor: Any) -> None:
    for connection in _held.pop(reactor, ()):
        connection._flushHeld()


class FlushAtTurnEnd:
    """The C{write} and C{writeSequence} that hold bytes for the end of the
    reactor's turn, mixed ahead of a C{twisted.internet.tcp.Connection}
    subclass (see the module's contract)."""

    _holding = False

    def _accepting(self) -> bool:
        """Whether bytes may be held (or added to those held) now."""
        if not self.connected or self.disconnecting or self._aborting \
                or self._writeDisconnecting or self._writeDisconnected or self.TLS:
            return False
        if self.producer is not None and not self.streamingProducer:
            return False
        return self._holding or (not self._tempDataLen and len(self.dataBuffer) == self.offset
                                 and not self.producerPaused)

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes) or not self._accepting():
            super().write(data)
            return
        if not data:
            return
        self._tempDataBuffer.append(data)
        self._tempDataLen += len(data)
        self._maybePauseProducer()
        if not self._holding:
            self._holding = True
            held = _held.get(self.reactor)
            if held is None:
                held = _held[self.reactor] = []
                self.reactor.callLater(0, _flush, self.reactor)
            held.append(self)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        iovec = list(iovec)
        if not all(isinstance(chunk, bytes) for chunk in iovec) or not self._accepting():
            super().writeSequence(iovec)
            return
        self.write(b"".join(iovec))

    def _flushHeld(self) -> None:
        """Send what this turn's writes held; leave the rest to C{doWrite}."""
        self._holding = False
        if not self.connected or self._aborting or not self._tempDataLen:
            return
        if self.disconnecting or self._writeDisconnecting or self.producerPaused \
                or len(self.dataBuffer) != self.offset:
            self.startWriting()     # C{doWrite} has it all (already registered, or now)
            return
        data = b"".join(self._tempDataBuffer)
        sent = self.writeSomeData(data)
        if isinstance(sent, Exception):
            sent = 0    # C{doWrite} meets the error again and loses the connection
        if sent < len(data):
            self._tempDataBuffer = [data[sent:]]
            self._tempDataLen = len(data) - sent
            self.startWriting()
        else:
            self._tempDataBuffer = []
            self._tempDataLen = 0


class Server(FlushAtTurnEnd, tcp.Server):
    """An accepted TCP connection that flushes at the end of the turn."""


class Client(FlushAtTurnEnd, tcp.Client):
    """An outgoing TCP connection that flushes at the end of the turn."""


class _Connector(tcp.Connector):
    def _makeTransport(self) -> Client:
        return Client(self.host, self.port, self.bindAddress, self, self.reactor)


class FlushingReactor:
    """A reactor whose C{connectTCP} connects with L{Client}; everything else
    (and every interface it provides) is the wrapped reactor's.  For client
    endpoints (C{HostnameEndpoint}, C{TCP4ClientEndpoint}), which take a
    reactor and call its C{connectTCP}."""

    def __init__(self, reactor: Any):
        self._reactor = reactor
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30.0,
                   bindAddress: Any = None) -> tcp.Connector:
        connector = _Connector(host, port, factory, timeout, bindAddress, self._reactor)
        connector.connect()
        return connector


def flushing(reactor: Any) -> Any:
    """C{reactor} as a L{FlushingReactor} when it makes real sockets (a
    C{PosixReactorBase}) and this Twisted has what the flush relies on
    (L{FITS_TWISTED}); any other (a C{MemoryReactor} in tests) as it is."""
    if FITS_TWISTED and isinstance(reactor, PosixReactorBase):
        return FlushingReactor(reactor)
    return reactor


def listen_flushing(port: Any) -> Any:
    """Make the connections C{port} accepts from now on L{Server}s, when it is a
    C{tcp.Port} (whose C{doRead} builds each with its C{transport}); any other
    port is left as it is.  Returns C{port}."""
    if FITS_TWISTED and isinstance(port, tcp.Port) and port.transport is tcp.Server:
        port.transport = Server
    return port
