"""Backend verifications: the relying service's front door to the same state machine.

A backend (holding an API key) starts a verification for a number, checks
the code its user typed, reads it, or cancels it — the way Twilio Verify's
users expect.  The code is sent and checked by the L{Verifier}'s own
L{Verifier.send} and L{Verifier.check}, on a session hash like a device's
(L{msisdnd.state.verifications} lists what it keeps besides), so the limits,
receipts, automatic resend and privacy rules are the same.

A verification is C{pending} until it ends: C{approved} (the right code),
C{canceled}, C{expired} (its code's lifetime passed) or
C{max_attempts_reached} (its tries are spent).  An ended verification
answers every check with its final status and is readable for a day.
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from msisdnd.state.api_keys import ApiKeyRecord
from msisdnd.state.idempotency import Claim, Idempotency
from msisdnd.state.verifications import VerificationStore
from msisdnd.verification import codes
from msisdnd.verification.authentication import ApiKeyAuthenticator
from msisdnd.verification.errors import (
    CodeGone,
    IdempotencyConflict,
    IdempotencyInProgress,
    NoSession,
    UnknownVerification,
    WrongCode,
)
from msisdnd.verification.flows import CodeKind, SendRequest, Verifier

#: How long an ended (or forgotten) verification stays readable.
KEEP_MS = 86_400_000
#: What a verification id looks like: a prefix and 32 hex digits.
ID_PREFIX = "VE"

#: Receipt states as the API shows an attempt's delivery.
DELIVERY = {"DELIVRD": "delivered", "UNDELIV": "undeliverable", "EXPIRED": "expired",
            "REJECTD": "rejected", "UNKNOWN": "unknown", "DELETED": "unknown"}


class Status(str, enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    CANCELED = "canceled"
    EXPIRED = "expired"
    MAX_ATTEMPTS_REACHED = "max_attempts_reached"


def is_verification_id(value: str) -> bool:
    return (len(value) == len(ID_PREFIX) + 32 and value.startswith(ID_PREFIX)
            and all(c in "0123456789abcdef" for c in value[len(ID_PREFIX):]))


def _ref(verification_id: str) -> bytes:
    return bytes.fromhex(verification_id[len(ID_PREFIX):])


def _id(ref: bytes) -> str:
    return ID_PREFIX + ref.hex()


def _time(ms: int) -> str:
    """RFC 3339, UTC, to the second."""
    moment = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def verification_id_of(ref: bytes) -> str:
    """The id of the verification stored under C{ref}."""
    return _id(ref)


def status_of(fields: dict) -> Status | None:
    """The final status the fields record (C{None}: not ended, as far as they say)."""
    if "v" in fields:
        return Status.APPROVED
    if "st" in fields:
        return Status(fields["st"].decode())
    return None


def verification_view(verification_id: str, fields: dict, status: Status, number_key: bytes,
                      include_number: bool = True) -> dict:
    """A verification as the API shows it, from its stored fields.

    @param number_key: opens the number the fields keep sealed.
    @param include_number: C{False} leaves C{to} out (webhooks that did not ask for it).
    """
    created = int(fields.get("ct", 0))
    updated = max(int(fields.get("u", created)), int(fields.get("v", 0)))
    expires = int(fields.get("e") or fields.get("x") or created)
    attempts = []
    for n in range(1, int(fields.get("q", 0)) + 1):
        at, _, carrier = fields.get(f"p{n}", b"0 ").decode().partition(" ")
        state = fields.get(f"pd{n}")
        attempts.append({"at": _time(int(at)), "carrier": carrier,
                         "delivery": DELIVERY.get(state.decode(), "pending")
                         if state else "pending"})
    view = {"id": verification_id, "to": None, "channel": "sms", "status": status.value,
            "created_at": _time(created), "updated_at": _time(updated),
            "expires_at": _time(expires), "send_attempts": attempts}
    if include_number:
        to = codes.unseal(number_key, fields.get("n", b""))
        view["to"] = to.decode() if to else None
    else:
        del view["to"]
    return view


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a check answered: the verification's status after it."""

    id: str
    status: Status
    valid: bool
    tries_left: int

    def as_json(self) -> dict:
        return {"id": self.id, "status": self.status.value, "valid": self.valid,
                "tries_left": self.tries_left}


