"""One SMPP 3.4 session, ESME side.

L{ESMESession} knows one session: sequence numbers, the window of outstanding
requests with a response timer each, enquire_link on idle, binding and
unbinding.  It knows nothing of carriers, queues or retries: a request that
fails, for whatever reason, fails its Deferred and the caller decides.
"""

from __future__ import annotations

import enum
from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from msisdnd.smpp import codec
from msisdnd.smpp.errors import (
    BindRefused,
    CommandStatusError,
    MalformedResponse,
    NotBound,
    ResponseTimeout,
    SessionClosed,
    SMPPError,
)
from msisdnd.smpp.framing import PDUStream

_BIND_COMMANDS = {
    "transmitter": codec.BIND_TRANSMITTER,
    "receiver": codec.BIND_RECEIVER,
    "transceiver": codec.BIND_TRANSCEIVER,
}
_MAX_SEQUENCE = 0x7FFFFFFF
#: outbind has no response, and is only valid on a connection the SMSC
#: opened, which an ESME never accepts: it is ignored, never nacked.
_OUTBIND = codec.COMMANDS["outbind"]
_HEADER_PACK = codec.HEADER.pack
#: Where PDU traces go (L{ESMESession.enableTrace}), at debug level.
trace_log = Logger(namespace="msisdnd.smpp.trace")


class SessionState(enum.Enum):
    """The session state machine.

    CONNECTED --bind--> BINDING --bind_resp OK--> BOUND --unbind--> UNBINDING
    and any state --connection lost--> CLOSED.  A refused bind goes back to
    CONNECTED (the caller closes the connection).
    """

    CONNECTED = "connected"
    BINDING = "binding"
    BOUND = "bound"
    UNBINDING = "unbinding"
    CLOSED = "closed"


Succeeded = Callable[[codec.PDU, object], object]
Failed = Callable[[SMPPError, object], object]
#: What L{ESMESession.onAccepted} is called with: the acceptances read in one
#: chunk of data, in the order they came, as (part, message_id, whether the id
#: came with its NUL), and when that chunk arrived (the clock's seconds).
Accepted = Callable[[list[tuple[object, str, bool]], float], object]
_SUBMIT_SM = codec.SUBMIT_SM
_SUBMIT_SM_RESP = codec.SUBMIT_SM_RESP
_HEADER_UNPACK = codec.HEADER.unpack_from
_HEADER_LENGTH = codec.HEADER_LENGTH


class _Pending:
    """One request of L{ESMESession._request}'s awaiting its response: whom to tell.

    An entry of the session's in-flight map is (whom, deadline): C{whom} is
    a C{_Pending}, or for a part of L{ESMESession.submitParts} the part
    itself (told through the session's C{onAccepted} / C{onFailed}).
    """

    __slots__ = ("succeeded", "failed", "context", "command_id")

    def __init__(self, succeeded: Succeeded, failed: Failed, context: object, command_id: int):
        self.succeeded = succeeded
        self.failed = failed
        self.context = context
        self.command_id = command_id


def _commandOf(whom: object) -> int:
    """The command_id of the request an in-flight entry's C{whom} stands for."""
    return whom.command_id if type(whom) is _Pending else _SUBMIT_SM


def _fireCallback(pdu: codec.PDU, d: Deferred) -> None:
    d.callback(pdu)


def _fireErrback(error: SMPPError, d: Deferred) -> None:
    d.errback(error)


