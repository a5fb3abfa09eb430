"""SMPP 3.4 PDU codec: bytes in, L{PDU} records out, and back.

The codec knows bytes and PDUs, nothing of sessions.  smpplib's PDU classes
do the long tail of commands, but smpplib is not safe on hostile input (it
raises on unknown or misplaced TLVs and on trailing bytes, and silently
corrupts a C-string that lacks its NUL).  So every frame first goes through
L{_validate_body}, our own walk of the mandatory fields and the TLVs, which
drops what smpplib cannot take and rejects what no one can parse; only then
does smpplib see it, and none of its exceptions leave this module.

The hot pair has lean paths of its own: L{SubmitTemplate} (with
L{encode_submit_sm_body} over it) and the C{submit_sm_resp} branch of
L{decode}.  Property tests prove that smpplib
parses the lean bytes back to the same fields.

L{describe} gives the one line a PDU trace logs: numbers masked, of a
message's text only its length and encoding.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from smpplib import command as _sm_command
from smpplib import command_codes as _sm_codes
from smpplib import consts as _sm_consts
from smpplib import smpp as _sm
from smpplib.ptypes import ostr as _OSTR

from msisdnd.masking import mask_number

HEADER = struct.Struct(">IIII")
HEADER_LENGTH = HEADER.size
MAX_PDU_LENGTH = 64 * 1024

#: command_id values, by SMPP name.
COMMANDS: dict[str, int] = dict(_sm_codes.commands)
COMMAND_NAMES: dict[int, str] = {v: k for k, v in COMMANDS.items()}

GENERIC_NACK = COMMANDS["generic_nack"]
BIND_RECEIVER = COMMANDS["bind_receiver"]
BIND_TRANSMITTER = COMMANDS["bind_transmitter"]
BIND_TRANSCEIVER = COMMANDS["bind_transceiver"]
SUBMIT_SM = COMMANDS["submit_sm"]
SUBMIT_SM_RESP = COMMANDS["submit_sm_resp"]
DELIVER_SM = COMMANDS["deliver_sm"]
DELIVER_SM_RESP = COMMANDS["deliver_sm_resp"]
DATA_SM = COMMANDS["data_sm"]
DATA_SM_RESP = COMMANDS["data_sm_resp"]
UNBIND = COMMANDS["unbind"]
UNBIND_RESP = COMMANDS["unbind_resp"]
ENQUIRE_LINK = COMMANDS["enquire_link"]
ENQUIRE_LINK_RESP = COMMANDS["enquire_link_resp"]
RESPONSE_BIT = 0x80000000

#: command_status values, by their SMPP name (C{ESME_ROK}, C{ESME_RTHROTTLED}...).
STATUSES: dict[str, int] = {
    name[len("SMPP_"):]: value
    for name, value in vars(_sm_consts).items()
    if name.startswith("SMPP_ESME_")
}
_STATUS_NAMES: dict[int, str] = {v: k for k, v in STATUSES.items()}

ESME_ROK = STATUSES["ESME_ROK"]
ESME_RINVMSGLEN = STATUSES["ESME_RINVMSGLEN"]
ESME_RINVCMDLEN = STATUSES["ESME_RINVCMDLEN"]
ESME_RINVCMDID = STATUSES["ESME_RINVCMDID"]
ESME_RINVBNDSTS = STATUSES["ESME_RINVBNDSTS"]
ESME_RALYBND = STATUSES["ESME_RALYBND"]
ESME_RSYSERR = STATUSES["ESME_RSYSERR"]
ESME_RBINDFAIL = STATUSES["ESME_RBINDFAIL"]
ESME_RINVPASWD = STATUSES["ESME_RINVPASWD"]
ESME_RMSGQFUL = STATUSES["ESME_RMSGQFUL"]
ESME_RTHROTTLED = STATUSES["ESME_RTHROTTLED"]
ESME_RX_T_APPN = STATUSES["ESME_RX_T_APPN"]
ESME_RINVOPTPARSTREAM = STATUSES["ESME_RINVOPTPARSTREAM"]


def status_name(status: int) -> str:
    """The SMPP name of a command_status, or its hex form when it has none."""
    return _STATUS_NAMES.get(status) or f"0x{status:08X}"


def status_code(name: str) -> int:
    """The command_status for an SMPP name such as C{"ESME_RTHROTTLED"}.

    @raise KeyError: for a name SMPP 3.4 does not define.
    """
    return STATUSES[name.upper()]


class DecodeError(Exception):
    """A frame that cannot be decoded.

    @ivar status: the command_status to answer it with in a C{generic_nack}.
    @ivar command_id: the frame's command_id, when the header was readable.
    @ivar sequence: the frame's sequence_number, when the header was readable.
    """

    def __init__(self, status: int, reason: str, command_id: int = 0, sequence: int = 0):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.command_id = command_id
        self.sequence = sequence


class EncodeError(ValueError):
    """Fields that cannot be put into a PDU."""


@dataclass(slots=True)
class PDU:
    """One decoded PDU.

    C-string fields are C{str} (decoded as latin-1, so no byte is lost);
    octet strings such as C{short_message} stay C{bytes}; integers are C{int}.
    Only fields present in the frame appear in C{fields}.

    @ivar dropped_tlvs: tags of TLVs that were present but unusable (unknown,
        not allowed in this command, or of the wrong length), in frame order.
    """

    command_id: int
    status: int
    sequence: int
    fields: dict[str, Any] = field(default_factory=dict)
    dropped_tlvs: tuple[int, ...] = ()

    @property
    def command(self) -> str:
        return COMMAND_NAMES.get(self.command_id, f"0x{self.command_id:08X}")

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE_BIT)


def read_header(data: bytes, offset: int = 0) -> tuple[int, int, int, int]:
    """(command_length, command_id, command_status, sequence_number)."""
    return HEADER.unpack_from(data, offset)


def frame(command_id: int, sequence: int, body: bytes = b"", status: int = ESME_ROK) -> bytes:
    """A whole PDU: the header in front of an already-encoded body."""
    return HEADER.pack(HEADER_LENGTH + len(body), command_id, status, sequence) + body


def generic_nack(sequence: int, status: int) -> bytes:
    return frame(GENERIC_NACK, sequence, b"", status)


# --- the lean hot path -------------------------------------------------------

_SUBMIT_STRING_LIMITS = (
    ("service_type", 6),
    ("source_addr", 21),
    ("destination_addr", 21),
    ("schedule_delivery_time", 17),
    ("validity_period", 17),
)


def _cstring(value: str, limit: int, name: str) -> bytes:
    raw = value.encode("latin-1") + b"\0"
    if len(raw) > limit or raw.find(b"\0") < len(raw) - 1:
        raise EncodeError(f"{name} must be under {limit} bytes with no NUL")
    return raw


#: Each octet's value as one byte, keyed by the value (an int out of range is no key).
_OCTETS: dict[int, bytes] = {value: bytes((value,)) for value in range(256)}


class SubmitTemplate:
    """The fixed part of a carrier's C{submit_sm} bodies, encoded once.

    A carrier sends every MT from the same source address with the same flags;
    only the destination, validity, coding and text change.  L{body} appends
    those to the prefix built here.

    @raise EncodeError: fields SMPP cannot carry (too long, out of range).
    """

    __slots__ = ("_front", "_after_esm", "_before_coding", "_plain_middle", "_default_msg_id")

    def __init__(
        self,
        *,
        source_addr: str,
        source_addr_ton: int = 0,
        source_addr_npi: int = 0,
        dest_addr_ton: int = 1,
        dest_addr_npi: int = 1,
        protocol_id: int = 0,
        priority_flag: int = 0,
        registered_delivery: int = 0,
        replace_if_present_flag: int = 0,
        sm_default_msg_id: int = 0,
        service_type: str = "",
        schedule_delivery_time: str = "",
    ):
        try:
            # Everything before destination_addr; the flags between esm_class
            # and validity_period, and between it and data_coding.
            self._front = (_cstring(service_type, 6, "service_type")
                           + bytes((source_addr_ton, source_addr_npi))
                           + _cstring(source_addr, 21, "source_addr")
                           + bytes((dest_addr_ton, dest_addr_npi)))
            self._after_esm = (bytes((protocol_id, priority_flag))
                               + _cstring(schedule_delivery_time, 17, "schedule_delivery_time"))
            self._before_coding = bytes((registered_delivery, replace_if_present_flag))
            # From destination_addr's NUL to data_coding, for esm_class 0 and
            # no validity_period (most messages).
            self._plain_middle = b"\0\0" + self._after_esm + b"\0" + self._before_coding
            if not 0 <= sm_default_msg_id <= 255:
                raise EncodeError("sm_default_msg_id must be one octet")
            self._default_msg_id = _OCTETS[sm_default_msg_id]
        except EncodeError:
            raise
        except ValueError as e:  # an octet out of range, a non-latin-1 character
            raise EncodeError(str(e)) from None

    def body(self, destination_addr: str, short_message: bytes, esm_class: int = 0,
             data_coding: int = 0, validity_period: str = "") -> bytes:
        """One C{submit_sm} body (no header, no TLVs).

        The session prepends a header with a fresh sequence number each time
        the part goes out, so a resend costs no re-encoding.
        """
        length = len(short_message)
        if length > 254:
            raise EncodeError("short_message must be at most 254 octets")
        try:
            destination = destination_addr.encode("latin-1")
            if esm_class or validity_period:
                middle = (b"\0" + _OCTETS[esm_class] + self._after_esm
                          + (_cstring(validity_period, 17, "validity_period")
                             if validity_period else b"\0")
                          + self._before_coding)
            else:
                middle = self._plain_middle
            coding = _OCTETS[data_coding]
        except EncodeError:
            raise
        except KeyError as e:
            raise EncodeError(f"{e.args[0]!r} is not an octet") from None
        except ValueError as e:  # a non-latin-1 character
            raise EncodeError(str(e)) from None
        if len(destination) > 20 or 0 in destination:
            raise EncodeError("destination_addr must be under 21 bytes with no NUL")
        return b"".join((self._front, destination, middle, coding, self._default_msg_id,
                         _OCTETS[length], short_message))


def encode_submit_sm_body(
    *,
    source_addr: str,
    destination_addr: str,
    short_message: bytes,
    esm_class: int = 0,
    data_coding: int = 0,
    validity_period: str = "",
    **fixed: object,
) -> bytes:
    """The body of one C{submit_sm} (no header, no TLVs), from all its fields.

    The same as C{SubmitTemplate(source_addr=..., **fixed).body(...)}; the
    sending path keeps a template per carrier instead.

    @raise EncodeError: a field SMPP cannot carry (too long, out of range).
    """
    template = SubmitTemplate(source_addr=source_addr, **fixed)  # type: ignore[arg-type]
    return template.body(destination_addr, short_message, esm_class=esm_class,
                         data_coding=data_coding, validity_period=validity_period)


#: The field a submit_sm_resp whose message_id lacked its NUL carries (True).
UNTERMINATED_ID = "message_id_unterminated"


def submit_sm_resp_id(data: bytes) -> tuple[str, bool]:
    """The message_id of the C{submit_sm_resp} frame C{data}, and whether it
    came with its NUL: the one reading of that body, L{decode}'s (the
    session's lean path reads it the same way, inline, in place in its
    buffer: L{msisdnd.smpp.session.ESMESession.leanReceived}).

    Whatever its body, the header says whether the SMSC took the message, and
    resubmitting an accepted PIN is worse than not knowing its id: so a
    NUL-terminated id longer than SMPP's 65 octets is kept as given, an id
    without its NUL is kept as far as it goes (C{False}), and a bare header
    is an empty id.  Nothing here raises.
    """
    nul = data.find(b"\0", HEADER_LENGTH)
    if nul < 0:
        return data[HEADER_LENGTH:].decode("latin-1"), len(data) == HEADER_LENGTH
    return data[HEADER_LENGTH:nul].decode("latin-1"), True


def _decode_submit_sm_resp(status: int, sequence: int, data: bytes) -> PDU:
    """The lean submit_sm_resp decoder (L{submit_sm_resp_id}): an id without
    its NUL comes with L{UNTERMINATED_ID} set, for the caller to log and count."""
    if len(data) == HEADER_LENGTH:
        return PDU(SUBMIT_SM_RESP, status, sequence)
    message_id, terminated = submit_sm_resp_id(data)
    if terminated:
        return PDU(SUBMIT_SM_RESP, status, sequence, {"message_id": message_id})
    return PDU(SUBMIT_SM_RESP, status, sequence,
               {"message_id": message_id, UNTERMINATED_ID: True})


# --- validation of everything else -------------------------------------------

_TLV_NAMES: dict[int, str] = {v: k for k, v in _sm_consts.OPTIONAL_PARAMS.items()}
_TLV = struct.Struct(">HH")


def _smpplib_class(name: str) -> type | None:
    try:
        return type(_sm_command.factory(name, sequence=0))
    except Exception:
        return None


@dataclass(frozen=True, slots=True)
class _Layout:
    """What our TLV walk needs to know of one command, read off smpplib."""

    mandatory: tuple[tuple[str, Any], ...]
    optional: dict[str, Any]


def _layout_of(cls: type) -> _Layout:
    mandatory, optional = [], {}
    probe = cls.__new__(cls)
    for name in cls.params_order:
        param = cls.params[name]
        if probe.field_is_optional(name):
            optional[name] = param
        else:
            mandatory.append((name, param))
    return _Layout(tuple(mandatory), optional)


_LAYOUTS: dict[int, _Layout] = {}
for _name, _code in COMMANDS.items():
    _cls = _smpplib_class(_name)
    if _cls is not None:
        _LAYOUTS[_code] = _layout_of(_cls)
del _name, _code, _cls


def _walk_mandatory(layout: _Layout, body: bytes, command_id: int, sequence: int) -> int:
    """Check the mandatory fields; return the offset where the TLVs start."""
    pos, end = 0, len(body)
    lengths: dict[str, int] = {}
    for name, param in layout.mandatory:
        if param.type is int:
            size = param.size
            if pos + size > end:
                raise DecodeError(ESME_RINVCMDLEN, f"{name} is cut short", command_id, sequence)
            lengths[name] = int.from_bytes(body[pos:pos + size], "big")
            pos += size
        elif param.type is str:
            limit = getattr(param, "max", None) or getattr(param, "size", 1)
            nul = body.find(b"\0", pos, pos + limit)
            if nul < 0:
                raise DecodeError(ESME_RINVMSGLEN, f"{name} has no NUL within {limit} octets",
                                  command_id, sequence)
            pos = nul + 1
        elif param.type is _OSTR:
            size = lengths.get(param.len_field, 0)
            if pos + size > end:
                raise DecodeError(ESME_RINVMSGLEN, f"{name} runs past the PDU",
                                  command_id, sequence)
            pos += size
    return pos


def _usable_tlv(tag: int, param: Any, value: bytes) -> bytes | None:
    """The TLV as smpplib can take it, or C{None} when it is unusable.

    A C-string TLV that lacks its NUL (some SMSCs send receipted_message_id
    so) gets one, rather than losing its last character in smpplib.
    """
    if param.type is int:
        return _TLV.pack(tag, len(value)) + value if len(value) == param.size else None
    if param.type is str:
        nul = value.find(b"\0")
        if nul == len(value) - 1 and nul > 0:
            return _TLV.pack(tag, len(value)) + value
        if nul < 0 and value:
            return _TLV.pack(tag, len(value) + 1) + value + b"\0"
        return None
    if param.type is _OSTR:
        return _TLV.pack(tag, len(value)) + value
    return None


def _validate_body(command_id: int, sequence: int, body: bytes) -> tuple[bytes, tuple[int, ...]]:
    """Walk one body; return it with unusable TLVs removed, and their tags.

    @raise DecodeError: mandatory fields that do not parse, or a TLV stream
        that runs past the end of the PDU.
    """
    layout = _LAYOUTS[command_id]
    if not body:
        if command_id & RESPONSE_BIT or not layout.mandatory:
            return body, ()  # error responses often come as a bare header
        raise DecodeError(ESME_RINVCMDLEN, "mandatory fields are missing", command_id, sequence)
    pos = _walk_mandatory(layout, body, command_id, sequence)
    kept, dropped = [body[:pos]], []
    end = len(body)
    while pos < end:
        if pos + 4 > end:
            raise DecodeError(ESME_RINVOPTPARSTREAM, "truncated TLV header", command_id, sequence)
        tag, length = _TLV.unpack_from(body, pos)
        value_end = pos + 4 + length
        if value_end > end:
            raise DecodeError(ESME_RINVOPTPARSTREAM, f"TLV 0x{tag:04X} runs past the PDU",
                              command_id, sequence)
        name = _TLV_NAMES.get(tag)
        param = layout.optional.get(name) if name else None
        usable = _usable_tlv(tag, param, body[pos + 4:value_end]) if param is not None else None
        if usable is None:
            dropped.append(tag)
        else:
            kept.append(usable)
        pos = value_end
    return b"".join(kept), tuple(dropped)


def _as_field(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def decode(data: bytes) -> PDU:
    """Decode one whole frame (header included, exactly C{command_length} long).

    @raise DecodeError: whatever makes the frame unusable, with the status to
        answer it with.  No other exception leaves this function.
    """
    if len(data) < HEADER_LENGTH:
        raise DecodeError(ESME_RINVCMDLEN, "shorter than a PDU header")
    command_length, command_id, status, sequence = HEADER.unpack_from(data)
    if command_length != len(data):
        raise DecodeError(ESME_RINVCMDLEN, "command_length does not match the frame",
                          command_id, sequence)
    if command_id == SUBMIT_SM_RESP:
        return _decode_submit_sm_resp(status, sequence, data)
    if command_id not in _LAYOUTS:
        raise DecodeError(ESME_RINVCMDID, f"unsupported command_id 0x{command_id:08X}",
                          command_id, sequence)
    layout = _LAYOUTS[command_id]
    body = data[HEADER_LENGTH:]
    if not layout.mandatory and not layout.optional:
        if body:
            raise DecodeError(ESME_RINVCMDLEN, "a body where none belongs", command_id, sequence)
        return PDU(command_id, status, sequence)
    clean, dropped = _validate_body(command_id, sequence, body)
    try:
        parsed = _sm.parse_pdu(data[:HEADER_LENGTH] + clean, sequence=sequence,
                              allow_unknown_opt_params=True)
    except Exception as e:  # smpplib's failures, whatever their type
        raise DecodeError(ESME_RSYSERR, f"unparseable {COMMAND_NAMES[command_id]}: {e!r}",
                          command_id, sequence) from None
    fields = {}
    if clean:
        for name in parsed.params_order:
            value = getattr(parsed, name, None)
            if value is not None:
                fields[name] = _as_field(value) if parsed.params[name].type is str else value
        if fields.get("sm_length") == 0:
            fields["short_message"] = b""  # smpplib leaves it out when nothing follows
    return PDU(command_id, status, sequence, fields, tuple(dropped))


def encode(command: str, sequence: int, status: int = ESME_ROK, **fields: Any) -> bytes:
    """Encode any command smpplib knows, by name, with smpplib.

    C-string fields are given as C{str}; octet strings as C{bytes}.

    @raise EncodeError: an unknown command, or fields it cannot carry.  A
        C-string longer than SMPP allows is refused here, where smpplib would
        silently truncate it.
    """
    cls = _smpplib_class(command)
    if cls is None:
        raise EncodeError(f"unknown command {command!r}")
    for name, value in fields.items():
        param = cls.params.get(name)
        if param is None:
            raise EncodeError(f"{command} has no field {name!r}")
        if param.type is str and value is not None:
            limit = getattr(param, "max", None) or getattr(param, "size", None) or 256
            if (not isinstance(value, str) or not value.isascii() or "\0" in value
                    or len(value) >= limit):
                raise EncodeError(f"{command}.{name} must be ASCII text under {limit} octets"
                                  " with no NUL")
    try:
        pdu = _sm.make_pdu(command, sequence=sequence, status=status, **fields)
        pdu.sequence = sequence  # smpplib's constructor keeps its own default
        pdu.status = status
        return pdu.generate()
    except Exception as e:
        raise EncodeError(f"cannot encode {command}: {e!r}") from None


# --- one line per PDU, for traces ----------------------------------------------

#: What C{short_message} holds, by C{data_coding}, for L{describe}.
_CODINGS = {0: "SMSC default alphabet", 1: "IA5", 3: "latin-1", 4: "octets", 8: "UCS-2"}
_TON_INTERNATIONAL = 1


def shown(value: Any) -> str:
    """A peer's string on one line: as it is when printable, else escaped."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def _address(fields: dict[str, Any], addr: str, ton: str, npi: str) -> str:
    number = fields[addr]
    ton_value = fields.get(ton, 0)
    if ton_value == _TON_INTERNATIONAL and number.isdigit():
        number = "+" + number  # E.164 digits: masked as E.164 (country code kept)
    return f"{ton_value}/{fields.get(npi, 0)}:{shown(mask_number(number)) or '-'}"


