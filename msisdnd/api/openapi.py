"""The OpenAPI 3 document of both APIs, served at C{/api-specs} and rendered at C{/docs/}.

Every route the Klein app serves is described here, with its request and
response schemas (required fields, an example each), every status it can
answer and the headers that come with them; a test checks it against the
app both ways and validates it with C{openapi-spec-validator}.
"""

from __future__ import annotations

from msisdnd import __version__
from msisdnd.api.docs import ASSETS
from msisdnd.api.errors import ERRNOS

_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_BOOLEAN = {"type": "boolean"}
_TIME = {"type": "string", "format": "date-time", "example": "2026-11-30T16:20:00Z"}
_MCC = {"type": "string", "pattern": "^[0-9]{3}$", "example": "208"}
_MNC = {"type": "string", "pattern": "^[0-9]{2,3}$", "example": "01"}
_E164 = {"type": "string", "description": "E.164", "example": "+33612345678"}
_APP_HASH = {"type": "string", "minLength": 11, "maxLength": 11,
             "description": "Android SMS Retriever app hash", "example": "FA+9qCX9VSu"}
_VERIFICATION_ID = {"type": "string", "pattern": "^VE[0-9a-f]{32}$",
                    "example": "VE0123456789abcdef0123456789abcdef"}
_PUBLIC_KEY = {"type": "string", "description": "A BrowserID public key as a JSON string: "
               '{"algorithm":"RS","n","e"} or {"algorithm":"DS","y","p","q","g"}',
               "example": '{"algorithm":"RS","n":"4077...","e":"65537"}'}

_HEADERS = {
    "Timestamp": {"description": "The server's clock (seconds since the epoch), for Hawk "
                                 "clients to correct their skew", "schema": _INTEGER},
    "Retry-After": {"description": "Seconds to wait before trying again", "schema": _INTEGER},
    "WWW-Authenticate": {"description": "The authentication scheme expected (Hawk, with "
                                        "ts/tsm on a stale clock; or Bearer)",
                         "schema": _STRING},
    "Cache-Control": {"description": "public, max-age=N: anyone may keep the answer N "
                                     "seconds (an hour); every other JSON answer is no-store",
                      "schema": _STRING, "example": "public, max-age=3600"},
}

#: What each error status means here, and the headers that come with it.
_ERRORS = {
    400: ("Invalid request: bad JSON (106), a bad (107) or missing (108) parameter, a wrong "
          "code (105), a malformed Hawk header (110)", ()),
    401: ("Missing, unknown or invalid credentials (110)", ("WWW-Authenticate",)),
    403: ("Not served: the number's country or type (119), or a pumping-guard block (120)", ()),
    404: ("No such resource (107), or no such verification (126)", ()),
    409: ("The first request with this Idempotency-Key is still under way (125), or the "
          "session has verified its number and sends no more codes (127)",
          ("Retry-After",)),
    408: ("The request (head and body) did not arrive within the deadline (128)", ()),
    410: ("The code expired or is used up, or the session is not verified (111)", ()),
    413: ("The body is larger than the limit (113)", ()),
    422: ("This Idempotency-Key was used with another body (124)", ()),
    429: ("A rate or budget is spent (114-118, 121-123)", ("Retry-After",)),
    501: ("No such method: methods are case-sensitive (107)", ()),
    503: ("Redis or every carrier is unavailable (201)", ("Retry-After",)),
}


def _headers(*names: str) -> dict:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in ("Timestamp", *names)}


def _json(schema: dict, description: str, example: object, *headers: str) -> dict:
    return {"description": description, "headers": _headers(*headers),
            "content": {"application/json": {"schema": schema, "example": example}}}


def _object(required: tuple[str, ...] = (), **properties: dict) -> dict:
    schema: dict = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _errors(*codes: int) -> dict:
    return {str(code): {"$ref": f"#/components/responses/Error{code}"} for code in codes}


