"""The msisdnd process: every part, started and stopped in order.

L{Daemon} is the service C{twistd msisdnd} runs.  Start-up goes config ->
keys (both before the reactor runs, so a bad one stops the start) -> Redis
-> carriers (binding in the background) -> HTTP.  SIGTERM stops accepting
HTTP, lets requests in flight finish, drains the carriers' queues, unbinds
every session, closes Redis, and stops the embedded Redis last.  Every wait
is bounded.
"""

from __future__ import annotations

import json
import signal

import txredisapi
from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from msisdnd.verification import certs
from msisdnd.api.app import DeviceAPI
from msisdnd.api.clientaddr import access_log_formatter
from msisdnd.api.request import APISite
from msisdnd.state.daily_cap import CarrierBreaker
from msisdnd.config import Config
from msisdnd.api.discovery import Discovery
from msisdnd.verification.flows import MOVerifier, Verifier
from msisdnd.state.limits import Limits
from msisdnd.api.metrics import Metrics
from msisdnd.state.embedded import EmbeddedRedis
from msisdnd.verification.texts import SMSTexts
from msisdnd.smpp.service import CarriersService
from msisdnd.state.sessions import RedisStore

log = Logger()

#: Seconds each stage of a graceful stop may take.
HTTP_DRAIN_TIMEOUT = 10.0
CARRIER_DRAIN_TIMEOUT = 5.0


class _JSONResource(Resource):
    isLeaf = True

    def __init__(self, produce):
        super().__init__()
        self.produce = produce

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(self.produce(), indent=2).encode()


class _MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry):
        super().__init__()
        self.registry = registry

    def render_GET(self, request) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


def admin_site(daemon: "Daemon") -> Site:
    """The admin listener: C{/metrics} (Prometheus) and C{/binds} (JSON)."""
    root = Resource()
    root.putChild(b"metrics", _MetricsResource(daemon.metrics.registry))
    root.putChild(b"binds", _JSONResource(daemon.carriers.snapshot))
    root.putChild(b"", _JSONResource(lambda: {"metrics": "/metrics", "binds": "/binds"}))
    site = Site(root)
    site.noisy = False
    return site


