"""Latency on the wire: a loopback capture, read back into HTTP exchanges and SMPP PDUs.

    capture = Capture.start(directory, ports=[api_port, smpp_port])  # tcpdump -i lo
    ...                                                             # the load runs
    capture.stop()
    wire = read_capture(capture.path, api_ports={api_port}, smpp_ports={smpp_port})
    wire.answer_times(t0, t1)     # per endpoint: request's last segment -> response's first
    wire.accept_submit(t0, t1)    # mt/verify's last segment -> its submit_sm's segment

Every time here is a kernel timestamp of a captured segment (C{tcpdump -i lo
--time-stamp-precision nano}, the wall clock, as C{time.time()}): when the
sending process's write reached the loopback device.  So the interval from
a request's last segment to the daemon's first segment of the answer is the
daemon's own answer time (the kernel's loopback hop and the daemon's
scheduling included, the load driver's not); from an C{mt/verify}'s last
segment to the segment that completes the C{submit_sm} carrying its code
(matched by C{destination_addr}, the number in the request body: every flow
of the benchmarks has a number of its own) is "HTTP accept to C{submit_sm}
on the wire".

Each direction of each TCP connection is reassembled by sequence number
(several messages in one segment, one message across segments, segments out
of order or again); a stream that began before the capture is joined at its
first segment that starts a message (an HTTP request line or status line,
an SMPP header with a known command).  A gap the capture never fills (the
kernel dropped packets) is skipped at the next segment that starts a
message, and counted in L{Wire.gaps}.  Answers are paired with requests in
order, per connection, until a gap in either direction: the requests after
it are still read (their numbers still find their C{submit_sm}), not paired.

Only the standard library and L{msisdnd.smpp.codec} (for the C{submit_sm}
bodies).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

#: pcap's magic numbers: microsecond and nanosecond timestamps.
_MAGIC_US, _MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D
#: Link types read: Ethernet (Linux's lo), Linux cooked v1 and v2, raw IP.
LINK_ETHERNET, LINK_SLL, LINK_SLL2, LINK_RAW = 1, 113, 276, 101
_SEQ_MOD = 1 << 32
#: Out-of-order segments kept waiting for a gap to fill before it counts as lost.
MAX_PENDING = 256
_METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"PATCH ", b"OPTIONS ")
SUBMIT_SM = 0x00000004
#: SMPP commands a stream may be joined at (requests and responses of SMPP 3.4).
_SMPP_COMMANDS = frozenset({
    0x00000001, 0x00000002, 0x00000003, 0x00000004, 0x00000005, 0x00000006, 0x00000007,
    0x00000008, 0x00000009, 0x0000000B, 0x00000015, 0x00000021, 0x00000103, 0x80000000,
    0x80000001, 0x80000002, 0x80000003, 0x80000004, 0x80000005, 0x80000006, 0x80000007,
    0x80000008, 0x80000009, 0x80000015, 0x80000021, 0x80000103})


# -- pcap ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A captured TCP segment: kernel time, endpoints, sequence, SYN, payload."""

    ts: float
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    syn: bool
    payload: bytes


class CaptureError(Exception):
    """Not a pcap file this reader understands."""


def read_pcap(data: bytes):
    """The TCP segments of a classic pcap file's bytes, in file order.

    Raises L{CaptureError} for another format or link type; a truncated
    last record (a capture stopped mid-write) ends the iteration."""
    if len(data) < 24:
        raise CaptureError("not a pcap file: shorter than its header")
    for endian in "<>":
        magic, = struct.unpack(endian + "I", data[:4])
        if magic in (_MAGIC_US, _MAGIC_NS):
            break
    else:
        raise CaptureError(f"not a classic pcap file (magic {data[:4].hex()})")
    scale = 1e-9 if magic == _MAGIC_NS else 1e-6
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    if linktype not in (LINK_ETHERNET, LINK_SLL, LINK_SLL2, LINK_RAW):
        raise CaptureError(f"link type {linktype} is not read here")
    record = struct.Struct(endian + "IIII")
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, caplen, length = record.unpack_from(data, pos)
        pos += 16
        if pos + caplen > len(data):
            return
        frame = data[pos:pos + caplen]
        pos += caplen
        if caplen < length:
            continue  # cut by the snap length: its payload is not all there
        segment = _tcp_of(frame, linktype, sec + frac * scale)
        if segment is not None:
            yield segment


