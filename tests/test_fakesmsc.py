"""Tests for the fake SMSC's HTTP side, its twistd plugin, and smpplib as an independent ESME."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
import smpplib.client
import treq
from smpplib.exceptions import PDUError
from twisted.application.service import IServiceMaker
from twisted.internet import endpoints, reactor, task, threads
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectError
from twisted.python import usage
from twisted.web.server import Site
from zope.interface.verify import verifyObject

from conftest import free_port, wait_until
from msisdnd.fakesmsc.service import FakeSMSCOptions, makeService
from msisdnd.fakesmsc.web import MAX_BODY, FakeSMSCWeb
from msisdnd.smpp import alphabet, codec
from msisdnd.smpp.errors import CommandStatusError
from msisdnd.smpp.session import ESMESession, SessionState

REPO_ROOT = Path(__file__).resolve().parent.parent
SYSTEM_ID, PASSWORD = "msisdnd", "secret"
NUMBER = "33612345678"
OUR_NUMBER = "33700000000"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class HTTP:
    """A JSON client for one HTTP port; no connection outlives its request."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    @inlineCallbacks
    def request(self, method: str, path: str, body: object = None, raw: bytes | None = None):
        """C{(status, content-type, decoded JSON)} of one request."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {b"content-type": [b"application/json"]} if data is not None else None
        response = yield treq.request(method, self.base + path, data=data, headers=headers,
                                      persistent=False, timeout=10)
        content = yield response.content()
        content_type = response.headers.getRawHeaders(b"content-type")
        return response.code, content_type, json.loads(content)


class Rig:
    """A FakeSMSC on loopback with its HTTP side, and the ESMEs bound to it."""

    def __init__(self, harness, mo_timeout: float = 10.0):
        self.harness = harness
        self.smsc = harness.smsc
        self.web = FakeSMSCWeb(self.smsc, mo_timeout=mo_timeout)
        self.http_port = reactor.listenTCP(0, Site(self.web.resource()), interface="127.0.0.1")
        self.http = HTTP(self.http_port.getHost().port)
        self.sessions: list[ESMESession] = []

    @inlineCallbacks
    def esme(self, mode: str = "transceiver", session: ESMESession | None = None):
        """An L{ESMESession} connected over TCP and bound as C{mode}."""
        session = session or ESMESession(reactor)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.harness.portNumber)
        yield endpoints.connectProtocol(endpoint, session)
        self.sessions.append(session)
        yield session.bind(mode, system_id=SYSTEM_ID, password=PASSWORD)
        return session

    @inlineCallbacks
    def stop(self):
        for session in self.sessions:
            if session.state is not SessionState.CLOSED:
                session.transport.abortConnection()
            yield session.whenClosed()
        yield self.http_port.stopListening()


@pytest.fixture
def rig(smsc_factory):
    rigs = []

    def make(mo_timeout: float = 10.0, **smsc_kwargs) -> Rig:
        smsc_kwargs.setdefault("credentials", {SYSTEM_ID: PASSWORD})
        made = Rig(smsc_factory(**smsc_kwargs), mo_timeout)
        rigs.append(made)
        return made

    yield make
    for made in rigs:
        pytest_twisted.blockon(made.stop())


def submit_body(text: str = "Your code is 123456", destination: str = NUMBER) -> bytes:
    return codec.encode_submit_sm_body(
        source_addr="Acme", source_addr_ton=5, destination_addr=destination,
        short_message=alphabet.encode_text(text, "gsm7", 0).parts[0], registered_delivery=1)


# --- GET /receive -------------------------------------------------------------


@pytest.mark.parametrize("query", [NUMBER, "%2B" + NUMBER, "+" + NUMBER])
@pytest_twisted.inlineCallbacks
def test_receive_lists_what_an_esme_submitted(rig, query):
    r = rig()
    esme = yield r.esme()
    resp = yield esme.submit(submit_body("Your code is 123456"))
    yield esme.submit(submit_body("for someone else", destination="33699999999"))

    code, content_type, messages = yield r.http.request("GET", "/receive?to=" + query)

    assert (code, content_type) == (200, [b"application/json"])
    assert len(messages) == 1
    message = messages[0]
    assert message["text"] == "Your code is 123456"
    assert message["message_ids"] == [resp.fields["message_id"]]
    assert (message["from"], message["to"]) == ("Acme", NUMBER)
    assert (message["data_coding"], message["parts"]) == (0, 1)
    assert isinstance(message["received_at"], float)


@pytest_twisted.inlineCallbacks
def test_receive_joins_a_multipart_message(rig):
    r = rig()
    esme = yield r.esme()
    text = "".join(f"part of a long text {i:03d}. " for i in range(12))
    encoded = alphabet.encode_text(text, "gsm7", 77)
    assert len(encoded.parts) >= 2
    ids = []
    for part in encoded.parts:
        resp = yield esme.submit(codec.encode_submit_sm_body(
            source_addr="Acme", source_addr_ton=5, destination_addr=NUMBER, short_message=part,
            esm_class=encoded.esm_class, data_coding=encoded.data_coding))
        ids.append(resp.fields["message_id"])

    code, _, messages = yield r.http.request("GET", "/receive?to=" + NUMBER)

    assert code == 200
    assert [(m["text"], m["parts"], m["message_ids"]) for m in messages] == [
        (text, len(encoded.parts), ids)]


@pytest.mark.parametrize("query", ["", "?to=", "?to=%2B", "?from=" + NUMBER])
@pytest_twisted.inlineCallbacks
def test_receive_needs_a_number(rig, query):
    code, content_type, body = yield rig().http.request("GET", "/receive" + query)
    assert (code, content_type) == (400, [b"application/json"])
    assert "to" in body["error"]


# --- POST /mo -----------------------------------------------------------------


@pytest.mark.parametrize("text", ["/sms/momt/verify abc123", "long MO " * 30])
@pytest_twisted.inlineCallbacks
def test_mo_reaches_the_bound_esme(rig, text):
    r = rig()
    inbound: list[codec.PDU] = []
    yield r.esme(session=ESMESession(reactor, onInbound=inbound.append))

    code, content_type, body = yield r.http.request(
        "POST", "/mo", {"from": "+" + NUMBER, "to": OUR_NUMBER, "text": text})

    expected_parts = len(alphabet.encode_text(text, "gsm7", 0).parts)
    assert (code, content_type) == (200, [b"application/json"])
    assert body == {"delivered": True, "parts": expected_parts}
    assert len(inbound) == expected_parts
    assert all(p.command_id == codec.DELIVER_SM for p in inbound)
    assert {(p.fields["source_addr"], p.fields["destination_addr"]) for p in inbound} == {
        (NUMBER, OUR_NUMBER)}
    pieces = []
    for pdu in inbound:
        payload = pdu.fields["short_message"]
        if pdu.fields["esm_class"] & alphabet.ESM_CLASS_UDHI:
            concat, payload = alphabet.split_udh(payload)
            pieces.append((concat.sequence, payload))
        else:
            pieces.append((1, payload))
    joined = "".join(alphabet.decode_text(inbound[0].fields["data_coding"], p)
                     for _, p in sorted(pieces))
    assert joined == text


@pytest_twisted.inlineCallbacks
def test_mo_without_a_receiver_is_503(rig):
    r = rig()
    yield r.esme("transmitter")  # bound, but cannot take a deliver_sm
    code, content_type, body = yield r.http.request(
        "POST", "/mo", {"from": NUMBER, "to": OUR_NUMBER, "text": "hello"})
    assert (code, content_type) == (503, [b"application/json"])
    assert "bound" in body["error"]


class _DeafESME(ESMESession):
    """An ESME that never answers a deliver_sm."""

    def pduReceived(self, pdu):
        if pdu.command_id != codec.DELIVER_SM:
            super().pduReceived(pdu)


@pytest_twisted.inlineCallbacks
def test_mo_unanswered_is_504(rig):
    r = rig(mo_timeout=0.2)
    yield r.esme(session=_DeafESME(reactor))
    code, _, body = yield r.http.request(
        "POST", "/mo", {"from": NUMBER, "to": OUR_NUMBER, "text": "hello"})
    assert code == 504
    assert "deliver_sm_resp" in body["error"]


class _RefusingESME(ESMESession):
    """An ESME that answers every deliver_sm with ESME_RSYSERR."""

    def pduReceived(self, pdu):
        if pdu.command_id == codec.DELIVER_SM:
            self.send(codec.frame(codec.DELIVER_SM_RESP, pdu.sequence, b"\0", codec.ESME_RSYSERR))
        else:
            super().pduReceived(pdu)


@pytest_twisted.inlineCallbacks
def test_mo_refused_by_the_esme_is_502(rig):
    r = rig()
    yield r.esme(session=_RefusingESME(reactor))
    code, _, body = yield r.http.request(
        "POST", "/mo", {"from": NUMBER, "to": OUR_NUMBER, "text": "hello"})
    assert code == 502
    assert body["status"] == codec.ESME_RSYSERR
    assert "ESME_RSYSERR" in body["error"]


@pytest.mark.parametrize("raw", [
    b"{not json",
    b"\xff\xfe",
    b"[]",
    b'"text"',
    json.dumps({"to": OUR_NUMBER, "text": "x"}).encode(),
    json.dumps({"from": NUMBER, "text": "x"}).encode(),
    json.dumps({"from": NUMBER, "to": OUR_NUMBER}).encode(),
    json.dumps({"from": 33612345678, "to": OUR_NUMBER, "text": "x"}).encode(),
    json.dumps({"from": "+", "to": OUR_NUMBER, "text": "x"}).encode(),
    json.dumps({"from": "1" * 21, "to": OUR_NUMBER, "text": "x"}).encode(),
    json.dumps({"from": NUMBER, "to": OUR_NUMBER, "text": None}).encode(),
    b'{"from": "33612345678", "to": "33700000000", "text": "\\ud800"}',  # a lone surrogate
])
@pytest_twisted.inlineCallbacks
def test_mo_bad_request_is_400(rig, raw):
    r = rig()
    inbound: list = []
    yield r.esme(session=ESMESession(reactor, onInbound=inbound.append))
    code, content_type, body = yield r.http.request("POST", "/mo", raw=raw)
    assert (code, content_type) == (400, [b"application/json"])
    assert isinstance(body["error"], str) and body["error"]
    assert inbound == []


@pytest_twisted.inlineCallbacks
def test_mo_body_over_the_limit_is_413(rig):
    r = rig()
    text = "x" * MAX_BODY
    code, _, body = yield r.http.request(
        "POST", "/mo", {"from": NUMBER, "to": OUR_NUMBER, "text": text})
    assert code == 413
    assert str(MAX_BODY) in body["error"]


# --- GET /, POST /faults, DELETE /messages, errors --------------------------------


@pytest_twisted.inlineCallbacks
def test_status_shows_sessions_counts_and_faults(rig):
    r = rig()
    esme = yield r.esme("transceiver")
    yield esme.submit(submit_body())

    code, content_type, status = yield r.http.request("GET", "/")

    assert (code, content_type) == (200, [b"application/json"])
    assert status["bound"] == [{"system_id": SYSTEM_ID, "mode": "transceiver"}]
    assert (status["submit_count"], status["message_count"]) == (1, 1)
    assert status["faults"]["fail_every"] == 0
    assert status["faults"]["fail_status"] == codec.ESME_RTHROTTLED


@pytest_twisted.inlineCallbacks
def test_faults_make_the_next_submit_throttled(rig):
    r = rig()
    esme = yield r.esme()

    code, _, faults = yield r.http.request("POST", "/faults", {"fail_every": 1})
    assert code == 200
    assert faults["fail_every"] == 1
    assert r.smsc.faults.fail_every == 1

    with pytest.raises(CommandStatusError) as info:
        yield esme.submit(submit_body())
    assert info.value.status == 0x58
    assert not r.smsc.messages


class FrameRecorder(ESMESession):
    """An ESME session that keeps every frame it receives, as it came."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frames: list[bytes] = []

    def frameReceived(self, frame: bytes) -> None:
        self.frames.append(frame)
        super().frameReceived(frame)


