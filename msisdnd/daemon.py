"""The msisdnd process: every part built, then wired, then started in order.

L{Daemon} is the service C{twistd msisdnd} runs.  Building it loads the
signing keys, so a missing or bad key stops the start before anything
listens.  Its parts start one after another: the embedded Redis (when
configured) -> the sentinels (when configured) -> the Redis pool -> the
daily caps -> the carrier accounts' bind permits -> the fake SMSC (in
development) -> the carriers (binding in the background) -> the admin
listener -> the HTTP listeners.  SIGTERM stops them in the reverse order:
the HTTP listeners close and the requests in flight finish, the carriers
drain their queues and unbind (giving their bind permits back), Redis is
closed, and the embedded Redis stops last.  Every wait is bounded.  SIGHUP
reloads the configuration (L{msisdnd.control}): during start-up, once every
part is up; during a stop, never.
"""

from __future__ import annotations

import gc
import os
import secrets
import signal
import socket
import sys
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from msisdnd import logs
from msisdnd.api.admin import UnloggedSite, admin_site
from msisdnd.api.admin_actions import ActionRefused
from msisdnd.api.app import GatewayAPI
from msisdnd.api.clientaddr import access_log_formatter
from msisdnd.api.discovery import Discovery
from msisdnd.api.metrics import Metrics
from msisdnd.api.status import StatusBoard
from msisdnd.api.request import APISite
from msisdnd import __version__
from msisdnd.config import Config
from msisdnd.control import Control, mo_verifiers
from msisdnd.events.delivery import LATENCY_BUCKETS as WEBHOOK_LATENCY_BUCKETS
from msisdnd.events.delivery import WebhookDelivery, http_client
from msisdnd.events.payloads import Payloads
from msisdnd.smpp.service import CarriersService
from msisdnd.state.accounts import SharedLeases, SharedPermits
from msisdnd.state.api_keys import ApiKeys
from msisdnd.state.connection import (
    RedisConnection, RedisWatch, SentinelMaster, connect_alone, connect_pool)
from msisdnd.state.daily_cap import DailyCaps
from msisdnd.state import keys
from msisdnd.state.embedded import EmbeddedRedis
from msisdnd.state.events import EventStream
from msisdnd.state.idempotency import Idempotency
from msisdnd.state.limits import Limits
from msisdnd.state.sessions import SessionStore
from msisdnd.state.suspensions import Suspensions
from msisdnd.transport import listen_flushing
from msisdnd.verification import certs
from msisdnd.verification.authentication import ApiKeyAuthenticator
from msisdnd.verification.backend import BackendVerifications
from msisdnd.verification.flows import Verifier
from msisdnd.verification.texts import SMSTexts

log = Logger()

#: Seconds each stage of a graceful stop may take.
HTTP_DRAIN_TIMEOUT = 10.0
CARRIER_DRAIN_TIMEOUT = 5.0
#: The least number of descriptors the daemon wants besides its API
#: connections (Redis, the SMPP binds, webhook deliveries, the admin listener,
#: refused connections being closed, its own); below max_connections plus
#: this, it warns.  The recommended limit is larger: systemd/msisdnd.service
#: and systemd/README.md ("Open files") give its arithmetic.
FD_RESERVE = 1024


class InOrder(MultiService):
    """Children start one after another and stop in the reverse order.

    Twisted's C{MultiService} starts its children all at once and stops
    them concurrently; the daemon's parts depend on each other (Redis
    before the listeners, the listeners drained before the carriers).
    Here a child whose C{startService} returns a Deferred is waited for
    before the next one starts, and each child's C{stopService} has
    finished before the one before it is stopped.

    @ivar started: fires once every child has started; fails with the
        first child's failure to start (the children after it do not start).
    """

    started: Deferred

    def privilegedStartService(self) -> None:
        """Listen on nothing yet: every listener opens in order, in L{startService}.

        (A port below 1024 therefore needs systemd socket activation, not root.)
        """

    def startService(self) -> Deferred:
        Service.startService(self)
        self.started = self._startChildren()
        return self.started

    @inlineCallbacks
    def _startChildren(self):
        for child in list(self):
            try:
                yield maybeDeferred(child.startService)
            except PartFailed:
                raise
            except Exception as e:
                raise PartFailed(getattr(child, "part", type(child).__name__), e) from e

    @inlineCallbacks
    def stopService(self):
        Service.stopService(self)
        for child in reversed(list(self)):
            if child.running:
                yield maybeDeferred(child.stopService)


