"""Tests for msisdnd.smpp.inbound: receipts, MO decoding and reassembly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.logger import formatEvent, globalLogPublisher
from zope.interface import implementer
from zope.interface.verify import verifyObject

from msisdnd.masking import mask_number
from msisdnd.smpp import codec
from msisdnd.smpp.inbound import (
    MO_CHARSETS,
    RECEIPT_STATES,
    InboundDispatcher,
    Reassembler,
    decode_mo_text,
    normalize_message_id,
    normalize_source,
    parse_receipt,
)
from msisdnd.sms.interfaces import DeliveryReceipt, IMOReceiver, IReceiptReceiver, MOMessage
from msisdnd.sms.message_ids import RECEIPT_ID_FORMATS, message_id_aliases, receipt_message_id
from msisdnd.state import keys

CARRIER = "acme"
OUR_NUMBER = "33700000000"


@implementer(IMOReceiver)
class RecordingMOReceiver:
    """Keeps the MO messages; answers each with C{result()}."""

    def __init__(self, result=lambda: None):
        self.messages: list[MOMessage] = []
        self._result = result

    def moReceived(self, message):
        self.messages.append(message)
        return self._result()


@implementer(IReceiptReceiver)
class RecordingReceiptReceiver:
    """Keeps the receipts; answers each with C{result()}."""

    def __init__(self, result=lambda: None):
        self.receipts: list[DeliveryReceipt] = []
        self._result = result

    def receiptReceived(self, receipt):
        self.receipts.append(receipt)
        return self._result()


def raise_error():
    raise RuntimeError("receiver broke")


def failed_deferred():
    return defer.fail(RuntimeError("receiver broke later"))


@contextmanager
def captured_logs() -> Iterator[list[dict]]:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def make_dispatcher(mo=None, receipts=None, region="FR", clock=None, **kwargs):
    mo = RecordingMOReceiver() if mo is None else mo
    receipts = RecordingReceiptReceiver() if receipts is None else receipts
    clock = task.Clock() if clock is None else clock
    return InboundDispatcher(CARRIER, region, mo, receipts, clock, **kwargs), mo, receipts, clock


def deliver_sm(**fields) -> codec.PDU:
    """A deliver_sm as the session would get it: through the real codec."""
    fields.setdefault("source_addr", "0612345678")
    fields.setdefault("destination_addr", OUR_NUMBER)
    return codec.decode(codec.encode("deliver_sm", 1, **fields))


def data_sm(**fields) -> codec.PDU:
    fields.setdefault("source_addr", "0612345678")
    fields.setdefault("destination_addr", OUR_NUMBER)
    return codec.decode(codec.encode("data_sm", 1, **fields))


def udh8(reference: int, total: int, sequence: int) -> bytes:
    return bytes((5, 0, 3, reference, total, sequence))


def udh16(reference: int, total: int, sequence: int) -> bytes:
    return bytes((6, 8, 4, reference >> 8, reference & 0xFF, total, sequence))


# --- masking -------------------------------------------------------------------------


def test_mask_number_keeps_five_characters():
    assert mask_number("+33612345678") == "+3361XXXXXXX"
    assert mask_number("ACME") == "ACME"
    assert mask_number("") == ""


# --- message ids -----------------------------------------------------------------------


@pytest.mark.parametrize("raw, normal", [
    ("000123", "123"),
    ("123", "123"),
    (" 1A2B\0", "1a2b"),
    ("\0\0ABC\0 ", "abc"),
    ("0000", "0"),
    ("", ""),
    ("  ", ""),
])
def test_normalize_message_id(raw, normal):
    assert normalize_message_id(raw) == normal


def test_message_id_aliases_are_every_reading():
    assert message_id_aliases("000123") == message_id_aliases("123")
    assert message_id_aliases("1A2B") == {"1a2b", "6699"}
    assert message_id_aliases("123") == {"123", "291", "7b"}
    assert message_id_aliases("abc-def") == {"abc-def"}


def test_readings_of_different_ids_meet_so_they_cannot_match_receipts():
    """Why receipts are matched by a declared format: 0x10 is 16, another message's id."""
    assert message_id_aliases("10") & message_id_aliases("16")


@given(st.text(max_size=100))
def test_aliases_contain_the_normalized_id(raw):
    assert normalize_message_id(raw) in message_id_aliases(raw)


