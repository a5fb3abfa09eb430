"""The reference client and C{msisdn-client} against a whole gateway on loopback.

The gateway fixture runs the real API, Redis and SMPP stack with the fake
SMSC; a few tests use a tiny scripted HTTP server instead, to answer what a
real server never would (a forged server time, a proxy's HTML page) or to
look at exactly what the client sent.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import jwt
import mohawk.util
import pytest
import pytest_twisted
from conftest import free_port
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from msisdnd import hawk
from msisdnd.api.app import GatewayAPI
from msisdnd.device.client import (
    APIError,
    MSISDNClient,
    decode_certificate,
    generate_browserid_keypair,
    verify_certificate,
)
from msisdnd.device.cli import build_parser, main, run_verify
from msisdnd.api.discovery import Discovery
from msisdnd.fakesmsc.web import FakeSMSCWeb
from msisdnd.verification.settings import PublicURL

NUMBER = "+33612345678"
AUDIENCE = "https://rp.example"
REPO = Path(__file__).resolve().parent.parent


# -- helpers -------------------------------------------------------------------


class CountingHTTP:
    """A treq HTTPClient that records every request it makes."""

    def __init__(self, inner: HTTPClient):
        self.inner = inner
        self.requests: list[tuple[str, str]] = []

    def request(self, method, url, **kwargs):
        self.requests.append((method, url))
        return self.inner.request(method, url, **kwargs)


class SkewedClock:
    """The reactor's clock, C{offset} seconds off."""

    def __init__(self, offset: float):
        self.offset = offset

    def seconds(self) -> float:
        return reactor.seconds() + self.offset


class Scripted(Resource):
    """An HTTP server that answers every request with C{answer(request)} and keeps them."""

    isLeaf = True

    def __init__(self, answer: Callable):
        super().__init__()
        self.answer = answer
        self.seen: list[dict] = []

    def render(self, request):
        self.seen.append({
            "method": request.method.decode(), "uri": request.uri.decode(),
            "authorization": (request.getHeader(b"authorization") or b"").decode(),
            "content-type": (request.getHeader(b"content-type") or b"").decode(),
            "body": request.content.read()})
        code, headers, body = self.answer(request)
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name.encode(), value.encode())
        return body


@pytest.fixture
def http():
    """A counting treq client with its own connection pool, closed after the test."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    client = CountingHTTP(HTTPClient(Agent(reactor, pool=pool)))
    yield client
    pytest_twisted.blockon(pool.closeCachedConnections())


@pytest.fixture
def listen():
    """Serve a resource on a loopback port: C{listen(resource) -> "http://127.0.0.1:N"}."""
    ports = []

    def start(resource) -> str:
        site = Site(resource)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        ports.append(port)
        return f"http://127.0.0.1:{port.getHost().port}"

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def fake_smsc_url(gateway, listen):
    """The gateway's fake SMSC, its HTTP side served on loopback."""
    return listen(FakeSMSCWeb(gateway.smsc.smsc).resource())


def new_client(gateway, http, **kwargs) -> MSISDNClient:
    return MSISDNClient(gateway.url, treq_client=http, **kwargs)


def wrong(pin: str) -> str:
    return f"{(int(pin) + 1) % 10 ** len(pin):0{len(pin)}d}"


@pytest.fixture(scope="module")
def keypair():
    """One client key pair for the module (RSA generation is slow)."""
    return generate_browserid_keypair()


# -- the library: flows and certificates ---------------------------------------------