@pytest_twisted.inlineCallbacks
def test_faults_answer_ids_without_their_nul(rig):
    """id_without_nul: the submit_sm_resp body is the id's octets alone; the
    message is stored under that id, and the next knob change restores the NUL."""
    r = rig()
    esme = yield r.esme(session=FrameRecorder(reactor))

    code, _, faults = yield r.http.request("POST", "/faults", {"id_without_nul": True})
    assert (code, faults["id_without_nul"]) == (200, True)
    pdu = yield esme.submit(submit_body())

    [stored] = r.smsc.messages
    [message_id] = stored.message_ids
    assert esme.frames[-1] == codec.frame(codec.SUBMIT_SM_RESP, pdu.sequence,
                                          message_id.encode("ascii"))
    assert pdu.status == codec.ESME_ROK
    assert pdu.fields["message_id"] == message_id
    assert pdu.fields[codec.UNTERMINATED_ID] is True

    yield r.http.request("POST", "/faults", {"id_without_nul": False})
    pdu = yield esme.submit(submit_body())
    assert esme.frames[-1].endswith(b"\0")
    assert pdu.fields["message_id"] == r.smsc.messages[-1].message_ids[0]
    assert codec.UNTERMINATED_ID not in pdu.fields


@pytest.mark.parametrize("value", [1, "yes", None])
@pytest_twisted.inlineCallbacks
def test_faults_id_without_nul_takes_a_boolean(rig, value):
    r = rig()
    code, _, body = yield r.http.request("POST", "/faults", {"id_without_nul": value})
    assert code == 400 and "id_without_nul" in body["error"]
    assert r.smsc.faults.id_without_nul is False


