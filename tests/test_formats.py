"""Rolling upgrades: records written by a daemon that did not mark its format
(format 1) are read, and checked, like those this one writes."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from msisdnd.state import keys
from msisdnd.state.api_keys import ApiKeyRecord, ApiKeys
from msisdnd.state.events import EventStream
from msisdnd.state.sessions import CheckOutcome, SendOutcome, SessionStore

REF = b"r" * 16


@pytest.fixture
def store(redis_pool):
    return SessionStore(redis_pool, reactor, timeout=1.0, events_stream=keys.EVENTS)


def test_format_of_reads_a_missing_field_as_format_1():
    assert keys.format_of({}) == 1
    assert keys.format_of({"fv": b"2"}) == keys.format_of({b"fv": b"2"}) == 2


@pytest_twisted.inlineCallbacks
def test_a_session_without_a_format_is_read_as_format_1_and_verifies(store, redis_pool):
    """A session an older daemon created (no fv) takes a send, a check and
    its verification from this one."""
    yield redis_pool.hset(keys.session(REF), "k", b"k" * 32)  # as format 1 wrote it
    yield redis_pool.execute_command("PEXPIRE", keys.session(REF), 1_800_000)
    assert keys.format_of((yield store.session(REF))) == 1
    started = yield store.startSend(REF, number_ref=b"n" * 16, sealed_number=b"sealed",
                                    code_mac=b"c" * 16, now_ms=1000, code_ttl_ms=600_000,
                                    cooldown_ms=30_000, max_sends=4, session_ttl_ms=1_800_000)
    assert started.outcome is SendOutcome.STARTED
    check = yield store.beginCheck(REF, 2000, 3)
    assert check.outcome is CheckOutcome.CHECK and check.code_mac == b"c" * 16
    assert (yield store.markVerified(REF, check.code_mac, 2000, 90_000_000, b"p" * 16))
    fields = yield store.session(REF)
    assert fields["v"] == b"2000" and keys.format_of(fields) == 1
    # Its event is this daemon's: marked with this format.
    (entry,) = yield EventStream(store).entries()
    assert entry.type == "device.verified" and entry.format == keys.FORMAT


@pytest_twisted.inlineCallbacks
def test_a_new_session_carries_this_format(store):
    yield store.createSession(REF, b"k" * 32, 1_800_000)
    assert keys.format_of((yield store.session(REF))) == keys.FORMAT == 2


@pytest_twisted.inlineCallbacks
def test_an_event_without_a_format_is_read_as_format_1(store, redis_pool):
    yield redis_pool.execute_command("XADD", keys.EVENTS, "*", "t", "device.unregistered",
                                     "ts", "1000", "s", keys.session(REF), "sq", "1",
                                     "n", b"sealed")
    (entry,) = yield EventStream(store).entries()
    assert (entry.type, entry.format, entry.fields["sq"]) == ("device.unregistered", 1, b"1")


@pytest_twisted.inlineCallbacks
def test_an_api_key_without_a_format_is_read_as_format_1(store, redis_pool):
    api_keys = ApiKeys(store)
    assert (yield api_keys.create(ApiKeyRecord("k1", "new", b"m" * 32, 1000, 0, 60, 0)))
    assert (yield api_keys.get("k1")).format == keys.FORMAT
    yield redis_pool.hset(keys.API_KEY_NAMES, "old", "k0")
    yield redis_pool.hmset(keys.api_key("k0"), {"name": "old", "mac": b"m" * 32,
                                                "created": 1000, "expires": 0, "rate": 60,
                                                "budget": 0, "used": 0})
    old = yield api_keys.get("k0")
    assert (old.name, old.rate_per_minute, old.format) == ("old", 60, 1)
    assert sorted(r.name for r in (yield api_keys.all())) == ["new", "old"]
