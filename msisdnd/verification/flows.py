"""Verification: the state machine of one session, from register to certificate.

A session goes C{registered -> code sent -> verified}, and may be dropped at
any point.  L{Verifier} knows verification and nothing of HTTP or SMPP: it
talks to a L{SessionStore} and an L{ISMSSender}, and raises the errors below,
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

import dataclasses
import enum
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from msisdnd import hawk
from msisdnd.masking import mask_number
from msisdnd.sms.interfaces import (
    UNDELIVERED,
    DeliveryReceipt,
    IMOReceiver,
    IReceiptReceiver,
    ISMSSender,
    MOMessage,
    OutboundSMS,
    SendError,
)
from msisdnd.sms.message_ids import normalize_message_id
from msisdnd.state.limits import Limit, Limits, Refused
from msisdnd.state.sessions import (
    CheckOutcome,
    Nonce,
    NonceReplayed,
    SendOutcome,
    SessionStore,
    StoreUnavailable,
)
from msisdnd.state.verifications import VerificationStore
from msisdnd.verification import codes, networks
from msisdnd.verification.authentication import HawkAuthenticator
from msisdnd.verification.errors import (
    AlreadyVerified,
    CodeGone,
    NoCodeSent,
    NoSession,
    NotVerified,
    ResendTooSoon,
    SecondNumber,
    SendFailed,
    TooManySends,
    VerificationError,
    WrongCode,
)
from msisdnd.verification.settings import Secrets, VerificationSettings


class CodeKind(enum.Enum):
    """What a code is and how it went out; the value is what Redis records keep."""

    SHORT_MT = "s"  # a short code in a localized text (MT, the client chose short)
    LONG_MT = "l"  # a long code, bare (MT)
    MO_REPLY = "m"  # a long code, bare, answering a silent SMS through its carrier
    BACKEND = "b"  # a short code in a localized text, for a backend verification

    @property
    def short(self) -> bool:
        return self in (CodeKind.SHORT_MT, CodeKind.BACKEND)

    @property
    def method(self) -> str:
        """The verification method, as metrics and events name it."""
        return {CodeKind.MO_REPLY: "sms/momt", CodeKind.BACKEND: "backend/sms"}.get(
            self, "sms/mt")

    @property
    def session_method(self) -> str:
        """How the session hash records the method (field C{m})."""
        return {CodeKind.MO_REPLY: "o", CodeKind.BACKEND: "b"}.get(self, "t")


#: The session hash's method letters, read back.
_METHODS = {kind.session_method: kind.method for kind in CodeKind}


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One code to send: for which session, to whom, what kind, and how to
    word and route it.

    @ivar ref: the stored key of the session (or backend verification).
    @ivar sealed_number: C{msisdn} sealed as the session keeps it.
    @ivar resend: a second send asked for on purpose (C{/sms/resend_code},
        a second backend create): the session's method and network stay as
        they were, and a request within the cooldown is refused (a first
        send within it is a client retrying: no second SMS).
    @ivar mo: the carrier whose MO number the device texted, for an MO reply.
    @ivar client: the client's address, for the per-address limits (none for
        MO and backend requests).
    @ivar digits: the short code's length (C{None}: the configured one).
    @ivar keep_ms: how long the session lives unverified (C{None}: the
        configured unverified-session lifetime).
    @ivar attempts: record each send attempt and its receipts (backend).
    @ivar nonce: the device request's Hawk nonce, claimed by the first
        script (a replay changes nothing: L{hawk.ReplayedNonce}).
    """

    ref: bytes
    sealed_number: bytes
    msisdn: str
    kind: CodeKind
    resend: bool = False
    mcc: str | None = None
    mnc: str | None = None
    locale: str = ""
    app_hash: str | None = None
    client: str | None = None
    mo: "MOVerifier | None" = None
    digits: int | None = None
    keep_ms: int | None = None
    attempts: bool = False
    nonce: Nonce | None = None

    @property
    def network(self) -> str:
        return f"{self.mcc}{self.mnc}" if self.mcc and self.mnc else ""


