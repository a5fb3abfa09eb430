"""The API's HTTP front: a body limit, a request deadline, connection caps.

Klein routes see a body that Twisted has already spooled, too late to
refuse it; L{LimitedRequest} answers 413 (errno 113) as soon as the declared
C{Content-Length}, or the bytes received so far, pass C{max_body}, and
closes the connection without storing the rest.

Twisted's idle timeout restarts on every byte, so a client that sends one
byte every few seconds holds a connection for ever.  L{APIChannel} gives
each request a deadline of its own: from the connection's start, or from
the first byte of each later request, the whole head and body must arrive
within C{request_deadline} seconds, else the client gets 408 (errno 128)
and the connection is closed.  A keep-alive connection idle between
requests is left to Twisted's idle timeout.

L{APISite} caps the connections open at once, in total and per client
address (the addresses of C{trusted_proxies} and Unix-socket peers are
exempt: a proxy carries many clients; IPv6 clients count by /64, as the
abuse limits do).  A connection over a cap gets a short 503 JSON answer and
is closed; L{ConnectionCounters} counts the refusals and expiries.

The site's channel is L{APIChannel}, an C{HTTPChannel}: HTTP/1.1 only, as
before in practice (Twisted negotiates HTTP/2 only with the C{h2} package,
which msisdnd does not install, and ALPN on a TLS listener).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import TimeoutError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from msisdnd.api.errors import (
    BACKEND_UNAVAILABLE,
    CLIENT_RATE,
    REQUEST_TIMEOUT,
    TOO_LARGE,
    APIError,
)

log = Logger()

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: At most this many refused connections are being answered (503) at once;
#: past it, a refused connection is closed without an answer.
REFUSALS_ANSWERED_AT_ONCE = 64
#: Seconds a refused connection, or one whose deadline passed, has to take
#: its answer before it is cut.
CLOSE_GRACE = 5.0
#: Seconds between two log lines about refusals, or about deadlines.
LOG_EVERY = 60.0


def closing_answer(error: APIError) -> bytes:
    """A whole HTTP/1.1 response carrying C{error}'s JSON body, that closes the connection.

    For answers written straight to the transport, outside any Request.
    """
    body = json.dumps(error.body()).encode()
    headers = "".join(f"{name}: {value}\r\n" for name, value in error.headers.items())
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nTimestamp: %d\r\n"
            b"Cache-Control: no-store\r\n%sConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (error.code, HTTPStatus(error.code).phrase.encode(), int(time.time()),
               headers.encode("latin-1"), len(body), body))


class LimitedRequest(Request):
    """L{Request} with a body limit; set C{max_body} on the class (or a subclass).

    With C{show_version} false, the answer has no C{Server} header (Twisted
    sets C{Server: TwistedWeb/<version>} on every request it processes).
    """

    max_body = 25 * 1024
    show_version = True
    _received = 0
    _refused = False

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # An absolute-form target (RFC 9112 3.2.2) is routed, and MACed, by its path.
        if path[:7].lower() == b"http://" or path[:8].lower() == b"https://":
            path = b"/" + path.split(b"/", 3)[3] if path.count(b"/") >= 3 else b"/"
        super().requestReceived(command, path, version)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            self._refuse()
            # Else the channel answers the Expect with 100 Continue after the 413.
            self.requestHeaders.removeHeader(b"Expect")
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._refuse()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self._refused:
            starting = getattr(self.channel.site, "requestStarted", None)
            if starting is not None:
                starting(self)
            super().process()

    def write(self, data: bytes) -> None:
        # Twisted writes the headers with the first write, finish's included.
        if not self.startedWriting and not self.show_version:
            self.responseHeaders.removeHeader(b"Server")
        super().write(data)

    def _refuse(self) -> None:
        if self._refused:
            return
        self._refused = True
        error = APIError(413, TOO_LARGE, f"The body is larger than {self.max_body} bytes")
        self.channel.transport.write(closing_answer(error))
        self.channel.transport.loseConnection()


def limited(max_body: int, show_version: bool = True) -> type[LimitedRequest]:
    """A L{LimitedRequest} class with C{max_body} bytes, for C{Site(requestFactory=...)};
    without a C{Server} header unless C{show_version}."""
    return type("LimitedRequest", (LimitedRequest,),
                {"max_body": max_body, "show_version": show_version})


@dataclass
class ConnectionCounters:
    """What the connection limits did, since the start (for the metrics).

    @ivar refused_per_client: connections refused for their client address's cap.
    @ivar refused_total: connections refused for the total cap.
    @ivar refused_unanswered: of those, the ones closed without a 503 (more
        than L{REFUSALS_ANSWERED_AT_ONCE} refusals were being answered).
    @ivar deadline_expired: requests whose head and body did not arrive
        within the deadline (answered 408, or cut if already answering).
    """

    refused_per_client: int = 0
    refused_total: int = 0
    refused_unanswered: int = 0
    deadline_expired: int = 0


def client_key(address: object, trusted: Sequence[Network]) -> str | None:
    """Whose cap a connection from C{address} counts against; C{None}: no one's.

    The peer's IP address (an IPv4-mapped IPv6 one as IPv4, IPv6 by /64);
    C{None} for a trusted proxy and for a Unix-socket peer (our own proxy).
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.scope_id is not None:
            ip = ipaddress.IPv6Address(int(ip))
    if any(ip in net for net in trusted):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class _Throttled:
    """Log lines of one kind at most once per L{LOG_EVERY} seconds, saying how
    many were left out meanwhile."""

    def __init__(self, clock):
        self.clock = clock
        self.last: dict[str, float] = {}
        self.skipped: dict[str, int] = {}

    def warn(self, kind: str, text: str, **fields: object) -> None:
        now = self.clock.seconds()
        last = self.last.get(kind)
        if last is not None and now - last < LOG_EVERY:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
            return
        self.last[kind] = now
        skipped = self.skipped.pop(kind, 0)
        if skipped:
            text += " (and {skipped} more like it since the last such line)"
        log.warn(text, skipped=skipped, **fields)


