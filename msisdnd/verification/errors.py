"""Why a verification step was refused: the vocabulary the API translates.

Every step of L{msisdnd.verification.flows.Verifier} fails with one of
these, and the HTTP layer maps each to a status and errno:
  - a L{VerificationError} (the session, the code or the send said no);
  - L{Refused}, an abuse limit said no (its L{Limit} says which);
  - L{StoreUnavailable}, Redis did not answer in time.
The last two are raised by the state layer and named here so that the API
needs nothing below this package.
"""

from __future__ import annotations

from msisdnd.state.limits import Limit, Refused
from msisdnd.state.redis import StoreUnavailable

__all__ = [
    "AlreadyVerified", "CodeGone", "IdempotencyConflict", "IdempotencyInProgress", "InvalidApiKey", "Limit",
    "NoCodeSent", "NoSession", "NotVerified", "Refused", "ResendTooSoon", "SecondNumber",
    "SendFailed", "StoreUnavailable", "TooManySends", "UnknownVerification",
    "VerificationError", "WrongCode",
]


class VerificationError(Exception):
    """Why a verification step was refused (the API layer maps each to HTTP)."""


class NoSession(VerificationError):
    """No session has this Hawk id (never registered, expired, or unregistered)."""


class AlreadyVerified(VerificationError):
    """The session has verified its number: it sends no more codes."""


class SecondNumber(VerificationError):
    """The session already belongs to another number."""


class ResendTooSoon(VerificationError):
    """A new code was asked for within the cooldown."""

    def __init__(self, retry_after: float):
        super().__init__(f"retry in {retry_after:.0f}s")
        self.retry_after = retry_after


class TooManySends(VerificationError):
    """The session has had all the codes it may have."""


class NoCodeSent(VerificationError):
    """There is no number to resend to: the session never asked for a code."""


class WrongCode(VerificationError):
    """The code does not match; C{tries_left} more may be made."""

    def __init__(self, tries_left: int):
        super().__init__(f"{tries_left} tries left")
        self.tries_left = tries_left


class CodeGone(VerificationError):
    """No code to check: expired, tries exhausted, or never sent."""


class NotVerified(VerificationError):
    """The session has not verified a number."""


class SendFailed(VerificationError):
    """No carrier accepted the SMS in time; nothing was left queued."""


class InvalidApiKey(VerificationError):
    """A backend request's API key is missing, malformed, unknown, expired or revoked."""


class UnknownVerification(VerificationError):
    """No backend verification of this API key has this id (or is pending for this number)."""


class IdempotencyConflict(VerificationError):
    """The C{Idempotency-Key} was used before with another body."""


class IdempotencyInProgress(VerificationError):
    """The first request with this C{Idempotency-Key} is still waiting for the SMSC."""
