"""Tests for msisdnd.smpp.codec: golden bytes, smpplib agreement, hostile input."""

from __future__ import annotations

import struct

import pytest
import smpplib.smpp
from hypothesis import given, settings
from hypothesis import strategies as st

from msisdnd.smpp import codec

# --- golden byte vectors ------------------------------------------------------
# Written out by hand from the SMPP 3.4 layout (section 4.4.1), field by field.

GOLDEN_SUBMIT_BODY = bytes.fromhex(
    "00"                                    # service_type ""
    "05" "00"                               # source_addr_ton 5 (alphanumeric), npi 0
    "41636d65" "00"                         # source_addr "Acme"
    "01" "01"                               # dest_addr_ton 1 (international), npi 1 (E.164)
    "3333363132333435363738" "00"           # destination_addr "33612345678"
    "00" "00" "00"                          # esm_class, protocol_id, priority_flag
    "00"                                    # schedule_delivery_time ""
    "3030303030303030" "31" "303030303030" "52" "00"  # validity "000000001000000R"
    "01" "00" "00" "00"                     # registered_delivery 1, replace, data_coding, default id
    "11"                                    # sm_length 17
    "596f757220636f64653a20313233343536"    # "Your code: 123456"
)

GOLDEN_SUBMIT_FIELDS = {
    "source_addr": "Acme", "source_addr_ton": 5, "source_addr_npi": 0,
    "destination_addr": "33612345678", "dest_addr_ton": 1, "dest_addr_npi": 1,
    "registered_delivery": 1, "validity_period": "000000001000000R", "data_coding": 0,
    "short_message": b"Your code: 123456",
}


def test_golden_submit_sm_body():
    """encode_submit_sm_body lays out every mandatory field as SMPP 3.4 says."""
    assert codec.encode_submit_sm_body(**GOLDEN_SUBMIT_FIELDS) == GOLDEN_SUBMIT_BODY


def test_golden_submit_sm_body_without_validity_nor_esm_class():
    """The common body (esm_class 0, no validity_period: its own precomputed
    middle) is the golden one with an empty validity_period."""
    fields = {**GOLDEN_SUBMIT_FIELDS, "validity_period": ""}
    validity = bytes.fromhex("3030303030303030" "31" "303030303030" "52")
    expected = GOLDEN_SUBMIT_BODY.replace(validity + b"\0", b"\0")
    assert codec.encode_submit_sm_body(**fields) == expected
    with_udhi = codec.encode_submit_sm_body(**{**fields, "esm_class": 0x40})
    assert with_udhi == expected.replace(b"5678\0\0", b"5678\0\x40")


def test_golden_submit_sm_frame():
    """frame() prepends length 81, command_id 4, status 0 and the sequence."""
    expected = bytes.fromhex("00000051" "00000004" "00000000" "00000007") + GOLDEN_SUBMIT_BODY
    assert codec.frame(codec.SUBMIT_SM, 7, GOLDEN_SUBMIT_BODY) == expected


def test_golden_submit_sm_resp_decodes():
    """A hand-written submit_sm_resp decodes to its message_id, status and sequence."""
    data = bytes.fromhex("00000015" "80000004" "00000000" "0000002a" "3161326200")
    assert codec.decode(data) == codec.PDU(codec.SUBMIT_SM_RESP, 0, 42, {"message_id": "1a2b"})


def test_golden_submit_sm_resp_error_without_body():
    """An error submit_sm_resp that is a bare header decodes with its status and no fields."""
    data = bytes.fromhex("00000010" "80000004" "00000058" "0000002b")
    pdu = codec.decode(data)
    assert (pdu.command_id, pdu.status, pdu.sequence, pdu.fields) == (
        codec.SUBMIT_SM_RESP, codec.ESME_RTHROTTLED, 43, {})
    assert pdu.is_response and pdu.command == "submit_sm_resp"


# --- agreement with smpplib ---------------------------------------------------


def ascii_text(max_size: int) -> st.SearchStrategy[str]:
    """ASCII without NUL, short enough to fit a C-string field with its NUL."""
    return st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=max_size)