class APIChannel(HTTPChannel):
    """An HTTP/1.1 channel whose requests must arrive within the site's deadline.

    The deadline runs from C{connectionMade}, and from the first byte (or
    buffered line) of each later request, until the request's body is
    complete.  When it passes, the client gets 408 (errno 128) and the
    connection is closed; if the connection is already closing (a 413 was
    written), it is cut.  Its idle time between requests is left to
    Twisted's idle timeout (C{timeOut}).
    """

    site: APISite
    clientKey: str | None = None
    _counted = False
    _deadlineCall = None
    _closeCall = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.connectionOpened(self)
        self._counted = True
        self._startDeadline()

    def dataReceived(self, data: bytes) -> None:
        if self._deadlineCall is None and not self._handlingRequest:
            self._startDeadline()
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        # The lines of a pipelined request, buffered while the one before it
        # was handled, come back through here rather than dataReceived.
        if self._deadlineCall is None and not self._handlingRequest:
            self._startDeadline()
        super().lineReceived(line)

    def allContentReceived(self) -> None:
        self._stopDeadline()
        super().allContentReceived()

    def connectionLost(self, reason) -> None:
        self._stopDeadline()
        if self._closeCall is not None and self._closeCall.active():
            self._closeCall.cancel()
        self._closeCall = None
        if self._counted:
            self._counted = False
            self.site.connectionClosed(self)
        super().connectionLost(reason)

    def _startDeadline(self) -> None:
        deadline = self.site.requestDeadline
        if deadline is not None and self.transport is not None:
            self._deadlineCall = self.site.clock.callLater(deadline, self._deadlinePassed)

    def _stopDeadline(self) -> None:
        if self._deadlineCall is not None and self._deadlineCall.active():
            self._deadlineCall.cancel()
        self._deadlineCall = None

    def _deadlinePassed(self) -> None:
        self._deadlineCall = None
        transport = self.transport
        if getattr(transport, "disconnecting", False):
            # Already answered (413) and closing: the client is not reading.
            transport.abortConnection()
            return
        self.site.requestTimedOut(self)
        error = APIError(408, REQUEST_TIMEOUT,
                         f"The request did not arrive within {self.site.requestDeadline:g} s")
        # Nothing more from this client: the 408 is the last word.
        self.dataReceived = self.lineReceived = lambda *args: None
        transport.write(closing_answer(error))
        transport.loseConnection()
        self._closeCall = self.site.clock.callLater(CLOSE_GRACE, transport.abortConnection)