class ESMESession(PDUStream):
    """The ESME end of one SMPP session.

    Every request has its own response deadline.  One timer per session
    enforces them: requests are kept in the order they were sent, and on a
    bound session all use C{response_timeout}, so the oldest one is always
    the next to expire.  (A bind, with its own timeout, is alone in flight.)

    @ivar state: a L{SessionState}.
    @ivar mode: the bind mode once bound: C{"transmitter"}, C{"receiver"} or
        C{"transceiver"}.
    @ivar window: how many requests may be outstanding at once.
    @ivar last_enquire_link_rtt: seconds the last enquire_link took, or C{None}.
    @ivar responses: responses received to our requests (the session did work).
    @ivar onInbound: called with each C{deliver_sm} / C{data_sm} L{codec.PDU},
        after it has been answered.
    @ivar onWindowFreed: called when requests left the window (their
        responses, timeouts, C{generic_nack}s), whatever they were: an
        C{enquire_link} that held the last slot must wake whoever waits for
        room too.  Responses read in one chunk of data make one call, after
        the chunk (and after its C{onAccepted}); a timeout makes one at once.
        Not called once the connection is closed, or being closed.
    @ivar onAccepted: an L{Accepted}, told of the parts of L{submitParts}
        that the SMSC accepted (ESME_ROK): once per chunk of data, with
        every acceptance it held, in order.  A chunk's acceptances are told
        before anything else that chunk makes happen after them (a failure,
        an inbound C{deliver_sm}, the window-freed call), so that a receipt
        never overtakes its acceptance; a connection lost tells the
        acceptances read before it first.
    @ivar onFailed: called with (error, part) for a part of L{submitParts}
        that failed (the errors of L{submit}'s Deferred), at once.
    @ivar trace_label: what this session's trace lines are labelled with,
        or C{None} while it is not traced (see L{enableTrace}).
    """

    trace_label: str | None = None
    lean_command = codec.SUBMIT_SM_RESP
    onAccepted: Accepted | None = None
    onFailed: Failed | None = None
    #: PDUs written while the window-freed handler runs, written as one when it returns.
    _corked: list[bytes] | None = None
    _receiving = False
    _freed_while_receiving = False

    def __init__(
        self,
        clock: IReactorTime,
        *,
        window: int = 10,
        response_timeout: float = 10.0,
        enquire_link_interval: float = 30.0,
        onInbound: Callable[[codec.PDU], object] | None = None,
        onWindowFreed: Callable[[], object] | None = None,
    ):
        self.clock = clock
        self.window = window
        self.response_timeout = response_timeout
        self.enquire_link_interval = enquire_link_interval
        self.onInbound = onInbound
        self.onWindowFreed = onWindowFreed
        self.mode: str | None = None
        self.state = SessionState.CLOSED
        self.last_enquire_link_rtt: float | None = None
        self.responses = 0
        #: sequence -> (whom, deadline), in the order sent (see L{_Pending}).
        self._pending: dict[int, tuple[object, float]] = {}
        #: This chunk's acceptances, not yet told (L{onAccepted}).
        self._accepted: list[tuple[object, str, bool]] = []
        self._sequence = 0
        self._last_received = 0.0
        self._idle_timer: IDelayedCall | None = None
        self._expiry_timer: IDelayedCall | None = None
        self._expiry_at = 0.0  # when _expiry_timer fires (read per request: no getTime call)
        self._enquiring = False
        self._closed_waiters: list[Deferred] = []
        self._drain_waiters: list[Deferred] = []
        self._lost = False
        #: Why the connection closed (a Failure), once it has.
        self.lost_reason: Failure | None = None

    # -- tracing -----------------------------------------------------------

    def enableTrace(self, label: str) -> None:
        """Log each PDU this session sends and receives, one line each, at debug level.

        The lines (L{codec.describe}) go to L{trace_log}, labelled C{label}:
        numbers masked, of a message's text only its length and encoding.
        Tracing swaps traced methods in for C{_send}, C{submitParts}, C{send}
        and the inbound handlers of this instance only, so an untraced
        session pays nothing for it: no formatting, not even a test per PDU.
        """
        self.trace_label = label
        cls = type(self)
        send_request, submit_parts, write = cls._send, cls.submitParts, cls.send
        received, undecodable = cls.pduReceived, cls.undecodable

        def tracedRequest(command_id: int, body: bytes, timeout: float, whom: _Pending) -> None:
            send_request(self, command_id, body, timeout, whom)
            self._trace("sent", codec.describe_frame(codec.frame(command_id, self._sequence, body)))

        def tracedParts(parts: list) -> None:
            for part in parts:
                submit_parts(self, [part])
                self._trace("sent", codec.describe_frame(
                    codec.frame(_SUBMIT_SM, self._sequence, part.body)))

        def tracedWrite(data: bytes) -> None:
            self._trace("sent", codec.describe_frame(data))
            write(self, data)

        def tracedReceived(pdu: codec.PDU) -> None:
            self._trace("received", codec.describe(pdu))
            received(self, pdu)

        def tracedUndecodable(error: codec.DecodeError) -> None:
            self._trace("received", codec.describe_undecodable(error))
            undecodable(self, error)

        self._send = tracedRequest
        self.submitParts = tracedParts
        self.send = tracedWrite
        self.lean_command = None  # every frame through pduReceived, to be traced
        self.pduReceived = tracedReceived
        self.undecodable = tracedUndecodable

    def _trace(self, direction: str, line: str) -> None:
        trace_log.debug("{session} {direction} {pdu}", session=self.trace_label,
                        direction=direction, pdu=line)

    # -- connection --------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        self.state = SessionState.CONNECTED
        self._last_received = self.clock.seconds()
        self._scheduleIdleCheck(self.enquire_link_interval)

    def connectionLost(self, reason: Failure = None) -> None:
        self.state = SessionState.CLOSED
        self._lost = True
        self.lost_reason = reason
        for timer in (self._idle_timer, self._expiry_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle_timer = self._expiry_timer = None
        if self._accepted:
            self._tellAccepted()  # read before the loss: they were accepted
        pending, self._pending = self._pending, {}
        for whom, _ in pending.values():
            self._fail(whom, SessionClosed("the connection closed before the response"))
        self._fireDrained()
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            d.callback(None)

    def closeLink(self, abort: bool = False) -> None:
        """Close the connection; no new request goes out on it meanwhile.

        A link being closed reads nothing more (a flushed close stops
        reading; an aborted one drops what is written): a submit written now
        would reach the SMSC, or not, with its answer never read, and go
        again elsewhere, a duplicate.
        """
        self._submittable = False
        if abort:
            self._corked = None
        else:
            self._uncork()  # requests already registered go out before the close
        super().closeLink(abort)

    def whenClosed(self) -> Deferred:
        """A Deferred that fires once the connection has closed."""
        if self._lost:
            return succeed(None)
        d = Deferred()
        self._closed_waiters.append(d)
        return d

    # -- requests ----------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """The L{SessionState}."""
        return self._state

    @state.setter
    def state(self, value: SessionState) -> None:
        self._state = value
        self._submittable = value is SessionState.BOUND and self.mode != "receiver" \
            and not self._closing

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered (the window in use)."""
        return len(self._pending)

    @property
    def can_submit(self) -> bool:
        """Bound for sending, with room in the window."""
        return self._submittable and len(self._pending) < self.window

    @property
    def room(self) -> int:
        """How many more requests may go now: the window's free slots while
        bound for sending, else 0.  (Only a response, a timeout or the link's
        loss frees a slot: never a request sent meanwhile.)"""
        return self.window - len(self._pending) if self._submittable else 0

    def _request(self, command_id: int, body: bytes, timeout: float) -> Deferred:
        d = Deferred()
        self._send(command_id, body, timeout,
                   _Pending(_fireCallback, _fireErrback, d, command_id))
        return d

    def _send(self, command_id: int, body: bytes, timeout: float, whom: _Pending) -> None:
        seq = self._sequence + 1
        if seq > _MAX_SEQUENCE:
            seq = 1
        self._sequence = seq
        deadline = self.clock.seconds() + timeout
        self._pending[seq] = (whom, deadline)
        self._expiresAt(deadline, timeout)
        corked = self._corked
        if corked is None:
            self.transport.write(_HEADER_PACK(16 + len(body), command_id, 0, seq) + body)
        else:
            corked += (_HEADER_PACK(16 + len(body), command_id, 0, seq), body)

    def _expiresAt(self, deadline: float, timeout: float) -> None:
        """A request sent now is due at C{deadline}: the expiry timer fires by then."""
        timer = self._expiry_timer
        if timer is None:
            self._expiry_timer = self.clock.callLater(timeout, self._expireDue)
            self._expiry_at = deadline
        elif self._expiry_at > deadline:
            timer.reset(timeout)  # a bind's longer timer outlived the bind
            self._expiry_at = deadline

    def send(self, data: bytes) -> None:
        """Write one encoded PDU (after the requests corked before it, if any)."""
        if self._corked is None:
            self.transport.write(data)
        else:
            self._corked.append(data)

    def _uncork(self) -> None:
        """Write what was corked, in one piece."""
        corked, self._corked = self._corked, None
        if corked:
            self.transport.write(b"".join(corked))

    def _tellAccepted(self) -> None:
        """Tell C{onAccepted} the acceptances read and not yet told."""
        accepted, self._accepted = self._accepted, []
        try:
            self.onAccepted(accepted, self._last_received)
        except Exception:
            self.log.failure("The acceptance handler failed")

    def _fail(self, whom: object, error: SMPPError) -> None:
        if self._accepted:
            self._tellAccepted()  # those read before this failure, first
        try:
            if type(whom) is _Pending:
                whom.failed(error, whom.context)
            else:
                self.onFailed(error, whom)
        except Exception:
            self.log.failure("A request's failure handler failed")
        self._freed()

    def _freed(self) -> None:
        """Requests left the window: tell C{onAccepted} of the acceptances
        among them, then C{onWindowFreed}, after the chunk being read."""
        if self._receiving:
            self._freed_while_receiving = True
            return
        if not (self._accepted or self._refillable()):
            return
        # The submits the handlers make go out in one write: the
        # transport's per-write bookkeeping costs as much as a submit.
        outermost = self._corked is None
        if outermost:
            self._corked = []
        try:
            if self._accepted:
                self._tellAccepted()
            if self._refillable():
                try:
                    self.onWindowFreed()
                except Exception:
                    self.log.failure("The window-freed handler failed")
        finally:
            if outermost:
                self._uncork()

    def _refillable(self) -> bool:
        """Whether C{onWindowFreed} is to be told of freed slots now."""
        return (self.onWindowFreed is not None and self.state is not SessionState.CLOSED
                and not self._closing)

    def submit(self, body: bytes) -> Deferred:
        """Send one C{submit_sm} whose body L{codec.encode_submit_sm_body} made.

        @return: a Deferred that fires with the C{submit_sm_resp} L{codec.PDU}
            (its C{fields["message_id"]}), or fails with L{CommandStatusError},
            L{ResponseTimeout}, L{SessionClosed}, L{MalformedResponse} or, at
            once, L{NotBound}.
        """
        if self.state is not SessionState.BOUND:
            raise NotBound(f"session is {self.state.value}")
        return self._request(codec.SUBMIT_SM, body, self.response_timeout)

    def submitParts(self, parts: list) -> None:
        """Send one C{submit_sm} per part, in order, for the carrier's hot path:
        no Deferred, no L{codec.PDU}, one clock read and one write for all.

        Each part is an object whose C{body} is a C{submit_sm} body
        (L{codec.SubmitTemplate.body}); no more parts than L{room} allows.
        Its outcome goes to L{onAccepted} (per chunk: its id, read in place
        by L{codec.submit_sm_resp_id}'s rules, and whether it came with its
        NUL; a bare header is an empty id) or L{onFailed} (with the
        L{SMPPError} that L{submit}'s Deferred would have failed with),
        both of which must be set.

        @raise NotBound: the session is not bound for sending, or closing.
        """
        if not self._submittable:
            raise NotBound(f"session is {'closing' if self._closing else self.state.value}")
        timeout = self.response_timeout
        deadline = self.clock.seconds() + timeout
        seq, pending = self._sequence, self._pending
        corked = self._corked
        out = [] if corked is None else corked
        for part in parts:
            seq += 1
            if seq > _MAX_SEQUENCE:
                seq = 1
            pending[seq] = (part, deadline)
            body = part.body
            out.append(_HEADER_PACK(16 + len(body), _SUBMIT_SM, 0, seq))
            out.append(body)
        self._sequence = seq
        if self._expiry_timer is None or self._expiry_at > deadline:
            self._expiresAt(deadline, timeout)
        if corked is None and out:
            self.transport.write(b"".join(out))

    def bind(
        self,
        mode: str,
        *,
        system_id: str,
        password: str = "",
        system_type: str = "",
        addr_ton: int = 0,
        addr_npi: int = 0,
        address_range: str = "",
        timeout: float = 10.0,
    ) -> Deferred:
        """Bind as C{mode} (transmitter, receiver or transceiver).

        @return: a Deferred that fires with the SMSC's C{system_id} once bound,
            or fails with L{BindRefused}, L{ResponseTimeout} or L{SessionClosed}.
        """
        body = codec.encode(
            "bind_" + mode, 0,
            system_id=system_id, password=password, system_type=system_type,
            addr_ton=addr_ton, addr_npi=addr_npi, address_range=address_range,
        )[codec.HEADER_LENGTH:]
        self.state = SessionState.BINDING
        d = self._request(_BIND_COMMANDS[mode], body, timeout)

        def bound(pdu: codec.PDU) -> str:
            self.mode = mode
            self.state = SessionState.BOUND
            return pdu.fields.get("system_id", "")

        def refused(failure: Failure) -> Failure:
            if self.state is SessionState.BINDING:
                self.state = SessionState.CONNECTED
            if failure.check(CommandStatusError) and not failure.check(BindRefused):
                return Failure(BindRefused(failure.value.status, failure.value.command))
            return failure

        return d.addCallbacks(bound, refused)

    def enquireLink(self) -> Deferred:
        """Send C{enquire_link}; fires with the round-trip time in seconds."""
        started = self.clock.seconds()

        def answered(_: codec.PDU) -> float:
            rtt = self.clock.seconds() - started
            self.last_enquire_link_rtt = rtt
            return rtt

        return self._request(codec.ENQUIRE_LINK, b"", self.response_timeout).addCallback(answered)

    def unbind(self, drain_timeout: float = 5.0) -> Deferred:
        """Close the session gracefully.

        Stops taking new requests, waits up to C{drain_timeout} seconds for
        outstanding responses, sends C{unbind}, waits up to
        C{response_timeout} for C{unbind_resp}, and closes the connection.

        @return: a Deferred that fires once the connection is closed.
        """
        if self.state is SessionState.CLOSED:
            return succeed(None)
        closed = self.whenClosed()
        if self.state is not SessionState.BOUND:
            self.closeLink()
            return closed
        self.state = SessionState.UNBINDING

        def sendUnbind(_: object) -> Deferred | None:
            if self.state is SessionState.CLOSED:
                return None
            return self._request(codec.UNBIND, b"", self.response_timeout)

        def close(_: object) -> None:
            if self.transport is not None and self.state is not SessionState.CLOSED:
                self.closeLink()

        drained = self._whenDrained().addTimeout(drain_timeout, self.clock)
        drained.addBoth(sendUnbind).addBoth(close)
        return closed

    def _whenDrained(self) -> Deferred:
        if not self._pending:
            return succeed(None)
        d = Deferred()
        self._drain_waiters.append(d)
        return d

    def _fireDrained(self) -> None:
        if self._drain_waiters and not self._pending:
            waiters, self._drain_waiters = self._drain_waiters, []
            for d in waiters:
                if not d.called:  # a drain that timed out was cancelled
                    d.callback(None)

    def _expireDue(self) -> None:
        """Expire every request past its deadline; wake again for the next one."""
        self._expiry_timer = None
        now = self.clock.seconds()
        due = []
        for seq, (_, deadline) in self._pending.items():
            if deadline > now:
                self._expiry_timer = self.clock.callLater(deadline - now, self._expireDue)
                self._expiry_at = deadline
                break
            due.append(seq)
        for seq in due:
            self._expire(seq)

    def _expire(self, seq: int) -> None:
        entry = self._pending.pop(seq, None)
        if entry is None:
            return
        whom = entry[0]
        command_id = _commandOf(whom)
        name = codec.COMMAND_NAMES.get(command_id, "request")
        if command_id == codec.ENQUIRE_LINK:
            self.log.warn("No enquire_link_resp within {timeout}s: the peer is dead",
                          timeout=self.response_timeout)
            self.closeLink(abort=True)
        self._fail(whom, ResponseTimeout(f"no response to {name} seq {seq}"))
        self._fireDrained()

    # -- liveness ----------------------------------------------------------

    def _scheduleIdleCheck(self, delay: float) -> None:
        self._idle_timer = self.clock.callLater(max(delay, 0.0), self._checkIdle)

    def _checkIdle(self) -> None:
        self._idle_timer = None
        if self.state is SessionState.CLOSED:
            return
        idle = self.clock.seconds() - self._last_received
        if idle < self.enquire_link_interval:
            self._scheduleIdleCheck(self.enquire_link_interval - idle)
            return
        if self.state in (SessionState.BOUND, SessionState.BINDING) and not self._enquiring:
            self._enquiring = True

            def done(result: object) -> None:
                self._enquiring = False

            self.enquireLink().addBoth(done)
        self._scheduleIdleCheck(self.enquire_link_interval)

    # -- inbound -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self._last_received = self.clock.seconds()
        self._receiving = True
        try:
            super().dataReceived(data)
        finally:
            self._receiving = False
        if self._freed_while_receiving or self._accepted:
            self._freed_while_receiving = False
            self._freed()

    def pduReceived(self, pdu: codec.PDU) -> None:
        command_id = pdu.command_id
        if command_id & codec.RESPONSE_BIT:
            if command_id == codec.GENERIC_NACK:
                self._genericNack(pdu)
            else:
                self._response(pdu)
        elif command_id in (codec.DELIVER_SM, codec.DATA_SM):
            # deliver_sm_resp and data_sm_resp carry an empty message_id.
            if self.state is not SessionState.BOUND or self.mode == "transmitter":
                self.warn("A {command} on a session {state} as {mode}: refused",
                          command=pdu.command, state=self.state.value, mode=self.mode or "-")
                self.send(codec.frame(command_id | codec.RESPONSE_BIT, pdu.sequence, b"\0",
                                      codec.ESME_RINVBNDSTS))
                return
            self.send(codec.frame(command_id | codec.RESPONSE_BIT, pdu.sequence, b"\0"))
            if self._accepted:
                self._tellAccepted()  # a receipt never overtakes its acceptance
            if self.onInbound is not None:
                try:
                    self.onInbound(pdu)
                except Exception:
                    self.log.failure("The inbound handler failed on a {command}",
                                     command=pdu.command)
        elif command_id == codec.ENQUIRE_LINK:
            self.send(codec.frame(codec.ENQUIRE_LINK_RESP, pdu.sequence))
        elif command_id == codec.UNBIND:
            self.log.info("The SMSC unbound the session")
            self.state = SessionState.UNBINDING
            self.send(codec.frame(codec.UNBIND_RESP, pdu.sequence))
            self.closeLink()
        elif command_id == codec.COMMANDS["alert_notification"]:
            pass  # it has no response, and we keep no subscriber state
        elif command_id == _OUTBIND:
            self.warn("An outbind on a connection we opened: ignored")
        else:
            self.send(codec.generic_nack(pdu.sequence, codec.ESME_RINVCMDID))

    def undecodable(self, error: codec.DecodeError) -> None:
        if error.command_id == _OUTBIND:
            self.warn("An outbind on a connection we opened: ignored")
        elif error.command_id in (codec.DELIVER_SM, codec.DATA_SM):
            # Junk content still gets its OK: a stuck MO queue at the carrier hurts everyone.
            self.warn("Undecodable {command} seq {sequence} answered OK: {reason}",
                      command=codec.COMMAND_NAMES[error.command_id],
                      sequence=error.sequence, reason=error.reason)
            self.send(codec.frame(error.command_id | codec.RESPONSE_BIT, error.sequence, b"\0"))
        elif error.command_id & codec.RESPONSE_BIT:
            entry = self._pending.pop(error.sequence, None)
            if entry is not None:
                self._fail(entry[0], MalformedResponse(error.reason))
                self._fireDrained()
        else:
            super().undecodable(error)

    def leanReceived(self, data: bytes, pos: int, end: int) -> int:
        """Read the run of C{submit_sm_resp}s at C{data[pos:end]} in place:
        each answer to a part of L{submitParts} is matched and kept for
        L{onAccepted} (or, refused, told to L{onFailed}) without a slice of
        its frame or a L{codec.PDU}.  Stops at the first frame that is
        something else, incomplete, of a bad length, or an answer to no such
        part (the general way reads it).

        @return: where it stopped.
        """
        pending, accepted, find = self._pending, self._accepted, data.find
        max_length = self.max_length
        responses = 0
        while end - pos >= _HEADER_LENGTH:
            length, command_id, status, sequence = _HEADER_UNPACK(data, pos)
            if (command_id != _SUBMIT_SM_RESP or end - pos < length
                    or length < _HEADER_LENGTH or length > max_length):
                break
            try:
                part = pending[sequence][0]
            except KeyError:  # answers nothing in flight: the general way says so
                break
            if type(part) is _Pending:
                break
            del pending[sequence]
            responses += 1
            body = pos + _HEADER_LENGTH
            pos += length
            if status:
                self._fail(part, CommandStatusError(status, "submit_sm_resp"))
                if self._closing:
                    break
                accepted = self._accepted  # those before went with the failure
                continue
            # codec.submit_sm_resp_id, inline.
            nul = find(b"\0", body, pos)
            if nul < 0:
                accepted.append((part, data[body:pos].decode("latin-1"), body == pos))
            else:
                accepted.append((part, data[body:nul].decode("latin-1"), True))
        self.responses += responses
        if self._drain_waiters:
            self._fireDrained()
        return pos

    def _response(self, pdu: codec.PDU) -> None:
        entry = self._pending.get(pdu.sequence)
        if entry is None:
            self.log.debug("A {command} for no pending request (seq {sequence})",
                           command=pdu.command, sequence=pdu.sequence)
            return
        whom = entry[0]
        command_id = _commandOf(whom)
        if pdu.command_id != command_id | codec.RESPONSE_BIT:
            # Not the answer to that request (a deliver_sm_resp carrying a
            # submit's sequence is no acceptance): it still waits for its own.
            self.warn("A {command} with the sequence of a {request} (seq {sequence}): ignored",
                      command=pdu.command, sequence=pdu.sequence,
                      request=codec.COMMAND_NAMES.get(command_id, "request"))
            return
        del self._pending[pdu.sequence]
        self.responses += 1
        if pdu.status:
            self._fail(whom, CommandStatusError(pdu.status, pdu.command))
        elif type(whom) is _Pending:
            if self._accepted:
                self._tellAccepted()
            try:
                whom.succeeded(pdu, whom.context)
            except Exception:
                self.log.failure("A request's success handler failed")
            self._freed()
        else:
            fields = pdu.fields
            self._accepted.append((whom, fields.get("message_id", ""),
                                   codec.UNTERMINATED_ID not in fields))
            self._freed()
        if self._drain_waiters:
            self._fireDrained()

    def _genericNack(self, pdu: codec.PDU) -> None:
        if pdu.sequence == 0:
            self.log.warn("generic_nack with sequence 0 ({status}): the link is corrupt",
                          status=codec.status_name(pdu.status))
            self.closeLink(abort=True)
            return
        entry = self._pending.pop(pdu.sequence, None)
        if entry is None:
            self.warn("generic_nack for no pending request (seq {sequence})",
                      sequence=pdu.sequence)
            return
        self._fail(entry[0], CommandStatusError(pdu.status, "generic_nack"))
        self._fireDrained()
