"""The session store's Lua scripts against a real redis-server."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from msisdnd.state.sessions import (
    CheckOutcome,
    Nonce,
    NonceReplayed,
    SendOutcome,
    SessionStore,
    StoreUnavailable,
)

REF = b"r" * 16
NUMBER = b"n" * 16


@pytest.fixture
def store(redis_pool):
    return SessionStore(redis_pool, reactor, timeout=1.0)


def start(store, now, number=NUMBER, code=b"c" * 16, cooldown=30_000, max_sends=4):
    return store.startSend(REF, number_ref=number, sealed_number=b"sealed", code_mac=code,
                           now_ms=now, code_ttl_ms=600_000, cooldown_ms=cooldown,
                           max_sends=max_sends, session_ttl_ms=1_800_000)


@pytest_twisted.inlineCallbacks
def test_send_limits_one_number_cooldown_and_cap(store):
    """A session takes one number; sends inside the cooldown and past the cap are refused."""
    assert (yield start(store, 1000)).outcome is SendOutcome.NO_SESSION
    yield store.createSession(REF, b"k" * 32, 1_800_000)
    first = yield start(store, 1000)
    assert (first.outcome, first.sends) == (SendOutcome.STARTED, 1)
    soon = yield start(store, 11_000)
    assert (soon.outcome, soon.wait_ms) == (SendOutcome.COOLDOWN, 20_000)
    other = yield start(store, 100_000, number=b"m" * 16)
    assert other.outcome is SendOutcome.OTHER_NUMBER
    for i, now in enumerate((40_000, 80_000, 120_000), start=2):
        assert (yield start(store, now)).sends == i
    capped = yield start(store, 200_000)
    assert capped.outcome is SendOutcome.CAPPED


@pytest_twisted.inlineCallbacks
def test_abort_gives_the_send_back(store):
    """An SMS that never went out does not count against cooldown or cap."""
    yield store.createSession(REF, b"k" * 32, 1_800_000)
    started = yield start(store, 1000, code=b"a" * 16)
    yield store.abortSend(REF, b"a" * 16, started)
    again = yield start(store, 2000, code=b"b" * 16)
    assert (again.outcome, again.sends) == (SendOutcome.STARTED, 1)
    check = yield store.beginCheck(REF, 3000, 3)
    assert check.code_mac == b"b" * 16


@pytest_twisted.inlineCallbacks
def test_tries_are_spent_before_comparing_and_count_per_session(store):
    """Each check spends a try first; once they are spent no check is made (the code
    stays, for a check that took the last try and may still match); a resend
    gives no tries back."""
    yield store.createSession(REF, b"k" * 32, 1_800_000)
    yield start(store, 1000, code=b"a" * 16)
    for tries in (1, 2):
        check = yield store.beginCheck(REF, 2000, 3)
        assert (check.outcome, check.tries) == (CheckOutcome.CHECK, tries)
    yield start(store, 40_000, code=b"b" * 16)  # a resend
    check = yield store.beginCheck(REF, 41_000, 3)
    assert (check.outcome, check.tries) == (CheckOutcome.CHECK, 3)
    assert (yield store.beginCheck(REF, 42_000, 3)).outcome is CheckOutcome.EXHAUSTED
    # The check that took the last try still approves with the right code.
    assert (yield store.markVerified(REF, check.code_mac, 42_000, 90_000_000, b"p" * 16))


@pytest_twisted.inlineCallbacks
def test_expired_code_is_gone(store):
    yield store.createSession(REF, b"k" * 32, 1_800_000)
    yield start(store, 1000)
    assert (yield store.beginCheck(REF, 1000 + 600_001, 3)).outcome is CheckOutcome.EXPIRED
    assert (yield store.beginCheck(REF, 1000 + 600_002, 3)).outcome is CheckOutcome.NO_CODE


@pytest_twisted.inlineCallbacks
def test_verification_keeps_only_what_a_verified_session_needs(store, redis_server):
    yield store.createSession(REF, b"k" * 32, 1_800_000)
    yield start(store, 1000, code=b"a" * 16)
    check = yield store.beginCheck(REF, 2000, 3)
    assert (yield store.markVerified(REF, check.code_mac, 2000, 90_000_000, b"p" * 16))
    fields = yield store.session(REF)
    assert sorted(fields) == ["fv", "h", "k", "m", "n", "v", "vm"]  # vm, m: the state's proof
    assert fields["v"] == b"2000" and fields["vm"] == b"p" * 16
    ttl = int(redis_server.command("PTTL", "ms:s:" + __import__("base64").urlsafe_b64encode(
        REF).rstrip(b"=").decode()).split(b"\r\n")[0][1:])
    assert 89_000_000 < ttl <= 90_000_000


@pytest_twisted.inlineCallbacks
def test_a_nonce_is_claimed_once_by_the_first_script_and_a_replay_changes_nothing(
        store, redis_pool):
    """Each step's first script claims the request's nonce (with its TTL)
    before anything else; a nonce claimed already fails the step with
    NonceReplayed and the session is as it was."""
    yield store.createSession(REF, b"k" * 32, 1_800_000)
    nonce = Nonce(b"abc", 122)
    started = yield store.startSend(
        REF, number_ref=NUMBER, sealed_number=b"sealed", code_mac=b"c" * 16, now_ms=1000,
        code_ttl_ms=600_000, cooldown_ms=0, max_sends=4, session_ttl_ms=1_800_000, nonce=nonce)
    assert started.sends == 1
    assert 120 <= (yield redis_pool.ttl(b"ms:n:abc")) <= 122
    before = yield store.session(REF)
    with pytest.raises(NonceReplayed):
        yield store.startSend(
            REF, number_ref=NUMBER, sealed_number=b"sealed", code_mac=b"d" * 16, now_ms=5000,
            code_ttl_ms=600_000, cooldown_ms=0, max_sends=4, session_ttl_ms=1_800_000,
            nonce=nonce)
    for step in (lambda: store.beginCheck(REF, 6000, 3, nonce=nonce),
                 lambda: store.session(REF, nonce),
                 lambda: store.deleteSession(REF, nonce=nonce)):
        with pytest.raises(NonceReplayed):
            yield step()
    assert (yield store.session(REF)) == before
    fields = yield store.session(REF, Nonce(b"abd", 122))  # another nonce: read, claimed
    assert fields == before and (yield redis_pool.exists(b"ms:n:abd"))
    assert (yield store.deleteSession(REF, nonce=Nonce(b"abe", 122))) == 1
    assert (yield store.session(REF)) == {}


@pytest_twisted.inlineCallbacks
def test_unreachable_redis_is_unavailable_quickly():
    """A Redis that is not there fails calls within the store's timeout."""
    import txredisapi

    from conftest import free_port

    pool = txredisapi.lazyConnectionPool("127.0.0.1", free_port(), poolsize=1, charset=None)
    store = SessionStore(pool, reactor, timeout=0.3)
    started = reactor.seconds()
    with pytest.raises(StoreUnavailable):
        yield store.hawkKey(REF)
    assert reactor.seconds() - started < 2.0
    yield pool.disconnect()


