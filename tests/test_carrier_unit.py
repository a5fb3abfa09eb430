"""Carrier and router policy in memory: real ESMESessions over StringTransports,
a task.Clock, PDUs from msisdnd's codec.

What ordinary SMSC behaviour found: an OK answer whose id lacks its NUL set
off a resubmit storm; window 1 stalled behind an enquire_link; requeues
reversed send order; the throughput cap let a burst through at start; a
cut link cost the user a 503; queued messages waited for a dead carrier's
deadline; a response with the wrong command_id counted as an acceptance;
deliver_sm was accepted before the bind; outbind was nacked; warnings
flooded the log.
"""

from __future__ import annotations

import pytest
from twisted.internet import task
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher

from msisdnd.sms.interfaces import NoRouteError, OutboundSMS, SendTimeoutError
from msisdnd.smpp import codec
from msisdnd.smpp.carrier import MAX_SUBMITS, RESUBMIT_PAUSE, Carrier, CarrierDown
from msisdnd.smpp.config import CarrierConfig
from msisdnd.smpp.router import Router
from msisdnd.smpp.session import ESMESession, SessionState

from pdus import Part, take_pdus

NUMBER = "+33612345678"


class Link:
    """One session of a carrier, bound, over a StringTransport."""

    def __init__(self, clock, carrier: Carrier | None = None, window: int = 10,
                 mode: str = "transceiver", enquire_link_interval: float = 30.0,
                 closes_later: bool = False):
        self.clock = clock
        self.session = ESMESession(clock, window=window, response_timeout=5.0,
                                   enquire_link_interval=enquire_link_interval)
        # closes_later: a close takes effect later, as over TCP (no connectionLost at once).
        self.transport = StringTransport() if closes_later else StringTransportWithDisconnection()
        self.transport.protocol = self.session
        self.session.makeConnection(self.transport)
        self.session.mode = mode
        self.session.state = SessionState.BOUND
        self.carrier = carrier
        if carrier is not None:
            carrier.bindUp(None, self.session)

    def written(self) -> list[codec.PDU]:
        """Every PDU the session wrote since the last call, decoded."""
        return take_pdus(self.transport)

    def feed(self, frame: bytes) -> None:
        self.session.dataReceived(frame)

    def answer(self, pdu: codec.PDU, body: bytes = b"1a2b\0", status: int = 0) -> None:
        self.feed(codec.frame(pdu.command_id | codec.RESPONSE_BIT, pdu.sequence, body, status))

    def drop(self) -> None:
        self.transport.loseConnection()
        if self.carrier is not None:
            self.carrier.bindDown(None, self.session)


def carrier(clock, name: str = "a", send_timeout: float = 10.0, **overrides) -> Carrier:
    config = CarrierConfig.from_mapping({
        "name": name, "host": "127.0.0.1", "system_id": "esme", "password": "pw",
        "default": True, **overrides}, f"carrier[{name}]")
    return Carrier(config, clock, send_timeout=send_timeout)


class Results:
    def __init__(self):
        self.values = []

    def add(self, d):
        d.addBoth(self.values.append)
        return d


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(1000)
    return c


@pytest.fixture
def warnings():
    seen = []

    def observe(event):
        if event.get("log_level") is LogLevel.warn:
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def sms(text: str = "Your code: 123456", to: str = NUMBER) -> OutboundSMS:
    return OutboundSMS(destination=to, text=text, validity=600)


# -- an OK answer is an acceptance; no storm ----------------------------------------------


@pytest.mark.parametrize("body, problem", [
    (b"A" * 70, "id_unterminated"),             # no NUL, longer than 64 octets
    (b"1a2b", "id_unterminated"),               # no NUL
    (b"", "id_empty"),                          # no body at all
    (b"\0", "id_empty"),                        # an empty id
])
def test_an_ok_answer_is_accepted_once_whatever_its_id(clock, warnings, body, problem):
    c = carrier(clock)
    link = Link(clock, c)
    results = Results()
    results.add(c.send(sms()))
    [submit] = link.written()
    link.answer(submit, body)
    clock.advance(20)
    assert len(results.values) == 1 and results.values[0].carrier == "a"
    assert link.written() == []  # never resubmitted
    assert c.errors[problem] == 1 and c.sent == 1
    assert any("not resubmitted" in e["log_format"] for e in warnings)


