"""Redis calls with a deadline of our own.

txredisapi queues commands while it is disconnected, so a Redis that is down
would leave every caller waiting.  L{TimedRedis} bounds each command and
each script by C{timeout} and turns a Redis that is not there into
L{StoreUnavailable}, which the API answers with 503 and C{Retry-After}.
Every store in this package (sessions, limits, daily caps) talks to Redis
through one L{TimedRedis}.
"""

from __future__ import annotations

import hashlib
from typing import Any

import txredisapi
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

#: What a lost or refused Redis connection fails a command with.
_CONNECTION_ERRORS = (ConnectionError, txredisapi.ConnectionError, ConnectError, ConnectionClosed)
#: Error replies of a Redis that cannot take our writes now: a replica (a
#: master demoted by a failover), one loading its data, one cut off from its
#: master, one short of the replicas min-replicas-to-write asks for, one at
#: its maxmemory (with noeviction).
_UNAVAILABLE_REPLIES = frozenset({"READONLY", "LOADING", "MASTERDOWN", "NOREPLICAS", "OOM"})


class StoreUnavailable(Exception):
    """Redis did not answer in time, or is not connected."""


class TimedRedis:
    """A txredisapi connection (or pool) whose every call has a deadline.

    @param redis: a txredisapi connection or pool made with C{charset=None}
        (values are bytes); it may be set on C{redis} later, once connected.
    @param timeout: seconds each call may take; fixed for the connection's
        life (the pending calls' deadlines are then in the order they were made).
    @ivar errors: how many calls failed or timed out, for metrics.
    """

    def __init__(self, redis: Any, clock: IReactorTime, timeout: float = 1.5):
        self.redis = redis
        self.clock = clock
        self.timeout = timeout
        self.errors = 0
        # Calls waiting for Redis -> their deadlines.  Every call gets the
        # same timeout, so insertion order is deadline order, and one timer
        # (set for the oldest call's deadline) serves them all.
        self._pending: dict[Deferred, float] = {}
        self._sweeper: IDelayedCall | None = None

    def call(self, method: str, *args: Any, **kwargs: Any) -> Deferred:
        """One txredisapi command, bounded by C{timeout}.

        Fails with L{StoreUnavailable} when Redis does not answer in time, is
        not connected, or answers that it cannot take writes now (see
        L{_UNAVAILABLE_REPLIES}); any other Redis error (a script's, say) is
        passed on.  A C{READONLY} answer also calls the pool's C{rediscover()},
        when it has one (L{msisdnd.state.connection.SentinelMaster}'s pools):
        the server is a replica now, and the pool must find the master.
        """
        result: Deferred = Deferred()
        self._send(result, method, args, kwargs, None)
        return result

    def script(self, source: str, keys: list[bytes], args: list[Any]) -> Deferred:
        """Run a Lua script by C{EVALSHA}, bounded by C{timeout}; when Redis
        does not have it (a first run, or its script cache was emptied by a
        restart), by C{EVAL}, bounded again.

        The script's SHA-1 is computed once per source (L{_sha1}), not per call.
        """
        sha = _SHAS.get(source) or _sha1(source)
        args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        result: Deferred = Deferred()
        self._send(result, "evalsha", (sha, keys, args), {}, source)
        return result

    def _send(self, result: Deferred, method: str, args: tuple, kwargs: dict,
              source: str | None) -> None:
        """Send one command whose outcome fires C{result} by its deadline; a
        C{source} is sent by C{EVAL} when Redis does not know its script."""
        try:
            d = getattr(self.redis, method)(*args, **kwargs)
        except Exception as e:
            self.errors += 1
            result.errback(StoreUnavailable(f"Redis call failed: {e!r}"))
            return
        self._pending[result] = self.clock.seconds() + self.timeout
        if self._sweeper is None:
            self._sweeper = self.clock.callLater(self.timeout, self._sweep)
        d.addBoth(self._done, result, args, source)

    def _done(self, value: Any, result: Deferred, args: tuple, source: str | None) -> None:
        pending = self._pending
        if pending.pop(result, None) is None:  # it timed out
            return
        if not pending and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if not isinstance(value, Failure):
            result.callback(value)
            return
        if value.check(txredisapi.ScriptDoesNotExist):  # L{script} sends it whole
            if source is not None:
                self._send(result, "eval", (source, *args[1:]), {}, None)
            else:
                result.errback(value)
            return
        self.errors += 1
        if value.check(*_CONNECTION_ERRORS):
            result.errback(StoreUnavailable(str(value.value)))
        elif value.check(txredisapi.ResponseError) and _refusal(value.value):
            if _refusal(value.value) == "READONLY":
                rediscover = getattr(self.redis, "rediscover", None)
                if rediscover is not None:
                    rediscover()
            result.errback(StoreUnavailable(f"Redis answered {value.value}"))
        else:
            result.errback(value)

    def _sweep(self) -> None:
        """Fail the calls past their deadline; wait for the next one's."""
        self._sweeper = None
        pending, now, late = self._pending, self.clock.seconds(), []
        for result, deadline in pending.items():
            if deadline > now:
                self._sweeper = self.clock.callLater(deadline - now, self._sweep)
                break
            late.append(result)
        for result in late:
            del pending[result]
        for result in late:
            self.errors += 1
            result.errback(StoreUnavailable(f"Redis did not answer within {self.timeout}s"))

    def ping(self) -> Deferred:
        return self.call("ping")


#: Every script source run, and its SHA-1 (hex): a daemon runs a few dozen.
_SHAS: dict[str, str] = {}


def _sha1(source: str) -> str:
    sha = _SHAS[source] = hashlib.sha1(source.encode()).hexdigest()
    return sha


def _refusal(error: Exception) -> str | None:
    """The code of an error reply in L{_UNAVAILABLE_REPLIES}, else C{None}."""
    message = error.args[0] if error.args else ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    code = str(message).split(" ", 1)[0]
    return code if code in _UNAVAILABLE_REPLIES else None


def text(value: Any) -> str:
    """A Redis reply item as text (replies are bytes; Lua numbers are ints)."""
    return value.decode() if isinstance(value, bytes) else str(value)