class Daemon(MultiService):
    """Every part of msisdnd, from one validated L{Config}.

    Building it loads the signing keys, so a missing or bad key stops the
    start before anything listens.
    """

    def __init__(self, config: Config, reactor: object):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.signer = certs.Signer(
            browserid_keys=[certs.load_signing_key(p) for p in config.keys.browserid],
            jwt_keys=[certs.load_signing_key(p) for p in config.keys.jwt],
            issuer_host=config.http.public_url.host, issuer_url=config.http.public_url.base,
            pseudonym_secret=config.secrets.pseudonym, clock=reactor.seconds)
        settings = config.verification
        self.embedded = EmbeddedRedis(config.redis.dir, reactor) if config.redis.embedded else None
        self.pool = None
        self.store = RedisStore(None, reactor, timeout=settings.store_timeout)
        self.texts = SMSTexts(default_locale=config.sms.default_locale,
                              webotp_host=config.sms.webotp_host)
        self.limits = Limits(self.store, config.limits, config.secrets.number, reactor)
        self.verifier = Verifier(
            self.store, None, settings, config.secrets, self.texts, reactor,
            mo_verifiers=tuple(MOVerifier(c.name, c.mo_verifier, None)
                               for c in config.carriers if c.mo_verifier),
            limits=self.limits)
        self.carriers = CarriersService(config.carriers, reactor, send_timeout=settings.send_timeout,
                                        drain_timeout=CARRIER_DRAIN_TIMEOUT,
                                        mo_receiver=self.verifier, receipt_receiver=self.verifier)
        self.verifier.sender = self.carriers.router
        self.breaker = CarrierBreaker(self.carriers.carriers, self.store, reactor)
        self.metrics = Metrics(self.carriers, self.verifier, self.store, self.limits)
        public = config.http.public_url
        self.api = DeviceAPI(
            verifier=self.verifier, signer=self.signer,
            discovery=Discovery(config.carriers, public.url_for("/sms/mt/verify")),
            texts=self.texts, store=self.store, public_url=public, settings=settings,
            clock=reactor, cors_origins=config.http.cors_origins,
            show_version=config.http.show_version,
            health=lambda: {"carriers": self.carriers.router.available()},
            limits=self.limits, trusted_proxies=config.http.trusted_proxies)
        self.site = APISite(self.api.resource(), config.http.max_body, reactor,
                            onDone=self.metrics.requestDone,
                            logFormatter=access_log_formatter(config.http.trusted_proxies))
        self.site.noisy = False
        self.http = [strports.service(listen, self.site) for listen in config.http.listen]
        self.admin = (strports.service(config.admin.listen, admin_site(self))
                      if config.admin.listen else None)
        self.fake_smsc = self._fakeSMSC() if config.dev.fake_smsc else []
        for part in [self.embedded, *self.fake_smsc, self.carriers, self.admin, *self.http]:
            if part is not None:
                part.setServiceParent(self)

    def _fakeSMSC(self) -> list:
        from msisdnd.fakesmsc.smsc import FakeSMSC
        from msisdnd.fakesmsc.web import FakeSMSCWeb

        smsc = FakeSMSC(self.reactor, receipt_delay=1.0)
        self.fake = smsc
        web = Site(FakeSMSCWeb(smsc).resource())
        web.noisy = False
        return [strports.service(self.config.dev.fake_smsc_smpp, smsc.buildFactory()),
                strports.service(self.config.dev.fake_smsc_http, web)]

    def _connectRedis(self):
        settings = self.config.redis
        common = dict(poolsize=settings.pool_size, reconnect=True, charset=None,
                      convertNumbers=False, password=settings.password,
                      username=settings.username, connectTimeout=settings.timeout)
        if self.embedded is not None:
            return txredisapi.lazyUnixConnectionPool(self.embedded.socket, **common)
        if settings.unix_socket:
            return txredisapi.lazyUnixConnectionPool(settings.unix_socket, dbid=settings.db,
                                                     **common)
        return txredisapi.lazyConnectionPool(settings.host, settings.port, dbid=settings.db,
                                             **common)

    def privilegedStartService(self) -> None:
        """Listen on nothing yet: the HTTP ports open in L{startService}, once Redis is there.

        (A port below 1024 therefore needs systemd socket activation, not root.)
        """

    def startService(self) -> None:
        # Children start in order, and the HTTP listeners only once Redis is there.
        self.running = 1
        self._started = self._start()
        self._started.addErrback(self._startFailed)

    @inlineCallbacks
    def _start(self):
        if self.embedded is not None:
            self.embedded.startService()
            yield self.embedded.start()
        self.pool = self._connectRedis()
        self.store.redis = self.pool
        self.breaker.startService()
        for part in [*self.fake_smsc, self.carriers, self.admin, *self.http]:
            if part is not None:
                part.startService()
        public = self.config.http.public_url.base
        log.info("msisdnd is up: API {api} (listening on {listen}), admin {admin}",
                 api=public, listen=", ".join(self.config.http.listen),
                 admin=self.config.admin.listen or "off")

    def _startFailed(self, failure) -> None:
        log.failure("msisdnd could not start", failure)
        self.reactor.stop()

    @inlineCallbacks
    def stopService(self):
        """Graceful stop: HTTP, requests in flight, queues, binds, Redis — each bounded."""
        self.running = 0
        for service in self.http:
            if service.running:
                yield service.stopService()
        yield self.site.whenIdle(HTTP_DRAIN_TIMEOUT)
        if self.admin is not None and self.admin.running:
            yield self.admin.stopService()
        if self.carriers.running:
            yield self.carriers.stopService()
        if self.breaker.running:
            yield self.breaker.stopService()
        for service in self.fake_smsc:
            if service.running:
                yield service.stopService()
        if self.pool is not None:
            yield self.pool.disconnect()
        if self.embedded is not None:
            yield self.embedded.stopService()
        log.info("msisdnd stopped")
        # twistd re-raises the signal that stopped it (exit status 143); a
        # graceful stop that completed is a clean exit, status 0.
        if getattr(self.reactor, "_exitSignal", None) == signal.SIGTERM:
            self.reactor._exitSignal = None