def _tcp_of(frame: bytes, linktype: int, ts: float) -> Segment | None:
    if linktype == LINK_ETHERNET:
        ethertype, ip = struct.unpack_from("!H", frame, 12)[0], 14
    elif linktype == LINK_SLL:
        ethertype, ip = struct.unpack_from("!H", frame, 14)[0], 16
    elif linktype == LINK_SLL2:
        ethertype, ip = struct.unpack_from("!H", frame, 0)[0], 20
    else:
        ethertype, ip = (0x86DD if frame[:1] and frame[0] >> 4 == 6 else 0x0800), 0
    if ethertype == 0x0800:
        if len(frame) < ip + 20 or frame[ip + 9] != 6:
            return None
        header = (frame[ip] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, ip + 2)[0]
        src = ".".join(map(str, frame[ip + 12:ip + 16]))
        dst = ".".join(map(str, frame[ip + 16:ip + 20]))
        tcp, end = ip + header, ip + total
    elif ethertype == 0x86DD:
        if len(frame) < ip + 40 or frame[ip + 6] != 6:
            return None  # extension headers are not followed: loopback has none
        src, dst = frame[ip + 8:ip + 24].hex(), frame[ip + 24:ip + 40].hex()
        tcp, end = ip + 40, ip + 40 + struct.unpack_from("!H", frame, ip + 4)[0]
    else:
        return None
    if len(frame) < tcp + 20 or end > len(frame):
        return None
    sport, dport, seq = struct.unpack_from("!HHI", frame, tcp)
    offset = (frame[tcp + 12] >> 4) * 4
    return Segment(ts, (src, sport), (dst, dport), seq, bool(frame[tcp + 13] & 0x02),
                   frame[tcp + offset:end])


# -- one direction of a connection, reassembled ----------------------------------------------


class Stream:
    """The bytes one side of a TCP connection sent, in order, each with the
    time of the segment that carried it.

    L{feed} takes the segments as captured; the bytes in order are in
    C{data} (from absolute offset C{base}) for the message parser, which
    calls L{consume} for what it has read and L{time_at} for when a byte
    was on the wire.
    """

    def __init__(self, starts_message):
        self.starts_message = starts_message
        self.next_seq: int | None = None
        self.pending: dict[int, tuple[float, bytes]] = {}
        self.data = bytearray()
        self.base = 0
        #: (absolute offset just past the chunk, time), oldest first
        self.chunks: deque[tuple[int, float]] = deque()
        self.gaps = 0
        #: set when a gap was skipped: the parser starts afresh
        self.resynced = False

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def feed(self, segment: Segment) -> None:
        if segment.syn:
            self.next_seq = (segment.seq + 1) % _SEQ_MOD
            return
        if not segment.payload:
            return
        if self.next_seq is None:
            if not self.starts_message(segment.payload):
                return  # mid-message in a stream older than the capture
            self.next_seq = segment.seq
        self.pending[segment.seq] = (segment.ts, segment.payload)
        self._drain()
        if len(self.pending) > MAX_PENDING:
            self._skip_gap()

    def _drain(self) -> None:
        progressed = True
        while progressed and self.pending:
            progressed = False
            for seq in list(self.pending):
                ahead = (seq - self.next_seq) % _SEQ_MOD
                ts, payload = self.pending[seq]
                if ahead == 0 or ahead >= _SEQ_MOD // 2:
                    del self.pending[seq]
                    behind = (_SEQ_MOD - ahead) % _SEQ_MOD
                    if behind < len(payload):  # new bytes past what we have
                        self._append(ts, payload[behind:])
                        progressed = True

    def _append(self, ts: float, payload: bytes) -> None:
        self.data += payload
        self.next_seq = (self.next_seq + len(payload)) % _SEQ_MOD
        self.chunks.append((self.end, ts))

    def _skip_gap(self) -> None:
        """Give up on the missing bytes: go on at the first pending segment that
        starts a message."""
        self.gaps += 1
        order = sorted(self.pending, key=lambda s: (s - self.next_seq) % _SEQ_MOD)
        self.restart()
        for seq in order:
            if self.starts_message(self.pending[seq][1]):
                self.next_seq = seq
                self._drain()
                return
            del self.pending[seq]

    def restart(self) -> None:
        """Drop what is unread; join again at the next segment that starts a message."""
        self.data.clear()
        self.chunks.clear()
        self.base = 0
        self.next_seq = None
        self.resynced = True

    def finish(self) -> None:
        """The capture ended: skip any gap still open, so what followed it is read."""
        while self.pending and self.next_seq is not None:
            self._skip_gap()

    def time_at(self, offset: int) -> float:
        """When the byte at absolute C{offset} was captured."""
        for end, ts in self.chunks:
            if offset < end:
                return ts
        raise IndexError(offset)

    def consume(self, upto: int) -> None:
        """The parser has read everything before absolute offset C{upto}."""
        del self.data[:upto - self.base]
        self.base = upto
        while self.chunks and self.chunks[0][0] <= upto:
            self.chunks.popleft()