@pytest_twisted.inlineCallbacks
def test_faults_convert_numbers_to_the_knob_type(rig):
    r = rig()
    code, _, faults = yield r.http.request(
        "POST", "/faults", {"response_delay": 1, "generic_nack": "zero", "silent": True})
    assert code == 200
    assert (faults["response_delay"], faults["generic_nack"], faults["silent"]) == (1.0, "zero", True)
    assert isinstance(r.smsc.faults.response_delay, float)


@pytest.mark.parametrize("changes", [
    {"no_such_knob": 1},
    {"fail_every": "2"},
    {"fail_every": True},
    {"fail_every": 1.5},
    {"never_respond": 1},
    {"response_delay": -1},
    {"generic_nack": "sometimes"},
    {"fail_every": 1, "bogus": 2},  # all or nothing: fail_every stays 0
])
@pytest_twisted.inlineCallbacks
def test_faults_refuse_unknown_knobs_and_wrong_types(rig, changes):
    r = rig()
    code, content_type, body = yield r.http.request("POST", "/faults", changes)
    assert (code, content_type) == (400, [b"application/json"])
    assert body["error"]
    assert r.smsc.faults.fail_every == 0
    assert r.smsc.faults.response_delay == 0.0


@pytest_twisted.inlineCallbacks
def test_delete_messages_forgets_them(rig):
    r = rig()
    esme = yield r.esme()
    for _ in range(3):
        yield esme.submit(submit_body())
    code, _, body = yield r.http.request("DELETE", "/messages")
    assert (code, body) == (200, {"deleted": 3})
    _, _, messages = yield r.http.request("GET", "/receive?to=" + NUMBER)
    assert messages == []


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/nowhere", 404),
    ("GET", "/mo", 405),
    ("PUT", "/faults", 405),
])
@pytest_twisted.inlineCallbacks
def test_routing_errors_are_json(rig, method, path, status):
    code, content_type, body = yield rig().http.request(method, path)
    assert (code, content_type) == (status, [b"application/json"])
    assert body["error"]


