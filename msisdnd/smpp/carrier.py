"""One carrier account: its queue, its binds, and the policy between them.

L{Carrier} turns an L{OutboundSMS} into C{submit_sm} parts, queues them (in
memory, bounded, short-lived by design), and hands them to whichever of its
bound sessions has room in its window, no faster than the account's
C{throughput}.  It decides what a failed submit means:

  - a throttling status (ESME_RTHROTTLED, ESME_RMSGQFUL by default) pauses
    the whole carrier, 1 s at first and longer while it repeats, and the
    part goes back to the front of the queue;
  - another temporary status puts the part back after C{throttle_pause};
  - a lost session, a response timeout or a malformed response puts it back
    at once (at-least-once: a PIN may arrive twice, never zero times);
  - any other status is final and fails the message.

Every message has a deadline; a message not wholly accepted by then is
withdrawn from the queue and its caller gets L{SendTimeoutError}.  Messages
on the carrier's own C{send_timeout} wait in send order, so one timer serves
them all; a message with a timeout of its own gets a timer of its own.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter, deque

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from msisdnd.masking import mask_number
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
from msisdnd.smpp import alphabet, codec
from msisdnd.smpp.config import CarrierConfig
from msisdnd.smpp.errors import CommandStatusError, SMPPError
from msisdnd.smpp.inbound import InboundDispatcher
from msisdnd.smpp.session import ESMESession

#: Upper bounds (seconds) of the submit-latency histogram's buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

class _Message:
    """One OutboundSMS on its way: its parts, their ids, its deadline."""

    __slots__ = ("sms", "deferred", "message_ids", "remaining", "deadline", "expires", "done",
                 "started")

    def __init__(self, sms: OutboundSMS, parts: int):
        self.sms = sms
        self.deferred: Deferred = Deferred()
        self.message_ids: list[str] = [""] * parts
        self.remaining = parts
        self.deadline: IDelayedCall | None = None
        self.expires = 0.0
        self.started = 0.0
        self.done = False


class _Part:
    __slots__ = ("message", "index", "body")

    def __init__(self, message: _Message, index: int, body: bytes):
        self.message = message
        self.index = index
        self.body = body


class Carrier:
    """A carrier account shared by all its binds in this daemon.

    @ivar config: the L{CarrierConfig}.
    @ivar sent: parts the SMSC accepted.
    @ivar errors: command_status names counted, plus C{"timeout"},
        C{"session_lost"} and C{"malformed"}.
    @ivar requeued: parts put back in the queue.
    @ivar throttled: how often the carrier paused for throttling.
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
    ):
        self.config = config
        self.name = config.name
        self.clock = clock
        self.send_timeout = send_timeout
        self.dispatcher = InboundDispatcher(config.name, config.region, mo_receiver,
                                            receipt_receiver, clock)
        self.inbound = self.dispatcher.pduReceived
        self.sent = 0
        self.requeued = 0
        self.throttled = 0
        self.errors: Counter[str] = Counter()
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.accepting = True
        #: Set by the daily-cap breaker (L{msisdnd.state.daily_cap}): not chosen while set.
        self.tripped = False
        self._queue: deque[_Part] = deque()
        self._sessions: list[ESMESession] = []
        self._next_session = 0
        self._wakeup: IDelayedCall | None = None
        self._paused_until = 0.0
        self._pause = config.throttle_pause
        self._throttle_streak = False
        self._rate = config.throughput
        self._capacity = max(1.0, config.throughput / 10)
        self._tokens = self._capacity
        self._refilled_at = clock.seconds()
        self._templates: dict[str | None, codec.SubmitTemplate] = {
            None: self._template(config.mt_source_addr, *config.source_ton_npi)}
        self._idle_waiters: list[Deferred] = []
        self._deadlines: deque[_Message] = deque()
        self._deadline_timer: IDelayedCall | None = None
        self._reference = random.randrange(256)  # UDH concatenation reference, per message

    # -- what the router and operators read ----------------------------------

    @property
    def available(self) -> bool:
        """At least one transmitting session is bound, the carrier takes sends,
        and no breaker has tripped it."""
        return self.accepting and not self.tripped and bool(self._sessions)

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
        if not self.accepting:
            return fail(NoRouteError(f"{self.name} is shutting down"))
        try:
            bodies = self._encode(sms)
        except ValueError as e:
            return fail(RejectedError(codec.ESME_RINVMSGLEN, f"unencodable: {e}", self.name))
        if len(self._queue) + len(bodies) > self.config.queue_size:
            self.errors["queue_full"] += 1
            raise QueueFullError(f"{self.name}: the queue is full")
        message = _Message(sms, len(bodies))
        message.started = now = self.clock.seconds()
        if timeout is None or timeout == self.send_timeout:
            message.expires = now + self.send_timeout
            self._deadlines.append(message)
            if self._deadline_timer is None:
                self._deadline_timer = self.clock.callLater(self.send_timeout, self._expireDue)
        else:
            message.deadline = self.clock.callLater(timeout, self._expire, message)
        waiting = bool(self._queue)
        self._queue.extend(_Part(message, i, body) for i, body in enumerate(bodies))
        if not waiting:
            # A queue that already held parts is waiting on a response, a
            # timer or a bind, each of which pumps it: no need to look now.
            self._pump()
        return message.deferred

    def _template(self, source: str, ton: int, npi: int) -> codec.SubmitTemplate:
        return codec.SubmitTemplate(
            source_addr=source, source_addr_ton=ton, source_addr_npi=npi,
            dest_addr_ton=1, dest_addr_npi=1,
            registered_delivery=self.config.registered_delivery)

    def _templateFor(self, sender: str | None) -> codec.SubmitTemplate:
        template = self._templates.get(sender)
        if template is None:
            source = sender.lstrip("+")
            template = self._template(source, *((1, 1) if source.isdigit() else (5, 0)))
            if len(self._templates) < 64:
                self._templates[sender] = template
        return template

    def _encode(self, sms: OutboundSMS) -> list[bytes]:
        self._reference = reference = (self._reference + 1) & 0xFF
        encoded = alphabet.encode_text(sms.text, self.config.alphabet, reference)
        template = self._templateFor(sms.sender)
        destination = sms.destination.lstrip("+")
        validity = codec.relative_validity(sms.validity) if sms.validity else ""
        esm_class, data_coding = encoded.esm_class, encoded.data_coding
        return [
            template.body(destination, part, esm_class=esm_class, data_coding=data_coding,
                          validity_period=validity)
            for part in encoded.parts
        ]

    def _pump(self) -> None:
        queue = self._queue
        if not queue:
            self._notifyIdle()
            return
        now = self.clock.seconds()
        if now < self._paused_until:
            self._wakeAt(self._paused_until)
            return
        rate = self._rate
        accepted, failed = self._accepted, self._failed
        sessions = self._sessions
        count = len(sessions)
        start = self._next_session
        self._next_session = start + 1
        for offset in range(count):
            session = sessions[(start + offset) % count]
            # Fill this session's window, then move on to the next session.
            while queue and session.can_submit:
                part = queue[0]
                if part.message.done:
                    queue.popleft()
                    continue
                if rate:
                    tokens = min(self._capacity, self._tokens + (now - self._refilled_at) * rate)
                    self._refilled_at = now
                    if tokens < 1.0:
                        self._tokens = tokens
                        self._wakeAt(now + (1.0 - tokens) / rate)
                        return
                    self._tokens = tokens - 1.0
                queue.popleft()
                session.submitWith(part.body, accepted, failed, part)
            if not queue:
                break
        self._notifyIdle()

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

    def _accepted(self, pdu: codec.PDU, part: _Part) -> None:
        self.sent += 1
        self._throttle_streak = False
        message = part.message
        message.message_ids[part.index] = pdu.fields.get("message_id", "")
        message.remaining -= 1
        if message.remaining == 0 and not message.done:
            message.done = True
            if message.deadline is not None and message.deadline.active():
                message.deadline.cancel()
            deadlines = self._deadlines
            while deadlines and deadlines[0].done:
                deadlines.popleft()
            elapsed = self.clock.seconds() - message.started
            self.latency_counts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
            self.latency_sum += elapsed
            message.deferred.callback(SendResult(self.name, tuple(message.message_ids)))
        self._pump()

    def _failed(self, error: SMPPError, part: _Part) -> None:
        if isinstance(error, CommandStatusError):
            status = error.status
            self.errors[codec.status_name(status)] += 1
            if status in self.config.throttle_statuses:
                self._throttle()
                self._requeue(part, front=True)
            elif status in self.config.temporary_statuses:
                self.clock.callLater(self.config.throttle_pause, self._requeue, part)
            else:
                self._reject(part.message, status)
        else:
            self.errors[type(error).__name__] += 1
            self._requeue(part, front=True)
        self._pump()

    def _requeue(self, part: _Part, front: bool = False) -> None:
        if part.message.done:
            return
        self.requeued += 1
        if front:
            self._queue.appendleft(part)
        else:
            self._queue.append(part)
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
        message.done = True
        if message.deadline is not None and message.deadline.active():
            message.deadline.cancel()
        self._queue = deque(p for p in self._queue if p.message is not message)
        message.deferred.errback(error)
        self._notifyIdle()

    # -- binds -------------------------------------------------------------

    def bindUp(self, bind: object, session: ESMESession) -> None:
        if session.mode != "receiver":
            self._sessions.append(session)
            self._pump()

    def bindDown(self, bind: object, session: ESMESession) -> None:
        if session in self._sessions:
            self._sessions.remove(session)

    # -- stopping ----------------------------------------------------------

    def _notifyIdle(self) -> None:
        if self._idle_waiters and not self._queue and not self.in_flight:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                if not d.called:
                    d.callback(None)

    def drain(self, timeout: float) -> Deferred:
        """Stop taking sends; fire once the queue and windows are empty, or at C{timeout}.

        Messages still queued at the timeout fail with L{SendTimeoutError}.
        """
        self.accepting = False
        d = Deferred()
        self._idle_waiters.append(d)
        self._notifyIdle()

        def giveUp(result: object) -> None:
            self.dispatcher.stop()
            for part in list(self._queue):
                if not part.message.done:
                    self._finish(part.message, SendTimeoutError(f"{self.name} stopped"))

        return d.addTimeout(timeout, self.clock).addBoth(giveUp)

    def snapshot(self) -> dict:
        return {
            "name": self.name,
            "available": self.available,
            "queue_depth": len(self._queue),
            "in_flight": self.in_flight,
            "paused": self.paused,
            "sent": self.sent,
            "requeued": self.requeued,
            "throttled": self.throttled,
            "errors": dict(self.errors),
        }
