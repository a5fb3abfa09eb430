"""SMPP fuzz at scale: a million hostile PDUs from an SMSC to msisdnd's bound ESME session.

    .venv/bin/python bench/smpp_fuzz.py [--pdus 1000000] [--tcp-pdus 20000] [--seed 1]
                                        [--json FILE]

What the SMSC sends is made here, seeded, without hypothesis, with the
ideas of tests/test_framing_fuzz.py: valid PDUs (MO and receipt
C{deliver_sm}, C{data_sm}, C{submit_sm_resp} with and without its NUL,
C{generic_nack}, C{enquire_link}, C{unbind}, C{outbind},
C{alert_notification}, binds and requests an ESME never takes), mutated by
bit flips, truncations, C{command_length} lies, TLV lies and C{command_id}
swaps; valid headers over junk bodies; random bytes.  Responses carry, half
the time, the sequence of a request the ESME has outstanding, so that they
reach the carrier.  Items go out in streams of 1 to 8, each stream cut into
1 to 3 writes at random places; a stream whose last frame is cut short is
completed with zero octets (so that the next stream starts on a frame).

Phase 1, in memory (the bulk): an L{ESMESession} over a L{StringTransport}
on a L{task.Clock}, bound as a transceiver by a real bind exchange, wired to
a real L{Carrier} (its inbound dispatcher with MO and receipt receivers; a
load of sends kept in flight, so that submits are outstanding).  After
each stream the harness reads what the session wrote and checks, against a
model of SMPP framing: every frame the session writes decodes; every
request before the link closed got its response or a C{generic_nack}
(C{deliver_sm} / C{data_sm} their C{ESME_ROK}); the link closed exactly
when the model says it must (a C{command_length} out of range, C{unbind},
C{generic_nack} with sequence 0).  A closed link is reconnected (a new
session, a real bind).  The clock moves 5 ms per stream, so response
timers, deadlines and resubmits run too.

Phase 2, over TCP (the final check): a hostile fake SMSC (L{FakeSMSC},
whose sessions write C{--tcp-pdus} of the same streams after each bind,
each followed by a marker C{enquire_link}, then behave) against msisdnd's
whole carrier side (L{CarriersService}: the bind under C{ClientService},
reconnecting with backoff after every link the fuzz drops).

After each phase: a real MT (C{submit_sm} answered OK: the send succeeds)
and a real MO (C{deliver_sm}: the MO receiver gets it, answered OK).
Throughout: a crash is an exception out of C{dataReceived}; an unhandled
error is any event the Twisted log records with a failure (or at level
critical).  The exit status is 1 unless crashes, unhandled errors,
malformed output, unanswered requests and model disagreements are all 0
and both final checks pass.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import struct
import sys
import time
from collections import Counter, deque
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import _smpp  # noqa: E402

_smpp.use_source(None)

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import Deferred, inlineCallbacks  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from zope.interface import implementer  # noqa: E402

from _common import machine  # noqa: E402
from msisdnd.fakesmsc.smsc import FakeSMSC, SMSCSession  # noqa: E402
from msisdnd.smpp import codec  # noqa: E402
from msisdnd.smpp.carrier import Carrier  # noqa: E402
from msisdnd.smpp.config import CarrierConfig  # noqa: E402
from msisdnd.smpp.service import CarriersService  # noqa: E402
from msisdnd.smpp.session import ESMESession  # noqa: E402
from msisdnd.sms.interfaces import IMOReceiver, IReceiptReceiver, OutboundSMS  # noqa: E402

HEADER = struct.Struct(">IIII")
PACK_LENGTH = struct.Struct(">I").pack_into
RESPONSE_BIT = codec.RESPONSE_BIT
OUTBIND = codec.COMMANDS["outbind"]
ALERT_NOTIFICATION = codec.COMMANDS["alert_notification"]
BIND_TRANSCEIVER_RESP = codec.BIND_TRANSCEIVER | RESPONSE_BIT
MARK = 0x7ABCDEF0
MARKER = codec.frame(codec.ENQUIRE_LINK, MARK)
WINDOW = 10
KEEP_SENDING = 2 * WINDOW
OUR_NUMBER = "33700000000"
DEVICE = "33612345678"
TICK = 0.005  # fake seconds per stream


# -- what the SMSC sends ------------------------------------------------------------


def _udh(reference: int, total: int, part: int) -> bytes:
    return bytes((5, 0, 3, reference, total, part))


def templates() -> list[tuple[str, int, bytes, bool]]:
    """(name, weight, frame, is a response) for every valid PDU the fuzz starts from."""
    mo = dict(source_addr=DEVICE, source_addr_ton=1, source_addr_npi=1, destination_addr=OUR_NUMBER)
    receipt_text = (b"id:1a2b3c sub:001 dlvrd:001 submit date:2611301200 done date:2611301200 "
                    b"stat:DELIVRD err:000 text:")
    e = codec.encode
    f = codec.frame
    t = [
        ("deliver_sm MO", 12, e("deliver_sm", 1, short_message=b"/sms/momt/verify abc123", **mo),
         False),
        ("deliver_sm MO UCS-2", 3, e("deliver_sm", 1, data_coding=8,
                                     short_message="h\u00e9llo \u20ac".encode("utf-16-be"), **mo),
         False),
        ("deliver_sm MO UDH part", 4, e("deliver_sm", 1, esm_class=0x40,
                                        short_message=_udh(7, 2, 1) + b"first half ", **mo), False),
        ("deliver_sm MO SAR part", 3, e("deliver_sm", 1, sar_msg_ref_num=9, sar_total_segments=2,
                                        sar_segment_seqnum=2, short_message=b"second half", **mo),
         False),
        ("deliver_sm receipt TLV", 8, e("deliver_sm", 1, esm_class=4, receipted_message_id="1a2b3c",
                                        message_state=2, short_message=b"", **mo), False),
        ("deliver_sm receipt text", 6, e("deliver_sm", 1, esm_class=4,
                                         short_message=receipt_text, **mo), False),
        ("deliver_sm intermediate", 2, e("deliver_sm", 1, esm_class=0x20,
                                         receipted_message_id="1A2B3C", message_state=1, **mo),
         False),
        ("data_sm", 4, e("data_sm", 1, source_addr=DEVICE, destination_addr=OUR_NUMBER,
                         message_payload=b"data_sm payload"), False),
        ("enquire_link", 6, f(codec.ENQUIRE_LINK, 1), False),
        ("enquire_link_resp", 4, f(codec.ENQUIRE_LINK_RESP, 1), True),
        ("submit_sm_resp", 14, f(codec.SUBMIT_SM_RESP, 1, b"1a2b3c\0"), True),
        ("submit_sm_resp without NUL", 5, f(codec.SUBMIT_SM_RESP, 1, b"1a2b3c"), True),
        ("submit_sm_resp empty", 3, f(codec.SUBMIT_SM_RESP, 1), True),
        ("submit_sm_resp throttled", 4, f(codec.SUBMIT_SM_RESP, 1, b"", codec.ESME_RTHROTTLED),
         True),
        ("submit_sm_resp refused", 3, f(codec.SUBMIT_SM_RESP, 1, b"", 0x0B), True),
        ("generic_nack", 5, codec.generic_nack(1, codec.ESME_RSYSERR), True),
        ("deliver_sm_resp", 2, f(codec.DELIVER_SM_RESP, 1, b"\0"), True),
        ("bind_transceiver_resp", 2, f(BIND_TRANSCEIVER_RESP, 1, b"smsc\0"), True),
        ("unbind_resp", 1, f(codec.UNBIND_RESP, 1), True),
        ("unbind", 1, f(codec.UNBIND, 1), False),
        ("alert_notification", 2, e("alert_notification", 1, source_addr=DEVICE, esme_addr="1"),
         False),
        ("outbind", 2, f(OUTBIND, 1, b"smsc\0pw\0"), False),
        ("query_sm", 2, e("query_sm", 1, message_id="1a2b3c", source_addr="ACME"), False),
        ("bind_transceiver", 1, e("bind_transceiver", 1, system_id="smsc", password="pw"), False),
        ("submit_sm", 2, codec.frame(codec.SUBMIT_SM, 1, codec.encode_submit_sm_body(
            source_addr="ACME", destination_addr=DEVICE, short_message=b"hi")), False),
    ]
    return t


#: TLV tags for TLV lies: the ones the codec knows how to read, and some it does not.
TLV_TAGS = (0x001E, 0x0427, 0x020C, 0x020E, 0x020F, 0x0424, 0x0204, 0x0423, 0x020A, 0x0005,
            0x1234, 0xFFFF, 0x0000, 0x1400)
COMMAND_IDS = (0x77, 0x80000077, OUTBIND, 0x21, 0x103, 0x80000000, 0xFFFFFFFF, 0,
               codec.DELIVER_SM, codec.DATA_SM, codec.SUBMIT_SM_RESP, codec.GENERIC_NACK,
               codec.UNBIND, codec.ENQUIRE_LINK, ALERT_NOTIFICATION, codec.DELIVER_SM_RESP)

#: How items are made, and how often (weights).
KINDS = (("valid", 30), ("bit flips", 20), ("truncation", 8), ("length lie", 8),
         ("TLV lie", 12), ("command_id swap", 6), ("junk body", 13), ("random bytes", 3))


class Generator:
    """Seeded hostile items: C{item(live)} -> (kind, bytes)."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.templates = templates()
        self.template_weights = _cumulative(w for _, w, _, _ in self.templates)
        self.kind_names = [k for k, _ in KINDS]
        self.kind_weights = _cumulative(w for _, w in KINDS)

    def stream(self, live) -> tuple[list[str], bytes]:
        """1 to 8 items, one after the other."""
        kinds, parts = [], []
        for _ in range(self.rng.randint(1, 8)):
            kind, data = self.item(live)
            kinds.append(kind)
            parts.append(data)
        return kinds, b"".join(parts)

    def frame(self, live) -> bytearray:
        rng = self.rng
        _, _, frame, response = self.templates[
            _pick(self.template_weights, rng.random())]
        data = bytearray(frame)
        if response and live and rng.random() < 0.5:
            seq = rng.choice(live)
        elif rng.random() < 0.02:
            seq = 0
        else:
            seq = rng.randrange(1, 0x7FFFFFFF)
        struct.pack_into(">I", data, 12, seq)
        return data

    def item(self, live) -> tuple[str, bytes]:
        rng = self.rng
        kind = self.kind_names[_pick(self.kind_weights, rng.random())]
        if kind == "random bytes":
            return kind, rng.randbytes(rng.randrange(0, 48))
        data = self.frame(live)
        if kind == "valid":
            pass
        elif kind == "bit flips":
            for _ in range(rng.randint(1, 3)):
                # Mostly past command_length, sometimes in it (the stream then loses step).
                low = 0 if rng.random() < 0.1 else 4
                data[rng.randrange(low, len(data))] ^= rng.randrange(1, 256)
        elif kind == "truncation":
            data = data[:rng.randrange(4, len(data))] if len(data) > 4 else data
            if rng.random() < 0.7 and len(data) >= 16:
                PACK_LENGTH(data, 0, len(data))  # a short, well-framed frame
        elif kind == "length lie":
            true = len(data)
            r = rng.random()
            if r < 0.3:
                lie = true - rng.randint(1, min(12, true))  # the rest becomes a frame of its own
            elif r < 0.6:
                lie = true + rng.randint(1, 40)              # swallows what follows
            elif r < 0.85:
                lie = rng.randint(16, 300)
            elif r < 0.92:
                lie = rng.randint(0, 15)                     # below a header: the link drops
            else:
                lie = rng.randint(codec.MAX_PDU_LENGTH + 1, 0xFFFFFFFF)
            PACK_LENGTH(data, 0, max(0, lie))
        elif kind == "TLV lie":
            for _ in range(rng.randint(1, 2)):
                tag = rng.choice(TLV_TAGS) if rng.random() < 0.8 else rng.randrange(0x10000)
                value = rng.randbytes(rng.randrange(0, 12))
                claimed = rng.choice((len(value), len(value) + rng.randint(1, 30),
                                      max(0, len(value) - rng.randint(1, 4)), 0, 1, 2, 4))
                data += struct.pack(">HH", tag, claimed) + value
            PACK_LENGTH(data, 0, len(data))
        elif kind == "command_id swap":
            cid = rng.choice(COMMAND_IDS) if rng.random() < 0.7 else rng.randrange(1 << 32)
            struct.pack_into(">I", data, 4, cid)
        elif kind == "junk body":
            body = rng.randbytes(rng.randrange(0, 160))
            data = bytearray(data[:16] + body)
            PACK_LENGTH(data, 0, len(data))
        return kind, bytes(data)