# -- messages ---------------------------------------------------------------------------------


@dataclass
class Request:
    """An HTTP request as it was on the wire; C{last}: its last segment's time."""

    connection: tuple
    method: str
    path: str
    body: bytes
    first: float
    last: float
    status: int | None = None
    answered: float | None = None  # the answer's first segment


@dataclass
class Submit:
    """A C{submit_sm} as it was on the wire; C{last}: its last segment's time."""

    destination: str
    first: float
    last: float


def _http_start(payload: bytes) -> bool:
    return payload.startswith(_METHODS) or payload.startswith(b"HTTP/1.")


def _smpp_start(payload: bytes) -> bool:
    if len(payload) < 16:
        return False
    length, command = struct.unpack_from("!II", payload)
    return 16 <= length <= 1 << 16 and command in _SMPP_COMMANDS


_NO_BODY = frozenset({204, 304})


def head_fields(lines: list[bytes]) -> tuple[int | None, bool, bool]:
    """An HTTP head's C{Content-Length} (None without one), whether it is
    chunked, and whether it says C{Connection: close}; C{lines}: the head's
    lines after the start line."""
    length, chunked, close = None, False, False
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    return length, chunked, close


def _http_message(buf: bytearray, response: bool):
    """C{(length, start line, body)} of the HTTP message at the start of C{buf},
    or None while it is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    length, chunked, _ = head_fields(lines[1:])
    length = length or 0
    pos = end + 4
    status = int(lines[0][9:12]) if response else None
    if status is not None and (status in _NO_BODY or status < 200):
        return pos, lines[0], b""
    if not chunked:
        if len(buf) < pos + length:
            return None
        return pos + length, lines[0], bytes(buf[pos:pos + length])
    body = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        if size == 0:
            tail = buf.find(b"\r\n\r\n", eol)  # trailers, if any, then an empty line
            if tail < 0:
                return None
            return tail + 4, lines[0], b"".join(body)
        if len(buf) < eol + 2 + size + 2:
            return None
        body.append(bytes(buf[eol + 2:eol + 2 + size]))
        pos = eol + 2 + size + 2


class _Side:
    """One direction of a connection: its L{Stream}, parsed as segments come."""

    stream: Stream

    def feed(self, segment: Segment) -> None:
        self.stream.feed(segment)
        self.parse()

    def finish(self) -> None:
        self.stream.finish()
        self.parse()

    def parse(self) -> None:
        raise NotImplementedError


class _HTTPSide(_Side):
    """Parses one direction of an HTTP connection into requests or answers."""

    def __init__(self, connection: "_Connection", response: bool):
        self.connection = connection
        self.response = response
        self.stream = Stream(_http_start)

    def parse(self) -> None:
        stream = self.stream
        if stream.resynced:
            stream.resynced = False
            self.connection.lost_sync()
        while stream.data:
            parsed = _http_message(stream.data, self.response)
            if parsed is None:
                return
            length, start_line, body = parsed
            first, last = stream.time_at(stream.base), stream.time_at(stream.base + length - 1)
            stream.consume(stream.base + length)
            if self.response:
                self.connection.answered(int(start_line[9:12]), first)
            else:
                method, path, _ = start_line.decode("latin-1").split(" ", 2)
                self.connection.requested(Request(self.connection.key, method, path, body,
                                                  first, last))


class _Connection:
    """Both directions of one HTTP connection; answers paired with requests in order."""

    def __init__(self, key: tuple, wire: "Wire"):
        self.key = key
        self.wire = wire
        self.outstanding: deque[Request] = deque()
        self.client = _HTTPSide(self, response=False)
        self.server = _HTTPSide(self, response=True)
        self.broken = False

    def requested(self, request: Request) -> None:
        self.wire.requests.append(request)
        if not self.broken:
            self.outstanding.append(request)

    def answered(self, status: int, ts: float) -> None:
        if self.outstanding:
            request = self.outstanding.popleft()
            request.status, request.answered = status, ts
        else:
            self.wire.unpaired += 1

    def lost_sync(self) -> None:
        """Bytes of one direction were lost: from here on, which answer is
        whose is not known; the requests are still read, not paired."""
        self.broken = True
        self.wire.unpaired += len(self.outstanding)
        self.outstanding.clear()


class _SMPPSide(_Side):
    """Reads the C{submit_sm} PDUs of an ESME's side of an SMPP connection."""

    def __init__(self, wire: "Wire"):
        self.wire = wire
        self.stream = Stream(_smpp_start)

    def parse(self) -> None:
        from msisdnd.smpp import codec

        stream = self.stream
        while len(stream.data) >= 16:
            length, command = struct.unpack_from("!II", stream.data)
            if length < 16:  # not SMPP after all: join again at the next segment
                stream.gaps += 1
                stream.restart()
                return
            if len(stream.data) < length:
                return
            if command == SUBMIT_SM:
                try:
                    pdu = codec.decode(bytes(stream.data[:length]))
                except codec.DecodeError:
                    self.wire.undecodable += 1
                else:
                    self.wire.submits.append(Submit(
                        str(pdu.fields.get("destination_addr", "")).lstrip("+"),
                        stream.time_at(stream.base), stream.time_at(stream.base + length - 1)))
            stream.consume(stream.base + length)


