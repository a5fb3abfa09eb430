"""Verification: the state machine of one session, from register to certificate.

A session goes C{registered -> code sent -> verified}, and may be dropped at
any point.  L{Verifier} knows verification and nothing of HTTP or SMPP: it
talks to a L{RedisStore} and an L{ISMSSender}, and raises the errors below,
which the API layer translates.

  - register: a random token; the server keeps HMAC(id) -> Hawk key.
  - MT: the client names its number; a code is stored (as a MAC) and sent.
  - MO: the device texts our number with its Hawk id; a long code goes back
    to the number the MO came from, and the client posts it.
  - verify: a try is spent, then the code is compared in constant time.
  - sign: a verified session gets certificates for its number.
  - receipts: a code reported undelivered while still valid is replaced
    once, and the new one goes out through another carrier when there is one.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from msisdnd import hawk
from msisdnd.verification import codes
from msisdnd.state.limits import Limit, Limits, Refused
from msisdnd.masking import mask_number
from msisdnd.verification.settings import Secrets, VerificationSettings
from msisdnd.sms.interfaces import (
    DeliveryReceipt,
    IMOReceiver,
    IReceiptReceiver,
    ISMSSender,
    MOMessage,
    OutboundSMS,
    SendError,
)
from msisdnd.sms.message_ids import normalize_message_id
from msisdnd.state.sessions import CheckOutcome, RedisStore, SendOutcome, StoreUnavailable

#: Receipt states after which a code will not arrive.
UNDELIVERED = frozenset({"UNDELIV", "REJECTD", "EXPIRED"})

_METHODS = {"t": "sms/mt", "o": "sms/momt"}

#: How long, and for how many sessions, a daemon keeps Hawk keys it fetched.
KEY_CACHE_SECONDS = 60.0
KEY_CACHE_SIZE = 50_000


class VerificationError(Exception):
    """Why a verification step was refused (the API layer maps each to HTTP)."""


class UnknownSession(VerificationError):
    """No session has this Hawk id (never registered, expired, or unregistered)."""


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


@dataclass(frozen=True, slots=True)
class _SentRecord:
    """What a receipt needs to act on its code, kept while the code lives.

    The number is sealed under the server's transit key (it must be read
    back without the client); packed as bytes, not JSON, since every code in
    flight holds one per message part.
    """

    ref: bytes
    code_mac: bytes  # the code this message carried: only its failure counts
    kind: str  # "s" short MT, "l" long MT, "m" MO reply
    locale: str
    app_hash: str
    sealed_number: bytes

    def pack(self) -> bytes:
        locale, app_hash = self.locale.encode(), self.app_hash.encode()
        return (struct.pack("16s16sc", self.ref, self.code_mac, self.kind.encode())
                + bytes((len(locale),)) + locale + bytes((len(app_hash),)) + app_hash
                + self.sealed_number)

    @classmethod
    def unpack(cls, data: bytes) -> "_SentRecord":
        ref, code_mac, kind = struct.unpack_from("16s16sc", data)
        pos = 33
        locale = data[pos + 1:pos + 1 + data[pos]]
        pos += 1 + data[pos]
        app_hash = data[pos + 1:pos + 1 + data[pos]]
        pos += 1 + data[pos]
        return cls(ref, code_mac, kind.decode(), locale.decode(), app_hash.decode(), data[pos:])


@dataclass(frozen=True, slots=True)
class VerifiedNumber:
    """A verified session's number, and when it was verified (seconds)."""

    msisdn: str
    verified_at: float


