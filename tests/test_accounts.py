"""Carrier accounts shared by two daemons through a real Redis, measured at
the fake SMSC over real TCP.

Each "daemon" is what msisdnd.daemon builds for the carrier side: its own
txredisapi pool and TimedRedis, a SharedLeases, a SharedPermits and a
CarriersService, with a holder name of its own.  Both log in to one account
of one fake SMSC.
"""

from __future__ import annotations

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor, task
from twisted.internet.defer import gatherResults, inlineCallbacks

from msisdnd.sms.accounts import SLICE, Account, slice_tokens
from msisdnd.sms.interfaces import OutboundSMS
from msisdnd.smpp.bind import BindState
from msisdnd.smpp.config import CarrierConfig
from msisdnd.smpp.service import CarriersService
from msisdnd.state import keys
from msisdnd.state.accounts import SharedLeases, SharedPermits
from msisdnd.state.redis import TimedRedis

from conftest import free_port, wait_until

LEASE = 1.0


class Daemon:
    """The carrier side of one daemon, its limits shared through Redis."""

    def __init__(self, name: str, redis_port: int, config: CarrierConfig):
        self.pool = txredisapi.lazyConnectionPool(
            "127.0.0.1", redis_port, poolsize=2, reconnect=True, charset=None,
            convertNumbers=False)
        self.redis = TimedRedis(self.pool, reactor, timeout=1.0)
        self.leases = SharedLeases(self.redis, reactor)
        self.permits = SharedPermits(self.redis, reactor)
        self.carriers = CarriersService([config], reactor, send_timeout=10.0,
                                        drain_timeout=1.0, leases=self.leases,
                                        permits=self.permits, holder=name)
        self.running = False

    def start(self) -> "Daemon":
        self.permits.startService()
        self.carriers.startService()
        self.running = True
        return self

    @inlineCallbacks
    def stop(self):
        if self.running:
            self.running = False
            yield self.carriers.stopService()
            self.permits.stopService()
        yield self.pool.disconnect()

    def bound(self) -> int:
        return sum(1 for b in self.carriers.binds if b.state is BindState.BOUND)


def account_config(port: int, **overrides) -> CarrierConfig:
    return CarrierConfig.from_mapping({
        "name": "shared", "host": "127.0.0.1", "port": port, "system_id": "esme",
        "password": "pw", "default": True, "reconnect_delay_initial": 0.05,
        "reconnect_delay_max": 0.2, "reconnect_grace": 0.0, **overrides}, "carrier[shared]")


@pytest.fixture
def daemons(redis_server):
    redis_server.command("FLUSHALL")
    started: list[Daemon] = []

    def make(name: str, config: CarrierConfig) -> Daemon:
        daemon = Daemon(name, redis_server.port, config).start()
        started.append(daemon)
        return daemon

    yield make
    pytest_twisted.blockon(gatherResults([d.stop() for d in started]))