# -- the whole capture -------------------------------------------------------------------------


def _percentiles(values: list[float]) -> dict:
    s = sorted(values)

    def at(p: float) -> float:
        if not s:
            return float("nan")
        return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))] * 1000

    return {"n": len(s), "p50": at(50), "p95": at(95), "p99": at(99),
            "max": s[-1] * 1000 if s else float("nan")}


#: Where a request's number is, per (method, path) that sends an SMS.
SENDS = {("POST", "/sms/mt/verify"): "msisdn", ("POST", "/v2/verifications"): "to"}


@dataclass
class Wire:
    """What a capture held: every HTTP request (with its answer) and every
    C{submit_sm}, in capture order."""

    requests: list[Request] = field(default_factory=list)
    submits: list[Submit] = field(default_factory=list)
    gaps: int = 0
    unpaired: int = 0
    undecodable: int = 0

    def answer_times(self, t0: float = float("-inf"), t1: float = float("inf"),
                     name=lambda r: f"{r.method} {r.path.split('?', 1)[0]} {r.status}") -> dict:
        """Per endpoint (C{name(request)}; by default C{"METHOD path status"}):
        the seconds from a request's last segment to its answer's first, for
        requests whose last segment is in [t0, t1], as p50/p95/p99/max in ms."""
        times: dict[str, list[float]] = defaultdict(list)
        for r in self.requests:
            if r.answered is not None and t0 <= r.last <= t1:
                times[name(r)].append(r.answered - r.last)
        return {name: _percentiles(v) for name, v in sorted(times.items())}

    def accept_submit_times(self, t0: float = float("-inf"),
                            t1: float = float("inf")) -> tuple[list[float], list[Request]]:
        """The seconds from each SMS-sending request's last segment (in [t0, t1])
        to the first C{submit_sm} to its number after it; and the requests
        that had none."""
        by_number: dict[str, list[float]] = defaultdict(list)
        for s in self.submits:
            by_number[s.destination].append(s.last)
        out, missing = [], []
        for r in self.requests:
            key = SENDS.get((r.method, r.path.split("?", 1)[0]))
            if key is None or not t0 <= r.last <= t1:
                continue
            try:
                number = str(json.loads(r.body)[key]).lstrip("+")
            except (ValueError, KeyError, TypeError):
                missing.append(r)
                continue
            later = [ts for ts in by_number.get(number, ()) if ts >= r.last]
            if later:
                out.append(min(later) - r.last)
            else:
                missing.append(r)
        return out, missing

    def accept_submit(self, t0: float = float("-inf"), t1: float = float("inf")) -> dict:
        """L{accept_submit_times} as p50/p95/p99/max in ms; C{missing}: how many
        requests the daemon answered as sent (2xx) had no C{submit_sm} in the
        capture, C{refused}: those answered otherwise or not at all (no SMS
        expected), C{missing_at}: the first few missing, (time, status)."""
        times, without = self.accept_submit_times(t0, t1)
        sent = [r for r in without if r.status is not None and 200 <= r.status < 300]
        return {**_percentiles(times), "missing": len(sent),
                "refused": len(without) - len(sent),
                "missing_at": [(r.last, r.status) for r in sent[:5]]}