@pytest_twisted.inlineCallbacks
def test_mt_flow_and_both_certificates_verify(gateway, http, keypair):
    """register -> mtVerify -> verifyCode -> sign (BrowserID and JWT); each certificate
    verifies against the key document the server publishes and certifies our key."""
    private_key, public_json = keypair
    client = new_client(gateway, http)
    token = yield client.register()
    assert client.token == token and re.fullmatch(r"[0-9a-f]{64}", token)
    assert client.hawkId == hawk.derive_session(bytes.fromhex(token)).id

    result = yield client.mtVerify(NUMBER, "208", "10", accept_language="fr")
    assert result is None
    pin = yield gateway.pin(NUMBER)
    assert gateway.smsc.smsc.received(NUMBER)[-1].text.startswith("Votre code")
    assert (yield client.verifyCode(pin)) == NUMBER

    numbers = private_key.public_key().public_numbers()
    browserid = yield client.sign(public_json, 3600)
    claims = verify_certificate(browserid, (yield client.wellKnown()), issuer="127.0.0.1")
    assert claims["verifiedMSISDN"] == NUMBER
    assert claims["public-key"] == {"algorithm": "RS", "n": str(numbers.n), "e": str(numbers.e)}
    assert claims["exp"] - claims["iat"] == 3_610_000
    assert decode_certificate(browserid) == claims

    token_jwt = yield client.sign(public_json, 600, fmt="jwt", audience=AUDIENCE)
    keys = yield client.jwks()
    claims = verify_certificate(token_jwt, keys, audience=AUDIENCE, issuer=gateway.url)
    assert claims["phone_number"] == NUMBER and claims["aud"] == AUDIENCE
    assert claims["cnf"]["jwk"]["n"] == jwt.utils.to_base64url_uint(numbers.n).decode()
    assert jwt.get_unverified_header(token_jwt)["alg"] == "EdDSA"


@pytest_twisted.inlineCallbacks
def test_verify_certificate_refuses_what_it_should(gateway, http, keypair):
    """Wrong document, wrong audience, a flipped claim, expired or not-yet-valid
    certificates of both forms (BrowserID in ms): each raises a PyJWT InvalidTokenError."""
    _, public_json = keypair
    client = new_client(gateway, http)
    yield client.register()
    yield client.mtVerify(NUMBER, "208")
    yield client.verifyCode((yield gateway.pin(NUMBER)))
    browserid = yield client.sign(public_json, 60)
    token_jwt = yield client.sign(public_json, 60, fmt="jwt")
    well_known, keys = (yield client.wellKnown()), (yield client.jwks())

    assert verify_certificate(token_jwt, keys)["phone_number"] == NUMBER  # no aud: none needed
    with pytest.raises(jwt.InvalidTokenError):
        verify_certificate(token_jwt, well_known)  # EdDSA token, RS256 pinned
    with pytest.raises(jwt.InvalidTokenError):
        verify_certificate(browserid, keys)  # RS256 token, EdDSA pinned
    audience_jwt = yield client.sign(public_json, 60, fmt="jwt", audience=AUDIENCE)
    with pytest.raises(jwt.InvalidAudienceError):
        verify_certificate(audience_jwt, keys)
    with pytest.raises(jwt.InvalidAudienceError):
        verify_certificate(audience_jwt, keys, audience="https://other.example")
    header, _, signature = browserid.split(".")
    forged = dict(decode_certificate(browserid), verifiedMSISDN="+33698765432")
    forged_payload = jwt.utils.base64url_encode(json.dumps(forged).encode()).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        verify_certificate(f"{header}.{forged_payload}.{signature}", well_known)
    later = reactor.seconds() + 120
    with pytest.raises(jwt.ExpiredSignatureError):
        verify_certificate(browserid, well_known, now=later)
    with pytest.raises(jwt.ExpiredSignatureError):
        verify_certificate(token_jwt, keys, now=later)
    earlier = reactor.seconds() - 120
    with pytest.raises(jwt.ImmatureSignatureError):
        verify_certificate(browserid, well_known, now=earlier)
    with pytest.raises(jwt.ImmatureSignatureError):
        verify_certificate(token_jwt, keys, now=earlier)
    assert verify_certificate(browserid, well_known, now=reactor.seconds())["verifiedMSISDN"]
    with pytest.raises(ValueError):
        verify_certificate(token_jwt, {"something": "else"})


@pytest_twisted.inlineCallbacks
def test_mo_flow(gateway, http):
    """discover gives moVerifier; the device's silent SMS carries the client's Hawk id;
    the bare 32-hex code that comes back verifies the number."""
    client = new_client(gateway, http)
    found = yield client.discover("208")
    assert "sms/momt" in found["verificationMethods"]
    mo_verifier = found["verificationDetails"]["sms/momt"]["moVerifier"]
    yield client.register()
    yield gateway.smsc.smsc.deliverMO(NUMBER, mo_verifier.lstrip("+"),
                                      f"/sms/momt/verify {client.hawkId}")
    code = yield gateway.pin(NUMBER)
    assert re.fullmatch(r"[0-9a-f]{32}", code)
    assert (yield client.verifyCode(code)) == NUMBER