@dataclass(frozen=True, slots=True)
class _SentRecord:
    """What a receipt needs to act on its code, kept while the code lives.

    The number is sealed under the server's transit key (it must be read
    back without the client); packed as bytes, not JSON, since every code in
    flight holds one per message part.
    """

    ref: bytes
    code_mac: bytes  # the code this message carried: only its failure counts
    kind: CodeKind
    digits: int  # the length of a short code (0 for long ones)
    attempt: int  # the backend verification's send attempt (0: not one)
    locale: str
    app_hash: str
    sealed_number: bytes

    _HEAD = struct.Struct("16s16scBH")

    def pack(self) -> bytes:
        locale, app_hash = self.locale.encode(), self.app_hash.encode()
        return (self._HEAD.pack(self.ref, self.code_mac, self.kind.value.encode(), self.digits,
                                self.attempt)
                + bytes((len(locale),)) + locale + bytes((len(app_hash),)) + app_hash
                + self.sealed_number)

    @classmethod
    def unpack(cls, data: bytes) -> "_SentRecord":
        ref, code_mac, kind, digits, attempt = cls._HEAD.unpack_from(data)
        pos = cls._HEAD.size
        locale = data[pos + 1:pos + 1 + data[pos]]
        pos += 1 + data[pos]
        app_hash = data[pos + 1:pos + 1 + data[pos]]
        pos += 1 + data[pos]
        return cls(ref, code_mac, CodeKind(kind.decode()), digits, attempt, locale.decode(),
                   app_hash.decode(), data[pos:])


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


def _deleted(deleted: int) -> None:
    if not deleted:
        raise NoSession()


def _replayRefused(failure):
    """A step's first script found its Hawk nonce claimed: the request is a replay."""
    failure.trap(NonceReplayed)
    raise hawk.ReplayedNonce("Replayed nonce.")


