"""Redis Sentinel failover with real processes: one master, one replica and
three sentinels on loopback (tests/sentinels.py), the gateway or the daemon
in front of them.

What is shown: a failover under load answers each request with success or a
clean 503 (never a 500; a flow begun before the kill may meet the loss
window of asynchronous replication) and serves again without a restart; a session
verified before it still signs certificates after it; scripts come back on
the promoted replica after SCRIPT FLUSH (NOSCRIPT); a master demoted under
our feet (READONLY) makes the pool ask the sentinels again.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import signal
import sys
import tempfile
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from msisdnd.config import RedisConfig
from msisdnd.state.connection import RedisWatch, SentinelMaster, connect_alone, connect_pool
from msisdnd.state.redis import StoreUnavailable, TimedRedis

from conftest import redis_executable, wait_until
from sentinels import LEAST_PRIVILEGE, MASTER_NAME, SentinelGroup, command, info

@pytest.fixture
def group():
    directory = tempfile.mkdtemp(prefix="msisdnd-sentinel-")
    running = SentinelGroup(redis_executable(), directory,
                            users={"msisdnd": ("least-pw", LEAST_PRIVILEGE),
                                   "norole": ("pw", LEAST_PRIVILEGE.replace(" +role", ""))})
    try:
        running.start()
        yield running
    finally:
        running.stop()
        shutil.rmtree(directory, ignore_errors=True)


def settings_for(group: SentinelGroup, **more) -> RedisConfig:
    return RedisConfig(sentinels=tuple(("127.0.0.1", s.port) for s in group.sentinels),
                       master_name=MASTER_NAME, quorum=2, discovery_timeout=1.0, timeout=1.0,
                       **more)


@pytest.fixture
def logged():
    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def warnings(seen: list[dict]) -> list[str]:
    return [formatEvent(e) for e in seen if e.get("log_level") is LogLevel.warn]


@inlineCallbacks
def answering(redis: TimedRedis, timeout: float = 10.0):
    """Wait until C{redis} answers a PING."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            yield redis.ping()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            yield task.deferLater(reactor, 0.05, lambda: None)  # a turn: a ping may fail at once


@pytest_twisted.inlineCallbacks
def test_a_failover_under_load_answers_503_or_success_and_resumes(group, tmp_path_factory,
                                                                  logged):
    """Flows run four at a time while the master is killed: every answer is
    a success or a 503 with Retry-After (a flow begun before the kill may
    also meet the loss window: its session or code not replicated); the
    gateway serves again (no restart) within the failover's time plus a few
    seconds; the session verified before (replication caught up) still
    signs; and after SCRIPT FLUSH on the promoted replica the scripts are
    loaded again (Redis counts the NOSCRIPT).
    The daemon's user has the README's least-privilege ACL."""
    from gateway import start_gateway, verified_session
    from test_api_flows import rsa_browserid_key

    settings = settings_for(group, username="msisdnd", password="least-pw")
    master = SentinelMaster(settings, reactor)
    master.startService()
    pool = connect_pool(settings, master=master)
    gateway = yield start_gateway(pool, tmp_path_factory.mktemp("keys"))
    numbers = (f"+3361{n:07d}" for n in itertools.count(1))
    #: (when answered, when its flow began, step, status, Retry-After, errno)
    answers: list[tuple[float, float, str, int, str | None, int | None]] = []

    @inlineCallbacks
    def flow():
        """One MT flow to a verified session; stops at the first refusal."""
        number, began, token = next(numbers), time.monotonic(), None
        for step in ("register", "verify", "verify_code"):
            if step == "register":
                response = yield gateway.call("POST", "/register")
            elif step == "verify":
                response = yield gateway.call("POST", "/sms/mt/verify", {
                    "msisdn": number, "mcc": "208", "shortVerificationCode": True}, token=token)
            else:
                pin = yield gateway.pin(number)
                response = yield gateway.call("POST", "/sms/verify_code", {"code": pin},
                                              token=token)
            errno = response.body.get("errno") if isinstance(response.body, dict) else None
            answers.append((time.monotonic(), began, step, response.code,
                            response.headers.get("retry-after"), errno))
            if response.code not in (200, 204):
                return
            if step == "register":
                token = response.body["msisdnSessionToken"]

    running = [True]

    @inlineCallbacks
    def user():
        while running[0]:
            yield flow()

    try:
        yield answering(gateway.store)
        token, _ = yield verified_session(gateway, "+33612345678")
        yield wait_until(group.caught_up, timeout=5)
        users = [user() for _ in range(4)]
        yield wait_until(lambda: len(answers) >= 20, timeout=10)
        old = group.master_port()
        killed = time.monotonic()
        group.kill_master()
        yield wait_until(lambda: group.master_port() not in (old, None), timeout=15)
        promoted = time.monotonic()
        yield wait_until(lambda: any(t > promoted and a[2] == 200 for t, *a in answers),
                         timeout=8)
        serving = time.monotonic()
        signed = yield gateway.call("POST", "/certificate/sign", {
            "publicKey": rsa_browserid_key(), "duration": 60}, token=token)
        new_master = group.master().port
        # Enough flows that every connection has cached the scripts, then none.
        yield wait_until(lambda: len(answers) >= 40 + sum(t < serving for t, *_ in answers),
                         timeout=10)
        command(new_master, "SCRIPT", "FLUSH")
        flushed = len(answers)
        yield wait_until(lambda: len(answers) >= flushed + 20, timeout=10)
        running[0] = False
        yield DeferredList(users)
        again = yield verified_session(gateway, "+33612345679")
    finally:
        running[0] = False
        yield gateway.stop()
        yield gateway.smsc.stop()
        yield pool.disconnect()
        yield master.stopService()

    # A flow begun before the kill may meet the loss window (README, "More
    # than one machine"): its session (401, errno 110) or its code (400,
    # errno 105) acknowledged by the old master and not yet replicated.
    window = {(401, 110), (400, 105)}
    for ended, began, step, code, retry, errno in answers:
        assert code in (200, 204, 503) or (began < killed and (code, errno) in window), \
            (step, code, errno, began - killed)
        assert code != 503 or retry == "1"
    # The load straddled the kill (a failover shorter than store_timeout
    # may hold requests and answer them from the new master: no 503 then).
    assert any(began < killed < t for t, began, *_ in answers)
    assert serving - killed < (promoted - killed) + 5
    assert signed.code == 200 and signed.body["cert"], signed
    assert again[0]
    noscript = info(new_master, "errorstats").get("errorstat_NOSCRIPT", "count=0")
    assert int(noscript.split("=")[1].split(",")[0]) > 0, "no script was reloaded"
    lines = warnings(logged)
    assert any(f"Redis master {MASTER_NAME!r} moved from 127.0.0.1:{old} to "
               f"127.0.0.1:{new_master}" in line for line in lines), lines