@pytest.mark.parametrize("raw, receipt_id_format, submit_id", [
    ("0001A2B", "as-is", "1a2b"),
    ("6699", "as-is", "6699"),
    ("abc-def\0", "as-is", "abc-def"),
    ("6699", "hex-to-decimal", "1a2b"),
    ("0006699", "hex-to-decimal", "1a2b"),
    ("16", "hex-to-decimal", "10"),
    ("0", "hex-to-decimal", "0"),
    ("1A2B", "decimal-to-hex", "6699"),
    ("10", "decimal-to-hex", "16"),
    ("00ff", "decimal-to-hex", "255"),
])
def test_receipt_message_id(raw, receipt_id_format, submit_id):
    assert receipt_message_id(raw, receipt_id_format) == submit_id


@pytest.mark.parametrize("raw, receipt_id_format", [
    ("", "as-is"),
    (" \0", "hex-to-decimal"),
    ("1a2b", "hex-to-decimal"),  # hex where decimal was declared
    ("12-34", "hex-to-decimal"),
    ("xyz", "decimal-to-hex"),
    ("1" * 65, "hex-to-decimal"),  # longer than any SMPP id
    ("f" * 65, "decimal-to-hex"),
])
def test_receipt_message_id_unreadable_in_its_format(raw, receipt_id_format):
    assert receipt_message_id(raw, receipt_id_format) is None


def test_receipt_message_id_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="receipt_id_format 'hex'"):
        receipt_message_id("1", "hex")


@given(st.text(max_size=100))
def test_as_is_is_the_normalized_id(raw):
    assert receipt_message_id(raw, "as-is") == (normalize_message_id(raw) or None)


@given(st.integers(0, 2**64), st.integers(0, 4), st.booleans())
def test_any_number_in_hex_and_decimal_matches_in_its_declared_format(value, zeros, upper):
    hex_form = "0" * zeros + format(value, "X" if upper else "x")
    decimal_form = "0" * zeros + str(value)
    assert receipt_message_id(decimal_form, "hex-to-decimal") == normalize_message_id(hex_form)
    assert receipt_message_id(hex_form, "decimal-to-hex") == normalize_message_id(decimal_form)


# --- receipt parsing ------------------------------------------------------------------

RECEIPT_TEXT = ("id:0001A2B sub:001 dlvrd:001 submit date:2401011200 "
                "done date:2401011201 stat:DELIVRD err:000 text:Your code is")


def test_receipt_states():
    assert dict(RECEIPT_STATES) == {
        1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED",
        5: "UNDELIV", 6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD",
    }


def test_parse_receipt_text():
    assert parse_receipt({}, RECEIPT_TEXT) == ("0001A2B", "DELIVRD", "000")


def test_parse_receipt_text_keys_in_any_case_and_partial():
    assert parse_receipt({}, "ID:77 STAT:undeliv") == ("77", "UNDELIV", None)


@pytest.mark.parametrize("stat, state", [
    ("DELIVERED", "DELIVRD"),
    ("rejected", "REJECTD"),
    ("UNDELIVERABLE", "UNDELIV"),
    ("expired", "EXPIRED"),
    ("WHATEVER", "UNKNOWN"),
])
def test_parse_receipt_state_spellings(stat, state):
    assert parse_receipt({}, f"id:1 stat:{stat}")[1] == state


def test_parse_receipt_ignores_the_text_field():
    assert parse_receipt({}, "id:1 stat:DELIVRD text:id:2 stat:REJECTD err:9") == ("1", "DELIVRD", None)
    assert parse_receipt({}, "sub:001 text:id:2 stat:DELIVRD") is None


def test_parse_receipt_tlvs_win_over_text():
    fields = {"receipted_message_id": "ff", "message_state": 5}
    assert parse_receipt(fields, "id:1 stat:DELIVRD err:0") == ("ff", "UNDELIV", "0")


def test_parse_receipt_tlvs_alone():
    fields = {"receipted_message_id": "ff", "message_state": 8, "network_error_code": b"\x03\x00\x0b"}
    assert parse_receipt(fields, "") == ("ff", "REJECTD", "011")


def test_parse_receipt_mixes_tlv_id_and_text_state():
    fields = {"receipted_message_id": "ff", "message_state": 0}  # 0 is no receipt state
    assert parse_receipt(fields, "stat:EXPIRED") == ("ff", "EXPIRED", None)


@pytest.mark.parametrize("fields, text", [
    ({}, ""),
    ({}, "stat:DELIVRD err:000"),  # no id
    ({}, "id:123 err:000"),  # no state
    ({}, "id: stat:DELIVRD"),  # empty id
    ({"receipted_message_id": "12"}, "hello"),  # no state anywhere
    ({"message_state": 2}, "hello"),  # no id anywhere
])
def test_parse_receipt_unusable(fields, text):
    assert parse_receipt(fields, text) is None