def describe(pdu: PDU) -> str:
    """One line for a PDU trace: command, sequence, status, the salient fields.

    Addresses are masked (L{mask_number}); of C{short_message} and
    C{message_payload}, which hold the PIN, only the length and encoding are
    said; a bind's password never appears: only the fields named here do.
    """
    fields = pdu.fields
    parts = [pdu.command, f"seq={pdu.sequence}", f"status={status_name(pdu.status)}"]
    if "system_id" in fields:
        parts.append(f"system_id={shown(fields['system_id'])}")
    if "source_addr" in fields:
        parts.append("source=" + _address(fields, "source_addr", "source_addr_ton",
                                          "source_addr_npi"))
    if "destination_addr" in fields:
        parts.append("destination=" + _address(fields, "destination_addr", "dest_addr_ton",
                                               "dest_addr_npi"))
    if "esm_class" in fields:
        parts.append(f"esm_class=0x{fields['esm_class']:02X}")
    coding = fields.get("data_coding")
    if coding is not None:
        parts.append(f"data_coding={coding}")
    for name in ("short_message", "message_payload"):
        if name in fields:
            what = _CODINGS.get(coding, "data_coding ?" if coding is None
                                else f"data_coding 0x{coding:02X}")
            parts.append(f"{name}={len(fields[name])} octets ({what})")
    for name in ("message_id", "receipted_message_id", "message_state"):
        if name in fields:
            parts.append(f"{name}={shown(fields[name])}")
    if pdu.dropped_tlvs:
        parts.append(f"dropped_tlvs={len(pdu.dropped_tlvs)}")
    return " ".join(parts)


