"""The carrier side end to end: binds, queue, window, retries, failover.

Every test runs msisdnd's ESME stack against the fake SMSC over real TCP on
loopback.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from zope.interface import implementer

from msisdnd.sms.interfaces import (
    IMOReceiver,
    IReceiptReceiver,
    NoRouteError,
    OutboundSMS,
    RejectedError,
    SendTimeoutError,
)
from msisdnd.smpp import codec
from msisdnd.smpp.bind import BindState
from msisdnd.smpp.config import CarrierConfig
from msisdnd.sms.message_ids import message_id_aliases, normalize_message_id
from msisdnd.smpp.service import CarriersService

from conftest import wait_until

CREDENTIALS = {"msisdnd": "secret"}


def carrier_config(port: int, **overrides) -> CarrierConfig:
    values = {
        "name": "test", "host": "127.0.0.1", "port": port,
        "system_id": "msisdnd", "password": "secret", "mt_sender": "Verify",
        "default": True, "reconnect_delay_initial": 0.05, "reconnect_delay_max": 0.2,
        "response_timeout": 2.0, "throttle_pause": 0.05, "throttle_pause_max": 0.2,
    }
    values.update(overrides)
    return CarrierConfig.from_mapping(values, "carrier[test]")


@implementer(IMOReceiver, IReceiptReceiver)
class Recorder:
    """Keeps what the carrier side delivers."""

    def __init__(self):
        self.mo = []
        self.receipts = []

    def moReceived(self, message):
        self.mo.append(message)

    def receiptReceived(self, receipt):
        self.receipts.append(receipt)


@pytest.fixture
def services():
    """Start CarriersService instances; every one is stopped after the test."""
    started: list[CarriersService] = []

    def start(configs, **kwargs) -> CarriersService:
        service = CarriersService(configs, reactor, **kwargs)
        service.startService()
        started.append(service)
        return service

    yield start
    for service in started:
        if service.running:
            pytest_twisted.blockon(service.stopService())


def bound(service: CarriersService, count: int | None = None):
    want = len(service.binds) if count is None else count
    return wait_until(lambda: sum(b.state is BindState.BOUND for b in service.binds) >= want)


def sms(text: str = "Your code: 123456", to: str = "+33612345678", **kw) -> OutboundSMS:
    return OutboundSMS(destination=to, text=text, **kw)


@pytest.mark.parametrize("mode", ["transmitter", "receiver", "transceiver"])
@pytest_twisted.inlineCallbacks
def test_bind_each_mode(smsc_factory, services, mode):
    """Each bind mode binds, and the SMSC sees the mode we asked for."""
    harness = smsc_factory(credentials=CREDENTIALS)
    service = services([carrier_config(harness.portNumber, bind=mode,
                                       default=mode != "receiver")])
    yield bound(service)
    assert [s.mode for s in harness.smsc.bound] == [mode]
    assert service.router.available() is (mode != "receiver")


@pytest_twisted.inlineCallbacks
def test_separate_transmitter_and_receiver_binds(smsc_factory, services):
    """A carrier with TX and RX on their own ports and accounts: MT goes out on
    the transmitter, MO comes in on the receiver."""
    tx = smsc_factory(credentials={"tx-account": "txpw"})
    rx = smsc_factory(credentials={"rx-account": "rxpw"})
    recorder = Recorder()
    config = carrier_config(tx.portNumber, system_id="tx-account", password="txpw", sessions=[
        {"bind": "transmitter"},
        {"bind": "receiver", "port": rx.portNumber, "system_id": "rx-account", "password": "rxpw"},
    ], binds=2)
    service = services([config], mo_receiver=recorder)
    yield bound(service, 4)
    assert sorted(s.mode for s in tx.smsc.bound) == ["transmitter"] * 2
    assert sorted(s.mode for s in rx.smsc.bound) == ["receiver"] * 2
    result = yield service.router.send(sms())
    assert len(result.message_ids) == 1 and tx.smsc.received("+33612345678")
    yield rx.smsc.deliverMO("+33612345678", "1234", "/sms/momt/verify abc")
    yield wait_until(lambda: recorder.mo)
    assert recorder.mo[0].text == "/sms/momt/verify abc"


@pytest_twisted.inlineCallbacks
def test_wrong_password_retries_with_growing_backoff(smsc_factory, services):
    """A refused bind is logged with its status and retried with backoff, never in a hot loop."""
    harness = smsc_factory(credentials={"msisdnd": "other"})
    attempts = []
    original = harness.smsc.checkLogin

    def checkLogin(system_id, password):
        attempts.append(reactor.seconds())
        return original(system_id, password)

    harness.smsc.checkLogin = checkLogin
    service = services([carrier_config(harness.portNumber, reconnect_delay_initial=0.05,
                                       reconnect_delay_max=0.4)])
    yield wait_until(lambda: len(attempts) >= 4)
    bind = service.binds[0]
    assert bind.state is not BindState.BOUND
    assert bind.last_bind_status == codec.ESME_RINVPASWD
    assert bind.bind_failures >= 3
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert gaps[-1] > gaps[0], gaps
    assert not service.router.available()


def test_already_bound_waits_longer():
    """ESME_RALYBND stretches the retry delay to already_bound_delay."""
    config = carrier_config(2775, already_bound_delay=30.0)
    service = CarriersService([config], reactor)
    bind = service.binds[0]
    assert bind._retryDelay(1) < 1.0
    bind.last_bind_status = codec.ESME_RALYBND
    assert bind._retryDelay(1) >= 30.0


@pytest_twisted.inlineCallbacks
def test_submit_returns_message_id_and_fields(smsc_factory, services):
    """submit_sm carries E.164 digits TON 1/NPI 1, an alphanumeric sender 5/0,
    registered_delivery 1 and the validity the caller asked for."""
    harness = smsc_factory(credentials=CREDENTIALS)
    seen = []
    original = harness.smsc.accepted

    def accepted(session, pdu, message_id):
        seen.append(pdu.fields)
        original(session, pdu, message_id)

    harness.smsc.accepted = accepted
    service = services([carrier_config(harness.portNumber)])
    yield bound(service)
    result = yield service.router.send(sms(validity=600))
    stored = harness.smsc.received("+33612345678")
    assert result.carrier == "test"
    assert list(result.message_ids) == stored[0].message_ids
    assert stored[0].text == "Your code: 123456"
    f = seen[0]
    assert (f["destination_addr"], f["dest_addr_ton"], f["dest_addr_npi"]) == ("33612345678", 1, 1)
    assert (f["source_addr"], f["source_addr_ton"], f["source_addr_npi"]) == ("Verify", 5, 0)
    assert f["registered_delivery"] == 1
    assert f["validity_period"] == "000000001000000R"
    assert f["data_coding"] == 0


@pytest_twisted.inlineCallbacks
def test_window_fills_and_drains(smsc_factory, services):
    """No more than `window` submits are outstanding; all are answered in the end."""
    harness = smsc_factory(credentials=CREDENTIALS)
    harness.smsc.faults.response_delay = 0.05
    service = services([carrier_config(harness.portNumber, window=4)])
    yield bound(service)
    carrier = service.carriers[0]
    peak = []
    sends = [service.router.send(sms(to=f"+3361234{i:04d}")) for i in range(20)]
    peak.append(carrier.in_flight)
    assert carrier.in_flight == 4 and carrier.queue_depth == 16

    def watch():
        peak.append(carrier.in_flight)
        return carrier.queue_depth == 0 and carrier.in_flight == 0

    yield wait_until(watch, interval=0.001)
    results = yield gatherResults(sends)
    assert max(peak) == 4
    assert len({r.message_ids[0] for r in results}) == 20
    assert len(harness.smsc.messages) == 20


@pytest_twisted.inlineCallbacks
def test_response_timeout_requeues_and_keeps_the_session(smsc_factory, services):
    """A submit with no response times out, goes out again, and the session stays up."""
    harness = smsc_factory(credentials=CREDENTIALS)
    harness.smsc.faults.never_respond = True
    service = services([carrier_config(harness.portNumber, response_timeout=0.2)],
                       send_timeout=5.0)
    yield bound(service)
    session = service.binds[0].session
    d = service.router.send(sms())
    yield wait_until(lambda: harness.smsc.submit_count >= 1)
    harness.smsc.faults.never_respond = False
    result = yield d
    assert harness.smsc.submit_count >= 2  # at-least-once: the first copy was never answered
    assert result.message_ids
    assert service.binds[0].session is session and service.binds[0].reconnects == 0
    assert service.carriers[0].errors["ResponseTimeout"] >= 1


@pytest_twisted.inlineCallbacks
def test_silent_peer_is_detected_by_enquire_link(smsc_factory, services):
    """An SMSC that stops answering is declared dead after enquire_link goes unanswered."""
    harness = smsc_factory(credentials=CREDENTIALS)
    service = services([carrier_config(harness.portNumber, enquire_link_interval=0.1,
                                       response_timeout=0.1)])
    yield bound(service)
    first = service.binds[0].session
    rtt = yield first.enquireLink()
    assert rtt >= 0 and first.last_enquire_link_rtt == rtt
    harness.smsc.faults.silent = True
    yield wait_until(lambda: service.binds[0].reconnects >= 1)
    harness.smsc.faults.silent = False
    yield bound(service)
    assert service.binds[0].session is not first


@pytest_twisted.inlineCallbacks
def test_smsc_restart_resends_unacknowledged_submits(smsc_factory, services):
    """Submits outstanding when the SMSC dies go out again after reconnecting."""
    harness = smsc_factory(credentials=CREDENTIALS)
    port = harness.portNumber
    harness.smsc.faults.never_respond = True
    service = services([carrier_config(port, response_timeout=5.0)], send_timeout=8.0)
    yield bound(service)
    sends = [service.router.send(sms(to=f"+3361234000{i}")) for i in range(3)]
    yield wait_until(lambda: harness.smsc.submit_count == 3)
    yield harness.stop()
    # Back in the queue after the resubmit pause (never at once: no storm).
    yield wait_until(lambda: service.carriers[0].queue_depth == 3)
    harness.smsc.faults.never_respond = False
    harness.listen(port)
    results = yield gatherResults(sends)
    assert len(results) == 3
    assert sorted(m.destination for m in harness.smsc.messages) == [
        f"3361234000{i}" for i in range(3)]
    assert service.binds[0].reconnects >= 1


@pytest_twisted.inlineCallbacks
def test_send_past_deadline_is_withdrawn(smsc_factory, services):
    """A message not accepted by its deadline is withdrawn from the queue and reported."""
    harness = smsc_factory(credentials=CREDENTIALS)
    harness.smsc.faults.never_respond = True
    service = services([carrier_config(harness.portNumber, window=1, response_timeout=0.5)])
    yield bound(service)
    carrier = service.carriers[0]
    first = service.router.send(sms(to="+33612340001"), timeout=0.3)
    second = service.router.send(sms(to="+33612340002"), timeout=0.3)
    assert carrier.queue_depth == 1
    with pytest.raises(SendTimeoutError):
        yield second
    with pytest.raises(SendTimeoutError):
        yield first
    assert carrier.queue_depth == 0
    assert harness.smsc.submit_count == 1  # the queued one never went on the wire
    assert carrier.errors["deadline"] == 2


@pytest.mark.parametrize("status", ["ESME_RTHROTTLED", "ESME_RSYSERR"])
@pytest_twisted.inlineCallbacks
def test_temporary_statuses_are_retried_and_nothing_is_lost(smsc_factory, services, status):
    """Every third submit is refused with a temporary status; every message still arrives once."""
    harness = smsc_factory(credentials=CREDENTIALS)
    harness.smsc.faults.update(fail_every=3, fail_status=codec.status_code(status))
    service = services([carrier_config(harness.portNumber)], send_timeout=10.0)
    yield bound(service)
    numbers = [f"+336123400{i:02d}" for i in range(15)]
    results = yield gatherResults([service.router.send(sms(to=n)) for n in numbers])
    assert len(results) == 15
    assert sorted(m.destination for m in harness.smsc.messages) == sorted(
        n.lstrip("+") for n in numbers)
    carrier = service.carriers[0]
    assert carrier.errors[status] >= 5
    if status == "ESME_RTHROTTLED":
        assert carrier.throttled >= 1


@pytest_twisted.inlineCallbacks
def test_final_status_reaches_the_caller(smsc_factory, services):
    """A status outside the temporary set fails the message with that status."""
    harness = smsc_factory(credentials=CREDENTIALS)
    harness.smsc.faults.update(fail_every=1, fail_status=codec.STATUSES["ESME_RINVDSTADR"])
    service = services([carrier_config(harness.portNumber)])
    yield bound(service)
    with pytest.raises(RejectedError) as caught:
        yield service.router.send(sms())
    assert caught.value.status_name == "ESME_RINVDSTADR"
    assert harness.smsc.submit_count == 1


@pytest_twisted.inlineCallbacks
def test_generic_nack_with_sequence_fails_that_request_only(smsc_factory, services):
    """A generic_nack carrying a submit's sequence fails that submit (then retried:
    its status is temporary); the session stays up."""
    harness = smsc_factory(credentials=CREDENTIALS)
    service = services([carrier_config(harness.portNumber)])
    yield bound(service)
    session = service.binds[0].session
    harness.smsc.faults.generic_nack = "sequence"
    d = service.router.send(sms())
    yield wait_until(lambda: service.carriers[0].errors["ESME_RSYSERR"] >= 1)
    harness.smsc.faults.generic_nack = None
    result = yield d
    assert result.message_ids
    assert service.binds[0].session is session


@pytest_twisted.inlineCallbacks
def test_generic_nack_with_sequence_zero_reconnects(smsc_factory, services):
    """A generic_nack with sequence 0 means a corrupt link: reconnect, resend."""
    harness = smsc_factory(credentials=CREDENTIALS)
    service = services([carrier_config(harness.portNumber)], send_timeout=5.0)
    yield bound(service)
    harness.smsc.faults.generic_nack = "zero"
    d = service.router.send(sms())
    yield wait_until(lambda: service.binds[0].reconnects >= 1)
    harness.smsc.faults.generic_nack = None
    result = yield d
    assert result.message_ids and len(harness.smsc.messages) == 1


@pytest_twisted.inlineCallbacks
def test_smsc_initiated_unbind(smsc_factory, services):
    """The SMSC's unbind gets an unbind_resp; the bind comes back by itself."""
    harness = smsc_factory(credentials=CREDENTIALS)
    service = services([carrier_config(harness.portNumber)])
    yield bound(service)
    first = service.binds[0].session
    harness.smsc.bound[0].unbind()
    yield first.whenClosed()
    yield wait_until(lambda: service.binds[0].session not in (None, first))
    assert harness.smsc.bind_count == 2


