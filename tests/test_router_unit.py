"""Router in memory: carrier ranking, failover, and the errors it returns.

The carriers are real L{Carrier} objects on a Clock; their binds are
L{FakeSession} doubles with a window the test sets (0 keeps every part in the
carrier's queue).  Covers the ranking (MCC+MNC > MCC > longest prefix >
default, C{avoid} last, C{carrier=} pins), failover past a carrier without a
live bind or without queue room (also when only some parts would fit), and
L{NoRouteError} / L{QueueFullError} as L{Router.send} documents them.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure

from msisdnd.sms.interfaces import NoRouteError, OutboundSMS, QueueFullError, SendResult
from msisdnd.smpp.carrier import Carrier
from msisdnd.smpp.config import CarrierConfig
from msisdnd.smpp.router import Router

FRENCH = "+33612345678"
LONG_TEXT = "x" * 300  # two GSM parts


# -- helpers -------------------------------------------------------------------


class FakeSession:
    """What L{Carrier} uses of an L{ESMESession}: a bound transmitter and its window."""

    mode = "transceiver"

    def __init__(self, window: int):
        self.window = window
        self.submitted: list[tuple] = []

    @property
    def in_flight(self) -> int:
        return len(self.submitted)

    @property
    def room(self) -> int:
        return self.window - self.in_flight

    def submitParts(self, parts) -> None:
        self.submitted.extend(parts)

    def acceptAll(self) -> None:
        """The SMSC answers every outstanding submit_sm with ESME_ROK, in one chunk."""
        submitted, self.submitted = self.submitted, []
        self.onAccepted([(part, f"id{index}", True) for index, part in enumerate(submitted)],
                        0.0)


def carrier(name: str, clock: Clock, *, live: bool = True, window: int = 10,
            **config) -> Carrier:
    """A carrier named C{name}; C{live} gives it one bound transmitting session."""
    values = {"name": name, "host": "127.0.0.1", "system_id": "esme", **config}
    made = Carrier(CarrierConfig.from_mapping(values, f"carrier[{name}]"), clock)
    if live:
        made.bindUp(None, FakeSession(window))
    return made


def sms(to: str = FRENCH, text: str = "Your code: 123456", **kw) -> OutboundSMS:
    return OutboundSMS(destination=to, text=text, **kw)


def names(router: Router, message: OutboundSMS) -> list[str]:
    return [c.name for c in router.candidates(message)]


def result_of(d):
    """The result a Deferred already has (the exception, for a failure)."""
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    (result,) = results
    return result.value if isinstance(result, Failure) else result


def session_of(c: Carrier) -> FakeSession:
    (session,) = c._sessions
    return session


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- ranking -------------------------------------------------------------------


def test_mccmnc_beats_mcc_beats_prefix_beats_default(clock):
    router = Router([
        carrier("fallback", clock, default=True),
        carrier("by-prefix", clock, prefixes=["+33"]),
        carrier("by-mcc", clock, mcc=["208"]),
        carrier("by-mccmnc", clock, mccmnc=["20810"]),
    ])
    assert names(router, sms(mcc="208", mnc="10")) == [
        "by-mccmnc", "by-mcc", "by-prefix", "fallback"]
    assert names(router, sms(mcc="208", mnc="01")) == ["by-mcc", "by-prefix", "fallback"]
    assert names(router, sms()) == ["by-prefix", "fallback"]
    assert names(router, sms(to="+4915112345678")) == ["fallback"]


def test_mnc_without_mcc_matches_nothing_by_network(clock):
    router = Router([carrier("by-mccmnc", clock, mccmnc=["20810"]),
                     carrier("fallback", clock, default=True)])
    assert names(router, sms(mnc="10")) == ["fallback"]


def test_longest_prefix_first_whatever_the_configuration_order(clock):
    router = Router([
        carrier("short", clock, prefixes=["+3"]),
        carrier("long", clock, prefixes=["+336"]),
        carrier("middle", clock, prefixes=["+33"]),
    ])
    assert names(router, sms()) == ["long", "middle", "short"]
    assert names(router, sms(to="+33112345678")) == ["middle", "short"]


def test_a_carrier_is_ranked_once_at_its_best_place(clock):
    router = Router([carrier("both", clock, mcc=["208"], prefixes=["+33"], default=True),
                     carrier("prefix", clock, prefixes=["+336"])])
    assert names(router, sms(mcc="208")) == ["both", "prefix"]


def test_avoid_moves_that_carrier_last_keeping_the_others_order(clock):
    router = Router([carrier("a", clock, mcc=["208"]), carrier("b", clock, prefixes=["+33"]),
                     carrier("c", clock, default=True)])
    assert names(router, sms(mcc="208", avoid="a")) == ["b", "c", "a"]
    assert names(router, sms(mcc="208", avoid="b")) == ["a", "c", "b"]
    assert names(router, sms(mcc="208", avoid="unknown")) == ["a", "b", "c"]


def test_carrier_pins_the_message_to_that_carrier_only(clock):
    router = Router([carrier("a", clock, default=True), carrier("b", clock)])
    assert names(router, sms(carrier="b")) == ["b"]
    assert names(router, sms(carrier="b", avoid="b")) == ["b"]
    assert names(router, sms(carrier="nope")) == []


def test_receive_only_carriers_are_not_routed_to(clock):
    router = Router([carrier("rx", clock, bind="receiver"),
                     carrier("tx", clock, default=True)])
    assert [c.name for c in router.carriers] == ["tx"]
    assert names(router, sms(carrier="rx")) == []


# -- sending and failover ------------------------------------------------------


def test_send_goes_to_the_best_ranked_live_carrier(clock):
    best, other = carrier("best", clock, mcc=["208"]), carrier("other", clock, default=True)
    d = Router([other, best]).send(sms(mcc="208"))
    session_of(best).acceptAll()
    assert result_of(d) == SendResult("best", ("id0",))
    assert session_of(other).submitted == []


def test_fails_over_past_a_carrier_without_a_live_bind(clock):
    down = carrier("down", clock, mcc=["208"], live=False)
    tripped = carrier("tripped", clock, prefixes=["+33"])
    tripped.tripped = True
    up = carrier("up", clock, default=True)
    router = Router([down, tripped, up])
    d = router.send(sms(mcc="208"))
    session_of(up).acceptAll()
    assert result_of(d).carrier == "up"
    assert down.queue_depth == 0 and session_of(tripped).submitted == []


def test_failover_is_counted_and_told_once_each_way(clock):
    """While the first choice is down, its traffic goes to the next carrier:
    counted per message, one warning when it leaves, one when it returns
    (with how long it was away)."""
    first = carrier("first", clock, mcc=["208"], live=False)
    second = carrier("second", clock, default=True)
    router = Router([first, second])
    events: list[dict] = []
    router.log = Logger(observer=events.append)
    sent = [router.send(sms(mcc="208")) for _ in range(3)]
    session_of(second).acceptAll()
    assert [result_of(d).carrier for d in sent] == ["second"] * 3
    assert router.failovers == {("first", "second"): 3}
    (left,) = [formatEvent(e) for e in events]
    assert left == "Traffic for carrier first fails over to second: first is starting"
    clock.advance(12)
    first.bindUp(None, FakeSession(10))
    sent = [router.send(sms(mcc="208")) for _ in range(2)]
    session_of(first).acceptAll()
    assert [result_of(d).carrier for d in sent] == ["first"] * 2
    assert [formatEvent(e) for e in events[1:]] == ["Traffic returns to carrier first after 12.0 s"]
    assert router.failovers == {("first", "second"): 3}


def test_fails_over_past_a_full_queue(clock):
    full = carrier("full", clock, mcc=["208"], window=0, queue_size=1)
    spare = carrier("spare", clock, default=True)
    router = Router([full, spare])
    router.send(sms(mcc="208"))
    assert full.queue_depth == 1
    events: list[dict] = []
    router.log = Logger(observer=events.append)
    d = router.send(sms(mcc="208"))
    session_of(spare).acceptAll()
    assert result_of(d).carrier == "spare"
    assert full.queue_depth == 1
    # An overflow is counted as a failover, but the carrier is up: no line.
    assert router.failovers == {("full", "spare"): 1} and events == []


def test_fails_over_when_only_some_parts_would_fit(clock):
    """Room for one part is not room for a two-part message: the next carrier takes
    it, and the first queues nothing of it (and counts the refusal)."""
    tight = carrier("tight", clock, mcc=["208"], window=0, queue_size=2)
    roomy = carrier("roomy", clock, default=True)
    router = Router([tight, roomy])
    router.send(sms(mcc="208"))
    d = router.send(sms(mcc="208", text=LONG_TEXT))
    assert tight.queue_depth == 1 and tight.errors["queue_full"] == 1
    assert len(session_of(roomy).submitted) == 2
    session_of(roomy).acceptAll()
    assert result_of(d) == SendResult("roomy", ("id0", "id1"))


def test_queue_full_when_every_live_candidate_is_full(clock):
    full = carrier("full", clock, window=0, queue_size=1, default=True)
    down = carrier("down", clock, prefixes=["+33"], live=False)
    router = Router([full, down])
    router.send(sms())
    assert isinstance(result_of(router.send(sms())), QueueFullError)
    assert full.queue_depth == 1


def test_queue_full_when_the_parts_fit_nowhere(clock):
    tight = carrier("tight", clock, window=0, queue_size=1, default=True)
    error = result_of(Router([tight]).send(sms(text=LONG_TEXT)))
    assert isinstance(error, QueueFullError)
    assert tight.queue_depth == 0


def test_no_route_when_no_carrier_serves_the_destination(clock):
    router = Router([carrier("fr", clock, prefixes=["+33"])])
    error = result_of(router.send(sms(to="+4915112345678")))
    assert isinstance(error, NoRouteError) and "serves" in str(error)


def test_no_route_when_no_candidate_has_a_live_bind(clock):
    router = Router([carrier("a", clock, live=False, default=True),
                     carrier("b", clock, live=False, prefixes=["+33"])])
    error = result_of(router.send(sms()))
    assert isinstance(error, NoRouteError) and "live bind" in str(error)
    assert not router.available()


def test_pinned_carrier_without_a_live_bind_is_no_route_even_with_others_up(clock):
    router = Router([carrier("pinned", clock, live=False), carrier("up", clock, default=True)])
    assert isinstance(result_of(router.send(sms(carrier="pinned"))), NoRouteError)
    assert router.available()


def test_draining_carrier_is_not_chosen(clock):
    draining, up = carrier("draining", clock, mcc=["208"]), carrier("up", clock, default=True)
    draining.drain(5.0)
    d = Router([draining, up]).send(sms(mcc="208"))
    session_of(up).acceptAll()
    assert result_of(d).carrier == "up"


def test_unserved_names_each_destination_no_live_carrier_takes(clock):
    """A destination is served by a live carrier that names it, or else by a
    live default; the heartbeat turns false on any unserved one."""
    router = Router([carrier("uk", clock, live=False, mcc=["234"]),
                     carrier("fr", clock, prefixes=["+33"], mccmnc=["20801"]),
                     carrier("fr-backup", clock, live=False, prefixes=["+33"])])
    assert router.available() and router.unserved() == ["mcc:234"]
    with_default = Router([carrier("uk", clock, live=False, mcc=["234"]),
                           carrier("rest", clock, default=True)])
    assert with_default.unserved() == []
    default_down = Router([carrier("fr", clock, prefixes=["+33"]),
                           carrier("rest", clock, live=False, default=True)])
    assert default_down.unserved() == ["default"]


def test_a_destination_is_served_by_any_live_carrier_the_router_would_take(clock):
    """A send carries the client's MCC only when it is the number's region's,
    so MCC 208 traffic is for +33 (France) and +262 (Mayotte) numbers: live
    carriers with both prefixes take all of it.  A live MCC carrier takes its
    MCC-MNCs, and a live shorter prefix the longer one's numbers."""
    fr_down = carrier("fr-mcc", clock, live=False, mcc=["208"], mccmnc=["20801"],
                      prefixes=["+336"])
    router = Router([fr_down, carrier("fr", clock, prefixes=["+33"]),
                     carrier("yt", clock, prefixes=["+262"])])
    assert router.unserved() == []
    partial = Router([fr_down, carrier("fr", clock, prefixes=["+33"]),
                      carrier("by-mcc", clock, mcc=["234"]),
                      carrier("uk-one", clock, live=False, mccmnc=["23410"])])
    assert partial.unserved() == ["mccmnc:20801", "mcc:208"]  # Mayotte's numbers