# --- source addresses -------------------------------------------------------------------


@pytest.mark.parametrize("address, ton, region", [
    ("0612345678", 0, "FR"),
    ("0612345678", 2, "FR"),
    ("0033612345678", 0, "FR"),
    ("0033612345678", 0, None),
    ("0033612345678", 0, "US"),
    ("01133612345678", 0, "US"),  # the US international prefix
    ("+33612345678", 0, None),
    ("+33612345678", 0, "GB"),
    ("33612345678", 1, None),
    ("33612345678", 1, "GB"),
    (" +33 6 12 34 56 78 ", 0, None),
])
def test_normalize_source(address, ton, region):
    assert normalize_source(address, ton, region) == "+33612345678"


@pytest.mark.parametrize("address, ton, region", [
    ("ACME", 5, "FR"),
    ("ACME", 0, "FR"),
    ("33612345678", 5, "FR"),  # TON says alphanumeric
    ("0612345678", 0, None),  # national, but no region to read it in
    ("12", 0, "FR"),
    ("", 1, "FR"),
    ("+", 0, None),
    ("0612345678", 0, "ZZ"),
])
def test_normalize_source_refuses(address, ton, region):
    assert normalize_source(address, ton, region) is None


@given(st.text(max_size=40), st.integers(0, 255), st.sampled_from([None, "", "FR", "US", "ZZ", "fr"]))
def test_normalize_source_never_raises(address, ton, region):
    result = normalize_source(address, ton, region)
    assert result is None or (result.startswith("+") and result[1:].isdigit())


# --- reassembly ------------------------------------------------------------------------------


def test_reassembler_joins_in_sequence_order():
    reassembler = Reassembler(task.Clock())
    assert reassembler.add("k", 3, 3, "c") is None
    assert reassembler.add("k", 3, 1, "a") is None
    assert reassembler.pending == 1
    assert reassembler.add("k", 3, 2, "b") == "abc"
    assert reassembler.pending == 0


def test_reassembler_single_part_passes_through():
    reassembler = Reassembler(task.Clock())
    assert reassembler.add("k", 1, 1, "whole") == "whole"
    assert reassembler.pending == 0


def test_reassembler_ignores_duplicate_parts():
    reassembler = Reassembler(task.Clock())
    assert reassembler.add("k", 2, 1, "a") is None
    assert reassembler.add("k", 2, 1, "X") is None
    assert reassembler.add("k", 2, 2, "b") == "ab"


def test_reassembler_keeps_messages_apart_by_key_and_total():
    reassembler = Reassembler(task.Clock())
    assert reassembler.add("k", 2, 1, "a") is None
    assert reassembler.add("j", 2, 2, "B") is None
    assert reassembler.add("k", 3, 2, "x") is None
    assert reassembler.pending == 3
    assert reassembler.add("k", 2, 2, "b") == "ab"


def test_reassembler_expires_partial_messages():
    clock = task.Clock()
    reassembler = Reassembler(clock, timeout=300)
    with captured_logs() as events:
        reassembler.add("k", 2, 1, "secret text")
        clock.advance(299)
        assert reassembler.pending == 1
        clock.advance(1)
        assert reassembler.pending == 0
    assert [formatEvent(e) for e in events] == [
        "Dropped a partial message with 1 of 2 parts after 300s"]
    assert reassembler.add("k", 2, 2, "rest") is None
    assert reassembler.pending == 1


def test_reassembler_drops_the_oldest_over_max_pending():
    clock = task.Clock()
    reassembler = Reassembler(clock, max_pending=2)
    for key in ("first", "second", "third"):
        reassembler.add(key, 2, 1, key)
    assert reassembler.pending == 2
    assert len(clock.getDelayedCalls()) == 2
    assert reassembler.add("first", 2, 2, "!") is None
    assert reassembler.add("third", 2, 2, "!") == "third!"


def test_reassembler_completion_cancels_the_timer():
    clock = task.Clock()
    reassembler = Reassembler(clock)
    reassembler.add("k", 2, 1, "a")
    reassembler.add("k", 2, 2, "b")
    assert clock.getDelayedCalls() == []


