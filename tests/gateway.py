"""A whole verification gateway on loopback for end-to-end tests.

Real parts only: the Klein API on a TCP port, Redis (the test run's
redis-server), the SMPP stack bound to the fake SMSC over TCP, and a device
client that signs its requests with Hawk as upstream clients do.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from msisdnd import hawk
from msisdnd.verification import certs
from msisdnd.api.app import GatewayAPI
from msisdnd.api.request import APISite
from msisdnd.api.discovery import Discovery
from msisdnd.verification.flows import MOVerifier, Verifier
from msisdnd.state.limits import Limits, LimitSettings
from msisdnd.verification.settings import PublicURL, Secrets, VerificationSettings
from msisdnd.verification.texts import SMSTexts
from msisdnd.smpp.config import CarrierConfig
from msisdnd.smpp.service import CarriersService
from msisdnd.state import keys
from msisdnd.state.api_keys import ApiKeys
from msisdnd.state.idempotency import Idempotency
from msisdnd.state.sessions import SessionStore
from msisdnd.verification.authentication import ApiKeyAuthenticator
from msisdnd.verification.backend import BackendVerifications

from conftest import SMSCHarness, free_port, wait_until

MO_NUMBER = "33700000000"
SENDER = "Verify"
APP_HASH = "FA+9qCX9VSu"  # the one app whose hash clients may ask for

_KEYS: dict[str, certs.SigningKey] = {}


def signing_keys(directory: Path) -> tuple[certs.SigningKey, certs.SigningKey]:
    """One RSA and one Ed25519 key for the whole run (RSA generation is slow)."""
    if not _KEYS:
        _KEYS["rsa"] = certs.generate_rsa_key(str(directory / "browserid.pem"))
        _KEYS["ed"] = certs.generate_ed25519_key(str(directory / "jwt.pem"))
    return _KEYS["rsa"], _KEYS["ed"]


class _Collect(Protocol):
    """Whatever arrives, until the connection closes."""

    def __init__(self):
        self.data = b""
        self.done: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason=None) -> None:
        self.done.callback(self.data)


@inlineCallbacks
def raw_answer(port: int, data: bytes):
    """The bytes a loopback listener on C{port} answers to C{data}, until it closes."""
    collector = _Collect()
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), collector)
    collector.transport.write(data)
    answer = yield collector.done
    return answer


def raw_request(method: bytes, target: bytes, body: bytes = b"", *headers: bytes) -> bytes:
    """An HTTP/1.1 request as bytes, with C{Host}, C{Content-Length} and C{Connection: close}."""
    lines = [b"%s %s HTTP/1.1" % (method, target), b"Host: 127.0.0.1",
             b"Content-Length: %d" % len(body), b"Connection: close", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class Response:
    code: int
    headers: dict[str, str]
    body: object


@dataclass
class Gateway:
    """The running pieces, and a client for them."""

    url: str
    smsc: SMSCHarness
    carriers: CarriersService
    verifier: Verifier
    api: GatewayAPI
    store: SessionStore
    settings: VerificationSettings
    signer: certs.Signer
    port: object = None
    tokens: dict[str, hawk.HawkCredentials] = field(default_factory=dict)

    @inlineCallbacks
    def call(self, method: str, path: str, body: object = None, *, token: str | None = None,
             headers: dict[str, str] | None = None, raw: bytes | None = None,
             with_hash: bool = True):
        """One request; signed with Hawk when C{token} is given."""
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        sent = {"Content-Type": "application/json"} if data else {}
        sent.update(headers or {})
        if token is not None:
            credentials = hawk.derive_session(bytes.fromhex(token))
            sent["Authorization"] = hawk.authorization_header(
                credentials, method, self.url + path, data,
                sent.get("Content-Type", ""), with_hash=with_hash)
        response = yield treq.request(method, self.url + path, data=data or None,
                                      headers={k: [v] for k, v in sent.items()})
        content = yield response.content()
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = content
        flat = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
        return Response(response.code, flat, parsed)

    def raw(self, data: bytes):
        """The bytes answered to C{data}, sent as is on a new connection, until
        the gateway closes it (send C{Connection: close})."""
        return raw_answer(int(self.url.rsplit(":", 1)[1]), data)

    @inlineCallbacks
    def hangUpWhileRegistering(self):
        """A client sends C{POST /register} and hangs up while the verifier's
        registration step (its admission included) waits; fires with the
        step's cancellations once the request ended."""
        calls, cancelled = [], []
        step = Deferred(cancelled.append)
        self.verifier.register = lambda client=None: calls.append(client) or step
        site = self.port.factory
        client = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port), Protocol())
        client.transport.write(raw_request(b"POST", b"/register", b"{}",
                                           b"Content-Type: application/json"))
        yield wait_until(lambda: calls and site.active == 1)
        client.transport.loseConnection()
        yield wait_until(lambda: site.active == 0)
        return cancelled

    @inlineCallbacks
    def register(self):
        response = yield self.call("POST", "/register")
        assert response.code == 200, response
        return response.body["msisdnSessionToken"]

    @inlineCallbacks
    def pin(self, msisdn: str, timeout: float = 5.0):
        """The last code the fake SMSC holds for C{msisdn} (the last word of its text)."""
        yield wait_until(lambda: self.smsc.smsc.received(msisdn), timeout)
        text = self.smsc.smsc.received(msisdn)[-1].text
        return text.split()[-1] if "\n" not in text else text.splitlines()[0].split()[-1]

    @inlineCallbacks
    def stop(self):
        yield self.port.stopListening()
        yield self.carriers.stopService()


