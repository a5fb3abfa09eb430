"""Run-time control of a real `twistd msisdnd`: carrier suspension, rebind and
reload from the CLI and the admin listener, with fake SMSCs on loopback and a
real Redis."""

from __future__ import annotations

import json
import os
import signal
import textwrap

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.server import Site

from msisdnd.cli import keygen
from msisdnd.device.client import APIError, MSISDNClient
from msisdnd.events.config import new_secret

from conftest import free_port, wait_until
from test_daemon import BIN, NUMBER, Running, heartbeat_ok, scrape, start, write_config
from test_webhooks import Receiver


def _carrier(name: str, port: int, extra: str = "") -> str:
    return textwrap.dedent(f"""
        [[carrier]]
        name = "{name}"
        host = "127.0.0.1"
        port = {port}
        system_id = "msisdnd"
        password = "pw"
        mt_sender = "msisdnd"
        mcc = ["208"]
        region = "FR"
        reconnect_delay_initial = 0.05
        reconnect_delay_max = 0.2
    """) + textwrap.dedent(extra)


def _daemon(tmp_path, smsc_port: int, redis_port: int, tables: str = "") -> Running:
    """A daemon (carrier "fake" on C{smsc_port}, the default route) with an admin token."""
    tmp_path.mkdir(exist_ok=True)
    with open(os.devnull, "w") as quiet:
        keygen(None, None, quiet, admin_token_file=str(tmp_path / "admin.token"))
    api_port, admin_port = free_port(), free_port()
    config = write_config(tmp_path, smsc_port, redis_port, api_port, admin_port,
                          admin='token_file = "admin.token"', tables=tables)
    process, log_path = start(config, tmp_path)
    running = Running(process, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{admin_port}",
                      log_path)
    running.config = config
    running.token = (tmp_path / "admin.token").read_text().split()[-1]
    running.token_file = str(tmp_path / "admin.token")
    return running


def _up(running: Running):
    return wait_until(lambda: heartbeat_ok(running), timeout=30, interval=0.1)


def _stop(*daemons: Running) -> None:
    for running in daemons:
        if running.process.poll() is None:
            running.process.terminate()
    for running in daemons:
        try:
            pytest_twisted.blockon(wait_until(lambda: running.process.poll() is not None,
                                              timeout=20, interval=0.05))
        except AssertionError:
            running.process.kill()
            running.process.wait()


def _cli(*args: str):
    """Run C{msisdnd ARGS} without blocking the reactor (the fake SMSCs answer meanwhile)."""
    return getProcessOutputAndValue(os.path.join(BIN, "msisdnd"), list(args), env=dict(os.environ))


def _post(running: Running, path: str, body: object = None, headers: dict | None = None,
          token: str | None = "default"):
    sent = {"Content-Type": ["application/json"]}
    if token is not None:
        sent["Authorization"] = [f"Bearer {running.token if token == 'default' else token}"]
    sent.update({k: [v] for k, v in (headers or {}).items()})
    return treq.post(running.admin + path, data=json.dumps(body or {}).encode(), headers=sent)


@pytest_twisted.inlineCallbacks
def _health(running: Running):
    response = yield treq.get(running.admin + "/health")
    detail = yield response.json()
    return {c["name"]: c for c in detail["carriers"]}


@pytest_twisted.inlineCallbacks
def _send(running: Running, number: str):
    client = MSISDNClient(running.api)
    yield client.register()
    yield client.mtVerify(number, "208", short=True)


