"""A Request that refuses a body over the limit while it streams in.

Klein routes see a body that Twisted has already spooled, too late to
refuse it; this Request answers 413 (errno 113) as soon as the declared
C{Content-Length}, or the bytes received so far, pass C{max_body}, and
closes the connection without storing the rest.
"""

from __future__ import annotations

import json

from twisted.web.server import Request

from msisdnd.api.errors import TOO_LARGE, APIError


class LimitedRequest(Request):
    """L{Request} with a body limit; set C{max_body} on the class (or a subclass)."""

    max_body = 25 * 1024
    _received = 0
    _refused = False

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
            super().process()

    def _refuse(self) -> None:
        if self._refused:
            return
        self._refused = True
        error = APIError(413, TOO_LARGE, f"The body is larger than {self.max_body} bytes")
        body = json.dumps(error.body()).encode()
        self.channel.transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        self.channel.transport.loseConnection()


def limited(max_body: int) -> type[LimitedRequest]:
    """A L{LimitedRequest} class with C{max_body} bytes, for C{Site(requestFactory=...)}."""
    return type("LimitedRequest", (LimitedRequest,), {"max_body": max_body})