def _cumulative(weights) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return [x / total for x in out]


def _pick(cumulative: list[float], r: float) -> int:
    for i, edge in enumerate(cumulative):
        if r < edge:
            return i
    return len(cumulative) - 1


def cut(rng: random.Random, data: bytes) -> list[bytes]:
    """C{data} in 1 to 3 writes, cut at random places."""
    if len(data) < 2:
        return [data]
    n = rng.randint(1, 3)
    places = sorted(rng.sample(range(1, len(data)), min(n - 1, len(data) - 1)))
    edges = [0, *places, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


# -- a model of SMPP framing (as tests/test_framing_fuzz.py has it) ---------------------


def split(stream: bytes) -> tuple[list[bytes], bytes, int | None]:
    """(whole frames, the partial rest, the first out-of-range command_length or None)."""
    frames, pos, end = [], 0, len(stream)
    while end - pos >= 4:
        length = int.from_bytes(stream[pos:pos + 4], "big")
        if not codec.HEADER_LENGTH <= length <= codec.MAX_PDU_LENGTH:
            return frames, stream[pos:], length
        if end - pos < length:
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


def closes(frame: bytes) -> bool:
    """Whether the ESME must drop the link on this (well-framed) frame: an unbind, a
    generic_nack with sequence 0 (each a bare header, else it does not decode)."""
    if len(frame) != 16:
        return False
    _, cid, _, seq = HEADER.unpack(frame)
    return cid == codec.UNBIND or (cid == codec.GENERIC_NACK and seq == 0)


def wants_answer(frame: bytes) -> bool:
    """A request the ESME must answer (with its response or a generic_nack)."""
    cid = HEADER.unpack_from(frame)[1] if len(frame) >= 16 else 0
    return not cid & RESPONSE_BIT and cid not in (ALERT_NOTIFICATION, OUTBIND)


def output_frames(data: bytes) -> list[bytes]:
    frames, pos, end = [], 0, len(data)
    while end - pos >= 16:
        length = int.from_bytes(data[pos:pos + 4], "big")
        frames.append(data[pos:pos + length])
        pos += length
    return frames


# -- receivers ------------------------------------------------------------------------


@implementer(IMOReceiver)
class MOs:
    def __init__(self):
        self.messages: list = []

    def moReceived(self, message) -> None:
        self.messages.append(message)
        if len(self.messages) > 1000:
            del self.messages[:500]


@implementer(IReceiptReceiver)
class Receipts:
    def __init__(self):
        self.count = 0

    def receiptReceived(self, receipt) -> None:
        self.count += 1


def carrier_config(port: int = 2775, **extra) -> CarrierConfig:
    return CarrierConfig.from_mapping({
        "name": "fuzz", "host": "127.0.0.1", "port": port, "bind": "transceiver",
        "system_id": "fuzz", "password": "fuzz", "mt_sender": "msisdnd", "default": True,
        "window": WINDOW, "region": "FR", "mo_verifier": OUR_NUMBER, **extra,
    }, "fuzz carrier")


class Sends:
    """Keeps sends in flight on a carrier or router and counts how they end."""

    def __init__(self):
        self.started = 0
        self.outcomes: Counter[str] = Counter()
        self.n = 0

    def send(self, sender, text: str | None = None) -> Deferred:
        self.started += 1
        self.n += 1
        sms = OutboundSMS(destination=f"+336{self.n % 10**8:08d}", text=text or f"fuzz {self.n}")
        d = sender.send(sms)
        d.addCallbacks(self._ok, self._failed)
        return d

    def _ok(self, result):
        self.outcomes["succeeded"] += 1
        return result

    def _failed(self, failure):
        self.outcomes[f"failed: {failure.type.__name__}"] += 1
        return None

    @property
    def pending(self) -> int:
        return self.started - sum(self.outcomes.values())


# -- phase 1: in memory -----------------------------------------------------------------


class MemoryFuzz:
    """A bound ESME session over a StringTransport, fed stream after stream."""

    def __init__(self, seed: int):
        self.clock = task.Clock()
        self.mos, self.receipts = MOs(), Receipts()
        self.carrier = Carrier(carrier_config(), self.clock, send_timeout=10.0,
                               mo_receiver=self.mos, receipt_receiver=self.receipts)
        self.gen = Generator(seed)
        self.rng = random.Random(seed + 1)
        self.sends = Sends()
        self.live: deque[int] = deque(maxlen=64)
        self.pdus = 0
        self.streams = 0
        self.kinds: Counter[str] = Counter()
        self.frames: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.examples: list[str] = []
        self.crashes = 0
        self.reconnects = 0
        self.written = 0
        self.session: ESMESession | None = None
        self.transport: StringTransport | None = None
        self.connect()

    # -- the session ---------------------------------------------------------

    def connect(self) -> None:
        session = ESMESession(self.clock, window=WINDOW, response_timeout=10.0,
                              enquire_link_interval=30.0, onInbound=self.carrier.inbound)
        transport = StringTransport()
        session.makeConnection(transport)
        bound = session.bind("transceiver", system_id="fuzz", password="fuzz")
        _, _, _, seq = HEADER.unpack_from(transport.value())
        transport.clear()
        session.dataReceived(codec.frame(BIND_TRANSCEIVER_RESP, seq, b"smsc\0"))
        if not bound.called:
            raise RuntimeError("the bind exchange did not bind")
        self.session, self.transport = session, transport
        self.carrier.bindUp(None, session)

    def reconnect(self) -> None:
        session = self.session
        session.connectionLost(Failure(ConnectionDone("the fuzz dropped the link")))
        self.carrier.bindDown(None, session)
        self.reconnects += 1
        self.connect()

    def violation(self, what: str, detail: str) -> None:
        self.violations[what] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{what}: {detail}")

    def read_output(self) -> list[bytes]:
        data = self.transport.value()
        self.transport.clear()
        frames = output_frames(data)
        self.written += len(frames)
        for frame in frames:
            length, cid, _, seq = HEADER.unpack_from(frame)
            if length != len(frame):
                self.violation("malformed output", frame.hex())
                continue
            try:
                codec.decode(frame)
            except codec.DecodeError as e:
                self.violation("malformed output", f"{frame.hex()}: {e}")
            if not cid & RESPONSE_BIT:
                self.live.append(seq)
        return frames

    def keep_sending(self) -> None:
        carrier = self.carrier
        for _ in range(KEEP_SENDING):  # bounded: a send may fail at once
            if carrier.queue_depth + carrier.in_flight >= KEEP_SENDING or self.sends.pending >= 200:
                break
            self.sends.send(carrier)

    # -- one stream ------------------------------------------------------------------

    def run(self, pdus: int, progress) -> None:
        gen, rng = self.gen, self.rng
        while self.pdus < pdus:
            if self.transport.disconnecting:  # a timer closed it (an enquire_link unanswered)
                self.frames["link dropped by a timer"] += 1
                self.reconnect()
            self.keep_sending()
            self.read_output()
            kinds, raw = gen.stream(self.live)
            self.pdus += len(kinds)
            self.streams += 1
            self.kinds.update(kinds)
            self.feed(completed(raw), rng)
            self.clock.advance(TICK)
            if self.streams % 20000 == 0:
                progress(self.pdus)

    def feed(self, stream: bytes, rng: random.Random) -> None:
        frames, _, bad = split(stream)
        session = self.session
        try:
            for chunk in cut(rng, stream):
                session.dataReceived(chunk)
                if self.transport.disconnecting:
                    break
        except Exception as e:  # a crash: nothing may escape dataReceived
            self.crashes += 1
            if len(self.examples) < 10:
                self.examples.append(f"crash: {e!r} on {stream.hex()}")
        out = self.read_output()
        answers = {(HEADER.unpack_from(f)[3], HEADER.unpack_from(f)[1]): HEADER.unpack_from(f)[2]
                   for f in out}
        closer = next((i for i, f in enumerate(frames) if closes(f)), None)
        must_close = closer is not None or bad is not None
        closed = self.transport.disconnecting
        if closed != must_close:
            self.violation("model disagreement",
                           f"closed={closed}, the model says {must_close}: {stream.hex()}")
        handled = frames if closer is None else frames[:closer + 1]
        for frame in handled:
            self.frames[self.outcome(frame, answers)] += 1
        for frame in frames[len(handled):]:
            self.frames["dropped with the link (after a closing frame)"] += 1
        if bad is not None:
            self.frames["command_length out of range: nacked, link dropped"] += 1
            if (codec.GENERIC_NACK, codec.ESME_RINVCMDLEN) not in {
                    (cid, status) for (_, cid), status in answers.items()} and closer is None:
                self.violation("no generic_nack ESME_RINVCMDLEN before the drop", stream.hex())
        if closed:
            self.reconnect()

    def outcome(self, frame: bytes, answers: dict) -> str:
        _, cid, _, seq = HEADER.unpack_from(frame)
        if closes(frame):
            return "unbind / generic_nack seq 0: link dropped"
        if not wants_answer(frame):
            return ("response: taken or ignored" if cid & RESPONSE_BIT
                    else "alert_notification / outbind: ignored")
        status = answers.get((seq, cid | RESPONSE_BIT))
        if status is not None:
            if cid in (codec.DELIVER_SM, codec.DATA_SM) and status != codec.ESME_ROK:
                self.violation("deliver_sm not answered ESME_ROK", frame.hex())
            return "request: answered OK" if status == codec.ESME_ROK else \
                "request: answered with an error status"
        if (seq, codec.GENERIC_NACK) in answers:
            if cid in (codec.DELIVER_SM, codec.DATA_SM):
                self.violation("deliver_sm nacked", frame.hex())
            return "request: generic_nack"
        self.violation("request unanswered", frame.hex())
        return "request: UNANSWERED"

    # -- afterwards ------------------------------------------------------------------

    def final_check(self) -> dict:
        """A real MT and a real MO on the session as the fuzz left it (or reconnected)."""
        result: dict = {"session_bound_after_fuzz": self.session.state.value}
        if self.transport.disconnecting:
            self.reconnect()
        mt = self.sends.send(self.carrier, "final check MT")
        got: list = []
        mt.addBoth(got.append)
        for _ in range(100_000):  # answer every submit OK until the check's is accepted
            if got:
                break
            for frame in self.read_output():
                _, cid, _, seq = HEADER.unpack_from(frame)
                if cid == codec.SUBMIT_SM:
                    self.session.dataReceived(codec.frame(codec.SUBMIT_SM_RESP, seq, b"f1a1\0"))
            self.clock.advance(0.01)
        result["mt"] = repr(got[0]) if got else "never answered"
        result["mt_ok"] = bool(got) and hasattr(got[0], "message_ids")
        before = len(self.mos.messages)
        self.read_output()
        text = "/sms/momt/verify final-check"
        self.session.dataReceived(codec.encode(
            "deliver_sm", 4242, source_addr=DEVICE, source_addr_ton=1, source_addr_npi=1,
            destination_addr=OUR_NUMBER, short_message=text.encode()))
        answered = [HEADER.unpack_from(f)[1:] for f in self.read_output()]
        arrived = [m for m in self.mos.messages[before:] if m.text == text]
        result["mo"] = f"answered {answered}, dispatched {len(arrived)}"
        result["mo_ok"] = ((codec.DELIVER_SM_RESP, codec.ESME_ROK, 4242) in answered
                           and len(arrived) == 1 and arrived[0].source == "+" + DEVICE)
        return result


# -- phase 2: over TCP --------------------------------------------------------------------


class HostileSMSC(FakeSMSC):
    """A fake SMSC whose sessions write fuzz streams after every bind, until the budget is spent."""

    def __init__(self, clock, gen: Generator, budget: int):
        super().__init__(clock, receipt_delay=None, max_messages=100_000)
        self.gen = gen
        self.budget = budget
        self.sent_pdus = 0
        self.streams = 0
        self.outcomes: Counter[str] = Counter()
        self.live: deque[int] = deque(maxlen=64)

    def buildFactory(self):
        from twisted.internet.protocol import Factory

        return Factory.forProtocol(lambda: HostileSession(self))


class HostileSession(SMSCSession):
    """Behaves as the fake SMSC, and after the bind writes one fuzz stream at a time,
    each followed by the marker enquire_link; the next goes when the marker is answered."""

    waiting = False

    def pduReceived(self, pdu: codec.PDU) -> None:
        smsc = self.smsc
        if pdu.command_id == codec.SUBMIT_SM:
            smsc.live.append(pdu.sequence)
        if pdu.command_id == codec.ENQUIRE_LINK_RESP and pdu.sequence == MARK:
            smsc.outcomes["answered the marker"] += 1
            self.waiting = False
            self.smsc.clock.callLater(0, self.fuzzNext)
            return
        was_bound = self.mode is not None
        super().pduReceived(pdu)
        if not was_bound and self.mode is not None:
            self.fuzzNext()

    def undecodable(self, error) -> None:
        super().undecodable(error)

    def fuzzNext(self) -> None:
        smsc = self.smsc
        if self.waiting or self.transport is None or self not in smsc.sessions:
            return
        if smsc.sent_pdus >= smsc.budget:
            return
        kinds, raw = smsc.gen.stream(smsc.live)
        smsc.sent_pdus += len(kinds)
        smsc.streams += 1
        self.waiting = True
        self.transport.write(completed(raw) + MARKER)

    def connectionLost(self, reason=None) -> None:
        if self.waiting:
            self.smsc.outcomes["dropped the link"] += 1
        super().connectionLost(reason)


@inlineCallbacks
def tcp_phase(reactor, seed: int, budget: int, progress):
    gen = Generator(seed + 2)
    smsc = HostileSMSC(reactor, gen, budget)
    port = reactor.listenTCP(0, smsc.buildFactory(), interface="127.0.0.1")
    mos, receipts = MOs(), Receipts()
    # Reconnect at once (the fuzz drops the link often, on purpose).
    config = carrier_config(port.getHost().port, reconnect_delay_initial=0.002,
                            reconnect_delay_max=0.01, reconnect_grace=60)
    service = CarriersService([config], reactor, send_timeout=10.0, mo_receiver=mos,
                              receipt_receiver=receipts)
    service.startService()
    sends = Sends()
    result: dict = {}
    started = time.perf_counter()
    try:
        yield _smpp.wait_bound(reactor, service, timeout=15)
        last = -1
        deadline = time.monotonic() + max(120.0, budget / 200)
        while smsc.sent_pdus < budget or any(s.waiting for s in smsc.sessions
                                             if isinstance(s, HostileSession)):
            if time.monotonic() > deadline:
                result["stalled"] = f"{smsc.sent_pdus} of {budget} PDUs sent when time ran out"
                break
            for _ in range(KEEP_SENDING):  # bounded: a send may fail at once
                if sends.pending >= KEEP_SENDING:
                    break
                sends.send(service.router)
            if smsc.sent_pdus // 5000 != last:
                last = smsc.sent_pdus // 5000
                progress(smsc.sent_pdus)
            yield task.deferLater(reactor, 0.01, lambda: None)
        result["wall_seconds"] = time.perf_counter() - started
        result["pdus"] = smsc.sent_pdus
        result["streams"] = smsc.streams
        result["outcomes"] = dict(smsc.outcomes)
        result["binds_accepted"] = smsc.bind_count
        result["reconnects"] = sum(b.reconnects for b in service.binds)
        # Afterwards: a real MT and a real MO through the (re)bound session.
        yield _smpp.wait_bound(reactor, service, timeout=15)
        text = "final check MT over TCP"
        sent = yield sends.send(service.router, text)
        stored = [m for m in smsc.messages if m.text == text]
        result["mt"] = repr(sent)
        result["mt_ok"] = sent is not None and len(stored) >= 1
        mo_text = "/sms/momt/verify tcp-final-check"
        try:
            yield smsc.deliverMO("+" + DEVICE, OUR_NUMBER, mo_text)
            answered = True
        except Exception as e:
            answered = repr(e)
        arrived = [m for m in mos.messages if m.text == mo_text]
        result["mo"] = f"deliver_sm_resp OK: {answered}, dispatched {len(arrived)}"
        result["mo_ok"] = answered is True and len(arrived) == 1
        # Let the sends still in flight finish, so no Deferred is left behind.
        for _ in range(1500):
            if not sends.pending:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        result["sends"] = dict(sends.outcomes)
        result["mo_dispatched"] = len(mos.messages)
        result["receipts_dispatched"] = receipts.count
    finally:
        yield service.stopService()
        yield port.stopListening()
    return result


# -- the report ------------------------------------------------------------------------


def table(counter: Counter, total_label: str) -> str:
    total = sum(counter.values()) or 1
    lines = [f"| {total_label} | count | share |", "|---|---:|---:|"]
    for k, v in counter.most_common():
        lines.append(f"| {k} | {v:,} | {100 * v / total:.2f}% |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pdus", type=int, default=1_000_000,
                   help="PDUs fed in memory (default: %(default)s)")
    p.add_argument("--tcp-pdus", type=int, default=20_000,
                   help="PDUs over TCP to the whole carrier side (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    if args.pdus < 1 or args.tcp_pdus < 0:
        p.error("--pdus must be positive and --tcp-pdus not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = _smpp.code_state()
    env = machine()
    print("command: " + " ".join([".venv/bin/python", "bench/smpp_fuzz.py"] + sys.argv[1:]))
    print("commit: " + _smpp.describe_code(state))
    print(f"machine: {env['date']}, {env['nproc']} CPUs, {env['cpu_model']}, "
          f"Python {env['python']}")
    print(f"settings: {args.pdus:,} PDUs in memory, {args.tcp_pdus:,} over TCP, seed {args.seed}; "
          f"window {WINDOW}, {KEEP_SENDING} sends kept in flight", flush=True)
    _smpp.quiet_twisted_log()

    def progress(n: int) -> None:
        print(f"  {n:,} PDUs", file=sys.stderr, flush=True)

    report: dict = {"environment": env | {"code": state}, "settings": vars(args)}

    # Phase 1.
    with _smpp.FailureWatch() as watch:
        fuzz = MemoryFuzz(args.seed)
        cpu, wall = time.process_time(), time.perf_counter()
        fuzz.run(args.pdus, progress)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        final = fuzz.final_check()
        fuzz.carrier.dispatcher.stop()
        gc.collect()  # an unhandled failed Deferred is logged when collected
    memory = {
        "pdus": fuzz.pdus, "streams": fuzz.streams, "wall_seconds": wall, "cpu_seconds": cpu,
        "pdus_per_second": fuzz.pdus / wall, "kinds": dict(fuzz.kinds),
        "frames": dict(fuzz.frames), "frames_total": sum(fuzz.frames.values()),
        "crashes": fuzz.crashes, "log_failures": watch.failures + watch.criticals,
        "log_warnings": watch.warnings, "violations": dict(fuzz.violations),
        "reconnects": fuzz.reconnects, "frames_written": fuzz.written,
        "sends": dict(fuzz.sends.outcomes), "sends_pending": fuzz.sends.pending,
        "mo_dispatched": fuzz.carrier.dispatcher.mo_count,
        "receipts_dispatched": fuzz.carrier.dispatcher.receipt_count,
        "inbound_dropped": fuzz.carrier.dispatcher.dropped_count,
        "final": final, "examples": fuzz.examples + watch.examples,
    }
    report["memory"] = memory

    print()
    print(f"## In memory: {fuzz.pdus:,} PDUs in {fuzz.streams:,} streams, {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU: {fuzz.pdus / wall:,.0f} PDUs/s")
    print()
    print(table(fuzz.kinds, "PDUs made as"))
    print()
    print(table(fuzz.frames, "frames the session read, by what it did"))
    print()
    print(f"crashes: {fuzz.crashes}; unhandled errors (log failures/criticals): "
          f"{memory['log_failures']}; malformed output: {fuzz.violations['malformed output']}; "
          f"unanswered requests: {fuzz.violations['request unanswered']}; model disagreements: "
          f"{fuzz.violations['model disagreement']}; other violations: "
          f"{sum(fuzz.violations.values()) - fuzz.violations['malformed output'] - fuzz.violations['request unanswered'] - fuzz.violations['model disagreement']}")
    print(f"reconnects (link dropped as the model said): {fuzz.reconnects:,}; frames written by "
          f"the ESME: {fuzz.written:,}; MO dispatched {memory['mo_dispatched']:,}, receipts "
          f"{memory['receipts_dispatched']:,}, inbound dropped {memory['inbound_dropped']:,}; "
          f"sends {memory['sends']} ({memory['sends_pending']} pending); warnings logged "
          f"{watch.warnings:,}")
    print(f"afterwards: MT {'OK' if final['mt_ok'] else 'FAILED'} ({final['mt']}); "
          f"MO {'OK' if final['mo_ok'] else 'FAILED'} ({final['mo']})")

    # Phase 2.
    tcp: dict = {}
    if args.tcp_pdus:
        with _smpp.FailureWatch() as watch:
            holder: list = []

            @inlineCallbacks
            def run(reactor):
                holder.append((yield tcp_phase(reactor, args.seed, args.tcp_pdus, progress)))

            try:
                task.react(lambda reactor: run(reactor), [])
            except SystemExit as e:
                if e.code:
                    holder.append({"error": "the TCP phase failed (see above)"})
            gc.collect()
        tcp = holder[0] if holder else {"error": "did not run"}
        tcp["log_failures"] = watch.failures + watch.criticals
        tcp["log_warnings"] = watch.warnings
        tcp["examples"] = watch.examples
        report["tcp"] = tcp
        print()
        if "error" in tcp:
            print(f"## Over TCP: {tcp['error']}")
        else:
            print(f"## Over TCP: {tcp['pdus']:,} PDUs in {tcp['streams']:,} streams, "
                  f"{tcp['wall_seconds']:.1f} s: {tcp['pdus'] / tcp['wall_seconds']:,.0f} PDUs/s")
            print(f"streams: {tcp['outcomes']}; binds accepted {tcp['binds_accepted']}, "
                  f"reconnects {tcp['reconnects']}; sends {tcp['sends']}; MO dispatched "
                  f"{tcp['mo_dispatched']}, receipts {tcp['receipts_dispatched']}")
            print(f"unhandled errors (log failures/criticals): {tcp['log_failures']}"
                  + (f"; STALLED: {tcp['stalled']}" if "stalled" in tcp else ""))
            print(f"afterwards: MT {'OK' if tcp['mt_ok'] else 'FAILED'} ({tcp['mt']}); "
                  f"MO {'OK' if tcp['mo_ok'] else 'FAILED'} ({tcp['mo']})")

    examples = memory["examples"] + tcp.get("examples", [])
    for example in examples[:10]:
        print(f"  example: {example[:2000]}")
    problems = (fuzz.crashes + memory["log_failures"] + sum(fuzz.violations.values())
                + (not final["mt_ok"]) + (not final["mo_ok"]))
    if args.tcp_pdus:
        problems += (tcp.get("log_failures", 0) + ("error" in tcp) + ("stalled" in tcp)
                     + (not tcp.get("mt_ok")) + (not tcp.get("mo_ok")))
    print(f"problems: {problems}")
    report["problems"] = problems
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