def test_a_long_nul_terminated_id_is_kept_as_given(clock):
    c = carrier(clock)
    link = Link(clock, c)
    results = Results()
    results.add(c.send(sms()))
    [submit] = link.written()
    link.answer(submit, b"9" * 80 + b"\0")
    assert results.values[0].message_ids == ("9" * 80,)
    assert not c.errors


def test_unanswered_submits_go_again_after_a_pause_and_a_bounded_number_of_times(clock):
    c = carrier(clock, send_timeout=60.0, response_timeout=5.0)
    link = Link(clock, c, enquire_link_interval=1000.0)
    results = Results()
    results.add(c.send(sms()))
    submits = [link.written()]
    for pause in (RESUBMIT_PAUSE * 2 ** n for n in range(MAX_SUBMITS - 1)):
        clock.advance(5.0)  # the response timeout
        assert link.written() == []  # not at once
        clock.advance(pause)
        submits.append(link.written())
    assert [len(s) for s in submits] == [1] * MAX_SUBMITS
    clock.advance(5.0)
    clock.advance(30.0)
    assert link.written() == []
    assert isinstance(results.values[0].value, SendTimeoutError)
    assert c.resubmitted == MAX_SUBMITS - 1 and c.errors["max_submits"] == 1


def test_throttled_submits_do_not_count_towards_the_unanswered_limit(clock):
    """A throttle is an answer: a part throttled MAX_SUBMITS times and then
    caught in a cut goes again, rather than fail as "no answer"."""
    c = carrier(clock, window=1, send_timeout=60.0, throttle_pause=0.1, throttle_pause_max=0.2)
    link = Link(clock, c, window=1, enquire_link_interval=1000.0)
    results = Results()
    results.add(c.send(sms()))
    for _ in range(MAX_SUBMITS):
        [submit] = link.written()
        link.answer(submit, b"", codec.ESME_RTHROTTLED)
        clock.advance(0.2)
    link.written()
    clock.advance(5.0)  # unanswered once: it goes again after the first pause
    clock.advance(RESUBMIT_PAUSE)
    [again] = link.written()
    link.answer(again)
    assert results.values[0].carrier == "a" and not c.errors["max_submits"]


# -- every freed slot pumps ------------------------------------------------------------


def test_window_one_is_not_stalled_by_an_enquire_link(clock):
    c = carrier(clock, window=1)
    link = Link(clock, c, window=1, enquire_link_interval=30.0)
    clock.advance(30.0)  # idle: the enquire_link takes the only slot
    [probe] = link.written()
    assert probe.command == "enquire_link"
    results = Results()
    results.add(c.send(sms()))
    assert link.written() == []  # no room
    link.answer(probe, b"")
    [submit] = link.written()
    assert submit.command == "submit_sm"
    link.answer(submit)
    assert results.values[0].message_ids == ("1a2b",)


@pytest.mark.parametrize("closing", ["command_length lie", "generic_nack seq 0",
                                     "enquire_link unanswered"])
def test_nothing_is_submitted_on_a_link_being_closed(clock, closing):
    """A closing link reads nothing more: a submit written to it would reach
    the SMSC with its answer never read, and go again, a duplicate.  Slots
    freed by the chunk (or the timeout) that closes it must not refill it."""
    c = carrier(clock, window=1)
    link = Link(clock, c, window=1, closes_later=True)
    if closing == "enquire_link unanswered":
        clock.advance(30.0)
        c.send(sms()).addErrback(lambda f: None)
        clock.advance(5.0)  # the probe's timeout frees the only slot and aborts the link
    else:
        for i in range(2):
            c.send(sms(to=f"+3361234567{i}")).addErrback(lambda f: None)
        [submit] = link.written()
        last = (b"\0\0\0\x05" + b"\0" * 12 if closing == "command_length lie"
                else codec.generic_nack(0, codec.ESME_RSYSERR))
        link.feed(codec.frame(codec.SUBMIT_SM_RESP, submit.sequence, b"id\0") + last)
    assert link.transport.disconnecting
    assert [p for p in link.written() if p.command == "submit_sm"] == []
    assert c.resubmitted == 0