def repoint_sentinels(group: SentinelGroup, port: int) -> None:
    """Make every sentinel watch the server on C{port} as the master (what
    they would conclude after a failover we stage by hand)."""
    for s in group.sentinels:
        command(s.port, "SENTINEL", "REMOVE", MASTER_NAME)
        command(s.port, "SENTINEL", "MONITOR", MASTER_NAME, "127.0.0.1", str(port), "2")
        command(s.port, "SENTINEL", "SET", MASTER_NAME, "down-after-milliseconds", "500")


@pytest_twisted.inlineCallbacks
def test_a_demoted_master_answering_readonly_makes_the_pool_rediscover(group, logged):
    """The master is made a replica under the pool's feet (REPLICAOF keeps
    its clients connected): its READONLY answer to a script is a
    StoreUnavailable (503), not an error, and the pool asks the sentinels
    again and writes to the new master, without a restart."""
    from msisdnd.state.lua import Script

    settings = settings_for(group)
    master = SentinelMaster(settings, reactor)
    master.startService()
    pool = connect_pool(settings, master=master, poolsize=1)
    redis = TimedRedis(pool, reactor, timeout=1.0)
    incr = Script(keys=("counter",), args=(), body="return redis.call('INCR', KEY.counter)")
    try:
        yield answering(redis)
        assert (yield incr.run(redis, counter=b"c")) == 1
        old, new = group.master().port, group.replica().port
        yield wait_until(group.caught_up, timeout=5)
        command(new, "REPLICAOF", "NO", "ONE")
        repoint_sentinels(group, new)
        yield wait_until(lambda: group.master_port() == new
                         and group.settled(others=1, replicas=0), timeout=10)
        command(old, "REPLICAOF", "127.0.0.1", str(new))
        assert master.address == f"127.0.0.1:{old}"
        refused = yield DeferredList([incr.run(redis, counter=b"c") for _ in range(5)],
                                     consumeErrors=True)
        assert all(not ok and "READONLY" in str(f.value) for ok, f in refused), refused
        outcomes = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                outcomes.append((yield incr.run(redis, counter=b"c")))
                break
            except StoreUnavailable as e:
                outcomes.append(e)
        assert outcomes[-1] == 2, outcomes
        assert master.address == f"127.0.0.1:{new}"
    finally:
        yield pool.disconnect()
        yield master.stopService()
    lines = warnings(logged)
    said = [line for line in lines if "answered READONLY (a master demoted); asking the "
            "sentinels again" in line]
    assert len(said) == 1, lines  # once, not once per write in flight