@pytest_twisted.inlineCallbacks
def test_graceful_stop_drains_then_unbinds(smsc_factory, services):
    """Stopping waits for outstanding submits, then unbinds every session."""
    harness = smsc_factory(credentials=CREDENTIALS)
    harness.smsc.faults.response_delay = 0.1
    service = services([carrier_config(harness.portNumber, binds=2)])
    yield bound(service)
    unbinds = []
    for session in harness.smsc.sessions:
        original = session.pduReceived

        def spy(pdu, original=original):
            if pdu.command_id == codec.UNBIND:
                unbinds.append(pdu)
            original(pdu)

        session.pduReceived = spy
    sends = [service.router.send(sms(to=f"+3361234000{i}")) for i in range(6)]
    yield service.stopService()
    results = yield gatherResults(sends)
    assert len(results) == 6
    assert len(unbinds) == 2
    assert all(b.state is BindState.STOPPED for b in service.binds)
    assert not harness.smsc.sessions
    with pytest.raises(NoRouteError):
        yield service.router.send(sms())


@pytest_twisted.inlineCallbacks
def test_long_unicode_text_is_concatenated(smsc_factory, services):
    """A long UCS-2 text goes as UDH parts that the SMSC joins back exactly."""
    harness = smsc_factory(credentials=CREDENTIALS)
    service = services([carrier_config(harness.portNumber)])
    yield bound(service)
    text = "Code 123456 😀 " * 12
    result = yield service.router.send(sms(text=text))
    stored = harness.smsc.received("+33612345678")[0]
    assert stored.text == text
    assert stored.data_coding == 8
    assert stored.parts == len(result.message_ids) > 1


