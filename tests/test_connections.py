"""The API's connection limits: the request deadline, and the connection caps.

The first tests drive L{APISite} on a fake clock and a string transport;
the last ones run it on real loopback listeners, against clients that
hold connections open without finishing a request.
"""

from __future__ import annotations

import ipaddress
import json
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, LoopingCall
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource

from msisdnd.api import errors
from msisdnd.api.request import REFUSALS_ANSWERED_AT_ONCE, APISite, client_key

from conftest import wait_until

DEADLINE = 1.0


class Hello(Resource):
    isLeaf = True

    def render(self, request):
        request.setHeader(b"Content-Type", b"application/json")
        return b'{"hello": true}'


def fake_site(**limits) -> tuple[APISite, Clock]:
    clock = Clock()
    site = APISite(Hello(), 1024, clock, reactor=clock, **limits)
    return site, clock


def connect(site: APISite, host: str = "192.0.2.7"):
    """A protocol from C{site} for a peer at C{host}, on a string transport."""
    peer = IPv4Address("TCP", host, 40000)
    protocol = site.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    return protocol, transport


def answer(data: bytes) -> tuple[int, dict]:
    """The status and JSON body of the one response in C{data}."""
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


# -- the deadline, on a fake clock ---------------------------------------------------------


def test_a_silent_connection_gets_408_at_the_deadline():
    site, clock = fake_site(request_deadline=DEADLINE)
    _, transport = connect(site)
    clock.advance(DEADLINE - 0.01)
    assert transport.value() == b"" and not transport.disconnecting
    clock.advance(0.02)
    status, body = answer(transport.value())
    assert status == 408 and body["errno"] == errors.REQUEST_TIMEOUT == 128
    assert set(body) == {"code", "errno", "error", "message"}
    assert body["error"] == "Request Timeout"
    assert b"Connection: close" in transport.value()
    assert transport.disconnecting
    assert site.counters.deadline_expired == 1


def test_a_drip_does_not_move_the_deadline():
    """One byte every 0.3 s keeps Twisted's idle timer young; the deadline does not care."""
    site, clock = fake_site(request_deadline=DEADLINE)
    channel, transport = connect(site)
    for byte in GET[:3]:
        channel.dataReceived(bytes([byte]))
        clock.advance(0.3)
    assert transport.value() == b""
    clock.advance(0.2)
    assert answer(transport.value())[0] == 408 and transport.disconnecting


def test_the_deadline_covers_the_body():
    site, clock = fake_site(request_deadline=DEADLINE)
    channel, transport = connect(site)
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    clock.advance(DEADLINE)
    assert answer(transport.value())[0] == 408


def test_keep_alive_idles_under_the_idle_timeout_and_each_request_gets_its_own_deadline():
    site, clock = fake_site(request_deadline=DEADLINE)
    channel, transport = connect(site)
    clock.advance(DEADLINE / 2)
    channel.dataReceived(GET)
    assert answer(transport.value()) == (200, {"hello": True})
    transport.clear()
    # Idle between requests: no deadline runs (Twisted's 60 s idle timeout does).
    clock.advance(DEADLINE * 10)
    assert transport.value() == b"" and not transport.disconnecting
    # A second request, complete, then a third that stalls.
    channel.dataReceived(GET)
    assert answer(transport.value())[0] == 200
    transport.clear()
    channel.dataReceived(b"GET / HT")
    clock.advance(DEADLINE)
    assert answer(transport.value())[0] == 408 and transport.disconnecting
    assert site.counters.deadline_expired == 1


