"""The Redis connections: the pool as a service of the daemon, its watch,
and the master of a Redis watched by Sentinel.

One place makes every connection the daemon and its tools open
(L{connect_pool}, L{connect_alone}), from the C{[redis]} settings
(L{msisdnd.config.RedisConfig}, read here by attribute): a server by
address or Unix socket, or the master the sentinels name.  Connections to
a server by address send at the end of the reactor's turn
(L{msisdnd.transport}); by Unix socket and through Sentinel they are
txredisapi's own.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Callable

import txredisapi
from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from msisdnd.state.redis import StoreUnavailable, TimedRedis, text
from msisdnd.transport import flushing

_log = Logger()

#: The longest wait, in seconds, between two attempts to reach the master.
RETRY_CAP = 0.5
#: A pool's connection whose reply is overdue this many times C{[redis]
#: timeout} is dropped and made again: a Redis host that froze or was cut off
#: sends no reset, and the connection would stay open, every call on it
#: timing out, long after the sentinels promoted a replica.
REPLY_TIMEOUTS = 2


class _MasterProtocol(txredisapi.SentinelRedisProtocol):
    """txredisapi's Sentinel connection, whose C{ROLE} check on connecting
    compares the role with C{"master"}: with C{charset=None} (our bytes) the
    reply is C{b"master"}, so the role is made text here.  A refused C{ROLE}
    (an ACL user without C{+role}) is said, and the connection dropped."""

    def role(self) -> Deferred:
        def refused(failure: Failure) -> list[str]:
            self.factory.master.refusedRole(failure.getErrorMessage())
            return [""]  # not a master: the connection is dropped and tried again

        return super().role().addCallbacks(lambda reply: [text(reply[0]), *reply[1:]],
                                           refused)


class _MasterFactory(txredisapi.SentinelConnectionFactory):
    """txredisapi's Sentinel pool, telling its L{SentinelMaster} where each
    connection went; its retries wait at most C{[redis] timeout} (which is
    also how long txredisapi's Sentinel endpoint gives a connection to open,
    since it takes the largest retry delay for that)."""

    protocol = _MasterProtocol

    def __init__(self, master: SentinelMaster, **kwargs: Any):
        super().__init__(**kwargs)
        self.master = master
        self.maxDelay = master.timeout

    def retryDelay(self, attempt: int) -> float:
        """txredisapi's backoff, capped at L{RETRY_CAP}: during a failover the
        master's address changes within seconds, and each attempt asks the
        sentinels afresh."""
        return min(super().retryDelay(attempt), RETRY_CAP)

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        if conn in self.pool:
            self.master.connectedTo(conn.transport.getPeer())


class MasterPool:
    """A txredisapi pool on the master the sentinels name (it asks them again
    before each connection), with what txredisapi's lacks: L{rediscover}, for
    a server that answered C{READONLY} (a master demoted while we were
    connected: its connections would otherwise stay, refused every write)."""

    def __init__(self, handler: Any, factory: _MasterFactory):
        self.handler = handler
        self.factory = factory

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handler, name)

    def rediscover(self) -> None:
        """Drop every connection; each reconnects to the master the sentinels name.
        The writes in flight on a dropped connection all answer READONLY: only
        the first answer finds connections still open (one warning)."""
        dropped = [conn for conn in list(self.factory.pool)
                   if conn.connected and not conn.transport.disconnecting]
        if dropped:
            self.factory.master.demoted()
        for conn in dropped:
            conn.transport.loseConnection()

    def disconnect(self) -> Deferred:
        return self.handler.disconnect()


class SentinelMaster(Service):
    """The master of a Redis watched by Redis Sentinel, through txredisapi's
    Sentinel client (C{Sentinel(...).master_for(name)}), its defaults made
    fit for a failover: the sentinels' answer is awaited C{discovery_timeout}
    seconds (not 10), and taken only from a sentinel that knows C{quorum - 1}
    others (not from any one).  Each new connection is checked with C{ROLE}
    (so an ACL user needs C{+role}); there is no TLS to the master.

    Running, it holds the connections to the sentinels; L{pool} makes pools
    on the master.  It logs where the master is when first found and when
    it moves.

    @param settings: C{[redis]}: C{sentinels}, C{master_name}, C{quorum},
        C{discovery_timeout}, C{timeout}, C{db}, C{username}/C{password} (the
        master's), C{sentinel_username}/C{sentinel_password}.
    @ivar address: C{"host:port"} of the master last connected to, or C{None}.
    """

    def __init__(self, settings: Any, clock: IReactorTime):
        self.settings = settings
        self.name = settings.master_name
        self.timeout = settings.timeout
        self.clock = clock
        self.address: str | None = None
        self.sentinel: Any = None
        self._refused = ""

    def describe(self) -> str:
        """The master as log lines name it."""
        where = f"at {self.address}" if self.address else "not found yet"
        sentinels = ", ".join(f"{h}:{p}" if ":" not in h else f"[{h}]:{p}"
                              for h, p in self.settings.sentinels)
        return f"master {self.name!r} ({where}; sentinels {sentinels})"

    def startService(self) -> None:
        super().startService()
        settings = self.settings
        self.sentinel = txredisapi.Sentinel(
            list(settings.sentinels), min_other_sentinels=settings.quorum - 1,
            password=settings.sentinel_password, username=settings.sentinel_username,
            connectTimeout=settings.timeout, replyTimeout=settings.timeout)
        self.sentinel.discovery_timeout = settings.discovery_timeout

    def stopService(self):
        super().stopService()
        sentinel, self.sentinel = self.sentinel, None
        return sentinel.disconnect() if sentinel is not None else None

    def pool(self, poolsize: int) -> MasterPool:
        """A pool of C{poolsize} connections to the master (bytes in and out)."""
        made: list[_MasterFactory] = []

        def factory(**kwargs: Any) -> _MasterFactory:
            made.append(_MasterFactory(self, **kwargs))
            return made[0]

        settings = self.settings
        handler = self.sentinel.master_for(
            self.name, factory_class=factory, dbid=settings.db, poolsize=poolsize,
            isLazy=True, charset=None, convertNumbers=False, password=settings.password,
            username=settings.username, replyTimeout=REPLY_TIMEOUTS * settings.timeout)
        return MasterPool(handler, made[0])

    def connection(self) -> Deferred:
        """A connection of its own to the master, once it is made (it is not
        made again if lost); fails with L{StoreUnavailable} after the
        discovery and connection timeouts.  Until then the sentinels are
        asked again after each failed attempt: just after a failover they
        flag the new master down for a moment."""
        pool = self.pool(1)
        result: Deferred = Deferred()

        def expire() -> None:
            if not result.called:
                pool.disconnect()
                result.errback(StoreUnavailable(f"no connection to {self.describe()}"))

        timer = self.clock.callLater(self.settings.discovery_timeout + 2 * self.timeout, expire)

        def done(outcome: Any) -> None:
            if timer.active():
                timer.cancel()
            if not result.called:
                if isinstance(outcome, Failure):
                    pool.disconnect()
                    result.errback(StoreUnavailable(f"no connection to {self.describe()}"))
                else:
                    pool.factory.stopTrying()
                    result.callback(pool)

        pool.factory.deferred.addBoth(done)
        return result

    def connectedTo(self, peer: Any) -> None:
        address = f"{peer.host}:{peer.port}" if ":" not in peer.host else \
            f"[{peer.host}]:{peer.port}"
        if address == self.address:
            return
        self._refused = ""
        if self.address is None:
            _log.info("Redis master {name!r} is at {address}", name=self.name, address=address)
        else:
            _log.warn("Redis master {name!r} moved from {old} to {address} (a failover)",
                      name=self.name, old=self.address, address=address)
        self.address = address

    def refusedRole(self, why: str) -> None:
        """Said once per reason (each retry would say it again)."""
        if why != self._refused:
            self._refused = why
            _log.warn("Redis {master} refused ROLE ({why}): check [redis] username and "
                      "password; the ACL user also needs +role, which the Sentinel client "
                      "asks of every new connection", master=self.describe(), why=why)

    def demoted(self) -> None:
        _log.warn("Redis {master} answered READONLY (a master demoted); asking the "
                  "sentinels again", master=self.describe())


def connect_pool(settings: Any, *, socket: str | None = None,
                 master: SentinelMaster | None = None, poolsize: int | None = None) -> Any:
    """A lazy, reconnecting pool (bytes in and out) on the Redis of C{settings};
    a connection whose reply is overdue (L{REPLY_TIMEOUTS}) is made again.

    @param socket: the embedded Redis's socket, when there is one.
    @param master: the running L{SentinelMaster}, with C{sentinels}.
    """
    size = settings.pool_size if poolsize is None else poolsize
    if master is not None:
        return master.pool(size)
    common = dict(poolsize=size, reconnect=True, charset=None, convertNumbers=False,
                  password=settings.password, username=settings.username,
                  connectTimeout=settings.timeout,
                  replyTimeout=REPLY_TIMEOUTS * settings.timeout)
    if socket is not None:
        return txredisapi.lazyUnixConnectionPool(socket, **common)
    if settings.unix_socket:
        return txredisapi.lazyUnixConnectionPool(settings.unix_socket, dbid=settings.db,
                                                 **common)
    return _tcp(settings.host, settings.port, settings.db, lazy=True, **common)


def connect_alone(settings: Any, *, socket: str | None = None,
                  master: SentinelMaster | None = None) -> Deferred:
    """One connection of its own that does not reconnect (for blocking reads,
    and for the command-line tools); fires once connected."""
    if master is not None:
        return master.connection()
    common = dict(reconnect=False, charset=None, convertNumbers=False,
                  password=settings.password, username=settings.username,
                  connectTimeout=settings.timeout)
    if socket is not None:
        return txredisapi.UnixConnection(socket, **common)
    if settings.unix_socket:
        return txredisapi.UnixConnection(settings.unix_socket, dbid=settings.db, **common)
    return _tcp(settings.host, settings.port, settings.db, lazy=False, **common)


def _tcp(host: str, port: int, dbid: int, *, lazy: bool, reconnect: bool, charset: Any,
         convertNumbers: bool, password: Any, username: Any, connectTimeout: float,
         replyTimeout: float | None = None, poolsize: int = 1) -> Any:
    """txredisapi's C{lazyConnectionPool} (C{lazy}) or C{Connection}, its
    connections sending at the end of the reactor's turn (L{msisdnd.transport}):
    txredisapi connects through the global reactor, so its factory is started
    here on an endpoint of our own."""
    from twisted.internet import reactor

    factory = txredisapi.RedisFactory(f"{host}:{port}", dbid, poolsize, lazy,
                                      txredisapi.ConnectionHandler, charset, password,
                                      replyTimeout, convertNumbers, username)
    factory.reconnect = reconnect
    factory.startConnecting(HostnameEndpoint(flushing(reactor), host, port,
                                             timeout=connectTimeout))
    return factory.handler if lazy else factory.deferred


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
    naming its address (with Sentinel, the master's name and where it is),
    instead of the connection pool's retries.

    A state machine over L{Reachability}: every C{interval} seconds a ping
    decides UP or DOWN; only a change of state is logged.  The first look
    logs only DOWN (a daemon that starts with Redis away says so at once).
    Each time Redis is found UP (at first, and after each outage: a failover
    may have brought another server), its C{maxmemory-policy} is checked:
    anything but C{noeviction} is a warning, since eviction would silently
    drop nonces and limit counters.  A check that Redis did not answer (it
    went away meanwhile) says nothing and is made again at the next look that
    finds Redis up: the outage is told once, as DOWN.

    @param address: what log lines call Redis, or a callable giving it now.
    @ivar since: when the current state began (the clock's seconds).
    """

    def __init__(self, redis: TimedRedis, address: str | Callable[[], str],
                 clock: IReactorTime, interval: float = 1.0):
        self.redis = redis
        self._address = address
        self.clock = clock
        self.interval = interval
        self.state = Reachability.UNKNOWN
        self.since = clock.seconds()
        self._loop: LoopingCall | None = None
        #: Whether the policy of the Redis found UP was read (or refused).
        self._policy_known = False
        self._checking = False

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
            if not (self._policy_known or self._checking):
                self.checkPolicy()

    @property
    def address(self) -> str:
        return self._address() if callable(self._address) else self._address

    def _become(self, state: Reachability, why: str) -> None:
        if state is self.state:
            return
        now = self.clock.seconds()
        self._policy_known = False
        if state is Reachability.DOWN:
            _log.warn("Redis at {address} is unreachable ({why}); retrying",
                      address=self.address, why=why)
        elif self.state is Reachability.DOWN:
            _log.warn("Redis at {address} is back after {seconds:.1f} s",
                      address=self.address, seconds=now - self.since)
        self.state, self.since = state, now

    @inlineCallbacks
    def checkPolicy(self):
        """Warn unless Redis's C{maxmemory-policy} is C{noeviction} (or say
        that it could not be read: C{CONFIG} is often refused to an ACL user).
        A Redis that does not answer is no finding: the check is left to do."""
        self._checking = True
        try:
            reply = yield self.redis.call("execute_command", "CONFIG", "GET", "maxmemory-policy")
            policy = text(reply[1]) if reply and len(reply) > 1 else None
        except (StoreUnavailable, txredisapi.ConnectionError):
            return
        except Exception as e:
            self._policy_known = True
            _log.warn("Could not check the maxmemory-policy of Redis at {address} ({why}); "
                      "it must be noeviction", address=self.address, why=str(e) or type(e).__name__)
            return
        finally:
            self._checking = False
        self._policy_known = True
        if policy != "noeviction":
            _log.warn("Redis at {address} has maxmemory-policy {policy}, not noeviction: "
                      "at maxmemory it would silently drop nonces, codes and limit "
                      "counters; set maxmemory-policy noeviction", address=self.address,
                      policy=policy)