@pytest_twisted.inlineCallbacks
def test_mo_is_reassembled_and_normalized(smsc_factory, services):
    """A long MO in parts reaches the MO receiver whole, its source in E.164."""
    harness = smsc_factory(credentials=CREDENTIALS)
    recorder = Recorder()
    service = services([carrier_config(harness.portNumber, region="FR")], mo_receiver=recorder)
    yield bound(service)
    text = "/v1/msisdn/sms/momt/verify " + "ab" * 100
    yield harness.smsc.deliverMO("0612345678", "33700000000", text)
    yield wait_until(lambda: recorder.mo)
    (mo,) = recorder.mo
    assert (mo.carrier, mo.source, mo.destination, mo.text) == (
        "test", "+33612345678", "33700000000", text)


@pytest.mark.parametrize("form,base", [("tlv", "hex"), ("text", "decimal"), ("both", "hex")])
@pytest_twisted.inlineCallbacks
def test_receipts_in_both_forms_match_the_message_id(smsc_factory, services, form, base):
    """Receipts from TLVs or from text, with ids quoted in hex or decimal, match the id
    the submit_sm_resp gave."""
    harness = smsc_factory(credentials=CREDENTIALS, receipt_delay=0.0, receipt_form=form,
                           receipt_id_base=base)
    recorder = Recorder()
    id_format = "hex-to-decimal" if base == "decimal" else "as-is"
    service = services([carrier_config(harness.portNumber, receipt_id_format=id_format)],
                       receipt_receiver=recorder)
    yield bound(service)
    result = yield service.router.send(sms())
    yield wait_until(lambda: recorder.receipts)
    receipt = recorder.receipts[0]
    assert receipt.state == "DELIVRD" and not receipt.failed
    assert receipt.message_id == normalize_message_id(result.message_ids[0])