def _operation(method: str, summary: str, ok: dict, errors: tuple[int, ...] = (), *,
               body: dict | None = None, body_example: object = None,
               security: str | None = None, tag: str = "service",
               parameters: list | None = None) -> dict:
    """One operation: a body means 400 and 413 may come back; security, 401;
    any request that is too slow to arrive, 408."""
    codes = set(errors) | {408}
    if body is not None:
        codes |= {400, 413}
    if security is not None:
        codes.add(401)
    operation: dict = {"summary": summary, "tags": [tag],
                       "responses": {**ok, **_errors(*sorted(codes))}}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": body, "example": body_example}}}
    if security is not None:
        operation["security"] = [{security: []}]
    if parameters:
        operation["parameters"] = parameters
    return {method: operation}


def _get(summary: str, ok: dict, errors: tuple[int, ...] = (), **kwargs) -> dict:
    return _operation("get", summary, ok, errors, **kwargs)


def _post(summary: str, ok: dict, errors: tuple[int, ...] = (), **kwargs) -> dict:
    return _operation("post", summary, ok, errors, **kwargs)


_NO_CONTENT = {"204": {"description": "Done", "headers": _headers()}}
_VERIFICATION = {"$ref": "#/components/schemas/Verification"}
_VERIFICATION_EXAMPLE = {
    "id": "VE0123456789abcdef0123456789abcdef", "to": "+33612345678", "channel": "sms",
    "status": "pending", "created_at": "2026-11-30T16:20:00Z",
    "updated_at": "2026-11-30T16:20:00Z", "expires_at": "2026-11-30T16:30:00Z",
    "send_attempts": [{"at": "2026-11-30T16:20:00Z", "carrier": "orange",
                       "delivery": "delivered"}]}
_ID_PARAMETER = [{"name": "verification_id", "in": "path", "required": True,
                  "schema": _VERIFICATION_ID}]


def _device_paths() -> dict:
    hawk = "hawk"
    return {
        "/discover": _post(
            "Verification methods for a network",
            {"200": _json(_object(("verificationMethods", "verificationDetails"),
                                  verificationMethods={"type": "array", "items": _STRING},
                                  verificationDetails=_object()),
                          "The methods, best first", {
                              "verificationMethods": ["sms/mt"],
                              "verificationDetails": {"sms/mt": {
                                  "mtSender": "Example", "url": "https://verify.example/sms/mt/verify"}}})},
            body=_object(("mcc",), mcc=_MCC, mnc=_MNC, msisdn=_E164, roaming=_BOOLEAN),
            body_example={"mcc": "208", "mnc": "01"}, tag="device"),
        "/register": _post(
            "Open a session",
            {"200": _json(_object(("msisdnSessionToken",), msisdnSessionToken={
                "type": "string", "pattern": "^[0-9a-f]{64}$"}), "The session token",
                {"msisdnSessionToken": "ab" * 32})},
            (400, 413, 429, 503), tag="device"),
        "/unregister": _post("Drop the session", _NO_CONTENT, (400, 413, 503), security=hawk,
                             tag="device"),
        "/sms/mt/verify": _post(
            "Send a code to a number (204 once the SMSC accepted it)", _NO_CONTENT,
            (403, 409, 429, 503), security=hawk, tag="device",
            body=_object(("msisdn", "mcc"), msisdn=_E164, mcc=_MCC, mnc=_MNC,
                         shortVerificationCode=_BOOLEAN, appHash=_APP_HASH),
            body_example={"msisdn": "+33612345678", "mcc": "208", "shortVerificationCode": True}),
        "/sms/resend_code": _post(
            "Send a new code to the session's number", _NO_CONTENT, (403, 409, 429, 503),
            security=hawk, tag="device", body=_object(appHash=_APP_HASH), body_example={}),
        "/sms/verify_code": _post(
            "Check a code",
            {"200": _json(_object(("msisdn",), msisdn=_E164), "The verified number",
                          {"msisdn": "+33612345678"})},
            (410, 429, 503), security=hawk, tag="device",
            body=_object(("code",), code=_STRING), body_example={"code": "123456"}),
        "/certificate/sign": _post(
            "Certificate for the verified number",
            {"200": _json(_object(("cert",), cert=_STRING), "The certificate (a JWT)",
                          {"cert": "eyJhbGciOiJFZERTQSIs..."})},
            (410, 503), security=hawk, tag="device",
            body=_object(("publicKey", "duration"), publicKey=_PUBLIC_KEY,
                         duration={"type": "integer", "minimum": 1},
                         format={"type": "string", "enum": ["browserid", "jwt"]},
                         audience=_STRING),
            body_example={"publicKey": '{"algorithm":"RS","n":"4077...","e":"65537"}',
                          "duration": 3600, "format": "jwt"}),
    }