@pytest_twisted.inlineCallbacks
def test_default_http_client_and_public_documents(gateway):
    """Without treq_client the client uses treq's shared pool; the key documents come back
    as the server publishes them."""
    client = MSISDNClient(gateway.url + "/")
    assert client.server_url == gateway.url
    found = yield client.discover("208", msisdn=NUMBER)
    assert found["verificationMethods"] == ["sms/mt", "sms/momt"]
    assert found["verificationDetails"]["sms/mt"]["url"] == gateway.url + "/sms/mt/verify"
    assert (yield client.wellKnown())["public-key"] == gateway.signer.browserid_public_key()
    assert (yield client.jwks()) == gateway.signer.jwks()


@pytest_twisted.inlineCallbacks
def test_wrong_code_is_an_api_error_with_its_fields(gateway, http):
    client = new_client(gateway, http)
    yield client.register()
    yield client.mtVerify(NUMBER, "208")
    pin = yield gateway.pin(NUMBER)
    with pytest.raises(APIError) as caught:
        yield client.verifyCode(wrong(pin))
    e = caught.value
    assert (e.code, e.errno, e.message) == (400, 105, "Invalid code.")
    assert e.body["triesLeft"] == 2 and e.body["error"] == "Bad Request"
    assert e.headers["content-type"].startswith("application/json")
    assert str(e) == "Invalid code. (HTTP 400, errno 105, 2 tries left)"
    assert (yield client.verifyCode(pin)) == NUMBER  # the session survives a wrong try


@pytest_twisted.inlineCallbacks
def test_resend_too_soon_is_429_with_retry_after(gateway, http):
    client = new_client(gateway, http)
    yield client.register()
    yield client.mtVerify(NUMBER, "208")
    with pytest.raises(APIError) as caught:
        yield client.resendCode()
    e = caught.value
    assert (e.code, e.errno) == (429, 114)
    assert 1 <= int(e.headers["retry-after"]) <= 30
    assert str(e).endswith(f"(HTTP 429, errno 114, retry after {e.headers['retry-after']} s)")
    assert len(gateway.smsc.smsc.received(NUMBER)) == 1


@pytest_twisted.inlineCallbacks
def test_unregister_forgets_the_session(gateway, http):
    """After unregister the client has no token; the old token is an unknown session
    (401 errno 110, no clock retry)."""
    client = new_client(gateway, http)
    token = yield client.register()
    yield client.unregister()
    assert client.token is None
    with pytest.raises(ValueError):
        _ = client.hawkId
    with pytest.raises(ValueError):
        yield client.verifyCode("123456")
    before = len(http.requests)
    stale = new_client(gateway, http, token=token)
    with pytest.raises(APIError) as caught:
        yield stale.verifyCode("123456")
    assert (caught.value.code, caught.value.errno) == (401, 110)
    assert len(http.requests) == before + 1


# -- Hawk clock-skew correction ---------------------------------------------------------


@pytest.mark.parametrize("skew", [-300, 300])
@pytest_twisted.inlineCallbacks
def test_a_clock_five_minutes_off_is_corrected_with_one_retry(gateway, http, skew):
    """The first signed request is refused as stale and retried once with the server's
    time (verified by its tsm); the offset sticks, so later requests go through at once."""
    client = new_client(gateway, http, clock=SkewedClock(skew))
    yield client.register()
    assert len(http.requests) == 1 and client.clockOffset == 0

    yield client.mtVerify(NUMBER, "208")
    assert [m for m, _ in http.requests[1:]] == ["POST", "POST"]
    assert all(url.endswith("/sms/mt/verify") for _, url in http.requests[1:])
    assert abs(client.clockOffset + skew) <= 2

    pin = yield gateway.pin(NUMBER)
    assert (yield client.verifyCode(pin)) == NUMBER
    assert len(http.requests) == 4


@pytest.fixture
def scripted(listen):
    """A scripted server: C{scripted(answer) -> (url, resource)}."""

    def start(answer):
        resource = Scripted(answer)
        return listen(resource), resource

    return start


def _stale(key: str | None, ts: int):
    tsm = "Zm9yZ2Vk" if key is None else mohawk.util.calculate_ts_mac(
        ts, {"id": "x", "key": key, "algorithm": "sha256"}).decode()
    body = json.dumps({"code": 401, "errno": 110, "error": "Unauthorized",
                       "message": "Stale timestamp"}).encode()
    return 401, {"WWW-Authenticate": f'Hawk ts="{ts}", tsm="{tsm}", error="Stale timestamp"',
                 "Content-Type": "application/json"}, body


