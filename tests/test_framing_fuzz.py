"""Hostile byte streams against both ends of msisdnd's SMPP stack, over loopback TCP.

The fake SMSC (L{SMSCSession}) and msisdnd's ESME (L{ESMESession}) each sit
behind a listening port; a raw peer writes fuzz bytes, then a valid
C{enquire_link} with a marker sequence, and the session must answer it or
close the connection, without ever logging a failure.

A small model of SMPP framing (C{command_length} is all there is to it) tells
the test how the session must split the stream: where a frame is cut short,
zero octets complete it so that the marker is read as a frame of its own, and
when a command_length is out of range the session must drop the link.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher

from msisdnd.fakesmsc.smsc import FakeSMSC, SMSCSession
from msisdnd.smpp import codec
from msisdnd.smpp.session import ESMESession, SessionState

MARK = 0x7ABCDEF0
PROBE = codec.frame(codec.ENQUIRE_LINK, MARK)
WAIT = 5.0
#: Frames after which either end may legitimately close the connection.
CLOSERS = {codec.UNBIND, codec.UNBIND_RESP, codec.GENERIC_NACK}
#: The one request that has no response.
OUTBIND = codec.COMMANDS["outbind"]
ALERT_NOTIFICATION = codec.COMMANDS["alert_notification"]


# --- a model of SMPP framing --------------------------------------------------


def split(stream: bytes) -> tuple[list[bytes], bytes, int | None]:
    """(whole frames, the partial rest, the first out-of-range command_length or None)."""
    frames, pos = [], 0
    while len(stream) - pos >= 4:
        length = int.from_bytes(stream[pos:pos + 4], "big")
        if not codec.HEADER_LENGTH <= length <= codec.MAX_PDU_LENGTH:
            return frames, stream[pos:], length
        if len(stream) - pos < length:
            break
        frames.append(stream[pos:pos + length])
        pos += length
    return frames, stream[pos:], None


def completed(stream: bytes) -> bytes:
    """C{stream} with zero octets after it to finish its last partial frame."""
    while True:
        _, rest, bad = split(stream)
        if bad is not None or not rest:
            return stream
        if len(rest) < 4:
            stream += b"\0" * (4 - len(rest))
        else:
            stream += b"\0" * (int.from_bytes(rest[:4], "big") - len(rest))


def command_id(frame: bytes) -> int:
    return int.from_bytes(frame[4:8], "big") if len(frame) >= 8 else 0


# --- the raw peer -------------------------------------------------------------


class RawPeer(Protocol):
    """Records what arrives; C{done} fires with "answered" or "closed", whichever comes first."""

    def __init__(self):
        self.received = b""
        self.closed = False
        self.open_at_outcome = False
        self.done = defer.Deferred()
        self.lost = defer.Deferred()

    def frames(self) -> list[bytes]:
        return split(self.received)[0]

    def headers(self) -> list[tuple[int, int, int, int]]:
        return [codec.read_header(f) for f in self.frames()]

    def answered(self) -> bool:
        return any(cid == codec.ENQUIRE_LINK_RESP and seq == MARK
                   for _, cid, _, seq in self.headers())

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.done.called and self.answered():
            self.done.callback("answered")

    def connectionLost(self, reason=None) -> None:
        self.closed = True
        if not self.done.called:
            self.done.callback("closed")
        self.lost.callback(None)


class TrackingFactory(Factory):
    """Builds server protocols with C{make} and keeps them."""

    def __init__(self, make):
        self.make = make
        self.protocols: list = []

    def buildProtocol(self, addr):
        protocol = self.make()
        protocol.factory = self
        self.protocols.append(protocol)
        return protocol


class BoundESME(ESMESession):
    """An ESME session as a bound transceiver from the start: the state in which
    an SMSC's deliver_sm must always get its OK."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.mode = "transceiver"
        self.state = SessionState.BOUND


