"""The API's resource: its fixed paths found in a dict, every other request through Klein.

Klein costs each request about as much as the rest of C{twisted.web} does
(binding a Werkzeug map adapter, matching, adapting the request to
C{IKleinRequest}, two C{notifyFinish} Deferreds, two C{maybeDeferred},
its error-handler chain): measured in bench/RESULTS.md ("Device flow: the
per-request HTTP path").  L{DirectResource} answers a request whose method
and raw path are those of a route without path arguments (C{POST
/register}, C{POST /sms/verify_code}, ...) by calling that route's endpoint
through the same bound Klein app (C{execute_endpoint}), and hands every
other request to Klein's own resource unchanged: percent-encoded paths,
slashes too many, wrong methods, CORS preflights below C{/}, the routes
with path arguments.  The route table is read off the Klein app's
Werkzeug map, so a route added with C{@app.route} is served either way
with no second list to keep.

What Klein would route wrongly, or fail on, gets the API's JSON error
instead (L{unroutable}): a method not in upper case (Werkzeug upper-cases
it, so C{post} would run as C{POST}), a target that is not a path (Twisted
drops its first byte, so C{xregister} would run C{/register}), a path or
C{Host} that is not UTF-8 (Klein answers a text 400 and logs a traceback:
a line in the log per stranger's request), and a C{Host} Werkzeug refuses
(its C{BadHost}, raised inside Klein's render, was Twisted's text 500 with
a traceback).

What Klein does for a route, this does the same way: a route's failure is
answered by the app's one error handler (C{answer_failure}, the same one
Klein calls); a client that hangs up cancels the route's Deferred, and a
failure after that is not answered (logged, unless it is that
cancellation); the route's bytes are written and the request finished.
"""

from __future__ import annotations

from typing import Callable
from urllib.parse import unquote_to_bytes

from klein import Klein
from twisted.internet.defer import CancelledError, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from werkzeug.exceptions import BadHost

from msisdnd.api import errors
from msisdnd.api.errors import APIError

log = Logger()


def unroutable(request: IRequest) -> APIError | None:
    """The error for a request Klein must not route; else C{None}.

    A method not in upper case is 501: methods are case-sensitive (RFC 9110
    9.1), and Werkzeug would run C{post} as C{POST} (past a front proxy's
    rule on C{POST}) and C{head} as C{GET} with its body.  A target that
    is not a path (C{xregister}; an absolute one was made a path by
    L{msisdnd.api.request.LimitedRequest}) is 400: Twisted drops its first
    byte and Klein would route the rest.  So is a path (percent-decoded) or
    C{Host} that is not UTF-8.
    """
    if not request.method.isupper():
        return APIError(501, errors.INVALID_PARAMETERS,
                        "No such method (methods are case-sensitive).")
    if not request.path.startswith(b"/"):
        return errors.invalid("The request target must be a path (/...).")
    try:
        unquote_to_bytes(request.path).decode("utf-8")
        request.getRequestHostname().decode("utf-8")
    except UnicodeDecodeError:
        return errors.invalid("The path and the Host header must be UTF-8.")
    return None


def fixed_routes(app: Klein) -> dict[tuple[bytes, bytes], str]:
    """C{(method, path)} to endpoint, for every route of C{app} without path
    arguments (a path two rules share is left to Klein)."""
    routes: dict[tuple[bytes, bytes], str] = {}
    shared: set[tuple[bytes, bytes]] = set()
    for rule in app.url_map.iter_rules():
        if rule.arguments or not rule.rule.isascii():
            continue
        for method in rule.methods or ():
            key = (method.encode("ascii"), rule.rule.encode("ascii"))
            if key in routes:
                shared.add(key)
            routes[key] = rule.endpoint
    for key in shared:
        del routes[key]
    return routes


class DirectResource(Resource):
    """The API's root resource (see the module).

    @param app: the Klein app bound to the routes' instance.
    @param answer_failure: what Klein's error handler for C{Exception}
        calls: writes the error's headers and returns its body.
    """

    isLeaf = True

    def __init__(self, app: Klein, answer_failure: Callable[[IRequest, Failure], bytes]):
        super().__init__()
        self._app = app
        self._klein = app.resource()
        self._routes = fixed_routes(app)
        self._answer_failure = answer_failure

    def render(self, request: IRequest):
        endpoint = self._routes.get((request.method, request.path))
        if endpoint is None:
            error = unroutable(request)
            if error is None:
                try:
                    return self._klein.render(request)
                except BadHost:  # before Klein set anything up: the request is ours
                    error = errors.invalid("The Host header is not a host name.")
            return self._answer_failure(request, Failure(error))
        finished = []
        d = maybeDeferred(self._app.execute_endpoint, endpoint, request)

        def gone(reason: Failure) -> None:
            finished.append(True)
            d.cancel()

        request.notifyFinish().addCallbacks(finished.append, gone)

        def failed(failure: Failure) -> bytes | None:
            if finished:
                if not failure.check(CancelledError):
                    log.failure("Unhandled error after the client left", failure)
                return None
            return self._answer_failure(request, failure)

        def write(body: bytes | None) -> None:
            if body is not None:
                request.write(body)
            if not finished:
                request.finish()

        def broken(failure: Failure) -> None:
            # The error handler itself failed: twisted.web's own 500.
            if not finished:
                request.processingFailed(failure)

        d.addErrback(failed).addCallback(write).addErrback(broken)
        return NOT_DONE_YET