@pytest_twisted.inlineCallbacks
def test_an_intermediate_receipt_after_a_final_one_changes_nothing(store):
    """ENROUTE (an intermediate notification) arriving after DELIVRD keeps DELIVRD."""
    yield store.createSession(REF, b"k" * 32, 1_800_000)
    yield start(store, 1000)
    yield store.setDelivery(REF, "ENROUTE")
    assert (yield store.session(REF))["d"] == b"ENROUTE"
    yield store.setDelivery(REF, "DELIVRD")
    yield store.setDelivery(REF, "ENROUTE")
    assert (yield store.session(REF))["d"] == b"DELIVRD"


@pytest_twisted.inlineCallbacks
def test_a_repeated_receipt_tells_nothing_new(redis_pool):
    """A carrier repeating a receipt makes no second delivery event (receivers could
    not dedupe it: it would carry a new webhook-id)."""
    from msisdnd.state import keys

    store = SessionStore(redis_pool, reactor, timeout=1.0, events_stream=b"test:events")
    ref = b"q" * 16
    yield store.createSession(ref, b"k" * 32, 1_800_000)
    yield redis_pool.hset(keys.session(ref), "p1", "1000 fake")
    yield redis_pool.hset(keys.session(ref), "o", "key")
    for state in ("DELIVRD", "DELIVRD", "ENROUTE", "DELIVRD"):
        yield store.setDelivery(ref, state, attempt=1, now_ms=1000)
    assert int((yield redis_pool.execute_command("XLEN", "test:events"))) == 1
    yield redis_pool.delete("test:events")


