"""bench/_wire.py: the loopback capture read back into HTTP exchanges and submit_sm PDUs.

The captures are built here, byte by byte (pcap header, Ethernet, IPv4,
TCP), with the timestamps chosen, so that what each interval must be is
known: several requests in one segment, a request and a PDU split across
segments, segments out of order and again, streams joined mid-way, a lost
segment.  No timing of anything is measured.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from msisdnd.smpp import codec

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import _wire  # noqa: E402

API, SMPP = 8080, 2775
CLIENT = ("127.0.0.1", 40000)
ESME = ("127.0.0.1", 40001)


def frame(src, dst, seq, payload=b"", syn=False) -> bytes:
    """An Ethernet frame (as Linux's lo has them) with an IPv4 TCP segment."""
    tcp = struct.pack("!HHIIBBHHH", src[1], dst[1], seq, 0, 5 << 4,
                      0x02 if syn else 0x18, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    return b"\0" * 12 + b"\x08\x00" + ip + tcp + payload


def pcap(records, nano=True, endian="<") -> bytes:
    """A classic pcap file of C{(time, frame)} records."""
    out = struct.pack(endian + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0,
                      262144, 1)
    for ts, data in records:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        out += struct.pack(endian + "IIII", sec, frac, len(data), len(data)) + data
    return out


class Side:
    """One direction of a connection: segments with consecutive sequence numbers."""

    def __init__(self, src, dst, isn):
        self.src, self.dst, self.seq = src, dst, isn

    def syn(self, ts):
        record = (ts, frame(self.src, self.dst, self.seq, syn=True))
        self.seq += 1
        return record

    def send(self, ts, payload, seq=None):
        record = (ts, frame(self.src, self.dst, self.seq if seq is None else seq, payload))
        if seq is None:
            self.seq = (self.seq + len(payload)) % (1 << 32)
        return record


def request(path, body=b"", method="POST") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{API}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def answer(status=200, body=b"") -> bytes:
    if status == 204:
        return b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n"
    return f"HTTP/1.1 {status} OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def submit(number, sequence=1) -> bytes:
    return codec.encode("submit_sm", sequence, source_addr="msisdnd", destination_addr=number,
                        short_message=b"Your code: 123456")


def read(records, **kw):
    return _wire.read_capture(pcap(records, **kw), api_ports={API}, smpp_ports={SMPP})


def test_an_mt_verify_is_matched_to_the_submit_sm_that_carried_its_code():
    up, down = Side(CLIENT, ("127.0.0.1", API), 1000), Side(("127.0.0.1", API), CLIENT, 5000)
    esme = Side(ESME, ("127.0.0.1", SMPP), 2**32 - 30)  # the sequence numbers wrap
    body = json.dumps({"msisdn": "+33612345678", "mcc": "208"}).encode()
    other = submit("33699999999", 1)
    mine = submit("33612345678", 2)
    records = [
        up.syn(1.0), down.syn(1.0001),
        # The request in two segments: the daemon has it all at the second.
        up.send(10.000, request("/sms/mt/verify", body)[:40]),
        up.send(10.002, request("/sms/mt/verify", body)[40:]),
        # Another number's submit_sm first, then this one's split across segments.
        esme.send(10.003, other + mine[:20]),
        esme.send(10.0065, mine[20:]),
        down.send(10.010, answer(204)),
    ]
    wire = read(records)
    assert [(r.method, r.path, r.status) for r in wire.requests] == [
        ("POST", "/sms/mt/verify", 204)]
    assert [s.destination for s in wire.submits] == ["33699999999", "33612345678"]
    times, missing = wire.accept_submit_times()
    assert missing == []
    assert times == [pytest.approx(0.0045, abs=1e-9)]  # last request byte -> last PDU byte
    ms = wire.answer_times()["POST /sms/mt/verify 204"]
    assert ms["n"] == 1 and ms["p99"] == pytest.approx(8.0, abs=1e-6)


def test_requests_in_one_segment_and_answers_coalesced_are_paired_in_order():
    up, down = Side(CLIENT, ("127.0.0.1", API), 7), Side(("127.0.0.1", API), CLIENT, 9)
    records = [
        up.syn(0.5), down.syn(0.5),
        up.send(1.0, request("/register") + request("/unregister", b"{}")),
        # The first answer, and the start of the second, in one segment.
        down.send(1.004, answer(200, b'{"a": 1}') + answer(204)[:10]),
        down.send(1.009, answer(204)[10:]),
    ]
    wire = read(records, nano=False, endian=">")
    assert [(r.path, r.status) for r in wire.requests] == [("/register", 200),
                                                           ("/unregister", 204)]
    assert wire.answer_times()["POST /register 200"]["p50"] == pytest.approx(4.0, abs=1e-3)
    # The second answer's first byte was in the first answer's segment.
    assert wire.answer_times()["POST /unregister 204"]["p50"] == pytest.approx(4.0, abs=1e-3)
    assert wire.unpaired == 0 and wire.gaps == 0


def test_segments_out_of_order_or_again_are_read_once_in_order():
    up, down = Side(CLIENT, ("127.0.0.1", API), 100), Side(("127.0.0.1", API), CLIENT, 200)
    data = request("/register") + request("/certificate/sign", b'{"k": "v"}')
    records = [up.syn(0.0), down.syn(0.0)]
    first, second, third = data[:30], data[30:70], data[70:]
    start = up.seq
    records.append(up.send(1.0, first, seq=start))
    records.append(up.send(1.2, third, seq=start + 70))        # ahead of a gap
    records.append(up.send(1.1, second, seq=start + 30))       # fills it
    records.append(up.send(1.3, data[20:50], seq=start + 20))  # again, partly
    records.append(down.send(1.5, answer(200, b"1") + answer(200, b"2")))
    wire = read(records)
    assert [(r.path, r.body) for r in wire.requests] == [
        ("/register", b""), ("/certificate/sign", b'{"k": "v"}')]
    # The second request's last byte came in the segment captured at 1.2.
    assert wire.requests[1].last == pytest.approx(1.2)
    assert wire.requests[0].last == pytest.approx(1.1)


def test_streams_older_than_the_capture_are_joined_at_a_message():
    up = Side(CLIENT, ("127.0.0.1", API), 123456)
    down = Side(("127.0.0.1", API), CLIENT, 654321)
    esme = Side(ESME, ("127.0.0.1", SMPP), 42)
    pdu = submit("33611111111")
    records = [
        up.send(1.0, b"ent-Length: 0\r\n\r\n"),  # the end of a request sent before
        down.send(1.001, b"\r\n"),
        esme.send(1.002, pdu[10:]),               # the end of an older PDU
        up.send(2.0, request("/register")),
        down.send(2.003, answer(200, b"{}")),
        esme.send(2.5, pdu),
    ]
    wire = read(records)
    assert [(r.path, r.status) for r in wire.requests] == [("/register", 200)]
    assert [s.destination for s in wire.submits] == ["33611111111"]


def test_a_lost_segment_is_skipped_and_counted():
    up, down = Side(CLIENT, ("127.0.0.1", API), 0), Side(("127.0.0.1", API), CLIENT, 0)
    records = [up.syn(0.0), down.syn(0.0)]
    lost = request("/register")
    up.seq += len(lost)  # its request never made it into the capture
    records.append(down.send(1.0, answer(200, b"{}")))  # ... its answer did
    records.append(up.send(2.0, request("/unregister")))
    records.append(down.send(2.002, answer(204)))
    wire = read(records)
    assert wire.gaps == 1
    # Read, but no longer paired: which answer was whose is not known.
    assert [(r.path, r.status) for r in wire.requests] == [("/unregister", None)]
    assert wire.unpaired == 2 and wire.answer_times() == {}


def test_a_window_and_a_number_without_submit_sm():
    up, down = Side(CLIENT, ("127.0.0.1", API), 0), Side(("127.0.0.1", API), CLIENT, 0)
    records = [up.syn(0.0), down.syn(0.0)]
    # Answered as sent (204) with no submit_sm; refused (429); one more, later.
    for ts, number, status in ((1.0, "+33600000001", 204), (1.5, "+33600000003", 429),
                               (5.0, "+33600000002", 204)):
        records.append(up.send(ts, request("/sms/mt/verify",
                                           json.dumps({"msisdn": number}).encode())))
        records.append(down.send(ts + 0.01, answer(status, b"{}")))
    wire = read(records)
    early = wire.accept_submit(0.5, 2.0)
    assert (early["n"], early["missing"], early["refused"]) == (0, 1, 1)
    assert early["missing_at"] == [(pytest.approx(1.0), 204)]
    assert wire.answer_times(4.0, 6.0)["POST /sms/mt/verify 204"]["n"] == 1
    assert wire.answer_times(0.5, 2.0)["POST /sms/mt/verify 429"]["n"] == 1


def test_what_is_not_a_pcap_is_refused():
    with pytest.raises(_wire.CaptureError, match="not a classic pcap"):
        list(_wire.read_pcap(b"\x0a\x0d\x0d\x0a" + b"\0" * 40))
    with pytest.raises(_wire.CaptureError, match="link type 228"):
        list(_wire.read_pcap(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 228)))