OCTET = st.integers(0, 255)
SUBMIT_FIELDS = st.fixed_dictionaries({
    "service_type": ascii_text(5),
    "source_addr_ton": OCTET, "source_addr_npi": OCTET, "source_addr": ascii_text(20),
    "dest_addr_ton": OCTET, "dest_addr_npi": OCTET, "destination_addr": ascii_text(20),
    "esm_class": OCTET, "protocol_id": OCTET, "priority_flag": OCTET,
    "schedule_delivery_time": ascii_text(16), "validity_period": ascii_text(16),
    "registered_delivery": OCTET, "replace_if_present_flag": OCTET,
    "data_coding": OCTET, "sm_default_msg_id": OCTET,
    "short_message": st.binary(max_size=254),
})
SEQUENCE = st.integers(0, 0x7FFFFFFF)


@given(SUBMIT_FIELDS, SEQUENCE)
def test_lean_submit_sm_parses_back_in_smpplib_and_codec(fields, seq):
    """smpplib and codec.decode both read back every field the lean encoder wrote."""
    data = codec.frame(codec.SUBMIT_SM, seq, codec.encode_submit_sm_body(**fields))
    parsed = smpplib.smpp.parse_pdu(data, sequence=0)
    assert parsed.command == "submit_sm" and parsed.sequence == seq
    for name, value in fields.items():
        got = getattr(parsed, name)
        if name == "short_message":
            # smpplib stops at the end of the body and leaves an empty one unset.
            assert (got or b"") == value
        elif isinstance(value, str):
            assert got == value.encode("ascii"), name
        else:
            assert got == value, name
    pdu = codec.decode(data)
    assert (pdu.command_id, pdu.sequence, pdu.dropped_tlvs) == (codec.SUBMIT_SM, seq, ())
    assert {name: pdu.fields[name] for name in fields} == fields


def test_empty_short_message_is_a_field_with_or_without_tlvs():
    """decode reports short_message b"" whether or not TLVs follow it."""
    bare = codec.encode("deliver_sm", 1, source_addr="1", destination_addr="2")
    with_tlv = codec.encode("deliver_sm", 1, source_addr="1", destination_addr="2", message_state=2)
    assert codec.decode(with_tlv).fields["short_message"] == b""
    assert codec.decode(bare).fields["short_message"] == b""


@given(ascii_text(64), st.integers(0, 0xFFFFFFFF), SEQUENCE)
def test_smpplib_submit_sm_resp_decodes_on_the_lean_path(message_id, status, seq):
    """Bytes smpplib generates for submit_sm_resp decode to the same id, status and sequence."""
    resp = smpplib.smpp.make_pdu("submit_sm_resp", sequence=seq, message_id=message_id)
    resp.sequence = seq
    resp.status = status
    pdu = codec.decode(resp.generate())
    assert (pdu.command_id, pdu.status, pdu.sequence) == (codec.SUBMIT_SM_RESP, status, seq)
    assert pdu.fields == {"message_id": message_id}


# --- what the encoders refuse -------------------------------------------------


@pytest.mark.parametrize("change", [
    {"source_addr": "A" * 21},
    {"destination_addr": "3" * 21},
    {"service_type": "ABCDEF"},
    {"validity_period": "0" * 17},
    {"short_message": b"x" * 255},
    {"source_addr": "Ac\0me"},
    {"validity_period": "0000\x0000001000000R"},
    {"data_coding": 256},
    {"source_addr": "caf\u20ac"},
], ids=lambda c: next(iter(c)))
def test_encode_submit_sm_body_refuses(change):
    """Fields SMPP cannot carry raise EncodeError instead of becoming wrong bytes."""
    with pytest.raises(codec.EncodeError):
        codec.encode_submit_sm_body(**{**GOLDEN_SUBMIT_FIELDS, **change})


def test_encode_submit_sm_body_accepts_the_limits():
    """The longest legal values (20-char address, 254-byte message) still encode."""
    body = codec.encode_submit_sm_body(
        **{**GOLDEN_SUBMIT_FIELDS, "source_addr": "A" * 20, "short_message": b"x" * 254})
    assert body.endswith(b"\xfe" + b"x" * 254)