def test_reassembler_stop_cancels_timers():
    clock = task.Clock()
    reassembler = Reassembler(clock)
    reassembler.add("k", 2, 1, "a")
    reassembler.add("j", 3, 1, "a")
    reassembler.stop()
    assert reassembler.pending == 0
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("total, sequence", [(2, 0), (2, 3), (0, 0), (256, 1)])
def test_reassembler_refuses_impossible_parts(total, sequence):
    with pytest.raises(ValueError):
        Reassembler(task.Clock()).add("k", total, sequence, "x")


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"max_pending": 0}])
def test_reassembler_refuses_silly_limits(kwargs):
    with pytest.raises(ValueError):
        Reassembler(task.Clock(), **kwargs)


# --- dispatch: receipts -------------------------------------------------------------------


def test_recording_doubles_provide_the_interfaces():
    assert verifyObject(IMOReceiver, RecordingMOReceiver())
    assert verifyObject(IReceiptReceiver, RecordingReceiptReceiver())


def test_tlv_and_text_receipts_give_the_same_receipt():
    dispatcher, mo, receipts, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(
        receipted_message_id="1A2B", message_state=2, network_error_code=b"\x03\x00\x00"))
    dispatcher.pduReceived(deliver_sm(esm_class=0x04, short_message=RECEIPT_TEXT.encode()))
    expected = DeliveryReceipt(CARRIER, "1a2b", frozenset({"1a2b"}), "DELIVRD", "000")
    assert receipts.receipts == [expected, expected]
    assert (dispatcher.receipt_count, dispatcher.mo_count, dispatcher.dropped_count) == (2, 0, 0)
    assert mo.messages == []


def test_receipt_in_decimal_matches_a_hex_submit_id():
    """receipt_id_format = "hex-to-decimal": the submit gave 1A2B, the receipt says 6699."""
    dispatcher, _, receipts, _ = make_dispatcher(receipt_id_format="hex-to-decimal")
    dispatcher.pduReceived(deliver_sm(esm_class=0x04, short_message=b"id:6699 stat:UNDELIV err:001"))
    dispatcher.pduReceived(deliver_sm(receipted_message_id="6699", message_state=5))
    assert [r.failed for r in receipts.receipts] == [True, True]
    assert {r.message_id for r in receipts.receipts} == {normalize_message_id("1A2B")}
    assert {r.aliases for r in receipts.receipts} == {frozenset({"1a2b"})}


def test_receipt_in_hex_matches_a_decimal_submit_id():
    """receipt_id_format = "decimal-to-hex": the submit gave 6699, the receipt says 1A2B."""
    dispatcher, _, receipts, _ = make_dispatcher(receipt_id_format="decimal-to-hex")
    dispatcher.pduReceived(deliver_sm(esm_class=0x04, short_message=b"id:1A2B stat:DELIVRD"))
    dispatcher.pduReceived(deliver_sm(receipted_message_id="0001a2b", message_state=2))
    assert [(r.message_id, r.aliases) for r in receipts.receipts] == [
        ("6699", frozenset({"6699"}))] * 2


def test_as_is_receipts_name_their_own_id_only():
    """By default a decimal-looking id names no hex submit, and the other way round."""
    dispatcher, _, receipts, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(esm_class=0x04, short_message=b"id:6699 stat:DELIVRD"))
    dispatcher.pduReceived(deliver_sm(receipted_message_id="001A2B", message_state=2))
    assert [r.aliases for r in receipts.receipts] == [frozenset({"6699"}), frozenset({"1a2b"})]


def test_receipt_unreadable_in_the_declared_format_is_dropped():
    dispatcher, mo, receipts, _ = make_dispatcher(receipt_id_format="hex-to-decimal")
    with captured_logs() as events:
        dispatcher.pduReceived(deliver_sm(esm_class=0x04, short_message=b"id:1a2b stat:DELIVRD"))
    assert receipts.receipts == [] and mo.messages == []
    assert dispatcher.dropped_count == 1
    assert "receipt_id_format 'hex-to-decimal'" in " ".join(formatEvent(e) for e in events)