class PartFailed(Exception):
    """A part of the daemon could not start: C{args} are its name and why."""

    def __str__(self) -> str:
        part, why = self.args
        return f"{part}: {why}"


class Listener(Service):
    """A listener on a strports description, whose start fires once it
    listens or fails saying why (Twisted's C{strports.service} only logs a
    port it could not open, and the daemon would run on without it).  The
    connections a TCP listener accepts send at the end of the reactor's turn
    (L{msisdnd.transport}).

    @ivar part: what the daemon calls it in a failure, e.g. C{[http].listen tcp:8000}.
    """

    def __init__(self, reactor: Any, description: str, factory: Any, key: str):
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.part = f"{key} {description}"
        self.port: Any = None

    def startService(self) -> Deferred:
        super().startService()
        endpoint = endpoints.serverFromString(self.reactor, self.description)

        def listening(port: Any) -> None:
            self.port = listen_flushing(port)

        return endpoint.listen(self.factory).addCallback(listening)

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


class DrainingListeners(InOrder):
    """The HTTP listeners of one site; stopping closes them, then waits (at
    most C{timeout} seconds) for the requests in flight to be answered."""

    def __init__(self, reactor: Any, site: APISite, listen: tuple[str, ...], timeout: float):
        super().__init__()
        self.site = site
        self.timeout = timeout
        for description in listen:
            Listener(reactor, description, site, "[http].listen").setServiceParent(self)

    @inlineCallbacks
    def stopService(self):
        yield super().stopService()
        yield self.site.whenIdle(self.timeout)


def _enough_descriptors(max_connections: int) -> None:
    """Make the open-files limit hold C{[http] max_connections} and the rest, or say so.

    The soft limit is raised towards the hard one when it is too low (outside
    systemd; the unit sets LimitNOFILE= and forbids setrlimit); if it is
    still too low, a warning says that connections may fail with EMFILE
    before the cap refuses them.
    """
    try:
        import resource
    except ImportError:     # not on Unix
        return
    needed = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    if soft < needed:
        log.warn("The open-files limit is {soft}, below [http] max_connections ({max}) plus "
                 "{reserve} for Redis, the carriers, webhooks and refusals: raise it "
                 "(LimitNOFILE=, see systemd/README.md) or lower max_connections",
                 soft=soft, max=max_connections, reserve=FD_RESERVE)


def _freeze_start_up_objects() -> None:
    """Move every object alive once the daemon is up out of the cyclic
    collector's sight (C{gc.freeze}).

    Start-up leaves some 70,000 tracked objects behind (modules, phonenumbers'
    metadata, the configuration) that never become garbage, and every full
    collection walked them all: tens of milliseconds with the reactor stopped,
    a few times a minute under load.  Once frozen, a full collection walks
    only what requests made since.  The collection before the freeze clears
    start-up's own garbage, so none of it is pinned.
    """
    gc.collect()
    gc.freeze()


def _exit_with(status: int) -> None:
    """End the process with C{status} once the reactor has stopped (twistd
    has no exit status of its own), the log written out first."""
    logs.flush()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _exit_zero_after_sigterm(reactor: Any) -> None:
    """Make a graceful stop on SIGTERM exit with status 0.

    twistd re-raises the signal that stopped the reactor once it has run
    (so the process would end with status 143); a stop that completed is a
    clean exit.  Twisted keeps that signal in a private attribute and has no
    public way to clear it, hence the write.
    """
    if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
        reactor._exitSignal = None