@pytest.mark.parametrize("command, fields", [
    ("bind_transceiver", {"system_id": "s" * 16, "password": "pw"}),
    ("bind_transceiver", {"system_id": "sys", "password": "p" * 9}),
    ("bind_transmitter", {"system_id": "sys\u00e9", "password": "pw"}),
    ("deliver_sm", {"source_addr": "\u00e9t\u00e9", "short_message": b"x"}),
    ("deliver_sm", {"receipted_message_id": "9" * 65}),
    ("bind_transceiver", {"no_such_field": "x"}),
    ("no_such_command", {}),
])
def test_encode_refuses_what_smpplib_would_truncate(command, fields):
    """encode() raises EncodeError for too-long, non-ASCII or unknown fields."""
    with pytest.raises(codec.EncodeError):
        codec.encode(command, 1, **fields)


@pytest.mark.parametrize("command, fields", [
    ("bind_transceiver", {"system_id": "ab\0c", "password": "pw"}),
    ("deliver_sm", {"source_addr": "336\0", "destination_addr": "ACME"}),
])
def test_encode_refuses_nul_inside_a_cstring(command, fields):
    """A NUL inside a C-string field is refused, as encode_submit_sm_body refuses it."""
    with pytest.raises(codec.EncodeError):
        codec.encode(command, 1, **fields)


def test_encode_keeps_the_longest_legal_credentials():
    """A 15-char system_id and 8-char password reach the wire whole."""
    data = codec.encode("bind_transceiver", 3, system_id="s" * 15, password="p" * 8)
    assert codec.decode(data).fields["system_id"] == "s" * 15
    assert codec.decode(data).fields["password"] == "p" * 8


# --- hostile TLVs and bodies --------------------------------------------------


def deliver_sm(seq: int = 9) -> bytes:
    return codec.encode("deliver_sm", seq, source_addr="33612345678", source_addr_ton=1,
                        source_addr_npi=1, destination_addr="ACME", short_message=b"hello")


def fix_length(data: bytes) -> bytes:
    """The same frame with command_length made to match its size."""
    return struct.pack(">I", len(data)) + data[4:]


def with_tlvs(*tlvs: bytes) -> bytes:
    return fix_length(deliver_sm() + b"".join(tlvs))


def tlv(tag: int, value: bytes, length: int | None = None) -> bytes:
    return struct.pack(">HH", tag, len(value) if length is None else length) + value


CLEAN_FIELDS = codec.decode(deliver_sm()).fields


def test_clean_deliver_sm_decodes():
    """The base frame the hostile cases start from decodes with its fields and no drops."""
    pdu = codec.decode(deliver_sm())
    assert pdu.dropped_tlvs == ()
    assert (pdu.fields["source_addr"], pdu.fields["short_message"]) == ("33612345678", b"hello")


def test_good_tlv_is_kept():
    """A well-formed receipted_message_id TLV is decoded to text."""
    pdu = codec.decode(with_tlvs(tlv(0x001E, b"1a2b\0"), tlv(0x0427, b"\x02")))
    assert pdu.fields["receipted_message_id"] == "1a2b"
    assert pdu.fields["message_state"] == 2
    assert pdu.dropped_tlvs == ()


@pytest.mark.parametrize("bad, tag", [
    (tlv(0x9999, b"junk"), 0x9999),                 # unknown tag
    (tlv(0x0501, b"\x01"), 0x0501),                 # ussd_service_op: not in deliver_sm
    (tlv(0x0427, b"\x00\x02"), 0x0427),             # message_state must be 1 octet
    (tlv(0x001E, b"1a\0b\0"), 0x001E),              # ... with a NUL inside
    (tlv(0x001E, b""), 0x001E),                     # ... empty, not even a NUL
], ids=["unknown", "misplaced", "int-length", "inner-nul", "empty-cstring"])
def test_unusable_tlv_is_dropped_and_listed(bad, tag):
    """An unusable TLV is dropped, named in dropped_tlvs, and the rest stays intact."""
    pdu = codec.decode(with_tlvs(tlv(0x0427, b"\x02"), bad))
    assert pdu.dropped_tlvs == (tag,)
    assert pdu.fields == {**CLEAN_FIELDS, "message_state": 2}