def first_record(records: dict[bytes, int], receipt: DeliveryReceipt) -> int | None:
    """What the store's receipt lookup finds for C{receipt}: the record under the
    first of its keys that holds one (see msisdnd.state.sessions._RECEIPT)."""
    found = keys.message_keys(receipt.carrier, receipt.aliases)
    for key in found[:len(found) // 2]:
        if key in records:
            return records[key]
    return None


@pytest.mark.parametrize("receipt_id_format, submit_form, receipt_form", [
    ("as-is", str, str),
    ("hex-to-decimal", lambda n: format(n, "X"), str),
    ("decimal-to-hex", str, lambda n: format(n, "x")),
])
def test_sequential_ids_each_match_their_own_message(receipt_id_format, submit_form,
                                                     receipt_form):
    """5000 messages live with ids 1..5000, a receipt for each: every receipt finds
    its own message (looking up every reading of the ids, 1145 found another)."""
    count = 5000
    # What recordSent keeps: one record per submit, under its normalized id.
    records = {keys.message_keys(CARRIER, {normalize_message_id(submit_form(n))})[0]: n
               for n in range(1, count + 1)}
    dispatcher, _, receipts, _ = make_dispatcher(receipt_id_format=receipt_id_format)
    for n in range(1, count + 1):
        quoted = receipt_form(n)
        if n % 2:
            dispatcher.pduReceived(deliver_sm(receipted_message_id=quoted, message_state=2))
        else:
            dispatcher.pduReceived(deliver_sm(esm_class=0x04,
                                              short_message=f"id:{quoted} stat:DELIVRD".encode()))
    assert len(receipts.receipts) == count
    found = [first_record(records, receipt) for receipt in receipts.receipts]
    mismatched = [(n, got) for n, got in enumerate(found, 1) if got != n]
    assert len(mismatched) == 0, mismatched[:5]


def test_dispatcher_refuses_unknown_formats():
    with pytest.raises(ValueError, match="receipt_id_format"):
        make_dispatcher(receipt_id_format="hex")
    with pytest.raises(ValueError, match="mo_charset"):
        make_dispatcher(mo_charset="utf8")


def test_delivery_receipt_is_looked_up_under_its_one_id():
    with pytest.raises(ValueError):
        DeliveryReceipt(CARRIER, "10", frozenset({"10", "16"}), "DELIVRD")


def test_sme_acknowledgement_and_data_sm_receipts():
    dispatcher, _, receipts, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(esm_class=0x08, short_message=b"id:5 stat:ACCEPTD"))
    dispatcher.pduReceived(data_sm(esm_class=0x04, message_payload=b"id:6 stat:EXPIRED err:027"))
    assert [(r.message_id, r.state, r.error) for r in receipts.receipts] == [
        ("5", "ACCEPTD", None), ("6", "EXPIRED", "027")]


@pytest.mark.parametrize("esm_class", [
    0x04,  # SMSC delivery receipt
    0x08,  # SME delivery acknowledgement
    0x10,  # SME manual/user acknowledgement
    0x20,  # intermediate delivery notification
    0x20 | 0x03,  # with messaging-mode bits, which are no part of the type
])
def test_every_receipt_type_is_a_receipt_with_its_state(esm_class):
    """Each message type but 0 that reports on a message goes to the receipt receiver,
    its state (ENROUTE here) kept, even without receipt TLVs."""
    dispatcher, mo, receipts, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(
        esm_class=esm_class,
        short_message=b"id:42 sub:001 dlvrd:000 submit date:2401011200 "
                      b"done date:2401011201 stat:ENROUTE err:000 text:Your code"))
    assert [(r.message_id, r.state, r.error) for r in receipts.receipts] == [
        ("42", "ENROUTE", "000")]
    assert mo.messages == []
    assert (dispatcher.receipt_count, dispatcher.mo_count, dispatcher.dropped_count) == (1, 0, 0)


def test_intermediate_notification_keeps_enroute_from_its_tlv():
    dispatcher, mo, receipts, _ = make_dispatcher()
    dispatcher.pduReceived(data_sm(esm_class=0x20, receipted_message_id="2a", message_state=1))
    assert [(r.message_id, r.state, r.failed) for r in receipts.receipts] == [
        ("2a", "ENROUTE", False)]
    assert mo.messages == []


@pytest.mark.parametrize("esm_class", [0x18, 0x0C, 0x3C])
def test_other_message_types_are_neither_mo_nor_receipts(esm_class):
    """Only type 0 is handset text; a conversation abort (0x18) or an undefined type
    is dropped."""
    dispatcher, mo, receipts, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(esm_class=esm_class, short_message=b"hi"))
    assert mo.messages == [] and receipts.receipts == []
    assert dispatcher.dropped_count == 1


def test_message_type_zero_is_mo_whatever_the_other_bits():
    dispatcher, mo, receipts, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(esm_class=0x03, short_message=b"hi"))
    dispatcher.pduReceived(deliver_sm(esm_class=0x80, short_message=b"there"))
    assert [m.text for m in mo.messages] == ["hi", "there"]
    assert receipts.receipts == []


def test_message_state_alone_marks_a_receipt():
    dispatcher, mo, receipts, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(message_state=3, short_message=b"id:77 stat:EXPIRED"))
    assert [(r.message_id, r.state) for r in receipts.receipts] == [("77", "EXPIRED")]
    assert mo.messages == []