@pytest_twisted.inlineCallbacks
def test_the_watch_warns_of_an_evicting_redis_or_one_it_cannot_ask(redis_server, logged):
    """maxmemory-policy allkeys-lru is a warning naming it; a user refused
    CONFIG gets one saying the policy could not be checked; noeviction is quiet."""
    import txredisapi

    redis_server.command("ACL", "SETUSER", "noconfig", "on", ">pw", "~*", "+@all", "-config")
    pools = [txredisapi.lazyConnectionPool("127.0.0.1", redis_server.port, poolsize=1,
                                           charset=None, convertNumbers=False, **credentials)
             for credentials in ({}, {"username": "noconfig", "password": "pw"})]
    address = f"127.0.0.1:{redis_server.port}"
    try:
        for policy, pool, expected in (
                ("noeviction", pools[0], None),
                ("allkeys-lru", pools[0], "has maxmemory-policy allkeys-lru, not noeviction"),
                ("allkeys-lru", pools[1], "Could not check the maxmemory-policy")):
            redis_server.command("CONFIG", "SET", "maxmemory-policy", policy)
            del logged[:]
            watch = RedisWatch(TimedRedis(pool, reactor), address, reactor)
            yield watch.checkPolicy()
            lines = [line for line in warnings(logged) if address in line]
            assert (lines == []) if expected is None else (len(lines) == 1
                                                           and expected in lines[0]), lines
    finally:
        redis_server.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
        redis_server.command("ACL", "DELUSER", "noconfig")
        for pool in pools:
            yield pool.disconnect()


@pytest_twisted.inlineCallbacks
def test_the_daemon_follows_the_master_the_sentinels_name(group, smsc_factory, tmp_path):
    """`twistd msisdnd` with [redis] sentinels: it logs where the master is,
    warns that its maxmemory-policy evicts, serves, and after the master is
    killed serves again from the promoted replica, saying it moved."""
    from twisted.internet.utils import getProcessOutputAndValue

    from test_daemon import Running, heartbeat_ok, start, write_config

    from conftest import free_port

    command(group.master().port, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    harness = smsc_factory()
    api_port = free_port()
    config = write_config(tmp_path, harness.portNumber, 1, api_port, free_port())
    sentinels = ", ".join(f'"{a}"' for a in group.sentinel_addresses)
    with open(config) as f:
        text = f.read().replace('url = "redis://127.0.0.1:1/0"',
                                f'sentinels = [{sentinels}]\nmaster_name = "{MASTER_NAME}"')
    with open(config, "w") as f:
        f.write(text)
    process, log_path = start(config, tmp_path)
    running = Running(process, f"http://127.0.0.1:{api_port}", "", log_path)
    try:
        yield wait_until(lambda: heartbeat_ok(running), timeout=30, interval=0.1)
        old = group.master_port()
        yield wait_until(lambda: "maxmemory-policy allkeys-lru" in running.log(), timeout=20)
        group.kill_master()

        @inlineCallbacks
        def registers():
            response = yield treq.post(running.api + "/register", timeout=10)
            yield response.content()
            return response.code

        # The sentinels take their own time to promote the replica (a split
        # election is retried after 2 x failover-timeout); from then on, the
        # daemon has a few seconds to serve again.
        codes, promoted = [], None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and codes[-1:] != [200]:
            codes.append((yield registers()))
            if promoted is None and any(group.master_port(s) not in (old, None)
                                        for s in group.sentinels):
                promoted = time.monotonic()
                deadline = promoted + 10
        assert set(codes) <= {200, 503} and codes[-1] == 200, (codes, promoted)
        new = group.master_port()
        yield wait_until(lambda: {group.master_port(s) for s in group.sentinels} == {new},
                         timeout=20, interval=0.05)
        # The operator's tools find the master the same way.
        command(new, "SET", "ml:block:prefix:+3361234", "1")
        out, err, code = yield getProcessOutputAndValue(
            os.path.join(os.path.dirname(sys.executable), "msisdnd"),
            ["blocks", "--config", config], env=dict(os.environ))
        assert code == 0 and out.decode().split()[:2] == ["prefix", "+3361234"], err
    finally:
        process.terminate()
        yield wait_until(lambda: process.poll() is not None, timeout=20, interval=0.05)
    log = running.log()
    assert f"Redis master {MASTER_NAME!r} is at 127.0.0.1:{old}" in log, log
    assert f"moved from 127.0.0.1:{old} to 127.0.0.1:{new} (a failover)" in log, log
    assert process.returncode == 0, log


@pytest_twisted.inlineCallbacks
def test_a_connection_of_its_own_and_a_user_without_role(group, logged):
    """A connection of its own (the webhooks' blocking reads, the operator's
    tools) reaches the master, and fails in bounded time with a master name
    the sentinels do not know.  The Sentinel client asks ROLE of each new
    connection: a user refused it never connects, and one warning (not one
    per retry) says why."""
    for name, works in ((MASTER_NAME, True), ("nosuch", False)):
        settings = dataclasses.replace(settings_for(group, username="msisdnd",
                                                    password="least-pw"), master_name=name)
        master = SentinelMaster(settings, reactor)
        master.startService()
        try:
            if works:
                alone = yield connect_alone(settings, master=master)
                assert (yield alone.execute_command("PING")) == b"PONG"
                yield alone.disconnect()
            else:
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match="'nosuch'"):
                    yield connect_alone(settings, master=master)
                assert time.monotonic() - started < 5
        finally:
            yield master.stopService()

    settings = settings_for(group, username="norole", password="pw")
    master = SentinelMaster(settings, reactor)
    master.startService()
    pool = connect_pool(settings, master=master, poolsize=2)
    redis = TimedRedis(pool, reactor, timeout=0.5)
    try:
        yield wait_until(lambda: any("refused ROLE" in line for line in warnings(logged)),
                         timeout=10)
        with pytest.raises(StoreUnavailable):
            yield redis.ping()
    finally:
        yield pool.disconnect()
        yield master.stopService()
    refusals = [line for line in warnings(logged) if "refused ROLE" in line]
    assert len(refusals) == 1 and "+role" in refusals[0] and "NOPERM" in refusals[0], refusals