def describe_frame(data: bytes) -> str:
    """L{describe} of one whole frame; a frame that does not decode is said
    to be so, by its header alone."""
    try:
        return describe(decode(data))
    except DecodeError as e:
        return describe_undecodable(e)


def describe_undecodable(error: DecodeError) -> str:
    """The trace line for a frame L{decode} refused (its reason is not given:
    a parser's message may quote the frame)."""
    command = COMMAND_NAMES.get(error.command_id, f"0x{error.command_id:08X}")
    return f"{command} seq={error.sequence} undecodable"


def relative_validity(seconds: float) -> str:
    """An SMPP relative time (C{YYMMDDhhmmss000R}) for C{seconds} from now.

    Fractions are dropped, and anything under one second becomes one second,
    because an empty validity_period means the SMSC's (long) default.
    """
    if not math.isfinite(seconds) or seconds > 99 * 365 * 86400:
        raise EncodeError(f"validity of {seconds} s cannot be carried")
    total = max(1, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    years, days = divmod(days, 365)
    months, days = divmod(days, 30)
    if months == 12:  # 360-364 days: keep the month field a month
        months, days = 11, days + 30
    return f"{years:02d}{months:02d}{days:02d}{hours:02d}{minutes:02d}{secs:02d}000R"


def absolute_validity(seconds_from_now: float, now: float) -> str:
    """An SMPP absolute time (C{YYMMDDhhmmsstnnp}) C{seconds_from_now} after C{now}.

    For SMSCs that refuse relative times.  C{now} is a POSIX timestamp (the
    carrier's clock); the time is written in UTC, so the quarter-hour
    offset C{nn} is C{00} and C{p} is C{+}.  As in L{relative_validity},
    fractions of C{seconds_from_now} are dropped and anything under one
    second becomes one second; the result keeps tenths of a second (C{t}),
    rounded down, so the message never outlives the code.  C{YY} is the year
    modulo 100, as SMPP 3.4 has it.
    """
    if not math.isfinite(seconds_from_now) or seconds_from_now > 99 * 365 * 86400:
        raise EncodeError(f"validity of {seconds_from_now} s cannot be carried")
    if not math.isfinite(now) or now < 0:
        raise EncodeError(f"no absolute time for a clock at {now}")
    # round() first: 0.3 s read as 2.999... tenths would lose a tenth.
    tenths = math.floor(round((now + max(1, int(seconds_from_now))) * 10, 3))
    whole, tenth = divmod(tenths, 10)
    when = datetime.fromtimestamp(whole, timezone.utc)
    return (f"{when.year % 100:02d}{when.month:02d}{when.day:02d}"
            f"{when.hour:02d}{when.minute:02d}{when.second:02d}{tenth}00+")