def test_a_success_handler_that_raises_still_frees_its_slot(clock):
    c = carrier(clock, window=1)
    link = Link(clock, c, window=1)
    freed = []
    link.session.onWindowFreed = lambda: freed.append(True)

    def broken(accepted, now):
        raise RuntimeError("a bug in a handler")

    link.session.onAccepted = broken
    link.session.submitParts([Part(c._encode(sms())[0])])
    [submit] = link.written()
    link.answer(submit)
    assert freed == [True] and link.session.in_flight == 0


# -- send order --------------------------------------------------------------------------


def test_requeued_parts_keep_send_order(clock):
    c = carrier(clock, window=3)
    link = Link(clock, c, window=3)
    for i in range(5):
        c.send(sms(f"code {i}", f"+3361234567{i}")).addErrback(lambda f: None)
    first = link.written()
    assert [p.fields["destination_addr"][-1] for p in first] == ["0", "1", "2"]
    for submit in first:
        link.answer(submit, b"", codec.ESME_RTHROTTLED)
    clock.advance(1.0)  # the throttle pause
    again = link.written()
    assert [p.fields["destination_addr"][-1] for p in again] == ["0", "1", "2"]


# -- the throughput cap -------------------------------------------------------------------


def test_no_second_sees_more_than_the_cap(clock):
    c = carrier(clock, throughput=50, window=1000, queue_size=1000)
    link = Link(clock, c, window=1000)
    for i in range(200):
        c.send(sms(to=f"+336123{i:05d}")).addErrback(lambda f: None)
    times = []
    for _ in range(400):
        for submit in link.written():
            times.append(clock.seconds())
            link.answer(submit)
        clock.advance(0.01)
    assert len(times) == 200
    for start in times:
        assert sum(1 for t in times if start <= t < start + 1.0) <= 50


def test_the_cap_holds_across_the_binds_of_one_pump_and_wakes_when_its_window_ends(clock):
    """The cap counts a pump's submits together, whichever bind took them:
    with room for 20 on two binds and a cap of 5 per second, 5 go, the rest
    wait for the window's end, then 5 more go."""
    c = carrier(clock, throughput=5, window=10, queue_size=100)
    links = [Link(clock, c, window=10) for _ in range(2)]
    for i in range(12):
        c.send(sms(to=f"+336123{i:05d}")).addErrback(lambda f: None)

    def written() -> int:
        return sum(len([p for p in link.written() if p.command == "submit_sm"])
                   for link in links)

    assert written() == 5
    clock.advance(0.999)
    assert written() == 0
    clock.advance(0.001)
    assert written() == 5
    clock.advance(1.0)
    assert written() == 2 and c.queue_depth == 0


# -- a cut link: queue within the grace, then fail over ----------------------------------


def test_a_cut_link_keeps_taking_sends_and_sends_them_when_the_bind_is_back(clock):
    c = carrier(clock, reconnect_grace=10.0)
    router = Router([c])
    link = Link(clock, c)
    link.drop()
    assert c.available and c.reconnecting
    results = Results()
    results.add(router.send(sms()))
    clock.advance(2.0)
    back = Link(clock, c)
    [submit] = back.written()
    back.answer(submit)
    assert results.values[0].message_ids == ("1a2b",)


def test_messages_move_to_another_carrier_when_the_grace_ends(clock):
    a = carrier(clock, "a", reconnect_grace=3.0, default=False, prefixes=["+33"])
    b = carrier(clock, "b")
    router = Router([a, b])
    link_a = Link(clock, a)
    link_b = Link(clock, b)
    link_a.drop()
    link_b.drop()
    results = Results()
    results.add(router.send(sms()))  # both reconnecting: queued on a, the better route
    assert a.queue_depth == 1
    link_b = Link(clock, b)  # b is back, a is not
    clock.advance(3.0)
    [submit] = link_b.written()
    link_b.answer(submit)
    assert results.values[0].carrier == "b" and a.queue_depth == 0


