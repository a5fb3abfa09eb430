"""The Redis connection pool as a service of the daemon, and its watch."""

from __future__ import annotations

from enum import Enum
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from msisdnd.state.redis import TimedRedis

_log = Logger()


class RedisConnection(Service):
    """Connects C{redis} (the L{TimedRedis} every store shares) when started.

    @param connect: makes the txredisapi pool; called at start, so that an
        embedded Redis started before it is there to be reached.
    """

    def __init__(self, redis: TimedRedis, connect: Callable[[], Any]):
        self.redis = redis
        self.connect = connect
        self.pool: Any = None

    def startService(self) -> None:
        super().startService()
        self.pool = self.connect()
        self.redis.redis = self.pool

    def stopService(self):
        super().stopService()
        if self.pool is not None:
            return self.pool.disconnect()
        return None


class Reachability(Enum):
    """What the watch last saw of Redis."""

    UNKNOWN = "unknown"  # not looked yet
    UP = "up"
    DOWN = "down"


class RedisWatch(Service):
    """Says when Redis goes away and when it is back: one warning each,
    naming its address, instead of the connection pool's retries.

    A state machine over L{Reachability}: every C{interval} seconds a ping
    decides UP or DOWN; only a change of state is logged.  The first look
    logs only DOWN (a daemon that starts with Redis away says so at once).

    @ivar since: when the current state began (the clock's seconds).
    """

    def __init__(self, redis: TimedRedis, address: str, clock: IReactorTime,
                 interval: float = 1.0):
        self.redis = redis
        self.address = address
        self.clock = clock
        self.interval = interval
        self.state = Reachability.UNKNOWN
        self.since = clock.seconds()
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.look)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True).addErrback(
            lambda f: _log.failure("The Redis watch stopped", f))

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    @inlineCallbacks
    def look(self):
        """Ping Redis once and log a change of state."""
        try:
            yield self.redis.ping()
        except Exception as e:
            self._become(Reachability.DOWN, str(e) or type(e).__name__)
        else:
            self._become(Reachability.UP, "")

    def _become(self, state: Reachability, why: str) -> None:
        if state is self.state:
            return
        now = self.clock.seconds()
        if state is Reachability.DOWN:
            _log.warn("Redis at {address} is unreachable ({why}); retrying",
                      address=self.address, why=why)
        elif self.state is Reachability.DOWN:
            _log.warn("Redis at {address} is back after {seconds:.1f} s",
                      address=self.address, seconds=now - self.since)
        self.state, self.since = state, now