def test_unusable_receipt_is_dropped():
    dispatcher, mo, receipts, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(esm_class=0x04, short_message=b"not a receipt"))
    assert receipts.receipts == [] and mo.messages == []
    assert dispatcher.dropped_count == 1


# --- dispatch: MO --------------------------------------------------------------------------


def test_mo_single_part():
    dispatcher, mo, receipts, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(short_message=b"/sms/momt/verify abc"))
    assert mo.messages == [MOMessage(CARRIER, "+33612345678", OUR_NUMBER, "/sms/momt/verify abc")]
    assert (dispatcher.mo_count, dispatcher.receipt_count, dispatcher.dropped_count) == (1, 0, 0)
    assert receipts.receipts == []


def test_mo_gsm_text_is_decoded():
    dispatcher, mo, _, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(short_message="5€ @ §".encode("gsm03.38")))
    assert mo.messages[0].text == "5€ @ §"


@pytest.mark.parametrize("mo_charset, payload, text", [
    ("gsm7", b"user@example", "user\u00a1example"),
    ("ascii", b"user@example", "user@example"),
    ("latin1", b"user@example", "user@example"),
    ("ascii", b"50$ a_b {x}", "50$ a_b {x}"),
    ("latin1", b"caf\xe9", "caf\u00e9"),
    ("ascii", b"caf\xe9", "caf\ufffd"),
])
def test_mo_charset_reads_data_coding_0(mo_charset, payload, text):
    dispatcher, mo, _, _ = make_dispatcher(mo_charset=mo_charset)
    dispatcher.pduReceived(deliver_sm(data_coding=0, short_message=payload))
    assert [m.text for m in mo.messages] == [text]


def test_mo_charset_reads_data_coding_0_parts_too():
    dispatcher, mo, _, _ = make_dispatcher(mo_charset="ascii")
    for sequence, body in [(2, b"example.org"), (1, b"user@")]:
        dispatcher.pduReceived(deliver_sm(esm_class=0x40, short_message=udh8(5, 2, sequence) + body))
    assert [m.text for m in mo.messages] == ["user@example.org"]


@pytest.mark.parametrize("mo_charset", MO_CHARSETS)
@pytest.mark.parametrize("data_coding, payload, text", [
    (0xF0, b"a@b", "a\u00a1b"),  # the class variant names GSM 7-bit itself
    (1, b"a@b", "a@b"),
    (3, b"a@\xe9", "a@\u00e9"),
    (8, "a@é".encode("utf-16-be"), "a@é"),
])
def test_mo_charset_leaves_other_data_codings_alone(mo_charset, data_coding, payload, text):
    assert decode_mo_text(data_coding, payload, mo_charset) == text


def test_decode_mo_text_refuses_an_unknown_charset():
    with pytest.raises(ValueError, match="mo_charset"):
        decode_mo_text(0, b"x", "utf8")


def test_mo_ucs2():
    dispatcher, mo, _, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(data_coding=8, short_message="Код 😀".encode("utf-16-be")))
    assert mo.messages[0].text == "Код 😀"


def test_mo_in_message_payload():
    dispatcher, mo, _, _ = make_dispatcher()
    dispatcher.pduReceived(data_sm(message_payload=b"long text" * 40))
    assert mo.messages[0].text == "long text" * 40


def test_mo_8bit_udh_parts_out_of_order():
    dispatcher, mo, _, _ = make_dispatcher()
    for sequence, body in [(3, b"three"), (1, b"one "), (2, b"two ")]:
        dispatcher.pduReceived(deliver_sm(esm_class=0x40, short_message=udh8(42, 3, sequence) + body))
    assert mo.messages == [MOMessage(CARRIER, "+33612345678", OUR_NUMBER, "one two three")]
    assert dispatcher.mo_count == 1
    assert dispatcher.pending == 0


def test_mo_16bit_udh():
    dispatcher, mo, _, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(esm_class=0x40, short_message=udh16(0x1234, 2, 2) + b"world"))
    assert mo.messages == []
    dispatcher.pduReceived(deliver_sm(esm_class=0x40, short_message=udh16(0x1234, 2, 1) + b"hello "))
    assert [m.text for m in mo.messages] == ["hello world"]