def test_cstring_tlv_without_nul_is_never_cut():
    """A receipted_message_id without its NUL is kept whole or dropped (and listed), never cut.

    smpplib alone would take "1a2b" as "1a2": the id would match no message.
    """
    pdu = codec.decode(with_tlvs(tlv(0x001E, b"1a2b"), tlv(0x0427, b"\x02")))
    assert pdu.fields.get("receipted_message_id") in (None, "1a2b")
    assert ("receipted_message_id" in pdu.fields) != (0x001E in pdu.dropped_tlvs)
    assert pdu.fields["message_state"] == 2
    assert {k: pdu.fields[k] for k in CLEAN_FIELDS} == CLEAN_FIELDS


@pytest.mark.parametrize("tail", [
    tlv(0x001E, b"1a", length=10),   # length runs past the PDU
    b"\x00\x1e\x00",                 # 3 octets: not even a TLV header
    tlv(0x9999, b"", length=1),      # unknown tag, still past the end
], ids=["past-end", "truncated-header", "unknown-past-end"])
def test_broken_tlv_stream_is_invalid_optional_parameter_stream(tail):
    """A TLV stream that cannot be walked is a DecodeError ESME_RINVOPTPARSTREAM."""
    with pytest.raises(codec.DecodeError) as e:
        codec.decode(with_tlvs(tail))
    assert e.value.status == codec.ESME_RINVOPTPARSTREAM == 0xC0
    assert (e.value.command_id, e.value.sequence) == (codec.DELIVER_SM, 9)


def test_mandatory_cstring_without_nul_is_refused():
    """A service_type of 10 non-NUL octets is a DecodeError, never a silently long field."""
    data = deliver_sm()
    assert data[16] == 0  # service_type "" is the body's first octet
    bad = fix_length(data[:16] + b"ABCDEFGHIJ" + data[17:])
    with pytest.raises(codec.DecodeError) as e:
        codec.decode(bad)
    assert (e.value.command_id, e.value.sequence) == (codec.DELIVER_SM, 9)
    assert e.value.status != codec.ESME_ROK


def test_short_message_longer_than_body_is_refused():
    """An sm_length beyond the body is a DecodeError, not a short read."""
    data = deliver_sm()
    bad = data[:-6] + b"\xff" + data[-5:]  # sm_length 255, 5 octets follow
    with pytest.raises(codec.DecodeError):
        codec.decode(bad)


def test_deliver_sm_without_body_is_refused():
    """A deliver_sm that is only a header lacks its mandatory fields: DecodeError."""
    with pytest.raises(codec.DecodeError) as e:
        codec.decode(codec.frame(codec.DELIVER_SM, 4))
    assert (e.value.command_id, e.value.sequence) == (codec.DELIVER_SM, 4)


def test_unknown_command_id():
    """An unknown command_id is DecodeError ESME_RINVCMDID carrying the id and sequence."""
    with pytest.raises(codec.DecodeError) as e:
        codec.decode(codec.frame(0x00000077, 1234, b"abc"))
    assert (e.value.status, e.value.command_id, e.value.sequence) == (
        codec.ESME_RINVCMDID, 0x77, 1234)
    assert codec.ESME_RINVCMDID == 3


@pytest.mark.parametrize("delta", [-38, -1, 1, 1000])
def test_command_length_must_match_the_frame(delta):
    """A command_length other than the frame's size is DecodeError ESME_RINVCMDLEN."""
    data = deliver_sm()
    with pytest.raises(codec.DecodeError) as e:
        codec.decode(struct.pack(">I", len(data) + delta) + data[4:])
    assert e.value.status == codec.ESME_RINVCMDLEN == 2


def test_shorter_than_a_header():
    """Fewer than 16 octets cannot be a PDU: DecodeError ESME_RINVCMDLEN."""
    with pytest.raises(codec.DecodeError) as e:
        codec.decode(b"\x00\x00\x00\x0c\x00\x00\x00\x15\x00\x00\x00\x00")
    assert e.value.status == codec.ESME_RINVCMDLEN