def busiest_second(times: list[float]) -> int:
    """The most submits in any one-second window (sliding, as an SMSC counts)."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(ordered):
        while ordered[first] <= t - 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest_twisted.inlineCallbacks
def test_two_daemons_keep_to_the_accounts_throughput_together(smsc_factory, daemons):
    """throughput = 50 on each of two daemons bound to one account: the SMSC
    sees at most 50 plus one lease per daemon in any second, while each
    daemon alone would send 50 a second."""
    harness = smsc_factory()
    config = account_config(harness.portNumber, throughput=50, window=50)
    one, two = daemons("one", config), daemons("two", config)
    yield wait_until(lambda: one.bound() and two.bound())
    sends = [daemon.carriers.router.send(OutboundSMS(f"+336120{i:05d}", "code"))
             for daemon in (one, two) for i in range(60)]
    yield gatherResults(sends)
    times = [m.received_at for m in harness.smsc.messages]
    assert len(times) == 120
    lease = slice_tokens(50, 0)
    assert busiest_second(times) <= 50 + 2 * lease
    # Both daemons sent; together they did not idle below the cap (no second
    # of the steady part saw much less than it).
    assert one.carriers.carriers[0].sent and two.carriers.carriers[0].sent
    assert max(times) - min(times) >= (120 - 50 - 2 * lease) / 50


@pytest_twisted.inlineCallbacks
def test_max_binds_hold_across_daemons_and_a_stopped_daemons_binds_move(smsc_factory,
                                                                       daemons):
    """max_binds = 2 and binds = 2 on each of two daemons: the SMSC never sees
    more than 2 binds; the daemon without permits says so and is down for
    routing; when the other stops, it binds within a lease time."""
    harness = smsc_factory()
    most = []

    def watch() -> bool:
        most.append(len(harness.smsc.bound))
        return False

    harness.smsc.waitFor(watch)
    config = account_config(harness.portNumber, binds=2, max_binds=2, bind_lease=LEASE)
    one = daemons("one", config)
    yield wait_until(lambda: one.bound() == 2)
    two = daemons("two", config)
    yield wait_until(lambda: all(b.state is BindState.NO_PERMIT for b in two.carriers.binds))
    health = two.carriers.health()
    assert health["carriers"][0]["waiting_permits"] == 2 and health["unserved"] == ["default"]
    assert [b["permit"] for b in two.carriers.snapshot()["binds"]] == ["waiting"] * 2
    assert not two.carriers.router.available()
    stopped_at = reactor.seconds()
    yield one.stop()
    yield wait_until(lambda: two.bound() == 2, timeout=LEASE + 2.0)
    assert reactor.seconds() - stopped_at <= LEASE + 0.5
    assert two.carriers.router.available()
    assert max(most) <= 2 and harness.smsc.bind_refusals == 0


@pytest_twisted.inlineCallbacks
def test_a_dead_daemons_permits_expire_after_their_lease(redis_server):
    """A holder that stops renewing (its daemon died) keeps its permit no
    longer than the lease, by Redis's clock."""
    redis_server.command("FLUSHALL")
    pools = [txredisapi.lazyConnectionPool("127.0.0.1", redis_server.port, charset=None,
                                           convertNumbers=False) for _ in range(2)]
    dead, alive = (SharedPermits(TimedRedis(pool, reactor), reactor) for pool in pools)
    account = Account("127.0.0.1:1:esme", max_binds=1, bind_lease=0.5)
    try:
        assert (yield dead.acquire(account, "dead/a/0", lambda: None))
        died = reactor.seconds()
        dead.stopService()  # no more renewals, and no release: it died
        while not (yield alive.acquire(account, "alive/a/0", lambda: None)):
            assert reactor.seconds() - died < 2.0, "the dead holder's permit never expired"
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert 0.3 <= reactor.seconds() - died <= account.bind_lease + 0.3
    finally:
        alive.stopService()
        yield gatherResults([pool.disconnect() for pool in pools])


@pytest_twisted.inlineCallbacks
def test_a_live_holder_renews_its_permit_and_hears_when_another_took_it(redis_server):
    """Renewals keep a permit past its lease; a permit that another holder
    took meanwhile (its lease ran out while Redis was unreachable, say) is
    lost, and its holder told."""
    redis_server.command("FLUSHALL")
    pools = [txredisapi.lazyConnectionPool("127.0.0.1", redis_server.port, charset=None,
                                           convertNumbers=False) for _ in range(2)]
    live, other = (SharedPermits(TimedRedis(pool, reactor), reactor) for pool in pools)
    account = Account("127.0.0.1:1:esme", max_binds=1, bind_lease=0.3)
    lost = []
    try:
        assert (yield live.acquire(account, "live/a/0", lambda: lost.append(True)))
        yield task.deferLater(reactor, 1.0, lambda: None)  # three leases, renewed
        assert not (yield other.acquire(account, "other/a/0", lambda: None)) and not lost
        key = keys.account_binds(account.key).decode()
        redis_server.command("ZADD", key, "99999999999999", "other/a/0")  # taken meanwhile
        redis_server.command("ZREM", key, "live/a/0")
        yield wait_until(lambda: lost, timeout=1.0)
    finally:
        live.stopService()
        other.stopService()
        yield gatherResults([pool.disconnect() for pool in pools])


@pytest_twisted.inlineCallbacks
def test_without_redis_a_daemon_keeps_to_its_local_share():
    """Redis away: tokens and permits come from the daemon's share of the
    account (its limits over expected_daemons), not from nowhere and not
    without a cap."""
    pool = txredisapi.lazyConnectionPool("127.0.0.1", free_port(), charset=None,
                                         reconnect=False, convertNumbers=False)
    redis = TimedRedis(pool, reactor, timeout=0.2)
    account = Account("127.0.0.1:1:esme", throughput=50, max_binds=3, daemons=2)
    leases, permits = SharedLeases(redis, reactor), SharedPermits(redis, reactor)
    try:
        first = yield leases.take(account, 100)
        more = yield leases.take(account, 100)
        if more.slice != first.slice:  # a slice ended between the two
            first, more = more, (yield leases.take(account, 100))
        assert first.tokens in (2, 3) and 0 < first.ttl <= SLICE  # 25/s, not 50/s
        assert more.slice != first.slice or more.tokens == 0
        held = []
        for i in range(3):
            held.append((yield permits.acquire(account, f"d/{i}", lambda: None)))
        assert held == [True, False, False]  # 3 binds over 2 daemons: 1 here
    finally:
        permits.stopService()
        yield pool.disconnect()


