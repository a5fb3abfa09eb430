"""TCP transports that flush at the end of the reactor's turn (msisdnd.transport),
over real loopback TCP, and where the daemon's connections get them.

Whether bytes went the usual way is read from the reactor: a transport
Twisted has registered for writing is in C{reactor.getWriters()}; one that
holds a write for the end of the turn is not.
"""

from __future__ import annotations

import select
import socket
import struct

import pytest
import pytest_twisted
from twisted.internet import error, reactor, tcp
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from zope.interface import implementer

from msisdnd import transport
from msisdnd.config import RedisConfig
from msisdnd.daemon import Listener
from msisdnd.smpp.config import SessionConfig
from msisdnd.smpp.service import endpoint_for
from msisdnd.state.connection import connect_alone, connect_pool
from msisdnd.transport import flushing, listen_flushing

from conftest import wait_until

CHUNK = 64 * 1024


class Peer(Protocol):
    """Records what arrives and how the connection ended."""

    def __init__(self):
        self.received = bytearray()
        self.made: Deferred = Deferred()
        self.lost: list = []

    def connectionMade(self):
        self.made.callback(self)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost.append(reason)


def pattern(index: int) -> bytes:
    """A chunk telling where it belongs: its index repeated."""
    return struct.pack(">I", index) * (CHUNK // 4)


def next_turn() -> Deferred:
    return deferLater(reactor, 0, lambda: None)


@inlineCallbacks
def pair(flush: bool = True):
    """A server connection and a client connection to it, both flushing at
    the end of the turn (or Twisted's own, if not C{flush})."""
    server = Peer()
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(lambda: server))
    client = Peer()
    connecting = reactor
    if flush:
        listen_flushing(port)
        connecting = flushing(reactor)
    yield connectProtocol(HostnameEndpoint(connecting, "127.0.0.1", port.getHost().port), client)
    yield server.made
    port.stopListening()
    return server, client


def close(*peers: Peer) -> None:
    for peer in peers:
        if not peer.lost:
            peer.transport.abortConnection()


@pytest_twisted.inlineCallbacks
def test_writes_of_a_turn_go_out_together_without_registering():
    server, client = yield pair()
    try:
        assert isinstance(server.transport, transport.Server)
        assert isinstance(client.transport, transport.Client)
        server.transport.write(b"hel")
        server.transport.write(b"lo")
        client.transport.writeSequence([b"a", b"bc", b"", b"def"])
        assert server.transport not in reactor.getWriters()
        assert client.transport not in reactor.getWriters()
        yield wait_until(lambda: client.received == b"hello" and server.received == b"abcdef")
        assert server.transport not in reactor.getWriters()
    finally:
        close(server, client)


@pytest_twisted.inlineCallbacks
def test_bytes_arrive_in_order_when_the_kernel_takes_part_of_a_flush():
    server, client = yield pair()
    try:
        client.transport.pauseProducing()   # the peer reads nothing: the kernel's buffers fill
        sent, index = bytearray(), 0
        while server.transport not in reactor.getWriters():
            chunk = pattern(index)
            server.transport.write(chunk)
            sent += chunk
            index += 1
            yield next_turn()
        assert index > 1                    # the first flushes went out whole
        server.transport.write(b"tail")     # behind the buffered rest, not ahead of it
        server.transport.writeSequence([pattern(index), pattern(index + 1)])
        sent += b"tail" + pattern(index) + pattern(index + 1)
        client.transport.resumeProducing()
        yield wait_until(lambda: len(client.received) >= len(sent), timeout=10)
        assert client.received == sent
        yield wait_until(lambda: server.transport not in reactor.getWriters())
        server.transport.write(b"again")    # drained: held for the turn's end again
        assert server.transport not in reactor.getWriters()
        yield wait_until(lambda: client.received.endswith(b"again"))
    finally:
        close(server, client)


@pytest.mark.parametrize("flush", [True, False], ids=["flushing", "twisted"])
@pytest_twisted.inlineCallbacks
def test_writes_around_loseConnection_as_twisted(flush):
    """Twisted sends what is written after C{loseConnection} until the close
    happens, and drops what is written after it: so do we."""
    server, client = yield pair(flush)
    server.transport.write(b"last")
    server.transport.loseConnection()
    server.transport.write(b" and")
    server.transport.writeSequence([b" more"])
    yield wait_until(lambda: client.lost and server.lost)
    server.transport.write(b"dropped")
    server.transport.writeSequence([b"dropped too"])
    assert bytes(client.received) == b"last and more"
    client.lost[0].trap(error.ConnectionDone)
    server.lost[0].trap(error.ConnectionDone)


@pytest.mark.parametrize("flush", [True, False], ids=["flushing", "twisted"])
@pytest_twisted.inlineCallbacks
def test_nothing_held_is_sent_after_abortConnection(flush):
    server, client = yield pair(flush)
    server.transport.write(b"never")
    server.transport.abortConnection()
    yield wait_until(lambda: client.lost and server.lost)
    assert bytes(client.received) == b""
    server.lost[0].trap(error.ConnectionAborted)


