"""Whether a carrier can reach its SMSC, as operators see it, and why not.

L{describe} turns the failure of a connect, a bind or a session into the few
words a log line and the admin listener show (C{connection refused},
C{TLS: certificate verify failed}, C{bind refused: ESME_RINVPASWD}...).
L{CarrierLink} is the carrier's link state machine: it says (once) when the
carrier goes down and when it is back, with how long it was down.
"""

from __future__ import annotations

import enum

from twisted.internet import error
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from msisdnd.sms.status import timestamp
from msisdnd.smpp.errors import CommandStatusError, ResponseTimeout, SessionClosed

_CONNECT_ERRORS = (
    (error.ConnectionRefusedError, "connection refused"),
    (error.TCPTimedOutError, "connect timeout"),
    (error.TimeoutError, "connect timeout"),
    (error.DNSLookupError, "DNS lookup failed"),
    (error.NoRouteError, "no route to host"),
    (error.ConnectionDone, "closed by the SMSC"),
    (error.ConnectionLost, "connection lost"),
)


def describe(failure: Failure | BaseException | None, lost: Failure | None = None) -> str:
    """A few words on why a connect, a bind or a session failed.

    @param lost: the session's C{connectionLost} reason, which says more than
        a bind that failed with L{SessionClosed} (a TLS handshake refused).
    """
    value = failure.value if isinstance(failure, Failure) else failure
    if isinstance(value, SessionClosed) and lost is not None:
        value = lost.value
    if value is None:
        return "unknown"
    module = type(value).__module__
    if module.startswith("service_identity"):
        return "TLS: the certificate does not match the hostname"
    if module.startswith("OpenSSL"):
        return "TLS: " + (_tls_reason(value) or "handshake failed")
    if isinstance(value, CommandStatusError):
        return f"bind refused: {value.status_name}"
    if isinstance(value, ResponseTimeout):
        return "no answer to the bind"
    for kind, words in _CONNECT_ERRORS:
        if isinstance(value, kind):
            return words
    return str(value) or type(value).__name__


def _tls_reason(value: BaseException) -> str:
    """The reason strings of a pyOpenSSL error (a list of (lib, func, reason))."""
    reasons = []
    for entry in (value.args[0] if value.args and isinstance(value.args[0], list) else []):
        if isinstance(entry, tuple) and entry:
            reasons.append(str(entry[-1]))
    return "; ".join(reasons) or str(value)


class LinkState(enum.Enum):
    """A carrier's link state machine.

    STARTING --bound--> UP; STARTING --attempt failed--> DOWN;
    UP --last bind lost--> RECONNECTING (sends held for the carrier's
    C{reconnect_grace}) --bound--> UP, or --grace over--> DOWN --bound--> UP.
    """

    STARTING = "starting"
    UP = "up"
    RECONNECTING = "reconnecting"
    DOWN = "down"


class CarrierLink:
    """The link state of one carrier, its last error and when it began.

    Logs one warning when the carrier goes down (naming it and the reason)
    and one when it is back (with how long it was down); a cut healed within
    the grace is one info line each way.

    @ivar outage_since: when the carrier last lost its last bind (or started
        without one), while it is not up; else C{None}.
    @ivar last_error: the last failure's L{describe}, kept once it is up again.
    """

    log = Logger()

    def __init__(self, name: str, clock: IReactorTime):
        self.name = name
        self.clock = clock
        self.state = LinkState.STARTING
        self.since = clock.seconds()
        self.outage_since: float | None = self.since
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def _become(self, state: LinkState) -> None:
        self.state, self.since = state, self.clock.seconds()

    def failed(self, why: str) -> None:
        """A connect or bind attempt failed."""
        self.last_error, self.last_error_at = why, self.clock.seconds()
        if self.state is LinkState.STARTING:
            self._become(LinkState.DOWN)
            self.log.warn("Carrier {carrier} is down: {why}", carrier=self.name, why=why)

    def bound(self) -> None:
        """A bind that counts came up."""
        state = self.state
        if state is LinkState.UP:
            return
        now = self.clock.seconds()
        outage = now - (self.outage_since if self.outage_since is not None else now)
        self._become(LinkState.UP)
        self.outage_since = None
        if state is LinkState.DOWN:
            self.log.warn("Carrier {carrier} is back after {seconds:.1f} s down",
                          carrier=self.name, seconds=outage)
        elif state is LinkState.RECONNECTING:
            self.log.info("Carrier {carrier} reconnected after {seconds:.1f} s",
                          carrier=self.name, seconds=outage)
        else:
            self.log.info("Carrier {carrier} is up", carrier=self.name)

    def lost(self, why: str, grace: float | None) -> None:
        """The last bind that counts went; sends are held C{grace} seconds
        (C{None}: not held, the carrier is down at once)."""
        self.last_error, self.last_error_at = why, self.clock.seconds()
        if self.state is not LinkState.UP:
            return
        self.outage_since = self.clock.seconds()
        if grace is None:
            self._become(LinkState.DOWN)
            self.log.warn("Carrier {carrier} is down: {why}", carrier=self.name, why=why)
        else:
            self._become(LinkState.RECONNECTING)
            self.log.info("Carrier {carrier} lost its last bind ({why}); reconnecting, "
                          "holding sends up to {grace} s", carrier=self.name, why=why,
                          grace=grace)

    def graceOver(self) -> None:
        """The binds stayed down past the grace."""
        if self.state is LinkState.RECONNECTING:
            self._become(LinkState.DOWN)
            self.log.warn("Carrier {carrier} is down: {why} (no bind for {seconds:.1f} s)",
                          carrier=self.name, why=self.last_error or "unknown",
                          seconds=self.clock.seconds() - (self.outage_since or self.since))

    def snapshot(self) -> dict:
        """The state, when it began, the outage's start and the last error."""
        state = self.state
        return {
            "state": state.value,
            "since": timestamp(self.since),
            "reconnecting_since": (timestamp(self.outage_since)
                                   if state is LinkState.RECONNECTING else None),
            "down_since": timestamp(self.outage_since) if state is LinkState.DOWN else None,
            "last_error": self.last_error,
            "last_error_at": timestamp(self.last_error_at),
        }
