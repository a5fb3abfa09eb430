"""The real `twistd msisdnd` as a subprocess: real Redis, the fake SMSC, HTTP on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.web.server import Site

from msisdnd.cli import keygen
from msisdnd.device.client import MSISDNClient
from msisdnd.fakesmsc.web import FakeSMSCWeb

from conftest import free_port, wait_until

BIN = os.path.dirname(sys.executable)
NUMBER = "+33612345678"


class Running:
    """One daemon subprocess and what it listens on."""

    def __init__(self, process, api: str, admin: str, log_path: str):
        self.process = process
        self.api = api
        self.admin = admin
        self.log_path = log_path

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()


def write_config(tmp_path, smsc_port: int, redis_port: int, api_port: int, admin_port: int,
                 *, redis_db: int = 0, limits: str = "", tables: str = "",
                 redis_credentials: str = "", admin: str = "", carrier: str = "",
                 http: str = "") -> str:
    """A daemon's configuration under C{tmp_path}, with its keys and master
    secret; C{limits} adds lines to C{[limits]}, C{http} to C{[http]}, C{admin} to C{[admin]},
    C{tables} more tables, C{carrier} more keys to the carrier C{fake}."""
    with open(os.devnull, "w") as quiet:
        keygen(str(tmp_path / "keys"), str(tmp_path / "master"), quiet)
    path = tmp_path / "msisdnd.toml"
    path.write_text(textwrap.dedent(f"""
        [http]
        listen = "tcp:{api_port}:interface=127.0.0.1"
        public_url = "http://127.0.0.1:{api_port}"
        {http}
        [admin]
        listen = "tcp:{admin_port}:interface=127.0.0.1"
        {admin}
        [redis]
        url = "redis://{redis_credentials}127.0.0.1:{redis_port}/{redis_db}"
        [keys]
        browserid = ["keys/browserid.pem"]
        jwt = ["keys/jwt.pem"]
        [secrets]
        master_file = "master"
        [verification]
        send_timeout = 5
        [limits]
        countries = ["FR"]
        # One address sends the whole load here.
        ip_registrations_minute = 1000
        ip_sends_minute = 1000
    """) + textwrap.dedent(limits) + textwrap.dedent(tables) + textwrap.dedent(f"""
        [[carrier]]
        name = "fake"
        host = "127.0.0.1"
        port = {smsc_port}
        system_id = "msisdnd"
        password = "pw"
        mt_sender = "msisdnd"
        mo_verifier = "33700000000"
        default = true
        region = "FR"
        reconnect_delay_initial = 0.05
        reconnect_delay_max = 0.2
    """) + textwrap.dedent(carrier))
    return str(path)


def start(config: str, tmp_path, *, logger: bool = True) -> subprocess.Popen:
    """C{twistd msisdnd}, its output to C{daemon.log}; with C{--logger
    msisdnd.logs.observer} unless C{logger} is false (the plugin's own observer)."""
    log_path = tmp_path / "daemon.log"
    out = open(log_path, "w")
    twistd = ["--nodaemon", "--pidfile="]
    if logger:
        twistd += ["--logger", "msisdnd.logs.observer"]
    process = subprocess.Popen(
        [os.path.join(BIN, "twistd"), *twistd, "msisdnd", "--config", config],
        stdout=out, stderr=subprocess.STDOUT, cwd=str(tmp_path))
    return process, str(log_path)


@pytest.fixture
def daemon(smsc_factory, redis_server, tmp_path):
    harness = smsc_factory()
    yield from run_daemon(tmp_path, harness, redis_server)


def run_daemon(tmp_path, harness, redis_server, **options):
    """Run a daemon on C{harness}'s fake SMSC (C{options} go to L{write_config})
    until the heartbeat says it is up; yield its L{Running}; stop it."""
    api_port, admin_port = free_port(), free_port()
    config = write_config(tmp_path, harness.portNumber, redis_server.port, api_port, admin_port,
                          **options)
    process, log_path = start(config, tmp_path)
    running = Running(process, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{admin_port}",
                      log_path)
    running.harness = harness
    running.config = config
    try:
        pytest_twisted.blockon(wait_until(lambda: heartbeat_ok(running), timeout=30,
                                          interval=0.1))
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            # The reactor must keep turning meanwhile: the fake SMSC answers the unbinds.
            try:
                pytest_twisted.blockon(wait_until(lambda: process.poll() is not None,
                                                  timeout=20, interval=0.05))
            except AssertionError:
                process.kill()
                process.wait()


def heartbeat_ok(running: Running) -> bool:
    if running.process.poll() is not None:
        raise AssertionError(f"msisdnd exited {running.process.returncode}:\n{running.log()}")
    import urllib.request

    try:
        with urllib.request.urlopen(running.api + "/__heartbeat__", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def scrape(admin: str) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(admin + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@pytest_twisted.inlineCallbacks
def test_verification_through_the_daemon_moves_the_metrics(daemon):
    """A whole MT flow through the running daemon; the admin listener's metrics
    and bind table show it."""
    key = 'msisdnd_verifications_total{method="sms/mt",outcome="succeeded"}'
    before = scrape(daemon.admin).get(key, 0.0)
    client = MSISDNClient(daemon.api)
    yield client.register()
    yield client.mtVerify(NUMBER, "208", short=True)
    smsc = daemon.harness.smsc
    yield wait_until(lambda: smsc.received(NUMBER))
    pin = smsc.received(NUMBER)[-1].text.split()[-1]
    assert (yield client.verifyCode(pin)) == NUMBER
    after = scrape(daemon.admin)
    assert after[key] == before + 1
    assert after['msisdnd_binds_up{carrier="fake"}'] == 1
    assert after['msisdnd_submit_outcomes_total{carrier="fake",status="ESME_ROK"}'] >= 1
    assert after['msisdnd_http_requests_total{route="/sms/verify_code",status="200"}'] >= 1
    table = subprocess.run([os.path.join(BIN, "msisdnd"), "binds", "--admin", daemon.admin],
                           capture_output=True, text=True, timeout=30)
    assert table.returncode == 0
    assert table.stdout.splitlines()[1].split()[:4] == ["fake", "fake/0", "transceiver", "bound"]
    log = daemon.log()
    assert "GET /metrics" not in log and "GET /binds" not in log  # scrapes are not logged


@pytest.fixture
def short_grace(smsc_factory, redis_server, tmp_path):
    """A daemon whose carrier is down 1 s after its binds drop (reconnect_grace)."""
    yield from run_daemon(tmp_path, smsc_factory(), redis_server, carrier="reconnect_grace = 1")


@pytest_twisted.inlineCallbacks
def test_heartbeat_says_which_part_is_down(short_grace):
    """With the SMSC gone the heartbeat is 503 naming the carriers (once the
    carrier's reconnect_grace is over); back when it returns."""
    daemon = short_grace
    harness = daemon.harness
    port = harness.portNumber
    yield harness.stop()
    deadline = reactor.seconds() + 20  # the grace, and a loaded machine's slowness
    while True:
        r = yield treq.get(daemon.api + "/__heartbeat__")
        body = yield r.json()
        if r.code == 503 or reactor.seconds() > deadline:
            break
        yield task.deferLater(reactor, 0.02, lambda: None)
    assert (r.code, body) == (503, {"storage": True, "carriers": False})
    detail = yield (yield treq.get(daemon.admin + "/health")).json()
    assert detail["storage"] == "up" and detail["unserved"] == ["default"]
    (fake,) = detail["carriers"]
    assert fake["name"] == "fake" and not fake["bound"] and not fake["available"]
    harness.listen(port)
    yield wait_until(lambda: heartbeat_ok(daemon), timeout=20, interval=0.1)
    detail = yield (yield treq.get(daemon.admin + "/health")).json()
    assert detail["unserved"] == [] and detail["carriers"][0]["bound"]


@pytest_twisted.inlineCallbacks
def test_msisdn_client_cli_against_the_daemon(daemon):
    """`msisdn-client verify` walks the MT flow, reading the PIN from the fake SMSC's HTTP side."""
    web = reactor.listenTCP(0, Site(FakeSMSCWeb(daemon.harness.smsc).resource()),
                            interface="127.0.0.1")
    try:
        from twisted.internet.utils import getProcessOutputAndValue

        out, err, code = yield getProcessOutputAndValue(
            os.path.join(BIN, "msisdn-client"),
            ["verify", NUMBER, "--server", daemon.api, "--fake-smsc",
             f"http://127.0.0.1:{web.getHost().port}", "--format", "jwt"],
            env=dict(os.environ))
    finally:
        yield web.stopListening()
    assert code == 0, err.decode()
    result = json.loads(out)
    assert result["msisdn"] == NUMBER and result["claims"]["phone_number"] == NUMBER


@pytest_twisted.inlineCallbacks
def test_sigterm_under_load_answers_every_accepted_request(daemon):
    """SIGTERM while sends are in flight: every request the daemon accepted gets its
    answer (204 or an error), none vanishes, and the daemon exits 0."""
    smsc = daemon.harness.smsc
    smsc.faults.response_delay = 0.3
    clients = [MSISDNClient(daemon.api) for _ in range(12)]
    yield DeferredList([c.register() for c in clients])
    outcomes = []

    def record(result, index):
        outcomes.append((index, "answered", getattr(result, "value", result)))

    def failed(failure, index):
        from msisdnd.device.client import APIError

        if failure.check(APIError):
            outcomes.append((index, "answered", failure.value.code))
        else:
            outcomes.append((index, "lost", repr(failure.value)))

    sends = [c.mtVerify(f"+336123400{i:02d}", "208").addCallbacks(
        record, failed, callbackArgs=(i,), errbackArgs=(i,)) for i, c in enumerate(clients)]
    yield wait_until(lambda: smsc.submit_count >= 1)
    daemon.process.send_signal(signal.SIGTERM)
    yield DeferredList(sends)
    yield wait_until(lambda: daemon.process.poll() is not None, timeout=30, interval=0.05)
    assert [o for o in outcomes if o[1] == "lost"] == [], daemon.log()
    assert len(outcomes) == len(clients)
    assert daemon.process.returncode == 0, daemon.log()
    assert "msisdnd stopped" in daemon.log()


@pytest_twisted.inlineCallbacks
def test_sighup_during_the_graceful_stop_neither_kills_nor_reloads(daemon):
    """A SIGHUP (logrotate, an operator) while the daemon drains on SIGTERM:
    the stop finishes gracefully (exit 0), with no reload meanwhile."""
    smsc = daemon.harness.smsc
    smsc.faults.response_delay = 1.5
    client = MSISDNClient(daemon.api)
    yield client.register()
    send = client.mtVerify("+33612349999", "208")
    send.addErrback(lambda f: None)
    yield wait_until(lambda: smsc.submit_count >= 1)
    daemon.process.send_signal(signal.SIGTERM)
    yield wait_until(lambda: "shutting down" in daemon.log(), timeout=5, interval=0.02)
    daemon.process.send_signal(signal.SIGHUP)
    yield send
    yield wait_until(lambda: daemon.process.poll() is not None, timeout=30, interval=0.05)
    assert daemon.process.returncode == 0, daemon.log()
    assert "msisdnd stopped" in daemon.log() and "reloaded" not in daemon.log()


def test_a_sighup_during_start_up_reloads_once_the_daemon_is_up():
    """Before every part has started, a reload would reconfigure carriers
    that are not running yet: it waits, and happens once."""
    from types import SimpleNamespace

    from twisted.internet.defer import succeed

    from msisdnd.daemon import Daemon

    reloads = []
    config = SimpleNamespace(path="msisdnd.toml", admin=SimpleNamespace(listen="off"),
                             http=SimpleNamespace(public_url=SimpleNamespace(base="b"), listen=[]))
    daemon = SimpleNamespace(running=True, _ready=False, _reload_waiting=False, config=config,
                             control=SimpleNamespace(reload=lambda: reloads.append(1) or succeed(0)))
    daemon._reloadOnSignal = lambda: Daemon._reloadOnSignal(daemon)
    daemon._reloadOnSignal()
    daemon._reloadOnSignal()
    assert reloads == []
    Daemon._up(daemon, None)
    assert reloads == [1]


@pytest.mark.parametrize("setting,problem", [
    ('[http]\nlisten = "tcp:8000"\npublic_url = "ftp://x"\n', "[http].public_url"),
    ('[nope]\n', "nope"),
])
def test_bad_config_stops_the_start_with_one_line(tmp_path, setting, problem):
    """A bad configuration exits non-zero, printing one line with the file and the key."""
    path = tmp_path / "bad.toml"
    path.write_text(setting)
    result = subprocess.run(
        [os.path.join(BIN, "twistd"), "--nodaemon", "--pidfile=", "msisdnd", "--config",
         str(path)], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and problem in lines[0]
    check = subprocess.run([os.path.join(BIN, "msisdnd"), "check-config", str(path)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and problem in check.stderr


def test_a_key_that_cannot_load_stops_the_start_with_one_line(tmp_path):
    """A signing key that cannot be loaded is refused before anything starts:
    one line naming the key's slot and why, exit status 2 (a configuration
    error, as check-config says too)."""
    config = write_config(tmp_path, free_port(), free_port(), free_port(), free_port())
    (tmp_path / "keys" / "jwt.pem").write_text("-----BEGIN PRIVATE KEY-----\njunk\n")
    result = subprocess.run(
        [os.path.join(BIN, "twistd"), "--nodaemon", "--pidfile=", "msisdnd", "--config",
         config], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "[keys].jwt[0]" in lines[0] and "jwt.pem" in lines[0], lines[0]


@pytest_twisted.inlineCallbacks
def test_operator_lists_and_lifts_pumping_blocks(redis_pool, redis_server, tmp_path):
    """`msisdnd blocks` lists the guard's blocks from Redis and `--lift` removes one."""
    from twisted.internet.utils import getProcessOutputAndValue

    from msisdnd.state.keys import BLOCK as BLOCK_PREFIX

    config = write_config(tmp_path, free_port(), redis_server.port, free_port(), free_port())
    yield redis_pool.set(BLOCK_PREFIX + b"prefix:+3361234", b"1", expire=3600)
    tool = os.path.join(BIN, "msisdnd")
    out, err, code = yield getProcessOutputAndValue(tool, ["blocks", "--config", config],
                                                    env=dict(os.environ))
    assert code == 0, err.decode()
    assert out.decode().split()[:2] == ["prefix", "+3361234"]
    out, err, code = yield getProcessOutputAndValue(
        tool, ["blocks", "--config", config, "--lift", "prefix:+3361234"], env=dict(os.environ))
    assert code == 0 and b"lifted" in out, err.decode()
    assert (yield redis_pool.exists(BLOCK_PREFIX + b"prefix:+3361234")) == 0
    out, err, code = yield getProcessOutputAndValue(
        tool, ["blocks", "--config", config, "--lift", "prefix:+3361234"], env=dict(os.environ))
    assert code == 1 and b"no block" in err
    for bad in ("prefix:3361234", "network:208", "prefix:+33x", "+3361234", "net:20801"):
        out, err, code = yield getProcessOutputAndValue(
            tool, ["blocks", "--config", config, "--lift", bad], env=dict(os.environ))
        assert code == 2 and b"takes prefix:+3361234" in err and repr(bad).encode() in err, bad


@pytest_twisted.inlineCallbacks
def test_send_test_sms_prints_the_message_id_and_its_receipt(smsc_factory, redis_server, tmp_path):
    """`msisdnd send-test-sms` binds the configured carrier, sends one MT, and prints
    its message id and the receipt the SMSC sends for it."""
    import re

    from twisted.internet.utils import getProcessOutputAndValue

    regex_waiting = re.compile(r"waiting up to \d+ s for its delivery receipt\.\.\.")
    harness = smsc_factory(receipt_delay=0.1)
    config = write_config(tmp_path, harness.portNumber, redis_server.port, free_port(),
                          free_port())
    out, err, code = yield getProcessOutputAndValue(
        os.path.join(BIN, "msisdnd"),
        ["send-test-sms", "--config", config, "--to", NUMBER, "--text", "hello", "--wait", "15"],
        env=dict(os.environ))
    assert code == 0, err.decode()
    lines = out.decode().splitlines()
    (message,) = harness.smsc.received(NUMBER)
    assert lines[0] == f"sent via fake: message ids {message.message_ids[0]}"
    assert regex_waiting.fullmatch(lines[1]), lines[1]
    assert lines[2] == "receipt: DELIVRD"
    assert message.text == "hello"


@inlineCallbacks
def one_start_failure(config: str, tmp_path):
    """Start a daemon on C{config} that must fail to start; wait for it to exit 1.

    @return: (a Deferred of) its one "could not start" line, after checking
        that the log has no traceback and has the info lines of the stop.
    """
    process, log_path = start(config, tmp_path)
    try:
        yield wait_until(lambda: process.poll() is not None, timeout=30, interval=0.05)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
            print(open(log_path).read())
    log = open(log_path).read()
    assert process.returncode == 1, log
    failures = [line for line in log.splitlines() if "could not start" in line]
    assert len(failures) == 1, log
    assert "Traceback" not in log, log
    assert "msisdnd stopped" in log  # an info line held, written out before the exit
    return failures[0]


@pytest_twisted.inlineCallbacks
def test_a_port_taken_stops_the_whole_daemon_with_status_1(smsc_factory, redis_server,
                                                            tmp_path):
    """With its API port taken, the daemon does not run on half-started: one
    line names the listener and the reason, what had started (the admin
    listener, the binds) is stopped, and the process exits 1."""
    import socket

    harness = smsc_factory()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    api_port, admin_port = taken.getsockname()[1], free_port()
    try:
        config = write_config(tmp_path, harness.portNumber, redis_server.port, api_port,
                              admin_port)
        # The reactor turns meanwhile: the fake SMSC answers the bind, then the unbind.
        failure = yield one_start_failure(config, tmp_path)
    finally:
        taken.close()
    assert f"[http].listen tcp:{api_port}:interface=127.0.0.1" in failure
    assert "Address already in use" in failure or "Couldn't listen" in failure
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", admin_port), timeout=1).close()


@pytest_twisted.inlineCallbacks
def test_an_embedded_redis_that_cannot_start_stops_the_daemon_with_status_1(smsc_factory,
                                                                            tmp_path):
    """An embedded redis-server that cannot start (its socket path is taken by a
    directory) is a part that failed to start: one line names it, the process
    exits 1, and nothing is left listening."""
    import socket

    harness = smsc_factory()
    api_port, admin_port = free_port(), free_port()
    config = write_config(tmp_path, harness.portNumber, 1, api_port, admin_port)
    text = open(config).read()
    text = text.replace('url = "redis://127.0.0.1:1/0"', 'embedded = true\ndir = "redis-data"')
    assert "embedded = true" in text
    open(config, "w").write(text)
    (tmp_path / "redis-data" / "redis.sock").mkdir(parents=True)
    failure = yield one_start_failure(config, tmp_path)
    assert "[redis].embedded" in failure and "redis.sock" in failure, failure
    for port in (api_port, admin_port):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest_twisted.inlineCallbacks
def test_the_readmes_device_example_runs_as_pasted(daemon):
    """The README's first Python example, run as a script against the daemon
    (its SERVER changed), verifies the number and gets a certificate; the code
    it asks for is typed in from what the SMSC received."""
    import re as regex

    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import ProcessProtocol

    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    example = regex.search(r"```python\n(.*?)```", readme, regex.S).group(1)
    example = example.replace('SERVER = "http://127.0.0.1:8000"', f'SERVER = "{daemon.api}"')
    smsc = daemon.harness.smsc

    class Typist(ProcessProtocol):
        def __init__(self):
            self.out, self.err, self.done = b"", b"", Deferred()

        def outReceived(self, data):
            self.out += data
            if b"code from the SMS: " in data:
                wait_until(lambda: smsc.received(NUMBER)).addCallback(
                    lambda _: self.transport.write(
                        smsc.received(NUMBER)[-1].text.split()[-1].encode() + b"\n"))

        def errReceived(self, data):
            self.err += data

        def processEnded(self, reason):
            self.done.callback(reason.value.exitCode)

    typist = Typist()
    reactor.spawnProcess(typist, sys.executable, [sys.executable, "-c", example],
                         env=dict(os.environ))
    status = yield typist.done
    assert status == 0, typist.err.decode()
    lines = typist.out.decode().splitlines()
    assert lines[-2].endswith("{'msisdn': '+33612345678'}")
    assert lines[-1].startswith("{'cert': 'eyJ"), lines[-1]  # a JWT


@pytest_twisted.inlineCallbacks
def test_json_logs_are_one_object_per_line_with_the_message_rendered(smsc_factory,
                                                                      redis_server, tmp_path):
    """With [log] format = "json", and twistd started without --logger, every
    line the daemon writes through a verification and a stop parses alone
    with json.loads, carries time, level, system and a rendered message, and
    holds no phone number; the lines twistd logs once the reactor has
    stopped are there too (the batched lines are written out before exit)."""
    harness = smsc_factory()
    api_port, admin_port = free_port(), free_port()
    config = write_config(tmp_path, harness.portNumber, redis_server.port, api_port,
                          admin_port, tables='[log]\nformat = "json"\naccess = "all"\n')
    process, log_path = start(config, tmp_path, logger=False)
    running = Running(process, f"http://127.0.0.1:{api_port}", "", log_path)
    try:
        yield wait_until(lambda: heartbeat_ok(running), timeout=30, interval=0.1)
        client = MSISDNClient(running.api)
        yield client.register()
        yield client.mtVerify(NUMBER, "208", short=True)
        yield wait_until(lambda: harness.smsc.received(NUMBER))
        assert (yield client.verifyCode(harness.smsc.received(NUMBER)[-1].text.split()[-1])) \
            == NUMBER
    finally:
        process.terminate()
        yield wait_until(lambda: process.poll() is not None, timeout=20, interval=0.05)
    text = running.log()
    records = [json.loads(line) for line in text.splitlines()]
    assert records and all({"time", "level", "system", "message"} <= r.keys() for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("msisdnd is up: API ") for m in messages), messages
    assert any(m == "msisdnd stopped" for m in messages), messages
    assert messages[-1] == "Server Shut Down.", messages[-3:]
    assert any('"POST /sms/verify_code HTTP/1.1" 200' in m for m in messages), messages
    assert NUMBER not in text and NUMBER[1:] not in text
    assert "\x1e" not in text


@pytest_twisted.inlineCallbacks
def test_the_daemon_logs_in_to_a_redis_acl_user(smsc_factory, tmp_path):
    """Against a Redis whose default user is off and whose ACL user needs a
    password, the daemon serves with the user and password of its [redis]
    url; with a wrong password its heartbeat says storage is down, and the
    password is never in its log."""
    from conftest import redis_executable

    harness = smsc_factory()
    port = free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text(f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\n'
                    f"dir {tmp_path}\nuser default off\n"
                    "user msisdnd on >s3cret-pw ~* &* +@all\n")
    redis = subprocess.Popen([redis_executable(), str(conf)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for password, healthy in (("s3cret-pw", True), ("wrong-pw", False)):
            home = tmp_path / password
            home.mkdir()
            config = write_config(home, harness.portNumber, port, free_port(), free_port(),
                                  redis_credentials=f"msisdnd:{password}@")
            process, log_path = start(config, home)
            running = Running(process, f"http://127.0.0.1:{_api_port(config)}", "", log_path)
            try:
                if healthy:
                    yield wait_until(lambda: heartbeat_ok(running), timeout=30, interval=0.1)
                    r = yield treq.post(running.api + "/register")
                    assert r.code == 200
                else:
                    yield wait_until(lambda: _heartbeat(running) == 503, timeout=30,
                                     interval=0.1)
                    r = yield treq.get(running.api + "/__heartbeat__")
                    assert (yield r.json())["storage"] is False
            finally:
                process.terminate()
                yield wait_until(lambda: process.poll() is not None, timeout=20, interval=0.05)
            assert password not in running.log()
    finally:
        redis.terminate()
        redis.wait(10)


def _api_port(config: str) -> int:
    import re

    return int(re.search(r'public_url = "http://127.0.0.1:(\d+)"', open(config).read()).group(1))


def _heartbeat(running: Running) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(running.api + "/__heartbeat__", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


@pytest_twisted.inlineCallbacks
def test_access_log_writes_the_requests_its_mode_names(smsc_factory, redis_server, tmp_path):
    """[log] access: "off" writes no access line, "errors" (the default, here
    unwritten) one for a 404 and none for a 200, "all" both; no mode writes
    the admin scrapes."""
    harness = smsc_factory()
    daemons = {}
    for mode in ("off", "all", None):
        home = tmp_path / str(mode)
        home.mkdir()
        api_port = free_port()
        config = write_config(home, harness.portNumber, redis_server.port, api_port,
                              free_port(), tables=f'[log]\naccess = "{mode}"\n' if mode else "")
        process, log_path = start(config, home, logger=False)
        daemons[mode] = Running(process, f"http://127.0.0.1:{api_port}",
                                f"http://127.0.0.1:{_admin_port(config)}", log_path)
    try:
        for running in daemons.values():
            yield wait_until(lambda: heartbeat_ok(running), timeout=30, interval=0.1)
            assert (yield treq.get(running.api + "/__lbheartbeat__")).code == 200
            assert (yield treq.get(running.api + "/no-such-page")).code == 404
            assert (yield treq.get(running.admin + "/metrics")).code == 200
    finally:
        for running in daemons.values():
            running.process.terminate()
        for running in daemons.values():
            yield wait_until(lambda: running.process.poll() is not None, timeout=20,
                             interval=0.05)
    logs = {mode: running.log() for mode, running in daemons.items()}
    written = {mode: ('"GET /__lbheartbeat__ HTTP/1.1" 200' in log,
                      '"GET /no-such-page HTTP/1.1" 404' in log) for mode, log in logs.items()}
    assert written == {"off": (False, False), "all": (True, True), None: (False, True)}, logs
    for log in logs.values():
        assert "msisdnd stopped" in log and "GET /metrics" not in log, log


def _admin_port(config: str) -> int:
    import re

    return int(re.search(r'\[admin\]\nlisten = "tcp:(\d+):', open(config).read()).group(1))


def _raw_answer(base: str, request: bytes) -> bytes:
    """The whole answer to C{request} (sent as is, with C{Connection: close}) from C{base}."""
    import socket

    host, port = base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


@pytest.fixture
def versionless(smsc_factory, redis_server, tmp_path):
    yield from run_daemon(tmp_path, smsc_factory(), redis_server, http="show_version = false")


def test_show_version_off_tells_no_version_on_any_listener(versionless):
    """With [http] show_version = false, no answer of the API or the admin listener has a
    Server header (Twisted's names its version), and none of the API's names ours."""
    from twisted import version as twisted_version

    from msisdnd import __version__

    def ask(base, method, target):
        return _raw_answer(base, b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n" % (method, target))

    api = [ask(versionless.api, m, t) for m, t in (
        (b"GET", b"/"), (b"GET", b"/__version__"), (b"GET", b"/api-specs"),
        (b"GET", b"/docs"), (b"POST", b"/register"), (b"HEAD", b"/__lbheartbeat__"),
        (b"GET", b"/nowhere"), (b"OPTIONS", b"/register"), (b"OPTIONS", b"*"))]
    admin = [ask(versionless.admin, b"GET", t) for t in (b"/", b"/metrics", b"/nowhere")]
    assert all(answer.startswith(b"HTTP/1.1 ") for answer in api + admin), api + admin
    for answer in api + admin:
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert b"\r\nserver:" not in head, head
        assert twisted_version.public().encode() not in head, head
    for answer in api:
        assert __version__.encode() not in answer, answer[:300]
