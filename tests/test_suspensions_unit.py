"""Carrier suspensions in memory: what a poll applies, and a poll that read
the hash before a local change does not undo it.  (The whole path, with two
daemons on one real Redis, is tests/test_control.py.)"""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from msisdnd.state import keys
from msisdnd.state.suspensions import Suspensions


class Carriers:
    """A L{SuspendableCarriers} recording what it is told."""

    def __init__(self, *names: str):
        self.names = list(names)
        self.suspensions: dict[str, bool] = {}
        self.calls: list[tuple] = []

    def setSuspended(self, name: str, suspended: bool, unbind: bool = False) -> Deferred:
        self.calls.append((name, suspended, unbind))
        if suspended:
            self.suspensions[name] = unbind
        else:
            self.suspensions.pop(name, None)
        return succeed(None)


class Redis:
    """A L{TimedRedis} whose answers the test gives: C{pending} holds each call."""

    def __init__(self):
        self.pending: list[tuple[tuple, Deferred]] = []

    def call(self, *args) -> Deferred:
        d = Deferred()
        self.pending.append((args, d))
        return d


def record(unbind: bool) -> bytes:
    return json.dumps({"unbind": unbind, "by": "admin", "at": 0}).encode()


def test_poll_applies_the_hash_to_the_carriers_configured_here():
    carriers, redis = Carriers("acme", "other"), Redis()
    suspensions = Suspensions(carriers, redis, Clock())
    suspensions.poll()
    (args, d), = redis.pending
    assert args == ("hgetall", keys.SUSPENDED_CARRIERS)
    d.callback({b"acme": record(True), b"elsewhere": record(False)})
    assert carriers.calls == [("acme", True, True)]  # "elsewhere" is not configured here


def test_a_poll_that_read_before_a_resume_does_not_undo_it():
    carriers, redis = Carriers("acme"), Redis()
    carriers.suspensions["acme"] = False
    suspensions = Suspensions(carriers, redis, Clock())
    suspensions.poll()
    resumed = suspensions.resume("acme")
    (_, read), (args, hdel) = redis.pending
    assert args == ("hdel", keys.SUSPENDED_CARRIERS, [b"acme"])
    hdel.callback(1)
    assert resumed.called and carriers.suspensions == {}
    read.callback({b"acme": record(False)})  # what the hash held before the resume
    assert carriers.suspensions == {} and carriers.calls == [("acme", False, False)]
