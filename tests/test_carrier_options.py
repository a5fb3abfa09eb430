"""The per-carrier submit_sm options on the wire, and the PDU trace.

Each option is checked by decoding the submit_sm the carrier writes: a real
Carrier and real ESMESessions over StringTransports (the pattern of
tests/test_carrier_unit.py), a task.Clock, PDUs from msisdnd's codec.  The
trace is checked through the real wiring too: an SMPPBind that connects,
binds and sends on a MemoryReactorClock.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from twisted.internet import task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from msisdnd.sms.interfaces import OutboundSMS
from msisdnd.smpp import codec
from msisdnd.smpp.bind import SMPPBind
from msisdnd.smpp.carrier import Carrier
from msisdnd.smpp.config import CarrierConfig
from msisdnd.smpp.session import ESMESession, SessionState

from pdus import take_pdus

NUMBER = "+33612345678"
PIN = "482913"
TEXT = f"Your code: {PIN}"
#: 2026-11-30 16:50:33.37 UTC, as the carrier's clock reads it.
NOW = datetime(2026, 11, 30, 16, 50, 33, tzinfo=timezone.utc).timestamp() + 0.37


class Link:
    """One bound transceiver session of a carrier, over a StringTransport."""

    def __init__(self, clock, carrier: Carrier):
        self.session = ESMESession(clock, window=10, response_timeout=5.0,
                                   enquire_link_interval=1000.0)
        self.transport = StringTransportWithDisconnection()
        self.transport.protocol = self.session
        self.session.makeConnection(self.transport)
        self.session.mode = "transceiver"
        self.session.state = SessionState.BOUND
        carrier.bindUp(None, self.session)

    def written(self) -> list[codec.PDU]:
        """Every PDU the session wrote since the last call, decoded."""
        return take_pdus(self.transport)

    def answer(self, pdu: codec.PDU, body: bytes = b"1a2b\0", status: int = 0) -> None:
        self.session.dataReceived(
            codec.frame(pdu.command_id | codec.RESPONSE_BIT, pdu.sequence, body, status))


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(NOW)
    return c


@pytest.fixture
def events():
    """Every log event emitted while the test runs."""
    seen = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def config(**overrides) -> CarrierConfig:
    return CarrierConfig.from_mapping({
        "name": "c", "host": "127.0.0.1", "system_id": "esme", "password": "pw",
        "default": True, **overrides}, "carrier[c]")


def submits(clock, text: str = TEXT, sender: str | None = None, **overrides) -> list[codec.PDU]:
    """The submit_sm PDUs a carrier with C{overrides} writes for one message."""
    carrier = Carrier(config(**overrides), clock)
    link = Link(clock, carrier)
    carrier.send(OutboundSMS(NUMBER, text, validity=600, sender=sender))
    written = link.written()
    assert written and all(p.command == "submit_sm" for p in written)
    return written


def trace_lines(events) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_namespace") == "msisdnd.smpp.trace"]


# -- defaults: the wire as it always was ------------------------------------------------


def test_defaults_send_what_they_always_did(clock):
    [pdu] = submits(clock, mt_sender="msisdnd")
    f = pdu.fields
    assert (f["source_addr_ton"], f["source_addr_npi"], f["source_addr"]) == (5, 0, "msisdnd")
    assert (f["dest_addr_ton"], f["dest_addr_npi"], f["destination_addr"]) == (
        1, 1, "33612345678")
    assert (f["service_type"], f["priority_flag"], f["data_coding"]) == ("", 0, 0)
    assert f["validity_period"] == "000000001000000R"
    assert f["registered_delivery"] == 1


def test_a_numeric_sender_still_goes_international_by_default(clock):
    [pdu] = submits(clock, mt_sender="+33700000001")
    f = pdu.fields
    assert (f["source_addr_ton"], f["source_addr_npi"], f["source_addr"]) == (
        1, 1, "33700000001")


# -- source_ton / source_npi / dest_ton / dest_npi ----------------------------------------


def test_a_short_code_goes_network_specific(clock):
    [pdu] = submits(clock, mt_sender="12345", source_ton=3, source_npi=0)
    f = pdu.fields
    assert (f["source_addr_ton"], f["source_addr_npi"], f["source_addr"]) == (3, 0, "12345")
    assert (f["dest_addr_ton"], f["dest_addr_npi"]) == (1, 1)


def test_an_override_of_one_leaves_the_other_as_the_sender_implies(clock):
    [pdu] = submits(clock, mt_sender="12345", source_npi=9)
    assert (pdu.fields["source_addr_ton"], pdu.fields["source_addr_npi"]) == (1, 9)
    [pdu] = submits(clock, mt_sender="Acme", source_ton=0)
    assert (pdu.fields["source_addr_ton"], pdu.fields["source_addr_npi"]) == (0, 0)


def test_the_source_overrides_apply_to_a_message_s_own_sender(clock):
    [pdu] = submits(clock, mt_sender="12345", sender="+54321", source_ton=3, source_npi=0)
    f = pdu.fields
    assert (f["source_addr_ton"], f["source_addr_npi"], f["source_addr"]) == (3, 0, "54321")


def test_destination_ton_and_npi(clock):
    [pdu] = submits(clock, dest_ton=0, dest_npi=0)
    f = pdu.fields
    assert (f["dest_addr_ton"], f["dest_addr_npi"], f["destination_addr"]) == (
        0, 0, "33612345678")


# -- service_type, priority_flag ------------------------------------------------------------


def test_service_type_and_priority_flag(clock):
    [pdu] = submits(clock, service_type="CMT", priority_flag=3)
    assert (pdu.fields["service_type"], pdu.fields["priority_flag"]) == ("CMT", 3)


def test_the_longest_service_type_goes_whole(clock):
    [pdu] = submits(clock, service_type="VMA12")
    assert pdu.fields["service_type"] == "VMA12"


# -- data_coding ------------------------------------------------------------------------


def test_data_coding_1_for_gsm_text(clock):
    [pdu] = submits(clock, data_coding=1)
    assert pdu.fields["data_coding"] == 1
    assert pdu.fields["short_message"] == TEXT.encode("ascii")  # still GSM septets


def test_data_coding_1_in_every_part_of_a_long_gsm_text(clock):
    parts = submits(clock, text="x" * 200, data_coding=1)
    assert len(parts) == 2
    assert [p.fields["data_coding"] for p in parts] == [1, 1]
    assert all(p.fields["esm_class"] & 0x40 for p in parts)  # UDHI


def test_data_coding_1_leaves_ucs2_at_8(clock):
    [pdu] = submits(clock, text=f"Код: {PIN}", data_coding=1)
    assert pdu.fields["data_coding"] == 8


@pytest.mark.parametrize("alphabet, text, coding", [
    ("latin1", TEXT, 3),
    ("latin1", f"Код: {PIN}", 8),
    ("ucs2", TEXT, 8),
    ("gsm7", TEXT, 0),
])
def test_other_alphabets_keep_their_data_coding(clock, alphabet, text, coding):
    [pdu] = submits(clock, text=text, alphabet=alphabet)
    assert pdu.fields["data_coding"] == coding


# -- validity_format ----------------------------------------------------------------------


def test_absolute_validity_is_the_clock_plus_the_validity_in_utc(clock):
    [pdu] = submits(clock, validity_format="absolute")
    # 16:50:33.37 + 600 s = 17:00:33.37 UTC: tenths 3, offset 00, '+'.
    assert pdu.fields["validity_period"] == "261130170033300+"
    assert pdu.fields["validity_period"] == codec.absolute_validity(600, NOW)


def test_absolute_validity_is_kept_when_a_part_goes_again(clock):
    carrier = Carrier(config(validity_format="absolute"), clock)
    link = Link(clock, carrier)
    carrier.send(OutboundSMS(NUMBER, TEXT, validity=600))
    [first] = link.written()
    link.answer(first, b"", codec.ESME_RTHROTTLED)
    clock.advance(1.0)  # the throttle pause
    [again] = link.written()
    assert again.fields["validity_period"] == first.fields["validity_period"]


def test_no_validity_means_the_smsc_default_in_either_format(clock):
    for validity_format in ("relative", "absolute"):
        carrier = Carrier(config(validity_format=validity_format), clock)
        link = Link(clock, carrier)
        carrier.send(OutboundSMS(NUMBER, TEXT))
        [pdu] = link.written()
        assert pdu.fields.get("validity_period", "") == ""


# -- the trace ------------------------------------------------------------------------------


def assert_safe(lines_or_events) -> None:
    """No PIN, no whole number, one line each."""
    for item in lines_or_events:
        text = item if isinstance(item, str) else repr(item)
        assert PIN not in text
        assert "33612345678" not in text and "+33612345678" not in text
        assert "\n" not in (item if isinstance(item, str) else formatEvent(item))


def test_a_traced_session_logs_a_submit_and_its_response(clock, events):
    carrier = Carrier(config(trace=True, mt_sender="+33700000001"), clock)
    link = Link(clock, carrier)
    link.session.enableTrace("c/0")
    carrier.send(OutboundSMS(NUMBER, TEXT, validity=600))
    [submit] = link.written()
    link.answer(submit)
    traced = [e for e in events if e.get("log_namespace") == "msisdnd.smpp.trace"]
    assert all(e["log_level"] is LogLevel.debug for e in traced)
    sent, received = (formatEvent(e) for e in traced)
    assert sent.startswith(f"c/0 sent submit_sm seq={submit.sequence} status=ESME_ROK ")
    assert "source=1/1:+3370XXXXXXX" in sent
    assert "destination=1/1:+3361XXXXXXX" in sent
    assert "esm_class=0x00 data_coding=0" in sent
    assert f"short_message={len(TEXT)} octets (SMSC default alphabet)" in sent
    assert received == (f"c/0 received submit_sm_resp seq={submit.sequence} "
                        "status=ESME_ROK message_id=1a2b")
    assert_safe([sent, received])
    assert_safe(traced)  # nor in the event's other keys, which a JSON log writes out


def test_a_traced_error_response_says_its_status(clock, events):
    carrier = Carrier(config(), clock)
    link = Link(clock, carrier)
    link.session.enableTrace("c/0")
    outcome = []
    carrier.send(OutboundSMS(NUMBER, TEXT, validity=600)).addBoth(outcome.append)
    [submit] = link.written()
    link.answer(submit, b"", codec.status_code("ESME_RINVDSTADR"))
    assert outcome[0].value.status == codec.status_code("ESME_RINVDSTADR")
    assert trace_lines(events)[-1] == (f"c/0 received submit_sm_resp seq={submit.sequence} "
                                       "status=ESME_RINVDSTADR")


def test_a_traced_mo_is_masked_and_its_text_left_out(clock, events):
    carrier = Carrier(config(), clock)
    link = Link(clock, carrier)
    link.session.enableTrace("c/0")
    link.session.dataReceived(codec.encode(
        "deliver_sm", 9, source_addr="33612345678", source_addr_ton=1, source_addr_npi=1,
        destination_addr="33700000000", short_message=f"verify {PIN}".encode()))
    received, answered = trace_lines(events)
    assert received.startswith("c/0 received deliver_sm seq=9 status=ESME_ROK ")
    assert "source=1/1:+3361XXXXXXX" in received
    assert "destination=0/0:33700XXXXXX" in received
    assert f"short_message={len(f'verify {PIN}')} octets" in received
    assert answered == "c/0 sent deliver_sm_resp seq=9 status=ESME_ROK message_id="
    assert_safe([received, answered])


def test_an_undecodable_frame_is_traced_by_its_header_alone(clock, events):
    carrier = Carrier(config(), clock)
    link = Link(clock, carrier)
    link.session.enableTrace("c/0")
    link.session.dataReceived(codec.frame(codec.SUBMIT_SM, 4, f"{PIN}".encode()))
    lines = trace_lines(events)
    assert lines[0] == "c/0 received submit_sm seq=4 undecodable"
    assert lines[1].startswith("c/0 sent generic_nack seq=4 status=")
    assert_safe(lines)


def test_without_trace_nothing_is_logged_per_pdu(clock, events):
    carrier = Carrier(config(), clock)
    link = Link(clock, carrier)
    for _ in range(3):
        carrier.send(OutboundSMS(NUMBER, TEXT, validity=600))
    for submit in link.written():
        link.answer(submit)
    link.session.dataReceived(codec.encode(
        "deliver_sm", 9, source_addr="33612345678", destination_addr="33700000000",
        short_message=b"hello"))
    assert link.written()[0].command == "deliver_sm_resp"
    assert carrier.sent == 3
    assert trace_lines(events) == []
    assert [formatEvent(e) for e in events if e["log_level"] is LogLevel.debug] == []
    # The hot path is the class's own: nothing swapped in on this instance.
    assert not ({"_send", "send", "pduReceived", "undecodable", "lean_command"}
                & set(vars(link.session)))


class _Endpointless:
    """An SMPPBind on a MemoryReactorClock that the test connects by hand."""

    def __init__(self, **overrides):
        self.reactor = MemoryReactorClock()
        self.reactor.advance(NOW)
        self.config = config(**overrides)
        self.carrier = Carrier(self.config, self.reactor)
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", 2775)
        self.bind = SMPPBind("c/0", self.config.session_specs[0], self.config, endpoint,
                             self.reactor, self.carrier)
        self.bind.startService()
        protocol = self.reactor.tcpClients[-1][2].buildProtocol(None)
        self.transport = StringTransportWithDisconnection()
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)

    def take(self) -> list[codec.PDU]:
        data, pdus = self.transport.value(), []
        self.transport.clear()
        while data:
            length = codec.read_header(data)[0]
            pdus.append(codec.decode(data[:length]))
            data = data[length:]
        return pdus

    def feed(self, data: bytes) -> None:
        self.transport.protocol.dataReceived(data)


@pytest.mark.parametrize("trace", [True, False])
def test_the_bind_traces_its_sessions_when_the_carrier_says_so(events, trace):
    h = _Endpointless(trace=trace, password="hunter2")
    [bind] = h.take()
    assert bind.command == "bind_transceiver"
    h.feed(codec.encode("bind_transceiver_resp", bind.sequence, system_id="SMSC"))
    assert h.carrier.bound
    h.carrier.send(OutboundSMS(NUMBER, TEXT, validity=600))
    [submit] = h.take()
    h.feed(codec.frame(codec.SUBMIT_SM_RESP, submit.sequence, b"77\0"))
    assert h.carrier.sent == 1
    lines = trace_lines(events)
    if not trace:
        assert lines == []
        return
    assert [line.split(" seq=")[0] for line in lines] == [
        "c/0 sent bind_transceiver", "c/0 received bind_transceiver_resp",
        "c/0 sent submit_sm", "c/0 received submit_sm_resp"]
    assert "system_id=esme" in lines[0] and "system_id=SMSC" in lines[1]
    assert lines[3].endswith("message_id=77")
    assert_safe(lines)
    assert not any("hunter2" in repr(e) for e in events)  # the bind's password
