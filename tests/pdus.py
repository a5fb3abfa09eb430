"""Reading what an SMPP session wrote to a StringTransport, for in-memory tests."""

from __future__ import annotations

from msisdnd.smpp import codec


def take_pdus(transport) -> list[codec.PDU]:
    """Every PDU written to C{transport} since the last call, decoded (and cleared)."""
    data, pdus = transport.value(), []
    transport.clear()
    while data:
        length = codec.read_header(data)[0]
        pdus.append(codec.decode(data[:length]))
        data = data[length:]
    return pdus


class Part:
    """A part for L{msisdnd.smpp.session.ESMESession.submitParts}: what a
    carrier queues, as far as the session reads it (its C{body})."""

    def __init__(self, body: bytes, name: object = None):
        self.body = body
        self.name = name

    def __repr__(self) -> str:
        return f"Part({self.name!r})"
