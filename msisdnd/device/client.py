"""The reference device client of the msisdnd API (msisdn-gateway 0.6 wire format).

L{MSISDNClient} speaks the device API over treq: it registers a session,
asks for a code, posts it back and has a public key certified.  Every call
returns a L{Deferred}; a non-2xx answer fails it with L{APIError}.

Hawk: the routes that need it are signed with L{msisdnd.hawk.authorization_header}
over C{server_url + path}, so a C{server_url} carrying the prefix a front
proxy mounts the daemon under (C{https://host/v1/msisdn}) signs what the
server checks.  The signature includes the payload hash, which the server
verifies when present, so the body is authenticated too.

Clock skew: Hawk MACs a timestamp, and the server refuses one more than its
skew (60 s by default) from its own clock with C{401} and
C{WWW-Authenticate: Hawk ts="<server time>", tsm="<MAC of it>"}.  The client
checks C{tsm} with the session key (so only the real server, which holds the
key, can move our clock), adopts the offset C{ts - now} for every later
request, and retries the refused request once.  This is Hawk's own clock-skew
correction (the Hawk spec's "Timestamp" section); a second refusal, or a
C{tsm} that does not verify, fails the call with the L{APIError}.

Helpers for whoever holds the certificate: L{generate_browserid_keypair},
L{decode_certificate} (no verification, for display) and
L{verify_certificate}.
"""

from __future__ import annotations

import functools
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, ParamSpec, TypeVar

import jwt
import mohawk.util
import treq
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from msisdnd import hawk

__all__ = [
    "APIError",
    "MSISDNClient",
    "ProtocolError",
    "decode_certificate",
    "generate_browserid_keypair",
    "verify_certificate",
]

DEFAULT_TIMEOUT = 30.0
"""Seconds a request may take before it fails with treq's timeout."""

CLOCK_LEEWAY = 60
"""Seconds a certificate's C{iat} (or a JWT's C{nbf}) may lie in the future, for
an issuer whose clock runs ahead of ours.  C{exp} gets no leeway."""

_P = ParamSpec("_P")
_T = TypeVar("_T")

_AUTH_PARAM = re.compile(r'(\w+)="([^"\\]*)"')

log = Logger()


class APIError(Exception):
    """The server answered with a status other than 2xx.

    @ivar code: the HTTP status.
    @ivar errno: the body's C{errno}, or C{None} when the body is not the
        API's error object (a proxy's page, say).
    @ivar message: the body's C{message}, else the HTTP reason phrase.
    @ivar body: the decoded JSON body, or the raw bytes when not JSON.
    @ivar headers: the response headers, names lowercased, first value of each.
    """

    def __init__(self, code: int, errno: int | None, message: str, body: object,
                 headers: Mapping[str, str]) -> None:
        super().__init__(code, errno, message)
        self.code = code
        self.errno = errno
        self.message = message
        self.body = body
        self.headers = dict(headers)

    def __str__(self) -> str:
        facts = [f"HTTP {self.code}"]
        if self.errno is not None:
            facts.append(f"errno {self.errno}")
        if isinstance(self.body, dict) and isinstance(self.body.get("triesLeft"), int):
            facts.append(f"{self.body['triesLeft']} tries left")
        if self.headers.get("retry-after"):
            facts.append(f"retry after {self.headers['retry-after']} s")
        return f"{self.message} ({', '.join(facts)})"


class ProtocolError(Exception):
    """A 2xx answer that is not what the API promises (not JSON, a member missing)."""


def _deferred(
    f: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Deferred[_T]]:
    """Make a coroutine method return a L{Deferred}, as Twisted callers expect."""

    @functools.wraps(f)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        return Deferred.fromCoroutine(f(*args, **kwargs))

    return wrapper