# --- smpplib's blocking client as an independent ESME ---------------------------


def _smpplib_client(port: int) -> smpplib.client.Client:
    return smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)


def _smpplib_submit(port: int) -> list[str]:
    """Bind, submit one message, read its submit_sm_resp, unbind; the message ids seen."""
    client = _smpplib_client(port)
    sent: list[str] = []
    client.set_message_sent_handler(lambda pdu, **kw: sent.append(pdu.message_id))
    client.connect()
    try:
        client.bind_transceiver(system_id=SYSTEM_ID, password=PASSWORD)
        client.send_message(
            source_addr_ton=5, source_addr="Test", dest_addr_ton=1, dest_addr_npi=1,
            destination_addr=NUMBER, short_message=b"hello", registered_delivery=1)
        client.read_once(auto_send_enquire_link=False)
        client.unbind()
    finally:
        client.disconnect()
    return [i.decode("ascii") if isinstance(i, bytes) else i for i in sent]


def _smpplib_bind(port: int, password: str) -> None:
    client = _smpplib_client(port)
    client.connect()
    try:
        client.bind_transceiver(system_id=SYSTEM_ID, password=password)
    finally:
        client.disconnect()


@pytest_twisted.inlineCallbacks
def test_smpplib_client_submits_to_the_fake_smsc(smsc_factory):
    harness = smsc_factory(credentials={SYSTEM_ID: PASSWORD})

    sent = yield threads.deferToThread(_smpplib_submit, harness.portNumber)

    assert len(sent) == 1
    stored = harness.smsc.received(NUMBER)
    assert [(m.message_ids, m.text, m.source) for m in stored] == [(sent, "hello", "Test")]
    assert harness.smsc.bind_count == 1
    yield wait_until(lambda: not harness.smsc.sessions)  # the unbind closed the session