@pytest_twisted.inlineCallbacks
def test_receipt_that_beats_its_submit_sm_resp(smsc_factory, services):
    """A receipt arriving before the submit_sm_resp is still delivered, with an id
    that matches the one the response then brings."""
    harness = smsc_factory(credentials=CREDENTIALS, receipt_delay=0.0)
    harness.smsc.faults.receipt_before_response = True
    recorder = Recorder()
    order = []
    original = recorder.receiptReceived

    def receiptReceived(receipt):
        order.append("receipt")
        original(receipt)

    recorder.receiptReceived = receiptReceived
    service = services([carrier_config(harness.portNumber)], receipt_receiver=recorder)
    yield bound(service)
    result = yield service.router.send(sms()).addCallback(lambda r: order.append("resp") or r)
    assert order == ["receipt", "resp"]
    assert recorder.receipts[0].aliases & message_id_aliases(result.message_ids[0])


@pytest_twisted.inlineCallbacks
def test_router_fails_over_to_a_live_carrier(smsc_factory, services):
    """When the preferred carrier has no live bind, the next eligible one takes the message."""
    down = smsc_factory(credentials={"nobody": "x"})  # refuses our bind
    up = smsc_factory(credentials=CREDENTIALS)
    service = services([
        carrier_config(down.portNumber, name="orange", mcc=["208"], default=False),
        carrier_config(up.portNumber, name="backup", default=True),
    ])
    yield wait_until(lambda: service.carriers[1].available)
    result = yield service.router.send(sms(mcc="208", mnc="01"))
    assert result.carrier == "backup"
    assert [c.name for c in service.router.candidates(sms(mcc="208"))] == ["orange", "backup"]


