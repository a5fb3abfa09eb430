"""The device API: msisdn-gateway 0.6's routes, over L{Verifier}.

Routes only translate: JSON in, a verification step, JSON out.  Hawk is
checked here (the MAC against the configured public URL, never the Host
header; the nonce in Redis after the MAC passed).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Callable

import phonenumbers
from klein import Klein
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from msisdnd import __version__, hawk
from msisdnd.api import errors
from msisdnd.api.clientaddr import client_address
from msisdnd.api.discovery import Discovery
from msisdnd.api.errors import APIError
from msisdnd.api.openapi import spec
from msisdnd.verification import certs
from msisdnd.verification import errors as refusals
from msisdnd.verification.errors import Limit
from msisdnd.verification.flows import Verifier
from msisdnd.verification.settings import PublicURL, VerificationSettings

_WARNING_PAGE = (
    b"<!DOCTYPE html><html><head><meta charset='utf-8'><title>msisdnd</title></head><body>"
    b"<p>This service verifies phone numbers for applications. It does not sign anyone in "
    b"through a browser: there is nothing to do on this page.</p></body></html>")


def _digits(value: object, name: str, lengths: tuple[int, ...]) -> str:
    if not isinstance(value, str) or not value.isdigit() or not value.isascii() \
            or len(value) not in lengths:
        raise errors.invalid(f"Invalid {name}.")
    return value


def _msisdn(value: object) -> str:
    """E.164 from what the client sent; it must parse and be a valid number."""
    if not isinstance(value, str) or len(value) > 32:
        raise errors.invalid("Invalid MSISDN number.")
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise errors.invalid("Invalid MSISDN number.") from None
    if not phonenumbers.is_valid_number(number):
        raise errors.invalid("Invalid MSISDN number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_FLOW_ERRORS: dict[type, Callable[[Exception], APIError]] = {
    refusals.NoSession: lambda e: APIError(401, errors.INVALID_AUTH, "Unknown session."),
    refusals.SecondNumber: lambda e: errors.invalid(
        "This session already verifies another number."),
    refusals.NoCodeSent: lambda e: errors.invalid("No number to resend to: call /sms/mt/verify."),
    refusals.ResendTooSoon: lambda e: APIError(
        429, errors.RESEND_TOO_SOON, "A new code was asked for too soon.",
        {"Retry-After": str(max(1, round(e.retry_after)))}),
    refusals.TooManySends: lambda e: APIError(
        429, errors.TOO_MANY_SENDS, "This session has had all the codes it may have."),
    refusals.WrongCode: lambda e: APIError(400, errors.INVALID_CODE, "Invalid code.",
                                        triesLeft=e.tries_left),
    refusals.CodeGone: lambda e: APIError(410, errors.EXPIRED, "The code expired or was used up."),
    refusals.NotVerified: lambda e: APIError(410, errors.EXPIRED, "The number is not verified."),
    refusals.SendFailed: lambda e: errors.unavailable("The SMS could not be sent.", 5),
}


_LIMIT_ERRORS: dict[Limit, tuple[int, int, str]] = {
    Limit.NUMBER_RATE: (429, errors.NUMBER_RATE, "Too many codes to this number."),
    Limit.IP_RATE: (429, errors.CLIENT_RATE, "Too many requests from this address."),
    Limit.PREFIX_BUDGET: (429, errors.BUDGET_SPENT, "The daily budget is spent."),
    Limit.COUNTRY_BUDGET: (429, errors.BUDGET_SPENT, "The daily budget is spent."),
    Limit.NETWORK_BUDGET: (429, errors.BUDGET_SPENT, "The daily budget is spent."),
    Limit.COUNTRY_NOT_ALLOWED: (403, errors.NOT_SERVED, "This country is not served."),
    Limit.NUMBER_TYPE: (403, errors.NOT_SERVED, "This type of number is not served."),
    Limit.PUMPING_BLOCK: (403, errors.PUMPING_BLOCK, "Numbers like this one are blocked for now."),
    Limit.NUMBER_LOCKED: (429, errors.NUMBER_LOCKED, "This number is locked for now."),
}


def _shielded(step: Deferred) -> Deferred:
    """C{step}'s result, in a Deferred whose cancellation does not reach C{step}.

    Klein cancels a route's Deferred when its client hangs up; a verification
    step must still finish (or undo itself), so that Redis and the SMS that
    went out agree with what a retry will be told.
    """
    shield: Deferred = Deferred()
    step.chainDeferred(shield)
    return shield


class DeviceAPI:
    """The Klein app.  C{resource()} is what a C{Site} serves.

    @param health: fires with C{{"carriers": bool, ...}}-style readiness of
        the parts other than Redis (the carriers); C{None} means none to report.
    """

    app = Klein()
    log = Logger()

    def __init__(
        self,
        *,
        verifier: Verifier,
        signer: certs.Signer,
        discovery: Discovery,
        texts: Any,
        public_url: PublicURL,
        settings: VerificationSettings,
        clock: IReactorTime,
        cors_origins: tuple[str, ...] = (),
        show_version: bool = True,
        health: Callable[[], dict] | None = None,
        trusted_proxies: tuple = (),
    ):
        self.verifier = verifier
        self.signer = signer
        self.discovery = discovery
        self.texts = texts
        self.public_url = public_url
        self.settings = settings
        self.clock = clock
        self.cors_origins = frozenset(cors_origins)
        self.show_version = show_version
        self.trusted_proxies = tuple(trusted_proxies)
        self.health = health

    def resource(self):
        return self.app.resource()

    # -- plumbing ------------------------------------------------------------

    def _headers(self, request: IRequest) -> None:
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        request.setHeader(b"Timestamp", str(int(self.clock.seconds())).encode())
        request.setHeader(b"Cache-Control", b"no-store")
        origin = request.getHeader(b"Origin")
        if origin is not None and origin.decode("latin-1") in self.cors_origins:
            request.setHeader(b"Access-Control-Allow-Origin", origin)
            request.setHeader(b"Access-Control-Allow-Credentials", b"true")
            request.setHeader(b"Access-Control-Expose-Headers",
                              b"Timestamp, Retry-After, WWW-Authenticate")
            request.setHeader(b"Vary", b"Origin")

    def _json(self, request: IRequest, value: object, code: int = 200) -> bytes:
        request.setResponseCode(code, HTTPStatus(code).phrase.encode())
        self._headers(request)
        return json.dumps(value).encode()

    def _empty(self, request: IRequest) -> bytes:
        request.setResponseCode(204)
        self._headers(request)
        request.responseHeaders.removeHeader(b"Content-Type")
        return b""

    @staticmethod
    def _raw(request: IRequest) -> bytes:
        if request.content is None:
            return b""
        request.content.seek(0)
        return request.content.read()

    def _body(self, request: IRequest) -> dict:
        raw = self._raw(request)
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise APIError(400, errors.BAD_JSON, "The body is not valid JSON.") from None
        if not isinstance(value, dict):
            raise APIError(400, errors.BAD_JSON, "The body must be a JSON object.")
        return value

    @inlineCallbacks
    def _authenticate(self, request: IRequest):
        """The request's Hawk id, once the MAC, the clock and the nonce check out."""
        header = request.getHeader(b"Authorization")
        path, _, query = request.uri.decode("latin-1").partition("?")
        try:
            hawk_id = yield self.verifier.authenticate(
                header.decode("latin-1") if header is not None else None,
                method=request.method.decode("ascii"), url=self.public_url.url_for(path, query),
                content=self._raw(request),
                content_type=(request.getHeader(b"Content-Type") or b"").decode("latin-1"))
        except hawk.HawkError as e:
            headers = {"WWW-Authenticate": e.www_authenticate} if e.www_authenticate else {}
            raise APIError(e.status, errors.INVALID_AUTH, e.reason, headers) from None
        return hawk_id

    # -- errors --------------------------------------------------------------

    def _error(self, request: IRequest, error: APIError) -> bytes:
        for name, value in error.headers.items():
            request.setHeader(name.encode(), value.encode())
        return self._json(request, error.body(), error.code)

    @app.handle_errors(APIError)
    def apiError(self, request: IRequest, failure: Failure) -> bytes:
        return self._error(request, failure.value)

    @app.handle_errors(refusals.VerificationError)
    def flowError(self, request: IRequest, failure: Failure) -> bytes:
        for kind, make in _FLOW_ERRORS.items():
            if isinstance(failure.value, kind):
                return self._error(request, make(failure.value))
        return self.unexpected(request, failure)

    @app.handle_errors(refusals.Refused)
    def refused(self, request: IRequest, failure: Failure) -> bytes:
        refusal = failure.value
        code, errno, message = _LIMIT_ERRORS[refusal.limit]
        headers = ({"Retry-After": str(max(1, round(refusal.retry_after)))}
                   if refusal.retry_after is not None else {})
        return self._error(request, APIError(code, errno, message, headers))

    @app.handle_errors(refusals.StoreUnavailable)
    def storeDown(self, request: IRequest, failure: Failure) -> bytes:
        self.log.warn("Redis unavailable: {why}", why=str(failure.value))
        return self._error(request, errors.unavailable("The storage backend is unavailable."))

    @app.handle_errors(NotFound)
    def notFound(self, request: IRequest, failure: Failure) -> bytes:
        return self._error(request, APIError(404, errors.INVALID_PARAMETERS, "No such resource."))

    @app.handle_errors(MethodNotAllowed)
    def notAllowed(self, request: IRequest, failure: Failure) -> bytes:
        methods = set(failure.value.valid_methods or ())
        if methods <= {"OPTIONS"}:  # only the catch-all preflight route matched
            return self.notFound(request, failure)
        allowed = ", ".join(sorted(methods))
        return self._error(request, APIError(405, errors.INVALID_PARAMETERS,
                                             "Method not allowed.", {"Allow": allowed}))

    @app.handle_errors(Exception)
    def unexpected(self, request: IRequest, failure: Failure) -> bytes:
        self.log.failure("Unexpected error on {path}", failure,
                         path=request.path.decode("latin-1"))
        return self._error(request, APIError(500, errors.UNEXPECTED, "Unexpected error."))

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
        return self._json(request, spec(self.public_url.base))

    @app.route("/.well-known/browserid", methods=["GET"])
    def browserid(self, request: IRequest) -> bytes:
        page = self.public_url.prefix + "/.well-known/browserid/warning.html"
        return self._json(request, {"public-key": self.signer.browserid_public_key(),
                                    "authentication": page, "provisioning": page})

    @app.route("/.well-known/browserid/warning.html", methods=["GET"])
    def browseridWarning(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"max-age=86400")
        return _WARNING_PAGE

    @app.route("/.well-known/jwks.json", methods=["GET"])
    def jwks(self, request: IRequest) -> bytes:
        return self._json(request, self.signer.jwks())

    @app.route("/discover", methods=["POST"])
    def discover(self, request: IRequest) -> bytes:
        body = self._body(request)
        if "mcc" not in body:
            raise errors.missing("mcc")
        mcc = _digits(body["mcc"], "MCC", (3,))
        mnc = body.get("mnc")
        if mnc is not None:
            mnc = _digits(mnc, "MNC", (2, 3))
        msisdn = body.get("msisdn")
        if msisdn is not None:
            _msisdn(msisdn)
        return self._json(request, self.discovery.discover(mcc, mnc, msisdn is not None))

    @app.route("/register", methods=["POST"])
    @inlineCallbacks
    def register(self, request: IRequest):
        self._body(request)
        token = yield _shielded(self.verifier.register(self._client(request)))
        return self._json(request, {"msisdnSessionToken": token})

    # -- Hawk routes ---------------------------------------------------------

    @app.route("/unregister", methods=["POST"])
    @inlineCallbacks
    def unregister(self, request: IRequest):
        hawk_id = yield self._authenticate(request)
        yield _shielded(self.verifier.unregister(hawk_id))
        return self._empty(request)

    @app.route("/sms/mt/verify", methods=["POST"])
    @inlineCallbacks
    def mtVerify(self, request: IRequest):
        hawk_id = yield self._authenticate(request)
        body = self._body(request)
        for name in ("msisdn", "mcc"):
            if name not in body:
                raise errors.missing(name)
        msisdn = _msisdn(body["msisdn"])
        mcc = _digits(body["mcc"], "MCC", (3,))
        mnc = body.get("mnc")
        if mnc is not None:
            mnc = _digits(mnc, "MNC", (2, 3))
        app_hash = self._appHash(body)
        yield _shielded(self.verifier.sendCode(
            hawk_id, msisdn, mcc=mcc, mnc=mnc, short=body.get("shortVerificationCode") is True,
            locale=self._locale(request), app_hash=app_hash, client=self._client(request)))
        return self._empty(request)

    @app.route("/sms/resend_code", methods=["POST"])
    @inlineCallbacks
    def resendCode(self, request: IRequest):
        hawk_id = yield self._authenticate(request)
        body = self._body(request)
        yield _shielded(self.verifier.resendCode(
            hawk_id, locale=self._locale(request), app_hash=self._appHash(body),
            client=self._client(request)))
        return self._empty(request)

    @app.route("/sms/verify_code", methods=["POST"])
    @inlineCallbacks
    def verifyCode(self, request: IRequest):
        hawk_id = yield self._authenticate(request)
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
        msisdn = yield _shielded(self.verifier.verifyCode(hawk_id, code))
        return self._json(request, {"msisdn": msisdn})

    @app.route("/certificate/sign", methods=["POST"])
    @inlineCallbacks
    def sign(self, request: IRequest):
        hawk_id = yield self._authenticate(request)
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
        number = yield self.verifier.verifiedNumber(hawk_id)
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

    def _client(self, request: IRequest) -> str:
        return client_address(request, self.trusted_proxies)

    def _locale(self, request: IRequest) -> str:
        header = request.getHeader(b"Accept-Language")
        return self.texts.negotiate(header.decode("latin-1") if header is not None else None)

    @staticmethod
    def _appHash(body: dict) -> str | None:
        value = body.get("appHash")
        if value is None:
            return None
        if not isinstance(value, str) or len(value) != 11 or not value.isascii() or not all(
                c.isalnum() or c in "+/" for c in value):
            raise errors.invalid("appHash must be the app's 11-character hash.")
        return value
