"""The carrier side as one service: every carrier, its binds, and the router."""

from __future__ import annotations

from typing import Sequence

from twisted.application.service import MultiService
from twisted.internet import ssl
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from msisdnd.sms.accounts import IBindPermits, IThroughputLeases
from msisdnd.sms.interfaces import IMOReceiver, IReceiptReceiver
from msisdnd.sms.status import CarriersStatus, UnknownCarrier
from msisdnd.smpp.bind import SMPPBind
from msisdnd.smpp.carrier import Carrier
from msisdnd.smpp.config import CarrierConfig, SessionConfig
from msisdnd.smpp.router import Router
from msisdnd.transport import flushing

log = Logger()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def endpoint_for(reactor: object, spec: SessionConfig) -> IStreamClientEndpoint:
    """The client endpoint for one session spec: TCP (sending at the end of
    the reactor's turn, L{msisdnd.transport}), or TLS over it.

    With TLS, the SMSC's certificate is checked against C{ca_file} (the
    platform's trust store when absent) for C{hostname} (the host when
    absent); C{cert_file} and C{key_file} present a client certificate.
    """
    tcp = HostnameEndpoint(flushing(reactor), spec.host, spec.port)
    tls = spec.tls
    if tls is None:
        return tcp
    client_cert = None
    if tls.cert_file:
        client_cert = ssl.PrivateCertificate.loadPEM(_read(tls.cert_file) + b"\n" + _read(tls.key_file))
    if not tls.verify:
        log.warn("TLS to {host}:{port} does not check the SMSC's certificate",
                 host=spec.host, port=spec.port)
        extra = {}
        if client_cert is not None:
            extra = {"privateKey": client_cert.privateKey.original,
                     "certificate": client_cert.original}
        return wrapClientTLS(ssl.CertificateOptions(verify=False, **extra), tcp)
    trust = ssl.Certificate.loadPEM(_read(tls.ca_file)) if tls.ca_file else ssl.platformTrust()
    options = ssl.optionsForClientTLS(spec.tls_hostname, trustRoot=trust,
                                      clientCertificate=client_cert)
    return wrapClientTLS(options, tcp)


