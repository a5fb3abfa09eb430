"""What the SMSC delivers: delivery receipts and mobile-originated text.

L{InboundDispatcher} takes each C{deliver_sm} or C{data_sm} the session
received, tells receipts from MO messages, decodes and reassembles them, and
hands the result to the L{IReceiptReceiver} or L{IMOReceiver}.  It never
raises and never answers the SMSC: the session answers every C{deliver_sm}
whatever becomes of it here.

The helpers it is built from (receipt parsing, MO decoding, source address
normalization, reassembly) are public; a receipt's message id is turned into
the id its submit was given by L{msisdnd.sms.message_ids}, which the submit
side shares.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import phonenumbers
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from msisdnd.masking import mask_number
from msisdnd.sms.interfaces import (
    DeliveryReceipt,
    IMOReceiver,
    IReceiptReceiver,
    MOMessage,
)
from msisdnd.sms.message_ids import (
    DEFAULT_RECEIPT_ID_FORMAT,
    RECEIPT_ID_FORMATS,
    normalize_message_id,
    receipt_message_id,
)
from msisdnd.smpp import codec
from msisdnd.smpp.alphabet import (
    DATA_CODING_DEFAULT,
    MAX_PARTS,
    Concat,
    decode_text,
    split_udh,
)

# --- delivery receipts ---------------------------------------------------------

#: SMPP 3.4 C{message_state} values and the receipt state names they stand for.
RECEIPT_STATES: Mapping[int, str] = MappingProxyType({
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
})
_STATE_NAMES = frozenset(RECEIPT_STATES.values())
#: Spelled-out states some SMSCs send in the C{stat:} field.
_STATE_SPELLINGS = {"DELIVERED": "DELIVRD", "ACCEPTED": "ACCEPTD", "REJECTED": "REJECTD"}

# The fields the receipt text is searched for; the free-form "text:" field,
# which may repeat the message, is cut off first.
_RECEIPT_TEXT_FIELD = re.compile(r"(?:^|\s)(id|stat|err):(\S*)", re.IGNORECASE)
_RECEIPT_TEXT_TAIL = re.compile(r"(?:^|\s)text:", re.IGNORECASE)


def _receipt_text_fields(text: str) -> dict[str, str]:
    tail = _RECEIPT_TEXT_TAIL.search(text)
    if tail is not None:
        text = text[:tail.start()]
    found: dict[str, str] = {}
    for match in _RECEIPT_TEXT_FIELD.finditer(text):
        found.setdefault(match.group(1).lower(), match.group(2))
    return found


def _state_name(stat: str) -> str:
    upper = stat.upper()
    name = _STATE_SPELLINGS.get(upper, upper[:7])
    return name if name in _STATE_NAMES else "UNKNOWN"


def _network_error(value: Any) -> str | None:
    # network_error_code: one octet of network type, two of error code.
    if isinstance(value, bytes) and len(value) == 3:
        return f"{int.from_bytes(value[1:], 'big'):03d}"
    return None


def parse_receipt(fields: Mapping[str, Any], text: str) -> tuple[str, str, str | None] | None:
    """Read a delivery receipt's message id, state and error.

    Each comes from the TLVs when they carry it, else from the de facto
    standard receipt text::

        id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:...

    whose keys are matched in any case and in which any field may be missing.
      - id: the C{receipted_message_id} TLV, else the text's C{id:}.
      - state: the C{message_state} TLV (see L{RECEIPT_STATES}), else the
        text's C{stat:}, upper-cased and cut to seven letters (C{DELIVERED}
        and the like are mapped to their seven-letter names); a state that
        is no SMPP state name becomes C{UNKNOWN}.
      - error: the text's C{err:}, else the error code of the
        C{network_error_code} TLV as three decimal digits, else C{None}.

    @param fields: the PDU's fields.
    @param text: the decoded C{short_message} or C{message_payload}.
    @return: C{(raw id, state, error)}, or C{None} when no id or no state
        can be found.
    """
    from_text = _receipt_text_fields(text)
    raw_id = fields.get("receipted_message_id")
    if not isinstance(raw_id, str) or not normalize_message_id(raw_id):
        raw_id = from_text.get("id")
    if raw_id is None or not normalize_message_id(raw_id):
        return None
    state_code = fields.get("message_state")
    if type(state_code) is int and state_code in RECEIPT_STATES:
        state = RECEIPT_STATES[state_code]
    elif from_text.get("stat"):
        state = _state_name(from_text["stat"])
    else:
        return None
    error = from_text.get("err") or _network_error(fields.get("network_error_code"))
    return raw_id, state, error


# --- MO text -----------------------------------------------------------------------

#: What C{mo_charset} may name: how the octets of an MO sent with
#: C{data_coding} 0 (the SMSC's default alphabet) are read.
MO_CHARSETS = ("gsm7", "ascii", "latin1")
#: GSM 03.38, as SMPP 3.4 says the default alphabet is.
DEFAULT_MO_CHARSET = "gsm7"
_MO_CHARSET_CODECS: Mapping[str, str] = MappingProxyType({"ascii": "ascii", "latin1": "latin-1"})


def decode_mo_text(data_coding: int, body: bytes, mo_charset: str = DEFAULT_MO_CHARSET) -> str:
    """Decode an MO body (UDH already removed) to text.

    C{data_coding} 0 is read in C{mo_charset}: C{"gsm7"} (unpacked GSM
    03.38, as SMPP 3.4 says), or C{"ascii"} or C{"latin1"} for SMSCs that
    pass the handset's text on in those (where GSM would read C{@}, 0x40, as
    C{¡}).  Every other C{data_coding} is read as
    L{msisdnd.smpp.alphabet.decode_text} says, whatever C{mo_charset}.

    Octets that do not decode (over 0x7F in ASCII) become U+FFFD.

    @raise ValueError: a C{mo_charset} not in L{MO_CHARSETS}; nothing else.
    """
    if mo_charset not in MO_CHARSETS:
        raise ValueError(f"mo_charset must be one of {', '.join(MO_CHARSETS)}, "
                         f"not {mo_charset!r}")
    if data_coding == DATA_CODING_DEFAULT and mo_charset != "gsm7":
        return body.decode(_MO_CHARSET_CODECS[mo_charset], "replace")
    return decode_text(data_coding, body)


# --- source addresses ----------------------------------------------------------

TON_INTERNATIONAL = 1
TON_ALPHANUMERIC = 5


def _candidates(address: str, ton: int, region: str | None) -> list[tuple[str, str | None]]:
    """The (number, region) readings of an address to try, most likely first."""
    if address.startswith("+"):
        return [(address, None)]
    readings: list[tuple[str, str | None]] = []
    if ton == TON_INTERNATIONAL:
        readings.append(("+" + address, None))
    if address.startswith("00"):
        readings.append(("+" + address[2:], None))
    if region:
        # Also handles the region's own international prefix ("011" in the US).
        readings.append((address, region))
    return readings


def normalize_source(address: str, ton: int, region: str | None) -> str | None:
    """An MO source address in E.164 form, with its C{+}.

    Accepts international forms (C{+33612345678}, C{0033612345678}, the
    region's own international prefix, or bare digits with C{ton} 1) and
    national forms read in C{region} (C{0612345678} in C{FR}).

    @param address: the C{source_addr} as the SMSC gave it.
    @param ton: its C{source_addr_ton}.
    @param region: the carrier's ISO 3166 region code, if known.
    @return: the E.164 number, or C{None} for an alphanumeric sender
        (C{ton} 5 or letters in the address) or anything that does not read
        as a possible number.  Never raises.
    """
    address = address.strip()
    if ton == TON_ALPHANUMERIC or not address or any(c.isalpha() for c in address):
        return None
    for number, number_region in _candidates(address, ton, region):
        try:
            parsed = phonenumbers.parse(number, number_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return None


# --- reassembly ------------------------------------------------------------------

@dataclass(slots=True)
class _Partial:
    parts: dict[int, str]
    timer: IDelayedCall


class Reassembler:
    """Joins the parts of concatenated messages.

    What a stranger can make it hold is bounded: a partial message is
    dropped C{timeout} seconds after its first part arrived, and when more
    than C{max_pending} are held, the oldest is dropped.  Drops are logged
    without the message's key or contents.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, timeout: float = 300.0, max_pending: int = 10000):
        """
        @raise ValueError: a C{timeout} that is not positive or a
            C{max_pending} under 1.
        """
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._clock = clock
        self._timeout = timeout
        self._max_pending = max_pending
        self._pending: dict[tuple[Hashable, int], _Partial] = {}

    @property
    def pending(self) -> int:
        """How many partial messages are held."""
        return len(self._pending)

    def add(self, key: Hashable, total: int, sequence: int, text: str) -> str | None:
        """Take one part.

        Parts of one message share C{key} and C{total}.  A part whose
        sequence number was already received is ignored.

        @param key: what identifies the message among those in flight, such
            as C{(source, destination, reference)}.
        @param total: how many parts the message has.
        @param sequence: this part's number, from 1 to C{total}.
        @return: the whole text, parts joined in sequence order, when this
            part completes the message; else C{None}.
        @raise ValueError: C{sequence} outside 1..C{total}, or C{total} over 255.
        """
        if not 1 <= sequence <= total <= MAX_PARTS:
            raise ValueError(f"part {sequence} of {total} cannot exist")
        if total == 1:
            return text
        slot = (key, total)
        partial = self._pending.get(slot)
        if partial is None:
            partial = _Partial({}, self._clock.callLater(self._timeout, self._expire, slot))
            self._pending[slot] = partial
            if len(self._pending) > self._max_pending:
                self._evict_oldest()
        partial.parts.setdefault(sequence, text)
        if len(partial.parts) < total:
            return None
        self._pending.pop(slot, None)
        if partial.timer.active():
            partial.timer.cancel()
        return "".join(partial.parts[n] for n in range(1, total + 1))

    def stop(self) -> None:
        """Cancel every timer and drop every partial message."""
        for partial in self._pending.values():
            if partial.timer.active():
                partial.timer.cancel()
        self._pending.clear()

    def _expire(self, slot: tuple[Hashable, int]) -> None:
        partial = self._pending.pop(slot, None)
        if partial is not None:
            self._log.warn(
                "Dropped a partial message with {received} of {total} parts after {timeout}s",
                received=len(partial.parts), total=slot[1], timeout=self._timeout)

    def _evict_oldest(self) -> None:
        slot, partial = next(iter(self._pending.items()))
        del self._pending[slot]
        if partial.timer.active():
            partial.timer.cancel()
        self._log.warn(
            "Dropped the oldest partial message ({received} of {total} parts): "
            "more than {max_pending} held",
            received=len(partial.parts), total=slot[1], max_pending=self._max_pending)


# --- dispatch ----------------------------------------------------------------------

# esm_class bits 5-2: the message type.  Only type 0 is MO (handset text).
_ESM_TYPE_MASK = 0x3C
_ESM_MO = 0x00
_ESM_RECEIPT_TYPES = frozenset({
    0x04,  # SMSC delivery receipt
    0x08,  # SME delivery acknowledgement
    0x10,  # SME manual/user acknowledgement
    0x20,  # intermediate delivery notification
})
_ESM_UDHI = 0x40
# Only receipts carry these; message_state also marks a receipt whose
# receipted_message_id the codec had to drop (one sent without its NUL).
_RECEIPT_TLVS = frozenset({"receipted_message_id", "message_state"})


def _int_field(fields: Mapping[str, Any], name: str) -> int | None:
    value = fields.get(name)
    return value if type(value) is int else None


def _str_field(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    return value if isinstance(value, str) else None


def _payload(fields: Mapping[str, Any]) -> bytes:
    for name in ("short_message", "message_payload"):
        value = fields.get(name)
        if isinstance(value, bytes) and value:
            return value
    return b""


def _sar(fields: Mapping[str, Any]) -> Concat | None:
    reference = _int_field(fields, "sar_msg_ref_num")
    total = _int_field(fields, "sar_total_segments")
    sequence = _int_field(fields, "sar_segment_seqnum")
    if reference is None or total is None or sequence is None:
        return None
    if not 1 <= sequence <= total <= MAX_PARTS:
        return None
    return Concat(reference, total, sequence)


class InboundDispatcher:
    """Turns one carrier's C{deliver_sm} and C{data_sm} into receipts and MO messages.

    The C{esm_class} message type (C{esm_class & 0x3C}) decides:
      - an SMSC delivery receipt (0x04), an SME delivery acknowledgement
        (0x08), an SME manual/user acknowledgement (0x10) or an intermediate
        delivery notification (0x20) is a receipt, whatever state it gives
        (C{ENROUTE} included);
      - type 0 is a receipt when it carries a C{receipted_message_id} or
        C{message_state}, else MO text, decoded (C{data_coding} 0 in the
        carrier's C{mo_charset}, see L{decode_mo_text}), reassembled from
        UDH or SAR parts when concatenated, its source normalized to E.164
        in the carrier's region;
      - any other type (a conversation abort, 0x18, say) is dropped.

    A receipt names one message: its id, from the TLV or the text, goes
    through L{receipt_message_id} with the carrier's C{receipt_id_format},
    and the L{DeliveryReceipt} carries that one id.  A receipt whose id does
    not read in that format is dropped.

    Receivers may return a Deferred.  Their failures, synchronous or not,
    are logged and go no further; logs show phone numbers masked and never
    message text.

    @ivar mo_count: whole MO messages handed to the MO receiver.
    @ivar receipt_count: receipts handed to the receipt receiver.
    @ivar dropped_count: PDUs dropped as unusable or with no one to take them.
    """

    _log = Logger()

    def __init__(
        self,
        carrier: str,
        region: str | None,
        mo_receiver: IMOReceiver | None,
        receipt_receiver: IReceiptReceiver | None,
        clock: IReactorTime,
        reassembly_timeout: float = 300.0,
        max_pending: int = 10000,
        receipt_id_format: str = DEFAULT_RECEIPT_ID_FORMAT,
        mo_charset: str = DEFAULT_MO_CHARSET,
    ):
        """
        @param carrier: the carrier's name, put in every receipt and MO message.
        @param region: its ISO 3166 region, to read national source numbers in.
        @param reassembly_timeout: seconds a partial MO message is kept.
        @param max_pending: at most this many partial MO messages are kept.
        @param receipt_id_format: how the carrier's receipts quote the ids its
            C{submit_sm_resp} gave: one of L{RECEIPT_ID_FORMATS}.
        @param mo_charset: how it sends MO text with C{data_coding} 0: one of
            L{MO_CHARSETS}.
        @raise ValueError: an unknown C{receipt_id_format} or C{mo_charset}.
        """
        if receipt_id_format not in RECEIPT_ID_FORMATS:
            raise ValueError(f"receipt_id_format must be one of {', '.join(RECEIPT_ID_FORMATS)}, "
                             f"not {receipt_id_format!r}")
        if mo_charset not in MO_CHARSETS:
            raise ValueError(f"mo_charset must be one of {', '.join(MO_CHARSETS)}, "
                             f"not {mo_charset!r}")
        self.carrier = carrier
        self.region = region
        self.receipt_id_format = receipt_id_format
        self.mo_charset = mo_charset
        self.mo_receiver = mo_receiver
        self.receipt_receiver = receipt_receiver
        self._reassembler = Reassembler(clock, reassembly_timeout, max_pending)
        self.mo_count = 0
        self.receipt_count = 0
        self.dropped_count = 0

    @property
    def pending(self) -> int:
        """Partial MO messages waiting for their other parts."""
        return self._reassembler.pending

    def stop(self) -> None:
        """Drop partial MO messages and cancel their timers (when the bind goes away)."""
        self._reassembler.stop()

    def pduReceived(self, pdu: codec.PDU) -> None:
        """Handle one C{deliver_sm} or C{data_sm}.  Never raises."""
        try:
            self._dispatch(pdu)
        except Exception:
            self.dropped_count += 1
            self._log.failure("Dropped an inbound PDU from {carrier}: it could not be handled",
                              carrier=self.carrier)

    def _drop(self, reason: str) -> None:
        self.dropped_count += 1
        self._log.info("Dropped an inbound PDU from {carrier}: {reason}",
                       carrier=self.carrier, reason=reason)

    def _dispatch(self, pdu: codec.PDU) -> None:
        if pdu.command_id not in (codec.DELIVER_SM, codec.DATA_SM):
            return self._drop(f"unexpected command {pdu.command}")
        fields = pdu.fields if isinstance(pdu.fields, Mapping) else {}
        esm_class = _int_field(fields, "esm_class") or 0
        data_coding = _int_field(fields, "data_coding") or 0
        message_type = esm_class & _ESM_TYPE_MASK
        if message_type in _ESM_RECEIPT_TYPES:
            self._receipt(fields, data_coding)
        elif message_type != _ESM_MO:
            self._drop(f"esm_class message type 0x{message_type:02x} is neither MO nor a receipt")
        elif _RECEIPT_TLVS & fields.keys():
            self._receipt(fields, data_coding)
        else:
            self._mo(fields, esm_class, data_coding)

    def _receipt(self, fields: Mapping[str, Any], data_coding: int) -> None:
        found = parse_receipt(fields, decode_text(data_coding, _payload(fields)))
        if found is None:
            return self._drop("a delivery receipt with no usable message id and state")
        if self.receipt_receiver is None:
            return self._drop("a delivery receipt, and no receipt receiver")
        raw_id, state, error = found
        message_id = receipt_message_id(raw_id, self.receipt_id_format)
        if message_id is None:
            return self._drop(f"a delivery receipt whose id {raw_id[:64]!r} does not read as "
                              f"receipt_id_format {self.receipt_id_format!r} says")
        receipt = DeliveryReceipt(self.carrier, message_id, frozenset({message_id}), state, error)
        self.receipt_count += 1
        self._deliver(self.receipt_receiver.receiptReceived, receipt,
                      "The receipt receiver failed on the receipt for message {message_id}",
                      message_id=receipt.message_id)

    def _mo(self, fields: Mapping[str, Any], esm_class: int, data_coding: int) -> None:
        if self.mo_receiver is None:
            return self._drop("an MO message, and no MO receiver")
        raw_source = _str_field(fields, "source_addr")
        destination = _str_field(fields, "destination_addr")
        if not raw_source or destination is None:
            return self._drop("an MO message without source or destination address")
        payload = _payload(fields)
        if esm_class & _ESM_UDHI:
            concat, body = split_udh(payload)
        else:
            concat, body = _sar(fields), payload
        text: str | None = decode_mo_text(data_coding, body, self.mo_charset)
        source = normalize_source(raw_source, _int_field(fields, "source_addr_ton") or 0,
                                  self.region) or raw_source
        if concat is not None:
            text = self._reassembler.add((source, destination, concat.reference),
                                         concat.total, concat.sequence, text)
            if text is None:
                return
        self.mo_count += 1
        self._deliver(self.mo_receiver.moReceived, MOMessage(self.carrier, source, destination, text),
                      "The MO receiver failed on a message from {source}",
                      source=mask_number(source))

    def _deliver(self, method: Callable[[Any], Any], argument: Any, failed: str, **log_fields: Any) -> None:
        def logFailure(failure: Failure) -> None:
            self._log.failure(failed, failure, carrier=self.carrier, **log_fields)

        maybeDeferred(method, argument).addErrback(logFailure)


__all__ = [
    "DEFAULT_MO_CHARSET", "InboundDispatcher", "MO_CHARSETS", "RECEIPT_STATES", "Reassembler",
    "decode_mo_text", "normalize_message_id", "normalize_source", "parse_receipt",
    "receipt_message_id",
]