class Daemon(InOrder):
    """Every part of msisdnd, from one validated L{Config}.

    Parts are built first (L{_build*}: each knows only its configuration and
    the parts below it), then wired where two parts need each other (the
    verifier sends through the carriers' router, which hands it MO and
    receipts), then added as children in start order.

    @ivar logObserver: the observer twistd should log to (L{msisdnd.logs}),
        or C{None} for twistd's own choice.
    """

    logObserver: ILogObserver | None = None

    def __init__(self, config: Config, reactor: Any):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self._buildState()
        self._buildVerification()
        self._buildCarriers()
        self._buildEvents()
        self.control = Control(self)
        self._buildHTTP()
        self.verifier.wire(self.carriers.router)
        for part in self._parts():
            part.setServiceParent(self)

    # -- build ---------------------------------------------------------------

    def _buildState(self) -> None:
        config = self.config
        self.embedded = (EmbeddedRedis(config.redis.dir, self.reactor)
                         if config.redis.embedded else None)
        self.sentinel = (SentinelMaster(config.redis, self.reactor)
                         if config.redis.sentinels else None)
        self.store = SessionStore(None, self.reactor, timeout=config.verification.store_timeout)
        self.redis = RedisConnection(self.store, self._connectRedis)
        settings = config.redis
        where = (self.sentinel.describe if self.sentinel is not None
                 else f"{settings.dir}/redis.sock (embedded)" if settings.embedded
                 else settings.unix_socket or f"{settings.host}:{settings.port}")
        self.redis_watch = RedisWatch(self.store, where, self.reactor)
        self.limits = Limits(self.store, config.limits, config.secrets.number, self.reactor)

    def _buildVerification(self) -> None:
        config, reactor = self.config, self.reactor
        public = config.http.public_url
        self.signer = certs.Signer(
            browserid_keys=[certs.load_signing_key(p) for p in config.keys.browserid],
            jwt_keys=[certs.load_signing_key(p) for p in config.keys.jwt],
            issuer_host=public.host, issuer_url=public.base,
            pseudonym_secret=config.secrets.pseudonym, clock=reactor.seconds)
        self.texts = SMSTexts(default_locale=config.sms.default_locale,
                              webotp_host=config.sms.webotp_host,
                              app_hashes=config.sms.app_hashes)
        self.verifier = Verifier(
            self.store, None, config.verification, config.secrets, self.texts, reactor,
            mo_verifiers=mo_verifiers(config),
            limits=self.limits, require_payload_hash=config.http.hawk_require_payload_hash)
        self.backend = BackendVerifications(
            self.verifier, ApiKeyAuthenticator(ApiKeys(self.store), config.secrets.api_key, reactor),
            Idempotency(self.store), reactor)

    def _buildCarriers(self) -> None:
        """The carriers, their accounts' limits shared with every daemon through Redis."""
        config = self.config
        self.account_permits = SharedPermits(self.store, self.reactor)
        self.carriers = CarriersService(
            config.carriers, self.reactor, send_timeout=config.verification.send_timeout,
            drain_timeout=CARRIER_DRAIN_TIMEOUT, mo_receiver=self.verifier,
            receipt_receiver=self.verifier,
            leases=SharedLeases(self.store, self.reactor), permits=self.account_permits,
            holder=f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")
        self.daily_caps = DailyCaps(self.carriers.carriers, self.store, self.reactor,
                                    budget=config.limits.daily_sms_budget)
        self.suspensions = Suspensions(self.carriers, self.store, self.reactor)
        self.fake_smsc = self._fakeSMSC() if config.dev.fake_smsc else []

    def _buildEvents(self) -> None:
        """A delivery per webhook, and the sweep that tells of unnoticed expiries."""
        self.events = MultiService()
        self.webhooks: list[WebhookDelivery] = []
        self._fillEvents(self.config.webhooks)

    def _fillEvents(self, webhooks) -> None:
        self.store.events_stream = keys.EVENTS if webhooks else b""
        if not webhooks:
            return
        stream = EventStream(self.store)
        payloads = Payloads(self.config.secrets, self.signer)
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        http = http_client(self.reactor)
        for webhook in webhooks:
            delivery = WebhookDelivery(webhook, stream, payloads,
                                       self._connectRedisAlone, http, self.reactor, consumer,
                                       webhooks=frozenset(w.name for w in webhooks))
            delivery.setServiceParent(self.events)
            self.webhooks.append(delivery)
        sweep = TimerService(30.0, self._sweepExpired)
        sweep.clock = self.reactor
        sweep.setServiceParent(self.events)

    @inlineCallbacks
    def useWebhooks(self, webhooks):
        """Deliver to C{webhooks} from now on (a reload): the deliveries
        there were stop (each finishing what it has in flight), then the
        new ones start."""
        for part in list(self.events):
            yield maybeDeferred(part.disownServiceParent)
        del self.webhooks[:]
        self._fillEvents(webhooks)

    def _sweepExpired(self) -> Deferred:
        def failed(failure) -> None:
            log.debug("The expiry sweep is skipped: {why}", why=str(failure.value))

        return self.backend.sweepExpired().addErrback(failed)

    def _buildHTTP(self) -> None:
        config = self.config
        public = config.http.public_url
        self.discovery = Discovery(config.carriers, public.url_for("/sms/mt/verify"))
        self.board = StatusBoard(self.reactor, self.carriers, self.verifier, self.store,
                                 redis_watch=self.redis_watch, limits=self.limits,
                                 webhooks=self.webhooks, version=__version__,
                                 environment=config.environment)
        self.metrics = Metrics(self.board.take, WEBHOOK_LATENCY_BUCKETS)
        self.api = GatewayAPI(
            verifier=self.verifier, signer=self.signer,
            discovery=self.discovery,
            texts=self.texts, public_url=public, settings=config.verification,
            clock=self.reactor, cors_origins=config.http.cors_origins,
            show_version=config.http.show_version,
            health=lambda: {"carriers": self.carriers.router.available()
                            and not self.carriers.router.unserved()},
            trusted_proxies=config.http.trusted_proxies, backend=self.backend,
            environment=config.environment)
        self.site = APISite(self.api.resource(), config.http.max_body, self.reactor,
                            onDone=self.metrics.requestDone,
                            logFormatter=access_log_formatter(config.http.trusted_proxies),
                            access_log=config.log.access,
                            request_deadline=config.http.request_deadline,
                            max_connections=config.http.max_connections,
                            max_connections_per_client=config.http.max_connections_per_client,
                            trusted_proxies=config.http.trusted_proxies,
                            show_version=config.http.show_version)
        self.site.noisy = False
        _enough_descriptors(config.http.max_connections)
        self.http = DrainingListeners(self.reactor, self.site, config.http.listen,
                                      HTTP_DRAIN_TIMEOUT)
        self.admin = (Listener(self.reactor, config.admin.listen,
                               admin_site(self.metrics.registry, self.board, self._health,
                                          actions=self.control,
                                          tokens=lambda: self.config.admin.tokens,
                                          show_version=config.http.show_version),
                               "[admin].listen")
                      if config.admin.listen else None)

    def _health(self) -> dict:
        """The admin listener's C{/health}: Redis as the watch last saw it,
        each carrier, and the destinations no live carrier takes."""
        return {"storage": self.redis_watch.state.value, **self.carriers.health()}

    def _fakeSMSC(self) -> list[IService]:
        from msisdnd.fakesmsc.smsc import FakeSMSC
        from msisdnd.fakesmsc.web import FakeSMSCWeb

        smsc = FakeSMSC(self.reactor, receipt_delay=1.0)
        self.fake = smsc
        web = UnloggedSite(FakeSMSCWeb(smsc).resource())
        dev = self.config.dev
        return [Listener(self.reactor, dev.fake_smsc_smpp, smsc.buildFactory(),
                         "[dev].fake_smsc_smpp"),
                Listener(self.reactor, dev.fake_smsc_http, web, "[dev].fake_smsc_http")]

    def _connectRedis(self):
        return connect_pool(self.config.redis, master=self.sentinel,
                            socket=self.embedded.socket if self.embedded else None)

    def _connectRedisAlone(self) -> Deferred:
        """A connection of its own (for the webhooks' blocking reads)."""
        return connect_alone(self.config.redis, master=self.sentinel,
                             socket=self.embedded.socket if self.embedded else None)

    def _parts(self) -> list[IService]:
        """Every part, in start order."""
        parts = [self.embedded, self.sentinel, self.redis, self.redis_watch, self.daily_caps,
                 self.suspensions, self.events, self.account_permits, *self.fake_smsc,
                 self.carriers, self.board.service(), self.admin, self.http]
        return [part for part in parts if part is not None]

    # -- run -----------------------------------------------------------------

    _ready = False  # every part started
    _reload_waiting = False  # a SIGHUP came before that

    def setServiceParent(self, parent: Any) -> None:
        """Join C{parent}; when it is twistd's application, offer it
        L{logObserver} (twistd logs to an application's C{ILogObserver}
        component unless C{--logger} names one)."""
        if (self.logObserver is not None and isinstance(parent, Componentized)
                and parent.getComponent(ILogObserver, None) is None):
            parent.setComponent(ILogObserver, self.logObserver)
        super().setServiceParent(parent)

    def startService(self) -> None:
        self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        super().startService()
        self.started.addCallbacks(self._up, self._startFailed)

    def _sighup(self, signum: int, frame: object) -> None:
        """SIGHUP reloads the configuration, as C{msisdnd reload} does (twistd
        leaves SIGHUP alone: without this, it would end the daemon)."""
        self.reactor.callFromThread(self._reloadOnSignal)

    def _reloadOnSignal(self) -> None:
        if not self.running:
            log.warn("SIGHUP ignored: msisdnd is stopping")
            return
        if not self._ready:
            log.info("SIGHUP: the reload waits until msisdnd is up")
            self._reload_waiting = True
            return
        log.info("SIGHUP: reloading {path}", path=self.config.path)

        def failed(failure) -> None:
            if not failure.check(ActionRefused):  # a refusal is logged already
                log.failure("The reload failed", failure)

        self.control.reload().addErrback(failed)

    def _up(self, _: object) -> None:
        self._ready = True
        _freeze_start_up_objects()
        if self._reload_waiting:
            self._reload_waiting = False
            self._reloadOnSignal()
        log.info("msisdnd is up: API {api} (listening on {listen}), admin {admin}",
                 api=self.config.http.public_url.base, listen=", ".join(self.config.http.listen),
                 admin=self.config.admin.listen or "off")

    def _startFailed(self, failure) -> None:
        """Stop what started, in order, and exit with status 1."""
        if failure.check(PartFailed):
            log.critical("msisdnd could not start: {why}", why=str(failure.value))
        else:
            log.failure("msisdnd could not start", failure)
        self.reactor.addSystemEventTrigger("after", "shutdown", _exit_with, 1)
        # twistd starts the service before it runs the reactor: a part that
        # fails at once must wait for the reactor to be there to stop.
        self.reactor.callWhenRunning(self.reactor.stop)

    @inlineCallbacks
    def stopService(self):
        """Graceful stop: HTTP, requests in flight, queues, binds, Redis — each bounded."""
        yield super().stopService()  # a SIGHUP meanwhile is ignored, not fatal
        signal.signal(signal.SIGHUP, getattr(self, "_previous_sighup", signal.SIG_DFL))
        log.info("msisdnd stopped")
        _exit_zero_after_sigterm(self.reactor)
