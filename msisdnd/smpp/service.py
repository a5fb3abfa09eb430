"""The carrier side as one service: every carrier, its binds, and the router."""

from __future__ import annotations

from typing import Sequence

from twisted.application.service import MultiService
from twisted.internet import ssl
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from msisdnd.sms.accounts import IBindPermits, IThroughputLeases
from msisdnd.sms.interfaces import IMOReceiver, IReceiptReceiver
from msisdnd.smpp.bind import SMPPBind
from msisdnd.smpp.carrier import Carrier
from msisdnd.smpp.config import CarrierConfig, SessionConfig
from msisdnd.smpp.router import Router

log = Logger()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def endpoint_for(reactor: object, spec: SessionConfig) -> IStreamClientEndpoint:
    """The client endpoint for one session spec: TCP, or TLS over it.

    With TLS, the SMSC's certificate is checked against C{ca_file} (the
    platform's trust store when absent) for C{hostname} (the host when
    absent); C{cert_file} and C{key_file} present a client certificate.
    """
    tcp = HostnameEndpoint(reactor, spec.host, spec.port)
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
        self.drain_timeout = drain_timeout
        self.carriers: list[Carrier] = []
        self.binds: list[SMPPBind] = []
        for config in configs:
            carrier = Carrier(config, reactor, send_timeout, mo_receiver, receipt_receiver,
                              leases=leases)
            self.carriers.append(carrier)
            for index, spec in enumerate(config.session_specs):
                bind = SMPPBind(f"{config.name}/{index}", spec, config,
                                endpoint_for(reactor, spec), reactor, carrier,
                                drain_timeout=drain_timeout, permits=permits, holder=holder)
                bind.setServiceParent(self)
                self.binds.append(bind)
        self.router = Router(self.carriers)

    @inlineCallbacks
    def stopService(self):
        yield DeferredList([c.drain(self.drain_timeout) for c in self.carriers])
        yield super().stopService()

    def snapshot(self) -> dict:
        """Every carrier and bind, for metrics, health and the admin API."""
        return {
            "carriers": [c.snapshot() for c in self.carriers],
            "binds": [b.snapshot() | {"carrier": b.carrier.name,
                                      "queue_depth": self._carrier(b).queue_depth}
                      for b in self.binds],
        }

    def health(self) -> dict:
        """Each carrier's state and the destinations no live carrier takes
        (L{Router.unserved}), for the admin listener's C{/health}."""
        return {
            "carriers": [{"name": c.name, "available": c.available, "bound": c.bound,
                          "reconnecting": c.reconnecting, "tripped": c.tripped,
                          "waiting_permits": c.waiting_permits}
                         for c in self.carriers],
            "unserved": self.router.unserved(),
        }

    def _carrier(self, bind: SMPPBind) -> Carrier:
        return next(c for c in self.carriers if c.name == bind.carrier.name)