def _www_authenticate(value: str) -> dict[str, str]:
    """The quoted attributes of a C{Hawk ...} challenge (empty for other schemes)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "hawk":
        return {}
    return dict(_AUTH_PARAM.findall(rest))


class MSISDNClient:
    """One device's session with an msisdnd (or msisdn-gateway) server.

    @ivar server_url: the server's public URL, without a trailing C{/}; it
        may carry a path prefix.
    @ivar token: the session token (64 hex digits) or C{None} before
        L{register}; Hawk routes need it.
    """

    def __init__(
        self,
        server_url: str,
        *,
        token: str | None = None,
        treq_client: Any = None,
        clock: IReactorTime | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """
        @param server_url: e.g. C{https://verify.example.com/v1/msisdn}.
        @param token: an existing session token, to resume a session.
        @param treq_client: a L{treq.client.HTTPClient} (anything with its
            C{request} method); default the C{treq} module's shared pool.
        @param clock: where Hawk timestamps come from (only C{seconds()} is
            used); default the global reactor.
        @param timeout: seconds each HTTP request may take.
        @raise ValueError: if C{token} is not 64 hex digits.
        """
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self.server_url = server_url.rstrip("/")
        self._http = treq_client if treq_client is not None else treq
        self._clock: IReactorTime = clock  # type: ignore[assignment]
        self._timeout = timeout
        self._offset = 0
        self.token = token

    # -- session -------------------------------------------------------------

    @property
    def token(self) -> str | None:
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._credentials = None if value is None else hawk.derive_session(bytes.fromhex(value))
        self._token = value

    @property
    def hawkId(self) -> str:
        """The session's Hawk id (what the silent SMS carries).

        @raise ValueError: if the client has no token.
        """
        return self._session().id

    @property
    def clockOffset(self) -> int:
        """Seconds added to the clock for Hawk timestamps (learnt from the server)."""
        return self._offset

    def _session(self) -> hawk.HawkCredentials:
        if self._credentials is None:
            raise ValueError("no session token: call register() first")
        return self._credentials

    # -- HTTP ----------------------------------------------------------------

    async def _call(self, method: str, path: str, body: dict | None = None, *,
                    signed: bool = False, headers: Mapping[str, str] | None = None) -> Any:
        """One request: the decoded JSON answer, or C{None} for an empty one.

        Signed requests refused for a stale timestamp are retried once with
        the server's clock (see the module docstring).

        @raise APIError: for a non-2xx answer.
        @raise ProtocolError: for a 2xx answer that is not JSON.
        """
        url = self.server_url + path
        data = b"" if body is None else json.dumps(body).encode("utf-8")
        sent = dict(headers or {})
        if data:
            sent["Content-Type"] = "application/json"
        sent.setdefault("Accept", "application/json")
        response, raw = await self._send(method, url, data, sent, signed)
        if signed and response.code == 401 and self._adoptServerClock(
                self._error(response, raw)):
            response, raw = await self._send(method, url, data, sent, signed)
        if not 200 <= response.code < 300:
            raise self._error(response, raw)
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ProtocolError(f"{method} {path}: the answer is not JSON") from None

    async def _send(self, method: str, url: str, data: bytes, headers: dict[str, str],
                    signed: bool) -> tuple[Any, bytes]:
        """Send once (signing with a fresh nonce and timestamp); the response and its body."""
        if signed:
            headers = dict(headers, Authorization=hawk.authorization_header(
                self._session(), method, url, data, headers.get("Content-Type", ""),
                ts=math.floor(self._clock.seconds()) + self._offset, with_hash=True))
        response = await self._http.request(
            method, url, data=data or None, headers={k: [v] for k, v in headers.items()},
            allow_redirects=False, timeout=self._timeout)
        return response, await response.content()

    @staticmethod
    def _error(response: Any, raw: bytes) -> APIError:
        headers = {name.decode("latin-1").lower(): values[0].decode("latin-1")
                   for name, values in response.headers.getAllRawHeaders()}
        phrase = response.phrase.decode("latin-1") if isinstance(response.phrase, bytes) \
            else str(response.phrase or "")
        try:
            body: object = json.loads(raw)
        except ValueError:
            return APIError(response.code, None, phrase or "HTTP error", raw, headers)
        if not isinstance(body, dict):
            return APIError(response.code, None, phrase or "HTTP error", body, headers)
        errno = body.get("errno")
        message = body.get("message") or body.get("error") or phrase
        return APIError(response.code, errno if isinstance(errno, int) else None,
                        str(message), body, headers)

    def _adoptServerClock(self, error: APIError) -> bool:
        """Take the server's time from a stale-timestamp 401, if its MAC is ours.

        @return: whether the clock offset was changed and a retry makes sense.
        """
        if error.code != 401:
            return False
        challenge = _www_authenticate(error.headers.get("www-authenticate", ""))
        ts, tsm = challenge.get("ts", ""), challenge.get("tsm", "")
        if not (ts.isascii() and ts.isdigit()) or not tsm:
            return False
        credentials = self._session()
        expected = mohawk.util.calculate_ts_mac(
            int(ts), {"id": credentials.id, "key": credentials.key,
                      "algorithm": credentials.algorithm}).decode("ascii")
        if not hmac.compare_digest(expected, tsm):
            log.warn("Ignoring a Hawk server time whose tsm does not verify")
            return False
        offset = int(ts) - math.floor(self._clock.seconds())
        log.info("Hawk clock correction: {offset:+d} s from the server's time", offset=offset)
        self._offset = offset
        return True

    # -- public routes -------------------------------------------------------

    @_deferred
    async def register(self) -> str:
        """C{POST /register}: start a session and keep its token on the client.

        @return: the new C{msisdnSessionToken}.
        """
        answer = await self._call("POST", "/register")
        token = answer.get("msisdnSessionToken") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", token):
            raise ProtocolError("/register: no msisdnSessionToken in the answer")
        self.token = token
        return token

    @_deferred
    async def discover(self, mcc: str, mnc: str | None = None,
                       msisdn: str | None = None) -> dict:
        """C{POST /discover}: the verification methods the network offers.

        @return: C{{"verificationMethods": [...], "verificationDetails": {...}}};
            C{sms/momt} details carry C{moVerifier} and C{mtSender}.
        """
        body: dict[str, str] = {"mcc": mcc}
        if mnc is not None:
            body["mnc"] = mnc
        if msisdn is not None:
            body["msisdn"] = msisdn
        return await self._call("POST", "/discover", body)

    @_deferred
    async def wellKnown(self) -> dict:
        """C{GET /.well-known/browserid}: the BrowserID document (its C{public-key})."""
        return await self._call("GET", "/.well-known/browserid")

    @_deferred
    async def jwks(self) -> dict:
        """C{GET /.well-known/jwks.json}: the JWK Set that verifies JWT certificates."""
        return await self._call("GET", "/.well-known/jwks.json")

    # -- Hawk routes ---------------------------------------------------------

    @_deferred
    async def mtVerify(self, msisdn: str, mcc: str, mnc: str | None = None, short: bool = True,
                       app_hash: str | None = None,
                       accept_language: str | None = None) -> None:
        """C{POST /sms/mt/verify}: have a code texted to C{msisdn}.

        @param msisdn: the number, E.164 (C{+33612345678}).
        @param short: a 6-digit code meant for a human, else a 32-hex one.
        @param app_hash: the Android app's 11-character hash (SMS Retriever).
        @param accept_language: the SMS language preference, as the header.
        @return: fires with C{None} once the SMSC accepted the SMS.
        """
        body: dict[str, object] = {"msisdn": msisdn, "mcc": mcc, "shortVerificationCode": short}
        if mnc is not None:
            body["mnc"] = mnc
        if app_hash is not None:
            body["appHash"] = app_hash
        headers = {"Accept-Language": accept_language} if accept_language else {}
        await self._call("POST", "/sms/mt/verify", body, signed=True, headers=headers)

    @_deferred
    async def resendCode(self, app_hash: str | None = None,
                         accept_language: str | None = None) -> None:
        """C{POST /sms/resend_code}: a new code to the number already named.

        Within the cooldown this fails with errno 114 (429, C{Retry-After});
        once the session's codes are spent, errno 115.
        """
        body = {"appHash": app_hash} if app_hash is not None else None
        headers = {"Accept-Language": accept_language} if accept_language else {}
        await self._call("POST", "/sms/resend_code", body, signed=True, headers=headers)

    @_deferred
    async def verifyCode(self, code: str) -> str:
        """C{POST /sms/verify_code}: prove the number with the code it received.

        @return: the verified number, E.164.
        @raise APIError: errno 105 for a wrong code (C{body["triesLeft"]}),
            111 when the code expired or its tries are spent.
        """
        answer = await self._call("POST", "/sms/verify_code", {"code": code}, signed=True)
        msisdn = answer.get("msisdn") if isinstance(answer, dict) else None
        if not isinstance(msisdn, str):
            raise ProtocolError("/sms/verify_code: no msisdn in the answer")
        return msisdn

    @_deferred
    async def sign(self, public_key_json: str, duration: int, fmt: str = "browserid",
                   audience: str | None = None) -> str:
        """C{POST /certificate/sign}: certify that C{public_key_json}'s holder has the number.

        @param public_key_json: the BrowserID public key as a JSON I{string},
            e.g. the second half of L{generate_browserid_keypair}.
        @param duration: the lifetime asked for, seconds (the server may cap it).
        @param fmt: C{"browserid"} (sent as upstream clients do, without a
            C{format} member) or C{"jwt"}.
        @param audience: the relying party a JWT is for (pairwise C{sub}).
        @return: the certificate, a compact JWS.
        """
        body: dict[str, object] = {"publicKey": public_key_json, "duration": duration}
        if fmt != "browserid":
            body["format"] = fmt
        if audience is not None:
            body["audience"] = audience
        answer = await self._call("POST", "/certificate/sign", body, signed=True)
        cert = answer.get("cert") if isinstance(answer, dict) else None
        if not isinstance(cert, str):
            raise ProtocolError("/certificate/sign: no cert in the answer")
        return cert

    @_deferred
    async def unregister(self) -> None:
        """C{POST /unregister}: end the session; the client forgets its token."""
        await self._call("POST", "/unregister", signed=True)
        self.token = None


# -- keys and certificates -------------------------------------------------------


def generate_browserid_keypair(
    bits: int = 2048,
) -> tuple[rsa.RSAPrivateKey, str]:
    """A new RSA key pair for C{/certificate/sign}.

    @return: the private key, and the public key as the JSON string the
        server expects: C{{"algorithm": "RS", "n": "<decimal>", "e": "<decimal>"}}.
    """
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    numbers = private_key.public_key().public_numbers()
    return private_key, json.dumps({"algorithm": "RS", "n": str(numbers.n), "e": str(numbers.e)})


def decode_certificate(cert: str) -> dict:
    """The claims of C{cert} B{without verifying anything} (signature, expiry).

    For display only; trust nothing in it before L{verify_certificate}.

    @raise jwt.DecodeError: if C{cert} is not a compact JWS.
    """
    return jwt.decode(cert, options={"verify_signature": False})


def verify_certificate(
    cert: str,
    keys: Mapping[str, Any],
    *,
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> dict:
    """Verify a certificate from C{/certificate/sign} and return its claims.

    Which form is checked follows C{keys}:

      - a JWK Set (C{/.well-known/jwks.json}, has C{keys}): the JWT form.  The
        key is the one whose C{kid} the header names, the algorithm is pinned
        to C{EdDSA}, and C{exp}, C{nbf}, C{iat} (seconds) are checked.  A
        token carrying C{aud} verifies only when C{audience} matches it.
      - a BrowserID document (C{/.well-known/browserid}, has C{public-key}):
        the BrowserID form, RS256 against the document's RS C{n}/C{e}.
        PyJWT's C{exp}/C{iat} checks assume seconds, so they are off and the
        millisecond C{exp} and C{iat} are checked here instead.

    Times: C{exp} must be after C{now}; C{iat} and C{nbf} may be at most
    L{CLOCK_LEEWAY} seconds after it.

    @param issuer: when given, C{iss} must equal it (the issuer URL for a
        JWT, the issuer host for BrowserID).
    @param now: the time to check against (epoch seconds); default now.
    @raise jwt.InvalidTokenError: (or a subclass) if the certificate does
        not verify.
    @raise ValueError: if C{keys} is neither kind of document.
    """
    if "keys" in keys:
        return _verify_jwt(cert, keys, audience=audience, issuer=issuer, now=now)
    if "public-key" in keys:
        return _verify_browserid(cert, keys["public-key"], issuer=issuer, now=now)
    raise ValueError("keys must be a JWK Set or a BrowserID support document")


def _verify_jwt(cert: str, jwks: Mapping[str, Any], *, audience: str | None,
                issuer: str | None, now: float | None) -> dict:
    kid = jwt.get_unverified_header(cert).get("kid")
    matching = [k for k in jwks["keys"] if isinstance(k, dict) and k.get("kid") == kid]
    if kid is None or len(matching) != 1:
        raise jwt.InvalidTokenError(f"no single key in the JWK Set has kid {kid!r}")
    key = jwt.PyJWK(matching[0])
    # Times are checked below against C{now}, with leeway only for issuers
    # whose clock runs ahead (PyJWT's leeway would also accept expired tokens).
    claims = jwt.decode(cert, key, algorithms=["EdDSA"], audience=audience, issuer=issuer,
                        options={"require": ["exp", "iat"], "verify_exp": False,
                                 "verify_nbf": False, "verify_iat": False})
    exp, iat, nbf = claims["exp"], claims["iat"], claims.get("nbf", claims["iat"])
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (exp, iat, nbf)):
        raise jwt.InvalidTokenError("exp, iat and nbf must be numbers (seconds)")
    now_s = time.time() if now is None else now
    if exp <= now_s:
        raise jwt.ExpiredSignatureError("Signature has expired")
    if max(iat, nbf) > now_s + CLOCK_LEEWAY:
        raise jwt.ImmatureSignatureError("The token is not yet valid (iat or nbf)")
    return claims


def _verify_browserid(cert: str, public: object, *, issuer: str | None,
                      now: float | None) -> dict:
    if not isinstance(public, dict) or public.get("algorithm") != "RS":
        raise jwt.InvalidTokenError("the BrowserID document has no RS public-key")
    try:
        key = rsa.RSAPublicNumbers(int(public["e"], 10), int(public["n"], 10)).public_key()
    except (KeyError, TypeError, ValueError):
        raise jwt.InvalidTokenError("the BrowserID public-key is not a usable RSA key") from None
    claims = jwt.decode(cert, key, algorithms=["RS256"], issuer=issuer,
                        options={"verify_exp": False, "verify_iat": False,
                                 "verify_nbf": False, "require": ["exp", "iat"]})
    exp, iat = claims["exp"], claims["iat"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat)):
        raise jwt.InvalidTokenError("exp and iat must be integers (milliseconds)")
    now_ms = (time.time() if now is None else now) * 1000
    if exp <= now_ms:
        raise jwt.ExpiredSignatureError("Signature has expired")
    if iat > now_ms + CLOCK_LEEWAY * 1000:
        raise jwt.ImmatureSignatureError("The certificate was issued in the future")
    return claims
