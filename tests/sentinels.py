"""A Redis watched by Redis Sentinel, on loopback: one master, one replica,
three sentinels, each a real redis-server process (C{--sentinel} for the
sentinels).  For the failover tests and bench/failover.py.

Sentinels decide fast here: the master is down after C{down_after_ms}
without an answer, and a failover that stalls is retried after twice
C{failover_timeout_ms}.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

MASTER_NAME = "msisdnd"
#: The least a daemon's Redis ACL user needs (the README gives this line).
LEAST_PRIVILEGE = "~ms:* ~ml:* resetchannels +@all -@dangerous +role +config|get"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """One command over a plain socket (test set-up, not the code under test);
    the raw RESP reply."""
    parts = [f"*{len(args)}\r\n".encode()]
    for a in args:
        raw = a.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"".join(parts))
        data = b""
        while True:
            chunk = s.recv(65536)
            data += chunk
            if not chunk or data.endswith(b"\r\n") and _complete(data):
                return data


def _complete(data: bytes) -> bool:
    """Whether C{data} holds one whole RESP reply (good enough for INFO and
    short arrays of bulk strings)."""
    try:
        _parse(data, 0)
        return True
    except (IndexError, ValueError):
        return False


def _parse(data: bytes, at: int) -> int:
    end = data.index(b"\r\n", at)
    kind, rest = data[at:at + 1], data[at + 1:end]
    if kind in (b"+", b"-", b":"):
        return end + 2
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return end + 2
        if len(data) < end + 2 + n + 2:
            raise IndexError
        return end + 2 + n + 2
    if kind == b"*":
        at = end + 2
        for _ in range(max(0, int(rest))):
            at = _parse(data, at)
        return at
    raise ValueError(kind)


def info(port: int, section: str) -> dict[str, str]:
    """C{INFO section} as a dict."""
    raw = command(port, "INFO", section).decode(errors="replace")
    return dict(line.split(":", 1) for line in raw.splitlines()[1:] if ":" in line)


@dataclass
class Server:
    port: int
    process: subprocess.Popen | None = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def answers(self) -> bool:
        try:
            return command(self.port, "PING", timeout=0.5).startswith(b"+PONG")
        except OSError:
            return False


@dataclass
class SentinelGroup:
    """A master, a replica and three sentinels, all on loopback, in C{directory}."""

    executable: str
    directory: str
    down_after_ms: int = 500
    failover_timeout_ms: int = 3000
    quorum: int = 2
    #: ACL users of the master and replica: {name: (password, rules)}.
    users: dict[str, tuple[str, str]] = field(default_factory=dict)
    redis: list[Server] = field(default_factory=list)
    sentinels: list[Server] = field(default_factory=list)

    def start(self, timeout: float = 20.0) -> None:
        master, replica = Server(free_port()), Server(free_port())
        self.redis = [master, replica]
        self._spawn(master, "master", [])
        self._wait(master.answers, "the master answers", timeout)
        self._spawn(replica, "replica", ["--replicaof", "127.0.0.1", str(master.port)])
        self._wait(lambda: info(master.port, "replication").get("connected_slaves") == "1",
                   "the replica is connected", timeout)
        for i in range(3):
            sentinel = Server(free_port())
            conf = os.path.join(self.directory, f"sentinel-{i}.conf")
            with open(conf, "w") as f:
                f.write(f"port {sentinel.port}\nbind 127.0.0.1\n"
                        f"dir {self.directory}\n"
                        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} {self.quorum}\n"
                        f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                        f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
                        f"sentinel parallel-syncs {MASTER_NAME} 1\n")
            self._spawn(sentinel, f"sentinel-{i}", [], conf=conf, sentinel=True)
            self.sentinels.append(sentinel)
        self._wait(self.settled, "the sentinels know each other and the replica", timeout)

    def _spawn(self, server: Server, name: str, extra: list[str], conf: str | None = None,
               sentinel: bool = False) -> None:
        if conf is None:
            args = [self.executable, "--port", str(server.port), "--bind", "127.0.0.1",
                    "--dir", self.directory, "--dbfilename", f"{name}.rdb", "--save", "",
                    "--appendonly", "no", *extra]
            for user, (password, rules) in self.users.items():
                args += ["--user", user, "on", f">{password}", *rules.split()]
        else:
            args = [self.executable, conf, *(["--sentinel"] if sentinel else [])]
        log = open(os.path.join(self.directory, f"{name}.log"), "ab")
        server.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    @staticmethod
    def _wait(predicate, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"not within {timeout}s: {what}")
            time.sleep(0.05)

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def master_port(self, sentinel: Server | None = None) -> int | None:
        """The master's port as a sentinel says it."""
        sentinel = sentinel or self.sentinels[0]
        try:
            raw = command(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        except OSError:
            return None
        parts = raw.split(b"\r\n")
        return int(parts[4]) if len(parts) > 4 and parts[4].isdigit() else None

    def settled(self, others: int = 2, replicas: int = 1) -> bool:
        """Every sentinel knows C{others} other sentinels and C{replicas}
        replicas, and they name one master."""
        for s in self.sentinels:
            try:
                raw = command(s.port, "SENTINEL", "MASTER", MASTER_NAME).decode()
            except OSError:
                return False
            fields = raw.split("\r\n")[2::2]
            state = dict(zip(fields[::2], fields[1::2]))
            if int(state.get("num-other-sentinels", -1)) < others \
                    or int(state.get("num-slaves", -1)) < replicas:
                return False
            if state.get("flags") != "master":
                return False
        return len({self.master_port(s) for s in self.sentinels}) == 1

    def by_port(self, port: int) -> Server:
        return next(s for s in self.redis if s.port == port)

    def master(self) -> Server:
        return self.by_port(self.master_port())

    def replica(self) -> Server:
        port = self.master_port()
        return next(s for s in self.redis if s.port != port)

    def caught_up(self) -> bool:
        """The replica has everything the master wrote (their offsets agree)."""
        master = info(self.master().port, "replication")
        replica = info(self.replica().port, "replication")
        return (master.get("master_repl_offset") is not None
                and master.get("master_repl_offset") == replica.get("slave_repl_offset"))

    def kill_master(self) -> Server:
        """SIGKILL the master (no goodbye to anyone); returns it."""
        master = self.master()
        master.process.send_signal(signal.SIGKILL)
        master.process.wait(5)
        return master

    def stop(self) -> None:
        for server in [*self.sentinels, *self.redis]:
            if server.alive():
                server.process.kill()
                server.process.wait(5)
