"""Carrier accounts' shared limits, in memory: the slice arithmetic, the local
token and permit sources, a carrier spending leased tokens (task.Clock,
StringTransport sessions), and binds waiting for a permit (SMPPBind over a
MemoryReactorClock, the pattern of tests/test_bind_unit.py).

The Redis-backed sources, across two daemons' connections, are in
tests/test_accounts.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from msisdnd.sms.accounts import (SLICE, Account, IBindPermits, IThroughputLeases, Lease,
                                  LocalLeases, LocalPermits, slice_tokens)
from msisdnd.sms.interfaces import NoRouteError
from msisdnd.smpp.bind import BindState, SMPPBind
from msisdnd.smpp.carrier import Carrier
from msisdnd.smpp.config import CarrierConfig
from msisdnd.smpp.router import Router

from test_carrier_unit import Link, Results, sms

NOW = 1_764_521_433.0
ACCOUNT = Account("127.0.0.1:2775:esme", throughput=50, max_binds=2, bind_lease=2.0, daemons=2)


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(NOW)
    return c


def config(name: str = "a", **overrides) -> CarrierConfig:
    return CarrierConfig.from_mapping({
        "name": name, "host": "127.0.0.1", "system_id": "esme", "password": "pw",
        "default": True, **overrides}, f"carrier[{name}]")


# -- the slices ------------------------------------------------------------------------


@given(rate=st.floats(0.01, 5000), start=st.integers(0, 10**11))
def test_any_second_of_slices_holds_the_rate_and_at_most_one_slice_more(rate, start):
    """Ten slices hold floor(rate) or ceil(rate) tokens; eleven (what a sliding
    second can touch) at most that plus one slice's share, rounded up."""
    rate = round(rate, 3)
    ten = sum(slice_tokens(rate, n) for n in range(start, start + 10))
    assert int(rate) <= ten <= int(rate) + 1
    eleven = ten + slice_tokens(rate, start + 10)
    assert eleven <= rate + rate * SLICE + 1


def test_local_leases_grant_a_slice_at_most_until_it_ends(clock):
    leases = LocalLeases(clock)
    assert verifyObject(IThroughputLeases, leases)
    clock.advance(0.03)
    first = leases.take(ACCOUNT, 3).result
    rest = leases.take(ACCOUNT, 100).result
    assert (first.tokens, rest.tokens) == (3, 2)  # 50/s: 5 in a slice of 0.1 s
    assert first.ttl == pytest.approx(0.07, abs=0.001)
    assert leases.take(ACCOUNT, 1).result.tokens == 0
    leases.giveBack(ACCOUNT, rest, 2)
    assert leases.take(ACCOUNT, 9).result.tokens == 2
    clock.advance(first.ttl)
    assert leases.take(ACCOUNT, 9).result.tokens == 5  # a new slice


def test_the_local_share_divides_by_the_expected_daemons(clock):
    shared = LocalLeases(clock, divisor=None)
    clock.advance(SLICE / 2)
    granted = 0
    for _ in range(10):
        granted += shared.take(ACCOUNT, 100).result.tokens
        clock.advance(SLICE)
    assert granted == 25  # 50/s over 2 daemons, for one second


def test_local_permits_count_holders_and_take_back_released_ones():
    permits = LocalPermits()
    assert verifyObject(IBindPermits, permits)
    nothing = lambda: None  # noqa: E731
    assert permits.acquire(ACCOUNT, "d1/a/0", nothing).result
    assert permits.acquire(ACCOUNT, "d1/a/0", nothing).result  # a renewal
    assert permits.acquire(ACCOUNT, "d1/a/1", nothing).result
    assert not permits.acquire(ACCOUNT, "d2/a/0", nothing).result
    permits.release(ACCOUNT, "d1/a/1")
    assert permits.acquire(ACCOUNT, "d2/a/0", nothing).result
    share = LocalPermits(shared=False)
    assert share.acquire(ACCOUNT, "x", nothing).result
    assert not share.acquire(ACCOUNT, "y", nothing).result  # 2 binds over 2 daemons


# -- a carrier spending its account's tokens --------------------------------------------


def pump(clock, links, seconds: float, step: float = 0.01) -> list[float]:
    """Answer every submit the links write for C{seconds}; their times."""
    times = []
    for _ in range(round(seconds / step)):
        for link in links:
            for submit in link.written():
                times.append(clock.seconds())
                link.answer(submit)
        clock.advance(step)
    return times


def test_two_carriers_on_one_account_share_its_throughput(clock):
    """Two carriers of one account (as two daemons would be) together keep
    to the cap plus one slice in any second, and between them use all of it."""
    leases = LocalLeases(clock)
    carriers = [Carrier(config(name, throughput=50, window=100), clock, leases=leases)
                for name in ("a", "b")]
    links = [Link(clock, c, window=100) for c in carriers]
    for c in carriers:
        for i in range(100):
            c.send(sms(to=f"+336123{i:05d}")).addErrback(lambda f: None)
    times = pump(clock, links, 2.0)
    assert len(times) >= 95  # the cap, shared: about 100 in two seconds
    for start in times:
        assert sum(1 for t in times if start <= t < start + 1.0) <= 50 + 5