@pytest_twisted.inlineCallbacks
def test_routing_order_and_no_route(smsc_factory, services):
    """MCC+MNC beats MCC beats prefix beats default; no match and no default is refused."""
    harness = smsc_factory(credentials=CREDENTIALS)
    port = harness.portNumber
    service = services([
        carrier_config(port, name="sfr", mccmnc=["20810"], default=False),
        carrier_config(port, name="fr", mcc=["208"], default=False),
        carrier_config(port, name="es", prefixes=["+34"], default=False),
        carrier_config(port, name="es-mobile", prefixes=["+346"], default=False),
    ])
    yield bound(service)
    names = lambda m: [c.name for c in service.router.candidates(m)]  # noqa: E731
    assert names(sms(mcc="208", mnc="10")) == ["sfr", "fr"]
    assert names(sms(to="+34612345678")) == ["es-mobile", "es"]
    with pytest.raises(NoRouteError):
        yield service.router.send(sms(to="+4915112345678"))
    result = yield service.router.send(sms(to="+34612345678"))
    assert result.carrier == "es-mobile"


@pytest_twisted.inlineCallbacks
def test_queue_full_is_refused_at_once(smsc_factory, services):
    """A full queue refuses new messages at once (back-pressure), losing none it took."""
    harness = smsc_factory(credentials=CREDENTIALS)
    harness.smsc.faults.response_delay = 0.2
    service = services([carrier_config(harness.portNumber, window=1, queue_size=3)])
    yield bound(service)
    taken = [service.router.send(sms(to=f"+3361234000{i}")) for i in range(4)]
    refused = service.router.send(sms(to="+33612349999"))
    from msisdnd.sms.interfaces import QueueFullError

    with pytest.raises(QueueFullError):
        yield refused
    results = yield gatherResults(taken)
    assert len(results) == 4


