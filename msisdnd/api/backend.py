"""The backend API: relying services' servers create, check, fetch and cancel
verifications with an API key (C{Authorization: Bearer <key>}).

snake_case throughout (as Twilio Verify's is); the errors have the device
API's shape and errno table; no CORS (these routes are for servers).
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.web.iweb import IRequest
from werkzeug.exceptions import NotFound

from msisdnd.api import errors, fields
from msisdnd.api.base import Routes, shielded
from msisdnd.verification.backend import BackendVerifications

#: The shortest and longest codes a backend may ask for (NIST wants 20 bits: 6 digits).
CODE_LENGTHS = range(6, 11)
#: The longest C{Idempotency-Key} accepted.
MAX_IDEMPOTENCY_KEY = 255


class BackendRoutes(Routes):
    """C{/v2/verifications...}, over L{BackendVerifications}."""

    app = Routes.app
    backend: BackendVerifications | None

    @inlineCallbacks
    def _apiKey(self, request: IRequest, sends: int = 0):
        """The request's API key record, once it checks out and its limits allow."""
        if self.backend is None:
            raise NotFound()
        key = yield self.backend.authenticator.authenticate(self._authorization(request),
                                                            sends=sends)
        return key

    @app.route("/v2/verifications", methods=["POST"])
    @inlineCallbacks
    def createVerification(self, request: IRequest):
        key = yield self._apiKey(request, sends=1)
        try:
            body = self._body(request)
            if "to" not in body:
                raise errors.missing("to")
            to = fields.msisdn(body["to"])
            if body.get("channel", "sms") != "sms":
                raise errors.invalid("channel must be sms.")
            digits = body.get("code_length")
            if digits is not None and (type(digits) is not int or digits not in CODE_LENGTHS):
                raise errors.invalid("code_length must be an integer from 6 to 10.")
            locale = body.get("locale")
            if locale is not None and (not isinstance(locale, str) or len(locale) > 35):
                raise errors.invalid("locale must be a language tag.")
            app_hash = self._appHash(body.get("app_hash"))
            idempotency_key = request.getHeader(b"Idempotency-Key")
            if idempotency_key is not None and not 0 < len(idempotency_key) \
                    <= MAX_IDEMPOTENCY_KEY:
                raise errors.invalid(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes.")
        except BaseException:
            yield self.backend.authenticator.refund(key)
            raise
        verification, _ = yield shielded(self.backend.create(
            key, to, locale=self.texts.negotiate(locale), digits=digits, app_hash=app_hash,
            idempotency_key=idempotency_key.decode("latin-1") if idempotency_key else None,
            body=body))
        return self._json(request, verification, 201)

    @app.route("/v2/verifications/check", methods=["POST"])
    @inlineCallbacks
    def checkVerification(self, request: IRequest):
        key = yield self._apiKey(request)
        body = self._body(request)
        if "code" not in body:
            raise errors.missing("code")
        code = body["code"]
        if not isinstance(code, str) or not code.isascii() or not code.isdigit() \
                or len(code) not in CODE_LENGTHS:
            raise errors.invalid("code must be the 6 to 10 digits the user was sent.")
        verification_id, to = body.get("id"), body.get("to")
        if (verification_id is None) == (to is None):
            raise errors.invalid("Give the verification's id or its number (to), not both.")
        if verification_id is not None and not isinstance(verification_id, str):
            raise errors.invalid("id must be a string.")
        result = yield shielded(self.backend.check(
            key, code, verification_id=verification_id,
            to=fields.msisdn(to) if to is not None else None))
        return self._json(request, result.as_json())

    @app.route("/v2/verifications/<verification_id>", methods=["GET"])
    @inlineCallbacks
    def fetchVerification(self, request: IRequest, verification_id: str):
        key = yield self._apiKey(request)
        verification = yield self.backend.fetch(key, verification_id)
        return self._json(request, verification)

    @app.route("/v2/verifications/<verification_id>/cancel", methods=["POST"])
    @inlineCallbacks
    def cancelVerification(self, request: IRequest, verification_id: str):
        key = yield self._apiKey(request)
        self._body(request)
        verification = yield shielded(self.backend.cancel(key, verification_id))
        return self._json(request, verification)