def test_suspended_carrier_is_passed_over_as_if_down_and_drains_what_it_has(clock):
    """A suspended carrier takes no new send (the next one does; where none
    serves, the destination is unserved), while its queued parts still go out."""
    suspended = carrier("suspended", clock, mcc=["208"], window=0)
    up = carrier("up", clock, default=True)
    router = Router([suspended, up])
    queued = router.send(sms(mcc="208"))
    suspended.suspended = True
    d = router.send(sms(mcc="208"))
    session_of(up).acceptAll()
    assert result_of(d).carrier == "up"
    assert router.unserved() == []  # the default serves 208 meanwhile
    assert suspended.queue_depth == 1
    session_of(suspended).window = 1
    suspended._pump()
    session_of(suspended).acceptAll()
    assert result_of(queued).carrier == "suspended"
    up.suspended = True
    assert router.unserved() == ["mcc:208", "default"] and not router.available()


def test_router_use_changes_the_carriers_it_ranks(clock):
    old, new = carrier("old", clock, default=True), carrier("new", clock, mcc=["208"])
    router = Router([old])
    assert names(router, sms(mcc="208")) == ["old"]  # ranked, and the ranking kept
    router.use([old, new])
    assert names(router, sms(mcc="208")) == ["new", "old"]
    router.use([new])
    assert names(router, sms(mcc="208")) == ["new"]
    assert router.send(sms(mcc="208", to="+33698765432")) is not None
    assert old.queue_depth == 0 and len(session_of(new).submitted) == 1


def test_kept_rankings_follow_the_destination_prefix_and_the_carriers_state(clock):
    """A ranking is kept per prefix of the longest configured length: numbers that
    share it share the ranking, others do not; whether a carrier is bound or has
    room is looked at on every send."""
    long, short = carrier("long", clock, prefixes=["+336"]), carrier("short", clock,
                                                                        prefixes=["+33"])
    router = Router([short, long])
    assert names(router, sms(to="+33612345678")) == ["long", "short"]
    assert names(router, sms(to="+33698765432")) == ["long", "short"]
    assert names(router, sms(to="+33112345678")) == ["short"]
    assert names(router, sms(to="+3")) == []
    long.bindDown(None, session_of(long))
    clock.advance(long.config.reconnect_grace)
    router.send(sms(to="+33612345678"))
    assert len(session_of(short).submitted) == 1 and router.failovers[("long", "short")] == 1