def test_body_on_a_bodiless_command():
    """enquire_link with a body is refused rather than answered as if empty."""
    with pytest.raises(codec.DecodeError):
        codec.decode(codec.frame(codec.ENQUIRE_LINK, 5, b"\0"))


# --- nothing but DecodeError, whatever the bytes ------------------------------

KNOWN_IDS = st.sampled_from(list(codec.COMMANDS.values()))


def decode_or_decode_error(data: bytes) -> codec.PDU | None:
    try:
        pdu = codec.decode(data)
    except codec.DecodeError as e:
        assert isinstance(e.status, int) and e.status != codec.ESME_ROK
        return None
    assert isinstance(pdu, codec.PDU)
    return pdu


@settings(max_examples=500)
@given(KNOWN_IDS, st.integers(0, 0xFFFFFFFF), SEQUENCE, st.binary(max_size=300))
def test_random_body_raises_only_decode_error(command_id, status, seq, body):
    """Any body under a valid header for any known command decodes or raises DecodeError."""
    pdu = decode_or_decode_error(codec.frame(command_id, seq, body, status))
    if pdu is not None:
        assert (pdu.command_id, pdu.sequence, pdu.status) == (command_id, seq, status)


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(16, 400), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(16, 400), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(16, 400), st.integers(1, 8)),
)

DELIVER_SEEDS = [
    deliver_sm(),
    codec.encode("deliver_sm", 77, source_addr="33612345678", destination_addr="ACME",
                 esm_class=4, short_message=b"id:1a2b sub:001 dlvrd:001 stat:DELIVRD err:000",
                 receipted_message_id="1a2b", message_state=2),
    codec.encode("deliver_sm", 78, source_addr="ACME", destination_addr="1", esm_class=0x40,
                 data_coding=8, short_message=b"\x05\x00\x03\x01\x02\x01\x00h\x00i",
                 sar_msg_ref_num=1, network_error_code=b"\x03\x00\x01"),
]


@settings(max_examples=500)
@given(st.sampled_from(DELIVER_SEEDS), st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_deliver_sm_raises_only_decode_error(seed, mutations):
    """Flipped, inserted or deleted body octets never make decode raise anything else."""
    data = bytearray(seed)
    for op, where, arg in mutations:
        pos = 16 + (where - 16) % max(1, len(data) - 16)
        if op == "flip":
            if pos < len(data):
                data[pos] ^= arg
        elif op == "insert":
            data[pos:pos] = arg
        else:
            del data[pos:pos + arg]
    pdu = decode_or_decode_error(fix_length(bytes(data)))
    if pdu is not None:
        assert pdu.command_id == codec.DELIVER_SM
        assert len(pdu.fields.get("short_message", b"")) == pdu.fields["sm_length"]


# --- helpers ------------------------------------------------------------------


@pytest.mark.parametrize("seconds, expected", [
    (600, "000000001000000R"),
    (0.2, "000000000001000R"),
    (0, "000000000001000R"),
    (59.9, "000000000059000R"),
    (86400, "000001000000000R"),
    (86400 + 3600 + 61, "000001010101000R"),
    (99 * 365 * 86400, "990000000000000R"),
])
def test_relative_validity(seconds, expected):
    """relative_validity writes YYMMDDhhmmss000R, rounding anything under 1 s up to 1 s."""
    assert codec.relative_validity(seconds) == expected


def test_relative_validity_beyond_99_years():
    """More than 99 years cannot be written in two digits: EncodeError."""
    with pytest.raises(codec.EncodeError):
        codec.relative_validity(100 * 365 * 86400)


def test_relative_validity_infinite():
    """An infinite validity is beyond 99 years too: EncodeError, like any other."""
    with pytest.raises(codec.EncodeError):
        codec.relative_validity(float("inf"))


def _utc(*fields) -> float:
    from datetime import datetime, timezone
    return datetime(*fields, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("seconds, now, expected", [
    # YYMMDDhhmmss, tenths, quarter-hours from UTC (00), '+'.
    (600, _utc(2026, 11, 30, 16, 50, 33), "261130170033000+"),
    (600, _utc(2026, 11, 30, 16, 50, 33) + 0.37, "261130170033300+"),   # tenths rounded down
    (600.9, _utc(2026, 11, 30, 16, 50, 33), "261130170033000+"),        # fractions dropped
    (0.2, _utc(2026, 11, 30, 16, 50, 33), "261130165034000+"),          # at least 1 s
    (0, _utc(2026, 11, 30, 16, 50, 33) + 0.3, "261130165034300+"),      # 0.3 is not 0.2999
    (90, _utc(2026, 12, 31, 23, 59, 30), "270101000100000+"),           # a new year
    (86400, _utc(2028, 2, 28, 12, 0, 0), "280229120000000+"),           # a leap day
    (3600, _utc(2001, 1, 1), "010101010000000+"),                       # zero-padded
])
def test_absolute_validity(seconds, now, expected):
    """absolute_validity writes now + seconds in UTC as YYMMDDhhmmsstnnp."""
    assert codec.absolute_validity(seconds, now) == expected
    assert len(expected) == 16  # validity_period's 16 characters + NUL


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), 100 * 365 * 86400])
def test_absolute_validity_out_of_range(seconds):
    with pytest.raises(codec.EncodeError):
        codec.absolute_validity(seconds, _utc(2026, 1, 1))