class BackendVerifications:
    """Create, check, fetch and cancel verifications for API keys.

    @param authenticator: refunds the budget of a create that sent nothing.
    @param keep_ms: how long an ended verification stays readable.
    """

    log = Logger()

    def __init__(self, verifier: Verifier, authenticator: ApiKeyAuthenticator,
                 idempotency: Idempotency, clock: IReactorTime, keep_ms: int = KEEP_MS):
        self.verifier = verifier
        self.authenticator = authenticator
        self.idempotency = idempotency
        self.store = verifier.store
        self.verifications: VerificationStore = verifier.verifications
        self.secrets = verifier.secrets
        self.settings = verifier.settings
        self.clock = clock
        self.keep_ms = keep_ms

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- create ----------------------------------------------------------------

    @inlineCallbacks
    def create(self, key: ApiKeyRecord, to: str, *, locale: str, digits: int | None = None,
               app_hash: str | None = None, idempotency_key: str | None = None,
               body: object = None):
        """Send a code to C{to}; fires with C{(verification, replayed)}.

        A pending verification of the same number by the same key gets the
        new code (the same id).  With an C{idempotency_key}, the first 201
        answer is kept for a day and replayed to a retry with the same
        C{body} (C{replayed} is then true, and nothing is sent).

        @raise IdempotencyConflict: the key was used with another body.
        @raise IdempotencyInProgress: the first request with it is still under way.
        """
        if idempotency_key is None:
            verification = yield self._create(key, to, locale, digits, app_hash)
            return verification, False
        slot = hashlib.sha256(idempotency_key.encode()).digest()[:16]
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))  # \u-escaped
        body_digest = hashlib.sha256(canonical.encode()).digest()[:16]
        pending_ms = int((self.settings.send_timeout + 5) * 1000)
        claim, kept = yield self.idempotency.claim(key.key_id, slot, body_digest, pending_ms)
        if claim is not Claim.CLAIMED:
            yield self.authenticator.refund(key)  # nothing is sent in any of these cases
        if claim is Claim.CONFLICT:
            raise IdempotencyConflict()
        if claim is Claim.IN_PROGRESS:
            raise IdempotencyInProgress()
        if claim is Claim.REPLAY:
            plain = codes.unseal(self.secrets.backend, kept)
            if plain is None:  # kept under another master secret: never send twice
                raise IdempotencyConflict("The first answer to this key cannot be read.")
            return json.loads(plain), True
        try:
            verification = yield self._create(key, to, locale, digits, app_hash)
        except BaseException:
            yield self.idempotency.release(key.key_id, slot, body_digest)
            raise
        sealed = codes.seal(self.secrets.backend, json.dumps(verification).encode())
        try:
            yield self.idempotency.keep(key.key_id, slot, body_digest, sealed, KEEP_MS)
        except Exception:  # the SMS went out: the answer stands even if it cannot be kept
            self.log.failure("An idempotent answer could not be kept")
        return verification, False

    @inlineCallbacks
    def _create(self, key: ApiKeyRecord, to: str, locale: str, digits: int | None,
                app_hash: str | None):
        number_ref = codes.number_ref(self.secrets.number, to)
        fresh = secrets.token_bytes(16)
        existing = yield self.verifications.open(key.key_id, key.name, number_ref, fresh,
                                                 self._now_ms(), self.keep_ms)
        ref = existing or fresh
        try:
            yield self.verifier.send(SendRequest(
                ref, codes.seal(self.secrets.backend, to.encode()), to, CodeKind.BACKEND,
                resend=existing is not None, locale=locale, app_hash=app_hash, digits=digits,
                keep_ms=self.keep_ms, attempts=True))
        except BaseException:
            yield self.authenticator.refund(key)
            if existing is None:
                yield self.verifications.discard(key.key_id, number_ref, fresh)
            raise
        verification = yield self.fetch(key, _id(ref))
        return verification

    # -- read --------------------------------------------------------------------

    @inlineCallbacks
    def _fields(self, key: ApiKeyRecord, verification_id: str):
        """The verification's fields, once it is this key's; else L{UnknownVerification}."""
        if not is_verification_id(verification_id):
            raise UnknownVerification()
        fields = yield self.store.session(_ref(verification_id))
        owner = fields.get("o")
        if owner is None or owner.decode() != key.key_id:
            raise UnknownVerification()
        return fields

    @inlineCallbacks
    def _status(self, key: ApiKeyRecord, ref: bytes, fields: dict):
        """The status the fields say, persisting an expiry seen first here.

        An approval without its proof (Redis written by someone else) is none.
        """
        if "v" in fields:
            number = _opened(self.secrets.backend, fields.get("n", b""))
            if number is None or not codes.proves_verified(
                    self.secrets.verified, ref, fields, number, self.secrets.number):
                self.log.warn("A verification's approval fails its proof: not written by "
                              "msisdnd (someone wrote to Redis?)")
                fields = {k: v for k, v in fields.items() if k not in ("v", "vm")}
        final = status_of(fields)
        if final is not None:
            return final
        expires = fields.get("e") or fields.get("x")
        if expires is not None and int(expires) < self._now_ms():
            status = yield self._finish(key, ref, fields, Status.EXPIRED)
            return status
        return Status.PENDING

    @inlineCallbacks
    def _finish(self, key: ApiKeyRecord, ref: bytes, fields: dict, status: Status):
        now = self._now_ms()
        final = yield self.verifications.finish(ref, status.value, now, self.keep_ms)
        if final is None:
            raise UnknownVerification()
        fields["st"] = final.encode()
        fields["u"] = str(now).encode()
        return Status(final)

    @inlineCallbacks
    def _checkFailed(self, ref: bytes, fields: dict):
        now = self._now_ms()
        status = yield self.verifications.checkFailed(ref, self.settings.max_tries, now,
                                                      self.keep_ms)
        if status is None:
            raise UnknownVerification()
        if status != Status.PENDING.value:
            fields["st"] = status.encode()
            fields["u"] = str(now).encode()
        return Status(status)

    @inlineCallbacks
    def fetch(self, key: ApiKeyRecord, verification_id: str):
        """Fires with the verification as the API shows it."""
        fields = yield self._fields(key, verification_id)
        status = yield self._status(key, _ref(verification_id), fields)
        return self._view(verification_id, fields, status)

    def _view(self, verification_id: str, fields: dict, status: Status) -> dict:
        return verification_view(verification_id, fields, status, self.secrets.backend)

    @inlineCallbacks
    def sweepExpired(self, batch: int = 100, most: int = 10_000):
        """End the verifications whose codes expired while nobody looked
        (their C{verification.expired} events), C{batch} at a time until a
        batch is not full (C{most} in all); fires with how many."""
        ended = 0
        while ended < most:
            count = yield self.verifications.sweepExpired(self._now_ms(), self.keep_ms, batch)
            ended += count
            if count < batch:
                break
        return ended

    # -- check and cancel -----------------------------------------------------

    @inlineCallbacks
    def _resolve(self, key: ApiKeyRecord, verification_id: str | None, to: str | None):
        if verification_id is not None:
            return verification_id
        ref = yield self.verifications.pending(
            key.key_id, codes.number_ref(self.secrets.number, to))
        if ref is None:
            raise UnknownVerification()
        return _id(ref)

    @inlineCallbacks
    def check(self, key: ApiKeyRecord, code: str, *, verification_id: str | None = None,
              to: str | None = None):
        """Check C{code} against the key's verification, by id or by the
        number's pending one; fires with a L{CheckResult}."""
        verification_id = yield self._resolve(key, verification_id, to)
        fields = yield self._fields(key, verification_id)  # checks the id's form first
        ref = _ref(verification_id)
        max_tries = self.settings.max_tries
        tries_left = max(max_tries - int(fields.get("t", 0)), 0)
        status = yield self._status(key, ref, fields)
        if to is not None and status is not Status.PENDING:
            raise UnknownVerification()  # by number, only a pending one is looked for
        if status is not Status.PENDING:
            return CheckResult(verification_id, status, False, tries_left)
        try:
            yield self.verifier.check(ref, code, self.keep_ms,
                                      lambda sealed: _opened(self.secrets.backend, sealed),
                                      client=f"key:{key.key_id}")
        except WrongCode as wrong:
            # The last try ends the verification only if no other check is
            # still comparing: an earlier try may hold the right code.
            status = yield self._checkFailed(ref, fields)
            return CheckResult(verification_id, status, False, wrong.tries_left)
        except CodeGone as gone:
            reason = gone.args[0] if gone.args else ""
            if reason == "replaced":  # a resend won the race
                yield self._checkFailed(ref, fields)
                return CheckResult(verification_id, Status.PENDING, False, tries_left)
            if reason == "exhausted":
                # Another check took the last try: it ends the verification (or
                # approves it), not this one, which only reports.
                return CheckResult(verification_id, Status.MAX_ATTEMPTS_REACHED, False, 0)
            status = yield self._finish(key, ref, fields, Status.EXPIRED)
            return CheckResult(verification_id, status, False, tries_left)
        except NoSession:
            raise UnknownVerification() from None
        return CheckResult(verification_id, Status.APPROVED, True, tries_left)

    @inlineCallbacks
    def cancel(self, key: ApiKeyRecord, verification_id: str):
        """End a pending verification (its code stops working at once); fires
        with the verification, whose status an ended one keeps."""
        fields = yield self._fields(key, verification_id)
        ref = _ref(verification_id)
        status = yield self._status(key, ref, fields)
        if status is Status.PENDING:
            status = yield self._finish(key, ref, fields, Status.CANCELED)
        return self._view(verification_id, fields, status)


def _opened(key: bytes, sealed: bytes) -> str | None:
    plain = codes.unseal(key, sealed)
    return plain.decode() if plain is not None else None
