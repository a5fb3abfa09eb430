"""A fake SMSC: the carrier's end of SMPP, for tests, load tests and demos.

L{FakeSMSC} holds the state (credentials, the MTs it accepted, the fault
knobs); L{SMSCSession} is one bound ESME.  It speaks through the same codec
and framing as msisdnd's own ESME, so it is also tested against smpplib's own
blocking client as an independent peer.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Callable

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from msisdnd.smpp import alphabet, codec
from msisdnd.smpp.errors import CommandStatusError, SessionClosed
from msisdnd.smpp.framing import PDUStream

_BIND_MODES = {
    codec.BIND_TRANSMITTER: "transmitter",
    codec.BIND_RECEIVER: "receiver",
    codec.BIND_TRANSCEIVER: "transceiver",
}


@dataclass
class Faults:
    """Knobs that make the fake SMSC misbehave the way real ones do.

    @ivar fail_every: answer every Nth C{submit_sm} with C{fail_status}
        (0: never).
    @ivar fail_status: the status for C{fail_every} (ESME_RTHROTTLED).
    @ivar response_delay: seconds to wait before answering a C{submit_sm}.
    @ivar never_respond: accept C{submit_sm} and never answer it.
    @ivar generic_nack: answer C{submit_sm} with a C{generic_nack} carrying
        its sequence number (C{"sequence"}) or sequence 0 (C{"zero"}).
    @ivar drop_after: close a session after it sent this many PDUs (0: never).
    @ivar refuse_binds: answer every bind with this status (0: accept).
    @ivar silent: answer nothing at all once bound, enquire_link included
        (a peer that died without closing the connection).
    @ivar receipt_before_response: send a submit's delivery receipt before
        its C{submit_sm_resp}.
    @ivar receipt_state: the state receipts report (C{DELIVRD}, C{UNDELIV}...).
    @ivar id_without_nul: answer an accepted C{submit_sm} with its
        C{message_id} lacking the C-string's terminating NUL (the body is the
        id's octets and nothing else), as some SMSCs do.
    """

    fail_every: int = 0
    fail_status: int = codec.ESME_RTHROTTLED
    response_delay: float = 0.0
    never_respond: bool = False
    generic_nack: str | None = None
    drop_after: int = 0
    refuse_binds: int = 0
    silent: bool = False
    receipt_before_response: bool = False
    receipt_state: str = "DELIVRD"
    id_without_nul: bool = False

    def update(self, **changes: object) -> None:
        """Set knobs by name.  @raise KeyError: a name that is not a knob."""
        knobs = {f.name for f in fields(self)}
        unknown = set(changes) - knobs
        if unknown:
            raise KeyError(f"no fault knob {sorted(unknown)[0]!r}")
        for name, value in changes.items():
            setattr(self, name, value)


@dataclass
class StoredMT:
    """One mobile-terminated message the SMSC accepted (parts joined)."""

    message_ids: list[str]
    source: str
    destination: str
    data_coding: int
    text: str
    parts: int
    system_id: str
    received_at: float

    def as_json(self) -> dict:
        return {
            "from": self.source, "to": self.destination, "text": self.text,
            "message_ids": self.message_ids, "data_coding": self.data_coding,
            "parts": self.parts, "received_at": self.received_at,
        }


@dataclass
class _Partial:
    parts: dict[int, tuple[str, str]] = field(default_factory=dict)


class FakeSMSC:
    """The fake SMSC's state, shared by all its sessions.

    @param credentials: C{system_id -> password}; C{None} accepts any login.
    @param receipt_delay: seconds after acceptance to send a delivery
        receipt to a bound receiver, or C{None} for no receipts.
    @param receipt_form: C{"tlv"} (receipted_message_id + message_state),
        C{"text"} (the C{id:... stat:...} text only) or C{"both"}.
    @param receipt_id_base: C{"hex"} to quote ids as issued, C{"decimal"} to
        quote the decimal value of the hex id (as some SMSCs do).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        credentials: dict[str, str] | None = None,
        receipt_delay: float | None = None,
        receipt_form: str = "tlv",
        receipt_id_base: str = "hex",
        max_messages: int = 100_000,
        max_partials: int = 10_000,
    ):
        self.clock = clock
        self.credentials = credentials
        self.receipt_delay = receipt_delay
        self.receipt_form = receipt_form
        self.receipt_id_base = receipt_id_base
        self.max_messages = max_messages
        self.max_partials = max_partials
        self.faults = Faults()
        self.messages: deque[StoredMT] = deque(maxlen=max_messages)
        self.sessions: list[SMSCSession] = []
        self.submit_count = 0
        self.bind_count = 0
        self.bind_refusals = 0
        self._ids = itertools.count(random.randrange(1 << 24, 1 << 28))
        self._partials: dict[tuple, _Partial] = {}
        self._watchers: list[Callable[[], bool]] = []
        self._mo_rotation = itertools.count()

    def buildFactory(self) -> Factory:
        return Factory.forProtocol(lambda: SMSCSession(self))

    # -- what tests and the HTTP side read ---------------------------------

    @property
    def bound(self) -> list[SMSCSession]:
        return [s for s in self.sessions if s.mode is not None]

    def received(self, to: str) -> list[StoredMT]:
        """Messages to C{to} (E.164 with or without its C{+})."""
        digits = to.lstrip("+")
        return [m for m in self.messages if m.destination.lstrip("+") == digits]

    def clear(self) -> int:
        """Forget every stored message and unfinished multipart; return how many were stored."""
        count = len(self.messages)
        self.messages.clear()
        self._partials.clear()
        self.changed()
        return count

    def nextMessageId(self) -> str:
        return format(next(self._ids), "x")

    def changed(self) -> None:
        """Wake whatever waits on L{waitFor}."""
        self._watchers = [w for w in self._watchers if not w()]

    def waitFor(self, predicate: Callable[[], bool]) -> Deferred:
        """A Deferred that fires once C{predicate()} is true (checked on every change)."""
        d = Deferred()

        def check() -> bool:
            if d.called:
                return True
            if predicate():
                d.callback(None)
                return True
            return False

        if not check():
            self._watchers.append(check)
        return d

    # -- what sessions report ----------------------------------------------

    def accepted(self, session: "SMSCSession", pdu: codec.PDU, message_id: str) -> None:
        f = pdu.fields
        payload = f.get("short_message", b"")
        concat, body = alphabet.split_udh(payload) if f.get("esm_class", 0) & 0x40 else (None, payload)
        text = alphabet.decode_text(f.get("data_coding", 0), body)
        source, destination = f.get("source_addr", ""), f.get("destination_addr", "")
        if concat is None:
            self._store(StoredMT([message_id], source, destination, f.get("data_coding", 0),
                                 text, 1, session.system_id, self.clock.seconds()))
            return
        key = (session.system_id, source, destination, concat.reference, concat.total)
        if key not in self._partials and len(self._partials) >= self.max_partials:
            del self._partials[next(iter(self._partials))]  # the oldest unfinished one
        partial = self._partials.setdefault(key, _Partial())
        partial.parts[concat.sequence] = (message_id, text)
        if len(partial.parts) == concat.total:
            del self._partials[key]
            ordered = [partial.parts[i] for i in sorted(partial.parts)]
            self._store(StoredMT([i for i, _ in ordered], source, destination,
                                 f.get("data_coding", 0), "".join(t for _, t in ordered),
                                 concat.total, session.system_id, self.clock.seconds()))

    def _store(self, message: StoredMT) -> None:
        self.messages.append(message)  # the oldest falls off past max_messages
        self.changed()

    def receiptFor(self, message_id: str, source: str, destination: str,
                   state: str = "DELIVRD", error: str = "000") -> None:
        """Send a delivery receipt for C{message_id} to a bound receiver."""
        session = self._receiver()
        if session is None:
            return
        quoted = str(int(message_id, 16)) if self.receipt_id_base == "decimal" else message_id
        stamp = time.strftime("%y%m%d%H%M", time.gmtime(self.clock.seconds()))
        text = (f"id:{quoted} sub:001 dlvrd:{'001' if state == 'DELIVRD' else '000'} "
                f"submit date:{stamp} done date:{stamp} stat:{state} err:{error} text:")
        fields: dict = {
            "source_addr": destination, "source_addr_ton": 1, "source_addr_npi": 1,
            "destination_addr": source, "esm_class": 0x04,
            "short_message": text.encode("ascii"),
        }
        if self.receipt_form in ("tlv", "both"):
            fields["receipted_message_id"] = quoted
            fields["message_state"] = MESSAGE_STATES[state]
            if self.receipt_form == "tlv":
                fields["short_message"] = b""
        session.deliver(fields).addErrback(lambda f: None)

    def deliverMO(self, source: str, destination: str, text: str) -> Deferred:
        """Send a mobile-originated text to a bound receiver or transceiver.

        Long texts go as UDH-concatenated parts.  The Deferred fires once
        every part was answered, or fails with L{SessionClosed} when no
        session can receive.
        """
        session = self._receiver()
        if session is None:
            return fail(SessionClosed("no receiver or transceiver is bound"))
        try:
            encoded = alphabet.encode_text(text, "gsm7", random.randrange(256))
        except ValueError as e:
            return fail(e)
        results = [
            session.deliver({
                "source_addr": source.lstrip("+"), "source_addr_ton": 1, "source_addr_npi": 1,
                "destination_addr": destination.lstrip("+"), "esm_class": encoded.esm_class,
                "data_coding": encoded.data_coding, "short_message": part,
            })
            for part in encoded.parts
        ]
        return gatherResults(results, consumeErrors=True)

    def _receiver(self) -> "SMSCSession | None":
        candidates = [s for s in self.sessions if s.mode in ("receiver", "transceiver")]
        if not candidates:
            return None
        return candidates[next(self._mo_rotation) % len(candidates)]

    def checkLogin(self, system_id: str, password: str) -> int:
        if self.faults.refuse_binds:
            return self.faults.refuse_binds
        if self.credentials is None:
            return codec.ESME_ROK
        if system_id not in self.credentials:
            return codec.STATUSES["ESME_RINVSYSID"]
        if self.credentials[system_id] != password:
            return codec.ESME_RINVPASWD
        return codec.ESME_ROK