@pytest_twisted.inlineCallbacks
def test_suspend_fails_over_keeps_binds_and_holds_on_every_daemon(smsc_factory, redis_server,
                                                                  tmp_path):
    """A suspended carrier takes no sends (the other carrier does; with both
    suspended the API answers 503), keeps its bind unless told to unbind, and
    a second daemon on the same Redis honours the suspension; every action
    needs the token, is refused cross-site, and is audited."""
    redis_server.command("FLUSHALL")
    main, backup = smsc_factory(), smsc_factory()
    first = _daemon(tmp_path / "a", main.portNumber, redis_server.port,
                    tables=_carrier("backup", backup.portNumber))
    second = _daemon(tmp_path / "b", main.portNumber, redis_server.port,
                     tables=_carrier("backup", backup.portNumber))
    try:
        yield _up(first)
        yield _up(second)
        # "backup" serves MCC 208 first; "fake" is the default route after it.
        yield _send(first, "+33612340001")
        assert backup.smsc.received("+33612340001") and not main.smsc.received("+33612340001")

        # Refused: no token, a wrong token, cross-site, not JSON; none acts.
        refusals = [
            ((yield _post(first, "/carriers/backup/suspend", token=None)), 401),
            ((yield _post(first, "/carriers/backup/suspend", token="x" * 43)), 403),
            ((yield _post(first, "/carriers/backup/suspend",
                          headers={"Origin": "https://evil.example"})), 403),
            ((yield _post(first, "/carriers/backup/suspend",
                          headers={"Sec-Fetch-Site": "cross-site"})), 403),
            ((yield _post(first, "/carriers/backup/suspend",
                          headers={"Content-Type": "text/plain"})), 415),
            ((yield _post(first, "/carriers/nosuch/suspend")), 404),
        ]
        for response, status in refusals:
            body = yield response.json()
            assert response.code == status and body["error"], body
        assert not (yield _health(first))["backup"]["suspended"]

        out, err, code = yield _cli("carrier", "suspend", "backup", "--admin", first.admin,
                                    "--token-file", first.token_file)
        assert code == 0, err.decode()
        assert (yield _health(first))["backup"]["suspended"]
        metrics = scrape(first.admin)
        assert metrics['msisdnd_carrier_suspended{carrier="backup"}'] == 1
        assert metrics['msisdnd_carrier_suspended{carrier="fake"}'] == 0
        yield _send(first, "+33612340002")
        assert main.smsc.received("+33612340002") and not backup.smsc.received("+33612340002")
        assert len(backup.smsc.bound) == 2  # both daemons' binds stay, for receipts and MO

        # The other daemon picks the suspension up from Redis.
        yield wait_until(lambda: _suspended_in(second, "backup"), timeout=5, interval=0.1)
        yield _send(second, "+33612340003")
        assert main.smsc.received("+33612340003") and not backup.smsc.received("+33612340003")

        # With every carrier suspended, a send is 503 and the heartbeat says so.
        response = yield _post(first, "/carriers/fake/suspend", {"unbind": True})
        assert response.code == 200, (yield response.text())
        # Both daemons let their binds to it go, the other within a poll.
        yield wait_until(lambda: not main.smsc.bound, timeout=10)
        try:
            yield _send(first, "+33612340004")
        except APIError as e:
            assert e.code == 503
        else:
            raise AssertionError("a send with every carrier suspended was accepted")
        assert (yield treq.get(first.api + "/__heartbeat__")).code == 503

        for name in ("fake", "backup"):
            out, err, code = yield _cli("carrier", "resume", name, "--admin", first.admin,
                                        "--token-file", first.token_file)
            assert code == 0, err.decode()
        yield wait_until(lambda: len(main.smsc.bound) == 2, timeout=10)  # the binds are back
        yield wait_until(lambda: heartbeat_ok(first), timeout=10, interval=0.1)
        yield _send(first, "+33612340005")
        assert backup.smsc.received("+33612340005")
        yield wait_until(lambda: not _suspended_in(second, "backup"), timeout=5, interval=0.1)

        log = first.log()
        assert "admin carriers backup suspend: done (by admin from 127.0.0.1)" in log
        assert "admin carriers backup suspend: refused: the bearer token is not one of" in log
        assert "admin carriers fake resume: done (by admin from 127.0.0.1)" in log
    finally:
        _stop(first, second)


