"""Webhook deliveries per daemon CPU-second, against a bare treq client in the same run.

    .venv/bin/python bench/webhooks.py [--events N] [--rounds R] [--warmup W]
    .venv/bin/python bench/webhooks.py --source HEAD --pool16 --profile --profile-events 10000
    .venv/bin/python bench/webhooks.py --daemon-pool 16 --pool16       # an experiment

Every part is its own process: a private C{redis-server} (a free loopback
port, C{--save "" --appendonly no}); a receiver (this script with
C{--role receiver}: a few lines of Twisted protocol that parse HTTP/1.1 and
answer C{204} to every POST, counting requests, distinct C{webhook-id}s and
connections, with C{GET /stats}, C{/sample} and C{/reset} for this script);
the real daemon (C{twistd --nodaemon --pidfile= --logger
msisdnd.logs.observer msisdnd --config <generated>}) with one
C{[[webhook]]} to the receiver (C{allow_insecure = true}, the secret
written by C{msisdnd keygen --webhook-secret}) and the fake SMSC inside it
(C{[dev] fake_smsc}, the one carrier bound to it: nothing is ever sent);
and the reference (this script with C{--role reference}: treq, posting
bodies and headers made beforehand, in batches of 16 at a time, as the
daemon's L{msisdnd.events.delivery.WebhookDelivery} reads and posts them).

A daemon round writes N C{device.verified} entries straight into the
event stream, as C{_VERIFIED}'s C{emit} writes them (C{t}, C{ts}, C{s},
C{sq}, C{n}: the number sealed under the events key, C{m}), pipelined
over one socket once the daemon's consumer group exists, and ends when
the receiver has N distinct C{webhook-id}s and the group has nothing
pending.  Measured: the daemon's CPU time (utime + stime from
C{/proc/<pid>/stat}) between the first entry and that end.  A reference
round posts the same N bodies (built by msisdnd's own L{Payloads} from the
same entries) with the same headers (C{webhook-id}, C{-timestamp},
C{-signature}, C{content-type}, C{user-agent}, signed by msisdnd's own
L{Signer} beforehand) to the same receiver, through C{treq.request} with
the daemon's arguments and treq's default pool (2 connections kept per
host: what the daemon used up to ce9ce75; from 97a10d4 it posts through a
client of its own, L{msisdnd.events.delivery.http_client}, which keeps 16);
measured the same way.  Rounds alternate their order (daemon first, then reference
first, ...); the report is each round's figures, their medians, and the
daemon's deliveries per CPU-second as a fraction of the reference's.

C{--pool16} adds, in each round, the reference with a pool that keeps 16
connections per host (treq's default keeps 2, and the daemon posts 16 at
once: from 97a10d4 this is the like-for-like reference); C{--daemon-pool N}
starts the daemon through a wrapper (C{--role twistd}) that makes Twisted's
pools keep N, msisdnd unchanged (no effect from 97a10d4: the daemon's pool
sets its own);
C{--profile} samples the daemon with py-spy over one more round.

Exit status: 1 if a delivery was lost (in any round, daemon or reference),
a sample failed its signature or body check, the daemon counted a failed
attempt, or C{msisdnd webhooks status} shows anything pending, retrying,
unread or dead at the end; 2 if interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: What this script put on sys.path itself (a --role twistd daemon takes it off).
_INSERTED = [p for p in (str(REPO), str(REPO / "bench")) if p not in sys.path]
for _path in _INSERTED:
    sys.path.insert(0, _path)

from _common import (  # noqa: E402
    cpu_seconds, http_ok, machine, machine_busy_seconds, redis_answers, run)

BIN = Path(sys.executable).parent
#: WebhookDelivery's default batch: entries read at once and posted concurrently.
BATCH = 16
WEBHOOK = "bench"
AUDIENCE = "https://rp.example"
STREAM = b"ms:ev"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main_thread_cpu_seconds(pid: int) -> float:
    """utime + stime of C{pid}'s main thread alone (the reactor's)."""
    return cpu_seconds(f"{pid}/task/{pid}")


# -- the receiver (its own process) ---------------------------------------------------


def run_receiver() -> None:
    """Answer 204 to every POST; count requests, distinct webhook-ids (and, of
    those, how many of each payload C{type}), connections.

    Plain HTTP/1.1 with C{Content-Length} bodies (what treq sends), keep-alive;
    C{GET /stats} (JSON), C{GET /sample} (the first POST since the last reset:
    its headers and body), C{GET /reset}.  Prints its port, then serves.  It
    runs on its own too (C{webhooks.py --role receiver}): C{bench/load.py
    --webhook} starts it that way.
    """
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    class Stats:
        def __init__(self) -> None:
            self.reset()

        def reset(self) -> None:
            self.requests = 0
            self.ids: set[bytes] = set()
            # Distinct deliveries by the payload's "type" (load.py counts events by type).
            self.types: Counter[str] = Counter()
            self.connections = 0
            self.bad = 0
            self.sample: dict | None = None

    stats = Stats()
    generation = [0]

    class Hook(Protocol):
        def connectionMade(self) -> None:
            self.buf = b""
            self.counted = -1

        def dataReceived(self, data: bytes) -> None:
            buf = self.buf + data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = buf[:end]
                lower = head.lower()
                length = 0
                i = lower.find(b"\r\ncontent-length:")
                if i >= 0:
                    j = lower.find(b"\r\n", i + 2)
                    length = int(lower[i + 17:j if j >= 0 else None])
                total = end + 4 + length
                if len(buf) < total:
                    break
                body, buf = buf[end + 4:total], buf[total:]
                self.request(head, lower, body)
            self.buf = buf

        def respond(self, status: bytes, body: bytes = b"", close: bool = False) -> None:
            extra = b"Content-Type: application/json\r\n" if body else b""
            if close:
                extra += b"Connection: close\r\n"
            self.transport.write(b"HTTP/1.1 " + status + b"\r\n" + extra
                                 + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            if close:
                self.transport.loseConnection()

        def request(self, head: bytes, lower: bytes, body: bytes) -> None:
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0]
            close = b"\r\nconnection: close" in lower
            if b"\r\ntransfer-encoding:" in lower:
                stats.bad += 1
                self.respond(b"501 Not Implemented", close=True)
                return
            if method == b"POST":
                if self.counted != generation[0]:
                    self.counted = generation[0]
                    stats.connections += 1
                stats.requests += 1
                i = lower.find(b"\r\nwebhook-id:")
                if i >= 0:
                    j = lower.find(b"\r\n", i + 2)
                    hook_id = head[i + 13:j if j >= 0 else None].strip()
                    if hook_id not in stats.ids:
                        stats.ids.add(hook_id)
                        # msisdnd's payloads start {"type":"<event>", (compact JSON).
                        kind = (body[9:body.find(b'"', 9)].decode("latin-1")
                                if body.startswith(b'{"type":"') else "?")
                        stats.types[kind] += 1
                else:
                    stats.bad += 1
                if stats.sample is None:
                    lines = head.decode("latin-1").split("\r\n")
                    stats.sample = {"request": lines[0],
                                    "headers": {k.strip().lower(): v.strip() for k, _, v in
                                                (line.partition(":") for line in lines[1:])},
                                    "body": body.decode("utf-8", "replace")}
                # A 204 has no body, and says so with no Content-Length.
                self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                if close:
                    self.transport.loseConnection()
            elif path == b"/stats":
                self.respond(b"200 OK", json.dumps({
                    "requests": stats.requests, "distinct": len(stats.ids),
                    "connections": stats.connections, "bad": stats.bad,
                    "types": stats.types}).encode(), close)
            elif path == b"/sample":
                self.respond(b"200 OK", json.dumps(stats.sample).encode(), close)
            elif path == b"/reset":
                stats.reset()
                generation[0] += 1
                self.respond(b"200 OK", b"{}", close)
            else:
                self.respond(b"404 Not Found", close=close)

    port = reactor.listenTCP(0, Factory.forProtocol(Hook), backlog=128, interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()


# -- the reference (its own process) -------------------------------------------------------


def run_reference(url: str, requests_file: str, batch: int, pool_size: int = 0) -> None:
    """Post prepared bodies with treq as the daemon does; orders on stdin.

    C{go N}: post the first N prepared requests, C{batch} at a time (each
    batch posted at once, the next when all have answered), then print
    C{{"ok": n, "count": N}}; C{quit}.  Prints C{ready} once loaded.

    @param pool_size: 0: treq's default pool (2 persistent connections per
        host, as the daemon's up to ce9ce75); else a pool keeping that many
        (16: as the daemon's own client from 97a10d4).
    """
    import treq
    from twisted.internet import reactor, stdio
    from twisted.web.client import HTTPConnectionPool
    from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
    from twisted.internet.protocol import Protocol
    from twisted.protocols.basic import LineReceiver

    prepared = []
    with open(requests_file) as f:
        for line in f:
            _, body, headers = json.loads(line)
            prepared.append((body.encode(), {k: [v] for k, v in headers.items()}))
    pool = None
    if pool_size:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = pool_size
    extra = {"pool": pool} if pool is not None else {}

    class Discard(Protocol):
        def __init__(self, done: Deferred):
            self.done = done

        def dataReceived(self, data: bytes) -> None:
            pass

        def connectionLost(self, reason: object = None) -> None:
            self.done.callback(None)

    @inlineCallbacks
    def post(body: bytes, headers: dict):
        # The daemon's call (msisdnd/events/delivery.py, WebhookDelivery._attempt).
        try:
            response = yield treq.request("POST", url, data=body, headers=headers,
                                          timeout=5.0, allow_redirects=False, **extra)
            done: Deferred = Deferred()
            response.deliverBody(Discard(done))
            yield done
            return 200 <= response.code < 300
        except Exception:
            return False

    @inlineCallbacks
    def go(count: int):
        ok = 0
        for start in range(0, count, batch):
            results = yield DeferredList([post(*prepared[i])
                                          for i in range(start, min(start + batch, count))])
            ok += sum(1 for success, value in results if success and value)
        return ok

    class Orders(LineReceiver):
        delimiter = b"\n"

        def connectionMade(self) -> None:
            self.sendLine(b"ready")

        def lineReceived(self, line: bytes) -> None:
            word, _, arg = line.decode().strip().partition(" ")
            if word == "go":
                count = min(int(arg), len(prepared))
                go(count).addCallback(lambda ok: self.sendLine(
                    json.dumps({"ok": ok, "count": count}).encode()))
            elif word == "quit":
                reactor.stop()

        def connectionLost(self, reason: object = None) -> None:
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(Orders())
    reactor.run()


# -- Redis, plainly ------------------------------------------------------------------------


class Redis:
    """A blocking RESP client over one socket: enough to write entries and look."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    @staticmethod
    def encode(*args) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            raw = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        return b"".join(out)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exactly(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ValueError(f"unexpected reply {line!r}")

    def call(self, *args):
        self.sock.sendall(self.encode(*args))
        answer = self.reply()
        if isinstance(answer, RuntimeError):
            raise answer
        return answer

    def pipeline(self, commands: list[tuple]) -> list:
        self.sock.sendall(b"".join(self.encode(*c) for c in commands))
        return [self.reply() for _ in commands]

    def commandstats(self) -> Counter:
        """Calls per command so far (C{INFO commandstats})."""
        calls: Counter = Counter()
        for line in self.call("INFO", "commandstats").decode().splitlines():
            m = re.match(r"cmdstat_([a-z|]+):calls=(\d+)", line)
            if m:
                calls[m.group(1)] = int(m.group(2))
        return calls

    def group(self, name: str) -> dict | None:
        """C{XINFO GROUPS} of the stream, for one group (C{None}: no such group yet)."""
        try:
            rows = self.call("XINFO", "GROUPS", STREAM)
        except RuntimeError:
            return None
        for row in rows or ():
            info = {row[i].decode(): row[i + 1] for i in range(0, len(row) - 1, 2)}
            if info["name"] == name.encode():
                return info
        return None


# -- the processes -------------------------------------------------------------------------


class Child:
    """A child process whose stdout is read line by line with a deadline."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict, cwd: Path,
                 stdin: bool = False, lines: bool = False):
        self.name = name
        self.log_path = log
        with open(log, "w") as logf:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if lines else logf, stderr=logf, cwd=cwd, env=env,
                start_new_session=True)
        self.buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer within {timeout:.0f}s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited {self.proc.wait()}:\n{self.log()}")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode().strip()

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def export_source(rev: str) -> tuple[Path, str]:
    """C{git archive} of C{msisdnd/} and C{twisted/} at C{rev} into a temporary directory
    (read-only for the repository); returns it and the short commit."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    out = Path(tempfile.mkdtemp(prefix=f"msisdnd-src-{commit}-"))
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "msisdnd", "twisted"],
                             cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out, commit


class Bench:
    """Redis, the receiver, the daemon and the reference client, and the rounds."""

    def __init__(self, args: argparse.Namespace, source: Path | None):
        self.args = args
        self.source = source
        self.dir = Path(tempfile.mkdtemp(prefix="msisdnd-webhooks-"))
        self.children: dict[str, Child] = {}
        self.env = dict(os.environ)
        if source is not None:
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(source), os.environ.get("PYTHONPATH")) if p)
        self.delivered_by_daemon = 0

    # set-up

    def _spawn(self, name: str, argv: list[str], **kwargs) -> Child:
        child = Child(name, argv, self.dir / f"{name}.log", self.env, self.dir, **kwargs)
        self.children[name] = child
        return child

    def _wait(self, ready, what: str, child: Child, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise SystemExit(f"{child.name} exited {child.proc.returncode}:\n{child.log()}")
            if ready():
                return
            time.sleep(0.05)
        raise SystemExit(f"{what} not ready within {timeout:.0f}s:\n{child.log()}")

    def start(self) -> None:
        from msisdnd.state.embedded import redis_executable

        self.redis_port = free_port()
        redis = self._spawn("redis", [redis_executable(), "--port", str(self.redis_port),
                                      "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                      "--dir", str(self.dir)])
        receiver = self._spawn("receiver", [sys.executable, __file__, "--role", "receiver"],
                               lines=True)
        self.receiver_port = int(receiver.readline(30))
        self.receiver_url = f"http://127.0.0.1:{self.receiver_port}"
        self._wait(lambda: redis_answers(self.redis_port), "redis", redis)
        self.redis = Redis(self.redis_port)

        made = subprocess.run([str(BIN / "msisdnd"), "keygen", "--out", "keys", "--secret",
                               "master", "--webhook-secret", "webhook-secret"],
                              cwd=self.dir, env=self.env, capture_output=True, text=True)
        if made.returncode != 0:
            raise SystemExit(f"msisdnd keygen exited {made.returncode}: {made.stderr}")
        self.config_path = self._config()
        twistd = [str(BIN / "twistd")]
        if self.args.daemon_pool:
            twistd = [sys.executable, __file__, "--role", "twistd", str(self.args.daemon_pool)]
        daemon = self._spawn("daemon", twistd + ["--nodaemon", "--pidfile=", "--logger",
                                                 "msisdnd.logs.observer", "msisdnd",
                                                 "--config", str(self.config_path)])
        self._wait(lambda: http_ok(self.api + "/__heartbeat__"), "the daemon", daemon, 60)
        self._wait(lambda: self.redis.group(WEBHOOK) is not None,
                   "the daemon's consumer group", daemon)
        self._prepare()
        reference = self._spawn("reference", [sys.executable, __file__, "--role", "reference",
                                              "--url", self.hook_url, "--requests",
                                              str(self.dir / "requests.jsonl"),
                                              "--batch", str(BATCH)],
                                stdin=True, lines=True)
        if reference.readline(30) != "ready":
            raise SystemExit(f"the reference did not start:\n{reference.log()}")
        if self.args.pool16:
            pooled = self._spawn("pool16", [sys.executable, __file__, "--role", "reference",
                                            "--url", self.hook_url, "--requests",
                                            str(self.dir / "requests.jsonl"),
                                            "--batch", str(BATCH), "--pool", str(BATCH)],
                                 stdin=True, lines=True)
            if pooled.readline(30) != "ready":
                raise SystemExit(f"the pooled reference did not start:\n{pooled.log()}")

    def _config(self) -> Path:
        self.api_port, self.admin_port = free_port(), free_port()
        smpp, smsc_http = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.hook_url = f"{self.receiver_url}/hooks"
        path = self.dir / "msisdnd.toml"
        path.write_text(textwrap.dedent(f"""
            [http]
            listen = "tcp:{self.api_port}:interface=127.0.0.1"
            public_url = "{self.api}"
            [admin]
            listen = "tcp:{self.admin_port}:interface=127.0.0.1"
            [redis]
            url = "redis://127.0.0.1:{self.redis_port}/0"
            [keys]
            browserid = ["keys/browserid.pem"]
            jwt = ["keys/jwt.pem"]
            [secrets]
            master_file = "master"
            [dev]
            fake_smsc = true
            fake_smsc_smpp = "tcp:{smpp}:interface=127.0.0.1"
            fake_smsc_http = "tcp:{smsc_http}:interface=127.0.0.1"
            {self._limits()}
            [[carrier]]
            name = "fake"
            host = "127.0.0.1"
            port = {smpp}
            system_id = "msisdnd"
            password = "dev"
            mt_sender = "msisdnd"
            mo_verifier = "33700000000"
            default = true
            region = "FR"
            reconnect_delay_initial = 0.1
            [[webhook]]
            name = "{WEBHOOK}"
            url = "{self.hook_url}"
            secret_file = "webhook-secret"
            audience = "{AUDIENCE}"
            allow_insecure = true
        """))
        return path

    def _limits(self) -> str:
        """C{[limits] countries = ["FR"]} when the code has the list (from 6f5c357 a
        daemon refuses to start without it); no SMS is sent here anyway."""
        root = self.source if self.source is not None else REPO
        limits = root / "msisdnd" / "state" / "limits.py"
        if limits.exists() and "    countries:" in limits.read_text():
            return '[limits]\n            countries = ["FR"]'
        return ""

    def _prepare(self) -> None:
        """The entries' fields, and the reference's bodies and headers from them.

        The bodies are what the daemon's own L{Payloads} builds of each entry
        for this webhook, the headers what its L{Signer} makes: the same
        code, run here once, so that the reference only posts.
        """
        from msisdnd.config import load_config
        from msisdnd.events.payloads import Payloads
        from msisdnd.events.signing import Signer as HookSigner
        from msisdnd.state import keys
        from msisdnd.state.events import Entry
        from msisdnd.verification import certs, codes
        from msisdnd.verification.settings import Secrets

        config = load_config(str(self.config_path))
        master = (self.dir / "master").read_text().strip()
        secrets = Secrets.from_master(bytes.fromhex(master))
        self.webhook = config.webhooks[0]
        self.secret = self.webhook.secrets[0]
        public = config.http.public_url
        signer = certs.Signer(
            browserid_keys=[certs.load_signing_key(p) for p in config.keys.browserid],
            jwt_keys=[certs.load_signing_key(p) for p in config.keys.jwt],
            issuer_host=public.host, issuer_url=public.base,
            pseudonym_secret=config.secrets.pseudonym, clock=time.time)
        payloads = Payloads(secrets, signer)
        hook_signer = HookSigner(self.webhook.secrets)
        count = max(self.args.events, self.args.warmup,
                    self.args.profile_events if self.args.profile else 0)
        now_ms = int(time.time() * 1000)
        self.fields: list[list[bytes]] = []
        self.bodies: list[dict] = []
        with open(self.dir / "requests.jsonl", "w") as out:
            for i in range(count):
                number = f"+3361{i:07d}"
                fields = {"t": b"device.verified", "ts": str(now_ms).encode(),
                          "s": keys.session(os.urandom(16)), "sq": b"1",
                          "n": codes.seal(secrets.events, number.encode()), "m": b"t"}
                self.fields.append([part for k, v in fields.items() for part in (k.encode(), v)])
                entry_id = f"{now_ms}-{i}"
                body = payloads.build(Entry(entry_id, fields), self.webhook)
                headers = hook_signer.headers(f"msg_{entry_id}", body, now_ms / 1000)
                headers.update({"content-type": "application/json",
                                "user-agent": "msisdnd-webhooks"})
                self.bodies.append(json.loads(body))
                out.write(json.dumps([entry_id, body.decode(), headers]) + "\n")

    def _receiver(self, path: str):
        with urllib.request.urlopen(self.receiver_url + path, timeout=10) as resp:
            return json.loads(resp.read())

    # rounds

    def daemon_round(self, count: int, profile: Path | None = None) -> dict:
        """Write C{count} entries into the stream; measure the daemon until every
        one is delivered and acknowledged."""
        daemon, receiver = self.children["daemon"], self.children["receiver"]
        self._receiver("/reset")
        now_ms = str(int(time.time() * 1000)).encode()
        commands = []
        for flat in self.fields[:count]:
            flat = list(flat)
            flat[3] = now_ms  # ts
            commands.append((b"XADD", STREAM, b"*", *flat))
        spy = None
        if profile is not None:
            spy = subprocess.Popen(
                [str(BIN / "py-spy"), "record", "--pid", str(daemon.pid), "--rate", "250",
                 "--nonblocking", "--threads", "--format", "raw", "--output", str(profile)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(1.0)  # py-spy attaches
        calls0 = self.redis.commandstats()
        before = self._clocks(daemon.pid)
        ids = self.redis.pipeline(commands)
        if any(isinstance(i, Exception) for i in ids):
            raise SystemExit(f"XADD failed: {next(i for i in ids if isinstance(i, Exception))}")
        last_id = ids[-1]
        index = {i: n for n, i in enumerate(ids)}
        stalled = self._until_delivered(count, lambda: self._group_done(last_id))
        after = self._clocks(daemon.pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
        stats = self._receiver("/stats")
        sample = self._receiver("/sample")
        result = self._result("daemon", count, stats, before, after, stalled)
        result["sample"] = self._check_sample(sample, lambda hid: index.get(hid.encode()), True)
        # The daemon's commands (this script's XADD, XINFO, INFO left out).
        calls = self.redis.commandstats() - calls0
        for mine in ("xadd", "xinfo|groups", "xinfo", "info"):
            calls.pop(mine, None)
        result["redis_calls"] = dict(calls)
        self.delivered_by_daemon += stats["distinct"]
        return result

    def _group_done(self, last_id: bytes) -> bool:
        info = self.redis.group(WEBHOOK)
        return (info is not None and int(info["pending"]) == 0
                and info["last-delivered-id"] == last_id)

    def _until_delivered(self, count: int, also=lambda: True) -> bool:
        """Poll until the receiver has C{count} distinct ids (and C{also}); C{True} if
        nothing arrived for C{--stall} seconds first."""
        seen, since = -1, time.monotonic()
        while True:
            distinct = self._receiver("/stats")["distinct"]
            if distinct >= count and also():
                return False
            if distinct != seen:
                seen, since = distinct, time.monotonic()
            elif time.monotonic() - since > self.args.stall:
                return True
            time.sleep(0.01)

    def reference_round(self, count: int, side: str = "reference") -> dict:
        reference, receiver = self.children[side], self.children["receiver"]
        self._receiver("/reset")
        before = self._clocks(reference.pid)
        reference.send(f"go {count}")
        answer = json.loads(reference.readline(self.args.stall + count * 0.05))
        after = self._clocks(reference.pid)
        stats = self._receiver("/stats")
        sample = self._receiver("/sample")
        result = self._result(side, count, stats, before, after, False)
        result["client_ok"] = answer["ok"]
        result["sample"] = self._check_sample(sample, lambda hid: int(hid.rpartition("-")[2]),
                                              False)
        return result

    def _clocks(self, pid: int) -> dict:
        """The clocks a round reads at each edge: the measured process's CPU (and its
        main thread's), the receiver's, Redis's, the whole machine's busy time."""
        return {"cpu": cpu_seconds(pid), "main": main_thread_cpu_seconds(pid),
                "receiver": cpu_seconds(self.children["receiver"].pid),
                "redis": cpu_seconds(self.children["redis"].pid),
                "busy": machine_busy_seconds(), "self": time.process_time(),
                "wall": time.monotonic()}

    @staticmethod
    def _result(side: str, count: int, stats: dict, before: dict, after: dict,
                stalled: bool) -> dict:
        d = {k: after[k] - before[k] for k in before}
        cpu, main_cpu, wall = d["cpu"], d["main"], d["wall"]
        # Everything else the machine ran meanwhile (not this script's polling).
        other = d["busy"] - cpu - d["receiver"] - d["redis"] - d["self"]
        return {"side": side, "events": count, "delivered": stats["distinct"],
                "lost": count - stats["distinct"],
                "duplicates": stats["requests"] - stats["distinct"],
                "bad": stats["bad"], "connections": stats["connections"], "cpu_s": cpu,
                # The rest of cpu_s ran in other threads: Twisted's thread pool, where
                # the name resolver calls getaddrinfo for each new connection.
                "main_thread_cpu_s": main_cpu, "threads_cpu_s": max(0.0, cpu - main_cpu),
                "receiver_cpu_s": d["receiver"], "redis_cpu_s": d["redis"],
                "other_cpu_pct": 100 * other / wall if wall > 0 else None,
                "wall_s": wall, "stalled": stalled,
                "per_cpu_s": stats["distinct"] / cpu if cpu > 0 else None,
                "cpu_ms_per_delivery": (1000 * cpu / stats["distinct"] if stats["distinct"]
                                        else None)}

    def _check_sample(self, sample: dict | None, index_of, verify: bool) -> dict:
        """The first delivery of a round: its signature (the daemon's, verified with
        the standardwebhooks package) and its body against the reference's for the
        same entry (all but the timestamp)."""
        from standardwebhooks.webhooks import Webhook

        if not sample:
            return {"ok": False, "why": "no delivery"}
        headers, body = sample["headers"], sample["body"]
        why = []
        if verify:
            try:
                Webhook(self.secret).verify(body, headers)
            except Exception as e:
                why.append(f"signature: {e}")
        n = index_of(headers.get("webhook-id", "").removeprefix("msg_"))
        if n is None:
            why.append(f"unknown webhook-id {headers.get('webhook-id')!r}")
        else:
            got, want = json.loads(body), dict(self.bodies[n])
            got.pop("timestamp", None)
            want.pop("timestamp", None)
            if got != want:
                why.append(f"body {got} != {want}")
        return {"ok": not why, "why": "; ".join(why), "header_names": sorted(headers)}

    # the end

    def metrics(self) -> Counter:
        """The daemon's webhook delivery counters (by outcome)."""
        with urllib.request.urlopen(self.admin + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        found: Counter = Counter()
        for line in text.splitlines():
            m = re.match(r'msisdnd_webhook_deliveries_total\{(.*)\} ([0-9.e+]+)$', line)
            if m:
                outcome = re.search(r'outcome="([^"]*)"', m.group(1))
                found[outcome.group(1) if outcome else "?"] += int(float(m.group(2)))
        return found

    def status(self) -> tuple[str, bool]:
        """C{msisdnd webhooks status}'s output, and whether it shows nothing
        pending, retrying, unread or dead."""
        done = subprocess.run([str(BIN / "msisdnd"), "webhooks", "status", "--config",
                               str(self.config_path)], cwd=self.dir, env=self.env,
                              capture_output=True, text=True, timeout=60)
        text = (done.stdout + done.stderr).rstrip()
        rows = [line.split() for line in done.stdout.splitlines()[1:]]
        clean = (done.returncode == 0 and len(rows) == 1 and rows[0][0] == WEBHOOK
                 and rows[0][1:5] == ["0", "0", "0", "0"])
        return text, clean

    def stop(self) -> None:
        reference = self.children.get("reference")
        if reference is not None and reference.proc.poll() is None:
            try:
                reference.send("quit")
                reference.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        pooled = self.children.get("pool16")
        if pooled is not None and pooled.proc.poll() is None:
            try:
                pooled.send("quit")
                pooled.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for name in ("daemon", "reference", "pool16", "receiver", "redis"):
            child = self.children.get(name)
            if child is not None:
                child.stop(timeout=20 if name == "daemon" else 5)
        if self.args.keep_logs:
            print(f"logs kept in {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# -- the profile ---------------------------------------------------------------------------

#: What a sample's own time is spent in: the first rule matching a frame, from the leaf up.
PROFILE_CATEGORIES = (
    ("socket send() (writeSomeData)", ("writeSomeData",)),
    ("socket recv() (doRead)", ("doRead (twisted/internet/tcp.py)",)),
    ("TCP connect/close (new connections)", ("doConnect", "_closeSocket", "createInternetSocket",
                                             "connectionLost (twisted/internet/tcp.py)",
                                             "_connectDone")),
    ("thread pool hand-offs (the main thread's side)", ("threading.py", "twisted/_threads/",
                                                     "threadpool.py", "getaddrinfo", "queue.py",
                                                     "twisted/internet/_resolver.py")),
    ("epoll wait/dispatch", ("doPoll", "EPollReactor")),
    ("logging (twisted.logger)", ("twisted/logger/", "msisdnd/logs.py")),
    ("signing (standardwebhooks, hmac, base64)", ("standardwebhooks/", "hmac.py", "base64.py",
                                                  "msisdnd/events/signing.py")),
    ("payload (unseal, subject, JSON)", ("msisdnd/events/payloads.py", "json/",
                                        "msisdnd/verification/", "cryptography/")),
    ("Redis client (txredisapi)", ("txredisapi",)),
    ("HTTP client (treq, twisted.web.client, _newclient)", ("treq/", "twisted/web/")),
    ("Deferreds, inlineCallbacks, callLater", ("twisted/internet/defer.py",
                                               "twisted/internet/base.py",
                                               "twisted/internet/task.py")),
    ("msisdnd events (delivery loop, stream)", ("msisdnd/events/", "msisdnd/state/")),
    ("msisdnd, other", ("msisdnd/",)),
)


def _short_frame(frame: str) -> str:
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    for marker in ("site-packages/", str(REPO) + "/", "lib/python3.11/", "lib/python3.12/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    if "msisdnd-src-" in path and "/msisdnd/" in path:  # an exported --source tree
        path = "msisdnd/" + path.split("/msisdnd/", 1)[1]
    return f"{func} ({path})"


def _category(names: list[str]) -> str:
    for name in reversed(names):
        for label, marks in PROFILE_CATEGORIES:
            if any(mark in name for mark in marks):
                return label
    return "other (stdlib, Twisted core)"


def profile_report(path: Path, main_share: float, top: int = 15) -> dict:
    """What the daemon's main thread spends its CPU on, from py-spy's raw stacks
    (recorded with C{--threads}).

    Only the main thread's samples are classified: py-spy (non-blocking) counts
    the thread pool's workers as busy while they wait in C{Condition.wait} far
    more often than they use the CPU, so their share is taken from
    C{/proc/<pid>/task} instead (C{1 - main_share}).  Shares are of the
    daemon's whole CPU: each main-thread category is its share of the
    main thread's samples times C{main_share}.
    """
    own: Counter = Counter()
    incl: Counter = Counter()
    categories: Counter = Counter()
    main = other = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        frames = stack.split(";")
        if frames and frames[0].startswith("thread ("):
            thread, frames = frames[0], frames[1:]
            if not thread.endswith("MainThread"):
                other += n
                continue
        if not frames:
            continue
        main += n
        names = [_short_frame(f) for f in frames]
        own[names[-1]] += n
        categories[_category(names)] += n
        for name in set(names):
            incl[name] += n
    scale = main_share / (main or 1)
    return {"samples": main + other, "main_samples": main, "other_samples": other,
            "main_share": main_share,
            "categories": [(k, v * scale) for k, v in categories.most_common()]
            + [("thread pool workers: getaddrinfo per new connection (by /proc)",
                1 - main_share)],
            "own": [(k, v * scale) for k, v in own.most_common(top)],
            "inclusive": [(k, v * scale) for k, v in incl.most_common(top * 3)]}


# -- the report ----------------------------------------------------------------------------


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _pct(share: float | None) -> float | None:
    return None if share is None else 100 * share


def round_rows(rounds: list[dict]) -> list[str]:
    lines = ["| round | order | side | events | delivered | lost | dup | wall s | CPU s | "
             "deliveries per CPU-s | CPU ms/delivery | connections | receiver CPU s | "
             "other CPU % | ratio to reference |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rounds:
        for side in r["order"]:
            x = r[side]
            ratio = _num(r["ratios"].get(side), ".3f") if side != "reference" else ""
            order = " ".join(s[0].upper() for s in r["order"])
            lines.append(
                f"| {r['round']} | {order} | {SIDES[side]} | "
                f"{x['events']:,} | {x['delivered']:,} | {x['lost']} | {x['duplicates']} | "
                f"{x['wall_s']:.2f} | {x['cpu_s']:.2f} | {_num(x['per_cpu_s'])} | "
                f"{_num(x['cpu_ms_per_delivery'], '.3f')} | {x['connections']:,} | "
                f"{x['receiver_cpu_s']:.2f} | {_num(x['other_cpu_pct'])} | {ratio} |")
    return lines


SIDES = {"daemon": "daemon", "reference": "reference (treq)",
         "pool16": "treq, pool of 16 (info)"}


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(rounds: list[dict]) -> dict:
    d = [r["daemon"] for r in rounds]
    ref = [r["reference"] for r in rounds]
    all_d = sum(x["delivered"] for x in d) / max(sum(x["cpu_s"] for x in d), 1e-9)
    all_r = sum(x["delivered"] for x in ref) / max(sum(x["cpu_s"] for x in ref), 1e-9)
    return {
        "daemon_per_cpu_s": median([x["per_cpu_s"] for x in d]),
        "daemon_cpu_ms_per_delivery": median([x["cpu_ms_per_delivery"] for x in d]),
        "reference_per_cpu_s": median([x["per_cpu_s"] for x in ref]),
        "reference_cpu_ms_per_delivery": median([x["cpu_ms_per_delivery"] for x in ref]),
        "ratio": median([r["ratio"] for r in rounds]),
        "ratios": [r["ratio"] for r in rounds],
        "daemon_cpu_s": [x["cpu_s"] for x in d],
        "all_rounds_ratio": all_d / all_r if all_r else None,
        "daemon_wall_per_s": median([x["delivered"] / x["wall_s"] for x in d]),
        "reference_wall_per_s": median([x["delivered"] / x["wall_s"] for x in ref]),
        "daemon_threads_share": median([x["threads_cpu_s"] / x["cpu_s"] if x["cpu_s"] else None
                                        for x in d]),
        "reference_threads_share": median([x["threads_cpu_s"] / x["cpu_s"] if x["cpu_s"]
                                           else None for x in ref]),
        "daemon_connections_per_100": median([100 * x["connections"] / max(x["delivered"], 1)
                                              for x in d]),
        "reference_connections_per_100": median([100 * x["connections"] / max(x["delivered"], 1)
                                                 for x in ref]),
        "lost": sum(r[side]["lost"] for r in rounds for side in r["order"]),
        "duplicates": sum(r[side]["duplicates"] for r in rounds for side in r["order"]),
        "pool16_per_cpu_s": median([r["pool16"]["per_cpu_s"] for r in rounds
                                    if "pool16" in r]),
        "pool16_ratio": median([r["ratios"].get("pool16") for r in rounds]),
        "pool16_connections_per_100": median([
            100 * r["pool16"]["connections"] / max(r["pool16"]["delivered"], 1)
            for r in rounds if "pool16" in r]),
    }


def environment(source_commit: str | None) -> dict:
    import treq
    import twisted

    from msisdnd.state.embedded import redis_executable

    found = machine()
    found.update({
        "twisted": twisted.__version__, "treq": treq.__version__,
        "redis": run(redis_executable(), "--version"),
        "git_commit": source_commit or found["git_commit"],
        # Whether the daemon ran a working tree whose msisdnd/ differs from the commit.
        "git_dirty": source_commit is None and run(
            "git", "status", "--porcelain", "--untracked-files=all", "msisdnd") not in ("",
                                                                                     "unknown"),
        "source": f"git archive {source_commit}" if source_commit else "working tree",
    })
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=3000, help="events per round (default 3000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of daemon + reference (3)")
    p.add_argument("--warmup", type=int, default=200,
                   help="events posted, unmeasured, by each side before the rounds (200; 0: none)")
    p.add_argument("--stall", type=float, default=30.0,
                   help="seconds without a new delivery before a round is declared lossy (30)")
    p.add_argument("--profile", action="store_true",
                   help="after the rounds, one more daemon round under py-spy (not in the "
                        "medians); raw stacks to bench/out/, a summary printed")
    p.add_argument("--profile-events", type=int, default=None,
                   help="events in the profiled round (default: --events)")
    p.add_argument("--source", default=None,
                   help="run the daemon on a git revision (git archive) instead of the "
                        "working tree")
    p.add_argument("--pool16", action="store_true",
                   help="also run, in each round, treq with a pool keeping 16 connections "
                        "(informational: what connection reuse would save)")
    p.add_argument("--daemon-pool", type=int, default=0, metavar="N",
                   help="experiment: start the daemon through a wrapper that makes Twisted's "
                        "HTTP pools keep N connections per host (msisdnd up to ce9ce75: "
                        "treq's default, 2; from 97a10d4 its own pool of 16, unaffected)")
    p.add_argument("--json", default=None, help="also write every figure as JSON to this file")
    p.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    p.add_argument("--role", choices=("receiver", "reference"), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--requests", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)
    p.add_argument("--pool", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "receiver":
        run_receiver()
        return 0
    if args.role == "reference":
        run_reference(args.url, args.requests, args.batch, args.pool)
        return 0
    if args.events < 1 or args.rounds < 1 or args.warmup < 0:
        p.error("--events and --rounds must be at least 1, --warmup at least 0")
    if args.profile_events is None:
        args.profile_events = args.events
    if args.profile and not (BIN / "py-spy").exists():
        p.error(f"--profile needs py-spy in {BIN} (pip install py-spy)")

    source, source_commit = None, None
    if args.source:
        source, source_commit = export_source(args.source)
        sys.path.insert(0, str(source))
    env = environment(source_commit)
    print(f"command: {env['command']}")
    print(f"commit: {env['git_commit']} ({env['source']}"
          f"{', msisdnd/ has uncommitted changes' if env['git_dirty'] else ''})")
    print(f"machine: {env['date']}, {env['nproc']} CPUs ({env['cpu_model']}), Python "
          f"{env['python']}, Twisted {env['twisted']}, treq {env['treq']}, {env['redis']}")
    print(f"events per round: {args.events:,}, rounds: {args.rounds}, warm-up: {args.warmup}, "
          f"batch: {BATCH} concurrent posts per webhook", flush=True)
    if args.daemon_pool:
        print(f"EXPERIMENT: the daemon's HTTP pool keeps {args.daemon_pool} connections per "
              f"host (--daemon-pool); msisdnd as it is keeps treq's default, 2", flush=True)

    bench = Bench(args, source)
    rounds: list[dict] = []
    problems: list[str] = []
    result: dict = {"environment": env, "args": {k: v for k, v in vars(args).items()
                                                 if k not in ("role", "url", "requests")}}
    try:
        bench.start()
        if args.warmup:
            warm = [bench.daemon_round(args.warmup), bench.reference_round(args.warmup)]
            if args.pool16:
                warm.append(bench.reference_round(args.warmup, "pool16"))
            for x in warm:
                if x["lost"]:
                    problems.append(f"warm-up: the {x['side']} lost {x['lost']} deliveries")
        for i in range(args.rounds):
            order = ("daemon", "reference") if i % 2 == 0 else ("reference", "daemon")
            if args.pool16:
                order += ("pool16",)
            r = {"round": i + 1, "order": order}
            for side in order:
                r[side] = (bench.daemon_round(args.events) if side == "daemon"
                           else bench.reference_round(args.events, side))
                x = r[side]
                print(f"round {i + 1} {side}: {x['delivered']:,}/{x['events']:,} delivered, "
                      f"{x['cpu_s']:.2f} CPU-s, {x['wall_s']:.2f} s", flush=True)
            ref = r["reference"]["per_cpu_s"]
            r["ratios"] = {side: r[side]["per_cpu_s"] / ref
                           for side in order if side != "reference" and r[side]["per_cpu_s"]
                           and ref}
            r["ratio"] = r["ratios"].get("daemon")
            rounds.append(r)
            for side in order:
                x = r[side]
                if x["stalled"] and not x["lost"]:
                    problems.append(f"round {i + 1}: the {side}'s deliveries arrived but the "
                                    f"group kept entries pending for {args.stall:.0f} s")
                if x["lost"]:
                    problems.append(f"round {i + 1}: the {side} lost {x['lost']} of "
                                    f"{x['events']} deliveries"
                                    f"{' (stalled)' if x['stalled'] else ''}")
                if not x["sample"]["ok"]:
                    problems.append(f"round {i + 1}: the {side}'s first delivery: "
                                    f"{x['sample']['why']}")
            if r["daemon"]["sample"]["header_names"] != r["reference"]["sample"]["header_names"]:
                problems.append(f"round {i + 1}: the headers differ: daemon "
                                f"{r['daemon']['sample']['header_names']}, reference "
                                f"{r['reference']['sample']['header_names']}")
        profile = None
        if args.profile:
            out_dir = REPO / "bench" / "out"  # git-ignored
            out_dir.mkdir(exist_ok=True)
            raw = out_dir / f"pyspy-webhooks-{time.strftime('%Y%m%dT%H%M%S')}.txt"
            x = bench.daemon_round(args.profile_events, profile=raw)
            if x["lost"]:
                problems.append(f"profiled round: the daemon lost {x['lost']} deliveries")
            main_share = x["main_thread_cpu_s"] / x["cpu_s"] if x["cpu_s"] else 1.0
            profile = {"round": x, "file": str(raw),
                       "report": profile_report(raw, main_share) if raw.exists() else None}
        counters = bench.metrics()
        status_text, clean = bench.status()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 2
    except BaseException:
        for child in bench.children.values():
            if child.proc.poll() is not None and child.proc.returncode not in (0, None):
                print(f"--- {child.name} exited {child.proc.returncode}:\n{child.log()}",
                      file=sys.stderr)
        raise
    finally:
        bench.stop()
        if source is not None:
            shutil.rmtree(source, ignore_errors=True)

    if counters.get("failed", 0) or counters.get("dead_lettered", 0):
        problems.append(f"the daemon's counters: {dict(counters)}")
    if counters.get("delivered", 0) != bench.delivered_by_daemon:
        problems.append(f"the daemon counted {counters.get('delivered', 0)} deliveries, the "
                        f"receiver {bench.delivered_by_daemon}")
    if not clean:
        problems.append("msisdnd webhooks status shows something pending, unread or dead")

    summary = summarize(rounds)
    print()
    print("\n".join(round_rows(rounds)))
    print()
    print(f"deliveries per daemon CPU-second (median): {_num(summary['daemon_per_cpu_s'])}")
    print(f"daemon CPU ms per delivery (median): "
          f"{_num(summary['daemon_cpu_ms_per_delivery'], '.3f')}")
    print(f"deliveries per reference CPU-second (median): {_num(summary['reference_per_cpu_s'])}")
    print(f"reference CPU ms per delivery (median): "
          f"{_num(summary['reference_cpu_ms_per_delivery'], '.3f')}")
    print(f"daemon / reference (median of the rounds' ratios): {_num(summary['ratio'], '.3f')}"
          f"  [rounds: {', '.join(_num(x, '.3f') for x in summary['ratios'])}; all rounds "
          f"together {_num(summary['all_rounds_ratio'], '.3f')}]")
    print(f"deliveries per wall second (median): daemon {_num(summary['daemon_wall_per_s'])}, "
          f"reference {_num(summary['reference_wall_per_s'])}")
    print(f"TCP connections per 100 deliveries (median): daemon "
          f"{_num(summary['daemon_connections_per_100'], '.1f')}, reference "
          f"{_num(summary['reference_connections_per_100'], '.1f')}")
    print(f"CPU outside the main thread (Twisted's thread pool: getaddrinfo per new "
          f"connection), median: daemon {_num(_pct(summary['daemon_threads_share']), '.1f')}%, "
          f"reference {_num(_pct(summary['reference_threads_share']), '.1f')}%")
    if args.pool16:
        print(f"treq with a pool of 16 (info): {_num(summary['pool16_per_cpu_s'])} deliveries "
              f"per CPU-s (median), {_num(summary['pool16_ratio'], '.3f')} of the reference's, "
              f"{_num(summary['pool16_connections_per_100'], '.1f')} connections per 100")
    if rounds:
        calls = Counter()
        for r in rounds:
            calls.update(r["daemon"]["redis_calls"])
        delivered = sum(r["daemon"]["delivered"] for r in rounds) or 1
        print(f"the daemon's Redis commands per delivery: {sum(calls.values()) / delivered:.2f} ("
              + ", ".join(f"{k} {v / delivered:.3f}" for k, v in calls.most_common()) + ")")
    print(f"lost: {summary['lost']}, duplicates: {summary['duplicates']}")
    print(f"daemon counters (msisdnd_webhook_deliveries_total): "
          f"{', '.join(f'{k} {v}' for k, v in sorted(counters.items())) or 'none'}")
    print("msisdnd webhooks status:")
    print(textwrap.indent(status_text, "    "))
    if profile is not None:
        x = profile["round"]
        print()
        print(f"profile (py-spy, 250 Hz, non-blocking; {profile['file']}): "
              f"{x['events']:,} events at {_num(x['per_cpu_s'])} deliveries per CPU-s "
              f"({_num(x['cpu_ms_per_delivery'], '.3f')} ms each)")
        report = profile["report"]
        if report:
            print(f"samples: {report['main_samples']} of the main thread (the reactor: "
                  f"{100 * report['main_share']:.1f}% of the daemon's CPU by /proc), "
                  f"{report['other_samples']} of other threads (not classified); shares below "
                  f"are of the daemon's whole CPU")
            print("| own share | spent in |")
            print("|---:|---|")
            for label, share in report["categories"]:
                print(f"| {100 * share:.1f}% | {label} |")
            print("top functions by own time:")
            for name, share in report["own"]:
                print(f"  {100 * share:5.1f}%  {name}")
            print("inclusive (msisdnd, treq, txredisapi, standardwebhooks):")
            for name, share in report["inclusive"]:
                if any(m in name for m in ("msisdnd/", "treq/", "txredisapi", "standardwebhooks",
                                           "HTTPConnectionPool", "Agent.request")):
                    print(f"  {100 * share:5.1f}%  {name}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    result.update({"rounds": rounds, "summary": summary, "counters": dict(counters),
                   "status": status_text, "profile": profile, "problems": problems})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 1 if problems else 0


def run_twistd(pool_size: int, argv: list[str]) -> None:
    """C{twistd} with Twisted's HTTP connection pools keeping C{pool_size}
    connections per host instead of 2: an experiment (C{--daemon-pool}), not a fix.

    Up to ce9ce75 the daemon posts through treq's global pool; the class
    attribute is what that pool reads when it decides whether to keep a
    connection.  From 97a10d4 its own pool sets the attribute on the instance,
    so this changes nothing.
    """
    from twisted.web.client import HTTPConnectionPool

    HTTPConnectionPool.maxPersistentPerHost = pool_size
    from twisted.scripts.twistd import run

    sys.argv = ["twistd"] + argv
    run()


if __name__ == "__main__":
    if sys.argv[1:3] == ["--role", "twistd"]:
        # The daemon's code comes from the editable install or PYTHONPATH (--source),
        # not from the paths this script put first.
        for _path in _INSERTED:
            sys.path.remove(_path)
        run_twistd(int(sys.argv[3]), sys.argv[4:])
        sys.exit(0)
    sys.exit(main())