@pytest_twisted.inlineCallbacks
def test_throughput_cap_is_shared_and_counts_parts(smsc_factory, services):
    """The cap counts every part, across the carrier's binds."""
    harness = smsc_factory(credentials=CREDENTIALS)
    service = services([carrier_config(harness.portNumber, binds=2, throughput=20)])
    yield bound(service)
    started = reactor.seconds()
    long_text = "x" * 300  # two parts
    yield gatherResults([service.router.send(sms(text=long_text, to=f"+336123400{i:02d}"))
                         for i in range(15)])
    elapsed = reactor.seconds() - started
    # 30 parts at 20 in any second: the last 10 wait for the first second to pass.
    assert harness.smsc.submit_count == 30
    assert elapsed >= 0.99, elapsed


@pytest_twisted.inlineCallbacks
def test_snapshot_reports_state(smsc_factory, services):
    """Operators see each bind's state, window use, queue depth and counts."""
    harness = smsc_factory(credentials=CREDENTIALS)
    service = services([carrier_config(harness.portNumber)])
    yield bound(service)
    yield service.router.send(sms())
    snap = service.snapshot()
    (bind,) = snap["binds"]
    assert bind["state"] == "bound" and bind["carrier"] == "test" and bind["in_flight"] == 0
    (carrier,) = snap["carriers"]
    assert carrier["sent"] == 1 and carrier["available"] is True


@pytest_twisted.inlineCallbacks
def test_default_send_timeout_withdraws_in_send_order(smsc_factory, services):
    """Messages on the carrier's own send_timeout share one timer: accepted ones are
    forgotten, unaccepted ones are withdrawn when their time is up."""
    harness = smsc_factory(credentials=CREDENTIALS)
    service = services([carrier_config(harness.portNumber, window=1, response_timeout=0.5)],
                       send_timeout=0.3)
    yield bound(service)
    carrier = service.carriers[0]
    yield service.router.send(sms(to="+33612340000"))
    harness.smsc.faults.never_respond = True
    late = [service.router.send(sms(to=f"+3361234000{i}")) for i in (1, 2)]
    for d in late:
        with pytest.raises(SendTimeoutError):
            yield d
    assert carrier.queue_depth == 0 and not carrier._deadlines
    assert carrier.errors["deadline"] == 2
    assert harness.smsc.submit_count == 2  # the second never left the queue


