"""Carrier suspensions, shared by every daemon through Redis.

An operator suspends a carrier on one daemon's admin listener; the
suspension is written to one Redis hash (L{keys.SUSPENDED_CARRIERS}: carrier
name -> JSON C{{"unbind", "by", "at"}}), and every daemon applies what the
hash holds to its own carriers: at once on the daemon that was asked, within
one poll (C{interval}) on the others.  A suspension lasts until resumed: it
has no TTL, and it survives restarts (a daemon starting reads the hash before
the parts after this service start, so before its API takes a send, unless
Redis does not answer within its timeout).

While Redis cannot be read, each daemon keeps what it last saw.
"""

from __future__ import annotations

import json
from typing import Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from msisdnd.state import keys
from msisdnd.state.redis import StoreUnavailable, TimedRedis, text

log = Logger()


class SuspendableCarriers(Protocol):
    """What suspensions are applied to (L{msisdnd.smpp.service.CarriersService})."""

    #: The carriers configured here.
    names: list[str]
    #: The carriers suspended here -> whether their binds are let go.
    suspensions: dict[str, bool]

    def setSuspended(self, name: str, suspended: bool, unbind: bool = False) -> Deferred:
        """Suspend or resume carrier C{name}; fires once done."""


class Suspensions(Service):
    """Writes suspensions to Redis and applies the hash to C{carriers}
    (a service polling every C{interval} s)."""

    def __init__(self, carriers: SuspendableCarriers, redis: TimedRedis, clock: IReactorTime,
                 interval: float = 1.0):
        self.interval = interval
        self.clock = clock
        self._loop: LoopingCall | None = None
        self.carriers = carriers
        self.redis = redis
        # Bumped by each suspend and resume here: a poll that read the hash
        # before one drops what it read rather than undo it.
        self._changes = 0

    def startService(self) -> Deferred:
        """Apply what the hash holds, then poll; fires after the first poll."""
        super().startService()

        def loop(_: object) -> None:
            if self.running:
                self._loop = LoopingCall(self.poll)
                self._loop.clock = self.clock
                self._loop.start(self.interval, now=False).addErrback(
                    lambda f: log.failure("The suspension poll stopped", f))

        return self.poll().addCallback(loop)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    @inlineCallbacks
    def suspend(self, name: str, unbind: bool, by: str):
        """Suspend carrier C{name} on every daemon; fires once this daemon
        has applied it (binds let go, with C{unbind}).

        @raise StoreUnavailable: Redis did not take it (nothing changed).
        """
        record = json.dumps({"unbind": unbind, "by": by,
                             "at": int(self.clock.seconds())}).encode()
        yield self.redis.call("hset", keys.SUSPENDED_CARRIERS, name.encode(), record)
        self._changes += 1
        yield self.carriers.setSuspended(name, True, unbind)

    @inlineCallbacks
    def resume(self, name: str):
        """Lift carrier C{name}'s suspension on every daemon.

        @raise StoreUnavailable: Redis did not take it (nothing changed).
        """
        yield self.redis.call("hdel", keys.SUSPENDED_CARRIERS, [name.encode()])
        self._changes += 1
        yield self.carriers.setSuspended(name, False)

    @inlineCallbacks
    def poll(self):
        """Apply the hash's suspensions to the carriers configured here."""
        seen = self._changes
        try:
            stored = yield self.redis.call("hgetall", keys.SUSPENDED_CARRIERS)
        except StoreUnavailable:
            return
        except Exception:
            log.failure("The carrier suspensions could not be read")
            return
        wanted = {}
        for name, record in (stored or {}).items():
            try:
                wanted[text(name)] = bool(json.loads(record).get("unbind", False))
            except (ValueError, AttributeError):
                wanted[text(name)] = False  # suspended all the same: the safe side
        current = self.carriers.suspensions
        for name in self.carriers.names:
            if self._changes != seen:
                return  # changed here meanwhile: the next poll reads again
            try:
                if name in wanted and current.get(name) != wanted[name]:
                    yield self.carriers.setSuspended(name, True, wanted[name])
                elif name not in wanted and name in current:
                    yield self.carriers.setSuspended(name, False)
            except Exception:
                log.failure("The suspension of {carrier} could not be applied", carrier=name)