def _json(url: str) -> dict:
    import json
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.loads(resp.read())


@pytest_twisted.inlineCallbacks
def test_two_twistd_daemons_share_max_binds(smsc_factory, redis_server, tmp_path):
    """Real daemons: with max_binds = 1 the second waits for the permit (503
    on its heartbeat, no_permit in /binds and /health) while the SMSC holds
    one bind; SIGTERM to the first and the second binds within a lease."""
    from test_daemon import Running, heartbeat_ok, scrape, start, write_config

    redis_server.command("FLUSHALL")
    harness = smsc_factory()
    most = []
    harness.smsc.waitFor(lambda: most.append(len(harness.smsc.bound)) and False)
    running = []
    try:
        for name in ("one", "two"):
            where = tmp_path / name
            where.mkdir()
            api, admin = free_port(), free_port()
            config = write_config(where, harness.portNumber, redis_server.port, api, admin)
            with open(config, "a") as f:
                f.write(f"max_binds = 1\nbind_lease = {LEASE}\n")
            process, log = start(config, where)
            running.append(Running(process, f"http://127.0.0.1:{api}",
                                   f"http://127.0.0.1:{admin}", log))
            if name == "one":
                yield wait_until(lambda: heartbeat_ok(running[0]), timeout=30, interval=0.1)
        one, two = running

        def waiting() -> bool:
            try:
                return _json(two.admin + "/health")["carriers"][0]["waiting_permits"] == 1
            except OSError:
                return False

        yield wait_until(waiting, timeout=30, interval=0.1)
        assert not heartbeat_ok(two)
        assert [b["state"] for b in _json(two.admin + "/binds")["binds"]] == ["no_permit"]
        assert scrape(two.admin)['msisdnd_binds_waiting_permit{carrier="fake"}'] == 1
        one.process.terminate()
        yield wait_until(lambda: one.process.poll() is not None, timeout=20, interval=0.05)
        stopped_at = reactor.seconds()
        yield wait_until(lambda: heartbeat_ok(two), timeout=LEASE + 5, interval=0.05)
        assert reactor.seconds() - stopped_at <= LEASE + 1.0
        assert max(most) == 1 and harness.smsc.bind_refusals == 0
    finally:
        for daemon in running:
            if daemon.process.poll() is None:
                daemon.process.terminate()
                try:
                    yield wait_until(lambda: daemon.process.poll() is not None, timeout=20,
                                     interval=0.05)
                except AssertionError:
                    daemon.process.kill()
                    daemon.process.wait()


@pytest_twisted.inlineCallbacks
def test_a_bind_refused_its_permit_keeps_waiting_while_redis_is_away(tmp_path):
    """Holders keep their permits while Redis is away, so a daemon Redis had
    refused a permit (every one held) keeps its binds waiting instead of
    taking its local share: two daemons never hold more than max_binds.  A
    daemon that never heard from Redis keeps to its local share."""
    from conftest import RedisServer, redis_executable

    server = RedisServer(redis_executable(), free_port(), str(tmp_path))
    server.start()
    account = Account("127.0.0.1:1:esme", max_binds=2, bind_lease=5.0, daemons=2)
    daemons = []
    for _ in range(3):
        pool = txredisapi.lazyConnectionPool("127.0.0.1", server.port, charset=None,
                                             convertNumbers=False)
        daemons.append((pool, SharedPermits(TimedRedis(pool, reactor, timeout=0.3), reactor)))
    (_, first), (_, second), (_, third) = daemons

    @inlineCallbacks
    def ask(permits, *holders):
        answers = []
        for holder in holders:
            answers.append((yield permits.acquire(account, holder, lambda: None)))
        return answers

    try:
        assert (yield ask(first, "a/0", "a/1")) == [True, True]
        assert (yield ask(second, "b/0")) == [False]
        server.stop()
        assert (yield ask(second, "b/0", "b/1")) == [False, False]
        assert (yield ask(third, "c/0", "c/1")) == [True, False]
    finally:
        for pool, permits in daemons:
            permits.stopService()
            yield pool.disconnect()
        server.stop()