@inlineCallbacks
def start_gateway(redis_pool, tmp_path: Path, settings: VerificationSettings | None = None,
                  limits: LimitSettings | None = None, carrier_overrides: dict | None = None,
                  events: bool = False, **smsc_kwargs):
    """Start every piece; the caller stops it with C{Gateway.stop}."""
    settings = settings or VerificationSettings(send_timeout=3.0)
    smsc = SMSCHarness(**smsc_kwargs)
    carrier = CarrierConfig.from_mapping({
        "name": "fake", "host": "127.0.0.1", "port": smsc.portNumber, "system_id": "msisdnd",
        "password": "pw", "mt_sender": SENDER, "mo_verifier": MO_NUMBER, "default": True,
        "region": "FR", "reconnect_delay_initial": 0.05, "reconnect_delay_max": 0.2,
        **(carrier_overrides or {}),
    }, "carrier[fake]")
    port_number = free_port()
    url = f"http://127.0.0.1:{port_number}"
    public = PublicURL(url)
    secrets = Secrets.from_master(b"m" * 32)
    store = SessionStore(redis_pool, reactor, timeout=settings.store_timeout,
                         events_stream=keys.EVENTS if events else b"")
    texts = SMSTexts(app_hashes=(APP_HASH,))
    limiter = Limits(store, limits, secrets.number, reactor) if limits is not None else None
    verifier = Verifier(store, None, settings, secrets, texts, reactor,
                        mo_verifiers=(MOVerifier("fake", MO_NUMBER, None),), limits=limiter)
    carriers = CarriersService([carrier], reactor, send_timeout=settings.send_timeout,
                               mo_receiver=verifier, receipt_receiver=verifier)
    verifier.wire(carriers.router)
    rsa_key, ed_key = signing_keys(tmp_path)
    signer = certs.Signer(browserid_keys=[rsa_key], jwt_keys=[ed_key],
                          issuer_host=public.host, issuer_url=public.base,
                          pseudonym_secret=secrets.pseudonym, clock=reactor.seconds)
    api = GatewayAPI(verifier=verifier, signer=signer,
                    discovery=Discovery([carrier], public.url_for("/sms/mt/verify")),
                    texts=texts, public_url=public, settings=settings,
                    clock=reactor, cors_origins=("https://app.example",),
                    health=lambda: {"carriers": carriers.router.available()},
                    trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
                    backend=BackendVerifications(
                        verifier, ApiKeyAuthenticator(ApiKeys(store), secrets.api_key, reactor),
                        Idempotency(store), reactor),
                    environment="testing")
    carriers.startService()
    site = APISite(api.resource(), 25 * 1024, reactor)
    site.noisy = False
    port = reactor.listenTCP(port_number, site, interface="127.0.0.1")
    gateway = Gateway(url, smsc, carriers, verifier, api, store, settings, signer, port)
    yield wait_until(lambda: carriers.router.available())
    return gateway


@inlineCallbacks
def verified_session(gateway: Gateway, number: str):
    """A session that verified C{number} over MT with a short code: (token, pin)."""
    token = yield gateway.register()
    sent = yield gateway.call("POST", "/sms/mt/verify", {
        "msisdn": number, "mcc": "208", "shortVerificationCode": True}, token=token)
    assert sent.code == 204, sent
    pin = yield gateway.pin(number)
    verified = yield gateway.call("POST", "/sms/verify_code", {"code": pin}, token=token)
    assert (verified.code, verified.body) == (200, {"msisdn": number}), verified
    return token, pin