def test_mo_ucs2_parts():
    dispatcher, mo, _, _ = make_dispatcher()
    for sequence, text in [(2, "мир 😀"), (1, "привет ")]:
        dispatcher.pduReceived(deliver_sm(
            esm_class=0x40, data_coding=8,
            short_message=udh8(7, 2, sequence) + text.encode("utf-16-be")))
    assert [m.text for m in mo.messages] == ["привет мир 😀"]


def test_mo_sar_tlvs():
    dispatcher, mo, _, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(short_message=b"second",
                                      sar_msg_ref_num=300, sar_total_segments=2, sar_segment_seqnum=2))
    assert dispatcher.pending == 1
    dispatcher.pduReceived(deliver_sm(short_message=b"first ",
                                      sar_msg_ref_num=300, sar_total_segments=2, sar_segment_seqnum=1))
    assert [m.text for m in mo.messages] == ["first second"]


def test_mo_parts_from_different_senders_stay_apart():
    dispatcher, mo, _, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(esm_class=0x40, short_message=udh8(1, 2, 1) + b"a"))
    dispatcher.pduReceived(deliver_sm(source_addr="0699999999", esm_class=0x40,
                                      short_message=udh8(1, 2, 2) + b"b"))
    assert mo.messages == []
    assert dispatcher.pending == 2


def test_mo_national_and_international_forms_of_one_sender_reassemble():
    dispatcher, mo, _, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(source_addr="0612345678", esm_class=0x40,
                                      short_message=udh8(1, 2, 1) + b"a"))
    dispatcher.pduReceived(deliver_sm(source_addr="0033612345678", esm_class=0x40,
                                      short_message=udh8(1, 2, 2) + b"b"))
    assert [m.text for m in mo.messages] == ["ab"]


def test_mo_malformed_udh_is_delivered_as_single():
    dispatcher, mo, _, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(esm_class=0x40, short_message=udh8(1, 2, 3) + b"body"))
    assert [m.text for m in mo.messages] == ["body"]


def test_mo_reassembly_timeout():
    dispatcher, mo, _, clock = make_dispatcher(reassembly_timeout=60)
    dispatcher.pduReceived(deliver_sm(esm_class=0x40, short_message=udh8(9, 2, 1) + b"a"))
    clock.advance(60)
    assert dispatcher.pending == 0
    dispatcher.pduReceived(deliver_sm(esm_class=0x40, short_message=udh8(9, 2, 2) + b"b"))
    assert mo.messages == []
    assert dispatcher.pending == 1


def test_mo_max_pending():
    dispatcher, mo, _, clock = make_dispatcher(max_pending=2)
    for reference in (1, 2, 3):
        dispatcher.pduReceived(deliver_sm(esm_class=0x40, short_message=udh8(reference, 2, 1) + b"a"))
    assert dispatcher.pending == 2
    dispatcher.pduReceived(deliver_sm(esm_class=0x40, short_message=udh8(1, 2, 2) + b"b"))
    assert mo.messages == []
    dispatcher.stop()
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("address, ton, region, source", [
    ("0612345678", 0, "FR", "+33612345678"),
    ("0033612345678", 0, "FR", "+33612345678"),
    ("+33612345678", 0, None, "+33612345678"),
    ("33612345678", 1, None, "+33612345678"),
    ("ACME", 5, "FR", "ACME"),  # alphanumeric: kept as given
    ("0612345678", 0, None, "0612345678"),  # no region: kept as given
])
def test_mo_source_normalization(address, ton, region, source):
    dispatcher, mo, _, _ = make_dispatcher(region=region)
    dispatcher.pduReceived(deliver_sm(source_addr=address, source_addr_ton=ton, short_message=b"hi"))
    assert [m.source for m in mo.messages] == [source]


def test_mo_without_source_is_dropped():
    dispatcher, mo, _, _ = make_dispatcher()
    dispatcher.pduReceived(deliver_sm(source_addr="", short_message=b"hi"))
    assert mo.messages == []
    assert dispatcher.dropped_count == 1


def test_no_receivers_means_dropped():
    dispatcher = InboundDispatcher(CARRIER, "FR", None, None, task.Clock())
    dispatcher.pduReceived(deliver_sm(short_message=b"hi"))
    dispatcher.pduReceived(deliver_sm(esm_class=0x04, short_message=b"id:1 stat:DELIVRD"))
    assert (dispatcher.mo_count, dispatcher.receipt_count, dispatcher.dropped_count) == (0, 0, 2)


def test_other_commands_are_dropped():
    dispatcher, mo, receipts, _ = make_dispatcher()
    dispatcher.pduReceived(codec.PDU(codec.ENQUIRE_LINK, 0, 1))
    dispatcher.pduReceived(codec.PDU(codec.SUBMIT_SM_RESP, 0, 1, {"message_id": "1"}))
    assert dispatcher.dropped_count == 2
    assert mo.messages == [] and receipts.receipts == []