@pytest_twisted.inlineCallbacks
def test_a_reset_peer_loses_the_connection_once_from_the_reactor():
    server = Peer()
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(lambda: server))
    listen_flushing(port)
    peer = socket.create_connection(("127.0.0.1", port.getHost().port))
    try:
        yield server.made
        port.stopListening()
        server.transport.stopReading()      # the reactor must not see the reset first
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()                        # RST
        fd = server.transport.fileno()
        yield wait_until(lambda: select.select([fd], [], [], 0)[0])
        server.transport.write(b"to nobody")
        assert server.lost == []            # not from inside write()
        yield next_turn()                   # the flush meets the reset...
        yield wait_until(lambda: server.lost)   # ...and the reactor's doWrite loses it
        server.lost[0].trap(error.ConnectionLost)
        yield next_turn()
        assert len(server.lost) == 1
        assert server.transport.disconnected
    finally:
        peer.close()


@implementer(IPushProducer)
class Producer:
    def __init__(self):
        self.calls: list[str] = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")

    def stopProducing(self):
        self.calls.append("stop")


@pytest_twisted.inlineCallbacks
def test_a_streaming_producer_is_paused_when_held_bytes_pass_the_buffer_size():
    server, client = yield pair()
    try:
        producer = Producer()
        server.transport.registerProducer(producer, True)
        server.transport.write(b"first")
        assert producer.calls == []
        sent, index = bytearray(b"first"), 0
        while "pause" not in producer.calls:
            chunk = pattern(index)
            server.transport.write(chunk)
            sent += chunk
            index += 1
        server.transport.write(b"while paused")
        sent += b"while paused"
        yield wait_until(lambda: len(client.received) >= len(sent), timeout=10)
        assert client.received == sent
        yield wait_until(lambda: producer.calls[-1:] == ["resume"])
        assert set(producer.calls[:-1]) == {"pause"}    # each write past bufferSize pauses
    finally:
        close(server, client)


# -- where the daemon's connections get them ----------------------------------------------


@pytest_twisted.inlineCallbacks
def test_the_daemons_listeners_accept_flushing_connections():
    server = Peer()
    listener = Listener(reactor, "tcp:0:interface=127.0.0.1",
                        Factory.forProtocol(lambda: server), "[http].listen")
    yield listener.startService()
    try:
        client = Peer()
        yield connectProtocol(HostnameEndpoint(reactor, "127.0.0.1",
                                               listener.port.getHost().port), client)
        yield server.made
        assert isinstance(server.transport, transport.Server)
        close(server, client)
    finally:
        yield listener.stopService()


@pytest_twisted.inlineCallbacks
def test_smpp_sessions_connect_flushing():
    server = Peer()
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(lambda: server))
    try:
        spec = SessionConfig(bind="transceiver", host="127.0.0.1", port=port.getHost().port)
        client = yield connectProtocol(endpoint_for(reactor, spec), Peer())
        assert isinstance(client.transport, transport.Client)
        client.transport.write(b"\x00\x00\x00\x10")
        yield wait_until(lambda: server.received == b"\x00\x00\x00\x10")
        close(server, client)
    finally:
        port.stopListening()


@pytest_twisted.inlineCallbacks
def test_redis_by_address_connects_flushing(redis_server):
    settings = RedisConfig(host="127.0.0.1", port=redis_server.port)
    pool = connect_pool(settings)
    alone = yield connect_alone(settings)
    try:
        assert (yield pool.set(b"flushing", b"yes")) == b"OK"
        assert (yield alone.get(b"flushing")) == b"yes"
        connections = pool._factory.pool + alone._factory.pool
        assert connections and all(isinstance(c.transport, transport.Client)
                                   for c in connections)
    finally:
        yield pool.disconnect()
        yield alone.disconnect()


def test_this_twisted_has_what_the_flush_relies_on():
    """The flush reads and sets attributes of Twisted's TCP connection that are
    not its interface; a Twisted without one of them would fail every write."""
    assert transport.FITS_TWISTED


def test_a_twisted_without_what_the_flush_relies_on_keeps_its_own_transport(monkeypatch):
    monkeypatch.setattr(transport, "FITS_TWISTED", False)
    assert flushing(reactor) is reactor
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    try:
        assert listen_flushing(port).transport is tcp.Server
    finally:
        port.stopListening()
    monkeypatch.setattr(transport, "FITS_TWISTED", True)
    assert isinstance(flushing(reactor), transport.FlushingReactor)


@pytest.mark.parametrize("flush", [True, False], ids=["flushing", "twisted"])
@pytest_twisted.inlineCallbacks
def test_writes_around_loseWriteConnection_as_twisted(flush):
    """A half-close right after a held write sends it, and what is written
    before the half-close happens (as Twisted does), then the FIN."""
    server, client = yield pair(flush)
    server.transport.write(b"before")
    server.transport.loseWriteConnection()
    server.transport.write(b" and after")
    yield wait_until(lambda: client.lost)
    assert bytes(client.received) == b"before and after"
    close(server, client)


@pytest.mark.parametrize("flush", [True, False], ids=["flushing", "twisted"])
@pytest_twisted.inlineCallbacks
def test_a_write_from_connectionLost_is_dropped_quietly(flush):
    server, client = yield pair(flush)
    lost = server.connectionLost

    def writeWhenLost(reason):
        server.transport.write(b"too late")
        lost(reason)

    server.connectionLost = writeWhenLost
    client.transport.write(b"bye")
    client.transport.loseConnection()
    yield wait_until(lambda: client.lost and server.lost)
    assert bytes(server.received) == b"bye" and bytes(client.received) == b""
    server.lost[0].trap(error.ConnectionDone)