def read_capture(data: bytes, *, api_ports, smpp_ports) -> Wire:
    """Read a pcap's bytes: HTTP to C{api_ports}, SMPP to C{smpp_ports}
    (the C{submit_sm} an ESME sends the SMSC listening there)."""
    wire = Wire()
    http: dict[tuple, _Connection] = {}
    smpp: dict[tuple, _SMPPSide] = {}
    streams: list[Stream] = []
    for segment in read_pcap(data):
        if segment.dst[1] in api_ports or segment.src[1] in api_ports:
            to_server = segment.dst[1] in api_ports
            key = (segment.src, segment.dst) if to_server else (segment.dst, segment.src)
            conn = http.get(key)
            if conn is None or (segment.syn and to_server):
                http[key] = conn = _Connection(key, wire)
                streams += (conn.client.stream, conn.server.stream)
            (conn.client if to_server else conn.server).feed(segment)
        elif segment.dst[1] in smpp_ports:
            key = (segment.src, segment.dst)
            side = smpp.get(key)
            if side is None or segment.syn:
                smpp[key] = side = _SMPPSide(wire)
                streams.append(side.stream)
            side.feed(segment)
    for conn in http.values():
        conn.client.finish()
        conn.server.finish()
    for side in smpp.values():
        side.finish()
    wire.gaps = sum(s.gaps for s in streams)
    return wire


# -- capturing ---------------------------------------------------------------------------------


def unavailable() -> str | None:
    """Why a loopback capture cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "not root (tcpdump needs CAP_NET_RAW)"
    if shutil.which("tcpdump") is None:
        return "no tcpdump on PATH (apt-get install tcpdump)"
    return None


class Capture:
    """C{tcpdump -i lo} writing TCP segments with a payload (and SYNs) to or
    from C{ports} to a pcap file, nanosecond timestamps."""

    def __init__(self, path: Path, proc: subprocess.Popen, log: Path):
        self.path, self.proc, self.log = path, proc, log
        self.dropped: int | None = None

    @classmethod
    def start(cls, directory: Path, ports, name: str = "wire") -> "Capture":
        path, log = Path(directory) / f"{name}.pcap", Path(directory) / f"{name}.tcpdump.log"
        ports_filter = " or ".join(f"port {p}" for p in ports)
        # Pure ACKs carry nothing read here: only SYNs and segments with a payload.
        bpf = (f"tcp and ({ports_filter}) and (tcp[tcpflags] & tcp-syn != 0 or "
               "(ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2)) != 0)")
        with open(log, "w") as out:
            proc = subprocess.Popen(
                ["tcpdump", "-i", "lo", "-n", "-s", "0", "-B", "65536",
                 "--time-stamp-precision", "nano", "-w", str(path), bpf],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        capture = cls(path, proc, log)
        deadline = time.monotonic() + 10
        while "listening on" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                capture.stop()
                raise CaptureError(f"tcpdump did not start: {log.read_text()[-500:]}")
            time.sleep(0.02)
        return capture

    def stop(self) -> None:
        """Stop tcpdump (it writes out what it holds) and read its count of
        packets the kernel dropped."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        found = re.search(r"(\d+) packets? dropped by kernel", self.log.read_text())
        self.dropped = int(found.group(1)) if found else None