@pytest_twisted.inlineCallbacks
def test_a_carrier_removed_by_a_reload_drains_before_it_unbinds(smsc_factory, services):
    """reconfigure: the removed carrier's message in flight is answered and
    delivered, then its bind goes; the carrier kept keeps its session."""
    kept_smsc = smsc_factory(credentials=CREDENTIALS)
    going_smsc = smsc_factory(credentials=CREDENTIALS)
    kept = carrier_config(kept_smsc.portNumber, name="kept")
    going = carrier_config(going_smsc.portNumber, name="going", mcc=["208"], default=False)
    service = services([kept, going])
    yield bound(service)
    (session,) = kept_smsc.smsc.bound
    going_smsc.smsc.faults.update(response_delay=0.3)
    sent = service.router.send(sms(mcc="208"))
    yield wait_until(lambda: going_smsc.smsc.submit_count == 1)
    changes = yield service.reconfigure([kept])
    assert changes == {"added": [], "removed": ["going"], "changed": []}
    assert (yield sent).carrier == "going"  # answered before the unbind
    assert not going_smsc.smsc.sessions and [c.name for c in service.carriers] == ["kept"]
    assert kept_smsc.smsc.bound == [session] and kept_smsc.smsc.bind_count == 1
    assert (yield service.router.send(sms(mcc="208"))).carrier == "kept"


def test_a_suspended_carrier_removed_and_added_back_comes_back_suspended():
    """The suspension is still in Redis: the carrier added back by a reload
    takes no send, not even before the next poll."""
    acme = carrier_config(1, name="acme")
    service = CarriersService([acme], Clock())
    service.setSuspended("acme", True)
    service.reconfigure([])
    service.reconfigure([acme])
    assert service.carrier("acme").suspended and "acme" in service.suspensions


@pytest_twisted.inlineCallbacks
def test_a_reload_that_moves_a_down_carrier_sends_what_it_held(smsc_factory, services):
    """The SMSC went away and the operator reloads the carrier onto another
    one: a message held within the grace goes out through the new binds."""
    old_smsc, new_smsc = smsc_factory(credentials=CREDENTIALS), smsc_factory(credentials=CREDENTIALS)
    service = services([carrier_config(old_smsc.portNumber, reconnect_grace=30.0)],
                       drain_timeout=0.3)
    yield bound(service)
    yield old_smsc.stop()
    yield wait_until(lambda: not service.carriers[0].bound)
    held = service.router.send(sms(), timeout=20.0)
    yield service.reconfigure([carrier_config(new_smsc.portNumber, reconnect_grace=30.0)])
    assert (yield held).carrier == "test"
    assert new_smsc.smsc.submit_count == 1


@pytest_twisted.inlineCallbacks
def test_a_carrier_a_reload_changes_takes_sends_while_it_is_swapped(smsc_factory, services):
    """The old carrier drains and unbinds before the new one binds: sends
    meanwhile wait in the new one's queue (as during a reconnect), not 503."""
    harness = smsc_factory(credentials=CREDENTIALS)
    service = services([carrier_config(harness.portNumber)])
    yield bound(service)
    harness.smsc.faults.update(response_delay=0.3)
    first = service.router.send(sms(to="+33612340001"))
    swap = service.reconfigure([carrier_config(harness.portNumber, window=5)])
    during = service.router.send(sms(to="+33612340002"))
    assert (yield swap)["changed"] == ["test"]
    assert (yield first).carrier == "test" and (yield during).carrier == "test"
    assert harness.smsc.submit_count == 2