def _backend_paths() -> dict:
    bearer = "apiKey"
    check_result = _object(("id", "status", "valid", "tries_left"), id=_VERIFICATION_ID,
                           status={"$ref": "#/components/schemas/Status"}, valid=_BOOLEAN,
                           tries_left=_INTEGER)
    idempotency = [{"name": "Idempotency-Key", "in": "header", "required": False,
                    "schema": {"type": "string", "maxLength": 255},
                    "description": "The same key and body within 24 h return the first 201 "
                                   "answer again and send nothing"}]
    return {
        "/v2/verifications": _post(
            "Start a verification: send a code to a number (201 once the SMSC accepted it). "
            "A pending verification of the same number by the same key gets a new code.",
            {"201": _json(_VERIFICATION, "The verification", _VERIFICATION_EXAMPLE)},
            (403, 409, 422, 429, 503), security=bearer, tag="backend",
            parameters=idempotency,
            body=_object(("to",), to=_E164, channel={"type": "string", "enum": ["sms"]},
                         locale={"type": "string", "example": "fr"},
                         code_length={"type": "integer", "minimum": 6, "maximum": 10},
                         app_hash=_APP_HASH),
            body_example={"to": "+33612345678", "channel": "sms", "locale": "fr"}),
        "/v2/verifications/check": _post(
            "Check the code a user typed, by the verification's id or its number",
            {"200": _json(check_result, "The verification's status after the check",
                          {"id": _VERIFICATION_EXAMPLE["id"], "status": "approved",
                           "valid": True, "tries_left": 2})},
            (404, 429, 503), security=bearer, tag="backend",
            body=_object(("code",), id=_VERIFICATION_ID, to=_E164,
                         code={"type": "string", "pattern": "^[0-9]{6,10}$"}),
            body_example={"id": _VERIFICATION_EXAMPLE["id"], "code": "123456"}),
        "/v2/verifications/{verification_id}": _get(
            "A verification, with each send attempt's delivery",
            {"200": _json(_VERIFICATION, "The verification", _VERIFICATION_EXAMPLE)},
            (404, 429, 503), security=bearer, tag="backend", parameters=_ID_PARAMETER),
        "/v2/verifications/{verification_id}/cancel": _post(
            "Cancel a pending verification: its code stops working at once",
            {"200": _json(_VERIFICATION, "The verification (canceled, or the status it "
                                         "had ended with)",
                          {**_VERIFICATION_EXAMPLE, "status": "canceled"})},
            (400, 404, 413, 429, 503), security=bearer, tag="backend",
            parameters=_ID_PARAMETER),
    }


_URL = {"type": "string", "format": "uri"}
_EXAMPLE_BASE = "https://verify.example.com"
_DEVICE_ENDPOINTS = ("discover", "register", "sms_mt_verify", "sms_resend_code",
                     "sms_verify_code", "certificate_sign", "unregister")
_FORMAT = _object(("alg", "iss", "time_unit"), alg=_STRING, iss=_STRING,
                  time_unit={"type": "string", "enum": ["seconds", "milliseconds"]})