def test_after_the_grace_a_carrier_with_no_bind_takes_nothing(clock):
    c = carrier(clock, reconnect_grace=3.0)
    router = Router([c])
    link = Link(clock, c)
    link.drop()
    results = Results()
    results.add(router.send(sms()))
    clock.advance(3.0)
    assert isinstance(results.values[0].value, NoRouteError)
    assert not c.available
    late = Results()
    late.add(router.send(sms()))
    assert isinstance(late.values[0].value, NoRouteError)


def test_a_carrier_without_a_router_fails_its_stranded_messages_with_carrier_down(clock):
    c = carrier(clock, reconnect_grace=3.0)
    link = Link(clock, c)
    link.drop()
    results = Results()
    results.add(c.send(sms()))
    clock.advance(3.0)
    assert isinstance(results.values[0].value, CarrierDown)
    assert c.queue_depth == 0


def test_a_rerouted_message_keeps_what_is_left_of_its_deadline(clock):
    a = carrier(clock, "a", reconnect_grace=3.0, default=False, prefixes=["+33"])
    b = carrier(clock, "b")
    router = Router([a, b])
    Link(clock, a).drop()
    Link(clock, b).drop()
    results = Results()
    results.add(router.send(sms()))  # on a, within its grace; b takes it at 3 s
    Link(clock, b)  # b is back and bound, but never answers
    clock.advance(3.0)
    assert results.values == []
    clock.advance(6.9)
    assert results.values == []
    clock.advance(0.1)  # 10 s after the send: the original deadline, not 3 + 10
    assert isinstance(results.values[0].value, SendTimeoutError)


def test_a_message_the_smsc_refused_with_a_status_moves_on_too(clock):
    """Throttled, the SMSC does not hold it: when the grace ends it may go
    elsewhere (only a part accepted or unanswered keeps a message here)."""
    a = carrier(clock, "a", reconnect_grace=3.0, default=False, prefixes=["+33"])
    b = carrier(clock, "b")
    router = Router([a, b])
    link_a = Link(clock, a)
    Link(clock, b).drop()
    results, in_doubt = Results(), Results()
    results.add(router.send(sms(to="+33612345601")))
    in_doubt.add(router.send(sms(to="+33612345602")))
    throttled, unanswered = link_a.written()
    link_a.answer(throttled, b"", codec.ESME_RTHROTTLED)
    link_a.drop()  # the other is in doubt: the SMSC may hold it
    link_b = Link(clock, b)
    clock.advance(3.0)
    [moved] = link_b.written()
    assert moved.fields["destination_addr"] == "33612345601"
    link_b.answer(moved)
    assert results.values[0].carrier == "b" and in_doubt.values == []


def test_stranded_messages_move_on_in_send_order(clock):
    a = carrier(clock, "a", reconnect_grace=3.0, default=False, prefixes=["+33"])
    b = carrier(clock, "b", window=100)
    router = Router([a, b])
    Link(clock, a).drop()
    Link(clock, b).drop()
    for i in range(30):
        router.send(sms(to=f"+336123456{i:02d}")).addErrback(lambda f: None)
    link_b = Link(clock, b, window=100)
    clock.advance(3.0)
    sent = [p.fields["destination_addr"] for p in link_b.written()]
    assert len(sent) == 30 and sent == sorted(sent)


def test_a_carrier_a_reload_removes_hands_what_it_could_not_send_to_those_that_stay(clock):
    a = carrier(clock, "a", reconnect_grace=60.0, default=False, prefixes=["+33"])
    b = carrier(clock, "b")
    router = Router([a, b])
    Link(clock, a).drop()  # a is reconnecting, its grace long
    Link(clock, b).drop()
    results, drained = Results(), Results()
    results.add(router.send(sms()))
    assert a.queue_depth == 1
    link_b = Link(clock, b)
    router.use([b])
    drained.add(a.drain(5.0))
    clock.advance(5.0)
    [submit] = link_b.written()
    link_b.answer(submit)
    assert results.values[0].carrier == "b" and len(drained.values) == 1


