"""Error responses: C{{code, errno, error, message}} everywhere.

C{error} is the HTTP reason phrase and C{message} the human text (upstream
put the text in C{error} by accident).  The errnos are msisdn-gateway's,
with the rate-limit ones it documented but never implemented:

  - 105 invalid code, 106 bad JSON, 107 invalid parameters, 108 missing
    parameters, 110 invalid Hawk/auth token, 111 expired, 113 too large
  - 114 a new code was asked for within the resend cooldown (429)
  - 115 the session has had all the codes it may have (429)
  - 116 too many codes to this number (429): 5 per 10 minutes, 10 per day
  - 117 too many requests from this client address (429)
  - 118 a daily budget of the number's prefix, country or network is spent (429)
  - 119 the number's country or type is not served (403)
  - 120 the number's prefix or network is blocked by the pumping guard (403)
  - 121 the number is locked after too many wrong codes (429)
  - 122 the API key's rate is spent (429), 123 the API key's daily budget
    is spent (429), 124 an C{Idempotency-Key} reused with another body
    (422), 125 the first request with that C{Idempotency-Key} is still
    under way (409), 126 no such verification for this API key (404)
  - 127 the session has verified its number: it sends no more codes (409)
  - 128 the request (head and body) did not arrive within the deadline (408)
  - 201 backend unavailable (503, with C{Retry-After}), 999 unexpected
"""

from __future__ import annotations

from http import HTTPStatus

INVALID_CODE = 105
BAD_JSON = 106
INVALID_PARAMETERS = 107
MISSING_PARAMETERS = 108
INVALID_AUTH = 110
EXPIRED = 111
TOO_LARGE = 113
RESEND_TOO_SOON = 114
TOO_MANY_SENDS = 115
NUMBER_RATE = 116
CLIENT_RATE = 117
BUDGET_SPENT = 118
NOT_SERVED = 119
PUMPING_BLOCK = 120
NUMBER_LOCKED = 121
API_KEY_RATE = 122
API_KEY_BUDGET = 123
IDEMPOTENCY_CONFLICT = 124
IDEMPOTENCY_IN_PROGRESS = 125
UNKNOWN_VERIFICATION = 126
REQUEST_TIMEOUT = 128
ALREADY_VERIFIED = 127
BACKEND_UNAVAILABLE = 201
UNEXPECTED = 999

#: Every errno this API answers with, for the OpenAPI document and the README.
ERRNOS: dict[int, str] = {
    INVALID_CODE: "the verification code is wrong",
    BAD_JSON: "the body is not JSON",
    INVALID_PARAMETERS: "a parameter has the wrong type or value",
    MISSING_PARAMETERS: "a required parameter is missing",
    INVALID_AUTH: "the Hawk authorization or the API key is missing, malformed, stale, "
                  "replayed, unknown, expired or revoked",
    EXPIRED: "the code expired or its tries are spent, or the session is not verified",
    TOO_LARGE: "the body is larger than the limit",
    RESEND_TOO_SOON: "a new code was asked for within the resend cooldown",
    TOO_MANY_SENDS: "the session has had all the codes it may have",
    NUMBER_RATE: "too many codes to this number (across sessions)",
    CLIENT_RATE: "too many requests from this client address",
    BUDGET_SPENT: "the daily budget of the number's prefix, country or network is spent",
    NOT_SERVED: "the number's country or type is not served",
    PUMPING_BLOCK: "the number's prefix or network is blocked (SMS pumping guard)",
    NUMBER_LOCKED: "the number is locked after too many wrong codes",
    API_KEY_RATE: "too many requests with this API key; retry after Retry-After",
    API_KEY_BUDGET: "this API key's daily budget of verifications is spent",
    IDEMPOTENCY_CONFLICT: "this Idempotency-Key was used with another body",
    IDEMPOTENCY_IN_PROGRESS: "the first request with this Idempotency-Key is still under way",
    UNKNOWN_VERIFICATION: "no such verification for this API key (or none pending for 'to')",
    REQUEST_TIMEOUT: "the request (head and body) did not arrive within the deadline",
    ALREADY_VERIFIED: "the session has verified its number: it sends no more codes",
    BACKEND_UNAVAILABLE: "Redis or every carrier is unavailable; retry after Retry-After",
    UNEXPECTED: "an unexpected error",
}


class APIError(Exception):
    """An error response.

    @ivar code: the HTTP status.
    @ivar errno: one of L{ERRNOS}.
    @ivar headers: extra response headers (C{Retry-After}, C{WWW-Authenticate}).
    @ivar extra: extra body fields (e.g. C{triesLeft}).
    """

    def __init__(self, code: int, errno: int, message: str,
                 headers: dict[str, str] | None = None, **extra: object):
        super().__init__(message)
        self.code = code
        self.errno = errno
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict:
        return {"code": self.code, "errno": self.errno,
                "error": HTTPStatus(self.code).phrase, "message": self.message, **self.extra}


def invalid(message: str) -> APIError:
    return APIError(400, INVALID_PARAMETERS, message)


def missing(name: str) -> APIError:
    return APIError(400, MISSING_PARAMETERS, f"Missing {name}")


def unavailable(message: str, retry_after: int = 1) -> APIError:
    return APIError(503, BACKEND_UNAVAILABLE, message, {"Retry-After": str(retry_after)})
