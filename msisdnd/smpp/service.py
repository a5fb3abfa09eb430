"""The carrier side as one service: every carrier, its binds, and the router."""

from __future__ import annotations

from typing import Sequence

from twisted.application.service import MultiService
from twisted.internet import ssl
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

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
    ):
        super().__init__()
        self.drain_timeout = drain_timeout
        self.carriers: list[Carrier] = []
        self.binds: list[SMPPBind] = []
        for config in configs:
            carrier = Carrier(config, reactor, send_timeout, mo_receiver, receipt_receiver)
            self.carriers.append(carrier)
            for index, spec in enumerate(config.session_specs):
                bind = SMPPBind(f"{config.name}/{index}", spec, config,
                                endpoint_for(reactor, spec), reactor, carrier,
                                drain_timeout=drain_timeout)
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
        (L{Router.unserved}), for the admin listener's C{/health}.

        A carrier's C{up} says it has a live bind; C{reconnecting_since} and
        C{down_since} (RFC 3339, else null) when it lost its last bind, set
        while it is reconnecting within its grace or down past it.
        """
        def detail(c: Carrier) -> dict:
            link = c.link.snapshot()
            return {"name": c.name, "up": link["state"] == "up", "available": c.available,
                    "bound": c.bound, "reconnecting": c.reconnecting, "tripped": c.tripped,
                    "reconnecting_since": link["reconnecting_since"],
                    "down_since": link["down_since"], "last_error": link["last_error"]}

        return {
            "carriers": [detail(c) for c in self.carriers],
            "unserved": self.router.unserved(),
        }

    def _carrier(self, bind: SMPPBind) -> Carrier:
        return next(c for c in self.carriers if c.name == bind.carrier.name)
