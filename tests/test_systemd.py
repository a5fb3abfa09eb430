"""The systemd units in systemd/: they verify cleanly, their sandbox scores
"OK" or better, and the socket-activation listen form the README gives works
with a real inherited socket.

Needs systemd's tools (Debian: the systemd package); each test skips, saying
which one is missing, where they are not installed.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICE = UNITS / "msisdnd.service"
SOCKET = UNITS / "msisdnd.socket"

#: Where systemd/README.md installs msisdnd: ExecStart's twistd.
INSTALLED_TWISTD = "/opt/msisdnd/venv/bin/twistd"
DAEMON_ARGS = ["--nodaemon", "--pidfile=", "--logger", "msisdnd.logs.observer", "msisdnd",
               "--config", "/etc/msisdnd/msisdnd.toml"]
#: "OK" in systemd-analyze security's scale (0 safest, 10 unsafe).
MAX_EXPOSURE = 3.0

ANALYZE = shutil.which("systemd-analyze")
ACTIVATE = shutil.which("systemd-socket-activate")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian: apt-get install systemd)")
needs_activate = pytest.mark.skipif(
    ACTIVATE is None, reason="systemd-socket-activate is not installed (Debian: apt-get install systemd)")

# No colours, no pager, no hints from the environment we run in.
ENV = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_LOG_COLOR": "0"}


def _exec(directive: str = "ExecStart") -> list[str]:
    lines = [line for line in SERVICE.read_text().splitlines()
             if line.startswith(f"{directive}=")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0].removeprefix(f"{directive}="))


def _exec_start() -> list[str]:
    return _exec("ExecStart")


def test_exec_start_is_the_documented_command():
    assert _exec_start() == [INSTALLED_TWISTD, *DAEMON_ARGS]


def test_exec_reload_runs_msisdnd_reload_and_waits_for_the_outcome():
    command = _exec("ExecReload")
    assert command[:2] == [str(Path(INSTALLED_TWISTD).with_name("msisdnd")), "reload"]
    assert "--admin" in command and "--token-file" in command


def _verify(tmp_path: Path, service_text: str) -> subprocess.CompletedProcess:
    """systemd-analyze verify on copies of the units, ExecStart's binary made to exist.

    verify fails (and says so) when ExecStart's program does not exist, and
    /opt/msisdnd/venv/bin/twistd exists only on an installed machine.  So the
    units are copied as they are into tmp_path, and a drop-in beside them,
    msisdnd.service.d/test-execstart.conf, resets ExecStart (and ExecReload)
    to the same arguments run by an executable that exists here: this venv's
    twistd (msisdnd), or the Python running the tests.  That drop-in is the only change; verify
    still parses the unit's own ExecStart line before the reset.  Nothing
    else is relaxed: the default options, and the units' other dependencies
    (network-online.target, ...) come from this machine's systemd.
    """
    twistd = Path(sys.executable).with_name("twistd")
    runner = twistd if os.access(twistd, os.X_OK) else Path(sys.executable)
    (tmp_path / SERVICE.name).write_text(service_text)
    shutil.copyfile(SOCKET, tmp_path / SOCKET.name)
    dropins = tmp_path / f"{SERVICE.name}.d"
    dropins.mkdir()
    msisdnd = Path(sys.executable).with_name("msisdnd")
    reloader = msisdnd if os.access(msisdnd, os.X_OK) else Path(sys.executable)
    (dropins / "test-execstart.conf").write_text(
        "[Service]\nExecStart=\nExecStart=" + shlex.join([str(runner), *DAEMON_ARGS]) + "\n"
        "ExecReload=\nExecReload=" + shlex.join([str(reloader), *_exec("ExecReload")[1:]])
        + "\n")
    return subprocess.run(
        [ANALYZE, "verify", str(tmp_path / SERVICE.name), str(tmp_path / SOCKET.name)],
        check=False, capture_output=True, text=True, env=ENV, timeout=60)


@needs_analyze
def test_units_verify_without_a_word(tmp_path):
    # verify exits 0 on a misspelt directive and only prints a warning:
    # silence is the test.
    result = _verify(tmp_path, SERVICE.read_text())
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@needs_analyze
def test_verify_would_notice_a_misspelt_directive(tmp_path):
    # The check above is not vacuous: the same set-up with one typo speaks up.
    text = SERVICE.read_text().replace("\nProtectHome=", "\nProtectHomes=", 1)
    result = _verify(tmp_path, text)
    assert "Unknown key" in result.stdout + result.stderr
    assert "ProtectHomes" in result.stdout + result.stderr


@needs_analyze
def test_security_exposure_is_ok_or_better():
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(SERVICE)],
        check=False, capture_output=True, text=True, env=ENV, timeout=60)
    table = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", table)
    assert match, f"no overall exposure in systemd-analyze security's output:\n{table}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{table}"


# --- socket activation -------------------------------------------------------

# Serves one request from the endpoint described by argv[1], answers with what
# the server saw as JSON, then stops.  It never binds anything itself.
SERVER = r"""
import json, os, sys
from twisted.internet import endpoints, reactor
from twisted.web import resource, server

