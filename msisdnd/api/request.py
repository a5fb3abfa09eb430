"""A Request that refuses a body over the limit while it streams in.

Klein routes see a body that Twisted has already spooled, too late to
refuse it; this Request answers 413 (errno 113) as soon as the declared
C{Content-Length}, or the bytes received so far, pass C{max_body}, and
closes the connection without storing the rest.
"""

from __future__ import annotations

import json
import time
from http import HTTPStatus

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import TimeoutError
from twisted.logger import Logger
from twisted.web.server import Request, Site

from msisdnd.api.errors import TOO_LARGE, APIError

log = Logger()


class LimitedRequest(Request):
    """L{Request} with a body limit; set C{max_body} on the class (or a subclass)."""

    max_body = 25 * 1024
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

    def _refuse(self) -> None:
        if self._refused:
            return
        self._refused = True
        error = APIError(413, TOO_LARGE, f"The body is larger than {self.max_body} bytes")
        body = json.dumps(error.body()).encode()
        now = int(time.time())
        self.channel.transport.write(
            b"HTTP/1.1 413 %s\r\nContent-Type: application/json\r\nTimestamp: %d\r\n"
            b"Cache-Control: no-store\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (HTTPStatus(413).phrase.encode(), now, len(body), body))
        self.channel.transport.loseConnection()


def limited(max_body: int) -> type[LimitedRequest]:
    """A L{LimitedRequest} class with C{max_body} bytes, for C{Site(requestFactory=...)}."""
    return type("LimitedRequest", (LimitedRequest,), {"max_body": max_body})


class APISite(Site):
    """The API's Site: knows its requests in flight, and reports each one done.

    @ivar active: requests received and not yet answered.
    @ivar onDone: called with C{(request, seconds)} as each request finishes
        (metrics), or C{None}.
    """

    def __init__(self, resource, max_body: int, clock, onDone=None, **kwargs):
        # The API takes JSON only: no form parsing (which runs the email
        # package on every POST's Content-Type).
        super().__init__(resource, requestFactory=limited(max_body),
                         parsePOSTFormSubmission=False, **kwargs)
        self.clock = clock
        self.onDone = onDone
        self.active = 0
        self._idle: list[Deferred] = []

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
