"""The fake SMSC's HTTP side: read what was sent, inject MOs, turn the fault knobs.

L{FakeSMSCWeb} is a Klein app over one L{FakeSMSC}.  Every response, errors
included, is JSON (C{Content-Type: application/json}); errors are
C{{"error": "<reason>"}} with a 4xx/5xx status.

    - C{GET /}: status: bound sessions, counters, the fault knobs.
    - C{GET /receive?to=<msisdn>}: the MTs accepted for one number, oldest
      first, as L{StoredMT.as_json} dicts.
    - C{POST /mo} C{{"from", "to", "text"}}: send a C{deliver_sm} (several
      when the text is long) to a bound receiver; answers
      C{{"delivered": true, "parts": N}} once the ESME has answered them all.
    - C{POST /faults} C{{knob: value, ...}}: change the fault knobs; answers
      with all of them.
    - C{DELETE /messages}: forget the stored MTs; answers C{{"deleted": N}}.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from klein import Klein
from klein.resource import KleinResource
from twisted.internet.defer import CancelledError, Deferred, FirstError, TimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from msisdnd.fakesmsc.smsc import MESSAGE_STATES, FakeSMSC, Faults
from msisdnd.smpp import codec
from msisdnd.smpp.errors import CommandStatusError, SessionClosed

#: The largest request body taken, in bytes.
MAX_BODY = 64 * 1024

#: Longest address a C{deliver_sm} can carry (C{source_addr}/C{destination_addr}
#: are C-strings of at most 21 octets, NUL included).
_MAX_ADDRESS = 20

_FAULT_TYPES: dict[str, Any] = typing.get_type_hints(Faults)
_FAULT_CHOICES: dict[str, set] = {
    "generic_nack": {None, "sequence", "zero"},
    "receipt_state": set(MESSAGE_STATES),
}


class BadRequest(Exception):
    """A request the app refuses; becomes a JSON error with C{code}."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code


class _JSONResource(KleinResource):
    """A Klein resource whose responses default to C{application/json}."""

    def render(self, request: IRequest) -> Any:
        request.setHeader(b"content-type", b"application/json")
        return super().render(request)