@pytest_twisted.inlineCallbacks
def test_a_server_time_whose_tsm_does_not_verify_is_ignored(scripted, http):
    """Only the key holder can move our clock: a forged tsm fails the call at once."""
    url, server = scripted(lambda request: _stale(None, int(reactor.seconds()) + 1000))
    client = MSISDNClient(url, token=secrets.token_hex(32), treq_client=http)
    with pytest.raises(APIError) as caught:
        yield client.verifyCode("123456")
    assert (caught.value.code, caught.value.errno) == (401, 110)
    assert len(server.seen) == 1 and client.clockOffset == 0


@pytest_twisted.inlineCallbacks
def test_the_clock_retry_happens_once(scripted, http):
    """A server that calls every timestamp stale (with a valid tsm) gets two requests."""
    token = secrets.token_hex(32)
    key = hawk.derive_session(bytes.fromhex(token)).key
    url, server = scripted(lambda request: _stale(key, int(reactor.seconds()) + 1000))
    client = MSISDNClient(url, token=token, treq_client=http)
    with pytest.raises(APIError) as caught:
        yield client.verifyCode("123456")
    assert caught.value.code == 401
    assert len(server.seen) == 2
    assert 998 <= client.clockOffset <= 1001
    first, second = (hawk.parse_header(s["authorization"]) for s in server.seen)
    assert second.ts - first.ts >= 998 and first.nonce != second.nonce


