"""The OpenAPI 3 document of the device API, served at C{/api-specs}.

A test checks that every route the Klein app serves is described here and
that nothing here is missing from the app.
"""

from __future__ import annotations

from msisdnd import __version__
from msisdnd.api.errors import ERRNOS


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(required: tuple[str, ...] = (), **properties: dict) -> dict:
    schema: dict = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


_STRING = {"type": "string"}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict:
    return {str(code): _json(_ERROR, "Error (see errno)") for code in codes}


def _post(summary: str, body: dict | None, ok: dict, errors: tuple[int, ...],
          hawk: bool = False) -> dict:
    operation: dict = {"summary": summary, "responses": {**ok, **_errors(*errors)}}
    if body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": body}}}
    if hawk:
        operation["security"] = [{"hawk": []}]
        operation["responses"].update(_errors(401))
    return {"post": operation}


def _get(summary: str, ok: dict) -> dict:
    return {"get": {"summary": summary, "responses": ok}}


_NO_CONTENT = {"204": {"description": "Done"}}
_MCC = {"type": "string", "pattern": "^[0-9]{3}$"}
_MNC = {"type": "string", "pattern": "^[0-9]{2,3}$"}
_PUBLIC_KEY = {"type": "string", "description": "A BrowserID public key as a JSON string: "
               '{"algorithm":"RS","n","e"} or {"algorithm":"DS","y","p","q","g"}'}


def spec(server_url: str) -> dict:
    """The document, with C{server_url} (the configured public URL) as its server."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "msisdnd device API",
            "version": __version__,
            "description": "Wire-compatible with msisdn-gateway 0.6. Errors are "
                           "{code, errno, error, message}; errnos: "
                           + "; ".join(f"{n} {text}" for n, text in ERRNOS.items()),
        },
        "servers": [{"url": server_url}],
        "components": {
            "securitySchemes": {"hawk": {
                "type": "http", "scheme": "Hawk",
                "description": "Hawk (sha256) with id/key from HKDF-SHA256 of "
                               "msisdnSessionToken, info identity.mozilla.com/picl/v1/sessionToken"}},
            "schemas": {"Error": _object(
                ("code", "errno", "error", "message"),
                code={"type": "integer"}, errno={"type": "integer", "enum": sorted(ERRNOS)},
                error=_STRING, message=_STRING, triesLeft={"type": "integer"})},
        },
        "paths": {
            "/": _get("Service description", {"200": _json(_object(
                name=_STRING, description=_STRING, version=_STRING, homepage=_STRING,
                endpoint=_STRING))}),
            "/__heartbeat__": _get("Health of Redis and the carriers", {
                "200": _json(_object(storage={"type": "boolean"})),
                "503": _json(_object(storage={"type": "boolean"}), "A dependency is down")}),
            "/__lbheartbeat__": _get("Liveness", {"200": _json(_object())}),
            "/__version__": _get("Version", {"200": _json(_object(name=_STRING, version=_STRING))}),
            "/api-specs": _get("This document", {"200": _json(_object())}),
            "/.well-known/browserid": _get("BrowserID support document", {"200": _json(_object(
                **{"public-key": _object(), "authentication": _STRING, "provisioning": _STRING}))}),
            "/.well-known/browserid/warning.html": {"get": {
                "summary": "The page BrowserID's documents point at (nothing to do there)",
                "responses": {"200": {"description": "HTML",
                                      "content": {"text/html": {"schema": _STRING}}}}}},
            "/.well-known/jwks.json": _get("Certificate signing keys (JWKS)", {
                "200": _json(_object(keys={"type": "array", "items": _object()}))}),
            "/discover": _post(
                "Verification methods for a network",
                _object(("mcc",), mcc=_MCC, mnc=_MNC, msisdn=_STRING, roaming={"type": "boolean"}),
                {"200": _json(_object(verificationMethods={"type": "array", "items": _STRING},
                                      verificationDetails=_object()))},
                (400,)),
            "/register": _post("Open a session", None, {"200": _json(_object(
                msisdnSessionToken={"type": "string", "pattern": "^[0-9a-f]{64}$"}))}, (400, 429, 503)),
            "/unregister": _post("Drop the session", None, _NO_CONTENT, (503,), hawk=True),
            "/sms/mt/verify": _post(
                "Send a code to a number",
                _object(("msisdn", "mcc"), msisdn=_STRING, mcc=_MCC, mnc=_MNC,
                        shortVerificationCode={"type": "boolean"},
                        appHash={"type": "string", "minLength": 11, "maxLength": 11}),
                _NO_CONTENT, (400, 403, 413, 429, 503), hawk=True),
            "/sms/resend_code": _post(
                "Send a new code to the session's number",
                _object(appHash={"type": "string", "minLength": 11, "maxLength": 11}),
                _NO_CONTENT, (400, 403, 429, 503), hawk=True),
            "/sms/verify_code": _post(
                "Check a code", _object(("code",), code=_STRING),
                {"200": _json(_object(msisdn=_STRING))}, (400, 410, 429, 503), hawk=True),
            "/certificate/sign": _post(
                "Certificate for the verified number",
                _object(("publicKey", "duration"), publicKey=_PUBLIC_KEY,
                        duration={"type": "integer", "minimum": 1},
                        format={"type": "string", "enum": ["browserid", "jwt"]},
                        audience=_STRING),
                {"200": _json(_object(cert=_STRING))}, (400, 410, 503), hawk=True),
        },
    }
