"""A synchronous client of msisdnd's backend API, on the standard library alone.

For a relying service's backend (Django, Flask, a script)::

    from msisdnd.verify_client import VerifyClient, VerifyError

    client = VerifyClient("https://verify.example.com", api_key)
    verification = client.create("+33612345678", locale="fr")
    result = client.check("123456", id=verification.id)   # or to="+33612345678"
    if result.valid: ...                                   # result.status == "approved"

This module imports nothing else of msisdnd (nor Twisted): copy this one
file into a project, or install msisdnd, to use it.  Every failure is a
L{VerifyError} subclass carrying the HTTP status, msisdnd's C{errno}, the
server's message, C{retry_after} (seconds, from C{Retry-After}) and
C{tries_left} when the server gave them.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AuthenticationError", "CheckResult", "ConflictError", "InvalidRequest", "NotFound",
    "RateLimited", "SendAttempt", "Unavailable", "Verification", "VerifyClient", "VerifyError",
]


class VerifyError(Exception):
    """The server refused a request, or could not be reached.

    @ivar status: the HTTP status (0 when the server could not be reached).
    @ivar errno: msisdnd's errno (see the API documentation), or C{None}.
    @ivar retry_after: seconds to wait before trying again, or C{None}.
    @ivar tries_left: checks left for the code, when the server said.
    """

    def __init__(self, message: str, status: int = 0, errno: int | None = None,
                 retry_after: float | None = None, tries_left: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.errno = errno
        self.retry_after = retry_after
        self.tries_left = tries_left


class InvalidRequest(VerifyError):
    """400 or 422: a parameter is wrong (or an Idempotency-Key was reused with another body)."""


class AuthenticationError(VerifyError):
    """401: the API key is missing, unknown, expired or revoked."""


class NotFound(VerifyError):
    """404: no such verification for this API key (or none pending for the number)."""


class ConflictError(VerifyError):
    """409: the first request with this Idempotency-Key is still under way."""


class RateLimited(VerifyError):
    """429 (and 403 for numbers that are not served): a limit said no."""


class Unavailable(VerifyError):
    """503 or no answer: retry after C{retry_after}."""


_ERRORS = {400: InvalidRequest, 401: AuthenticationError, 403: RateLimited, 404: NotFound,
           409: ConflictError, 413: InvalidRequest, 422: InvalidRequest, 429: RateLimited,
           503: Unavailable}


@dataclass(frozen=True)
class SendAttempt:
    at: str
    carrier: str
    delivery: str


@dataclass(frozen=True)
class Verification:
    """A verification as the server shows it (times are RFC 3339 strings)."""

    id: str
    to: str
    status: str
    created_at: str
    updated_at: str
    expires_at: str
    channel: str = "sms"
    send_attempts: tuple[SendAttempt, ...] = field(default=())

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "Verification":
        """@raise Unavailable: the answer is not a verification."""
        try:
            attempts = tuple(SendAttempt(a["at"], a["carrier"], a["delivery"])
                             for a in value.get("send_attempts", ()))
            return cls(id=value["id"], to=value["to"], status=value["status"],
                       created_at=value["created_at"], updated_at=value["updated_at"],
                       expires_at=value["expires_at"], channel=value.get("channel", "sms"),
                       send_attempts=attempts)
        except (KeyError, TypeError) as e:
            raise Unavailable(f"the answer is not a verification: {e!r}") from None


@dataclass(frozen=True)
class CheckResult:
    """What a check answered: C{valid} is true only for the right code."""

    id: str
    status: str
    valid: bool
    tries_left: int


class VerifyClient:
    """The backend API at C{base_url} (the daemon's public URL), with one API key.

    @param timeout: seconds for each request (a create waits for the SMSC).
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def create(self, to: str, *, locale: str | None = None, code_length: int | None = None,
               app_hash: str | None = None,
               idempotency_key: str | None = None) -> Verification:
        """Send a code to C{to} (E.164); a pending verification of the same
        number gets a new code and keeps its id (within the resend cooldown:
        before it ends, L{RateLimited} with errno 114 and C{retry_after})."""
        body: dict[str, Any] = {"to": to, "channel": "sms"}
        for name, value in (("locale", locale), ("code_length", code_length),
                            ("app_hash", app_hash)):
            if value is not None:
                body[name] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Verification.from_json(self._call("POST", "/v2/verifications", body, headers))

    def check(self, code: str, *, id: str | None = None, to: str | None = None) -> CheckResult:
        """Check C{code} against the verification C{id}, or the one pending for C{to}."""
        if (id is None) == (to is None):
            raise ValueError("give id or to")
        body = {"code": code, **({"id": id} if id is not None else {"to": to})}
        answer = self._call("POST", "/v2/verifications/check", body)
        try:
            return CheckResult(answer["id"], answer["status"], answer["valid"],
                               answer["tries_left"])
        except KeyError as missing:
            raise Unavailable(f"{self.base_url} answered without {missing}") from None

    def fetch(self, id: str) -> Verification:
        return Verification.from_json(self._call("GET", f"/v2/verifications/{_segment(id)}"))

    def cancel(self, id: str) -> Verification:
        return Verification.from_json(
            self._call("POST", f"/v2/verifications/{_segment(id)}/cancel", {}))

    def _call(self, method: str, path: str, body: dict | None = None,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.api_key}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raise _error(error) from None
        except (OSError, ValueError, http.client.HTTPException) as error:
            raise Unavailable(f"{self.base_url} did not answer: {error!r}") from None
        if not isinstance(answer, dict):
            raise Unavailable(f"{self.base_url} answered {type(answer).__name__}, not an object")
        return answer


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _error(error: urllib.error.HTTPError) -> VerifyError:
    try:
        body = json.loads(error.read() or b"{}")
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    retry = error.headers.get("Retry-After")
    tries = body.get("tries_left", body.get("triesLeft"))
    kind = _ERRORS.get(error.code, VerifyError)
    return kind(str(body.get("message") or error.reason), error.code, body.get("errno"),
                float(retry) if retry and retry.isdigit() else None,
                int(tries) if isinstance(tries, int) else None)
