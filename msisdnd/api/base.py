"""What every route of the API shares: one Klein app, JSON in and out, errors.

The device routes (L{msisdnd.api.device}) and the backend routes
(L{msisdnd.api.backend}) are mixins over L{Routes}, and register on its one
Klein app: one listener, one error shape, one OpenAPI document.  A
verification error raised by any route is translated here.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Callable
from urllib.parse import unquote_to_bytes

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from msisdnd.api import errors, fields
from msisdnd.api.clientaddr import client_address
from msisdnd.api.errors import APIError
from msisdnd.verification import errors as refusals
from msisdnd.verification.errors import Limit

#: The backend API's paths: served to servers, never with CORS headers.
BACKEND_PREFIX = b"/v2/"


def backend_path(path: bytes) -> bool:
    """Whether C{path} (raw, as requested) may be routed to a backend route.

    Klein routes the percent-decoded path, and one slash too many at its
    start still matches (C{//v2/...}, C{/%762/...}, C{/v2%2F...}): every
    such spelling counts, not only C{/v2/}.
    """
    return path.startswith(BACKEND_PREFIX) or \
        unquote_to_bytes(path).lstrip(b"/").startswith(BACKEND_PREFIX[1:])


_FLOW_ERRORS: dict[type, Callable[[Exception], APIError]] = {
    refusals.NoSession: lambda e: APIError(401, errors.INVALID_AUTH, "Unknown session."),
    refusals.AlreadyVerified: lambda e: APIError(
        409, errors.ALREADY_VERIFIED,
        "This session has verified its number; register a new one to verify another."),
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
    refusals.InvalidApiKey: lambda e: APIError(401, errors.INVALID_AUTH, str(e),
                                               {"WWW-Authenticate": 'Bearer realm="msisdnd"'}),
    refusals.UnknownVerification: lambda e: APIError(
        404, errors.UNKNOWN_VERIFICATION, "No such verification."),
    refusals.IdempotencyConflict: lambda e: APIError(
        422, errors.IDEMPOTENCY_CONFLICT, "This Idempotency-Key was used with another body."),
    refusals.IdempotencyInProgress: lambda e: APIError(
        409, errors.IDEMPOTENCY_IN_PROGRESS,
        "The first request with this Idempotency-Key is still under way.",
        {"Retry-After": "1"}),
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
    Limit.API_KEY_RATE: (429, errors.API_KEY_RATE, "Too many requests with this API key."),
    Limit.API_KEY_BUDGET: (429, errors.API_KEY_BUDGET, "This API key's daily budget is spent."),
}


#: Route failures by type, in order, and the L{Routes} method answering each.
_FAILURE_HANDLERS: tuple[tuple[type, str], ...] = (
    (APIError, "apiError"),
    (refusals.VerificationError, "flowError"),
    (refusals.Refused, "refused"),
    (refusals.StoreUnavailable, "storeDown"),
    (RequestRedirect, "redirected"),
    (NotFound, "notFound"),
    (MethodNotAllowed, "notAllowed"),
)


def shielded(step: Deferred) -> Deferred:
    """C{step}'s result, in a Deferred whose cancellation does not reach C{step}.

    Klein cancels a route's Deferred when its client hangs up; a verification
    step must still finish (or undo itself), so that Redis and the SMS that
    went out agree with what a retry will be told.
    """
    shield: Deferred = Deferred()
    step.chainDeferred(shield)
    return shield



class Routes:
    """The Klein app every route registers on, and what the routes share.

    Subclasses (the device and backend route mixins, then the API that
    combines them) set C{clock}, C{cors_origins}, C{trusted_proxies} and
    C{store_warnings} (a L{msisdnd.logs.WarningBudget}).
    """

    app = Klein()
    log = Logger()

    # -- plumbing ------------------------------------------------------------

    def _headers(self, request: IRequest) -> None:
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        request.setHeader(b"Timestamp", str(int(self.clock.seconds())).encode())
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        origin = request.getHeader(b"Origin")
        if origin is not None and origin.decode("latin-1") in self.cors_origins \
                and not backend_path(request.path):
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
        except (ValueError, UnicodeDecodeError, RecursionError):  # [[[[... too deep
            raise APIError(400, errors.BAD_JSON, "The body is not valid JSON.") from None
        if not isinstance(value, dict):
            raise APIError(400, errors.BAD_JSON, "The body must be a JSON object.")
        return value

    # -- errors --------------------------------------------------------------

    @app.handle_errors(Exception)
    def answerFailure(self, request: IRequest, failure: Failure) -> bytes:
        """The answer to a route's failure: the first of L{_FAILURE_HANDLERS}
        for its type, else L{unexpected}.  The one error handler of the app,
        Klein's and L{msisdnd.api.direct.DirectResource}'s."""
        for kind, handler in _FAILURE_HANDLERS:
            if isinstance(failure.value, kind):
                try:
                    return getattr(self, handler)(request, failure)
                except Exception:
                    return self.unexpected(request, Failure())
        return self.unexpected(request, failure)

    def _error(self, request: IRequest, error: APIError) -> bytes:
        for name, value in error.headers.items():
            request.setHeader(name.encode(), value.encode())
        return self._json(request, error.body(), error.code)

    def apiError(self, request: IRequest, failure: Failure) -> bytes:
        return self._error(request, failure.value)

    def flowError(self, request: IRequest, failure: Failure) -> bytes:
        for kind, make in _FLOW_ERRORS.items():
            if isinstance(failure.value, kind):
                return self._error(request, make(failure.value))
        return self.unexpected(request, failure)

    def refused(self, request: IRequest, failure: Failure) -> bytes:
        refusal = failure.value
        code, errno, message = _LIMIT_ERRORS[refusal.limit]
        headers = ({"Retry-After": str(max(1, round(refusal.retry_after)))}
                   if refusal.retry_after is not None else {})
        return self._error(request, APIError(code, errno, message, headers))

    def storeDown(self, request: IRequest, failure: Failure) -> bytes:
        self.store_warnings.warn("Redis unavailable: {why}", why=str(failure.value))
        return self._error(request, errors.unavailable("The storage backend is unavailable."))

    def redirected(self, request: IRequest, failure: Failure) -> bytes:
        """A path Werkzeug would redirect to another spelling of a route: no such
        resource (a redirect built from the Host header would not be ours to
        give).  Repeated slashes do not come here: C{//register} is served as
        C{/register}, by Klein as by the fixed routes."""
        return self.notFound(request, failure)

    def notFound(self, request: IRequest, failure: Failure) -> bytes:
        return self._error(request, APIError(404, errors.INVALID_PARAMETERS, "No such resource."))

    def notAllowed(self, request: IRequest, failure: Failure) -> bytes:
        methods = set(failure.value.valid_methods or ())
        if methods <= {"OPTIONS"}:  # only the catch-all preflight route matched
            return self.notFound(request, failure)
        allowed = ", ".join(sorted(methods))
        return self._error(request, APIError(405, errors.INVALID_PARAMETERS,
                                             "Method not allowed.", {"Allow": allowed}))

    def unexpected(self, request: IRequest, failure: Failure) -> bytes:
        self.log.failure("Unexpected error on {path}", failure,
                         path=request.path.decode("latin-1"))
        return self._error(request, APIError(500, errors.UNEXPECTED, "Unexpected error."))

    @staticmethod
    def _authorization(request: IRequest) -> str | None:
        """The one C{Authorization} header, or C{None}; two are refused (400)."""
        values = request.requestHeaders.getRawHeaders(b"Authorization") or []
        if len(values) > 1:
            raise APIError(400, errors.INVALID_AUTH, "Send one Authorization header.")
        return values[0].decode("latin-1") if values else None

    def _appHash(self, value: object) -> str | None:
        """An app hash the client may ask for: well formed, and one of this service's."""
        app_hash = fields.app_hash(value)
        if app_hash is not None and not self.texts.accepts_app_hash(app_hash):
            raise errors.invalid("This app hash is not one of this service's apps "
                                 "([sms] app_hashes).")
        return app_hash

    def _client(self, request: IRequest) -> str:
        return client_address(request, self.trusted_proxies)