endpoint = endpoints.serverFromString(reactor, sys.argv[1])
seen = {"fileno": endpoint.fileno, "pid": os.getpid()}

class Peer(resource.Resource):
    isLeaf = True
    def render_GET(self, request):
        peer = request.getClientAddress()
        seen["peer"] = [type(peer).__name__, peer.host, peer.port]
        reactor.callLater(0.2, reactor.stop)
        return json.dumps(seen).encode()

def listening(port):
    host = port.getHost()
    seen["host"] = [type(host).__name__, host.host, host.port]

def failed(failure):
    print(failure.getTraceback(), file=sys.stderr)
    reactor.stop()

endpoint.listen(server.Site(Peer())).addCallbacks(listening, failed)
reactor.callLater(20, reactor.stop)
reactor.run()
"""


def _free_port(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((host, 0))
        return s.getsockname()[1]


@needs_activate
@pytest.mark.parametrize("family, bind_host, description, peer_type, peer_host", [
    # The plain case: an IPv4 socket, adopted as INET.
    (socket.AF_INET, "127.0.0.1", "systemd:domain=INET:index=0", "IPv4Address", "127.0.0.1"),
    # What ListenStream=8000 hands over: one dual-stack AF_INET6 socket that
    # IPv4 clients reach as ::ffff:a.b.c.d.  Bound to the v4-mapped loopback
    # address so that the test stays on loopback; adopted the way README.md
    # says to (domain=INET6, by FileDescriptorName).
    (socket.AF_INET6, "::ffff:127.0.0.1", "systemd:domain=INET6:name=http", "IPv6Address",
     "::ffff:127.0.0.1"),
], ids=["INET-index", "INET6-dual-stack-name"])
def test_socket_activation(family, bind_host, description, peer_type, peer_host):
    try:
        port = _free_port(family, bind_host)
    except OSError as e:
        pytest.skip(f"cannot bind {bind_host}: {e}")
    listen = f"[{bind_host}]:{port}" if family == socket.AF_INET6 else f"{bind_host}:{port}"
    # systemd-socket-activate binds, then execs the server on the first
    # connection with LISTEN_FDS=1, LISTEN_PID and (from --fdname) LISTEN_FDNAMES=http.
    proc = subprocess.Popen(
        [ACTIVATE, "-l", listen, "--fdname=http", "-E", "PATH",
         sys.executable, "-c", SERVER, description],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        conn = None
        for _ in range(100):  # until systemd-socket-activate has bound the port
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
                conn.connect()
                break
            except ConnectionRefusedError:
                conn = None
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
        assert conn is not None, f"nothing listened on {listen}: {proc.communicate(timeout=5)}"
        client_port = conn.sock.getsockname()[1]
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            pytest.fail(f"no answer ({e!r}); the server said:\n{proc.communicate(timeout=15)[1]}")
        finally:
            conn.close()
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
    assert response.status == 200, err
    seen = json.loads(body)
    # The socket the server used is the inherited fd 3, the one
    # systemd-socket-activate bound, and the process that answered is the one
    # it exec'd (not a fork, not a socket of its own).
    assert seen["fileno"] == 3
    assert seen["pid"] == proc.pid
    assert seen["host"][2] == port
    # The peer Twisted reports is our client socket, not garbage.
    assert seen["peer"] == [peer_type, peer_host, client_port]
    assert proc.returncode == 0, err