_CONFIGURATION = _object(
    ("issuer", "jwks_uri", "browserid_uri", "device_api", "verification_methods",
     "certificate_formats", "webhook_events", "environment", "api_specs", "docs"),
    issuer={**_URL, "description": "The JWT certificates' iss: the public base URL"},
    jwks_uri=_URL, browserid_uri=_URL,
    device_api=_object(_DEVICE_ENDPOINTS, **{name: _URL for name in _DEVICE_ENDPOINTS}),
    backend_api={**_URL, "description": "The backend API's base (absent when it is off)"},
    verification_methods={"type": "array", "items": _STRING},
    certificate_formats=_object(("browserid", "jwt"), browserid=_FORMAT, jwt=_FORMAT),
    webhook_events={"type": "array", "items": _STRING}, environment=_STRING,
    api_specs=_URL, docs=_URL)
_CONFIGURATION_EXAMPLE = {
    "issuer": _EXAMPLE_BASE,
    "jwks_uri": _EXAMPLE_BASE + "/.well-known/jwks.json",
    "browserid_uri": _EXAMPLE_BASE + "/.well-known/browserid",
    "device_api": {
        "discover": _EXAMPLE_BASE + "/discover", "register": _EXAMPLE_BASE + "/register",
        "sms_mt_verify": _EXAMPLE_BASE + "/sms/mt/verify",
        "sms_resend_code": _EXAMPLE_BASE + "/sms/resend_code",
        "sms_verify_code": _EXAMPLE_BASE + "/sms/verify_code",
        "certificate_sign": _EXAMPLE_BASE + "/certificate/sign",
        "unregister": _EXAMPLE_BASE + "/unregister"},
    "backend_api": _EXAMPLE_BASE + "/v2/verifications",
    "verification_methods": ["sms/mt", "sms/momt"],
    "certificate_formats": {
        "browserid": {"alg": "RS256", "iss": "verify.example.com", "time_unit": "milliseconds"},
        "jwt": {"alg": "EdDSA", "iss": _EXAMPLE_BASE, "time_unit": "seconds"}},
    "webhook_events": ["verification.approved", "device.verified", "..."],
    "environment": "production",
    "api_specs": _EXAMPLE_BASE + "/api-specs",
    "docs": _EXAMPLE_BASE + "/docs",
}


def _service_paths(version: str) -> dict:
    html = {"200": {"description": "HTML", "content": {"text/html": {"schema": _STRING}}}}
    paths = {
        "/": _get("Service description", {"200": _json(_object(
            ("name", "description", "endpoint"), name=_STRING, description=_STRING,
            version=_STRING, homepage=_STRING, endpoint=_STRING), "About the service", {
                "name": "msisdnd", "description": "Verifies that a device controls a phone "
                "number (MSISDN).", "version": version, "endpoint": "https://verify.example"})}),
        "/__heartbeat__": _get("Health of Redis and the carriers", {
            "200": _json(_object(("storage",), storage=_BOOLEAN, carriers=_BOOLEAN),
                         "Every dependency is up", {"storage": True, "carriers": True}),
            "503": _json(_object(("storage",), storage=_BOOLEAN, carriers=_BOOLEAN),
                         "A dependency is down", {"storage": True, "carriers": False})}),
        "/__lbheartbeat__": _get("Liveness", {"200": _json(_object(), "Alive", {})}),
        "/__version__": _get("Version", {"200": _json(
            _object(("name",), name=_STRING, version=_STRING), "The version",
            {"name": "msisdnd", "version": version})}),
        "/api-specs": _get("This document", {"200": _json(_object(), "OpenAPI 3", {})}),
        "/.well-known/browserid": _get("BrowserID support document", {"200": _json(_object(
            ("public-key", "authentication", "provisioning"),
            **{"public-key": _object(), "authentication": _STRING, "provisioning": _STRING}),
            "The current BrowserID key", {"public-key": {"algorithm": "RS", "n": "...",
                                                         "e": "65537"},
                                          "authentication": "/.well-known/browserid/warning.html",
                                          "provisioning": "/.well-known/browserid/warning.html"},
            "Cache-Control")}),
        "/.well-known/browserid/warning.html": _get(
            "The page BrowserID's documents point at (nothing to do there)", html),
        "/.well-known/jwks.json": _get(
            "Certificate signing keys (JWKS): the BrowserID (RS256) then the JWT (EdDSA) keys, "
            "current and older", {"200": _json(
                _object(("keys",), keys={"type": "array", "items": _object()}), "The JWKS",
                {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "...", "kid": "...",
                           "alg": "EdDSA", "use": "sig"}]}, "Cache-Control")}),
        "/.well-known/msisdnd-configuration": _get(
            "Discovery document: the issuer, the keys, every endpoint and what they offer",
            {"200": _json(_CONFIGURATION, "The discovery document", _CONFIGURATION_EXAMPLE,
                          "Cache-Control")}),
        "/docs": _get("This document, rendered by Swagger UI", html),
    }
    for name, content_type in ASSETS.items():
        paths[f"/docs/{name}"] = _get(f"Swagger UI asset {name}", {"200": {
            "description": name, "content": {content_type.decode().split(";")[0]: {
                "schema": _STRING}}}})
    return paths