@pytest_twisted.inlineCallbacks
def test_scripts_run_again_after_redis_forgot_them(store, redis_server):
    """Scripts go by EVALSHA; a Redis whose script cache was emptied (a restart)
    gets the script whole, once, and that is no error."""
    yield store.createSession(REF, b"k" * 32, 1_800_000)
    redis_server.command("SCRIPT", "FLUSH")
    assert (yield start(store, 1000)).outcome is SendOutcome.STARTED
    assert (yield store.deleteSession(REF)) == 1
    assert store.errors == 0


def test_each_redis_call_fails_at_its_own_deadline():
    """Calls sent at different times each fail with StoreUnavailable at their
    own start plus the timeout (one timer serves them all); one answered in
    time is not failed later, and no timer is left once none waits."""
    from twisted.internet.defer import Deferred
    from twisted.internet.task import Clock

    from msisdnd.state.redis import TimedRedis

    class Redis:
        def __init__(self):
            self.sent: list[Deferred] = []

        def get(self, key):
            self.sent.append(Deferred())
            return self.sent[-1]

    clock, redis = Clock(), Redis()
    timed = TimedRedis(redis, clock, timeout=1.0)
    outcomes: list = [[], [], []]
    for i in range(3):
        timed.call("get", b"k").addBoth(outcomes[i].append)
        clock.advance(0.25)
    redis.sent[1].callback(b"v")  # answered at 0.75
    clock.advance(0.2)  # 0.95: nothing is late yet
    assert outcomes == [[], [b"v"], []]
    clock.advance(0.05)  # 1.0: the first call's deadline
    assert isinstance(outcomes[0][0].value, StoreUnavailable) and outcomes[2] == []
    clock.advance(0.45)  # 1.45: not yet the third's (1.5)
    assert outcomes[2] == []
    clock.advance(0.05)
    assert isinstance(outcomes[2][0].value, StoreUnavailable)
    assert timed.errors == 2 and clock.getDelayedCalls() == []
    redis.sent[0].callback(b"late")  # an answer after the deadline changes nothing
    assert len(outcomes[0]) == 1
    timed.call("get", b"k")
    redis.sent[-1].callback(b"v")
    assert clock.getDelayedCalls() == []


#: Replies of every shape a script returns, and an error it raises.
_SHAPES = """
if ARG.what == 'error' then return redis.error_reply('ERR not this one') end
return {1, -2, 'text', false, {KEY.k, ARG.what, {3}}, redis.call('GET', KEY.k)}
"""


@pytest_twisted.inlineCallbacks
def test_a_script_goes_to_a_ready_connection_and_answers_as_through_txredisapi(redis_server):
    """With a pool's connection ready, a script is written to it directly (the
    pool's list of ready connections is found); its replies, and its error
    replies, are those txredisapi gives for the same script."""
    import txredisapi

    from msisdnd.config import RedisConfig
    from msisdnd.state.connection import connect_pool
    from msisdnd.state.lua import Script
    from msisdnd.state.redis import TimedRedis

    pool = connect_pool(RedisConfig(host="127.0.0.1", port=redis_server.port, timeout=1.0))
    try:
        yield pool._connected
        timed = TimedRedis(pool, reactor, timeout=1.0)
        assert timed._ready and all(c.connected for c in timed._ready)
        script = Script(keys=("k",), args=("what",), body=_SHAPES)
        redis_server.command("SET", "shapes", "\u00e9t\u00e9")
        direct = yield script.run(timed, k=b"shapes", what="caf\u00e9")
        through = yield pool.eval(script.source, [b"shapes"], ["caf\u00e9".encode()])
        assert direct == through == [
            1, -2, b"text", None, [b"shapes", "caf\u00e9".encode(), [3]], "\u00e9t\u00e9".encode()]
        with pytest.raises(txredisapi.ResponseError, match="not this one"):
            yield script.run(timed, k=b"shapes", what="error")
        assert timed.errors == 1
    finally:
        yield pool.disconnect()