@pytest_twisted.inlineCallbacks
def test_smpplib_client_with_a_wrong_password_is_refused(smsc_factory):
    harness = smsc_factory(credentials={SYSTEM_ID: PASSWORD})

    with pytest.raises(PDUError) as info:
        yield threads.deferToThread(_smpplib_bind, harness.portNumber, "wrong")

    assert info.value.args[1] == codec.ESME_RINVPASWD == 0x0E
    assert harness.smsc.bind_refusals == 1
    assert harness.smsc.bound == []


# --- options and the service ----------------------------------------------------


def parse(*args: str) -> FakeSMSCOptions:
    options = FakeSMSCOptions()
    options.parseOptions(list(args))
    return options


def test_options_defaults():
    options = parse()
    assert options["smpp"] == "tcp:2775:interface=127.0.0.1"
    assert options["http"] == "tcp:8025:interface=127.0.0.1"
    assert options["receipt-delay"] == 1.0
    assert options["receipt-form"] == "tlv"
    assert options.credentials is None


@pytest.mark.parametrize("value,expected", [
    ("2.5", 2.5), ("0", 0.0), ("none", None), ("None", None), ("-1", None)])
def test_options_receipt_delay(value, expected):
    assert parse("--receipt-delay", value)["receipt-delay"] == expected


def test_options_credentials():
    assert parse("--system-id", "acme", "--password", "pw").credentials == {"acme": "pw"}


@pytest.mark.parametrize("args", [
    ["--receipt-form", "xml"],
    ["--receipt-delay", "soon"],
    ["--receipt-delay", "nan"],
    ["--password", "pw"],
])
def test_options_refuse_bad_values(args):
    with pytest.raises(usage.UsageError):
        parse(*args)


def test_make_service_has_the_two_listeners():
    service = makeService(parse("--system-id", "acme", "--password", "pw",
                                "--receipt-delay", "none", "--receipt-form", "both"))
    assert sorted(child.name for child in service) == ["http", "smpp"]
    assert service.smsc.clock is reactor
    assert service.smsc.credentials == {"acme": "pw"}
    assert (service.smsc.receipt_delay, service.smsc.receipt_form) == (None, "both")


# --- the twistd plugin -----------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def test_plugin_provides_a_service_maker():
    from twisted.plugins.fakesmsc_plugin import fakeSMSC

    assert verifyObject(IServiceMaker, fakeSMSC)
    assert fakeSMSC.tapname == "fakesmsc"
    assert fakeSMSC.options is FakeSMSCOptions


def test_installed_twistd_lists_fakesmsc(tmp_path):
    """The venv's own twistd, run outside the checkout with no PYTHONPATH, finds the
    plugin: the package is installed so that twistd sees twisted/plugins/."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([twistd, "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:1] == ["fakesmsc"] for line in result.stdout.splitlines()), result.stdout


@pytest_twisted.inlineCallbacks
def test_twistd_runs_the_fake_smsc_and_stops_on_sigterm(tmp_path):
    port = free_port()
    log_path = tmp_path / "twistd.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            TWISTD + ["-n", "--pidfile", str(tmp_path / "twistd.pid"), "--logfile", "-",
                      "fakesmsc", "--smpp", "tcp:0:interface=127.0.0.1",
                      "--http", f"tcp:{port}:interface=127.0.0.1"],
            cwd=tmp_path, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        status = yield _first_answer(HTTP(port), process, log_path, timeout=20)
        assert status["bound"] == [] and "fail_every" in status["faults"]

        process.send_signal(signal.SIGTERM)
        yield wait_until(lambda: process.poll() is not None, timeout=20)
        log_text = log_path.read_text(errors="replace")
        # twistd stops cleanly, then re-raises the signal that stopped it so
        # that its exit status says so (twisted.application.app._exitWithSignal):
        # a clean stop on SIGTERM ends in -SIGTERM, not 0.
        assert process.returncode in (0, -signal.SIGTERM), log_text
        assert "Server Shut Down." in log_text
        assert "Traceback" not in log_text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@inlineCallbacks
def _first_answer(http: HTTP, process: subprocess.Popen, log_path: Path, timeout: float):
    """Poll C{GET /} until it answers 200 JSON; fail if twistd exits or C{timeout} passes."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"twistd exited with {process.returncode}:\n"
                                 + log_path.read_text(errors="replace"))
        try:
            code, content_type, status = yield http.request("GET", "/")
        except ConnectError:
            if time.monotonic() > deadline:
                raise AssertionError(f"twistd did not answer within {timeout}s:\n"
                                     + log_path.read_text(errors="replace")) from None
            yield task.deferLater(reactor, 0.05, lambda: None)
        else:
            assert (code, content_type) == (200, [b"application/json"])
            return status