MESSAGE_STATES = {
    "ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4,
    "UNDELIV": 5, "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8,
}


class SMSCSession(PDUStream):
    """The SMSC end of one session."""

    def __init__(self, smsc: FakeSMSC):
        self.smsc = smsc
        self.mode: str | None = None
        self.system_id = ""
        self.received_pdus = 0
        self._sequence = 0
        self._deliveries: dict[int, Deferred] = {}

    def connectionMade(self) -> None:
        super().connectionMade()
        self.smsc.sessions.append(self)
        self.smsc.changed()

    def connectionLost(self, reason: object = None) -> None:
        if self in self.smsc.sessions:
            self.smsc.sessions.remove(self)
        pending, self._deliveries = self._deliveries, {}
        for d in pending.values():
            d.errback(SessionClosed("the ESME went away"))
        self.smsc.changed()

    def _nextSequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    def deliver(self, values: dict) -> Deferred:
        """Send a C{deliver_sm}; fires with its response, or fails with
        L{codec.EncodeError} for values it cannot carry."""
        seq = self._nextSequence()
        try:
            data = codec.encode("deliver_sm", seq, **values)
        except codec.EncodeError as e:
            return fail(e)
        d = Deferred()
        self._deliveries[seq] = d
        self.send(data)
        return d

    def unbind(self) -> None:
        """The SMSC ends the session (it closes on C{unbind_resp})."""
        self.send(codec.frame(codec.UNBIND, self._nextSequence()))

    def pduReceived(self, pdu: codec.PDU) -> None:
        faults = self.smsc.faults
        self.received_pdus += 1
        if faults.drop_after and self.received_pdus > faults.drop_after:
            self.closeLink(abort=True)
            return
        if faults.silent and self.mode is not None:
            return
        command_id = pdu.command_id
        if command_id in _BIND_MODES:
            self._bind(pdu)
        elif command_id == codec.SUBMIT_SM:
            self._submit(pdu)
        elif command_id == codec.ENQUIRE_LINK:
            self.send(codec.frame(codec.ENQUIRE_LINK_RESP, pdu.sequence))
        elif command_id == codec.UNBIND:
            self.send(codec.frame(codec.UNBIND_RESP, pdu.sequence))
            self.closeLink()
        elif command_id == codec.UNBIND_RESP:
            self.closeLink()
        elif command_id in (codec.DELIVER_SM_RESP, codec.GENERIC_NACK):
            d = self._deliveries.pop(pdu.sequence, None)
            if d is not None:
                if pdu.status or command_id == codec.GENERIC_NACK:
                    d.errback(CommandStatusError(pdu.status, pdu.command))
                else:
                    d.callback(pdu)
        elif command_id & codec.RESPONSE_BIT:
            pass
        else:
            self.send(codec.generic_nack(pdu.sequence, codec.ESME_RINVCMDID))

    def _bind(self, pdu: codec.PDU) -> None:
        resp = pdu.command_id | codec.RESPONSE_BIT
        if self.mode is not None:
            self.send(codec.frame(resp, pdu.sequence, b"", codec.ESME_RALYBND))
            return
        status = self.smsc.checkLogin(pdu.fields.get("system_id", ""), pdu.fields.get("password", ""))
        if status:
            self.smsc.bind_refusals += 1
            self.send(codec.frame(resp, pdu.sequence, b"", status))
            return
        self.mode = _BIND_MODES[pdu.command_id]
        self.system_id = pdu.fields.get("system_id", "")
        self.smsc.bind_count += 1
        self.send(codec.frame(resp, pdu.sequence, b"fakesmsc\0"))
        self.smsc.changed()

    def _submit(self, pdu: codec.PDU) -> None:
        smsc, faults = self.smsc, self.smsc.faults
        if self.mode not in ("transmitter", "transceiver"):
            self.send(codec.frame(codec.SUBMIT_SM_RESP, pdu.sequence, b"", codec.ESME_RINVBNDSTS))
            return
        smsc.submit_count += 1
        if faults.never_respond:
            return
        if faults.generic_nack:
            seq = pdu.sequence if faults.generic_nack == "sequence" else 0
            self.send(codec.generic_nack(seq, codec.ESME_RSYSERR))
            return
        if faults.fail_every and smsc.submit_count % faults.fail_every == 0:
            self._respond(pdu.sequence, b"", faults.fail_status)
            return
        message_id = smsc.nextMessageId()
        smsc.accepted(self, pdu, message_id)
        source, destination = pdu.fields.get("source_addr", ""), pdu.fields.get("destination_addr", "")
        if smsc.receipt_delay is not None:
            if faults.receipt_before_response:
                smsc.receiptFor(message_id, source, destination, faults.receipt_state)
            else:
                smsc.clock.callLater(smsc.receipt_delay, smsc.receiptFor,
                                     message_id, source, destination, faults.receipt_state)
        body = message_id.encode("ascii")
        self._respond(pdu.sequence, body if faults.id_without_nul else body + b"\0",
                      codec.ESME_ROK)

    def _respond(self, sequence: int, body: bytes, status: int) -> None:
        data = codec.frame(codec.SUBMIT_SM_RESP, sequence, body, status)
        delay = self.smsc.faults.response_delay
        if delay:
            self.smsc.clock.callLater(delay, self._sendIfConnected, data)
        else:
            self.send(data)

    def _sendIfConnected(self, data: bytes) -> None:
        if self.transport is not None and self in self.smsc.sessions:
            self.send(data)