def test_a_pipelined_request_left_unfinished_gets_its_deadline():
    site, clock = fake_site(request_deadline=DEADLINE)
    channel, transport = connect(site)
    channel.dataReceived(GET + b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert transport.value().count(b"HTTP/1.1 200") == 1
    clock.advance(DEADLINE)
    assert b"HTTP/1.1 408" in transport.value() and transport.disconnecting


def test_a_closing_connection_is_cut_at_the_deadline_not_answered_twice():
    """A 413 was written and the connection is closing: the deadline aborts it."""
    site, clock = fake_site(request_deadline=DEADLINE)
    channel, transport = connect(site)
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert answer(transport.value())[0] == 413 and transport.disconnecting
    transport.clear()
    clock.advance(DEADLINE)
    assert transport.value() == b""
    assert site.counters.deadline_expired == 0


def test_a_lost_connection_leaves_no_timer_and_no_count():
    site, clock = fake_site(request_deadline=DEADLINE, max_connections=10,
                            max_connections_per_client=2)
    channel, _ = connect(site)
    assert site.connections == 1 and site.perClient == {"192.0.2.7": 1}
    channel.connectionLost(None)
    assert site.connections == 0 and site.perClient == {}
    assert [c for c in clock.getDelayedCalls() if c.active()] == []


def test_no_deadline_when_none_is_set():
    site, clock = fake_site()
    channel, transport = connect(site)
    channel.dataReceived(b"GET / HT")
    clock.advance(30)
    assert transport.value() == b""


# -- the caps, on a fake clock -------------------------------------------------------------


@pytest.mark.parametrize("address,expected", [
    (IPv4Address("TCP", "198.51.100.7", 1), "198.51.100.7"),
    (IPv6Address("TCP", "::ffff:198.51.100.7", 1), "198.51.100.7"),
    (IPv6Address("TCP", "2001:db8:1:2:3:4:5:6", 1), "2001:db8:1:2::/64"),
    (IPv6Address("TCP", "fe80::1%lo", 1), "fe80::/64"),
    (IPv4Address("TCP", "10.1.2.3", 1), None),                  # a trusted proxy
    (IPv6Address("TCP", "::ffff:10.9.9.9", 1), None),           # the same, via a v6 socket
    (UNIXAddress(b"/run/msisdnd.sock"), None),                  # our own proxy
])
def test_client_key(address, expected):
    assert client_key(address, (ipaddress.ip_network("10.0.0.0/8"),)) == expected


def test_per_client_cap_refuses_with_a_503_and_exempts_trusted_proxies():
    site, clock = fake_site(max_connections=100, max_connections_per_client=2,
                            trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    channels = [connect(site)[0] for _ in range(2)]
    refused, transport = connect(site)
    status, body = answer(transport.value())
    assert (status, body["errno"]) == (503, errors.CLIENT_RATE)
    assert b"Retry-After: 1" in transport.value() and transport.disconnecting
    assert site.counters.refused_per_client == 1 and site.connections == 2
    # Another address, and a trusted proxy (many times over), are not held back.
    assert connect(site, "192.0.2.8")[1].value() == b""
    for _ in range(5):
        assert connect(site, "10.0.0.1")[1].value() == b""
    # One of the first client's connections goes: it may open another.
    channels[0].connectionLost(None)
    assert connect(site)[1].value() == b""
    refused.connectionLost(None)
    assert site._answering == 0


def test_total_cap_refuses_everyone_with_a_503():
    site, clock = fake_site(max_connections=3, max_connections_per_client=3,
                            trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    for host in ("192.0.2.1", "192.0.2.2", "10.0.0.1"):
        connect(site, host)
    for host in ("192.0.2.3", "10.0.0.1"):
        status, body = answer(connect(site, host)[1].value())
        assert (status, body["errno"]) == (503, errors.BACKEND_UNAVAILABLE)
    assert site.counters.refused_total == 2 and site.connections == 3


def test_refusals_past_the_answering_bound_are_closed_unanswered():
    site, clock = fake_site(max_connections=1)
    connect(site)
    answered = [connect(site) for _ in range(REFUSALS_ANSWERED_AT_ONCE)]
    assert all(t.value().startswith(b"HTTP/1.1 503") for _, t in answered)
    _, transport = connect(site)
    assert transport.value() == b"" and transport.disconnected
    assert site.counters.refused_unanswered == 1
    assert site.counters.refused_total == REFUSALS_ANSWERED_AT_ONCE + 1
    # A refused connection that never goes away is cut after a grace.
    clock.advance(10)
    assert all(t.disconnected for _, t in answered)


@pytest.fixture
def logged():
    lines: list[str] = []

    def observe(event):
        if event.get("log_namespace") == "msisdnd.api.request":
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def test_refusals_and_expiries_are_logged_once_a_minute_with_a_count(logged):
    site, clock = fake_site(request_deadline=DEADLINE, max_connections=100,
                            max_connections_per_client=1)
    connect(site)
    for _ in range(5):
        connect(site)
    assert len(logged) == 1 and "Refusing connections from 192.0.2.7" in logged[0]
    clock.advance(DEADLINE)
    assert len(logged) == 2 and "did not arrive within 1 s" in logged[1]
    clock.advance(60)
    connect(site, "192.0.2.9")
    connect(site, "192.0.2.9")
    assert len(logged) == 3
    assert "192.0.2.9" in logged[2] and "(and 4 more like it since the last such line)" in logged[2]
    assert site.counters.refused_per_client == 6


def test_the_daemon_raises_a_low_open_files_limit_or_warns(monkeypatch):
    import resource

    from msisdnd import daemon

    limits = {"soft": 1024, "hard": 524288}
    monkeypatch.setattr(resource, "getrlimit", lambda which: (limits["soft"], limits["hard"]))

    def setrlimit(which, values):
        limits["soft"], limits["hard"] = values

    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    daemon._enough_descriptors(4096)
    assert limits == {"soft": 4096 + daemon.FD_RESERVE, "hard": 524288}

    warned: list[str] = []
    monkeypatch.setattr(daemon.log, "warn", lambda text, **kw: warned.append(text.format(**kw)))
    limits.update(soft=1024, hard=2048)
    daemon._enough_descriptors(4096)
    assert limits["soft"] == 2048 and "below [http] max_connections (4096)" in warned[0]


# -- on real listeners -----------------------------------------------------------------------


class Raw(Protocol):
    """A client socket that records what it gets and when it is closed."""

    def __init__(self):
        self.data = b""
        self.closed_at: float | None = None
        self.opened_at = time.monotonic()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason) -> None:
        self.closed_at = time.monotonic()


def open_raw(port: int, source: str):
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5,
                                  bindAddress=(source, 0))
    return connectProtocol(endpoint, Raw())


@pytest_twisted.inlineCallbacks
def test_idle_and_dripping_clients_do_not_starve_a_good_one(gateway):
    """127.0.0.2 opens twice its cap of idle connections, 127.0.0.3 drips one byte every
    0.2 s; meanwhile the good client (127.0.0.1) keeps getting its answers.  The extra
    connections are refused at once (503, errno 117), the drip and the idle ones are
    closed by the deadline (408, errno 128), and 127.0.0.2 may connect again after."""
    cap = 4
    site = APISite(gateway.api.resource(), 25 * 1024, reactor, request_deadline=DEADLINE,
                   max_connections=100, max_connections_per_client=cap)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    number = port.getHost().port
    url = f"http://127.0.0.1:{number}"
    answers: list[int] = []
    good = None
    pool = HTTPConnectionPool(reactor, persistent=True)
    try:
        started = time.monotonic()
        # The good client, from the first request to the last check.
        stop = False

        @inlineCallbacks
        def good_client():
            while not stop:
                path = "/register" if len(answers) % 2 else "/__lbheartbeat__"
                method = "POST" if path == "/register" else "GET"
                response = yield treq.request(method, url + path, timeout=5, pool=pool)
                yield response.content()
                answers.append(response.code)

        good = good_client()

        idle = yield gatherResults([open_raw(number, "127.0.0.2") for _ in range(cap)])
        yield wait_until(lambda: site.perClient.get("127.0.0.2") == cap)
        extra = yield gatherResults([open_raw(number, "127.0.0.2") for _ in range(cap)])
        drip = yield open_raw(number, "127.0.0.3")
        request = b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        sent = 0

        def one_byte():
            nonlocal sent
            if drip.closed_at is None and sent < len(request):
                drip.transport.write(request[sent:sent + 1])
                sent += 1

        dripping = LoopingCall(one_byte)
        dripping.start(0.2)

        # The extra ones: refused at once, politely.
        yield wait_until(lambda: all(c.closed_at is not None for c in extra), timeout=3)
        for c in extra:
            status, body = answer(c.data)
            assert (status, body["errno"]) == (503, errors.CLIENT_RATE), c.data
            assert c.closed_at - c.opened_at < DEADLINE / 2
        assert site.counters.refused_per_client == cap

        # The drip and the idle ones: closed by the deadline, with a 408.
        yield wait_until(lambda: drip.closed_at is not None, timeout=DEADLINE + 3)
        dripping.stop()
        assert 0 < sent < len(request), "the drip should still have been sending"
        assert DEADLINE - 0.1 <= drip.closed_at - drip.opened_at < DEADLINE + 2
        assert answer(drip.data)[0] == 408 and answer(drip.data)[1]["errno"] == 128
        yield wait_until(lambda: all(c.closed_at is not None for c in idle), timeout=3)
        assert all(answer(c.data)[0] == 408 for c in idle)
        assert site.counters.deadline_expired == cap + 1
        yield wait_until(lambda: "127.0.0.2" not in site.perClient, timeout=3)

        # 127.0.0.2 is welcome again, and gets an answer.
        again = yield open_raw(number, "127.0.0.2")
        again.transport.write(b"GET /__lbheartbeat__ HTTP/1.1\r\nHost: x\r\n\r\n")
        yield wait_until(lambda: b"\r\n\r\n" in again.data, timeout=3)
        assert again.data.startswith(b"HTTP/1.1 200")
        again.transport.loseConnection()

        # The good client was answered throughout, and often.
        stop = True
        yield good
        assert answers and set(answers) == {200}, answers
        assert len(answers) >= 10, answers
        assert time.monotonic() - started < 8
    finally:
        stop = True
        if good is not None:
            yield good
        yield pool.closeCachedConnections()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_total_cap_on_a_real_listener():
    """max_connections = 3: the fourth connection gets 503 errno 201 at once; once one
    closes, a new connection is served."""
    site = APISite(Hello(), 1024, reactor, request_deadline=5, max_connections=3,
                   max_connections_per_client=3)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    number = port.getHost().port
    try:
        held = yield gatherResults([open_raw(number, f"127.0.0.{i}") for i in (11, 12, 13)])
        yield wait_until(lambda: site.connections == 3)
        over = yield open_raw(number, "127.0.0.14")
        yield wait_until(lambda: over.closed_at is not None)
        status, body = answer(over.data)
        assert (status, body["errno"]) == (503, errors.BACKEND_UNAVAILABLE)
        assert site.counters.refused_total == 1
        held[0].transport.loseConnection()
        yield wait_until(lambda: site.connections == 2)
        fresh = yield open_raw(number, "127.0.0.14")
        fresh.transport.write(GET)
        yield wait_until(lambda: b'{"hello": true}' in fresh.data)
        for c in (*held[1:], fresh):
            c.transport.loseConnection()
        yield wait_until(lambda: site.connections == 0)
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_body_refused_for_its_length_is_not_then_asked_for_with_100_continue(gateway):
    """C{Expect: 100-continue} with a C{Content-Length} past the limit: the 413 is the
    whole answer (Twisted would write C{100 Continue} after it, inviting the body)."""
    answered = yield gateway.raw(
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n"
        b"Expect: 100-continue\r\nContent-Type: application/json\r\n\r\n")
    status, body = answer(answered)
    assert (status, body["errno"]) == (413, errors.TOO_LARGE)
    assert b"100 Continue" not in answered, answered
    welcome = yield gateway.raw(
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n\r\n{}")
    assert welcome.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), welcome