@implementer(IThroughputLeases)
class HeldLeases:
    """Leases granted when the test says so."""

    def __init__(self):
        self.asked: list[tuple[int, Deferred]] = []
        self.returned: list[tuple[Lease, int]] = []

    def take(self, account, want):
        d = Deferred()
        self.asked.append((want, d))
        return d

    def giveBack(self, account, lease, unused):
        self.returned.append((lease, unused))


def test_a_carrier_asks_once_for_what_its_queue_holds_and_waits_for_it(clock):
    leases = HeldLeases()
    c = Carrier(config(throughput=50), clock, leases=leases)
    link = Link(clock, c)
    for i in range(4):
        c.send(sms(to=f"+3361234567{i}")).addErrback(lambda f: None)
    assert [want for want, _ in leases.asked] == [1]  # the first send asked; the rest wait
    assert link.written() == []
    leases.asked[0][1].callback(Lease(3, 0.05, 7))
    assert len(link.written()) == 3
    assert [want for want, _ in leases.asked[1:]] == [1]  # one part left
    leases.asked[1][1].callback(Lease(0, 0.05, 7))  # the slice is spent
    assert link.written() == []
    clock.advance(0.05)
    assert [want for want, _ in leases.asked[2:]] == [1]  # asked again as the slice ended


def test_tokens_left_go_back_when_the_last_bind_drops(clock):
    leases = HeldLeases()
    c = Carrier(config(throughput=50), clock, leases=leases)
    link = Link(clock, c)
    c.send(sms()).addErrback(lambda f: None)
    lease = Lease(5, 0.08, 3)
    leases.asked[0][1].callback(lease)
    assert len(link.written()) == 1
    link.drop()
    assert leases.returned == [(lease, 4)]


def test_without_a_throughput_no_tokens_are_asked(clock):
    leases = HeldLeases()
    c = Carrier(config(), clock, leases=leases)
    link = Link(clock, c)
    c.send(sms()).addErrback(lambda f: None)
    assert leases.asked == [] and len(link.written()) == 1


# -- binds waiting for a permit ---------------------------------------------------------


class PermitHarness:
    """Binds of one carrier with max_binds on a MemoryReactorClock, sharing C{permits}."""

    def __init__(self, permits, binds: int = 2, **overrides):
        self.reactor = MemoryReactorClock()
        self.config = config(binds=binds, max_binds=1, bind_lease=2.0, **overrides)
        self.carrier = Carrier(self.config, self.reactor)
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", 2775)
        self.binds = [SMPPBind(f"a/{i}", spec, self.config, endpoint, self.reactor,
                               self.carrier, jitter=lambda: 0.0, permits=permits,
                               holder="daemon")
                      for i, spec in enumerate(self.config.session_specs)]

    def start(self) -> list[SMPPBind]:
        for bind in self.binds:
            bind.startService()
        return self.binds


def test_a_bind_without_a_permit_waits_and_the_carrier_is_down_for_routing():
    harness = PermitHarness(LocalPermits())
    first, second = harness.start()
    assert len(harness.reactor.tcpClients) == 1  # only the permit holder connects
    assert (first.permit_held, second.state) == (True, BindState.NO_PERMIT)
    assert second.snapshot()["permit"] == "waiting" and harness.carrier.waiting_permits == 1
    assert not harness.carrier.available
    results = Results()
    results.add(Router([harness.carrier]).send(sms()))
    assert results.values[0].check(NoRouteError)
    # The holder's connection fails: its permit goes back, and the waiting bind
    # takes it at its next ask, a quarter of bind_lease later.
    harness.reactor.tcpClients[0][2].clientConnectionFailed(
        harness.reactor.connectors[0], Failure(ConnectionRefusedError()))
    assert not first.permit_held
    harness.reactor.advance(0.5)
    assert second.permit_held and second.state is BindState.CONNECTING
    assert len(harness.reactor.tcpClients) == 2 and harness.carrier.waiting_permits == 0


def test_stopping_a_waiting_bind_stops_asking():
    permits = LocalPermits()
    harness = PermitHarness(permits)
    first, second = harness.start()
    second.stopService()
    first._releasePermit()
    harness.reactor.advance(5.0)
    assert not second.permit_held and permits.holders[harness.binds[0].account.key] == set()
    assert harness.carrier.waiting_permits == 0


@implementer(IBindPermits)
class Granting:
    """Grants every permit, keeping what to call when one is lost."""

    def __init__(self):
        self.lost = []

    def acquire(self, account, holder, lost):
        self.lost.append(lost)
        return succeed(True)

    def release(self, account, holder):
        pass


def test_a_lost_permit_ends_the_session():
    permits = Granting()
    harness = PermitHarness(permits, binds=1)
    (bind,) = harness.binds
    bind.startService()
    protocol = harness.reactor.tcpClients[-1][2].buildProtocol(None)
    transport = StringTransportWithDisconnection()
    transport.protocol = protocol
    protocol.makeConnection(transport)
    assert bind.state is BindState.BINDING and bind.permit_held
    permits.lost[0]()
    assert not bind.permit_held and not transport.connected
