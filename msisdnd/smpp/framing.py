"""Split an SMPP byte stream into PDUs.

L{PDUStream} is the protocol base that both ends of a session share: the ESME
in L{msisdnd.smpp.session} and the fake SMSC.  It frames by C{command_length},
decodes with L{msisdnd.smpp.codec}, and guarantees that nothing a peer sends
makes C{dataReceived} raise.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from msisdnd.logs import WarningBudget
from msisdnd.smpp import codec

_HEADER_UNPACK = codec.HEADER.unpack_from
_HEADER_LENGTH = codec.HEADER_LENGTH


class PDUStream(Protocol):
    """A byte stream of SMPP PDUs.

    Subclasses implement L{pduReceived}, and may override L{undecodable}.
    A C{command_length} outside 16 bytes .. L{max_length} makes the stream
    unrecoverable: it answers C{generic_nack} ESME_RINVCMDLEN and drops the
    connection.  Every other bad frame is handed to L{undecodable}, which by
    default answers requests with a C{generic_nack} carrying the status the
    codec chose, and the stream goes on.
    """

    log = Logger()
    max_length = codec.MAX_PDU_LENGTH
    #: The command_id whose frames go to L{leanReceived}, read in place from
    #: the buffer (no slice, no L{codec.PDU}), a run of them at a time, or
    #: C{None}: the hot response of a subclass.  Every other frame, and those
    #: L{leanReceived} leaves, go to L{frameReceived}.
    lean_command: int | None = None
    _buffer = b""
    _closing = False
    _budget: WarningBudget | None = None

    def warn(self, format: str, **kwargs: Any) -> None:
        """A warning about what the peer sent, rate-limited per connection."""
        if self._budget is None:
            clock = getattr(self, "clock", None)
            self._budget = WarningBudget(self.log, now=clock.seconds if clock else time.monotonic)
        self._budget.warn(format, **kwargs)

    def connectionMade(self) -> None:
        # PDUs are small and answered one by one: without TCP_NODELAY a write
        # that follows an unacknowledged one waits for the peer's delayed ACK
        # (up to 40 ms on Linux).
        nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if nodelay is not None:
            try:
                nodelay(True)
            except OSError:
                pass

    def send(self, data: bytes) -> None:
        """Write one encoded PDU."""
        self.transport.write(data)

    def closeLink(self, abort: bool = False) -> None:
        """Close the connection (at once when C{abort}).

        Frames already received but not yet handled are dropped: after an
        unbind, or on a link we declared corrupt, no PDU may be acted on.
        """
        self._closing = True
        self._buffer = b""
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        buf = self._buffer + data if self._buffer else data
        pos, end = 0, len(buf)
        from_bytes, unpack = int.from_bytes, _HEADER_UNPACK
        lean = self.lean_command
        while end - pos >= 4:
            if end - pos >= _HEADER_LENGTH:
                length, command_id, _, _ = unpack(buf, pos)
            else:
                # Too short for a header: its length alone, to refuse a bad one early.
                length, command_id = from_bytes(buf[pos:pos + 4], "big"), -1
            if length < _HEADER_LENGTH or length > self.max_length:
                self._framingLost(buf[pos:pos + _HEADER_LENGTH], length)
                return
            if end - pos < length:
                break
            start = pos
            try:
                if command_id == lean:
                    pos = self.leanReceived(buf, start, end)
                if pos == start:
                    pos = start + length
                    self.frameReceived(buf[start:pos])
            except Exception:
                self.log.failure("Handling a PDU failed; the session goes on")
                pos = max(pos, start + length)
            if self._closing:
                return
        self._buffer = buf[pos:]

    def frameReceived(self, frame: bytes) -> None:
        try:
            pdu = codec.decode(frame)
        except codec.DecodeError as e:
            self.undecodable(e)
        else:
            self.pduReceived(pdu)

    def leanReceived(self, data: bytes, pos: int, end: int) -> int:
        """Read frames at C{data[pos:end]}, the first of which is a whole
        frame of L{lean_command}, in place, as many as it takes of those that
        follow, and return where it stopped: C{pos} leaves the first frame to
        L{frameReceived}.  It must check each frame's length as
        L{dataReceived} does, and not raise.  By default, it reads none."""
        return pos

    def pduReceived(self, pdu: codec.PDU) -> None:
        raise NotImplementedError

    def undecodable(self, error: codec.DecodeError) -> None:
        """A frame with a sound length that cannot be decoded."""
        self.warn(
            "Undecodable PDU 0x{command_id:08X} seq {sequence}: {reason}",
            command_id=error.command_id, sequence=error.sequence, reason=error.reason,
        )
        if not error.command_id & codec.RESPONSE_BIT:
            self.send(codec.generic_nack(error.sequence, error.status))

    def _framingLost(self, header: bytes, length: int) -> None:
        sequence = int.from_bytes(header[12:16], "big") if len(header) == 16 else 0
        self.log.warn("Invalid command_length {length}: dropping the link", length=length)
        self.send(codec.generic_nack(sequence, codec.ESME_RINVCMDLEN))
        self.closeLink()