def _json(request: IRequest, value: object, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(value).encode("utf-8")


def _error(request: IRequest, message: str, code: int, **extra: object) -> bytes:
    return _json(request, {"error": message, **extra}, code)


def _readJSONObject(request: IRequest) -> dict:
    """The request body as a JSON object.

    @raise BadRequest: a body over L{MAX_BODY} (413), or one that is not a
        JSON object (400).
    """
    length = request.getHeader(b"content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise BadRequest(f"request body over {MAX_BODY} bytes", 413)
    raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(raw) > MAX_BODY:
        raise BadRequest(f"request body over {MAX_BODY} bytes", 413)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _address(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.lstrip("+"):
        raise BadRequest(f"{name!r} must be a non-empty string")
    bare = value.lstrip("+")
    if not bare.isascii() or not bare.isprintable() or len(bare) > _MAX_ADDRESS:
        raise BadRequest(f"{name!r} must be printable ASCII of at most {_MAX_ADDRESS} characters")
    return value


def _checkedKnob(name: str, value: object) -> object:
    """C{value} for the fault knob C{name}, converted to the knob's type.

    @raise BadRequest: an unknown knob, a value of the wrong type, a negative
        number, or a value outside the knob's choices.
    """
    if name not in _FAULT_TYPES:
        raise BadRequest(f"unknown fault knob {name!r}; knobs are {sorted(_FAULT_TYPES)}")
    hint = _FAULT_TYPES[name]
    allowed = typing.get_args(hint) or (hint,)
    if value is None:
        ok = type(None) in allowed
    elif isinstance(value, bool):
        ok = bool in allowed
    elif isinstance(value, int):
        ok = int in allowed or float in allowed
        if float in allowed and int not in allowed:
            value = float(value)
    elif isinstance(value, float):
        ok = float in allowed
    else:
        ok = type(value) in allowed
    if not ok:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        raise BadRequest(f"fault knob {name!r} takes {names}, not {json.dumps(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise BadRequest(f"fault knob {name!r} must not be negative")
    choices = _FAULT_CHOICES.get(name)
    if choices is not None and value not in choices:
        shown = sorted(json.dumps(c) for c in choices)
        raise BadRequest(f"fault knob {name!r} takes one of {', '.join(shown)}")
    return value


class FakeSMSCWeb:
    """The HTTP face of a L{FakeSMSC}.

    @ivar smsc: the SMSC whose state this app shows and changes.
    @ivar mo_timeout: seconds C{POST /mo} waits for the ESME's
        C{deliver_sm_resp} before answering 504.
    """

    app = Klein()
    log = Logger()

    def __init__(self, smsc: FakeSMSC, mo_timeout: float = 10.0):
        self.smsc = smsc
        self.mo_timeout = mo_timeout

    def resource(self) -> KleinResource:
        """The Twisted Web resource to serve (e.g. in a L{twisted.web.server.Site})."""
        return _JSONResource(self.app)

    # -- routes ------------------------------------------------------------

    @app.route("/", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        smsc = self.smsc
        return _json(request, {
            "bound": [{"system_id": s.system_id, "mode": s.mode} for s in smsc.bound],
            "connections": len(smsc.sessions),
            "bind_count": smsc.bind_count,
            "bind_refusals": smsc.bind_refusals,
            "submit_count": smsc.submit_count,
            "message_count": len(smsc.messages),
            "faults": dataclasses.asdict(smsc.faults),
        })

    @app.route("/receive", methods=["GET"])
    def receive(self, request: IRequest) -> bytes:
        values = request.args.get(b"to") or [b""]
        try:
            # A literal '+' in a query string reads as a space: strip both.
            to = values[0].decode("utf-8").strip().lstrip("+").strip()
        except UnicodeDecodeError:
            raise BadRequest("'to' is not UTF-8") from None
        if not to:
            raise BadRequest("the 'to' query parameter is required")
        return _json(request, [m.as_json() for m in self.smsc.received(to)])

    @app.route("/mo", methods=["POST"])
    def mo(self, request: IRequest) -> Deferred | bytes:
        body = _readJSONObject(request)
        source, destination = _address(body, "from"), _address(body, "to")
        text = body.get("text")
        if not isinstance(text, str):
            raise BadRequest("'text' must be a string")
        d = self.smsc.deliverMO(source, destination, text)
        d.addTimeout(self.mo_timeout, self.smsc.clock)

        def delivered(responses: list) -> bytes:
            return _json(request, {"delivered": True, "parts": len(responses)})

        def failed(failure: Failure) -> bytes:
            if failure.check(FirstError):
                failure = failure.value.subFailure
            if failure.check(ValueError):  # codec.EncodeError, TextTooLong, bad surrogates
                return _error(request, f"cannot send that MO: {failure.value}", 400)
            if failure.check(SessionClosed):
                return _error(request, str(failure.value), 503)
            if failure.check(CommandStatusError):
                status = failure.value.status
                return _error(request, f"the ESME refused the MO: {codec.status_name(status)}",
                              502, status=status)
            # The timeout cancels the parts' Deferreds, so it may show as
            # their CancelledError instead of addTimeout's TimeoutError.
            if failure.check(TimeoutError, CancelledError):
                return _error(request, f"no deliver_sm_resp within {self.mo_timeout}s", 504)
            return failure

        return d.addCallbacks(delivered, failed)

    @app.route("/faults", methods=["POST"])
    def faults(self, request: IRequest) -> bytes:
        body = _readJSONObject(request)
        changes = {name: _checkedKnob(name, value) for name, value in body.items()}
        self.smsc.faults.update(**changes)
        self.log.info("Fault knobs changed: {changes}", changes=changes)
        return _json(request, dataclasses.asdict(self.smsc.faults))

    @app.route("/messages", methods=["DELETE"])
    def clearMessages(self, request: IRequest) -> bytes:
        return _json(request, {"deleted": self.smsc.clear()})

    # -- errors ------------------------------------------------------------

    @app.handle_errors(BadRequest)
    def badRequest(self, request: IRequest, failure: Failure) -> bytes:
        return _error(request, failure.value.message, failure.value.code)

    @app.handle_errors(HTTPException)
    def httpError(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            request.setHeader(b"allow", ", ".join(error.valid_methods).encode("ascii"))
        return _error(request, error.name, error.code or 500)

    @app.handle_errors
    def unexpected(self, request: IRequest, failure: Failure) -> bytes:
        self.log.failure("Unexpected error in {method} {uri}", failure,
                         method=request.method, uri=request.uri)
        return _error(request, "unexpected error", 500)