@dataclass
class Server:
    """One end of msisdnd's stack listening on loopback, built afresh for each example."""

    kind: str
    inbound: list | None = None
    factory: TrackingFactory | None = None
    smsc: FakeSMSC | None = None
    port: object = None
    failures: list = field(default_factory=list)

    def start(self) -> None:
        if self.kind == "smsc":
            self.smsc = FakeSMSC(reactor)
            self.factory = TrackingFactory(lambda: SMSCSession(self.smsc))
        else:
            on_inbound = self.inbound.append if self.inbound is not None else None
            self.factory = TrackingFactory(lambda: BoundESME(reactor, onInbound=on_inbound))
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        globalLogPublisher.addObserver(self.observe)

    def observe(self, event: dict) -> None:
        if "log_failure" in event:
            self.failures.append(event)

    @defer.inlineCallbacks
    def connect(self):
        peer = RawPeer()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        yield connectProtocol(endpoint, peer)
        return peer

    def sessions_closed(self) -> defer.Deferred:
        """Fires once every server-side session has seen its connection lost."""
        if self.kind == "smsc":
            return self.smsc.waitFor(lambda: not self.smsc.sessions)
        return defer.gatherResults([p.whenClosed() for p in self.factory.protocols])

    @defer.inlineCallbacks
    def stop(self, peer: RawPeer | None):
        try:
            if peer is not None and not peer.closed:
                peer.transport.abortConnection()
            if peer is not None:
                yield peer.lost
            yield self.sessions_closed().addTimeout(WAIT, reactor)
            yield self.port.stopListening()
        finally:
            globalLogPublisher.removeObserver(self.observe)


def within(source: defer.Deferred, label: str | None = None) -> defer.Deferred:
    """Fires with C{label} (or C{source}'s result) when C{source} fires, else "timeout"
    after WAIT seconds.  C{source}'s own result is left alone."""
    d = defer.Deferred()

    def timeout() -> None:
        if not d.called:
            d.callback("timeout")

    timer = reactor.callLater(WAIT, timeout)

    def fired(result):
        if not d.called:
            timer.cancel()
            d.callback(label or result)
        return result

    source.addCallback(fired)
    return d


def outcome(peer: RawPeer) -> defer.Deferred:
    """"answered" or "closed", whichever comes first, or "timeout"."""
    return within(peer.done)


def closed(peer: RawPeer) -> defer.Deferred:
    """"closed" once the connection closes, whatever arrives meanwhile, or "timeout"."""
    return within(peer.lost, "closed")


@defer.inlineCallbacks
def exchange(kind: str, data: bytes, until=outcome, server: Server | None = None):
    """Write C{data} to a fresh C{kind} server; return (outcome, peer, log failures)."""
    server = server or Server(kind)
    server.start()
    peer = None
    try:
        peer = yield server.connect()
        peer.transport.write(data)
        result = yield until(peer)
        peer.open_at_outcome = not peer.closed
    finally:
        yield server.stop(peer)
    return result, peer, server.failures


# --- fuzz strategies ----------------------------------------------------------

SEQ = st.integers(0, 0x7FFFFFFF).filter(lambda s: s != MARK)
OCTET = st.integers(0, 255)


def _submit(seq, esm_class, data_coding, message):
    body = codec.encode_submit_sm_body(source_addr="ACME", source_addr_ton=5,
                                       destination_addr="33612345678", esm_class=esm_class,
                                       data_coding=data_coding, registered_delivery=1,
                                       short_message=message)
    return codec.frame(codec.SUBMIT_SM, seq, body)


def _deliver(seq, esm_class, data_coding, message):
    return codec.encode("deliver_sm", seq, source_addr="33612345678", destination_addr="ACME",
                        esm_class=esm_class, data_coding=data_coding, short_message=message)


VALID_FRAME = st.one_of(
    SEQ.map(lambda s: codec.encode("bind_transceiver", s, system_id="fuzz", password="pw")),
    SEQ.map(lambda s: codec.frame(codec.ENQUIRE_LINK, s)),
    st.builds(_submit, SEQ, OCTET, OCTET, st.binary(max_size=140)),
    st.builds(_deliver, SEQ, OCTET, OCTET, st.binary(max_size=140)),
    SEQ.map(lambda s: codec.frame(codec.DELIVER_SM_RESP, s, b"\0")),
    SEQ.map(lambda s: codec.frame(codec.SUBMIT_SM_RESP, s, b"1a2b\0")),
    SEQ.map(lambda s: codec.frame(codec.UNBIND, s)),
    SEQ.map(lambda s: codec.encode("data_sm", s, source_addr="336", destination_addr="ACME")),
    SEQ.map(lambda s: codec.encode("alert_notification", s, source_addr="336", esme_addr="1")),
    SEQ.map(lambda s: codec.encode("query_sm", s, message_id="1a2b", source_addr="ACME")),
    SEQ.map(lambda s: codec.frame(0x0B, s, b"smsc\0pw\0")),  # outbind: not ours to take
    st.builds(codec.generic_nack, st.sampled_from([0, 1, 2]), st.sampled_from([1, 3, 0x58])),
)

MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 300), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(16, 300)),
    st.tuples(st.just("tlv"), st.integers(0, 0xFFFF), st.binary(max_size=24),
              st.integers(0, 40)),
    st.tuples(st.just("command_id"), st.one_of(
        st.sampled_from([0x77, 0x80000077, 0x0B, 0x21, 0x103, 0x80000000, 0xFFFFFFFF]),
        st.integers(0, 0xFFFFFFFF))),
)


def fix_length(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data[4:]


def mutate(frame: bytes, mutations) -> bytes:
    data = bytearray(frame)
    for m in mutations:
        if m[0] == "flip":  # anywhere, command_length included: the stream may lose step
            data[m[1] % len(data)] ^= m[2]
        elif m[0] == "truncate":
            data = bytearray(fix_length(bytes(data[:max(16, m[1] % len(data))])))
        elif m[0] == "tlv":
            _, tag, value, claimed = m
            data = bytearray(fix_length(bytes(data) + struct.pack(">HH", tag, claimed) + value))
        else:
            data[4:8] = struct.pack(">I", m[1])
    return bytes(data)


MUTATED_FRAME = st.builds(mutate, VALID_FRAME, st.lists(MUTATION, max_size=3))
STREAM = st.one_of(
    st.binary(max_size=512),
    st.lists(MUTATED_FRAME, min_size=1, max_size=8).map(b"".join),
    st.lists(st.one_of(MUTATED_FRAME, st.binary(max_size=40)), min_size=1, max_size=8)
    .map(b"".join),
)


# --- the properties -----------------------------------------------------------


@defer.inlineCallbacks
def check_stream(kind: str, fuzz: bytes):
    """Send C{fuzz}, completed by the model, then the marker; check what came back."""
    sent = completed(fuzz) + PROBE
    frames, rest, bad = split(sent)
    may_close = any(command_id(f) in CLOSERS for f in frames)
    result, peer, failures = yield exchange(kind, sent)
    where = f"{kind} got {fuzz.hex()}; sent back {peer.received.hex()}"
    assert failures == [], where
    assert result in ("answered", "closed"), where
    for frame in peer.frames():  # everything the session says is a well-formed PDU
        codec.decode(frame)
    if bad is not None:
        # The marker comes after a command_length out of range: the link must drop.
        assert result == "closed", where
        if not may_close:
            assert (codec.GENERIC_NACK, codec.ESME_RINVCMDLEN) in {
                (cid, status) for _, cid, status, _ in peer.headers()}, where
    else:
        assert rest == b"" and frames[-1] == PROBE
        if not may_close:  # nothing could end the session: it must still be answering
            assert result == "answered", where
    if not may_close:
        check_every_request_answered(kind, frames, peer, where)


def check_every_request_answered(kind: str, frames: list[bytes], peer: RawPeer, where: str):
    """Each request got its response or a generic_nack; the ESME OKs every deliver_sm."""
    answers = {(seq, cid): status for _, cid, status, seq in peer.headers()}
    for frame in frames:
        _, cid, _, seq = codec.read_header(frame)
        if cid & codec.RESPONSE_BIT or cid == ALERT_NOTIFICATION:
            continue
        if kind == "esme" and cid == OUTBIND:
            continue  # no response exists; the ESME ignores it (it only opens connections)
        assert (seq, cid | codec.RESPONSE_BIT) in answers or (seq, codec.GENERIC_NACK) in answers, (
            f"request 0x{cid:08X} seq {seq} unanswered; {where}")
        if kind == "esme" and cid == codec.DELIVER_SM:
            assert answers.get((seq, codec.DELIVER_SM_RESP)) == codec.ESME_ROK, where


FUZZ = settings(max_examples=150)


@FUZZ
@given(STREAM)
@defer.inlineCallbacks
def test_fake_smsc_survives_hostile_streams(fuzz):
    """The fake SMSC answers the marker enquire_link or closes, and never logs a failure."""
    yield check_stream("smsc", fuzz)


@FUZZ
@given(STREAM)
@defer.inlineCallbacks
def test_esme_survives_hostile_smsc(fuzz):
    """msisdnd's ESME, facing a hostile SMSC, answers the marker or closes, failure-free."""
    yield check_stream("esme", fuzz)


# --- explicit cases -----------------------------------------------------------

BOTH = pytest.mark.parametrize("kind", ["smsc", "esme"])


@BOTH
@pytest.mark.parametrize("length", [15, 70000])
@pytest_twisted.inlineCallbacks
def test_bad_command_length_is_nacked_then_dropped(kind, length):
    """A command_length of 15 or 70000 gets generic_nack ESME_RINVCMDLEN, then the close."""
    header = struct.pack(">IIII", length, codec.ENQUIRE_LINK, 0, 31)
    result, peer, failures = yield exchange(kind, header + PROBE, until=closed)
    assert result == "closed"
    assert peer.headers() == [(16, codec.GENERIC_NACK, codec.ESME_RINVCMDLEN, 31)]
    assert failures == []


@BOTH
@pytest_twisted.inlineCallbacks
def test_unknown_command_id_is_nacked_and_the_session_goes_on(kind):
    """Command 0x77 gets generic_nack ESME_RINVCMDID with its sequence; enquire_link still works."""
    result, peer, failures = yield exchange(kind, codec.frame(0x77, 4242, b"junk") + PROBE)
    assert result == "answered"
    assert peer.headers() == [
        (16, codec.GENERIC_NACK, codec.ESME_RINVCMDID, 4242),
        (16, codec.ENQUIRE_LINK_RESP, codec.ESME_ROK, MARK),
    ]
    assert peer.open_at_outcome
    assert failures == []


@pytest_twisted.inlineCallbacks
def test_esme_answers_junk_deliver_sm_ok():
    """A deliver_sm whose body is junk still gets deliver_sm_resp ESME_ROK with its sequence."""
    junk = codec.frame(codec.DELIVER_SM, 777, b"\xff" * 5)
    result, peer, failures = yield exchange("esme", junk + PROBE)
    assert result == "answered"
    (resp, probe_resp) = peer.frames()
    assert codec.read_header(resp)[1:] == (codec.DELIVER_SM_RESP, codec.ESME_ROK, 777)
    assert codec.decode(resp).fields.get("message_id", "") == ""
    assert codec.read_header(probe_resp)[1:] == (codec.ENQUIRE_LINK_RESP, codec.ESME_ROK, MARK)
    assert failures == []


@pytest_twisted.inlineCallbacks
def test_esme_takes_no_mo_after_declaring_the_link_corrupt():
    """After generic_nack seq 0 (link corrupt, abort) a deliver_sm in the same read is not
    handed on: its deliver_sm_resp can no longer be sent, so the SMSC will redeliver it."""
    server = Server("esme", inbound=[])
    data = codec.generic_nack(0, codec.ESME_RSYSERR) + _deliver(5, 0, 0, b"MO text")
    result, peer, failures = yield exchange("esme", data, until=closed, server=server)
    assert result == "closed"
    assert failures == []
    assert peer.headers() == []  # nothing answered the deliver_sm...
    assert server.inbound == []  # ...so nothing may have acted on it


@pytest_twisted.inlineCallbacks
def test_fake_smsc_takes_no_submit_after_unbind():
    """A submit_sm that follows unbind in the same read is neither stored nor answered OK."""
    server = Server("smsc")
    data = (codec.encode("bind_transceiver", 1, system_id="fuzz", password="pw")
            + codec.frame(codec.UNBIND, 2) + _submit(3, 0, 0, b"after unbind"))
    result, peer, failures = yield exchange("smsc", data, until=closed, server=server)
    assert result == "closed" and failures == []
    assert not server.smsc.messages
    assert (codec.SUBMIT_SM_RESP, codec.ESME_ROK, 3) not in {h[1:] for h in peer.headers()}


def test_model_completes_partial_frames():
    """The framing model pads a cut frame to its command_length and stops at a bad one."""
    cut = PROBE[:10]
    assert completed(cut) == cut + b"\0" * 6
    assert split(completed(b"\x00\x00") + PROBE) == ([], b"\0" * 4 + PROBE, 0)
    assert split(codec.frame(codec.UNBIND, 1) + PROBE) == (
        [codec.frame(codec.UNBIND, 1), PROBE], b"", None)
