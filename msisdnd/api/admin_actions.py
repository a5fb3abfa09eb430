"""The admin listener's actions: suspend, resume and rebind a carrier, reload
the configuration, set the log level.

  - C{POST /carriers/NAME/suspend} (body C{{"unbind": true}} to let its
    binds go too), C{POST /carriers/NAME/resume}, C{POST /carriers/NAME/rebind}
  - C{POST /reload}: re-read the configuration file; 409 with the reason
    when the new file is refused (the running configuration is kept)
  - C{POST /log-level} with C{{"level": "debug"}}

Every action needs C{Authorization: Bearer TOKEN}, a token of C{[admin]
token_file} (compared in constant time; without a token file every action
is refused, saying so): 401 without a token, 403 with a wrong one.  It must
not come from another site: a JSON C{Content-Type} is required (a form or a
"simple" cross-site request cannot set one without a preflight, which this
listener never grants: 415 otherwise), and a request whose C{Origin} is not
this listener's own, or whose C{Sec-Fetch-Site} says C{cross-site} or
C{same-site}, is refused with 403.  Every action and every refusal writes
one audit line (namespace C{msisdnd.audit}): what, on what, the outcome,
the token's name and the peer's address; the log line's time says when.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Callable, Protocol, Sequence

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from msisdnd.sms.status import UnknownCarrier

audit = Logger(namespace="msisdnd.audit")

#: The largest action body read.
MAX_BODY = 4096
LOG_LEVELS = ("debug", "info", "warn", "error")


class ActionRefused(Exception):
    """The action cannot be done: C{args} are the HTTP status and why."""

    def __init__(self, status: int, why: str):
        super().__init__(status, why)
        self.status = status
        self.why = why


class Token(Protocol):
    """A bearer token as configured (L{msisdnd.config.AdminToken})."""

    name: str
    digest: bytes


class AdminActions(Protocol):
    """What the actions do (the daemon).  Each may return a Deferred; a
    failure with L{ActionRefused} or L{UnknownCarrier} is answered as such."""

    def suspend(self, carrier: str, unbind: bool, by: str) -> Any: ...

    def resume(self, carrier: str, by: str) -> Any: ...

    def rebind(self, carrier: str) -> Any: ...

    def reload(self) -> Any: ...

    def setLogLevel(self, level: str) -> Any: ...


def _who(tokens: Sequence[Token], header: bytes | None) -> tuple[int, str]:
    """The token's name, or the refusal's status and why."""
    if not tokens:
        return 403, ("admin actions are off: no [admin] token_file is configured "
                     "(msisdnd keygen --admin-token FILE makes one)")
    scheme, _, credentials = (header or b"").partition(b" ")
    if scheme.lower() != b"bearer":  # a scheme is case-insensitive (RFC 9110 11.1)
        return 401, "an Authorization: Bearer token is required"
    digest = hashlib.sha256(credentials.strip()).digest()
    found = None
    for token in tokens:  # every one compared: the time says nothing of which matched
        if hmac.compare_digest(digest, token.digest):
            found = token
    if found is None:
        return 403, "the bearer token is not one of [admin] token_file"
    return 0, found.name


def _cross_site(request) -> str | None:
    """Why C{request} looks like it comes from another site, or C{None}."""
    fetch_site = (request.getHeader(b"sec-fetch-site") or b"").lower()
    if fetch_site in (b"cross-site", b"same-site"):
        return f"Sec-Fetch-Site: {fetch_site.decode('latin-1')} is refused"
    origin = request.getHeader(b"origin")
    if origin is not None:
        host = request.getHeader(b"host") or b""
        if origin.lower() not in (b"http://" + host.lower(), b"https://" + host.lower()):
            return "a request from another origin is refused"
    content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type != b"application/json":
        return "Content-Type: application/json is required"
    return None


class ActionsResource(Resource):
    """Every action, behind the token and the cross-site checks."""

    isLeaf = True

    def __init__(self, actions: AdminActions, tokens: Callable[[], Sequence[Token]]):
        super().__init__()
        self.actions = actions
        self.tokens = tokens

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Allow", b"POST")
        return self._answer(request, 405, {"error": "actions are POST requests"})

    def render_POST(self, request):
        path = [p.decode("utf-8", "replace") for p in request.prepath[-1:] + request.postpath]
        # A stranger's URL reaches the audit line: no control character in it.
        what, target = " ".join(p if p.isprintable() else ascii(p) for p in path), ""
        peer = getattr(request.getClientAddress(), "host", "?")
        why = _cross_site(request)
        if why is not None:
            status = 415 if why.startswith("Content-Type") else 403
            return self._refuse(request, status, why, what, "-", peer)
        status, who = _who(self.tokens(), request.getHeader(b"authorization"))
        if status:
            return self._refuse(request, status, who, what, "-", peer)
        body = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        try:
            if len(body) > MAX_BODY:
                raise ValueError(f"the body is larger than {MAX_BODY} bytes")
            try:
                args = json.loads(body or b"{}")
            except RecursionError:
                raise ValueError("the body is nested too deep") from None
            if not isinstance(args, dict):
                raise ValueError("the body must be a JSON object")
            call, target = self._route(path, args, who)
        except ValueError as e:
            return self._refuse(request, 400, str(e), what, who, peer)
        d = maybeDeferred(call)
        d.addCallbacks(self._done, self._failed, callbackArgs=(request, what, who, peer),
                       errbackArgs=(request, what, who, peer))
        return NOT_DONE_YET

    def _route(self, path: list[str], args: dict, who: str) -> tuple[Callable[[], Any], str]:
        """The call an action's path and arguments make, and what it acts on."""
        a = self.actions
        if len(path) == 3 and path[0] == "carriers":
            name, verb = path[1], path[2]
            if verb == "suspend":
                unbind = args.get("unbind", False)
                if not isinstance(unbind, bool):
                    raise ValueError("unbind must be true or false")
                return (lambda: a.suspend(name, unbind, who)), name
            if verb == "resume":
                return (lambda: a.resume(name, who)), name
            if verb == "rebind":
                return (lambda: a.rebind(name)), name
        elif path == ["reload"]:
            return a.reload, ""
        elif path == ["log-level"]:
            level = args.get("level")
            if level not in LOG_LEVELS:
                raise ValueError(f"level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
            return (lambda: a.setLogLevel(level)), level
        raise ValueError("no such action: POST /carriers/NAME/suspend|resume|rebind, "
                         "/reload or /log-level")

    def _done(self, result: Any, request, what: str, who: str, peer: str) -> None:
        audit.info("admin {action}: done (by {who} from {peer})", action=what, who=who, peer=peer)
        self._finish(request, 200, {"ok": True, **(result or {})})

    def _failed(self, failure: Failure, request, what: str, who: str, peer: str) -> None:
        if failure.check(ActionRefused):
            status, why = failure.value.status, failure.value.why
        elif failure.check(UnknownCarrier):
            status, why = 404, str(failure.value)
        else:
            audit.failure("admin {action}: failed (by {who} from {peer})", failure,
                          action=what, who=who, peer=peer)
            self._finish(request, 500, {"error": f"the action failed: {failure.getErrorMessage()}"})
            return
        audit.warn("admin {action}: not done: {why} (by {who} from {peer})",
                   action=what, why=why, who=who, peer=peer)
        self._finish(request, status, {"error": why})

    def _refuse(self, request, status: int, why: str, what: str, who: str, peer: str) -> bytes:
        audit.warn("admin {action}: refused: {why} (by {who} from {peer})",
                   action=what, why=why, who=who, peer=peer)
        if status == 401:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="msisdnd admin"')
        return self._answer(request, status, {"error": why})

    @staticmethod
    def _answer(request, status: int, body: dict) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(body).encode()

    def _finish(self, request, status: int, body: dict) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.write(self._answer(request, status, body))
        request.finish()