def test_a_drained_carrier_leaves_no_timer_and_is_not_reported_down_later(clock, warnings):
    a = carrier(clock, "a", reconnect_grace=30.0)
    Router([a])
    Link(clock, a).drop()
    a.drain(5.0)
    clock.advance(5.0)
    assert not [call for call in clock.getDelayedCalls()
                if getattr(call.func, "__self__", None) is a]
    clock.advance(30.0)
    assert not any("is down" in e["log_format"] for e in warnings)


def test_a_drain_waits_for_a_part_pausing_before_it_goes_again(clock):
    """A part whose submit had no answer waits a pause outside the queue and
    the window; the drain (a reload, a stop) must not end before it went."""
    c = carrier(clock, window=1)
    link = Link(clock, c, window=1)
    results, drained = Results(), Results()
    results.add(c.send(sms()))
    link.written()
    clock.advance(5.0)  # no answer: the part waits RESUBMIT_PAUSE
    drained.add(c.drain(5.0))
    assert drained.values == []
    clock.advance(RESUBMIT_PAUSE)
    [again] = link.written()
    link.answer(again)
    assert results.values[0].carrier == "a" and len(drained.values) == 1


def test_the_link_goes_reconnecting_then_down_then_back_with_one_line_each(clock):
    """Losing the last bind is "reconnecting" (since then) for the grace,
    then "down" (one warning with the reason); a bind ends it (one warning
    with how long); a cut healed within the grace is two info lines."""
    c = carrier(clock, reconnect_grace=3.0)
    events: list[dict] = []
    c.link.log = Logger(observer=events.append)
    assert c.link.snapshot()["state"] == "starting"
    link = Link(clock, c)
    clock.advance(100)
    link.transport.loseConnection()
    c.bindDown(None, link.session, "session lost: connection lost")
    assert (c.snapshot()["state"], c.snapshot()["reconnecting_since"],
            c.snapshot()["down_since"]) == ("reconnecting", "1970-01-01T00:18:20Z", None)
    clock.advance(1)
    c.bindFailed(None, "connection refused")
    clock.advance(2)
    health = c.link.snapshot()
    assert (health["state"], health["reconnecting_since"], health["down_since"],
            health["last_error"]) == ("down", None, "1970-01-01T00:18:20Z", "connection refused")
    clock.advance(7)
    Link(clock, c)
    assert c.link.snapshot()["state"] == "up" and c.link.snapshot()["down_since"] is None
    lines = [(e["log_level"], formatEvent(e)) for e in events]
    assert lines == [
        (LogLevel.info, "Carrier a is up"),
        (LogLevel.info, "Carrier a lost its last bind (session lost: connection lost); "
                        "reconnecting, holding sends up to 3.0 s"),
        (LogLevel.warn, "Carrier a is down: connection refused (no bind for 3.0 s)"),
        (LogLevel.warn, "Carrier a is back after 10.0 s down"),
    ]


def test_a_carrier_that_never_bound_is_down_at_its_first_failure(clock):
    c = carrier(clock)
    events: list[dict] = []
    c.link.log = Logger(observer=events.append)
    c.bindFailed(None, "bind refused: ESME_RINVPASWD")
    c.bindFailed(None, "bind refused: ESME_RINVPASWD")
    assert [formatEvent(e) for e in events] == ["Carrier a is down: bind refused: ESME_RINVPASWD"]
    assert c.snapshot()["down_since"] == "1970-01-01T00:16:40Z"  # since the start


# -- protocol correctness ------------------------------------------------------------------


def test_a_response_with_another_command_id_is_no_acceptance(clock, warnings):
    c = carrier(clock)
    link = Link(clock, c)
    results = Results()
    results.add(c.send(sms()))
    [submit] = link.written()
    link.feed(codec.frame(codec.DELIVER_SM_RESP, submit.sequence, b"\0"))
    assert results.values == [] and link.session.in_flight == 1
    link.answer(submit)
    assert results.values[0].message_ids == ("1a2b",)