@pytest_twisted.inlineCallbacks
def test_full_flow_behind_a_proxy_prefix(gateway, listen, http, keypair):
    """A daemon whose public URL is http://proxy/v1/msisdn, behind a reverse proxy that
    strips /v1/msisdn: the client given that URL signs what the daemon checks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # it imports http.HTTPClient
        from twisted.web.proxy import ReverseProxyResource

    root, v1 = Resource(), Resource()
    root.putChild(b"v1", v1)
    server_url = listen(root) + "/v1/msisdn"
    public = PublicURL(server_url)
    running = gateway.api
    api = GatewayAPI(verifier=running.verifier, signer=running.signer,
                    discovery=Discovery([], public.url_for("/sms/mt/verify")),
                    texts=running.texts, public_url=public,
                    settings=running.settings, clock=reactor)
    backend = listen(api.resource())
    v1.putChild(b"msisdn", ReverseProxyResource(
        "127.0.0.1", int(backend.rsplit(":", 1)[1]), b""))

    client = MSISDNClient(server_url, treq_client=http)
    yield client.register()
    yield client.mtVerify(NUMBER, "208")
    assert (yield client.verifyCode((yield gateway.pin(NUMBER)))) == NUMBER
    cert = yield client.sign(keypair[1], 60, fmt="jwt")
    assert verify_certificate(cert, (yield client.jwks()))["phone_number"] == NUMBER
    assert all(url.startswith(server_url + "/") for _, url in http.requests)
    with pytest.raises(APIError) as caught:  # the same request signed without the prefix
        yield MSISDNClient(backend, token=client.token, treq_client=http).resendCode()
    assert (caught.value.code, caught.value.errno) == (401, 110)


# -- what goes on the wire ----------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_signature_covers_the_prefixed_url_and_the_body(scripted, http):
    """Behind a proxy prefix the MAC is over server_url + path, and the payload hash
    covers the JSON body and its Content-Type."""
    url, server = scripted(lambda request: (
        200, {"Content-Type": "application/json"}, b'{"msisdn": "+33612345678"}'))
    token = secrets.token_hex(32)
    credentials = hawk.derive_session(bytes.fromhex(token))
    client = MSISDNClient(url + "/v1/msisdn/", token=token, treq_client=http)
    assert (yield client.verifyCode("123456")) == NUMBER
    (seen,) = server.seen
    assert seen["uri"] == "/v1/msisdn/sms/verify_code"
    assert json.loads(seen["body"]) == {"code": "123456"}
    parsed = hawk.parse_header(seen["authorization"])
    assert parsed.id == credentials.id and parsed.hash is not None

    def check(url: str, content: bytes) -> None:
        hawk.verify_request(parsed, credentials, method="POST", url=url, content=content,
                            content_type=seen["content-type"], now=reactor.seconds())

    check(url + "/v1/msisdn/sms/verify_code", seen["body"])
    with pytest.raises(hawk.BadMAC):
        check(url + "/sms/verify_code", seen["body"])
    with pytest.raises(hawk.BadMAC):
        check(url + "/v1/msisdn/sms/verify_code", b'{"code": "654321"}')


@pytest_twisted.inlineCallbacks
def test_an_error_page_that_is_not_json(scripted, http):
    url, _ = scripted(lambda request: (502, {"Content-Type": "text/html"}, b"<h1>oops</h1>"))
    with pytest.raises(APIError) as caught:
        yield MSISDNClient(url, treq_client=http).discover("208")
    e = caught.value
    assert (e.code, e.errno, e.body) == (502, None, b"<h1>oops</h1>")
    assert str(e) == "Bad Gateway (HTTP 502)"


# -- the command line ------------------------------------------------------------------------


def verify_args(*argv: str):
    return build_parser().parse_args(["verify", *argv])


@pytest.mark.parametrize("fmt", ["browserid", "jwt"])
@pytest_twisted.inlineCallbacks
def test_cli_mt_flow_with_the_fake_smsc(gateway, fake_smsc_url, http, fmt):
    """The code is read from the fake SMSC's /receive; the JSON printed holds the number,
    and a certificate that verifies here too."""
    extra = ["--audience", AUDIENCE] if fmt == "jwt" else []
    args = verify_args(NUMBER, "--server", gateway.url, "--fake-smsc", fake_smsc_url,
                       "--format", fmt, "--mnc", "01", "--duration", "600", *extra)
    out, err = io.StringIO(), io.StringIO()
    status = yield run_verify(reactor, args, out, err)
    assert (status, err.getvalue()) == (0, "")
    printed = json.loads(out.getvalue())
    assert printed["msisdn"] == NUMBER and printed["format"] == fmt
    assert len(gateway.smsc.smsc.received(NUMBER)) == 1
    client = MSISDNClient(gateway.url, treq_client=http)
    keys = yield (client.jwks() if fmt == "jwt" else client.wellKnown())
    claims = verify_certificate(printed["certificate"], keys, audience=extra and AUDIENCE)
    assert claims == printed["claims"]
    if fmt == "jwt":
        assert claims["phone_number"] == NUMBER and claims["exp"] - claims["iat"] == 600
    else:
        assert claims["verifiedMSISDN"] == NUMBER


@pytest_twisted.inlineCallbacks
def test_cli_long_code_ignores_older_messages(gateway, fake_smsc_url):
    """--long asks for a 32-hex code; an SMS already at the fake SMSC is not taken for it."""
    older = yield ensureDeferred(_one_short_code(gateway))
    args = verify_args(NUMBER, "--server", gateway.url, "--fake-smsc", fake_smsc_url, "--long")
    out, err = io.StringIO(), io.StringIO()
    status = yield run_verify(reactor, args, out, err)
    assert (status, err.getvalue()) == (0, ""), out.getvalue()
    texts = [m.text for m in gateway.smsc.smsc.received(NUMBER)]
    assert texts[0] == older and re.fullmatch(r"[0-9a-f]{32}", texts[1])
    assert json.loads(out.getvalue())["msisdn"] == NUMBER


async def _one_short_code(gateway) -> str:
    """Another session sends a short code to NUMBER; its text."""
    token = await gateway.register()
    await gateway.call("POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"}, token=token)
    await gateway.pin(NUMBER)
    return gateway.smsc.smsc.received(NUMBER)[-1].text


@pytest_twisted.inlineCallbacks
def test_cli_reads_the_code_from_the_prompt(gateway):
    prompts = []

    def prompt(text: str) -> Deferred:
        prompts.append(text)
        return gateway.pin(NUMBER)

    args = verify_args(NUMBER, "--server", gateway.url, "--format", "jwt")
    out, err = io.StringIO(), io.StringIO()
    status = yield run_verify(reactor, args, out, err, prompt=prompt)
    assert (status, prompts) == (0, ["Code: "])
    assert json.loads(out.getvalue())["claims"]["phone_number"] == NUMBER


@pytest_twisted.inlineCallbacks
def test_cli_wrong_code_prints_one_error_line(gateway):
    def prompt(text: str) -> Deferred:
        return gateway.pin(NUMBER).addCallback(wrong)

    args = verify_args(NUMBER, "--server", gateway.url)
    out, err = io.StringIO(), io.StringIO()
    status = yield run_verify(reactor, args, out, err, prompt=prompt)
    assert status == 1 and out.getvalue() == ""
    assert err.getvalue() == "error: Invalid code. (HTTP 400, errno 105, 2 tries left)\n"


@pytest_twisted.inlineCallbacks
def test_cli_mo_flow(gateway, fake_smsc_url):
    """--mo: the fake SMSC delivers the silent SMS; the long code comes back and verifies.
    The number may be typed with spaces: the fake SMSC is asked about its E.164 form."""
    args = verify_args("+33 6 12 34 56 78", "--server", gateway.url,
                       "--fake-smsc", fake_smsc_url, "--mo")
    out, err = io.StringIO(), io.StringIO()
    status = yield run_verify(reactor, args, out, err)
    assert (status, err.getvalue()) == (0, "")
    (sms,) = gateway.smsc.smsc.received(NUMBER)
    assert re.fullmatch(r"[0-9a-f]{32}", sms.text)
    printed = json.loads(out.getvalue())
    assert printed["msisdn"] == NUMBER and printed["claims"]["verifiedMSISDN"] == NUMBER


@pytest_twisted.inlineCallbacks
def test_cli_unreachable_server():
    args = verify_args(NUMBER, "--server", f"http://127.0.0.1:{free_port()}")
    out, err = io.StringIO(), io.StringIO()
    status = yield run_verify(reactor, args, out, err)
    assert status == 1 and out.getvalue() == ""
    assert err.getvalue().startswith("error: cannot connect:") and err.getvalue().count("\n") == 1


def test_cli_mo_needs_the_fake_smsc(capsys):
    assert main(["verify", NUMBER, "--server", "http://127.0.0.1:1", "--mo"]) == 2
    assert "--mo needs --fake-smsc" in capsys.readouterr().err
    assert main(["verify", NUMBER]) == 2  # --server is required
    assert "--server" in capsys.readouterr().err


def test_cli_help_in_a_subprocess():
    done = subprocess.run([sys.executable, "-m", "msisdnd.device.cli", "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: msisdn-client") and "verify" in done.stdout


@pytest_twisted.inlineCallbacks
def test_cli_main_in_a_subprocess(gateway, fake_smsc_url):
    """main() under task.react, in its own process: exit 0 and the JSON on stdout; then
    exit 1 with one error line when the server cannot be reached."""
    argv = ["-m", "msisdnd.device.cli", "verify", NUMBER, "--server", gateway.url,
            "--fake-smsc", fake_smsc_url]
    out, err, code = yield getProcessOutputAndValue(
        sys.executable, argv, env=dict(os.environ), path=str(REPO))
    assert code == 0, err
    assert json.loads(out)["claims"]["verifiedMSISDN"] == NUMBER

    out, err, code = yield getProcessOutputAndValue(
        sys.executable, ["-m", "msisdnd.device.cli", "verify", NUMBER, "--server",
                         f"http://127.0.0.1:{free_port()}"], env=dict(os.environ),
        path=str(REPO))
    assert (code, out) == (1, b"")
    assert err.startswith(b"error: cannot connect:") and err.count(b"\n") == 1


class TypingUser(ProcessProtocol):
    """Answers the command's C{Code: } prompt with C{typed()} once it appears on stderr."""

    def __init__(self, typed: Callable[[], Deferred]):
        self.typed = typed
        self.out, self.err = b"", b""
        self.prompted = False
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data
        if not self.prompted and b"Code: " in self.err:
            self.prompted = True
            self.typed().addCallback(self.type)

    def type(self, code: str) -> None:
        self.transport.write(code.encode() + b"\n")
        self.transport.closeStdin()

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


@pytest_twisted.inlineCallbacks
def test_cli_stdin_prompt_in_a_subprocess(gateway):
    """Without --fake-smsc the code is typed on stdin after a prompt on stderr, read in a
    thread while the reactor keeps serving."""
    user = TypingUser(lambda: gateway.pin(NUMBER))
    reactor.spawnProcess(user, sys.executable, [
        sys.executable, "-m", "msisdnd.device.cli", "verify", NUMBER, "--server", gateway.url,
        "--format", "jwt"], env=dict(os.environ), path=str(REPO))
    code = yield user.ended
    assert user.prompted and code == 0, user.err
    assert user.err == b"Code: "
    assert json.loads(user.out)["claims"]["phone_number"] == NUMBER