@pytest_twisted.inlineCallbacks
def test_a_full_redis_is_a_store_unavailable(redis_pool, redis_server):
    """With noeviction, a Redis at its maxmemory refuses writes (OOM): the
    daemon says the store is unavailable (503), as for a replica, and reads
    still work."""
    redis = TimedRedis(redis_pool, reactor)
    yield redis.call("set", b"ms:kept", b"1")
    redis_server.command("CONFIG", "SET", "maxmemory", "1")
    try:
        with pytest.raises(StoreUnavailable, match="OOM"):
            yield redis.call("set", b"ms:more", b"1")
        assert (yield redis.call("get", b"ms:kept")) == b"1"
    finally:
        redis_server.command("CONFIG", "SET", "maxmemory", "0")


@pytest_twisted.inlineCallbacks
def test_a_connection_of_its_own_asks_the_sentinels_again_until_its_deadline(group, logged):
    """Just after a failover the sentinels flag the new master down for a
    moment, so one discovery can fail: a connection of its own (the
    operator's tools, the webhooks' blocking reads) asks again until its
    deadline instead of failing at the first answer."""
    port = group.master_port()
    for sentinel in group.sentinels:
        command(sentinel.port, "SENTINEL", "REMOVE", MASTER_NAME)
    settings = dataclasses.replace(settings_for(group), quorum=1, discovery_timeout=0.3,
                                   timeout=2.0)
    master = SentinelMaster(settings, reactor)
    master.startService()
    try:
        pending = connect_alone(settings, master=master)
        yield wait_until(lambda: any("get address from Sentinel" in formatEvent(e)
                                     for e in logged), timeout=5)
        for sentinel in group.sentinels:
            command(sentinel.port, "SENTINEL", "MONITOR", MASTER_NAME, "127.0.0.1", str(port), "1")
        alone = yield pending
        assert (yield alone.execute_command("PING")) == b"PONG"
        yield alone.disconnect()
    finally:
        yield master.stopService()


@pytest_twisted.inlineCallbacks
def test_a_master_gone_without_a_word_is_left_for_the_promoted_replica(group):
    """A master whose host froze or was cut off sends no reset: the pool's
    one connection stays open and no reply comes.  A reply that long
    overdue drops the connection, and the pool finds the promoted replica."""
    settings = settings_for(group)
    master = SentinelMaster(settings, reactor)
    master.startService()
    pool = connect_pool(settings, master=master, poolsize=1)
    redis = TimedRedis(pool, reactor, timeout=0.5)
    frozen = group.master()
    try:
        yield answering(redis)
        frozen.process.send_signal(signal.SIGSTOP)
        yield wait_until(lambda: group.master_port() not in (frozen.port, None), timeout=30,
                         interval=0.05)
        yield answering(redis, timeout=15)
        assert master.address == f"127.0.0.1:{group.master_port()}"
    finally:
        frozen.process.send_signal(signal.SIGCONT)
        yield pool.disconnect()
        yield master.stopService()