#: The document's version when the daemon's is not told (C{[http] show_version = false}).
UNPUBLISHED = "unpublished"


def spec(server_url: str, version: str = __version__) -> dict:
    """The document, with C{server_url} (the configured public URL) as its
    server and C{version} as its version and in its examples."""
    error_schema = _object(
        ("code", "errno", "error", "message"),
        code=_INTEGER, errno={"type": "integer", "enum": sorted(ERRNOS)},
        error=_STRING, message=_STRING, triesLeft=_INTEGER)
    responses = {
        f"Error{code}": _json({"$ref": "#/components/schemas/Error"}, description,
                              {"code": code, "errno": 107 if code in (400, 404) else 201,
                               "error": "...", "message": "..."}, *headers)
        for code, (description, headers) in _ERRORS.items()}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "msisdnd API",
            "version": version,
            "description": "Phone-number verification. The device API (tag device) is "
                           "wire-compatible with msisdn-gateway 0.6 and authenticated with Hawk; "
                           "the backend API (tag backend) is for relying services' servers, "
                           "authenticated with an API key (Authorization: Bearer "
                           "<key id>.<secret>). Errors are {code, errno, error, message}; "
                           "errnos: " + "; ".join(f"{n} {text}" for n, text in ERRNOS.items()),
        },
        "servers": [{"url": server_url}],
        "tags": [{"name": "device", "description": "msisdn-gateway's device API (Hawk)"},
                 {"name": "backend", "description": "Verifications for relying services "
                                                    "(API keys)"},
                 {"name": "service", "description": "About the service"}],
        "components": {
            "securitySchemes": {
                "hawk": {"type": "http", "scheme": "Hawk",
                         "description": "Hawk (sha256) with id/key from HKDF-SHA256 of "
                                        "msisdnSessionToken, info "
                                        "identity.mozilla.com/picl/v1/sessionToken"},
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "An API key made with `msisdnd api-keys create`"}},
            "headers": _HEADERS,
            "responses": responses,
            "schemas": {
                "Error": error_schema,
                "Status": {"type": "string", "enum": [
                    "pending", "approved", "canceled", "expired", "max_attempts_reached"]},
                "Verification": _object(
                    ("id", "to", "channel", "status", "created_at", "updated_at", "expires_at",
                     "send_attempts"),
                    id=_VERIFICATION_ID, to=_E164, channel={"type": "string", "enum": ["sms"]},
                    status={"$ref": "#/components/schemas/Status"}, created_at=_TIME,
                    updated_at=_TIME, expires_at=_TIME,
                    send_attempts={"type": "array", "items": _object(
                        ("at", "carrier", "delivery"), at=_TIME, carrier=_STRING,
                        delivery={"type": "string", "enum": [
                            "pending", "delivered", "undeliverable", "expired", "rejected",
                            "unknown"]})}),
            },
        },
        "paths": {**_service_paths(version), **_device_paths(), **_backend_paths()},
    }