# --- dispatch: failing receivers -----------------------------------------------------------


@pytest.mark.parametrize("result", [raise_error, failed_deferred])
def test_failing_mo_receiver_is_logged_masked(result):
    dispatcher, mo, _, _ = make_dispatcher(mo=RecordingMOReceiver(result))
    with captured_logs() as events:
        dispatcher.pduReceived(deliver_sm(short_message=b"secret 123456"))
        dispatcher.pduReceived(deliver_sm(short_message=b"again"))
    assert [m.text for m in mo.messages] == ["secret 123456", "again"]
    assert dispatcher.mo_count == 2
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 2
    assert all(e["log_failure"].check(RuntimeError) for e in failures)
    logged = " ".join(formatEvent(e) + repr(e) for e in events)
    assert "+3361XXXXXXX" in logged
    assert "612345678" not in logged
    assert "secret" not in logged


@pytest.mark.parametrize("result", [raise_error, failed_deferred])
def test_failing_receipt_receiver_is_logged(result):
    dispatcher, _, receipts, _ = make_dispatcher(receipts=RecordingReceiptReceiver(result))
    with captured_logs() as events:
        dispatcher.pduReceived(deliver_sm(esm_class=0x04, short_message=b"id:1 stat:DELIVRD"))
        dispatcher.pduReceived(deliver_sm(esm_class=0x04, short_message=b"id:2 stat:DELIVRD"))
    assert [r.message_id for r in receipts.receipts] == ["1", "2"]
    assert len([e for e in events if "log_failure" in e]) == 2


def test_receiver_returning_a_deferred():
    waiting = defer.Deferred()
    dispatcher, mo, _, _ = make_dispatcher(mo=RecordingMOReceiver(lambda: waiting))
    dispatcher.pduReceived(deliver_sm(short_message=b"hi"))
    with captured_logs() as events:
        waiting.errback(RuntimeError("late"))
    assert len(mo.messages) == 1
    assert [e["log_failure"].value.args for e in events if "log_failure" in e] == [("late",)]


# --- dispatch: junk ----------------------------------------------------------------------

FIELD_NAMES = [
    "source_addr", "destination_addr", "source_addr_ton", "esm_class", "data_coding",
    "short_message", "message_payload", "receipted_message_id", "message_state",
    "network_error_code", "sar_msg_ref_num", "sar_total_segments", "sar_segment_seqnum",
]
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=30),
    st.binary(max_size=60), st.lists(st.integers(), max_size=3), st.floats(),
)


def check_handled(dispatcher, mo, receipts, pdu) -> None:
    """C{pdu} is handled without raising and without hitting the catch-all."""
    before = dispatcher.mo_count + dispatcher.receipt_count + dispatcher.dropped_count
    with captured_logs() as events:
        assert dispatcher.pduReceived(pdu) is None
    after = dispatcher.mo_count + dispatcher.receipt_count + dispatcher.dropped_count
    assert after - before in (0, 1)
    assert [e for e in events if "log_failure" in e] == []
    assert len(mo.messages) == dispatcher.mo_count
    assert len(receipts.receipts) == dispatcher.receipt_count


@given(st.sampled_from([codec.DELIVER_SM, codec.DATA_SM]),
       st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=10)), ANY_VALUE,
                       max_size=12))
def test_random_fields_never_raise(command_id, fields):
    dispatcher, mo, receipts, _ = make_dispatcher()
    check_handled(dispatcher, mo, receipts, codec.PDU(command_id, 0, 1, fields))


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=160),
                          st.sampled_from(["0612345678", "+33612345678", "ACME", "", "0"])),
                min_size=1, max_size=8),
       st.sampled_from(RECEIPT_ID_FORMATS), st.sampled_from(MO_CHARSETS))
def test_random_payloads_never_raise(pdus, receipt_id_format, mo_charset):
    dispatcher, mo, receipts, _ = make_dispatcher(receipt_id_format=receipt_id_format,
                                                  mo_charset=mo_charset)
    for esm_class, data_coding, payload, source in pdus:
        pdu = codec.PDU(codec.DELIVER_SM, 0, 1, {
            "source_addr": source, "destination_addr": OUR_NUMBER, "source_addr_ton": 0,
            "esm_class": esm_class, "data_coding": data_coding, "short_message": payload})
        check_handled(dispatcher, mo, receipts, pdu)
