"""The API's resource answers every request as Klein's own resource does.

L{msisdnd.api.direct.DirectResource} finds the fixed paths in a dict and
hands the rest to Klein: each request here goes to the daemon's resource
(C{GatewayAPI.resource()}) and to Klein's (C{api.app.resource()}) over the
same C{APISite} on a StringTransport, and the two answers must be the same
bytes (but for C{Date}), and the one expected.  The verifier is a double of
our own interface, answering the way each case needs (no Redis is reached).
"""

from __future__ import annotations

import json
import re

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from msisdnd import hawk
from msisdnd.api.app import GatewayAPI
from msisdnd.api.direct import DirectResource, fixed_routes
from msisdnd.api.discovery import Discovery
from msisdnd.api.request import APISite
from msisdnd.verification.errors import Limit, Refused, StoreUnavailable
from msisdnd.verification.settings import PublicURL, VerificationSettings

from gateway import raw_answer, raw_request

ORIGIN = "https://app.example"


class Verifier:
    """What the routes under test call; C{admit} makes the answer of
    C{register}'s admission (a registration spends the client's buckets in
    the same step), C{storage} the heartbeat's."""

    def __init__(self):
        self.admit = lambda: succeed(None)
        self.storage = lambda: succeed(True)
        self.token = "ab" * 32

    def register(self, client=None):
        return self.admit().addCallback(lambda _: self.token)

    def storageUp(self):
        return self.storage()

    def authenticate(self, authorization, **kwargs):
        try:
            hawk.parse_header(authorization)
        except hawk.HawkError:
            return fail()
        return fail(hawk.UnknownSession("Unknown session."))


def gateway(verifier: Verifier) -> GatewayAPI:
    public = PublicURL("http://127.0.0.1:8000")
    return GatewayAPI(verifier=verifier, signer=None, texts=None,
                      discovery=Discovery([], public.url_for("/sms/mt/verify")),
                      public_url=public, settings=VerificationSettings(), clock=task.Clock(),
                      cors_origins=(ORIGIN,))