@pytest.mark.parametrize("state, mode, status", [
    (SessionState.BINDING, None, codec.ESME_RINVBNDSTS),
    (SessionState.BOUND, "transmitter", codec.ESME_RINVBNDSTS),
    (SessionState.BOUND, "receiver", codec.ESME_ROK),
    (SessionState.BOUND, "transceiver", codec.ESME_ROK),
])
def test_deliver_sm_is_refused_before_the_bind_and_on_transmitters(clock, state, mode,
                                                                   status):
    inbound = []
    link = Link(clock)
    link.session.onInbound = inbound.append
    link.session.mode, link.session.state = mode, state
    link.feed(codec.encode("deliver_sm", 7, source_addr="33612345678",
                           destination_addr="33700000000", short_message=b"hello"))
    [answer] = link.written()
    assert (answer.command, answer.status, answer.sequence) == ("deliver_sm_resp", status, 7)
    assert len(inbound) == (1 if status == codec.ESME_ROK else 0)


def test_outbind_is_ignored_not_nacked(clock, warnings):
    link = Link(clock)
    link.feed(codec.frame(codec.COMMANDS["outbind"], 3, b"smsc\0pw\0"))
    assert link.written() == [] and not link.transport.disconnecting
    assert any("outbind" in e["log_format"] for e in warnings)


def test_warnings_from_a_broken_smsc_are_rate_limited(clock, warnings):
    link = Link(clock)
    for seq in range(100, 200):
        link.feed(codec.generic_nack(seq, codec.ESME_RSYSERR))
    mine = [e for e in warnings if "generic_nack" in e["log_format"]]
    assert len(mine) == 10
    clock.advance(61)
    link.feed(codec.generic_nack(500, codec.ESME_RSYSERR))
    summary = [e for e in warnings if "were not logged" in e["log_format"]]
    assert [e["count"] for e in summary] == [90]


def test_a_last_submit_failing_after_its_deadline_stalls_nothing(clock, warnings):
    """A part whose message already ended at its deadline fails its last submit:
    nothing is finished twice, and the window it frees serves the next message."""
    c = carrier(clock, send_timeout=8.0, window=1, response_timeout=1.0)
    link = Link(clock, c, window=1, enquire_link_interval=1000.0)
    first, second = Results(), Results()
    first.add(c.send(sms(to="+33612345601")))
    for _ in range(60):  # A's submits go unanswered; its deadline passes at 8 s
        clock.advance(0.25)
    second.add(c.send(sms(to="+33612345602")))
    for _ in range(12):
        clock.advance(0.25)
    assert isinstance(first.values[0].value, SendTimeoutError)
    submitted = [p.fields["destination_addr"] for p in link.written()]
    assert "33612345602" in submitted
    assert not any("failure handler failed" in (e.get("log_format") or "") for e in warnings)


def test_sending_leaves_no_reference_cycle(clock):
    """Each message through the router used to leave a cycle (a closure naming
    itself) for the garbage collector."""
    import gc

    c = carrier(clock)
    router = Router([c])
    link = Link(clock, c, window=1000)
    gc.collect()
    gc.disable()
    try:
        for i in range(200):
            router.send(sms(to=f"+336123{i:05d}"))
        for submit in link.written():
            link.answer(submit)
        assert gc.collect() < 50
    finally:
        gc.enable()


# -- review: a part answered twice --------------------------------------------------------


def test_a_late_answer_to_a_timed_out_part_does_not_count_its_message_twice(clock):
    """Part 1 of 2 gets no answer in time and goes again; the SMSC then
    answers both copies (the late one in the same chunk as the new one) and
    not yet part 2: the message is not accepted until part 2 is."""
    c = carrier(clock, send_timeout=60.0)
    link = Link(clock, c)
    results = Results()
    results.add(c.send(sms("x" * 200)))
    first, second = link.written()
    clock.advance(5.0)          # no answer to either: both time out
    clock.advance(RESUBMIT_PAUSE)
    again = link.written()
    assert len(again) == 2
    late = codec.frame(codec.SUBMIT_SM_RESP, first.sequence, b"old\0")
    link.feed(late + codec.frame(codec.SUBMIT_SM_RESP, again[0].sequence, b"p1\0"))
    link.feed(codec.frame(codec.SUBMIT_SM_RESP, first.sequence, b"old\0"))  # and again
    assert results.values == []
    link.answer(again[1], b"p2\0")
    assert [r.message_ids for r in results.values] == [("p1", "p2")]