def test_absolute_validity_goes_through_submit_sm():
    """The absolute form fits validity_period and parses back in smpplib."""
    validity = codec.absolute_validity(600, _utc(2026, 11, 30, 16, 50, 33))
    body = codec.encode_submit_sm_body(source_addr="Acme", destination_addr="33612345678",
                                       short_message=b"x", validity_period=validity)
    pdu = codec.decode(codec.frame(codec.SUBMIT_SM, 1, body))
    assert pdu.fields["validity_period"] == "261130170033000+"


def test_describe_masks_numbers_and_leaves_out_the_text():
    frame = codec.frame(codec.SUBMIT_SM, 7, codec.encode_submit_sm_body(
        source_addr="33700000001", source_addr_ton=1, source_addr_npi=1,
        destination_addr="0612345678", dest_addr_ton=2, dest_addr_npi=1,
        short_message="Code 482913".encode("utf-16-be"), data_coding=8, esm_class=0x40))
    line = codec.describe_frame(frame)
    assert line == ("submit_sm seq=7 status=ESME_ROK source=1/1:+3370XXXXXXX "
                    "destination=2/1:06123XXXXX esm_class=0x40 data_coding=8 "
                    "short_message=22 octets (UCS-2)")


def test_describe_never_shows_a_password_or_a_payload():
    bind = codec.encode("bind_transmitter", 1, system_id="esme", password="hunter2")
    assert codec.describe_frame(bind) == "bind_transmitter seq=1 status=ESME_ROK system_id=esme"
    mo = codec.encode("deliver_sm", 2, source_addr="Alice\nBob", destination_addr="",
                      message_payload=b"482913", receipted_message_id="9\x01")
    line = codec.describe_frame(mo)
    assert "482913" not in line and "\n" not in line and "\x01" not in line
    assert "source=0/0:AliceXXXX destination=0/0:-" in line
    assert "message_payload=6 octets" in line
    assert line.endswith("receipted_message_id='9\\x01'")  # control characters escaped


def test_describe_an_undecodable_frame_by_its_header():
    assert codec.describe_frame(codec.frame(codec.DELIVER_SM, 5, b"482913")) == (
        "deliver_sm seq=5 undecodable")


def test_status_name_and_code_round_trip():
    """Every SMPP status name maps to a code and back to the same name."""
    assert len(codec.STATUSES) > 30
    for name, code in codec.STATUSES.items():
        assert codec.status_code(name) == code
        assert codec.status_name(code) == name
    assert codec.status_name(0x58) == "ESME_RTHROTTLED"
    assert codec.status_code("esme_rthrottled") == 0x58


def test_unknown_status():
    """A status SMPP does not define prints as hex; an unknown name is a KeyError."""
    assert codec.status_name(0x00012345) == "0x00012345"
    with pytest.raises(KeyError):
        codec.status_code("ESME_RNOSUCHTHING")