@implementer(IMOReceiver, IReceiptReceiver)
class Verifier:
    """Every verification step, over the store, the limits and the SMS sender.

    @param sender: the L{ISMSSender}, or C{None} when it does not exist yet
        (the carriers take this verifier as their MO and receipt receiver
        before their router exists): L{wire} gives it then.
    @param texts: builds the SMS texts: C{short_code_text(code, locale,
        app_hash)} and C{long_code_text(code)}.
    @param mo_verifiers: the carriers' MO numbers (digits, no C{+}).
    @param limits: the abuse limits, or C{None} for none.
    @param require_payload_hash: see L{HawkAuthenticator}.
    """

    log = Logger()

    def __init__(
        self,
        store: SessionStore,
        sender: ISMSSender | None,
        settings: VerificationSettings,
        secrets: Secrets,
        texts: object,
        clock: IReactorTime,
        mo_verifiers: tuple[MOVerifier, ...] = (),
        limits: Limits | None = None,
        require_payload_hash: bool = True,
    ):
        self.store = store
        self.sender = sender
        self.settings = settings
        self.secrets = secrets
        self.texts = texts
        self.clock = clock
        self.limits = limits
        self.hawk = HawkAuthenticator(store, secrets.session, settings.hawk_skew, clock,
                                      require_payload_hash)
        self.verifications = VerificationStore(store)
        self.useMOVerifiers(mo_verifiers)
        self.mo_handled = 0
        self.mo_dropped = 0
        #: Sends whose client named an MCC not of the number's region.
        self.mcc_mismatches = 0
        #: (method, outcome) -> count: outcomes are started, succeeded, failed.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        #: Delivery receipts by state (DELIVRD, UNDELIV...).
        self.receipt_states: Counter[str] = Counter()

    def useMOVerifiers(self, mo_verifiers: Sequence[MOVerifier]) -> None:
        """Match MO against C{mo_verifiers} from now on (a reload changed the carriers)."""
        self._mo_verifiers = {(v.carrier, v.number.lstrip("+")): v for v in mo_verifiers}

    def wire(self, sender: ISMSSender) -> None:
        """Give the verifier the SMS sender built after it."""
        self.sender = sender

    def _ref(self, hawk_id: str) -> bytes:
        return codes.session_ref(self.secrets.session, hawk_id)

    def now(self) -> float:
        return self.clock.seconds()

    def storageUp(self) -> Deferred:
        """Fires with C{True} when Redis answers within its timeout."""
        return self.store.ping().addCallbacks(lambda _: True, lambda _: False)

    # -- register / Hawk -----------------------------------------------------

    def register(self, client: str | None = None) -> Deferred:
        """Create a session; fires with the token (64 hex) the client keeps.

        @param client: the client's address, whose registrations the abuse
            limits count: one is spent in the script that creates the
            session, and none is created when the client's buckets are empty
            (L{Refused}).
        """
        token = hawk.new_session_token()
        credentials = hawk.derive_session(token)
        admission = (self.limits, client) if client is not None and self.limits else None

        def created(_: object) -> str:
            self.hawk.remember(credentials.id, credentials.key)
            return token.hex()

        return self.store.createSession(
            self._ref(credentials.id), bytes.fromhex(credentials.key),
            _ms(self.settings.unverified_session_ttl), admission).addCallback(created)

    def authenticate(self, authorization: str | None, *, method: str, url: str, content: bytes,
                     content_type: str) -> Deferred:
        """Fires with the
        L{Authenticated<msisdnd.verification.authentication.Authenticated>}
        request (its Hawk id and nonce) whose Hawk header checks out (see
        L{HawkAuthenticator.authenticate}); fails with a L{hawk.HawkError}.

        The nonce is the request's step's to claim: every device step below
        takes it as C{nonce} and claims it in its first script, so a replay
        fails with L{hawk.ReplayedNonce} having changed nothing."""
        return self.hawk.authenticate(authorization, method=method, url=url, content=content,
                                      content_type=content_type)

    def unregister(self, hawk_id: str, nonce: Nonce | None = None) -> Deferred:
        """Drop the session and everything in it (a verified one's end is an event).

        Fails with L{NoSession} when there was no such session (a key cached
        here may outlive it)."""
        self.hawk.forget(hawk_id)
        ref = self._ref(hawk_id)
        if self.store.events_stream:
            return self._unregisterWithEvent(hawk_id, ref, nonce)
        return self.store.deleteSession(ref, b"", _ms(self.now()), nonce).addCallbacks(
            _deleted, _replayRefused)

    @inlineCallbacks
    def _unregisterWithEvent(self, hawk_id: str, ref: bytes, nonce: Nonce | None):
        fields = yield self.store.session(ref, nonce).addErrback(_replayRefused)
        if not fields:
            raise NoSession()
        msisdn = codes.open_number(hawk_id, fields["n"]) if "v" in fields else None
        sealed = self._sealForEvents(msisdn) if msisdn else b""
        yield self.store.deleteSession(ref, sealed, _ms(self.now()))

    def _sealForEvents(self, msisdn: str) -> bytes:
        return codes.seal(self.secrets.events, msisdn.encode())

    # -- sending codes -------------------------------------------------------

    def _newCode(self, kind: CodeKind, digits: int | None = None) -> str:
        settings = self.settings
        return (codes.short_code(digits or settings.short_code_digits) if kind.short
                else codes.long_code(settings.long_code_hex))

    def _text(self, kind: CodeKind, code: str, locale: str, app_hash: str | None) -> str:
        if kind.short:
            return self.texts.short_code_text(code, locale, app_hash)
        return self.texts.long_code_text(code)

    @inlineCallbacks
    def send(self, request: SendRequest):
        """Store a new code for the request's session and send it.

        Fires with C{True} once the SMSC accepted it, or C{False} when a
        first send came again within the cooldown (no second SMS).  Any
        failure before the SMSC accepted it leaves the session as it was.
        """
        settings, limits, msisdn = self.settings, self.limits, request.msisdn
        if limits is not None:
            try:
                limits.checkNumber(msisdn)
            except Refused as refusal:
                self._refused(msisdn, refusal)
                raise
        ref = request.ref
        number_ref = codes.number_ref(self.secrets.number, msisdn)
        code = self._newCode(request.kind, request.digits)
        mac = codes.code_mac(self.secrets.code, ref, code)
        try:
            start = yield self.store.startSend(
                ref, number_ref=number_ref, sealed_number=request.sealed_number, code_mac=mac,
                now_ms=_ms(self.now()), code_ttl_ms=_ms(settings.code_ttl),
                cooldown_ms=_ms(settings.resend_cooldown), max_sends=settings.max_sends,
                session_ttl_ms=request.keep_ms or _ms(settings.unverified_session_ttl),
                method="" if request.resend else request.kind.session_method,
                network=request.network, max_tries=settings.max_tries, nonce=request.nonce,
                limit_check=limits.sendCheck(msisdn, request.client, request.mcc, request.mnc,
                                             number_ref) if limits is not None else None,
            ).addErrback(_replayRefused)
        except Refused as refusal:
            self._refused(msisdn, refusal)
            raise
        outcome = start.outcome
        if outcome is SendOutcome.NO_SESSION:
            raise NoSession()
        if outcome is SendOutcome.VERIFIED:
            raise AlreadyVerified()
        if outcome is SendOutcome.OTHER_NUMBER:
            raise SecondNumber()
        if outcome is SendOutcome.COOLDOWN:
            if request.resend:
                raise ResendTooSoon(start.wait_ms / 1000)
            return False
        if outcome is SendOutcome.CAPPED:
            raise TooManySends()
        # The limits were checked and spent with the session's send (one
        # script).  From here on, any failure before the SMSC accepted the SMS
        # puts the session back as it was: the code the user already had
        # stays valid, and the send neither counts nor starts a cooldown.
        try:
            mo = request.mo
            sms = OutboundSMS(destination=msisdn,
                              text=self._text(request.kind, code, request.locale, request.app_hash),
                              validity=settings.code_ttl, sender=mo.sender if mo else None,
                              mcc=request.mcc, mnc=request.mnc,
                              carrier=mo.carrier if mo else None)
            result = yield self.sender.send(sms, settings.send_timeout)
        except BaseException as e:
            yield self._abort(ref, mac, start)
            if isinstance(e, SendError):
                self.log.warn("Code to {to} not sent: {why}", to=mask_number(msisdn), why=str(e))
                raise SendFailed(str(e)) from None
            raise
        self.outcomes[(request.kind.method, "started")] += 1
        yield self._recordSent(result, _SentRecord(
            ref, mac, request.kind, len(code) if request.kind.short else 0,
            1 if request.attempts else 0, request.locale, request.app_hash or "",
            codes.seal(self.secrets.transit, msisdn.encode())))
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
    def _recordSent(self, result, record: _SentRecord):
        """Remember a sent code's message ids, so its receipts can act on it;
        a backend verification records the attempt first (C{record.attempt}
        nonzero asks for it, and is replaced by the attempt's number).

        The SMS is already out: a failure here is logged, never raised.
        """
        try:
            if record.attempt:
                attempt = yield self.verifications.attempt(record.ref, _ms(self.now()),
                                                           result.carrier)
                record = dataclasses.replace(record, attempt=attempt)
            ids = {normalize_message_id(i) for i in result.message_ids if i}
            if not ids:
                return
            packed = record.pack()
            early = yield self.store.recordSent(result.carrier, ids, packed,
                                                _ms(self.settings.code_ttl))
            if early is not None:
                yield self._delivered(packed, early.decode(), result.carrier)
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
        ref, kind = record.ref, record.kind
        if state not in UNDELIVERED or kind is CodeKind.MO_REPLY:
            yield self.store.setDelivery(ref, state, record.attempt, _ms(self.now()))
            return
        if record.attempt:
            yield self.store.setDelivery(ref, state, record.attempt, _ms(self.now()),
                                         undelivered=True)
        plain = codes.unseal(self.secrets.transit, record.sealed_number)
        if plain is None:
            return
        msisdn = plain.decode()
        code = self._newCode(kind, record.digits)
        mac = codes.code_mac(self.secrets.code, ref, code)
        if not (yield self.store.claimAutoResend(ref, record.code_mac, mac, _ms(self.now()),
                                                 _ms(self.settings.code_ttl), state)):
            return
        app_hash = record.app_hash or None
        self.log.info("Code to {to} was {state} on {carrier}: resending once",
                      to=mask_number(msisdn), state=state, carrier=carrier)
        try:
            result = yield self.sender.send(
                OutboundSMS(destination=msisdn, text=self._text(kind, code, record.locale, app_hash),
                            validity=self.settings.code_ttl, avoid=carrier),
                self.settings.send_timeout)
        except SendError as e:
            self.log.warn("Automatic resend to {to} failed: {why}", to=mask_number(msisdn),
                          why=str(e))
            if record.attempt:
                yield self.verifications.failed(ref, _ms(self.now()))
            return
        yield self._recordSent(result, dataclasses.replace(
            record, code_mac=mac, attempt=1 if record.attempt else 0))

    def sendCode(self, hawk_id: str, msisdn: str, *, mcc: str | None, mnc: str | None,
                 short: bool, locale: str, app_hash: str | None = None,
                 client: str | None = None, nonce: Nonce | None = None) -> Deferred:
        """The MT flow: store a new code for C{msisdn} and send it.

        Fires with C{True} once the SMSC accepted it, or C{False} when the
        same request came again within the cooldown (no second SMS).  The
        client's C{mcc}/C{mnc} are used only if the MCC is the number's
        region's (L{networks.network_for}); a mismatch is logged and counted.
        """
        network = networks.network_for(msisdn, mcc, mnc)
        if not network.consistent:
            self.mcc_mismatches += 1
            self.log.info("MCC {mcc} named for {to} is not its region's: not used",
                          mcc=mcc, to=mask_number(msisdn))
        mcc, mnc = network.mcc, network.mnc
        return self.send(SendRequest(
            self._ref(hawk_id), codes.seal_number(hawk_id, msisdn), msisdn,
            CodeKind.SHORT_MT if short else CodeKind.LONG_MT, mcc=mcc, mnc=mnc, locale=locale,
            app_hash=app_hash, client=client, nonce=nonce))

    @inlineCallbacks
    def resendCode(self, hawk_id: str, *, locale: str, app_hash: str | None = None,
                   client: str | None = None, nonce: Nonce | None = None):
        """A new short code for the session's number; the old one stops working."""
        fields = yield self.store.session(self._ref(hawk_id), nonce).addErrback(_replayRefused)
        if not fields:
            raise NoSession()
        sealed = fields.get("n")
        msisdn = codes.open_number(hawk_id, sealed) if sealed else None
        if msisdn is None:
            raise NoCodeSent()
        yield self.send(SendRequest(self._ref(hawk_id), sealed, msisdn, CodeKind.SHORT_MT,
                                    resend=True, locale=locale, app_hash=app_hash, client=client))

    # -- checking codes ------------------------------------------------------

    @inlineCallbacks
    def check(self, ref: bytes, code: str, verified_ttl_ms: int,
              open_number: Callable[[bytes], str | None], client: str | None = None,
              nonce: Nonce | None = None):
        """Check C{code} against the session C{ref}; fires with the verified
        number (E.164), which C{open_number} unseals from what the session keeps.

        C{client} (an address, or an API key's name) is who checks: wrong
        codes count per client and number as well as per number.  A device
        request's C{nonce} is claimed first.

        @raise NoSession: no such session.
        @raise Refused: the number is locked (for everyone, or for C{client})
            after too many wrong codes.
        @raise CodeGone: no code to check (C{args[0]}: C{no_code}, C{expired},
            C{exhausted}, C{replaced}).
        @raise WrongCode: the code does not match (C{tries_left} may be 0).
        @raise NotVerified: the sealed number does not open.
        """
        settings = self.settings
        now = self.now()
        check = yield self.store.beginCheck(
            ref, _ms(now), settings.max_tries,
            self.limits.attemptGuard(client) if self.limits is not None else None,
            nonce).addErrback(_replayRefused)
        if check.outcome is CheckOutcome.NO_SESSION:
            raise NoSession()
        if check.outcome is CheckOutcome.LOCKED:
            raise Refused(Limit.NUMBER_LOCKED, check.wait_ms / 1000)
        if check.outcome is not CheckOutcome.CHECK:
            raise CodeGone(check.outcome.value)
        method = _METHODS.get(check.method, "sms/mt")
        if not codes.same_mac(codes.code_mac(self.secrets.code, ref, code), check.code_mac):
            self.outcomes[(method, "failed")] += 1
            if self.limits is not None:
                yield self.limits.failedCheck(check.number_ref, client)
            raise WrongCode(max(settings.max_tries - check.tries, 0))
        msisdn = open_number(check.sealed_number)
        if msisdn is None:
            raise NotVerified()
        for_events = (self._sealForEvents(msisdn)
                      if self.store.events_stream and check.method != "b" else b"")
        proof = codes.verified_mac(self.secrets.verified, ref, check.number_ref, _ms(now),
                                   check.method or "t")
        network = check.network
        count = (self.limits.verifiedCount(msisdn, network[:3] or None, network[3:] or None,
                                           check.number_ref, client)
                 if self.limits is not None else None)
        if (yield self.store.markVerified(ref, check.code_mac, _ms(now), verified_ttl_ms,
                                          proof, for_events, count)) is None:
            raise CodeGone("replaced")
        self.outcomes[(method, "succeeded")] += 1
        return msisdn

    def verifyCode(self, hawk_id: str, code: str, client: str | None = None,
                   nonce: Nonce | None = None) -> Deferred:
        """Check a device session's C{code} sent from address C{client}; fires
        with the verified number (E.164)."""
        return self.check(self._ref(hawk_id), code, _ms(self.settings.verified_session_ttl),
                          lambda sealed: codes.open_number(hawk_id, sealed), client, nonce)

    def verifiedNumber(self, hawk_id: str, nonce: Nonce | None = None) -> Deferred:
        """Fires with the session's L{VerifiedNumber}; fails with L{NotVerified}."""
        ref = self._ref(hawk_id)
        return self.store.session(ref, nonce).addCallbacks(
            self._verifiedNumber, _replayRefused, (hawk_id, ref))

    def _verifiedNumber(self, fields: dict, hawk_id: str, ref: bytes) -> VerifiedNumber:
        if not fields:
            raise NoSession()
        if "v" not in fields:
            raise NotVerified()
        msisdn = codes.open_number(hawk_id, fields.get("n", b""))
        if msisdn is None:
            raise NotVerified()
        if not codes.proves_verified(self.secrets.verified, ref, fields, msisdn,
                                     self.secrets.number):
            self.log.warn("A session's verified state fails its proof: it was not written by "
                          "msisdnd (someone wrote to Redis?)")
            raise NotVerified()
        return VerifiedNumber(msisdn, int(fields["v"]) / 1000)

    # -- MO (silent SMS) -----------------------------------------------------

    def moReceived(self, message: MOMessage) -> Deferred | None:
        """A device texted us: C{... /sms/momt/verify <hawk id>} to an MO number."""
        verifier = self._mo_verifiers.get((message.carrier, message.destination.lstrip("+")))
        tokens = message.text.split()
        hawk_id = tokens[-1].lower() if tokens else ""
        if verifier is None or not hawk.is_hawk_id(hawk_id) or not message.source.startswith("+"):
            self.mo_dropped += 1
            self.log.info("MO from {source} on {carrier} ignored: not a verification request",
                          source=mask_number(message.source), carrier=message.carrier)
            return None
        d = self.send(SendRequest(self._ref(hawk_id), codes.seal_number(hawk_id, message.source),
                                  message.source, CodeKind.MO_REPLY, mo=verifier))

        def handled(sent: bool) -> None:
            self.mo_handled += 1

        def refused(failure):
            self.mo_dropped += 1
            failure.trap(VerificationError, Refused)
            self.log.info("MO from {source} dropped: {why}", source=mask_number(message.source),
                          why=type(failure.value).__name__)

        return d.addCallbacks(handled, refused)