def _suspended_in(running: Running, name: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(running.admin + "/health", timeout=2) as resp:
        detail = json.load(resp)
    return next(c for c in detail["carriers"] if c["name"] == name)["suspended"]


@pytest_twisted.inlineCallbacks
def test_reload_rebind_and_sighup_touch_only_what_changed(smsc_factory, redis_server, tmp_path):
    """A reload adds, changes and removes carriers, leaving an unchanged bind's
    connection alone; an invalid file is refused with its reason and changes
    nothing; rebind makes a new session; SIGHUP reloads (a carrier and a
    webhook added) and the daemon lives on."""
    redis_server.command("FLUSHALL")
    main, other = smsc_factory(), smsc_factory()
    running = _daemon(tmp_path, main.portNumber, redis_server.port)
    config = running.config
    original = open(config).read()
    try:
        yield _up(running)
        (session,) = main.smsc.bound
        binds = main.smsc.bind_count

        def reload():
            return _cli("reload", "--admin", running.admin, "--token-file", running.token_file)

        with open(config, "w") as f:
            f.write(original + _carrier("other", other.portNumber))
        out, err, code = yield reload()
        assert code == 0, err.decode()
        assert json.loads(out.decode().split("done ", 1)[1])["carriers"]["added"] == ["other"]
        yield wait_until(lambda: len(other.smsc.bound) == 1, timeout=10)

        with open(config, "w") as f:
            f.write(original + _carrier("other", other.portNumber, "window = 3\n"))
        out, err, code = yield reload()
        assert code == 0, err.decode()
        yield wait_until(lambda: other.smsc.bind_count == 2 and len(other.smsc.bound) == 1,
                         timeout=10)

        with open(config, "w") as f:
            f.write(original + _carrier("other", other.portNumber, "window = 0\n"))
        out, err, code = yield reload()
        assert code == 1
        assert "the new configuration is refused, the running one is kept" in err.decode()
        assert '"other".window: must be between 1 and 1000, not 0' in err.decode()
        assert set((yield _health(running))) == {"fake", "other"}
        (tmp_path / "garbage.pem").write_text("not a certificate\n")
        with open(config, "w") as f:
            f.write(original + _carrier("other", other.portNumber, "window = 3\n")
                    + _carrier("tls", other.portNumber, 'tls = { ca_file = "garbage.pem" }\n'))
        out, err, code = yield reload()
        assert code == 1 and "carrier 'tls': its TLS files cannot be loaded" in err.decode()
        assert set((yield _health(running))) == {"fake", "other"}

        with open(config, "w") as f:
            f.write(original)
        out, err, code = yield reload()
        assert code == 0, err.decode()
        assert json.loads(out.decode().split("done ", 1)[1])["carriers"]["removed"] == ["other"]
        yield wait_until(lambda: not other.smsc.sessions, timeout=10)
        assert set((yield _health(running))) == {"fake"}
        # "fake" never changed: the same session, never rebound.
        assert main.smsc.bound == [session] and main.smsc.bind_count == binds

        # [limits] apply at once: France is no longer served.
        with open(config, "w") as f:
            f.write(original.replace('countries = ["FR"]', 'countries = ["BE"]'))
        out, err, code = yield reload()
        assert code == 0, err.decode()
        try:
            yield _send(running, NUMBER)
        except APIError as e:
            assert e.code == 403
        else:
            raise AssertionError("a send to a country no longer served was accepted")

        out, err, code = yield _cli("carrier", "rebind", "fake", "--admin", running.admin,
                                    "--token-file", running.token_file)
        assert code == 0, err.decode()
        yield wait_until(lambda: len(main.smsc.bound) == 1 and main.smsc.bound != [session],
                         timeout=10)
        assert main.smsc.bind_count == binds + 1

        # SIGHUP: "other" back, and a webhook, which delivers from then on.
        receiver = Receiver()
        port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
        (tmp_path / "webhook.secret").write_text(new_secret() + "\n")
        with open(config, "w") as f:
            f.write(original + _carrier("other", other.portNumber) + textwrap.dedent(f"""
                [[webhook]]
                name = "rp"
                url = "http://127.0.0.1:{port.getHost().port}/hooks"
                secret_file = "webhook.secret"
                events = ["device.verified"]
                allow_insecure = true
            """))
        running.process.send_signal(signal.SIGHUP)
        try:
            yield wait_until(lambda: len(other.smsc.bound) == 1, timeout=10)
            assert running.process.poll() is None
            yield wait_until(lambda: heartbeat_ok(running), timeout=10, interval=0.1)
            client = MSISDNClient(running.api)
            yield client.register()
            yield client.mtVerify(NUMBER, "208", short=True)
            yield wait_until(lambda: other.smsc.received(NUMBER), timeout=10)
            yield client.verifyCode(other.smsc.received(NUMBER)[-1].text.split()[-1])
            yield wait_until(lambda: receiver.received, timeout=10)
            assert receiver.events()[0]["type"] == "device.verified"
        finally:
            yield port.stopListening()

        # [log] access applies at once: a 200 writes no access line, then one.
        assert (yield treq.get(running.api + "/__version__")).code == 200
        with open(config, "a") as f:
            f.write('\n[log]\naccess = "all"\n')
        out, err, code = yield reload()
        assert code == 0, err.decode()
        assert (yield treq.get(running.api + "/__lbheartbeat__")).code == 200
        yield wait_until(lambda: '"GET /__lbheartbeat__ HTTP/1.1" 200' in running.log(),
                         timeout=10)
        assert '"GET /__version__ HTTP/1.1"' not in running.log()

        response = yield _post(running, "/log-level", {"level": "debug"})
        assert response.code == 200
        # An info line is written within a tenth of a second (msisdnd.logs batches them).
        yield wait_until(lambda: "The log level is now debug" in running.log(), timeout=10)
        log = running.log()
        assert "Reload refused, the running configuration is kept" in log
        assert "SIGHUP: reloading" in log
        assert "admin reload: done (by admin from 127.0.0.1)" in log
        assert "The log level is now debug" in log
    finally:
        _stop(running)
