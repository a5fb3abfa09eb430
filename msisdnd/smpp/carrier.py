"""One carrier account: its queue, its binds, and the policy between them.

L{Carrier} turns an L{OutboundSMS} into C{submit_sm} parts, queues them (in
memory, bounded, short-lived by design), and hands them to whichever of its
bound sessions has room in its window, no faster than the account's
C{throughput}.  It decides what a failed submit means:

  - a throttling status (ESME_RTHROTTLED, ESME_RMSGQFUL by default) pauses
    the whole carrier, 1 s at first and longer while it repeats, and the
    part goes back to its place in the queue;
  - another temporary status puts the part back after C{throttle_pause};
  - a lost session, a response timeout or a malformed response puts it back
    after a short pause that doubles (at-least-once: a PIN may arrive twice,
    never zero times), but no part goes unanswered more than L{MAX_SUBMITS}
    times (the submits a status answered do not count: the SMSC did not
    take them): then its message fails;
  - an OK response is an acceptance, whatever its message_id (an id without
    its NUL, or none, is logged and counted, never resubmitted);
  - any other status is final and fails the message.

Parts go back to their place in send order (oldest message first), never
to the front.  No second sees more than C{throughput} submits from this
carrier: the cap is a sliding window over the last second, not a bucket
that starts full.  With an L{IThroughputLeases}, each submit also spends a
token of the carrier's account, shared with every carrier of every daemon
logging in to it: tokens come in leases for the current slice (see
L{msisdnd.sms.accounts}), as many as the queue holds, and those left when
the last bind drops go back.

Every message has a deadline; a message not wholly accepted by then is
withdrawn from the queue and its caller gets L{SendTimeoutError}.  Messages
on the carrier's own C{send_timeout} wait in send order, so one timer serves
them all; a message with a timeout of its own gets a timer of its own.

When its last bind drops, the carrier keeps taking sends for
C{reconnect_grace} seconds (the bind is usually back within them); then the
messages the SMSC holds no part of (a part accepted, or sent and never
answered, may be held; one refused with a status is not) are handed to
C{reroute} (the router's: the next eligible carrier), with the time they have left; without
C{reroute}, or with no time left, they fail with L{CarrierDown}.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter, deque
from typing import Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from msisdnd.logs import WarningBudget
from msisdnd.masking import mask_number
from msisdnd.sms.accounts import IThroughputLeases, Lease
from msisdnd.sms.interfaces import (
    IMOReceiver,
    IReceiptReceiver,
    NoRouteError,
    OutboundSMS,
    QueueFullError,
    RejectedError,
    SendResult,
    SendTimeoutError,
)
from msisdnd.sms.status import LATENCY_BUCKETS, CarrierReading, timestamp
from msisdnd.smpp import alphabet, codec
from msisdnd.smpp.config import CarrierConfig
from msisdnd.smpp.errors import CommandStatusError, SMPPError
from msisdnd.smpp.inbound import InboundDispatcher
from msisdnd.smpp.link import CarrierLink, LinkState
from msisdnd.smpp.session import ESMESession

#: The most times one part is submitted without an answer (its first submit included).
MAX_SUBMITS = 5
#: The pause before a part whose submit had no answer goes again (doubling).
RESUBMIT_PAUSE = 0.25
#: C{_new_result(SendResult, (carrier, message_ids))}: a L{SendResult}
#: without the Python calls of its C{__new__} or C{_make}.
_new_result = tuple.__new__


class CarrierDown(NoRouteError):
    """The carrier's binds stayed down past its reconnect grace, and the
    message (the SMSC held no part of it) had nowhere else to go."""


class _Part:
    """One submit_sm of a message after its first (the message itself);
    C{order} is its place in send order."""

    __slots__ = ("message", "index", "body", "order", "submits", "unanswered")

    def __init__(self, message: _Message, index: int, body: bytes, order: int):
        self.message = message
        self.index = index
        self.body = body
        self.order = order
        self.submits = 0
        self.unanswered = 0  # submits in doubt: no answer came (a throttle is an answer)


class _Message:
    """One OutboundSMS on its way: its parts, their ids, its deadline.

    A message is its own first part (it has a L{_Part}'s attributes, its
    C{message} is itself and its C{index} 0), so that a one-part message,
    every PIN, is one object; its other parts are L{_Part}s.
    """

    __slots__ = ("index", "body", "order", "submits", "unanswered",
                 "sms", "deferred", "message_ids", "remaining", "deadline", "expires", "done",
                 "started", "submitted", "flying")

    def __init__(self, sms: OutboundSMS, parts: int, started: float, expires: float,
                 body: bytes, order: int):
        self.index = 0  # a slot, not a class attribute: read faster, twice per submit
        self.body = body
        self.order = order
        self.submits = 0
        self.unanswered = 0
        self.sms = sms
        self.deferred: Deferred = Deferred()
        # Each part's id, once accepted; a one-part message's is its result's alone.
        self.message_ids: list[str] | None = [""] * parts if parts > 1 else None
        self.remaining = parts
        self.deadline: IDelayedCall | None = None
        self.started = started
        self.expires = expires  # on the carrier's send_timeout; else 0 (deadline is its timer)
        self.done = False
        # The SMSC may hold a part (one was accepted, or went unanswered): the
        # message stays with this carrier.  A part refused with a status does not count.
        self.submitted = False
        self.flying = 0  # parts awaiting their answer

    @property
    def message(self) -> _Message:
        return self  # a property, not an attribute: no reference cycle to collect


class Carrier:
    """A carrier account shared by all its binds in this daemon.

    @ivar config: the L{CarrierConfig}.
    @ivar sent: parts the SMSC accepted.
    @ivar errors: command_status names counted, plus C{"timeout"},
        C{"session_lost"} and C{"malformed"}.
    @ivar requeued: parts put back in the queue.
    @ivar throttled: how often the carrier paused for throttling.
    @ivar link: the L{CarrierLink}: up, reconnecting or down, since when, and why.
    @ivar last_submit_at: when the SMSC last accepted a part (the clock's
        seconds), or C{None}.
    @ivar latency_counts: messages by time from L{send} to the SMSC's
        acceptance of their last part, per bucket of L{LATENCY_BUCKETS}
        (and one more for slower); C{latency_sum} their total seconds.
    """

    log = Logger()

    def __init__(
        self,
        config: CarrierConfig,
        clock: IReactorTime,
        send_timeout: float = 10.0,
        mo_receiver: IMOReceiver | None = None,
        receipt_receiver: IReceiptReceiver | None = None,
        leases: IThroughputLeases | None = None,
    ):
        self.config = config
        self.name = config.name
        self.clock = clock
        self.send_timeout = send_timeout
        self.dispatcher = InboundDispatcher(config.name, config.region, mo_receiver,
                                            receipt_receiver, clock,
                                            receipt_id_format=config.receipt_id_format,
                                            mo_charset=config.mo_charset)
        self.inbound = self.dispatcher.pduReceived
        self.sent = 0
        self.requeued = 0
        self.resubmitted = 0
        self.throttled = 0
        self.errors: Counter[str] = Counter()
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.last_submit_at: float | None = None
        self.link = CarrierLink(config.name, clock)
        self._receivers = 0
        self.accepting = True
        #: Set by the daily-cap breaker (L{msisdnd.state.daily_cap}): not chosen while set.
        self.tripped = False
        #: Set by the router: C{reroute(sms, seconds_left)} sends a message this
        #: carrier could not, elsewhere, and returns the Deferred of that send.
        self.reroute: Callable[[OutboundSMS, float], Deferred] | None = None
        #: Set by an operator (L{msisdnd.state.suspensions}): takes no new sends
        #: while set, drains what it has, keeps its binds for receipts and MO.
        self.suspended = False
        self._queue: deque[_Part | _Message] = deque()
        # Parts waiting out a pause before they go back in the queue, and their timers.
        self._later: dict[_Part | _Message, IDelayedCall] = {}
        self._sessions: list[ESMESession] = []
        self._next_session = 0
        self._wakeup: IDelayedCall | None = None
        self._paused_until = 0.0
        self._pause = config.throttle_pause
        self._throttle_streak = False
        self._rate = config.throughput
        # The throughput cap: at most _per_window submits in any _window seconds.
        # _cap holds [when, how many] of the submits of the last _window
        # seconds, oldest first (one entry per pump), and _capped their sum.
        self._window = max(1.0, 1.0 / config.throughput) if config.throughput else 1.0
        self._per_window = max(1, int(config.throughput * self._window))
        self._cap: deque[list] = deque()
        self._capped = 0
        # The account's shared tokens: those of the last lease, good until _tokens_until.
        self._leases = leases if config.throughput else None
        self.account = config.account()
        self._lease: Lease | None = None
        self._tokens = 0
        self._tokens_until = 0.0
        self._leasing = False
        self._pump_on_lease = False
        #: Binds waiting for a permit of the account (see L{permitWaiting}).
        self._unpermitted: set[object] = set()
        self._order = 0
        self._down_since: float | None = None
        self._grace_timer: IDelayedCall | None = None
        self._warnings = WarningBudget(self.log)
        self._mt_template = self._template(config.mt_source_addr, *config.source_ton_npi)
        # Each sender's template but the carrier's own (_mt_template), up to 64.
        self._templates: dict[str, codec.SubmitTemplate] = {}
        # What the carrier's options change in each message, chosen once:
        # GSM text's data_coding (0 stays 0 unless data_coding = 1; UCS-2 and
        # latin-1 keep theirs), and how validity_period is written.
        self._gsm_data_coding = config.data_coding
        self._alphabet = config.alphabet
        self._validity = (self._absoluteValidity if config.validity_format == "absolute"
                          else codec.relative_validity)
        self._idle_waiters: list[Deferred] = []
        self._deadlines: deque[_Message] = deque()
        self._deadline_timer: IDelayedCall | None = None
        self._reference = random.randrange(256)  # UDH concatenation reference, per message

    # -- what the router and operators read ----------------------------------

    @property
    def bound(self) -> bool:
        """At least one transmitting session is bound."""
        return bool(self._sessions)

    @property
    def reconnecting(self) -> bool:
        """Every bind dropped less than C{reconnect_grace} seconds ago."""
        return not self._sessions and self._grace_timer is not None

    @property
    def available(self) -> bool:
        """The carrier takes sends: bound (or reconnecting within its grace),
        neither tripped by a breaker nor suspended by an operator."""
        return (self.accepting and not self.tripped and not self.suspended
                and (bool(self._sessions) or self._grace_timer is not None))

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return sum(s.in_flight for s in self._sessions)

    @property
    def paused(self) -> bool:
        return self.clock.seconds() < self._paused_until

    # -- sending ---------------------------------------------------------------

    def send(self, sms: OutboundSMS, timeout: float | None = None) -> Deferred:
        """Queue C{sms}; see L{msisdnd.sms.interfaces.ISMSSender.send}.

        Unlike C{ISMSSender.send}, a queue without room for every part of
        C{sms} is refused synchronously, before anything is queued, so that
        the router can offer the message to the next carrier at once.

        @raise QueueFullError: the queue has no room for all of C{sms}'s parts
            (counted in C{errors["queue_full"]}).  Every other failure fails
            the returned Deferred.
        """
        d = self.offer(sms, timeout, anyway=True)
        if d is None:
            raise QueueFullError(f"{self.name}: the queue is full")
        return d

    def offer(self, sms: OutboundSMS, timeout: float | None = None,
              anyway: bool = False) -> Deferred | None:
        """L{send} C{sms} if this carrier takes it now: the router's one call
        per carrier it tries.

        @param anyway: whether to queue C{sms} even when the carrier is not
            L{available} (L{send}); otherwise an unavailable carrier, or one
            whose queue is full, takes nothing.
        @return: L{send}'s Deferred, or C{None}: nothing was queued, because
            the carrier is not available (unless C{anyway}) or its queue has no
            room for every part (counted in C{errors["queue_full"]} when it
            had room for one part more).
        """
        # L{available}, inline (a property is a Python call per message), and room.
        if not (anyway or self.accepting and not self.tripped and not self.suspended
                and (self._sessions or self._grace_timer is not None)
                and len(self._queue) < self.config.queue_size):
            return None
        if not self.accepting:
            return fail(NoRouteError(f"{self.name} is shutting down"))
        try:
            bodies = self._encode(sms)
        except ValueError as e:
            return fail(RejectedError(codec.ESME_RINVMSGLEN, f"unencodable: {e}", self.name))
        queue, parts = self._queue, len(bodies)
        if len(queue) + parts > self.config.queue_size:
            self.errors["queue_full"] += 1
            return None
        now = self.clock.seconds()
        idle = not queue
        order = self._order
        self._order = order + parts
        if timeout is None or timeout == self.send_timeout:
            message = _Message(sms, parts, now, now + self.send_timeout, bodies[0], order)
            self._deadlines.append(message)
            if self._deadline_timer is None:
                self._deadline_timer = self.clock.callLater(self.send_timeout, self._expireDue)
        else:
            message = _Message(sms, parts, now, 0.0, bodies[0], order)
            message.deadline = self.clock.callLater(timeout, self._expire, message)
        queue.append(message)
        if parts > 1:
            queue.extend(_Part(message, i, bodies[i], order + i) for i in range(1, parts))
        if idle:
            # A queue that already held parts is waiting on a response, a
            # timer or a bind, each of which pumps it: no need to look now.
            self._pump()
        return message.deferred

    def _template(self, source: str, ton: int, npi: int) -> codec.SubmitTemplate:
        """The template for C{source}, whose sender implies C{ton} and C{npi}:
        the carrier's C{source_ton} / C{source_npi}, where set, win."""
        config = self.config
        return codec.SubmitTemplate(
            service_type=config.service_type,
            source_addr=source,
            source_addr_ton=ton if config.source_ton is None else config.source_ton,
            source_addr_npi=npi if config.source_npi is None else config.source_npi,
            dest_addr_ton=config.dest_ton, dest_addr_npi=config.dest_npi,
            priority_flag=config.priority_flag,
            registered_delivery=config.registered_delivery)

    def _templateFor(self, sender: str) -> codec.SubmitTemplate:
        """A new template for C{sender}, which L{_templates} has not: kept there
        while it has room."""
        source = sender.lstrip("+")
        template = self._template(source, *((1, 1) if source.isdigit() else (5, 0)))
        if len(self._templates) < 64:
            self._templates[sender] = template
        return template

    def _encode(self, sms: OutboundSMS) -> list[bytes]:
        sender = sms.sender
        template = (self._mt_template if sender is None
                    else self._templates.get(sender) or self._templateFor(sender))
        destination = sms.destination.lstrip("+")
        validity = self._validity(sms.validity) if sms.validity else ""
        single = alphabet.single_part(sms.text, self._alphabet)
        if single is not None:
            data_coding, short_message = single
            return [template.body(destination, short_message, 0,
                                  data_coding or self._gsm_data_coding, validity)]
        self._reference = reference = (self._reference + 1) & 0xFF
        encoded = alphabet.encode_text(sms.text, self._alphabet, reference)
        esm_class = encoded.esm_class
        data_coding = encoded.data_coding or self._gsm_data_coding  # only GSM's 0 changes
        return [template.body(destination, part, esm_class, data_coding, validity)
                for part in encoded.parts]

    def _absoluteValidity(self, seconds: float) -> str:
        return codec.absolute_validity(seconds, self.clock.seconds())

    def _pump(self) -> None:
        queue = self._queue
        if not queue:
            self._notifyIdle()
            return
        now = self.clock.seconds()
        if now < self._paused_until:
            self._wakeAt(self._paused_until)
            return
        rate, leases = self._rate, self._leases
        allowed = self._capRoom(now) if rate else 0  # submits the cap lets go now
        sessions = self._sessions
        count = len(sessions)
        start = self._next_session
        self._next_session = start + 1
        held = capped = False  # the account's tokens, or the cap, hold the rest back
        for offset in range(count):
            session = sessions[(start + offset) % count]
            # Fill this session's window, then move on to the next session.
            room = session.room
            parts = []
            while queue and room > 0:
                part = queue.popleft()
                message = part.message if part.index else part  # a message is its own first part
                if message.done:
                    continue
                if rate:
                    if allowed <= 0:
                        queue.appendleft(part)
                        held = capped = True
                        break
                    if leases is not None:
                        queue.appendleft(part)  # a lease is asked for what the queue holds
                        if not self._token(now):
                            held = True
                            break
                        queue.popleft()
                    allowed -= 1
                part.submits += 1
                message.flying += 1
                if part.submits > 1:
                    self.resubmitted += 1
                parts.append(part)
                room -= 1
            if parts:
                if rate:
                    self._capSpent(now, len(parts))
                session.submitParts(parts)
            if held:
                if capped:
                    self._wakeAt(self._cap[0][0] + self._window)
                return
            if not queue:
                break
        self._notifyIdle()

    def _capRoom(self, now: float) -> int:
        """How many submits the throughput cap lets go at C{now}."""
        cap, window = self._cap, self._window
        while cap and now - cap[0][0] >= window:
            self._capped -= cap.popleft()[1]
        return self._per_window - self._capped

    def _capSpent(self, now: float, submits: int) -> None:
        """C{submits} went at C{now}: they count against the cap for a window."""
        cap = self._cap
        if cap and cap[-1][0] == now:
            cap[-1][1] += submits
        else:
            cap.append([now, submits])
        self._capped += submits

    def _token(self, now: float) -> bool:
        """Spend one of the account's tokens; without one, ask for a lease
        (the pump resumes when it comes, or when its empty slice ends)."""
        if self._tokens and now < self._tokens_until:
            self._tokens -= 1
            return True
        self._tokens = 0
        if self._leasing:
            return False
        self._leasing, self._pump_on_lease = True, False
        self._leases.take(self.account, len(self._queue)).addCallbacks(
            self._leased, self._leaseFailed)
        self._pump_on_lease = True  # a lease granted at once was counted above
        if self._tokens and now < self._tokens_until:
            self._tokens -= 1
            return True
        return False

    def _leased(self, lease: Lease) -> None:
        self._leasing = False
        now = self.clock.seconds()
        self._lease, self._tokens, self._tokens_until = lease, lease.tokens, now + lease.ttl
        if not lease.tokens:
            self._wakeAt(self._tokens_until)
        elif self._pump_on_lease:
            self._pump()

    def _leaseFailed(self, failure) -> None:
        self._leasing = False
        self.log.failure("{carrier}: no throughput lease", failure, carrier=self.name)
        self._wakeAt(self.clock.seconds() + 0.1)

    def _giveTokensBack(self) -> None:
        """Return the tokens still held to the account (the binds dropped)."""
        if self._tokens and self._lease is not None and self._leases is not None:
            if self.clock.seconds() < self._tokens_until:
                self._leases.giveBack(self.account, self._lease, self._tokens)
        self._tokens = 0

    def _wakeAt(self, when: float) -> None:
        wakeup = self._wakeup
        if wakeup is not None and wakeup.active():
            if wakeup.getTime() <= when:
                return
            wakeup.cancel()
        self._wakeup = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._wake)

    def _wake(self) -> None:
        self._wakeup = None
        self._pump()

    # -- outcomes ----------------------------------------------------------

    def _accepted(self, accepted: list[tuple[_Part | _Message, str, bool]], now: float) -> None:
        """The session's L{ESMESession.onAccepted}: the parts the SMSC took
        in one chunk of data, which arrived at C{now}."""
        self.sent += len(accepted)
        self.last_submit_at = now
        self._throttle_streak = False
        name, counts, waited = self.name, self.latency_counts, 0.0
        for part, message_id, terminated in accepted:
            try:
                index = part.index
                message = part.message if index else part  # a message is its own first part
                message.flying -= 1
                message.submitted = True
                if not (message_id and terminated):
                    self._oddId(message_id)
                ids = message.message_ids
                if ids is None:  # one part
                    if message.done:
                        continue
                    ids = (message_id,)
                else:
                    ids[index] = message_id
                    message.remaining -= 1
                    if message.remaining or message.done:
                        continue
                    ids = tuple(ids)
                message.done = True
                if message.deadline is not None and message.deadline.active():
                    message.deadline.cancel()
                elapsed = now - message.started
                counts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
                waited += elapsed
                message.deferred.callback(_new_result(SendResult, (name, ids)))
            except Exception:
                self.log.failure("{carrier}: an acceptance could not be told", carrier=name)
        self.latency_sum += waited
        deadlines = self._deadlines
        while deadlines and deadlines[0].done:
            deadlines.popleft()
        # The session calls _pump (onWindowFreed) once it has told the whole chunk.

    def _oddId(self, message_id: str) -> None:
        """The SMSC accepted a part with no id, or one without its NUL."""
        problem = "no message_id" if not message_id else "a message_id without its NUL"
        self.errors["id_empty" if not message_id else "id_unterminated"] += 1
        self._warnings.warn("{carrier}: the SMSC accepted a message with {problem}; "
                            "kept as {id!r}, not resubmitted (its receipt may not match)",
                            carrier=self.name, problem=problem, id=message_id)

    def _failed(self, error: SMPPError, part: _Part | _Message) -> None:
        part.message.flying -= 1
        if isinstance(error, CommandStatusError):
            status = error.status
            self.errors[codec.status_name(status)] += 1
            if status in self.config.throttle_statuses:
                self._throttle()
                self._requeue(part, pump=False)
            elif status in self.config.temporary_statuses:
                self._requeueAfter(self.config.throttle_pause, part)
            else:
                self._reject(part.message, status)
        else:
            self.errors[type(error).__name__] += 1
            part.unanswered += 1
            part.message.submitted = True
            if part.message.done:
                pass  # its message already ended (its deadline passed meanwhile)
            elif part.unanswered >= MAX_SUBMITS:
                self.errors["max_submits"] += 1
                self._finish(part.message, SendTimeoutError(
                    f"{self.name}: no answer to {part.unanswered} submits of one part"))
            else:
                pause = min(RESUBMIT_PAUSE * 2 ** (part.unanswered - 1),
                            self.config.throttle_pause_max)
                self._requeueAfter(pause, part)
        self._pump()

    def _requeueAfter(self, pause: float, part: _Part | _Message) -> None:
        self._later[part] = self.clock.callLater(pause, self._requeue, part)

    def _requeue(self, part: _Part | _Message, pump: bool = True) -> None:
        """Put C{part} back in its place in send order."""
        self._later.pop(part, None)
        if part.message.done:
            return
        self.requeued += 1
        queue = self._queue
        place = 0
        for place, queued in enumerate(queue):
            if queued.order > part.order:
                break
        else:
            place = len(queue)
        queue.insert(place, part)
        if pump:
            self._pump()

    def _throttle(self) -> None:
        now = self.clock.seconds()
        if now < self._paused_until:
            return  # the rest of the window coming back throttled: one pause
        config = self.config
        self._pause = (min(self._pause * 2, config.throttle_pause_max)
                       if self._throttle_streak else config.throttle_pause)
        self._throttle_streak = True
        self._paused_until = now + self._pause
        self.throttled += 1
        self.log.warn("{carrier}: throttled by the SMSC; pausing {pause}s",
                      carrier=self.name, pause=self._pause)

    def _reject(self, message: _Message, status: int) -> None:
        if message.done:
            return
        self._finish(message, RejectedError(status, codec.status_name(status), self.name))
        self.log.warn("{carrier}: message to {to} refused: {status}", carrier=self.name,
                      to=mask_number(message.sms.destination), status=codec.status_name(status))

    def _expireDue(self) -> None:
        """Expire the messages on C{send_timeout} whose time is up; wake for the next."""
        self._deadline_timer = None
        now = self.clock.seconds()
        deadlines = self._deadlines
        while deadlines:
            message = deadlines[0]
            if message.done:
                deadlines.popleft()
            elif message.expires > now:
                self._deadline_timer = self.clock.callLater(message.expires - now, self._expireDue)
                break
            else:
                deadlines.popleft()
                self._expire(message)

    def _expire(self, message: _Message) -> None:
        message.deadline = None
        if message.done:
            return
        self.errors["deadline"] += 1
        self._finish(message, SendTimeoutError(
            f"{self.name}: not accepted within the send deadline"))
        self.log.warn("{carrier}: message to {to} withdrawn at its deadline",
                      carrier=self.name, to=mask_number(message.sms.destination))

    def _finish(self, message: _Message, error: Exception) -> None:
        self._withdraw(message)
        message.deferred.errback(error)
        self._notifyIdle()

    def _withdraw(self, message: _Message) -> None:
        """End C{message} here: its timer cancelled, its parts out of the queue."""
        message.done = True
        if message.deadline is not None and message.deadline.active():
            message.deadline.cancel()
        self._queue = deque(p for p in self._queue if p.message is not message)
        if self._later:
            for part in [p for p in self._later if p.message is message]:
                self._later.pop(part).cancel()

    # -- binds -------------------------------------------------------------

    def bindUp(self, bind: object, session: ESMESession) -> None:
        if session.mode != "receiver":
            session.onAccepted, session.onFailed = self._accepted, self._failed
            session.onWindowFreed = self._pump
            self._sessions.append(session)
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None
            self.link.bound()
            self._pump()
        else:
            self._receivers += 1
            if not self.config.can_transmit:
                self.link.bound()

    def bindDown(self, bind: object, session: ESMESession, why: str = "session lost") -> None:
        if session in self._sessions:
            self._sessions.remove(session)
            if not self._sessions:
                self._giveTokensBack()
            if not self._sessions and self.accepting:
                self._grace_timer = self.clock.callLater(self.config.reconnect_grace,
                                                         self._graceOver)
                self.link.lost(why, self.config.reconnect_grace)
                if self._unpermitted:
                    self._permitGone()
        elif session.mode == "receiver" and self._receivers:
            self._receivers -= 1
            if not self._receivers and not self.config.can_transmit and self.accepting:
                self.link.lost(why, None)

    def holdSends(self) -> None:
        """Take sends into the queue, before any bind is up, for
        C{reconnect_grace} seconds, as if the binds had just dropped: this
        carrier replaces one a reload changed, whose binds go first."""
        if not self._sessions and self._grace_timer is None:
            self._grace_timer = self.clock.callLater(self.config.reconnect_grace,
                                                     self._graceOver)

    def bindFailed(self, bind: object, why: str) -> None:
        """A connect or bind attempt of one of the carrier's binds failed."""
        if not self.bound:
            self.link.failed(why)

    def permitWaiting(self, bind: object, waiting: bool) -> None:
        """C{bind} waits for a permit of its account (C{max_binds} are held
        elsewhere), or no longer does.  A carrier with no bound session
        whose binds wait so is down for routing at once, without its
        reconnect grace: its binds will not be back until a permit frees."""
        if waiting:
            self._unpermitted.add(bind)
            if not self._sessions:
                self._permitGone()
        else:
            self._unpermitted.discard(bind)

    @property
    def waiting_permits(self) -> int:
        """Binds waiting for a permit of the carrier's account."""
        return len(self._unpermitted)

    def _permitGone(self) -> None:
        if self._grace_timer is not None and self._grace_timer.active():
            self._grace_timer.cancel()
            self._graceOver()

    def _graceOver(self) -> None:
        """The binds stayed down: messages the SMSC holds no part of move on."""
        self._grace_timer = None
        if self._sessions:
            return
        self.link.graceOver()
        stranded = [m for m in self._waiting() if not (m.submitted or m.flying)]
        if stranded:
            self.log.warn("{carrier}: every bind still down after {grace}s; {count} messages "
                          "move to another carrier", carrier=self.name,
                          grace=self.config.reconnect_grace, count=len(stranded))
        self._moveOn(stranded, lambda: CarrierDown(f"{self.name}: every bind is down"))

    def _waiting(self) -> list[_Message]:
        """The messages not yet over that have parts queued or waiting to
        go back, in send order."""
        parts = sorted((*self._queue, *self._later), key=lambda p: p.order)
        return list(dict.fromkeys(p.message for p in parts if not p.message.done))

    def _moveOn(self, messages: list[_Message], error: Callable[[], Exception]) -> None:
        """Hand C{messages} (the SMSC holds no part of them) to C{reroute}, in
        order, with the time they have left; without it, or without time,
        each fails with an C{error()} of its own."""
        now = self.clock.seconds()
        for message in messages:
            remaining = (message.expires or (message.deadline.getTime()
                                             if message.deadline else now)) - now
            if self.reroute is None or remaining <= 0:
                self._finish(message, error())
            else:
                self._withdraw(message)
                self.reroute(message.sms, remaining).chainDeferred(message.deferred)
        self._notifyIdle()

    # -- stopping ----------------------------------------------------------

    def _notifyIdle(self) -> None:
        if self._idle_waiters and not self._queue and not self._later and not self.in_flight:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                if not d.called:
                    d.callback(None)

    def whenIdle(self, timeout: float) -> Deferred:
        """Fire once the queue and windows are empty and no part waits to go
        back (after a pause), or at C{timeout} (failing with C{TimeoutError});
        sends are still taken meanwhile."""
        d = Deferred()
        self._idle_waiters.append(d)
        self._notifyIdle()
        return d.addTimeout(timeout, self.clock)

    def drain(self, timeout: float) -> Deferred:
        """Stop taking sends; fire once the queue and windows are empty, or at C{timeout}.

        At the timeout, messages still waiting that the SMSC holds no part
        of move on (C{reroute}: on a reload, to the carriers that stay); the
        others fail with L{SendTimeoutError}.
        """
        self.accepting = False

        def giveUp(result: object) -> None:
            self._giveTokensBack()
            self.dispatcher.stop()
            waiting = self._waiting()

            def stopped() -> Exception:
                return SendTimeoutError(f"{self.name} stopped")

            self._moveOn([m for m in waiting if not (m.submitted or m.flying)], stopped)
            for message in waiting:
                if not message.done:
                    self._finish(message, stopped())
            for timer in (self._grace_timer, self._wakeup):
                if timer is not None and timer.active():
                    timer.cancel()  # a stopped carrier is neither "down" later nor woken
            self._grace_timer = self._wakeup = None

        return self.whenIdle(timeout).addBoth(giveUp)

    def reading(self, now: float) -> CarrierReading:
        """What the metrics read of this carrier at C{now}."""
        last = self.last_submit_at
        dispatcher = self.dispatcher
        return CarrierReading(
            name=self.name, up=self.link.state is LinkState.UP, suspended=self.suspended,
            waiting_permits=self.waiting_permits,
            queue_depth=self.queue_depth, queue_size=self.config.queue_size,
            outcomes={"ESME_ROK": self.sent, **self.errors},
            latency_counts=tuple(self.latency_counts), latency_sum=self.latency_sum,
            mo=dispatcher.mo_count, receipts=dispatcher.receipt_count,
            dropped=dispatcher.dropped_count,
            last_submit_age=None if last is None else now - last)

    def snapshot(self) -> dict:
        return {
            "name": self.name,
            "available": self.available,
            "suspended": self.suspended,
            "queue_depth": len(self._queue),
            "in_flight": self.in_flight,
            "paused": self.paused,
            "sent": self.sent,
            "requeued": self.requeued,
            "resubmitted": self.resubmitted,
            "reconnecting": self.reconnecting,
            "waiting_permits": self.waiting_permits,
            "throttled": self.throttled,
            "errors": dict(self.errors),
            "last_submit_at": timestamp(self.last_submit_at),
            **self.link.snapshot(),
        }