@pytest_twisted.inlineCallbacks
def test_a_script_on_a_frozen_redis_fails_at_its_deadline_and_its_connection_is_made_again(
        tmp_path):
    """A Redis that stops answering (its process stopped): a script fails with
    StoreUnavailable at its deadline; its connection, its reply overdue by
    the pool's reply timeout, is dropped and made again, and scripts work
    once the Redis answers."""
    import os
    import signal

    from conftest import RedisServer, free_port, wait_until
    from msisdnd.config import RedisConfig
    from msisdnd.state.connection import REPLY_TIMEOUTS, connect_pool
    from msisdnd.state.embedded import redis_executable
    from msisdnd.state.lua import Script
    from msisdnd.state.redis import TimedRedis

    server = RedisServer(redis_executable(), free_port(), str(tmp_path))
    server.start()
    pool = connect_pool(RedisConfig(host="127.0.0.1", port=server.port, timeout=0.2))
    try:
        yield pool._connected
        timed = TimedRedis(pool, reactor, timeout=0.2)
        script = Script(keys=(), args=(), body="return 7")
        assert (yield script.run(timed)) == 7
        first = timed._ready[0]
        os.kill(server.process.pid, signal.SIGSTOP)
        started = reactor.seconds()
        try:
            with pytest.raises(StoreUnavailable, match="within 0.2s"):
                yield script.run(timed)
            assert 0.2 <= reactor.seconds() - started < REPLY_TIMEOUTS * 0.2
            assert first.connected  # not yet: its reply is overdue at twice the timeout
            yield wait_until(lambda: not first.connected, 2.0)
            assert reactor.seconds() - started >= REPLY_TIMEOUTS * 0.2
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        yield wait_until(lambda: any(c.connected for c in timed._ready), 10.0)
        assert (yield script.run(timed)) == 7
        assert timed.errors == 1 and not timed._pending and not timed._overdue
        assert timed._sweeper is None  # no timer left once nothing waits
    finally:
        yield pool.disconnect()
        server.stop()


@pytest_twisted.inlineCallbacks
def test_scripts_and_txredisapi_commands_on_one_connection_each_get_their_reply(redis_server):
    """On a pool of one connection: scripts written directly, txredisapi's own
    commands, a script Redis forgot (EVAL again) and a blocking command
    (which txredisapi takes the connection out of the pool for), all started
    in one turn, each get their own reply."""
    from twisted.internet.defer import gatherResults

    from msisdnd.config import RedisConfig
    from msisdnd.state.connection import connect_pool
    from msisdnd.state.lua import Script
    from msisdnd.state.redis import TimedRedis

    pool = connect_pool(RedisConfig(host="127.0.0.1", port=redis_server.port, timeout=1.0),
                        poolsize=1)
    try:
        yield pool._connected
        timed = TimedRedis(pool, reactor, timeout=1.0)
        echo = Script(keys=(), args=("v",), body="return ARGV[1]")
        forgotten = Script(keys=(), args=("v",), body="return 'again ' .. ARGV[1]")
        assert (yield echo.run(timed, v="warm")) == b"warm"
        redis_server.command("SCRIPT", "FLUSH")
        yield echo.run(timed, v="known again")  # after the flush: EVAL once
        calls = [echo.run(timed, v="1"), timed.call("set", b"r3:k", b"v"),
                 forgotten.run(timed, v="2"), echo.run(timed, v="3"),
                 timed.call("get", b"r3:k")]
        redis_server.command("RPUSH", "r3:list", "popped")
        calls.append(pool.blpop([b"r3:list"], timeout=1))
        calls.append(echo.run(timed, v="4"))
        results = yield gatherResults(calls)
        assert results == [b"1", b"OK", b"again 2", b"3", b"v", [b"r3:list", b"popped"], b"4"]
        assert not timed._pending and timed.errors == 0
    finally:
        yield pool.disconnect()
