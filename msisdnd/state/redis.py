"""Redis calls with a deadline of our own.

txredisapi queues commands while it is disconnected, so a Redis that is down
would leave every caller waiting.  L{TimedRedis} bounds each command and
each script by C{timeout} and turns a Redis that is not there into
L{StoreUnavailable}, which the API answers with 503 and C{Retry-After}.
Every store in this package (sessions, limits, daily caps) talks to Redis
through one L{TimedRedis}.

Scripts, every step's one round trip, skip txredisapi's per-command
machinery when a pooled connection is ready (L{TimedRedis.script}): the
command is encoded here and written to that connection, and its reply taken
from the connection's reply queue, as txredisapi's own commands do.  That
costs a third of txredisapi's way (its pool's generator and queue, the
command encoded argument by argument, four Deferreds and a timer per call),
measured in bench/RESULTS.md.  What txredisapi's reply timeout does for
its own commands, the deadline does here for these: a connection with a
script's reply overdue by the connection's C{replyTimeout} is dropped, and
the pool makes it again.
"""

from __future__ import annotations

import hashlib
import random
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
        self.clock = clock
        self.timeout = timeout
        self.errors = 0
        # Calls waiting for Redis -> (their deadlines, the connection a
        # script was written to, else None).  Every call gets the same
        # timeout, so insertion order is deadline order, and one timer (set
        # for the oldest call's deadline) serves them all.
        self._pending: dict[Deferred, tuple[float, Any]] = {}
        # Scripts written to a connection of ours (L{_sendScript}), past their
        # deadline and unanswered -> when their connection is dropped, and
        # it.  They come here in deadline order, so they are in that order too.
        self._overdue: dict[Deferred, tuple[float, Any]] = {}
        self._sweeper: IDelayedCall | None = None
        self.redis = redis

    @property
    def redis(self) -> Any:
        return self._redis

    @redis.setter
    def redis(self, pool: Any) -> None:
        self._redis = pool
        # The pool's connections free for commands that do not block (those
        # txredisapi picks from for them): a list the pool keeps up to date.
        factory = getattr(pool, "_factory", None)
        self._ready = getattr(getattr(factory, "connectionQueue", None), "pending", None)

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
        restart), by C{EVAL}, bounded again.  Fails as L{call} does.

        The script's SHA-1 is computed once per source (L{_sha1}), not per
        call; the command goes straight to a ready connection of the pool
        when there is one (see the module), else through txredisapi.
        """
        sha = _SHAS.get(source) or _sha1(source)
        args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        result: Deferred = Deferred()
        ready = self._ready
        if ready:
            connection = ready[0] if len(ready) == 1 else random.choice(ready)
            if connection.connected:
                self._sendScript(connection, result, sha, keys, args, source)
                return result
        self._send(result, "evalsha", (sha, keys, args), {}, source)
        return result

    def _sendScript(self, connection: Any, result: Deferred, sha: str, keys: list,
                    args: list, source: str) -> None:
        """C{EVALSHA} written to C{connection}; its reply fires C{result} by its deadline."""
        connection.transport.write(_command((b"EVALSHA", sha, len(keys), *keys, *args)))
        self._wait(result, connection)
        # The connection queues each reply (an exception for an error reply
        # or a lost connection) for the commands in the order they were written.
        connection.replyQueue.get().addCallback(self._scriptReplied, result,
                                                 (sha, keys, args), source)

    def _scriptReplied(self, reply: Any, result: Deferred, args: tuple, source: str) -> None:
        if self._overdue and self._overdue.pop(result, None) is not None:
            self._idle()  # a late reply: its caller was failed at its deadline
        if isinstance(reply, Exception):
            if isinstance(reply, txredisapi.ResponseError) and \
                    str(reply.args[0] if reply.args else "").startswith("NOSCRIPT"):
                reply = txredisapi.ScriptDoesNotExist(str(reply))
            reply = Failure(reply)
        self._done(reply, result, args, source)

    def _send(self, result: Deferred, method: str, args: tuple, kwargs: dict,
              source: str | None) -> None:
        """Send one command through txredisapi; its outcome fires C{result} by
        its deadline; a C{source} is sent by C{EVAL} when Redis does not know
        its script."""
        try:
            d = getattr(self.redis, method)(*args, **kwargs)
        except Exception as e:
            self.errors += 1
            result.errback(StoreUnavailable(f"Redis call failed: {e!r}"))
            return
        self._wait(result, None)
        d.addBoth(self._done, result, args, source)

    def _wait(self, result: Deferred, connection: Any) -> None:
        """C{result} waits for Redis until its deadline (see L{_sweep})."""
        self._pending[result] = (self.clock.seconds() + self.timeout, connection)
        if self._sweeper is None:
            self._sweeper = self.clock.callLater(self.timeout, self._sweep)

    def _done(self, value: Any, result: Deferred, args: tuple, source: str | None) -> None:
        pending = self._pending
        if pending.pop(result, None) is None:  # it timed out
            return
        self._idle()
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

    def _idle(self) -> None:
        """No timer is left once no call waits."""
        if not self._pending and not self._overdue and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        """Fail the calls past their deadline; drop the connections whose
        script replies are overdue by their C{replyTimeout} (as txredisapi
        drops one for its own commands); wait for the next deadline of either."""
        self._sweeper = None
        pending, overdue, now, late = self._pending, self._overdue, self.clock.seconds(), []
        for result, (deadline, connection) in pending.items():
            if deadline > now:
                break
            late.append(result)
            if connection is not None and connection.replyTimeout:
                overdue[result] = (deadline - self.timeout + connection.replyTimeout, connection)
        for result in late:
            del pending[result]
        while overdue:
            result, (drop, connection) = next(iter(overdue.items()))
            if drop > now:
                break
            del overdue[result]
            if connection.connected:  # its unanswered calls fail as it is lost
                connection.transport.abortConnection()
        wake = [next(iter(waiting.values()))[0] for waiting in (pending, overdue) if waiting]
        if wake:
            self._sweeper = self.clock.callLater(max(0.0, min(wake) - now), self._sweep)
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


def _command(parts: tuple) -> bytes:
    """A command in Redis's protocol (RESP): bytes as they are, anything else as
    C{str()} of it in UTF-8 (txredisapi's encoding, with C{charset=None})."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if type(part) is not bytes:
            part = str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


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