class CarriersService(MultiService):
    """Every carrier and its binds; C{router} is the L{ISMSSender}.

    Stopping drains the queues (bounded by C{drain_timeout}), then unbinds
    every session gracefully.

    At run time an operator may suspend a carrier (L{setSuspended}: it takes
    no new sends, drains, and unbinds only if told to), rebind it
    (L{rebind}), or change the set of carriers (L{reconfigure}, on a reload).

    @param leases: where carriers with a C{throughput} take their account's
        tokens (shared with other daemons), or C{None} for each carrier's
        own cap alone.
    @param permits: where binds of carriers with C{max_binds} take their
        account's permits, or C{None} for no limit.
    @param holder: this daemon's name in the permits it holds (unique
        among the daemons sharing the accounts).
    """

    def __init__(
        self,
        configs: Sequence[CarrierConfig],
        reactor: object,
        *,
        send_timeout: float = 10.0,
        drain_timeout: float = 5.0,
        mo_receiver: IMOReceiver | None = None,
        receipt_receiver: IReceiptReceiver | None = None,
        leases: IThroughputLeases | None = None,
        permits: IBindPermits | None = None,
        holder: str = "",
    ):
        super().__init__()
        self.reactor = reactor
        self.send_timeout = send_timeout
        self.drain_timeout = drain_timeout
        self.mo_receiver = mo_receiver
        self.receipt_receiver = receipt_receiver
        self.carriers: list[Carrier] = []
        self.binds: list[SMPPBind] = []
        self.leases = leases
        self.permits = permits
        self.holder = holder
        #: Suspended carriers by name -> whether their binds are to be let go.
        self.suspensions: dict[str, bool] = {}
        self.carriers = [self._make(config) for config in configs]
        for carrier in self.carriers:
            self._bind(carrier)
        self.router = Router(self.carriers)

    def _make(self, config: CarrierConfig) -> Carrier:
        carrier = Carrier(config, self.reactor, self.send_timeout, self.mo_receiver,
                          self.receipt_receiver, leases=self.leases)
        carrier.suspended = config.name in self.suspensions
        return carrier

    def _newBinds(self, carrier: Carrier) -> list[SMPPBind]:
        """A bind for each of C{carrier}'s sessions, not started; none while
        its suspension lets its binds go.

        @raise ValueError: a TLS file could not be loaded (nothing changed).
        """
        config = carrier.config
        if self.suspensions.get(config.name, False):
            return []
        binds = []
        for index, spec in enumerate(config.session_specs):
            try:
                endpoint = endpoint_for(self.reactor, spec)
            except Exception as e:
                raise ValueError(f"carrier {config.name!r}: its TLS files cannot be "
                                 f"loaded: {e}") from e
            binds.append(SMPPBind(f"{config.name}/{index}", spec, config, endpoint,
                                  self.reactor, carrier, drain_timeout=self.drain_timeout,
                                  permits=self.permits, holder=self.holder))
        return binds

    def _attach(self, binds: list[SMPPBind]) -> None:
        """Start C{binds} (now, if running)."""
        for bind in binds:
            bind.setServiceParent(self)
            self.binds.append(bind)

    def _bind(self, carrier: Carrier) -> None:
        self._attach(self._newBinds(carrier))

    def _unbind(self, carrier: Carrier) -> Deferred:
        """Unbind and forget C{carrier}'s binds (each unbind bounded)."""
        binds = [b for b in self.binds if b.listener is carrier]
        self.binds = [b for b in self.binds if b.listener is not carrier]
        return DeferredList([maybeDeferred(b.disownServiceParent) for b in binds])

    def carrier(self, name: str) -> Carrier:
        """The carrier called C{name}.

        @raise UnknownCarrier: none is, here.
        """
        for carrier in self.carriers:
            if carrier.name == name:
                return carrier
        raise UnknownCarrier(f"no carrier named {name!r} (configured: "
                             f"{', '.join(c.name for c in self.carriers)})")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.carriers]

    def setSuspended(self, name: str, suspended: bool, unbind: bool = False) -> Deferred:
        """Suspend C{name} (no new sends; with C{unbind}, its binds let go
        once its queue is drained, bounded by C{drain_timeout}) or resume it
        (its binds back if they were let go).  Fires once done; doing what is
        already done does nothing.  An unknown C{name} is ignored (another
        daemon may have that carrier)."""
        carrier = next((c for c in self.carriers if c.name == name), None)
        if carrier is None:
            return succeed(None)
        was = carrier.suspended
        if suspended:
            self.suspensions[name] = unbind
        else:
            self.suspensions.pop(name, None)
        carrier.suspended = suspended
        if suspended and not was:
            log.warn("{carrier} is suspended: no new sends{binds}", carrier=name,
                     binds="; its binds are let go once it is drained" if unbind
                     else "; its binds stay up for receipts and MO")
        elif was and not suspended:
            log.info("{carrier} is resumed: it takes sends again", carrier=name)
        return self._settle(carrier)

    @inlineCallbacks
    def _settle(self, carrier: Carrier):
        """Bind C{carrier}, or let its binds go once it is drained, as its
        suspension wants."""
        name = carrier.name
        has_binds = any(b.listener is carrier for b in self.binds)
        if not self.suspensions.get(name, False):
            if not has_binds and self.running and carrier in self.carriers:
                self._bind(carrier)
            return
        if not has_binds:
            return
        try:
            yield carrier.whenIdle(self.drain_timeout)
        except Exception:
            log.warn("{carrier} still had {count} parts queued when its binds were let go",
                     carrier=name, count=carrier.queue_depth)
        if self.suspensions.get(name, False) and carrier in self.carriers:
            yield self._unbind(carrier)

    @inlineCallbacks
    def rebind(self, name: str):
        """Unbind every session of carrier C{name} and bind them again.

        @raise UnknownCarrier: no such carrier here.
        """
        carrier = self.carrier(name)
        binds = self._newBinds(carrier)  # its TLS files read again, before anything goes
        yield self._unbind(carrier)
        if carrier in self.carriers and not any(b.listener is carrier for b in self.binds):
            self._attach(binds)
        log.info("{carrier}: rebound at an operator's request", carrier=name)

    def reconfigure(self, configs: Sequence[CarrierConfig]) -> Deferred:
        """Change to the carriers C{configs} (a reload): added carriers bind;
        removed ones stop taking sends, drain and unbind; changed ones are
        replaced (their binds go, the new ones bind; the new carrier takes
        sends meanwhile, for its C{reconnect_grace}); an unchanged carrier
        and its binds are not touched.  A message a going carrier could not
        send within C{drain_timeout} (its SMSC down), none of its parts out,
        goes through the router to the carriers that stay (its successor
        among them).

        @return: a Deferred firing, once the carriers that went are drained
            and unbound, with C{{"added": [...], "removed": [...],
            "changed": [...]}} (names).
        @raise ValueError: a new carrier's TLS files cannot be loaded
            (nothing changed).
        """
        old = {c.name: c for c in self.carriers}
        new = {c.name: c for c in configs}
        going = [c for name, c in old.items() if new.get(name) != c.config]
        fresh = {c.name: self._make(c) for c in configs
                 if c.name not in old or old[c.name].config != c}
        binds = [b for carrier in fresh.values() for b in self._newBinds(carrier)]
        changes = {"added": [n for n in new if n not in old],
                   "removed": [n for n in old if n not in new],
                   "changed": [n for n in new if n in old and new[n] != old[n].config]}
        # A removed carrier's suspension is kept (Redis keeps it): added back, it is suspended.
        return self._replace(configs, going, fresh, binds).addCallback(lambda _: changes)

    @inlineCallbacks
    def _replace(self, configs: Sequence[CarrierConfig], going: list[Carrier],
                 fresh: dict[str, Carrier], binds: list[SMPPBind]):
        self.carriers = [c for c in self.carriers if c not in going]
        # A changed carrier's successor takes its sends while the old one
        # drains and unbinds (its binds come after): a reload costs no 503.
        successors = [fresh[c.name] for c in going if c.name in fresh]
        for carrier in successors:
            carrier.holdSends()
        self.router.use(self.carriers + successors)
        yield DeferredList([self._retire(c) for c in going])
        kept = {c.name: c for c in self.carriers}
        self.carriers = [kept.get(config.name) or fresh[config.name] for config in configs]
        self._attach(binds)
        self.router.use(self.carriers)

    @inlineCallbacks
    def _retire(self, carrier: Carrier):
        yield carrier.drain(self.drain_timeout)
        yield self._unbind(carrier)

    @inlineCallbacks
    def stopService(self):
        yield DeferredList([c.drain(self.drain_timeout) for c in self.carriers])
        yield super().stopService()

    def snapshot(self) -> dict:
        """Every carrier and bind, for metrics, health and the admin API."""
        return {
            "carriers": [c.snapshot() for c in self.carriers],
            "binds": [b.snapshot() | {"carrier": b.carrier.name,
                                      "queue_depth": b.listener.queue_depth}
                      for b in self.binds],
        }

    def status(self) -> CarriersStatus:
        """Every carrier and bind now, for the admin listener and the metrics."""
        now = self.reactor.seconds()
        parts = self.snapshot()
        return CarriersStatus(carriers=parts["carriers"], binds=parts["binds"],
                              readings=[c.reading(now) for c in self.carriers],
                              unserved=self.router.unserved(),
                              failovers=dict(self.router.failovers))

    def health(self) -> dict:
        """Each carrier's state and the destinations no live carrier takes
        (L{Router.unserved}), for the admin listener's C{/health}.

        A carrier's C{up} says it has a live bind; C{reconnecting_since} and
        C{down_since} (RFC 3339, else null) when it lost its last bind, set
        while it is reconnecting within its grace or down past it.
        """
        def detail(c: Carrier) -> dict:
            link = c.link.snapshot()
            return {"name": c.name, "up": link["state"] == "up", "available": c.available,
                    "bound": c.bound, "reconnecting": c.reconnecting, "tripped": c.tripped,
                    "suspended": c.suspended, "waiting_permits": c.waiting_permits,
                    "reconnecting_since": link["reconnecting_since"],
                    "down_since": link["down_since"], "last_error": link["last_error"]}

        return {
            "carriers": [detail(c) for c in self.carriers],
            "unserved": self.router.unserved(),
        }