@dataclass(frozen=True, slots=True)
class MOVerifier:
    """One carrier's silent-SMS settings: the number devices text, and our sender."""

    carrier: str
    number: str
    sender: str | None


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@implementer(IMOReceiver, IReceiptReceiver)
class Verifier:
    """Every verification step, over the store and the SMS sender.

    @param sender: the L{ISMSSender}; it may be set on C{sender} after
        construction, since the carriers take this verifier as their MO and
        receipt receiver before the router exists.
    @param texts: builds the SMS texts: C{short_code_text(code, locale,
        app_hash)} and C{long_code_text(code)}.
    @param mo_verifiers: the carriers' MO numbers (digits, no C{+}).
    """

    log = Logger()

    def __init__(
        self,
        store: RedisStore,
        sender: ISMSSender | None,
        settings: VerificationSettings,
        secrets: Secrets,
        texts: object,
        clock: IReactorTime,
        mo_verifiers: tuple[MOVerifier, ...] = (),
        limits: Limits | None = None,
    ):
        self.store = store
        self.sender = sender
        self.settings = settings
        self.secrets = secrets
        self.texts = texts
        self.clock = clock
        self.limits = limits
        self._mo_verifiers = {(v.carrier, v.number.lstrip("+")): v for v in mo_verifiers}
        self.mo_handled = 0
        self.mo_dropped = 0
        #: (method, outcome) -> count: outcomes are started, succeeded, failed.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self._keys: dict[str, tuple[str, float]] = {}
        #: Delivery receipts by state (DELIVRD, UNDELIV...).
        self.receipt_states: Counter[str] = Counter()

    def _ref(self, hawk_id: str) -> bytes:
        return codes.session_ref(self.secrets.session, hawk_id)

    def now(self) -> float:
        return self.clock.seconds()

    # -- register / Hawk -----------------------------------------------------

    @inlineCallbacks
    def register(self):
        """Create a session; fires with the token (64 hex) the client keeps."""
        token = hawk.new_session_token()
        credentials = hawk.derive_session(token)
        yield self.store.createSession(self._ref(credentials.id), bytes.fromhex(credentials.key),
                                       _ms(self.settings.unverified_session_ttl))
        return token.hex()

    def hawkKey(self, hawk_id: str) -> Deferred:
        """Fires with the session's Hawk key (hex, as clients use it), or C{None}.

        Keys are cached for L{KEY_CACHE_SECONDS}: a key never changes, and a
        session dropped meanwhile (on any daemon) is still refused, since every
        step after authentication reads the session itself.
        """
        now = self.clock.seconds()
        cached = self._keys.get(hawk_id)
        if cached is not None and cached[1] > now:
            return succeed(cached[0])

        def found(raw: bytes | None) -> str | None:
            if not raw:
                return None
            key = raw.hex()
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.pop(next(iter(self._keys)))
            self._keys[hawk_id] = (key, now + KEY_CACHE_SECONDS)
            return key

        return self.store.hawkKey(self._ref(hawk_id)).addCallback(found)

    def unregister(self, hawk_id: str) -> Deferred:
        """Drop the session and everything in it."""
        self._keys.pop(hawk_id, None)
        return self.store.deleteSession(self._ref(hawk_id))

    # -- sending codes -------------------------------------------------------

    @inlineCallbacks
    def _sendCode(self, hawk_id: str, msisdn: str, make_text: Callable[[str], str],
                  short: bool, *, resend: bool, mcc: str | None = None, mnc: str | None = None,
                  carrier: str | None = None, sender: str | None = None,
                  locale: str = "", app_hash: str | None = None, client: str | None = None):
        settings = self.settings
        limits = self.limits
        if limits is not None:
            try:
                limits.checkNumber(msisdn)
            except Refused as refusal:
                self._refused(msisdn, refusal)
                raise
        ref = self._ref(hawk_id)
        number_ref = codes.number_ref(self.secrets.number, msisdn)
        code = (codes.short_code(settings.short_code_digits) if short
                else codes.long_code(settings.long_code_hex))
        mac = codes.code_mac(self.secrets.code, ref, code)
        now = self.now()
        start = yield self.store.startSend(
            ref, number_ref=number_ref,
            sealed_number=codes.seal_number(hawk_id, msisdn), code_mac=mac,
            now_ms=_ms(now), code_ttl_ms=_ms(settings.code_ttl),
            cooldown_ms=_ms(settings.resend_cooldown), max_sends=settings.max_sends,
            session_ttl_ms=_ms(settings.unverified_session_ttl),
            method="" if resend else ("o" if carrier is not None else "t"),
            network=f"{mcc}{mnc}" if mcc and mnc else "", max_tries=settings.max_tries)
        outcome = start.outcome
        if outcome is SendOutcome.NO_SESSION:
            raise UnknownSession()
        if outcome is SendOutcome.OTHER_NUMBER:
            raise SecondNumber()
        if outcome is SendOutcome.COOLDOWN:
            if resend:
                raise ResendTooSoon(start.wait_ms / 1000)
            return False  # a client retrying the same request: no second SMS
        if outcome is SendOutcome.CAPPED:
            raise TooManySends()
        # From here on, any failure before the SMSC accepted the SMS puts the
        # session back as it was: the code the user already had stays valid,
        # and the send neither counts nor starts a cooldown.
        try:
            if limits is not None:
                try:
                    yield limits.checkSend(msisdn, client, mcc, mnc, number_ref)
                except Refused as refusal:
                    self._refused(msisdn, refusal)
                    raise
            sms = OutboundSMS(destination=msisdn, text=make_text(code),
                              validity=settings.code_ttl, sender=sender, mcc=mcc, mnc=mnc,
                              carrier=carrier)
            result = yield self.sender.send(sms, settings.send_timeout)
        except BaseException as e:
            yield self._abort(ref, mac, start)
            if isinstance(e, SendError):
                self.log.warn("Code to {to} not sent: {why}", to=mask_number(msisdn), why=str(e))
                raise SendFailed(str(e)) from None
            raise
        kind = "m" if carrier is not None else ("s" if short else "l")
        self.outcomes[("sms/momt" if carrier is not None else "sms/mt", "started")] += 1
        yield self._recordSent(result, ref, msisdn, kind, locale, app_hash, mac)
        return True

    @inlineCallbacks
    def _abort(self, ref: bytes, mac: bytes, start):
        try:
            yield self.store.abortSend(ref, mac, start)
        except Exception:
            self.log.failure("A send could not be undone; the session keeps its new code")

    def _refused(self, msisdn: str, refusal: Refused) -> None:
        self.log.info("Code to {to} refused by the {limit} limit", to=mask_number(msisdn),
                      limit=refusal.limit.value)

    # -- delivery receipts ---------------------------------------------------

    @inlineCallbacks
    def _recordSent(self, result, ref: bytes, msisdn: str, kind: str, locale: str,
                    app_hash: str | None, mac: bytes):
        """Remember a sent code's message ids, so its receipts can act on it.

        The SMS is already out: a failure here is logged, never raised.
        """
        record = _SentRecord(ref, mac, kind, locale, app_hash or "",
                             codes.seal(self.secrets.transit, msisdn.encode())).pack()
        ids = {normalize_message_id(i) for i in result.message_ids if i}
        if not ids:
            return
        try:
            early = yield self.store.recordSent(result.carrier, ids, record,
                                                _ms(self.settings.code_ttl))
            if early is not None:
                yield self._delivered(record, early.decode(), result.carrier)
        except StoreUnavailable as e:
            self.log.warn("Message ids not recorded: {why}", why=str(e))

    @inlineCallbacks
    def receiptReceived(self, receipt: DeliveryReceipt):
        """A carrier reported on a message: record its state; a failed code gets
        one automatic resend through another carrier."""
        self.receipt_states[receipt.state] += 1
        record = yield self.store.receiptArrived(receipt.carrier, receipt.aliases, receipt.state,
                                                 _ms(self.settings.code_ttl))
        if record is not None:
            yield self._delivered(record, receipt.state, receipt.carrier)

    @inlineCallbacks
    def _delivered(self, raw_record: bytes, state: str, carrier: str):
        record = _SentRecord.unpack(raw_record)
        ref = record.ref
        if state not in UNDELIVERED or record.kind == "m":
            yield self.store.setDelivery(ref, state)
            return
        plain = codes.unseal(self.secrets.transit, record.sealed_number)
        if plain is None:
            return
        msisdn = plain.decode()
        short = record.kind == "s"
        code = (codes.short_code(self.settings.short_code_digits) if short
                else codes.long_code(self.settings.long_code_hex))
        mac = codes.code_mac(self.secrets.code, ref, code)
        if not (yield self.store.claimAutoResend(ref, record.code_mac, mac, _ms(self.now()),
                                                 _ms(self.settings.code_ttl), state)):
            return
        text = (self.texts.short_code_text(code, record.locale, record.app_hash or None) if short
                else self.texts.long_code_text(code))
        self.log.info("Code to {to} was {state} on {carrier}: resending once",
                      to=mask_number(msisdn), state=state, carrier=carrier)
        try:
            result = yield self.sender.send(
                OutboundSMS(destination=msisdn, text=text, validity=self.settings.code_ttl,
                            avoid=carrier), self.settings.send_timeout)
        except SendError as e:
            self.log.warn("Automatic resend to {to} failed: {why}", to=mask_number(msisdn),
                          why=str(e))
            return
        yield self._recordSent(result, ref, msisdn, record.kind, record.locale,
                               record.app_hash or None, mac)

    def sendCode(self, hawk_id: str, msisdn: str, *, mcc: str | None, mnc: str | None,
                 short: bool, locale: str, app_hash: str | None = None,
                 client: str | None = None) -> Deferred:
        """The MT flow: store a new code for C{msisdn} and send it.

        Fires with C{True} once the SMSC accepted it, or C{False} when the
        same request came again within the cooldown (no second SMS).
        """
        texts = self.texts
        if short:
            make_text = lambda code: texts.short_code_text(code, locale, app_hash)  # noqa: E731
        else:
            make_text = texts.long_code_text
        return self._sendCode(hawk_id, msisdn, make_text, short, resend=False, mcc=mcc, mnc=mnc,
                              locale=locale, app_hash=app_hash, client=client)

    @inlineCallbacks
    def resendCode(self, hawk_id: str, *, locale: str, app_hash: str | None = None,
                   client: str | None = None):
        """A new code for the session's number; the old one stops working."""
        fields = yield self.store.session(self._ref(hawk_id))
        if not fields:
            raise UnknownSession()
        sealed = fields.get("n")
        msisdn = codes.open_number(hawk_id, sealed) if sealed else None
        if msisdn is None:
            raise NoCodeSent()
        texts = self.texts
        yield self._sendCode(hawk_id, msisdn,
                             lambda code: texts.short_code_text(code, locale, app_hash),
                             True, resend=True, locale=locale, app_hash=app_hash, client=client)

    # -- checking codes ------------------------------------------------------

    @inlineCallbacks
    def verifyCode(self, hawk_id: str, code: str):
        """Check C{code}; fires with the verified number (E.164)."""
        settings = self.settings
        ref = self._ref(hawk_id)
        now = self.now()
        check = yield self.store.beginCheck(
            ref, _ms(now), settings.max_tries,
            self.limits.attemptGuard() if self.limits is not None else None)
        if check.outcome is CheckOutcome.NO_SESSION:
            raise UnknownSession()
        if check.outcome is CheckOutcome.LOCKED:
            raise Refused(Limit.NUMBER_LOCKED, check.wait_ms / 1000)
        if check.outcome is not CheckOutcome.CHECK:
            raise CodeGone(check.outcome.value)
        method = _METHODS.get(check.method, "sms/mt")
        if not codes.same_mac(codes.code_mac(self.secrets.code, ref, code), check.code_mac):
            yield self.store.wrongCode(ref, check.code_mac, check.tries, settings.max_tries)
            self.outcomes[(method, "failed")] += 1
            if self.limits is not None:
                yield self.limits.failedCheck(check.number_ref)
            raise WrongCode(max(settings.max_tries - check.tries, 0))
        sealed = yield self.store.markVerified(ref, check.code_mac, _ms(now),
                                               _ms(settings.verified_session_ttl))
        if sealed is None:
            raise CodeGone("replaced")
        self.outcomes[(method, "succeeded")] += 1
        msisdn = codes.open_number(hawk_id, sealed)
        if msisdn is None:
            raise NotVerified()
        if self.limits is not None:
            network = check.network
            try:  # the number is verified: accounting must not turn that into an error
                yield self.limits.verified(msisdn, network[:3] or None, network[3:] or None,
                                           check.number_ref)
            except Exception:
                self.log.failure("The pumping guard missed a verification")
        return msisdn

    @inlineCallbacks
    def verifiedNumber(self, hawk_id: str):
        """Fires with the session's L{VerifiedNumber}; fails with L{NotVerified}."""
        fields = yield self.store.session(self._ref(hawk_id))
        if not fields:
            raise UnknownSession()
        if "v" not in fields:
            raise NotVerified()
        msisdn = codes.open_number(hawk_id, fields.get("n", b""))
        if msisdn is None:
            raise NotVerified()
        return VerifiedNumber(msisdn, int(fields["v"]) / 1000)

    # -- MO (silent SMS) -----------------------------------------------------

    def moReceived(self, message: MOMessage) -> Deferred | None:
        """A device texted us: C{... /sms/momt/verify <hawk id>} to an MO number."""
        verifier = self._mo_verifiers.get((message.carrier, message.destination.lstrip("+")))
        tokens = message.text.split()
        hawk_id = tokens[-1].lower() if tokens else ""
        if verifier is None or len(hawk_id) != 64 or not _is_hex(hawk_id) \
                or not message.source.startswith("+"):
            self.mo_dropped += 1
            self.log.info("MO from {source} on {carrier} ignored: not a verification request",
                          source=mask_number(message.source), carrier=message.carrier)
            return None
        texts = self.texts
        d = self._sendCode(hawk_id, message.source, texts.long_code_text, False, resend=False,
                           carrier=verifier.carrier, sender=verifier.sender)

        def handled(sent: bool) -> None:
            self.mo_handled += 1

        def refused(failure):
            self.mo_dropped += 1
            failure.trap(VerificationError, Refused)
            self.log.info("MO from {source} dropped: {why}", source=mask_number(message.source),
                          why=type(failure.value).__name__)

        return d.addCallbacks(handled, refused)



def _is_hex(value: str) -> bool:
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True