def test_one_chunk_with_an_acceptance_a_nack_and_a_receipt_tells_them_in_order(clock):
    """Part 1 accepted, part 2 nacked (throttled), and part 1's receipt, in one
    chunk: the receipt is handled after part 1's acceptance, part 2 goes
    again after the pause, and the message is accepted once, with both ids."""
    c = carrier(clock, send_timeout=60.0)
    link = Link(clock, c)
    seen = []
    link.session.onInbound = lambda pdu: seen.append(("receipt", c.sent))
    results = Results()
    results.add(c.send(sms("x" * 200)))
    first, second = link.written()
    receipt = codec.encode("deliver_sm", 9, source_addr="33612345678", destination_addr="x",
                           esm_class=0x04, short_message=b"id:p1 stat:DELIVRD")
    link.feed(codec.frame(codec.SUBMIT_SM_RESP, first.sequence, b"p1\0")
              + codec.frame(codec.GENERIC_NACK, second.sequence, b"", codec.ESME_RTHROTTLED)
              + receipt)
    assert seen == [("receipt", 1)]
    assert results.values == []
    clock.advance(60.0 - 1.0)
    again = [p for p in link.written() if p.command == "submit_sm"]
    assert len(again) == 1 and again[0].fields["short_message"] == second.fields["short_message"]
    link.answer(again[0], b"p2\0")
    assert [r.message_ids for r in results.values] == [("p1", "p2")]


def test_an_answer_repeated_or_to_no_submit_in_one_chunk_counts_nothing_more(clock):
    """In one chunk: an answer to a sequence never sent, part 1's answer
    twice, then part 2's: the message is accepted once, with the first ids."""
    c = carrier(clock)
    link = Link(clock, c)
    results = Results()
    results.add(c.send(sms("x" * 200)))
    first, second = link.written()
    resp = codec.SUBMIT_SM_RESP
    link.feed(codec.frame(resp, 4242, b"none\0") + codec.frame(resp, first.sequence, b"p1\0")
              + codec.frame(resp, first.sequence, b"again\0"))
    assert results.values == [] and c.sent == 1
    link.feed(codec.frame(resp, second.sequence, b"p2\0"))
    assert [r.message_ids for r in results.values] == [("p1", "p2")] and c.sent == 2


def test_an_unbind_mid_chunk_keeps_the_acceptances_before_it_and_drops_those_after(clock):
    """Part 1's answer, the SMSC's unbind, then part 2's answer, in one chunk:
    part 1 is accepted; nothing after the unbind is acted on, so part 2 goes
    again on the other bind once the first is gone, and the message is
    accepted once, with both ids."""
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    c = carrier(clock, send_timeout=60.0)
    first_link = Link(clock, c, closes_later=True)
    results = Results()
    results.add(c.send(sms("x" * 200)))
    first, second = first_link.written()
    other = Link(clock, c)
    first_link.feed(codec.frame(codec.SUBMIT_SM_RESP, first.sequence, b"p1\0")
                    + codec.encode("unbind", 77)
                    + codec.frame(codec.SUBMIT_SM_RESP, second.sequence, b"lost\0"))
    assert c.sent == 1 and results.values == []
    assert [p.command for p in first_link.written()] == ["unbind_resp"]
    first_link.session.connectionLost(Failure(ConnectionDone()))
    c.bindDown(None, first_link.session)
    clock.advance(RESUBMIT_PAUSE)
    again = [p for p in other.written() if p.command == "submit_sm"]
    assert [p.fields["short_message"] for p in again] == [second.fields["short_message"]]
    other.answer(again[0], b"p2\0")
    assert [r.message_ids for r in results.values] == [("p1", "p2")]
