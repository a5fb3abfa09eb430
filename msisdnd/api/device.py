"""The device API: msisdn-gateway 0.6's routes, over L{Verifier}.

Routes only translate: JSON in, a verification step, JSON out.  Hawk is
checked by the verifier (the MAC against the configured public URL, never
the Host header); the request's nonce is claimed in Redis by the first
script of the step the route asks for, once the body is valid (L{_step}).
So a replayed request is refused 401 and changes nothing, but a replay
whose body is invalid is answered the body's 400, as the first was.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from msisdnd import __version__, hawk
from msisdnd.api import errors, fields
from msisdnd.api.base import Routes, shielded
from msisdnd.api.discovery import Discovery
from msisdnd.api.errors import APIError
from msisdnd.api.openapi import UNPUBLISHED, spec
from msisdnd.verification import certs
from msisdnd.verification.flows import Verifier
from msisdnd.verification.settings import PublicURL, VerificationSettings

_WARNING_PAGE = (
    b"<!DOCTYPE html><html><head><meta charset='utf-8'><title>msisdnd</title></head><body>"
    b"<p>This service verifies phone numbers for applications. It does not sign anyone in "
    b"through a browser: there is nothing to do on this page.</p></body></html>")

#: Seconds relying parties and shared caches may keep the key documents
#: (C{/.well-known/jwks.json}, C{/.well-known/browserid}): a verifier may
#: hold a key set this old.  That assumes a rotation overlap well above it:
#: publish a new key at least a day before it signs (list it after the
#: current key in C{[keys]} on every daemon, then first a day later), which
#: also covers verifiers that cache by rules of their own; keep the old key
#: listed for the longest certificate lifetime (C{certificate_max_duration})
#: after it stopped signing.  C{/.well-known/browserid} names the current
#: key only, so BrowserID gets no overlap (docs/relying-parties.md).
KEYS_MAX_AGE = 3600
#: Seconds the discovery document may be kept.
CONFIGURATION_MAX_AGE = 3600

#: Every webhook event type: the list of C{msisdnd.events.config.EVENTS},
#: which the API may not import (setup.cfg's contracts);
#: tests/test_discovery.py holds the two equal.
WEBHOOK_EVENTS = (
    "verification.approved", "verification.canceled", "verification.expired",
    "verification.max_attempts_reached", "verification.failed", "verification.delivery",
    "device.verified", "device.unregistered",
)

#: The device API's endpoints in the discovery document: name, path.
DEVICE_ENDPOINTS = (
    ("discover", "/discover"),
    ("register", "/register"),
    ("sms_mt_verify", "/sms/mt/verify"),
    ("sms_resend_code", "/sms/resend_code"),
    ("sms_verify_code", "/sms/verify_code"),
    ("certificate_sign", "/certificate/sign"),
    ("unregister", "/unregister"),
)


def _unauthorized(failure: Failure) -> None:
    """A Hawk refusal, as the device API answers it (errno 110, C{WWW-Authenticate})."""
    failure.trap(hawk.HawkError)
    e = failure.value
    headers = {"WWW-Authenticate": e.www_authenticate} if e.www_authenticate else {}
    raise APIError(e.status, errors.INVALID_AUTH, e.reason, headers)


class DeviceRoutes(Routes):
    """The routes of msisdn-gateway's device API, and the service's own."""

    app = Routes.app
    verifier: Verifier
    signer: certs.Signer
    discovery: Discovery
    texts: Any
    public_url: PublicURL
    settings: VerificationSettings
    show_version: bool
    health: Callable[[], dict] | None
    environment: str
    backend: Any
    cors_origins: frozenset[str]

    def _authenticate(self, request: IRequest) -> Deferred:
        """The request's C{Authenticated} (Hawk id and nonce, for the step to
        claim), once the MAC, the payload hash and the clock check out.

        @raise APIError: two C{Authorization} headers (a route's generator
            sees it as it would a failed Deferred)."""
        header = self._authorization(request)
        path, _, query = request.uri.decode("latin-1").partition("?")
        return self.verifier.authenticate(
            header, method=request.method.decode("ascii"), url=self.public_url.url_for(path, query),
            content=self._raw(request),
            content_type=(request.getHeader(b"Content-Type") or b"").decode("latin-1"),
        ).addErrback(_unauthorized)

    @staticmethod
    def _step(step: Deferred) -> Deferred:
        """A Hawk request's verification step (shielded), its replayed nonce
        answered as authentication failures are."""
        return shielded(step).addErrback(_unauthorized)

    # -- public routes -------------------------------------------------------

    @app.route("/", methods=["GET"])
    def root(self, request: IRequest) -> bytes:
        about = {
            "name": "msisdnd",
            "description": "Verifies that a device controls a phone number (MSISDN).",
            "version": __version__,
            "homepage": "https://github.com/msisdnd/msisdnd",
            "endpoint": self.public_url.base,
        }
        if not self.show_version:
            del about["version"]
        return self._json(request, about)

    @app.route("/__lbheartbeat__", methods=["GET"])
    def lbheartbeat(self, request: IRequest) -> bytes:
        return self._json(request, {})

    @app.route("/__version__", methods=["GET"])
    def version(self, request: IRequest) -> bytes:
        if not self.show_version:
            return self._json(request, {"name": "msisdnd"})
        return self._json(request, {"name": "msisdnd", "version": __version__})

    @app.route("/__heartbeat__", methods=["GET"])
    @inlineCallbacks
    def heartbeat(self, request: IRequest):
        status = {"storage": (yield self.verifier.storageUp())}
        if self.health is not None:
            status.update(self.health())
        return self._json(request, status, 200 if all(status.values()) else 503)

    @app.route("/api-specs", methods=["GET"])
    def apiSpecs(self, request: IRequest) -> bytes:
        return self._json(request, spec(self.public_url.base,
                                        __version__ if self.show_version else UNPUBLISHED))

    @app.route("/.well-known/msisdnd-configuration", methods=["GET"])
    def msisdndConfiguration(self, request: IRequest) -> bytes:
        """The discovery document (as OpenID Connect's): every URL from the
        configured public URL, never from the Host header; C{issuer} is the
        JWT certificates' C{iss}."""
        url = self.public_url.url_for
        document: dict[str, Any] = {
            "issuer": self.public_url.base,
            "jwks_uri": url("/.well-known/jwks.json"),
            "browserid_uri": url("/.well-known/browserid"),
            "device_api": {name: url(path) for name, path in DEVICE_ENDPOINTS},
        }
        if self.backend is not None:
            document["backend_api"] = url("/v2/verifications")
        document.update({
            "verification_methods": ["sms/mt", "sms/momt"],
            "certificate_formats": {
                "browserid": {"alg": "RS256", "iss": self.public_url.host,
                              "time_unit": "milliseconds"},
                "jwt": {"alg": "EdDSA", "iss": self.public_url.base, "time_unit": "seconds"},
            },
            "webhook_events": list(WEBHOOK_EVENTS),
            "environment": self.environment,
            "api_specs": url("/api-specs"),
            "docs": url("/docs"),
        })
        body = self._json(request, document)
        self._cacheable(request, CONFIGURATION_MAX_AGE)
        return body

    @app.route("/.well-known/browserid", methods=["GET"])
    def browserid(self, request: IRequest) -> bytes:
        """BrowserID's support document: the current key only (cached for
        L{KEYS_MAX_AGE} seconds)."""
        page = self.public_url.prefix + "/.well-known/browserid/warning.html"
        body = self._json(request, {"public-key": self.signer.browserid_public_key(),
                                    "authentication": page, "provisioning": page})
        self._cacheable(request, KEYS_MAX_AGE)
        return body

    @app.route("/.well-known/browserid/warning.html", methods=["GET"])
    def browseridWarning(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"max-age=86400")
        return _WARNING_PAGE

    @app.route("/.well-known/jwks.json", methods=["GET"])
    def jwks(self, request: IRequest) -> bytes:
        """Every published key, current and older.  Cached for L{KEYS_MAX_AGE}
        (1 hour), which assumes a new key is published at least a day before
        it signs (see L{KEYS_MAX_AGE})."""
        body = self._json(request, self.signer.jwks())
        self._cacheable(request, KEYS_MAX_AGE)
        return body

    @app.route("/discover", methods=["POST"])
    def discover(self, request: IRequest) -> bytes:
        body = self._body(request)
        if "mcc" not in body:
            raise errors.missing("mcc")
        mcc = fields.digits(body["mcc"], "MCC", (3,))
        mnc = body.get("mnc")
        if mnc is not None:
            mnc = fields.digits(mnc, "MNC", (2, 3))
        msisdn = body.get("msisdn")
        if "msisdn" in body:
            fields.msisdn(msisdn)  # null too: a number, or no msisdn key at all
        return self._json(request, self.discovery.discover(mcc, mnc, msisdn is not None))

    @app.route("/register", methods=["POST"])
    def register(self, request: IRequest) -> Deferred:
        self._body(request)  # a bad body is refused before anything is spent or written
        return shielded(self.verifier.register(self._client(request))).addCallback(
            lambda token: self._json(request, {"msisdnSessionToken": token}))

    # -- Hawk routes ---------------------------------------------------------
    #
    # Each is its Hawk check, then a function of the request and the caller
    # that returns the step's Deferred (plain callbacks: the routes most
    # requests take, without an inlineCallbacks generator each).

    def _hawkRoute(self, request: IRequest, route: Callable[[IRequest, Any], Any]) -> Deferred:
        """C{route(request, caller)} once the request's Hawk header checks out."""
        return self._authenticate(request).addCallback(lambda caller: route(request, caller))

    @app.route("/unregister", methods=["POST"])
    def unregister(self, request: IRequest) -> Deferred:
        return self._hawkRoute(request, self._unregister)

    def _unregister(self, request: IRequest, caller) -> Deferred:
        return self._step(self.verifier.unregister(caller.id, caller.nonce)).addCallback(
            lambda _: self._empty(request))

    @app.route("/sms/mt/verify", methods=["POST"])
    def mtVerify(self, request: IRequest) -> Deferred:
        return self._hawkRoute(request, self._mtVerify)

    def _mtVerify(self, request: IRequest, caller) -> Deferred:
        body = self._body(request)
        for name in ("msisdn", "mcc"):
            if name not in body:
                raise errors.missing(name)
        msisdn = fields.msisdn(body["msisdn"])
        mcc = fields.digits(body["mcc"], "MCC", (3,))
        mnc = body.get("mnc")
        if mnc is not None:
            mnc = fields.digits(mnc, "MNC", (2, 3))
        app_hash = self._appHash(body.get("appHash"))
        return self._step(self.verifier.sendCode(
            caller.id, msisdn, mcc=mcc, mnc=mnc, short=body.get("shortVerificationCode") is True,
            locale=self._locale(request), app_hash=app_hash, client=self._client(request),
            nonce=caller.nonce)).addCallback(lambda _: self._empty(request))

    @app.route("/sms/resend_code", methods=["POST"])
    @inlineCallbacks
    def resendCode(self, request: IRequest):
        caller = yield self._authenticate(request)
        body = self._body(request)
        yield self._step(self.verifier.resendCode(
            caller.id, locale=self._locale(request), app_hash=self._appHash(body.get("appHash")),
            client=self._client(request), nonce=caller.nonce))
        return self._empty(request)

    @app.route("/sms/verify_code", methods=["POST"])
    def verifyCode(self, request: IRequest) -> Deferred:
        return self._hawkRoute(request, self._verifyCode)

    def _verifyCode(self, request: IRequest, caller) -> Deferred:
        body = self._body(request)
        if "code" not in body:
            raise errors.missing("code")
        code = body["code"]
        if isinstance(code, str):
            code = code.lower()  # hex is hex in either case
        settings = self.settings
        short = isinstance(code, str) and len(code) == settings.short_code_digits \
            and code.isascii() and code.isdigit()
        long_ = isinstance(code, str) and len(code) == settings.long_code_hex \
            and all(c in "0123456789abcdef" for c in code)
        if not (short or long_):
            raise errors.invalid("Invalid code.")
        return self._step(self.verifier.verifyCode(caller.id, code, self._client(request),
                                                   caller.nonce)).addCallback(
            lambda msisdn: self._json(request, {"msisdn": msisdn}))

    @app.route("/certificate/sign", methods=["POST"])
    def sign(self, request: IRequest) -> Deferred:
        return self._hawkRoute(request, self._sign)

    def _sign(self, request: IRequest, caller) -> Deferred:
        body = self._body(request)
        for name in ("publicKey", "duration"):
            if name not in body:
                raise errors.missing(name)
        fmt = body.get("format", "browserid")
        if fmt not in ("browserid", "jwt"):
            raise errors.invalid("format must be browserid or jwt.")
        audience = body.get("audience")
        if audience is not None and (not isinstance(audience, str) or not 0 < len(audience) <= 256):
            raise errors.invalid("Invalid audience.")
        if audience is not None and fmt != "jwt":
            raise errors.invalid("audience applies to the jwt format only.")
        try:
            public_key = certs.parse_browserid_key(body["publicKey"])
            duration = certs.parse_duration(body["duration"], self.settings.certificate_max_duration)
        except certs.CertificateError as e:
            raise errors.invalid(str(e)) from None
        return self._step(self.verifier.verifiedNumber(caller.id, caller.nonce)).addCallback(
            self._certificate, request, fmt, public_key, duration, audience)

    def _certificate(self, number, request: IRequest, fmt: str, public_key, duration: float,
                     audience: str | None) -> bytes:
        now = self.clock.seconds()
        if fmt == "jwt":
            cert = self.signer.jwt_certificate(public_key=public_key, msisdn=number.msisdn,
                                               duration=duration, verified_at=number.verified_at,
                                               audience=audience)
        else:
            cert = self.signer.browserid_certificate(public_key=public_key, msisdn=number.msisdn,
                                                     duration=duration,
                                                     verified_at=number.verified_at,
                                                     authenticated_at=now)
        return self._json(request, {"cert": cert})

    # -- CORS preflight --------------------------------------------------------

    @app.route("/", methods=["OPTIONS"], branch=True)
    def preflight(self, request: IRequest) -> bytes:
        request.setResponseCode(204)
        self._headers(request)
        request.responseHeaders.removeHeader(b"Content-Type")
        if request.responseHeaders.hasHeader(b"Access-Control-Allow-Origin"):
            request.setHeader(b"Access-Control-Allow-Methods", b"GET, POST, OPTIONS")
            request.setHeader(b"Access-Control-Allow-Headers",
                              b"Authorization, Content-Type, Accept-Language")
            request.setHeader(b"Access-Control-Max-Age", b"600")
        return b""

    # -- helpers -------------------------------------------------------------

    def _cacheable(self, request: IRequest, max_age: int) -> None:
        """Replace C{_json}'s C{no-store}: anyone may keep the answer C{max_age} s.

        With CORS origins configured the answer depends on the request's
        C{Origin} (C{Access-Control-Allow-Origin} or not), so every answer
        says C{Vary: Origin}, lest a shared cache hand a browser a copy made
        for another origin.
        """
        request.setHeader(b"Cache-Control", f"public, max-age={max_age}".encode())
        if self.cors_origins:
            request.setHeader(b"Vary", b"Origin")

    def _locale(self, request: IRequest) -> str:
        header = request.getHeader(b"Accept-Language")
        return self.texts.negotiate(header.decode("latin-1") if header is not None else None)