def request(method: bytes, path: bytes, body: bytes = b"", headers: dict | None = None) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (method, path), b"Host: 127.0.0.1:8000",
             b"Content-Length: %d" % len(body)]
    lines += [b"%s: %s" % (k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def connect(resource):
    site = APISite(resource, 25 * 1024, task.Clock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 4000))
    channel.makeConnection(transport)
    return channel, transport


def answer(resource, data: bytes) -> bytes:
    channel, transport = connect(resource)
    channel.dataReceived(data)
    return b"\r\n".join(line for line in transport.value().split(b"\r\n")
                        if not line.startswith(b"Date: "))


def both(data: bytes, verifier: Verifier | None = None) -> bytes:
    """The daemon's answer to C{data}, checked equal to Klein's."""
    api = gateway(verifier or Verifier())
    ours = answer(api.resource(), data)
    assert ours == answer(api.app.resource(), data)
    return ours


def status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


JSON = {"Content-Type": "application/json"}
CASES = [
    (request(b"GET", b"/"), 200),
    (request(b"GET", b"/__lbheartbeat__"), 200),
    (request(b"HEAD", b"/__lbheartbeat__"), 200),
    (request(b"GET", b"/__heartbeat__"), 200),
    (request(b"GET", b"/__version__", headers={"Origin": ORIGIN}), 200),
    (request(b"POST", b"/discover", b'{"mcc": "208"}', JSON), 200),
    (request(b"POST", b"/discover", b'{"mcc": "20"}', JSON), 400),
    (request(b"POST", b"/discover", b"[1]", JSON), 400),
    (request(b"POST", b"/discover", b"{not json", JSON), 400),
    (request(b"POST", b"/discover?x=1", b"{}", JSON), 400),
    (request(b"GET", b"/discover"), 405),
    (request(b"PUT", b"/register"), 405),
    (request(b"POST", b"/nowhere"), 404),
    (request(b"POST", b"//register"), 200),
    (request(b"POST", b"/register/"), 404),
    (request(b"POST", b"/regi%73ter"), 200),
    (request(b"OPTIONS", b"/register", headers={"Origin": ORIGIN}), 204),
    (request(b"OPTIONS", b"/", headers={"Origin": ORIGIN}), 204),
    (request(b"POST", b"/register", b"{}", {**JSON, "Origin": ORIGIN}), 200),
    (request(b"POST", b"/register", b"[", JSON), 400),
    (request(b"POST", b"/unregister"), 401),
    (request(b"POST", b"/unregister", headers={"Authorization": "Hawk nonsense"}), 400),
    (request(b"POST", b"/sms/verify_code", b'{"code": "1"}',
             {**JSON, "Authorization": 'Hawk id="%s", ts="1", nonce="n", mac="m"' % ("a" * 64)}),
     401),
    (request(b"GET", b"/v2/verifications/abc"), 404),
]


@pytest.mark.parametrize("data, code", CASES, ids=[c[0].split(b"\r\n")[0].decode()
                                                     for c in CASES])
def test_same_answer_as_klein(data, code):
    assert status(both(data)) == code


@pytest.mark.parametrize("error, code, errno", [
    (StoreUnavailable("down"), 503, 201),
    (Refused(Limit.IP_RATE, 7), 429, None),
    (RuntimeError("a bug"), 500, 999),
])
def test_a_route_failure_is_answered_as_klein_answers_it(error, code, errno):
    verifier = Verifier()
    verifier.admit = lambda: fail(error)
    raw = both(request(b"POST", b"/register", b"{}", JSON), verifier)
    assert status(raw) == code
    body = json.loads(raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n")[1])
    if errno is not None:
        assert body["errno"] == errno
    if isinstance(error, Refused):
        assert b"\r\nRetry-After: 7\r\n" in raw


def test_the_fixed_routes_are_read_off_the_klein_map():
    routes = fixed_routes(gateway(Verifier()).app)
    for path in (b"/register", b"/unregister", b"/sms/mt/verify", b"/sms/verify_code",
                 b"/certificate/sign", b"/v2/verifications", b"/v2/verifications/check"):
        assert (b"POST", path) in routes
    assert (b"GET", b"/__lbheartbeat__") in routes and (b"HEAD", b"/__lbheartbeat__") in routes
    assert not any(b"<" in path for _, path in routes)  # routes with arguments go to Klein
    assert (b"GET", b"/register") not in routes


@pytest.mark.parametrize("direct", [True, False])
def test_a_client_that_hangs_up_cancels_the_route(direct):
    """The route's Deferred is cancelled (the verifier's step with it, when not
    shielded: the heartbeat's), and nothing is written once the client is gone."""
    cancelled = []
    verifier = Verifier()
    step = Deferred(cancelled.append)
    verifier.storage = lambda: step
    api = gateway(verifier)
    resource = api.resource() if direct else api.app.resource()
    assert isinstance(api.resource(), DirectResource)
    channel, transport = connect(resource)
    channel.dataReceived(request(b"GET", b"/__heartbeat__"))
    assert transport.value() == b"" and not cancelled
    channel.connectionLost(Failure(ConnectionDone()))
    assert len(cancelled) == 1
    assert transport.value() == b""


# -- over real HTTP, against the gateway -------------------------------------------


def json_error(raw: bytes) -> tuple[int, bytes, int]:
    """The status, the head and the errno of an answer that must be a JSON error."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head, raw
    if b"Transfer-Encoding: chunked" in head:
        body = body.split(b"\r\n")[1]
    return status(head), head, json.loads(body)["errno"]


def loud(events: list[dict]) -> list[dict]:
    """The log events above info."""
    return [e for e in events if e.get("log_level") is not None
            and e["log_level"].name not in ("debug", "info")]


def registrations(gateway) -> list:
    """Each call of the verifier's register from now on."""
    calls: list = []
    register = gateway.verifier.register
    gateway.verifier.register = lambda *a, **kw: calls.append(a) or register(*a, **kw)
    return calls


@pytest.mark.parametrize("target, host", [
    (b"/%ff", b"127.0.0.1"),
    (b"/v2/verifications/VE%ff", b"127.0.0.1"),
    (b"/v2/verifications/VE" + b"0" * 32, b"\xff\xfe"),
    (b"/nowhere", b"caf\xe9.example"),
])
@pytest_twisted.inlineCallbacks
def test_a_path_or_host_klein_cannot_decode_is_a_json_400_and_logs_nothing(gateway, target,
                                                                          host):
    """Klein answers a path or Host that is not UTF-8 with a text 400 and logs a
    traceback at critical level: a stranger's line in the log per request.
    Here: the API's JSON error, and no log line above info."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        raw = yield gateway.raw(raw_request(b"GET", target).replace(
            b"Host: 127.0.0.1", b"Host: " + host))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert json_error(raw)[::2] == (400, 107), raw
    assert not loud(events)


@pytest.mark.parametrize("method, target", [
    (b"post", b"/register"), (b"Post", b"/unregister"), (b"get", b"/__version__"),
    (b"head", b"/__lbheartbeat__"), (b"options", b"/register"),
    (b"get", b"/v2/verifications/VE" + b"0" * 32),
])
@pytest_twisted.inlineCallbacks
def test_a_method_not_in_upper_case_runs_no_route(gateway, method, target):
    """Methods are case-sensitive: C{post} is not C{POST} (Werkzeug would upper-case
    it, and a front proxy's rule on POST would not have seen it).  501, as JSON, and
    the route never runs."""
    ran = registrations(gateway)
    raw = yield gateway.raw(raw_request(method, target, b"", b"Origin: " + ORIGIN.encode()))
    assert json_error(raw)[::2] == (501, 107), raw
    assert not ran


@pytest_twisted.inlineCallbacks
def test_a_client_that_hangs_up_mid_route_over_tcp(gateway):
    """Over real TCP, on a fixed route: the client leaves while the route waits; the
    request ends, nothing is logged above info, and the route's step, which
    creates the session and spends a registration (shielded), is not cancelled."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        cancelled = yield gateway.hangUpWhileRegistering()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert cancelled == []
    assert not loud(events)


@pytest.mark.parametrize("method, target", [
    (b"POST", b"xregister"), (b"GET", b"x__version__"), (b"GET", b"?"),
    (b"POST", b"xv2/verifications"), (b"OPTIONS", b"xv2/verifications"),
    (b"CONNECT", b"example.com:443"),
])
@pytest_twisted.inlineCallbacks
def test_a_target_that_is_not_a_path_runs_no_route(gateway, method, target):
    """A request target neither a path (/...) nor absolute (http://...): Twisted drops
    its first byte before Klein routes it, so C{xregister} ran /register, and
    C{xv2/verifications} a backend route with CORS headers.  400 JSON, no route run."""
    ran = registrations(gateway)
    raw = yield gateway.raw(raw_request(method, target, b"", b"Origin: " + ORIGIN.encode(),
                                        b"Access-Control-Request-Method: POST"))
    code, head, errno = json_error(raw)
    assert (code, errno) == (400, 107), raw
    assert b"Access-Control-Allow-Methods" not in head
    assert not ran


@pytest_twisted.inlineCallbacks
def test_every_fixed_route_over_tcp_answers_as_klein_does(gateway):
    """Every (method, path) the dict serves, with and without a body, from an allowed
    origin: the same status, headers and body as Klein's own resource gives on a
    second listener (but for the date, the clock and a new session's token)."""
    klein = APISite(gateway.api.app.resource(), 25 * 1024, reactor)
    port = reactor.listenTCP(0, klein, interface="127.0.0.1")
    varying = re.compile(rb"(Date|Timestamp): [^\r]*|\"msisdnSessionToken\": \"[0-9a-f]+\"")
    try:
        for method, path in sorted(fixed_routes(gateway.api.app)):
            for body in (b"", b"{}"):
                request = raw_request(method, path, body, b"Origin: " + ORIGIN.encode(),
                                      b"Content-Type: application/json")
                ours = yield gateway.raw(request)
                theirs = yield raw_answer(port.getHost().port, request)
                assert ours.startswith(b"HTTP/1.1 "), ours
                assert varying.sub(b"", ours) == varying.sub(b"", theirs), (method, path, body)
    finally:
        yield port.stopListening()


@pytest.mark.parametrize("host", [b"a..b", b"\xc3\xa4" * 70, b"\xe2\x80\x8b", b"." * 70,
                                  b"x" * 64 + b".example"])
@pytest_twisted.inlineCallbacks
def test_a_host_werkzeug_refuses_is_a_json_400_and_logs_nothing(gateway, host):
    """A Host that is UTF-8 but no host name IDNA can encode (an empty label, one
    over 63 octets): Werkzeug raises BadHost inside Klein's render, which Twisted
    answered with a text 500 and a traceback at critical, per request.  Here: the
    API's JSON 400 on a Klein route, the answer as ever on a fixed one."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        klein = yield gateway.raw(raw_request(b"GET", b"/v2/verifications/VE" + b"0" * 32)
                                  .replace(b"Host: 127.0.0.1", b"Host: " + host))
        direct = yield gateway.raw(raw_request(b"GET", b"/__version__")
                                   .replace(b"Host: 127.0.0.1", b"Host: " + host))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert json_error(klein)[::2] == (400, 107), klein
    assert direct.startswith(b"HTTP/1.1 200 "), direct
    assert not loud(events)


class HawkVerifier(Verifier):
    """A verifier whose Hawk check passes, and whose unregister step is C{step()}."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def authenticate(self, authorization, **kwargs):
        from msisdnd.verification.authentication import Authenticated
        return succeed(Authenticated("ab" * 32, None))

    def unregister(self, hawk_id, nonce=None):
        return self.step()


HAWK = {"Authorization": 'Hawk id="%s", ts="1", nonce="n", mac="m"' % ("a" * 64)}


@pytest.mark.parametrize("direct", [True, False])
def test_a_client_that_hangs_up_mid_step_does_not_cancel_the_step(direct):
    cancelled = []
    step = Deferred(cancelled.append)
    api = gateway(HawkVerifier(lambda: step))
    channel, transport = connect(api.resource() if direct else api.app.resource())
    channel.dataReceived(request(b"POST", b"/unregister", headers=HAWK))
    channel.connectionLost(Failure(ConnectionDone()))
    assert not cancelled and not step.called
    step.callback(1)  # the step finishes; nothing is written to the gone client
    assert transport.value() == b""


def test_a_step_that_raises_at_once_is_answered_500_999():
    def raises():
        raise RuntimeError("a bug")

    raw = both(request(b"POST", b"/unregister", headers=HAWK), HawkVerifier(raises))
    assert status(raw) == 500
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n")[1])["errno"] == 999