class _Refused(Protocol):
    """A connection over a cap: a 503 JSON answer when there is room for it, then closed."""

    def __init__(self, site: APISite, error: APIError | None):
        self.site = site
        self.error = error
        self._closeCall = None

    def connectionMade(self) -> None:
        if self.error is None:
            self.transport.abortConnection()
            return
        self.transport.write(closing_answer(self.error))
        self.transport.loseConnection()
        self._closeCall = self.site.clock.callLater(CLOSE_GRACE, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        """Whatever the client sends is not read."""

    def connectionLost(self, reason) -> None:
        if self._closeCall is not None and self._closeCall.active():
            self._closeCall.cancel()
        if self.error is not None:
            self.site._answering -= 1


class APISite(Site):
    """The API's Site: knows its requests in flight, and reports each one done;
    caps its connections and gives each request a deadline (see the module).

    @ivar active: requests received and not yet answered.
    @ivar onDone: called with C{(request, seconds)} as each request finishes
        (metrics), or C{None}.
    @ivar requestDeadline: seconds for a request's head and body to arrive,
        or C{None} for no deadline.
    @ivar maxConnections: connections open at once, or C{None} for no cap.
    @ivar maxConnectionsPerClient: the same, per client address (see
        L{client_key}), or C{None}.
    @ivar trustedProxies: networks exempt from the per-client cap.
    @ivar accessLog: which requests write an access line: C{"off"}, none;
        C{"errors"}, those answered with a status of 400 or more; C{"all"}.
    @param show_version: whether answers carry Twisted's C{Server} header
        (C{[http] show_version}).
    @ivar connections: connections open now.
    @ivar counters: the L{ConnectionCounters}.
    """

    protocol = APIChannel

    def __init__(self, resource, max_body: int, clock, onDone=None, *,
                 request_deadline: float | None = None, max_connections: int | None = None,
                 max_connections_per_client: int | None = None,
                 trusted_proxies: Sequence[Network] = (), access_log: str = "all",
                 show_version: bool = True, **kwargs):
        # The API takes JSON only: no form parsing (which runs the email
        # package on every POST's Content-Type).
        super().__init__(resource, requestFactory=limited(max_body, show_version),
                         parsePOSTFormSubmission=False, **kwargs)
        self.clock = clock
        self.onDone = onDone
        self.active = 0
        self._idle: list[Deferred] = []
        self.requestDeadline = request_deadline
        self.maxConnections = max_connections
        self.maxConnectionsPerClient = max_connections_per_client
        self.trustedProxies = tuple(trusted_proxies)
        self.accessLog = access_log
        self.connections = 0
        self.perClient: dict[str, int] = {}
        self.counters = ConnectionCounters()
        self._answering = 0
        self._log = _Throttled(clock)

    # -- connections -----------------------------------------------------------

    def buildProtocol(self, addr):
        key = client_key(addr, self.trustedProxies)
        if self.maxConnections is not None and self.connections >= self.maxConnections:
            self.counters.refused_total += 1
            self._log.warn("total", "Refusing connections: {open} are open, the most allowed "
                                    "([http] max_connections)", open=self.connections)
            return self._refusal(APIError(
                503, BACKEND_UNAVAILABLE, "Too many connections; retry later",
                {"Retry-After": "1"}))
        if (key is not None and self.maxConnectionsPerClient is not None
                and self.perClient.get(key, 0) >= self.maxConnectionsPerClient):
            self.counters.refused_per_client += 1
            self._log.warn("client", "Refusing connections from {client}: it has {open} open, "
                                     "the most allowed ([http] max_connections_per_client)",
                           client=key, open=self.perClient[key])
            return self._refusal(APIError(
                503, CLIENT_RATE, "Too many connections from this address; retry later",
                {"Retry-After": "1"}))
        channel = super().buildProtocol(addr)
        channel.clientKey = key
        return channel

    def _refusal(self, error: APIError) -> _Refused:
        if self._answering >= REFUSALS_ANSWERED_AT_ONCE:
            self.counters.refused_unanswered += 1
            refused = _Refused(self, None)
        else:
            self._answering += 1
            refused = _Refused(self, error)
        refused.factory = self
        return refused

    def connectionOpened(self, channel: APIChannel) -> None:
        self.connections += 1
        if channel.clientKey is not None:
            self.perClient[channel.clientKey] = self.perClient.get(channel.clientKey, 0) + 1

    def connectionClosed(self, channel: APIChannel) -> None:
        self.connections -= 1
        key = channel.clientKey
        if key is not None:
            left = self.perClient.get(key, 0) - 1
            if left > 0:
                self.perClient[key] = left
            else:
                self.perClient.pop(key, None)

    def requestTimedOut(self, channel: APIChannel) -> None:
        self.counters.deadline_expired += 1
        peer = channel.transport.getPeer()
        self._log.warn("deadline", "A request from {peer} did not arrive within {deadline:g} s "
                                   "([http] request_deadline); answered 408",
                       peer=getattr(peer, "host", str(peer)), deadline=self.requestDeadline)

    # -- requests --------------------------------------------------------------

    def log(self, request: Request) -> None:
        """The access line, as C{[log] access} asks (see L{accessLog})."""
        if self.accessLog == "all" or (self.accessLog == "errors" and request.code >= 400):
            super().log(request)

    def requestStarted(self, request: Request) -> None:
        self.active += 1
        started = self.clock.seconds()

        def done(_: object) -> None:
            self.active -= 1
            if self.onDone is not None:
                try:
                    self.onDone(request, self.clock.seconds() - started)
                except Exception:
                    log.failure("Recording a finished request failed")
            if not self.active:
                waiters, self._idle = self._idle, []
                for d in waiters:
                    if not d.called:
                        d.callback(None)

        request.notifyFinish().addBoth(done)

    def whenIdle(self, timeout: float) -> Deferred:
        """Fires once no request is in flight, or after C{timeout} seconds."""
        if not self.active:
            return succeed(None)
        d = Deferred()
        self._idle.append(d)
        return d.addTimeout(timeout, self.clock).addErrback(lambda f: f.trap(CancelledError, TimeoutError))
