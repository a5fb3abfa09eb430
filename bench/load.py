"""Load benchmark of the whole msisdnd: real daemons, a real Redis, the fake SMSC.

    .venv/bin/python bench/load.py --users 200 --duration 30
    .venv/bin/python bench/load.py --users 25,50,100,200,400         # a sweep
    .venv/bin/python bench/load.py --users 200 --rate 150            # rate-limited
    .venv/bin/python bench/load.py --users 200 --daemons 2 --mo-check 20
    .venv/bin/python bench/load.py --users 200 --profile py-spy
    .venv/bin/python bench/load.py --suite                           # all of the above
    .venv/bin/python bench/load.py --users 20 --mix upstream,backend --rounds 3
                                                     # device vs backend, same daemon
    .venv/bin/python bench/load.py --users 20 --webhook --rounds 2
                                                     # without vs with one webhook

Every part is its own process: a private C{redis-server} (a free loopback
port, C{--save "" --appendonly no}), the fake SMSC
(C{twistd -n fakesmsc --smpp ... --http ... --receipt-delay none}), one or
two daemons (C{twistd -n msisdnd --config <generated>}), and the load
driver: in this process, or with C{--drivers N} in N child processes
(C{load.py --worker}, which reads its orders as JSON on stdin and answers
with JSON on stdout).  Every process this script starts is killed at the
end, whatever happens.

The driver runs the upstream load test's mix (msisdn-gateway's "Load test
upstream") with N concurrent virtual users, each looping:

  1. C{POST /register};
  2. 50%: C{POST /sms/mt/verify} (C{shortVerificationCode: true}, a number
     of its own, C{+336} and 8 digits, fresh for each flow) / 50%:
     C{POST /mo} to the fake SMSC, C{"/sms/momt/verify <hawk id>"} from
     that number to the carrier's C{mo_verifier};
  3. poll the fake SMSC's C{GET /receive?to=<number>} (at once, then every
     20 ms, for up to 2 s) until the code is there;
  4. 66%: the right code to C{POST /sms/verify_code}, then
     C{POST /certificate/sign} (BrowserID, duration 10, one RSA key per
     driver) / 34%: a wrong code of the same shape (400, errno 105);
  5. C{POST /unregister}.

C{--mix backend} runs the backend Verify API's flow instead: a relying
service's server, with an API key made by C{msisdnd api-keys create} (no
budget, the largest rate), C{POST /v2/verifications} C{{"to": number}}
(201 once the SMSC accepted the SMS; a fresh number per flow, as above),
the fake SMSC polled for the 6-digit code the same way, then
C{POST /v2/verifications/check} C{{"id", "code"}} (200, C{"approved"},
C{"valid": true}).  C{--mix upstream,backend --rounds N} runs both on the
same daemons, level after level, N rounds in alternating order, and
compares their flows per daemon CPU-second in the same run.

C{--webhook} measures what one C{[[webhook]]} adds: every round runs the
levels twice, on fresh processes each time, once without a webhook and once
with one (the order alternating from round to round), the webhook posting
to a receiver of its own (C{bench/webhooks.py --role receiver}: 204 to
every POST, distinct deliveries counted by event type).  With it each level
is also measured to quiescence: the daemons' CPU is read again once the
drivers have stopped and, with the webhook, the receiver has every event
(the consumer group has nothing pending or unread), and the flows that
ended after the window opened are counted with it, so that a delivery
backlog is work measured, not left out.

Hawk requests are signed as the reference client signs them (MAC over the
daemon's public URL, with the payload hash); the signer here is a few lines
of C{hmac} rather than C{mohawk}, checked against
C{msisdnd.hawk.authorization_header} at start.  HTTP is a minimal
keep-alive HTTP/1.1 client, one connection per user to each server, so
that the driver costs little CPU next to the daemon.

Each load level warms up, then measures a window; counted are the flows,
requests, errors and latencies that I{end} inside the window, and the CPU
time (utime + stime from C{/proc/<pid>/stat}) each process spent in it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Protocol

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import (  # noqa: E402
    cpu_seconds, http_ok, machine, machine_busy_seconds, redis_answers, run)
from _wire import head_fields  # noqa: E402

BIN = Path(sys.executable).parent

MCC = "208"
MO_VERIFIER = "33700000000"
POLL_INTERVAL = 0.020
POLL_DEADLINE = 2.0
CERT_DURATION = 10
REQUEST_TIMEOUT = 15.0
MT_SHARE = 0.5
RIGHT_CODE_SHARE = 0.66

TARGET_FLOWS_PER_DAEMON_CPU_S = 500
TARGET_ACCEPT_SUBMIT_P99_MS = 5.0
TARGET_SCALE_OUT = 0.90
#: Backend flows per daemon CPU-second / the upstream mix's, in the same run.
TARGET_BACKEND_RATIO = 1.0

#: What a flow can be (C{--mix}).
MIXES = ("upstream", "register", "heartbeat", "backend")
#: Flows C{bench/flow_floor.py} drives with this driver: the device flow with every step
#: fixed (MT, the right code, a certificate in one format), and one request to a bare
#: Klein route (C{POST /echo}, a small JSON body in and out).
FIXED_MIXES = ("device-jwt", "device-browserid", "bare")
#: The bare route's request body.
BARE_BODY = b'{"msisdn": "+33612345678", "mcc": "208"}'
#: Names in reports.
MIX_NAMES = {"upstream": "device (upstream mix)", "register": "POST /register",
             "heartbeat": "GET /__lbheartbeat__", "backend": "backend (Verify API)",
             "device-jwt": "device flow, JWT (EdDSA) certificate",
             "device-browserid": "device flow, BrowserID (RSA-2048) certificate",
             "bare": "bare Klein route (POST /echo)"}
#: An API key as C{msisdnd api-keys create} prints it: key id, ".", secret.
API_KEY = re.compile(r"[0-9a-f]{16}\.[A-Za-z0-9_-]{43}")
#: The backend flow's key: no daily budget, and a rate no load here reaches.
API_KEY_RATE_PER_MINUTE = 10_000_000

#: C{--webhook}: the webhook's name (its consumer group) and audience, the event stream.
WEBHOOK_NAME = "load"
WEBHOOK_AUDIENCE = "https://rp.example"
EVENT_STREAM = b"ms:ev"
#: The events each kind of complete flow makes (README, "Events for relying services").
EVENTS_OF_FLOW = {
    "MT right": ("device.verified", "device.unregistered"),
    "MO right": ("device.verified", "device.unregistered"),
    "backend approved": ("verification.approved",),
}
#: After a level, wait for the receiver this long at most, and give up sooner when
#: no delivery arrived for DRAIN_STALL seconds.
DRAIN_MAX = 300.0
DRAIN_STALL = 30.0

#: [limits] ceilings for a load test from one address (the maxima msisdnd accepts).
RAISED_LIMITS = {
    "number_sends_10min": 1000, "number_sends_day": 10000,
    "ip_registrations_minute": 100000, "ip_registrations_day": 10000000,
    "ip_sends_minute": 100000, "ip_sends_day": 10000000,
    "prefix_sends_day": 10000000, "country_sends_day": 100000000,
    "network_sends_day": 100000000,
    # The pumping guard blocks a prefix with >= guard_floor sends and too few verified:
    # the first users of a level all send before any verifies. Its counters still run.
    "guard_floor": 1000000,
    # SMS parts per day across the cluster (0: no budget); a suite sends ~100,000.
    "daily_sms_budget": 0,
}
#: [limits] countries, when the code has it: every number here is French (and the code
#: may refuse to start without the list).
LIMIT_COUNTRIES = ["FR"]
#: [http] max_connections_per_client, when the code has it: every user connects from
#: 127.0.0.1, one connection each (the default, 64, would refuse most of 200 users).
MAX_CONNECTIONS_PER_CLIENT = 4096

#: Daemon endpoints, in report order (and the SMSC's, prefixed "smsc ").
ENDPOINTS = ("GET /__lbheartbeat__", "register", "sms/mt/verify", "sms/verify_code", "sms/verify_code (wrong)",
             "certificate/sign", "unregister", "backend create", "backend check",
             "smsc POST /mo", "smsc GET /receive")


# -- small helpers ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_values: list[float], p: float) -> float:
    """The C{p}-th percentile (nearest rank) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def export_source(rev: str) -> tuple[Path, str]:
    """C{git archive} of C{msisdnd/} and C{twisted/} at C{rev} into a temporary
    directory: the daemons and the fake SMSC run that code (C{PYTHONPATH}),
    whatever the working tree holds meanwhile.  Returns the directory and the
    short commit."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    out = Path(tempfile.mkdtemp(prefix=f"msisdnd-src-{commit}-"))
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "msisdnd", "twisted"],
                             cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out, commit


def environment(source_commit: str | None = None) -> dict:
    import twisted

    found = machine()
    return {
        **found,
        "twisted": twisted.__version__,
        "redis": run(shutil.which("redis-server") or "redis-server", "--version"),
        "git_commit": source_commit or found["git_commit"],
        # Whether the daemons ran the working tree with msisdnd/ changed (not a commit).
        "git_dirty": source_commit is None and bool(run(
            "git", "status", "--porcelain", "--untracked-files=all", "msisdnd")),
        "source": f"git archive {source_commit}" if source_commit else "working tree",
    }



def announce(rev: str) -> tuple[Path | None, dict]:
    """The code to run (L{export_source} of C{rev}, or C{None} for the working
    tree) and L{environment}, after printing the C{command:}, C{commit:} and
    C{machine:} lines a benchmark's output starts with."""
    source, source_commit = (None, None) if rev == "worktree" else export_source(rev)
    env = environment(source_commit)
    print(f"command: {env['command']}")
    print(f"commit: {env['git_commit']} ({env['source']}"
          f"{', msisdnd/ modified' if env['git_dirty'] else ''})")
    print(f"machine: {env['date']}, {env['nproc']} CPUs, {env['cpu_model']}, Python "
          f"{env['python']}, Twisted {env['twisted']}, {env['redis'].split(' sha=')[0]}",
          flush=True)
    return source, env

# -- the processes ------------------------------------------------------------------


class Cluster:
    """Redis, the fake SMSC and C{daemons} msisdnd daemons, each its own process.

    @ivar api: the daemons' device API URLs (also their Hawk public URLs).
    @ivar admin: the daemons' admin URLs.
    @ivar webhook: whether every daemon has one C{[[webhook]]}, to a receiver
        process of the cluster's own (C{bench/webhooks.py --role receiver}).
    """

    def __init__(self, daemons: int, window: int, profile: str | None = None,
                 keep_logs: bool = False, source: Path | None = None, nodelay: bool = False,
                 webhook: bool = False, log_access: str | None = None):
        self.count = daemons
        self.log_access = log_access
        self.webhook = webhook
        self._redis_client = None
        self.nodelay = nodelay
        self.source = source
        self.window = window
        self.profile = profile
        self.keep_logs = keep_logs
        self.dir = Path(tempfile.mkdtemp(prefix="msisdnd-load-"))
        self.procs: dict[str, subprocess.Popen] = {}
        self.api: list[str] = []
        self.admin: list[str] = []
        self.cprofile_out: list[Path] = []
        self._api_key: str | None = None
        # Each level's numbers start at a base no other level of this cluster had.
        self._number_bases = random.sample(range(90), 90)

    # pids, by role
    @property
    def daemon_pids(self) -> list[int]:
        return [self.procs[f"daemon{i}"].pid for i in range(self.count)]

    @property
    def smsc_pid(self) -> int:
        return self.procs["smsc"].pid

    @property
    def redis_pid(self) -> int:
        return self.procs["redis"].pid

    @property
    def receiver_pid(self) -> int:
        return self.procs["receiver"].pid

    def _env(self) -> dict:
        env = dict(os.environ)
        if self.source is not None:
            # The exported tree comes before the editable install's /work/main on sys.path
            # (and before any PYTHONPATH this script was given, which the children keep).
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.source), os.environ.get("PYTHONPATH")) if p)
        return env

    def _spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
        env = self._env()
        with open(self.dir / f"{name}.log", "w") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=cwd or self.dir, start_new_session=True, env=env)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        try:
            return (self.dir / f"{name}.log").read_text()[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        from msisdnd.cli import keygen

        self.redis_port = free_port()
        redis = shutil.which("redis-server")
        if redis is None:
            raise SystemExit("redis-server is not on PATH")
        self._spawn("redis", [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(self.dir)])
        self.smpp_port, self.smsc_http_port = free_port(), free_port()
        self.smsc_http = f"http://127.0.0.1:{self.smsc_http_port}"
        self._spawn("smsc", self._twistd() + ["-n", "--pidfile=", "fakesmsc",
                             "--smpp", f"tcp:{self.smpp_port}:interface=127.0.0.1",
                             "--http", f"tcp:{self.smsc_http_port}:interface=127.0.0.1",
                             "--receipt-delay", "none"])
        with open(os.devnull, "w") as quiet:
            keygen(str(self.dir / "keys"), str(self.dir / "master"), quiet)
        if self.webhook:
            self._start_receiver()
        self._wait(lambda: redis_answers(self.redis_port), "redis")
        self._wait(lambda: http_ok(self.smsc_http + "/"), "smsc")
        for i in range(self.count):
            api_port, admin_port = free_port(), free_port()
            config = self._config(i, api_port, admin_port)
            argv = self._twistd() + ["--nodaemon", "--pidfile=", "--logger",
                    "msisdnd.logs.observer", "msisdnd", "--config", str(config)]
            if self.profile == "cprofile" and i == 0:
                out = self.dir / f"daemon{i}.prof"
                self.cprofile_out.append(out)
                if not self.nodelay:
                    argv = [sys.executable] + argv
                argv = argv[:1] + ["-m", "cProfile", "-o", str(out)] + argv[1:]
            self._spawn(f"daemon{i}", argv)
            self.api.append(f"http://127.0.0.1:{api_port}")
            self.admin.append(f"http://127.0.0.1:{admin_port}")
        for i in range(self.count):
            self._wait(lambda url=self.api[i]: http_ok(url + "/__heartbeat__"),
                       f"daemon{i}", timeout=60)
        if self.webhook:
            # The group is made at "$" when a daemon starts its delivery: only what is
            # written after it is read.
            self._wait(lambda: self.event_backlog() is not None, "daemon0", timeout=30)

    # -- the webhook (--webhook) ---------------------------------------------------

    def _start_receiver(self) -> None:
        """The receiver (C{bench/webhooks.py --role receiver}, which prints its port
        first) and the webhook's secret, written by the code under test's CLI:
        C{msisdnd keygen --webhook-secret webhook-secret}."""
        self._spawn("receiver", [sys.executable, str(Path(__file__).resolve().parent
                                                     / "webhooks.py"), "--role", "receiver"])
        made = subprocess.run([str(BIN / "msisdnd"), "keygen", "--webhook-secret",
                               "webhook-secret"], cwd=self.dir, env=self._env(),
                              capture_output=True, text=True, timeout=60)
        if made.returncode != 0:
            raise SystemExit(f"msisdnd keygen --webhook-secret exited {made.returncode} (does "
                             f"the code measured have webhooks?):\n{made.stdout}{made.stderr}")
        port: list[int] = []

        def printed() -> bool:
            first = (self.dir / "receiver.log").read_text().split("\n", 1)
            if len(first) == 2 and first[0].strip().isdigit():
                port.append(int(first[0]))
                return True
            return False

        self._wait(printed, "receiver")
        self.receiver = f"http://127.0.0.1:{port[0]}"

    def _webhook_config(self) -> str:
        if not self.webhook:
            return ""
        return textwrap.dedent(f"""
            [[webhook]]
            name = "{WEBHOOK_NAME}"
            url = "{self.receiver}/hooks"
            secret_file = "webhook-secret"
            audience = "{WEBHOOK_AUDIENCE}"
            allow_insecure = true
        """)

    def receiver_stats(self) -> dict:
        """The receiver's counts since its last reset: C{requests}, C{distinct}
        (webhook-ids), C{types} (distinct deliveries by event type), C{connections}."""
        with urllib.request.urlopen(self.receiver + "/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def receiver_reset(self) -> None:
        with urllib.request.urlopen(self.receiver + "/reset", timeout=10) as resp:
            resp.read()

    def _redis(self):
        """A blocking RESP client (bench/webhooks.py's) on the cluster's Redis."""
        if self._redis_client is None:
            import importlib.util

            path = Path(__file__).resolve().parent / "webhooks.py"
            spec = importlib.util.spec_from_file_location("_bench_webhooks", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._redis_client = module.Redis(self.redis_port)
        return self._redis_client

    def event_backlog(self) -> dict | None:
        """The webhook's consumer group: events C{pending} (read, not acknowledged),
        C{unread} (its C{lag}: written, not yet read; C{None} when Redis cannot
        tell) and whether it has read the stream's last entry and acknowledged
        everything (C{caught_up}).  C{None} while the group does not exist."""
        redis = self._redis()
        group = redis.group(WEBHOOK_NAME)
        if group is None:
            return None
        stream = redis.call("XINFO", "STREAM", EVENT_STREAM)
        info = {stream[i].decode(): stream[i + 1] for i in range(0, len(stream) - 1, 2)}
        lag = group.get("lag")
        pending = int(group["pending"])
        return {"pending": pending, "unread": None if lag is None else int(lag),
                "caught_up": pending == 0
                and group["last-delivered-id"] == info["last-generated-id"]}

    def _twistd(self) -> list[str]:
        if self.nodelay:
            return [sys.executable, str(Path(__file__).resolve().parent / "_nodelay.py")]
        return [str(BIN / "twistd")]

    def _config(self, index: int, api_port: int, admin_port: int) -> Path:
        path = self.dir / f"msisdnd{index}.toml"
        path.write_text(textwrap.dedent(f"""
            [http]
            listen = "tcp:{api_port}:interface=127.0.0.1"
            public_url = "http://127.0.0.1:{api_port}"
            {self._connection_caps()}
            [admin]
            listen = "tcp:{admin_port}:interface=127.0.0.1"
            [redis]
            url = "redis://127.0.0.1:{self.redis_port}/0"
            [keys]
            browserid = ["keys/browserid.pem"]
            jwt = ["keys/jwt.pem"]
            [secrets]
            master_file = "master"
            [verification]
            send_timeout = 5
            [[carrier]]
            name = "fake"
            host = "127.0.0.1"
            port = {self.smpp_port}
            system_id = "msisdnd{index}"
            password = "pw"
            window = {self.window}
            mt_sender = "msisdnd"
            mo_verifier = "{MO_VERIFIER}"
            default = true
            region = "FR"
            reconnect_delay_initial = 0.05
            reconnect_delay_max = 0.2
        """) + self._limits() + self._webhook_config()
            + (f'\n[log]\naccess = "{self.log_access}"\n' if self.log_access else ""))
        return path

    def _limits(self) -> str:
        """A C{[limits]} section when the daemon's code has abuse limits.

        All the load comes from one address, from sequential numbers (a few
        thousand per 4-digit prefix) in one country: the rate limits and
        budgets would refuse it within seconds.  Their ceilings are raised
        to the maxima the configuration accepts; every check still runs
        (the Lua calls are part of what a flow costs), none refuses.
        """
        root = self.source if self.source is not None else REPO
        # Where the limits module lives depends on the revision measured.
        limits = next((path for path in (root / "msisdnd" / "state" / "limits.py",
                                         root / "msisdnd" / "limits.py") if path.exists()), None)
        if limits is None:
            return ""
        text = limits.read_text()
        lines = ["", "[limits]"]
        for name, value in RAISED_LIMITS.items():
            if f"    {name}:" in text:
                lines.append(f"{name} = {value}")
        if "    countries:" in text:
            lines.append(f"countries = {json.dumps(LIMIT_COUNTRIES)}")
        return "\n".join(lines) + "\n"

    def _connection_caps(self) -> str:
        """C{[http] max_connections_per_client} raised when the code has the cap: all
        the users connect from one address."""
        root = self.source if self.source is not None else REPO
        config = root / "msisdnd" / "config.py"
        if config.exists() and "max_connections_per_client" in config.read_text():
            return f"max_connections_per_client = {MAX_CONNECTIONS_PER_CLIENT}"
        return ""

    def _wait(self, ready, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited {proc.returncode}:\n{self.log(name)}")
            if ready():
                return
            time.sleep(0.1)
        raise SystemExit(f"{name} not ready within {timeout}s:\n{self.log(name)}")

    def number_base(self) -> int:
        """Where a level's numbers start (see L{Driver.number}): a multiple of a
        million that no earlier level on this cluster started at."""
        if not self._number_bases:
            self._number_bases = random.sample(range(90), 90)
        return self._number_bases.pop() * 1_000_000

    def api_key(self) -> str:
        """An API key for the backend flow, made once per cluster the way an
        operator makes one: C{msisdnd api-keys create --config <daemon 0's>
        --name load --rate-per-minute 10000000 --daily-budget 0} (the code
        under test's CLI, on the cluster's Redis), which prints the key alone
        on its last line."""
        if self._api_key is None:
            argv = [str(BIN / "msisdnd"), "api-keys", "create", "--config",
                    str(self.dir / "msisdnd0.toml"), "--name", "load",
                    "--rate-per-minute", str(API_KEY_RATE_PER_MINUTE), "--daily-budget", "0"]
            done = subprocess.run(argv, cwd=self.dir, env=self._env(), capture_output=True,
                                  text=True, timeout=60)
            lines = done.stdout.strip().splitlines()
            if done.returncode != 0 or not lines or not API_KEY.fullmatch(lines[-1].strip()):
                raise SystemExit(f"msisdnd api-keys create exited {done.returncode} (does the "
                                 f"code measured have the backend API?):\n{done.stdout}"
                                 f"{done.stderr}")
            self._api_key = lines[-1].strip()
        return self._api_key

    def clear_messages(self) -> int:
        req = urllib.request.Request(self.smsc_http + "/messages", method="DELETE")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["deleted"]

    def commandstats(self) -> Counter:
        """Redis's calls per command so far (C{INFO commandstats})."""
        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=5) as s:
            s.sendall(b"INFO commandstats\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                data += chunk
                head, _, rest = data.partition(b"\r\n")
                if head.startswith(b"$") and len(rest) >= int(head[1:]):
                    break
                if not chunk:
                    break
        calls: Counter = Counter()
        for line in rest.decode().splitlines():
            m = re.match(r"cmdstat_([a-z|]+):calls=(\d+)", line)
            if m:
                calls[m.group(1)] = int(m.group(2))
        return calls

    def metric(self, index: int, prefix: str) -> float:
        """The sum of every sample of daemon C{index}'s metric C{prefix}."""
        with urllib.request.urlopen(self.admin[index] + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if line.startswith(prefix) and not line.startswith("#"))

    def stop(self) -> None:
        # Daemons first and gracefully (cProfile writes its file at exit), then the rest.
        daemons = [n for n in self.procs if n.startswith("daemon")]
        for name in daemons:
            if self.procs[name].poll() is None:
                self.procs[name].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name in daemons:
            try:
                self.procs[name].wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self._redis_client is not None:
            self._redis_client.sock.close()
            self._redis_client = None
        if self.keep_logs:
            print(f"logs kept in {self.dir}", file=sys.stderr)
        else:
            for prof in self.cprofile_out:
                if prof.exists():
                    shutil.copy(prof, Path(tempfile.gettempdir()) / prof.name)
            shutil.rmtree(self.dir, ignore_errors=True)


# -- Hawk, the lean way ---------------------------------------------------------------


class HawkSigner:
    """Signs requests for one session exactly as C{msisdnd.hawk.authorization_header}
    does with C{with_hash=True} (checked by L{hawk_selftest})."""

    __slots__ = ("id", "key")

    def __init__(self, hawk_id: str, key_hex: str):
        self.id = hawk_id
        self.key = key_hex.encode("ascii")

    def header(self, method: str, path: str, host: str, port: int, body: bytes,
               content_type: str, ts: int | None = None, nonce: str | None = None) -> str:
        if ts is None:
            ts = int(time.time())
        if nonce is None:
            nonce = base64.urlsafe_b64encode(os.urandom(9)).decode("ascii")
        payload = hashlib.sha256(b"hawk.1.payload\n" + content_type.encode("ascii") + b"\n"
                                 + body + b"\n").digest()
        phash = base64.b64encode(payload).decode("ascii")
        normalized = f"hawk.1.header\n{ts}\n{nonce}\n{method}\n{path}\n{host}\n{port}\n{phash}\n\n"
        mac = base64.b64encode(hmac.new(self.key, normalized.encode("ascii"),
                                        hashlib.sha256).digest()).decode("ascii")
        return f'Hawk mac="{mac}", hash="{phash}", id="{self.id}", ts="{ts}", nonce="{nonce}"'


class BearerToken:
    """The backend API's C{Authorization: Bearer <API key>}, with L{HawkSigner}'s
    C{header} signature so that L{Driver.call} takes either."""

    __slots__ = ("value",)

    def __init__(self, api_key: str):
        self.value = "Bearer " + api_key

    def header(self, method: str, path: str, host: str, port: int, body: bytes,
               content_type: str) -> str:
        return self.value


def hawk_selftest() -> None:
    """Our signer must produce the reference client's header, byte for byte."""
    from msisdnd import hawk

    creds = hawk.derive_session(os.urandom(32))
    ours = HawkSigner(creds.id, creds.key)
    for path, body, ctype in (("/sms/verify_code", b'{"code": "123456"}', "application/json"),
                              ("/unregister", b"", "")):
        want = hawk.authorization_header(creds, "POST", "http://127.0.0.1:8123" + path, body,
                                         ctype, ts=1234567890, nonce="n0nce", with_hash=True)
        got = ours.header("POST", path, "127.0.0.1", 8123, body, ctype, ts=1234567890,
                          nonce="n0nce")
        if want != got:
            raise SystemExit(f"Hawk self-test failed:\n  reference {want}\n  ours      {got}")


# -- a minimal HTTP/1.1 keep-alive client ----------------------------------------------


class RequestTimeout(Exception):
    pass


class HTTPConnection(Protocol):
    """One keep-alive connection; one request at a time; fires C{(status, body)}."""

    def __init__(self):
        self._buf = b""
        self._d: defer.Deferred | None = None
        self.sent_at = 0.0
        self.closed = False
        self.timed_out = False

    def connectionMade(self) -> None:
        # As device HTTP stacks do; the driver never writes twice in a row anyway.
        self.transport.setTcpNoDelay(True)

    def request(self, data: bytes) -> defer.Deferred:
        self._d = d = defer.Deferred()
        self.sent_at = time.time()
        self.transport.write(data)
        return d

    @property
    def busy(self) -> bool:
        return self._d is not None

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        while self._d is not None:
            parsed = self._parse()
            if parsed is None:
                return
            d, self._d = self._d, None
            d.callback(parsed)

    def _parse(self):
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = buf[:end].split(b"\r\n")
        status = int(lines[0][9:12])
        length, chunked, close = head_fields(lines[1:])
        pos = end + 4
        if chunked:
            body = []
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(buf[pos:eol].split(b";")[0], 16)
                if size == 0:
                    # "0\r\n", trailers if any, then an empty line.
                    tail = buf.find(b"\r\n\r\n", eol)
                    if tail < 0:
                        return None
                    pos = tail + 4
                    break
                if len(buf) < eol + 2 + size + 2:
                    return None
                body.append(buf[eol + 2:eol + 2 + size])
                pos = eol + 2 + size + 2
            content = b"".join(body)
        elif length is not None:
            if len(buf) < pos + length:
                return None
            content = buf[pos:pos + length]
            pos += length
        elif status in (204, 304) or status < 200:
            content = b""
        else:
            return None  # read until close: not expected from these servers
        self._buf = buf[pos:]
        if close:
            self.closed = True
            self.transport.loseConnection()
        return status, content

    def connectionLost(self, reason=None) -> None:
        self.closed = True
        if self._d is not None:
            d, self._d = self._d, None
            d.errback(RequestTimeout() if self.timed_out else ConnectionLost())


class Server:
    """Where requests go: host, port, the Host header."""

    def __init__(self, url: str):
        rest = url.split("://", 1)[1].rstrip("/")
        self.host, _, port = rest.partition(":")
        self.port = int(port or 80)
        self.hostport = f"{self.host}:{self.port}"
        self.endpoint = TCP4ClientEndpoint(reactor, self.host, self.port, timeout=10)


# -- the driver -------------------------------------------------------------------------


class FlowError(Exception):
    """A flow went wrong; the message is the error's kind."""


class Stats:
    """What ended inside the window [t0, t1]."""

    def __init__(self, t0: float, t1: float):
        self.t0, self.t1 = t0, t1
        self.flows = 0
        self.flow_kinds: Counter[str] = Counter()
        self.flow_seconds: list[float] = []
        self.requests: Counter[str] = Counter()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.errors_outside = 0
        self.accept_submit: list[float] = []
        self.mo_to_code: list[float] = []
        self.polls: Counter[str] = Counter()
        self.started = 0
        # Every complete flow of the level, whenever it ended (the events it made), and
        # the flows and failures that ended after the window closed (t1): with --webhook
        # a level is also measured from t0 until everything has settled.
        self.all_kinds: Counter[str] = Counter()
        self.all_errors = 0
        self.tail_kinds: Counter[str] = Counter()
        self.tail_errors = 0

    def inside(self, t: float) -> bool:
        return self.t0 <= t <= self.t1

    def as_json(self) -> dict:
        return {
            "t0": self.t0, "t1": self.t1, "flows": self.flows,
            "flow_kinds": dict(self.flow_kinds), "flow_seconds": self.flow_seconds,
            "requests": dict(self.requests), "latency": dict(self.latency),
            "errors": dict(self.errors), "errors_outside": self.errors_outside,
            "accept_submit": self.accept_submit, "mo_to_code": self.mo_to_code,
            "polls": dict(self.polls), "started": self.started,
            "all_kinds": dict(self.all_kinds), "all_errors": self.all_errors,
            "tail_kinds": dict(self.tail_kinds), "tail_errors": self.tail_errors,
        }


class RateLimiter:
    """At most C{rate} flow starts per second, evenly spaced (no catch-up bursts)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next = time.monotonic()

    def wait(self) -> defer.Deferred | None:
        now = time.monotonic()
        slot = max(self.next, now)
        self.next = slot + self.interval
        if slot - now > 0.0005:
            return task.deferLater(reactor, slot - now, lambda: None)
        return None


class User:
    __slots__ = ("api", "conns", "index")

    def __init__(self, index: int, api: Server):
        self.index = index
        self.api = api
        self.conns: dict[Server, HTTPConnection] = {}


_SHORT = re.compile(r"(?<![0-9])([0-9]{6})(?![0-9])")
_LONG = re.compile(r"(?<![0-9a-f])([0-9a-f]{32})(?![0-9a-f])")


_BLOCKS: list[int] = []


def _mobile_blocks() -> list[int]:
    """The two digits after +336 under which every number is a valid French mobile
    (phonenumbers says some are not: +33639..., +33690... to +33697...)."""
    if not _BLOCKS:
        import phonenumbers

        def mobile(number: str) -> bool:
            parsed = phonenumbers.parse(number, None)
            return phonenumbers.is_valid_number(parsed) and phonenumbers.number_type(parsed) in (
                phonenumbers.PhoneNumberType.MOBILE,
                phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)

        _BLOCKS.extend(b for b in range(100) if all(
            mobile(f"+336{b:02d}{c}{tail}") for c in range(10) for tail in ("00000", "99999")))
    return _BLOCKS


class Driver:
    """N virtual users against the daemons in C{spec["api"]} (user i uses daemon i mod n).

    C{spec}: api (list of URLs), smsc (URL), users, start, t0, t1 (epoch
    seconds), rate (flows/s for this driver, or None), index, seed,
    number_base, mix (L{MIXES}; default upstream), api_key (the backend
    mix's).
    """

    def __init__(self, spec: dict):
        from msisdnd import hawk
        from msisdnd.device.client import generate_browserid_keypair

        self.spec = spec
        self.derive = hawk.derive_session
        self.apis = [Server(u) for u in spec["api"]]
        self.smsc = Server(spec["smsc"])
        self.rng = random.Random(spec.get("seed", 0))
        self.stats = Stats(spec["t0"], spec["t1"])
        self.limiter = RateLimiter(spec["rate"]) if spec.get("rate") else None
        self.stopping = False
        self.numbers = 0
        _, public_key = generate_browserid_keypair()
        self.sign_body = json.dumps({"publicKey": public_key,
                                     "duration": CERT_DURATION}).encode()
        self.sign_jwt_body = json.dumps({"publicKey": public_key, "duration": CERT_DURATION,
                                         "format": "jwt"}).encode()
        self.conns: set[HTTPConnection] = set()
        self.bearer = BearerToken(spec["api_key"]) if spec.get("api_key") else None

    def number(self) -> str:
        """A French mobile number (+336 and 8 digits) no flow of this level had."""
        n = self.spec.get("number_base", 0) + self.spec.get("index", 0) * 10_000_000 \
            + self.numbers
        self.numbers += 1
        blocks = _mobile_blocks()
        block = blocks[(n // 1_000_000) % len(blocks)]
        return f"+336{block:02d}{n % 1_000_000:06d}"

    # -- HTTP ----------------------------------------------------------------

    async def _conn(self, user: User, server: Server) -> HTTPConnection:
        conn = user.conns.get(server)
        if conn is None or conn.closed:
            conn = await connectProtocol(server.endpoint, HTTPConnection())
            user.conns[server] = conn
            self.conns.add(conn)
        return conn

    async def call(self, user: User, server: Server, name: str, method: str, path: str,
                   body: bytes = b"", signer: HawkSigner | BearerToken | None = None):
        """One request; C{(status, body, sent_at)}.  Raises L{FlowError} when no answer."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {server.hostport}\r\n"
        ctype = "application/json" if body else ""
        if body:
            head += "Content-Type: application/json\r\n"
        if signer is not None:
            head += "Authorization: " + signer.header(method, path, server.host, server.port,
                                                      body, ctype) + "\r\n"
        if method != "GET":
            head += f"Content-Length: {len(body)}\r\n"
        data = head.encode("ascii") + b"\r\n" + body
        started = time.perf_counter()
        try:
            conn = await self._conn(user, server)
            status, content = await conn.request(data)
        except Exception as e:  # noqa: BLE001 - every failure is a kind of error
            raise FlowError(f"{name}: {type(e).__name__}") from None
        now = time.time()
        if self.stats.inside(now):
            self.stats.requests[name] += 1
            self.stats.latency[name].append(time.perf_counter() - started)
        return status, content, conn.sent_at

    def expect(self, name: str, status: int, content: bytes, want: int) -> object:
        if status == want:
            return json.loads(content) if content else None
        errno = None
        try:
            errno = json.loads(content).get("errno")
        except (ValueError, AttributeError):
            pass
        raise FlowError(f"{name}: HTTP {status}" + (f" errno {errno}" if errno else ""))

    async def poll(self, user: User, number: str, pattern: re.Pattern) -> tuple[str, float]:
        """The code sent to C{number} and when the SMSC got it (its C{received_at})."""
        deadline = time.monotonic() + POLL_DEADLINE
        path = "/receive?to=" + number.lstrip("+")
        polls = 0
        while True:
            status, content, _ = await self.call(user, self.smsc, "smsc GET /receive", "GET",
                                                 path)
            polls += 1
            messages = self.expect("smsc GET /receive", status, content, 200)
            for message in reversed(messages):
                found = pattern.findall(message["text"])
                if found:
                    self.stats.polls[str(min(polls, 5)) if polls < 5 else "5+"] += 1
                    return found[-1], message["received_at"]
            if time.monotonic() >= deadline:
                raise FlowError("receive: no code within 2 s")
            await task.deferLater(reactor, POLL_INTERVAL, lambda: None)

    # -- one flow ------------------------------------------------------------

    async def flow(self, user: User) -> str:
        api = user.api
        stats = self.stats
        mix = self.spec.get("mix", "upstream")
        if mix == "heartbeat":
            status, content, _ = await self.call(user, api, "GET /__lbheartbeat__", "GET",
                                                 "/__lbheartbeat__")
            self.expect("GET /__lbheartbeat__", status, content, 200)
            return "heartbeat"
        if mix == "register":
            status, content, _ = await self.call(user, api, "register", "POST", "/register")
            self.expect("register", status, content, 200)
            return "register"
        if mix == "backend":
            return await self.backend_flow(user)
        if mix == "bare":
            status, content, _ = await self.call(user, api, "bare POST /echo", "POST", "/echo",
                                                 BARE_BODY)
            self.expect("bare POST /echo", status, content, 200)
            return "bare"
        # device-jwt / device-browserid: MT, the right code, one certificate format.
        fixed = mix != "upstream"
        status, content, _ = await self.call(user, api, "register", "POST", "/register")
        token = self.expect("register", status, content, 200)["msisdnSessionToken"]
        creds = self.derive(bytes.fromhex(token))
        signer = HawkSigner(creds.id, creds.key)
        number = self.number()
        mt = fixed or self.rng.random() < MT_SHARE
        if mt:
            body = json.dumps({"msisdn": number, "mcc": MCC,
                               "shortVerificationCode": True}).encode()
            status, content, sent_at = await self.call(user, api, "sms/mt/verify", "POST",
                                                       "/sms/mt/verify", body, signer)
            self.expect("sms/mt/verify", status, content, 204)
            code, received_at = await self.poll(user, number, _SHORT)
            if stats.inside(sent_at):
                stats.accept_submit.append(received_at - sent_at)
        else:
            body = json.dumps({"from": number, "to": MO_VERIFIER,
                               "text": f"/sms/momt/verify {creds.id}"}).encode()
            status, content, sent_at = await self.call(user, self.smsc, "smsc POST /mo", "POST",
                                                       "/mo", body)
            self.expect("smsc POST /mo", status, content, 200)
            code, received_at = await self.poll(user, number, _LONG)
            if stats.inside(sent_at):
                stats.mo_to_code.append(received_at - sent_at)
        right = fixed or self.rng.random() < RIGHT_CODE_SHARE
        if right:
            body = json.dumps({"code": code}).encode()
            status, content, _ = await self.call(user, api, "sms/verify_code", "POST",
                                                 "/sms/verify_code", body, signer)
            answer = self.expect("sms/verify_code", status, content, 200)
            if answer.get("msisdn") != number:
                raise FlowError("sms/verify_code: another number")
            status, content, _ = await self.call(user, api, "certificate/sign", "POST",
                                                 "/certificate/sign",
                                                 self.sign_jwt_body if mix == "device-jwt"
                                                 else self.sign_body, signer)
            if "cert" not in self.expect("certificate/sign", status, content, 200):
                raise FlowError("certificate/sign: no cert")
        else:
            if mt:
                wrong = f"{(int(code) + 1) % 1_000_000:06d}"
            else:
                wrong = code[:-1] + ("0" if code[-1] != "0" else "1")
            body = json.dumps({"code": wrong}).encode()
            status, content, _ = await self.call(user, api, "sms/verify_code (wrong)", "POST",
                                                 "/sms/verify_code", body, signer)
            if status != 400 or json.loads(content).get("errno") != 105:
                self.expect("sms/verify_code (wrong)", status, content, 400)
                raise FlowError(f"sms/verify_code (wrong): errno "
                                f"{json.loads(content).get('errno')}")
        status, content, _ = await self.call(user, api, "unregister", "POST", "/unregister",
                                             b"", signer)
        self.expect("unregister", status, content, 204)
        return ("MT" if mt else "MO") + (" right" if right else " wrong")

    async def backend_flow(self, user: User) -> str:
        """A relying service's server verifying one fresh number: create (201,
        pending, for that number), the code read off the fake SMSC as the
        device flow reads it, check by id (200, approved and valid)."""
        api, stats = user.api, self.stats
        number = self.number()
        body = json.dumps({"to": number}).encode()
        status, content, sent_at = await self.call(user, api, "backend create", "POST",
                                                   "/v2/verifications", body, self.bearer)
        verification = self.expect("backend create", status, content, 201)
        if verification.get("to") != number:
            raise FlowError("backend create: another number")
        if verification.get("status") != "pending":
            raise FlowError(f"backend create: {verification.get('status')}")
        code, received_at = await self.poll(user, number, _SHORT)
        if stats.inside(sent_at):
            stats.accept_submit.append(received_at - sent_at)
        body = json.dumps({"id": verification["id"], "code": code}).encode()
        status, content, _ = await self.call(user, api, "backend check", "POST",
                                             "/v2/verifications/check", body, self.bearer)
        answer = self.expect("backend check", status, content, 200)
        if answer.get("status") != "approved" or answer.get("valid") is not True:
            raise FlowError(f"backend check: {answer.get('status')}, valid "
                            f"{answer.get('valid')}")
        return "backend approved"

    async def user_loop(self, user: User) -> None:
        stats = self.stats
        while not self.stopping:
            if self.limiter is not None:
                wait = self.limiter.wait()
                if wait is not None:
                    await wait
                if self.stopping:
                    break
            started = time.perf_counter()
            stats.started += 1
            try:
                kind = await self.flow(user)
            except FlowError as e:
                self._failed(time.time())
                if stats.inside(time.time()):
                    stats.errors[str(e)] += 1
                else:
                    stats.errors_outside += 1
                await task.deferLater(reactor, 0.05, lambda: None)
                continue
            except Exception as e:  # noqa: BLE001 - a bug in the driver, counted
                self._failed(time.time())
                if stats.inside(time.time()):
                    stats.errors[f"driver: {type(e).__name__}: {e}"] += 1
                await task.deferLater(reactor, 0.05, lambda: None)
                continue
            now = time.time()
            stats.all_kinds[kind] += 1
            if stats.inside(now):
                stats.flows += 1
                stats.flow_kinds[kind] += 1
                stats.flow_seconds.append(time.perf_counter() - started)
            elif now > stats.t1:
                stats.tail_kinds[kind] += 1

    def _failed(self, now: float) -> None:
        self.stats.all_errors += 1
        if now > self.stats.t1:
            self.stats.tail_errors += 1

    def _watchdog(self) -> None:
        now = time.time()
        for conn in list(self.conns):
            if conn.closed:
                self.conns.discard(conn)
            elif conn.busy and now - conn.sent_at > REQUEST_TIMEOUT:
                conn.timed_out = True
                conn.transport.abortConnection()

    async def run(self) -> dict:
        spec = self.spec
        delay = spec["start"] - time.time()
        if delay > 0:
            await task.deferLater(reactor, delay, lambda: None)
        watchdog = task.LoopingCall(self._watchdog)
        watchdog.start(1.0, now=False)
        users = [User(i, self.apis[(spec.get("index", 0) + i) % len(self.apis)])
                 for i in range(spec["users"])]
        # Stagger the users' first flows over the first half second.
        loops = []
        for user in users:
            d = task.deferLater(reactor, self.rng.random() * 0.5,
                                lambda u=user: defer.Deferred.fromCoroutine(self.user_loop(u)))
            loops.append(d)
        await task.deferLater(reactor, max(0.0, spec["t1"] - time.time()), lambda: None)
        self.stopping = True
        done = defer.DeferredList(loops, consumeErrors=True)
        grace = task.deferLater(reactor, REQUEST_TIMEOUT + 2, lambda: None)
        await defer.DeferredList([done, grace], fireOnOneCallback=True, consumeErrors=True)
        grace.cancel() if not grace.called else None
        watchdog.stop()
        for conn in list(self.conns):
            if not conn.closed:
                conn.transport.loseConnection()
        return self.stats.as_json()


def worker_main() -> int:
    """C{load.py --worker}: the spec as JSON on stdin; the stats as JSON written to the
    file C{spec["out"]} (a file, not stdout: the parent reads it once the worker ended)."""
    spec = json.loads(sys.stdin.read())

    async def main(_reactor):
        result = await Driver(spec).run()
        with open(spec["out"], "w") as f:  # noqa: ASYNC230 - once, as the worker ends
            json.dump(result, f)

    task.react(lambda r: defer.Deferred.fromCoroutine(main(r)), [])
    return 0


# -- one load level -------------------------------------------------------------------


def merge(parts: list[dict]) -> dict:
    out = {"flows": 0, "flow_kinds": Counter(), "flow_seconds": [], "requests": Counter(),
           "latency": defaultdict(list), "errors": Counter(), "errors_outside": 0,
           "accept_submit": [], "mo_to_code": [], "polls": Counter(), "started": 0,
           "all_kinds": Counter(), "all_errors": 0, "tail_kinds": Counter(), "tail_errors": 0}
    for p in parts:
        out["all_kinds"].update(p["all_kinds"])
        out["all_errors"] += p["all_errors"]
        out["tail_kinds"].update(p["tail_kinds"])
        out["tail_errors"] += p["tail_errors"]
        out["flows"] += p["flows"]
        out["flow_kinds"].update(p["flow_kinds"])
        out["flow_seconds"] += p["flow_seconds"]
        out["requests"].update(p["requests"])
        for k, v in p["latency"].items():
            out["latency"][k] += v
        out["errors"].update(p["errors"])
        out["errors_outside"] += p["errors_outside"]
        out["accept_submit"] += p["accept_submit"]
        out["mo_to_code"] += p["mo_to_code"]
        out["polls"].update(p["polls"])
        out["started"] += p["started"]
    return out


def summarize_ms(values: list[float]) -> dict:
    s = sorted(values)
    return {"n": len(s), "p50": percentile(s, 50) * 1000, "p95": percentile(s, 95) * 1000,
            "p99": percentile(s, 99) * 1000, "max": (s[-1] * 1000) if s else float("nan")}


async def run_level(cluster: Cluster, users: int, args, *, rate: float | None = None,
                    label: str = "", profile: str | None = None, mix: str | None = None) -> dict:
    """Warm up, measure C{args.duration} s, return the merged figures.

    @param mix: what a flow is (L{MIXES}); C{args.mix} unless given.
    """
    mix = mix or args.mix
    api_key = cluster.api_key() if mix == "backend" else None
    cluster.clear_messages()
    # --webhook: measure this level to quiescence too (with and without a webhook alike).
    settle = getattr(args, "webhook", False)
    if cluster.webhook:
        cluster.receiver_reset()  # the previous level's events were all delivered
    drivers = args.drivers
    lead = 0.3 if drivers == 1 else 3.0  # child drivers need time to import
    start = time.time() + lead
    t0 = start + args.warmup
    t1 = t0 + args.duration
    base = cluster.number_base()
    specs = []
    for i in range(drivers):
        share = users // drivers + (1 if i < users % drivers else 0)
        specs.append({"api": cluster.api, "smsc": cluster.smsc_http, "users": share,
                      "start": start, "t0": t0, "t1": t1, "index": i, "seed": random.random(),
                      "number_base": base, "mix": mix, "api_key": api_key,
                      "rate": (rate / drivers) if rate else None})
    workers: list[subprocess.Popen] = []
    local: defer.Deferred | None = None
    if drivers == 1:
        local = defer.Deferred.fromCoroutine(Driver(specs[0]).run())
        driver_pids = [os.getpid()]
    else:
        for spec in specs:
            spec["out"] = str(cluster.dir / f"driver{spec['index']}.json")
            w = subprocess.Popen(  # noqa: ASYNC220 - before the level starts
                [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                 text=True, start_new_session=True)
            w.stdin.write(json.dumps(spec))
            w.stdin.close()
            workers.append(w)
        driver_pids = [w.pid for w in workers]
    pids = {"daemon": cluster.daemon_pids, "smsc": [cluster.smsc_pid],
            "redis": [cluster.redis_pid], "driver": driver_pids}
    if cluster.webhook:
        pids["receiver"] = [cluster.receiver_pid]
    hook: dict = {}
    spy = None
    try:
        await task.deferLater(reactor, max(0.0, t0 - time.time()), lambda: None)
        before = {role: [cpu_seconds(p) for p in ps] for role, ps in pids.items()}
        busy0 = machine_busy_seconds()
        redis0 = cluster.commandstats()
        mo0 = [cluster.metric(i, "msisdnd_mo_received") for i in range(cluster.count)]
        wall0 = time.time()
        if cluster.webhook:
            hook["backlog_t0"] = cluster.event_backlog()
            hook["delivered_t0"] = cluster.receiver_stats()["distinct"]
        if profile == "py-spy":
            out_dir = REPO / "bench" / "out"  # git-ignored
            out_dir.mkdir(exist_ok=True)
            spy_out = out_dir / (f"pyspy-{time.strftime('%Y%m%dT%H%M%S')}-{users}users-"
                                 f"{cluster.count}daemon.txt")
            spy = (subprocess.Popen(  # noqa: ASYNC220 - as the window opens, quickly
                [str(BIN / "py-spy"), "record", "--pid", str(cluster.daemon_pids[0]),
                 "--duration", str(int(args.duration)), "--rate", "200", "--nonblocking",
                 "--format", "raw", "--output", str(spy_out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), spy_out)
        await task.deferLater(reactor, max(0.0, t1 - time.time()), lambda: None)
        after = {role: [cpu_seconds(p) for p in ps] for role, ps in pids.items()}
        busy = machine_busy_seconds() - busy0
        redis_calls = cluster.commandstats() - redis0
        mo_received = [cluster.metric(i, "msisdnd_mo_received") - mo0[i]
                       for i in range(cluster.count)]
        wall = time.time() - wall0
        if cluster.webhook:
            hook["backlog_t1"] = cluster.event_backlog()
            hook["delivered_t1"] = cluster.receiver_stats()["distinct"]
        if drivers == 1:
            parts = [await local]
        else:
            parts = []
            for w, spec in zip(workers, specs):
                while w.poll() is None:
                    await task.deferLater(reactor, 0.1, lambda: None)
                try:
                    with open(spec["out"]) as f:  # noqa: ASYNC230 - once per worker
                        parts.append(json.load(f))
                except (OSError, ValueError):
                    raise SystemExit(f"driver process {spec['index']} exited {w.returncode} "
                                     f"without its results") from None
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    result = merge(parts)
    if settle:
        # Every driver has stopped (the flows in flight at t1 finished); with the webhook,
        # wait until its group has read and acknowledged every event, then read the
        # daemons' CPU again: the deliveries still owed at t1 are measured too.
        drained = await drain(cluster)
        daemon_settled = sum(cpu_seconds(p) for p in cluster.daemon_pids) - sum(before["daemon"])
        receiver_settled = (cpu_seconds(cluster.receiver_pid) - before["receiver"][0]
                            if cluster.webhook else 0.0)
        seconds = time.time() - wall0
        kinds = Counter(result["flow_kinds"]) + Counter(result["tail_kinds"])
        flows = sum(kinds.values())
        result["settled"] = {
            "flows": flows, "flow_kinds": dict(kinds),
            "errors": sum(result["errors"].values()) + result["tail_errors"],
            "daemon_cpu": daemon_settled, "seconds": seconds,
            "drain_seconds": drained["seconds"],
            "flows_per_daemon_cpu_s": flows / daemon_settled if daemon_settled else float("inf"),
            "daemon_cpu_ms_per_flow": 1000 * daemon_settled / max(flows, 1),
        }
        if cluster.webhook:
            received = cluster.receiver_stats()
            expected_all = events_of(result["all_kinds"])
            types = Counter(received["types"])
            problems = []
            if not drained["caught_up"]:
                problems.append(f"the webhook's group had not caught up after "
                                f"{drained['seconds']:.0f} s: {drained['backlog']}")
            if result["all_errors"] == 0 and types != expected_all:
                problems.append(f"events at the receiver {dict(types)} != the flows' "
                                f"{dict(expected_all)}")
            elif result["all_errors"] and any(types[k] < v for k, v in expected_all.items()):
                problems.append(f"events at the receiver {dict(types)} < the complete flows' "
                                f"{dict(expected_all)} ({result['all_errors']} failed flows)")
            hook.update({
                "expected": dict(expected_all), "received": dict(types),
                "distinct": received["distinct"], "requests": received["requests"],
                "duplicates": received["requests"] - received["distinct"],
                "connections": received["connections"], "backlog_end": drained["backlog"],
                # Deliveries between t0 and the end vs the events of the flows counted.
                "delivered_in_span": received["distinct"] - hook["delivered_t0"],
                "expected_in_span": sum(events_of(kinds).values()),
                "receiver_cpu": receiver_settled, "problems": problems,
            })
            result["settled"]["events"] = hook["delivered_in_span"]
    result["webhook"] = hook if cluster.webhook else None
    cpu = {role: [a - b for a, b in zip(after[role], before[role])] for role in pids}
    duration = args.duration
    daemon_cpu = sum(cpu["daemon"])
    daemon_requests = sum(v for k, v in result["requests"].items() if not k.startswith("smsc"))
    smsc_requests = sum(v for k, v in result["requests"].items() if k.startswith("smsc"))
    result.update({
        "label": label, "mix": mix, "users": users, "drivers": drivers, "daemons": cluster.count,
        "rate_limit": rate, "duration": duration, "measured_wall": wall,
        "cpu_seconds": cpu, "daemon_cpu": daemon_cpu,
        # MOs each daemon's bind received in the window (the fake SMSC round-robins them).
        "mo_received_per_daemon": mo_received,
        # Everything else the machine ran meanwhile (other users' tests, py-spy, the kernel's
        # softirq time not charged to our processes); the two are sampled apart, so a
        # residual below zero is noise, shown as 0.
        "other_cpu": max(0.0, busy - sum(sum(v) for v in cpu.values())),
        "flows_per_s": result["flows"] / duration,
        # Redis commands per flow (flows ending in the window vs commands run in it: close
        # enough over a window of thousands of flows).
        "redis_calls_per_flow": {k: v / max(result["flows"], 1)
                                 for k, v in redis_calls.most_common()},
        "flows_per_daemon_cpu_s": result["flows"] / daemon_cpu if daemon_cpu else float("inf"),
        "daemon_requests_per_s": daemon_requests / duration,
        "smsc_requests_per_s": smsc_requests / duration,
        # HTTP requests per complete flow (requests and flows ending in the window; failed
        # flows' requests count too, so compare only runs without errors).
        "daemon_requests_per_flow": daemon_requests / max(result["flows"], 1),
        "smsc_requests_per_flow": smsc_requests / max(result["flows"], 1),
        "latency_ms": {k: summarize_ms(v) for k, v in result["latency"].items()},
        "flow_ms": summarize_ms(result["flow_seconds"]),
        "accept_submit_ms": summarize_ms(result["accept_submit"]),
        "mo_to_code_ms": summarize_ms(result["mo_to_code"]),
    })
    if spy is not None:
        proc, out = spy
        _, err = proc.communicate(timeout=60)
        result["profile"] = {"tool": "py-spy", "file": str(out), "stderr": err[-2000:],
                             "report": pyspy_report(out) if out.exists() else None}
    for key in ("latency", "flow_seconds", "accept_submit", "mo_to_code"):
        del result[key]
    return result


def events_of(kinds: dict) -> Counter:
    """The webhook events complete flows of these kinds make (L{EVENTS_OF_FLOW})."""
    events: Counter = Counter()
    for kind, n in kinds.items():
        for event in EVENTS_OF_FLOW.get(kind, ()):
            events[event] += n
    return events


async def drain(cluster: Cluster) -> dict:
    """Once the drivers have stopped: without a webhook, nothing to wait for; with
    one, poll (every 20 ms: the receiver's C{/stats}, C{XINFO GROUPS} and C{XINFO
    STREAM}, none of it the daemons' work) until the webhook's consumer group has
    read the stream's last entry and has nothing pending, i.e. the receiver
    acknowledged every event; give up after L{DRAIN_STALL} s without a new
    delivery or L{DRAIN_MAX} s in all."""
    start = time.monotonic()
    if not cluster.webhook:
        return {"seconds": 0.0, "caught_up": True, "backlog": None}
    seen, since = -1, start
    while True:
        backlog = cluster.event_backlog()
        now = time.monotonic()
        if backlog["caught_up"]:
            return {"seconds": now - start, "caught_up": True, "backlog": backlog}
        distinct = cluster.receiver_stats()["distinct"]
        if distinct != seen:
            seen, since = distinct, now
        elif now - since > DRAIN_STALL or now - start > DRAIN_MAX:
            return {"seconds": now - start, "caught_up": False, "backlog": backlog}
        await task.deferLater(reactor, 0.02, lambda: None)


# -- the cross-daemon MO check ------------------------------------------------------------


async def mo_check(cluster: Cluster, count: int) -> dict:
    """C{count} sessions, registered on daemon 0, 0, 1, 1, ..., each verified
    by an MO; which daemon's bind got each MO is read off the daemons'
    C{msisdnd_mo_received} counters, one MO at a time."""
    spec = {"api": cluster.api, "smsc": cluster.smsc_http, "users": 1, "start": 0,
            "t0": 0, "t1": time.time() + 3600, "index": 7, "seed": 1,
            "number_base": 99_000_000}
    driver = Driver(spec)
    matrix: Counter[tuple[int, int, str]] = Counter()
    rows = []
    for i in range(count):
        # Registered on 0, 0, 1, 1, ...: against the SMSC's alternating MO rotation this
        # gives every (registered on, MO on) pair.
        reg = (i // 2) % len(cluster.api)
        user = User(i, driver.apis[reg])
        before = [cluster.metric(d, "msisdnd_mo_received") for d in range(cluster.count)]
        outcome = "completed"
        try:
            status, content, _ = await driver.call(user, user.api, "register", "POST",
                                                   "/register")
            token = driver.expect("register", status, content, 200)["msisdnSessionToken"]
            creds = driver.derive(bytes.fromhex(token))
            signer = HawkSigner(creds.id, creds.key)
            number = driver.number()
            body = json.dumps({"from": number, "to": MO_VERIFIER,
                               "text": f"/sms/momt/verify {creds.id}"}).encode()
            status, content, _ = await driver.call(user, driver.smsc, "smsc POST /mo", "POST",
                                                   "/mo", body)
            driver.expect("smsc POST /mo", status, content, 200)
            code, _ = await driver.poll(user, number, _LONG)
            body = json.dumps({"code": code}).encode()
            status, content, _ = await driver.call(user, user.api, "sms/verify_code", "POST",
                                                   "/sms/verify_code", body, signer)
            if driver.expect("sms/verify_code", status, content, 200)["msisdn"] != number:
                raise FlowError("another number")
            status, content, _ = await driver.call(user, user.api, "certificate/sign", "POST",
                                                   "/certificate/sign", driver.sign_body, signer)
            driver.expect("certificate/sign", status, content, 200)
            status, content, _ = await driver.call(user, user.api, "unregister", "POST",
                                                   "/unregister", b"", signer)
            driver.expect("unregister", status, content, 204)
        except FlowError as e:
            outcome = f"failed: {e}"
        after = [cluster.metric(d, "msisdnd_mo_received") for d in range(cluster.count)]
        got = [d for d in range(cluster.count) if after[d] > before[d]]
        mo_on = got[0] if len(got) == 1 else -1
        matrix[(reg, mo_on, "completed" if outcome == "completed" else "failed")] += 1
        rows.append({"session": i, "registered_on": reg, "mo_on": mo_on, "outcome": outcome})
        for conn in user.conns.values():
            conn.transport.loseConnection()
    return {"count": count, "rows": rows,
            "matrix": [{"registered_on": r, "mo_on": m, "outcome": o, "sessions": n}
                       for (r, m, o), n in sorted(matrix.items())]}


# -- profiles -------------------------------------------------------------------------------


def pyspy_report(path: Path, top: int = 30) -> dict:
    """Own ("self") and inclusive sample shares from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    innermost: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        names = [_short_frame(f) for f in frames]
        own[names[-1]] += n
        categories[_category(names)] += n
        # The deepest msisdnd frame owns the sample, with the library code it called.
        mine = [name for name in names if "msisdnd/" in name]
        innermost[mine[-1] if mine else "(no msisdnd frame: reactor, twisted.web, logging)"] += n
        for name in set(names):
            incl[name] += n
    msisdnd = {k: v for k, v in incl.items() if "msisdnd/" in k}
    return {
        "categories": [(k, v / total) for k, v in categories.most_common()],
        "by_innermost_msisdnd": [(k, v / total) for k, v in innermost.most_common(top)],
        "samples": total,
        "own": [(k, v / total) for k, v in own.most_common(top)],
        "msisdnd_inclusive": [(k, v / total) for k, v in
                              sorted(msisdnd.items(), key=lambda kv: -kv[1])[:top]],
        "inclusive": [(k, v / total) for k, v in incl.most_common(top * 2)],
    }


#: What a sample's own time is spent on: the first rule matching a frame, from the leaf up.
PROFILE_CATEGORIES = (
    ("socket send() (Connection.writeSomeData)", ("writeSomeData",)),
    ("socket recv() (Connection.doRead)", ("Connection.doRead (twisted/internet/tcp.py)",)),
    ("epoll wait/dispatch", ("doPoll", "EPollReactor")),
    ("logging (access log, twisted.logger)", ("twisted/logger/", "HTTPFactory.log",
                                             "access_log_formatter", "msisdnd/logs.py")),
    ("Hawk (mohawk, msisdnd/hawk.py)", ("mohawk/", "msisdnd/hawk.py",
                                        "msisdnd/verification/authentication.py")),
    ("certificates (PyJWT, RSA signing)", ("jwt/", "msisdnd/certs.py",
                                           "msisdnd/verification/certs.py")),
    ("Redis client (txredisapi)", ("txredisapi",)),
    ("Deferreds, inlineCallbacks, callLater", ("twisted/internet/defer.py",
                                               "twisted/internet/base.py")),
    ("HTTP server (twisted.web)", ("twisted/web/",)),
    ("routing (Klein, Werkzeug)", ("klein/", "werkzeug/")),
    ("SMPP (msisdnd/smpp, smpplib)", ("msisdnd/smpp/", "smpplib/")),
    ("JSON", ("json/",)),
    ("crypto primitives (cryptography, hmac, hashlib)", ("cryptography/", "hmac.py",
                                                         "hashlib")),
    ("phonenumbers", ("phonenumbers/",)),
    ("msisdnd, other", ("msisdnd/",)),
)


def _category(names: list[str]) -> str:
    for name in reversed(names):
        for label, keys in PROFILE_CATEGORIES:
            if any(k in name for k in keys):
                return label
    return "other (stdlib, Twisted core)"


def _short_frame(frame: str) -> str:
    # py-spy: "function (path/to/file.py:LINE)"; drop the line, shorten the path.
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


def cprofile_report(path: Path, top: int = 30) -> str:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    out.write("msisdnd's own functions by cumulative time:\n")
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(r"msisdnd/", top)
    return out.getvalue()


# -- reporting ------------------------------------------------------------------------------


def format_level_row(r: dict) -> str:
    cpu = r["cpu_seconds"]
    d = r["duration"]
    pct = lambda xs: "+".join(f"{100 * x / d:.0f}" for x in xs)
    errors = sum(r["errors"].values())
    cap = f"{r['rate_limit']:.1f}" if r["rate_limit"] else "-"
    return (f"| {r['users']} | {cap} | {r['flows_per_s']:,.1f} | "
            f"{r['flows_per_daemon_cpu_s']:,.0f} | {1000 * r['daemon_cpu'] / max(r['flows'], 1):.2f}"
            f" | {pct(cpu['daemon'])} | {r['daemon_requests_per_s']:,.0f} | "
            f"{r['smsc_requests_per_s']:,.0f} | {errors} | {pct(cpu['smsc'])} | "
            f"{pct(cpu['redis'])} | {pct(cpu['driver'])} | {100 * r['other_cpu'] / d:.0f} |")


LEVEL_HEADER = ("| users | rate cap | flows/s | flows per daemon CPU-s | daemon CPU ms/flow | "
                "daemon CPU % | daemon req/s | SMSC req/s | errors | SMSC CPU % | Redis CPU % | "
                "driver CPU % | other CPU % |\n"
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def format_latency(r: dict) -> str:
    lines = ["| endpoint | n | p50 ms | p95 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for name in ENDPOINTS:
        s = r["latency_ms"].get(name)
        if s and s["n"]:
            lines.append(f"| {name} | {s['n']} | {s['p50']:.2f} | {s['p95']:.2f} | "
                         f"{s['p99']:.2f} | {s['max']:.1f} |")
    for name, key in (("whole flow", "flow_ms"), ("accept -> submit_sm (MT)", "accept_submit_ms"),
                      ("POST /mo -> code MT stored (MO)", "mo_to_code_ms")):
        s = r[key]
        if s["n"]:
            lines.append(f"| {name} | {s['n']} | {s['p50']:.2f} | {s['p95']:.2f} | "
                         f"{s['p99']:.2f} | {s['max']:.1f} |")
    return "\n".join(lines)


def format_level(r: dict) -> str:
    out = [f"### {r['label'] or 'level'}: {r['users']} users, {r['daemons']} daemon(s), "
           f"{r['drivers']} driver process(es)" + (f", rate cap {r['rate_limit']:.1f} flows/s"
                                                   if r["rate_limit"] else ""),
           "", LEVEL_HEADER, format_level_row(r), "",
           f"flows by kind: {dict(sorted(r['flow_kinds'].items()))}; "
           f"polls per code: {dict(sorted(r['polls'].items()))}; "
           f"errors: {dict(r['errors']) or 'none'}"
           + (f" (+{r['errors_outside']} outside the window)" if r["errors_outside"] else ""),
           "", f"HTTP requests per flow: daemon {r['daemon_requests_per_flow']:.2f}, "
           f"fake SMSC {r['smsc_requests_per_flow']:.2f}",
           "", f"MOs received in the window, per daemon: {r['mo_received_per_daemon']}",
           "", "Redis commands per flow: " + ", ".join(
               f"{k} {v:.2f}" for k, v in r["redis_calls_per_flow"].items() if v >= 0.01)
           + f" (total {sum(r['redis_calls_per_flow'].values()):.1f})",
           "", format_latency(r)]
    if r.get("settled"):
        st = r["settled"]
        out += ["", f"to quiescence (t0 until the drivers stopped"
                + (" and the webhook's receiver had every event" if r.get("webhook") else "")
                + f", {st['seconds']:.1f} s, {st['drain_seconds']:.1f} s of it waiting for "
                f"deliveries): {st['flows']:,} flows ({st['errors']} failed), daemon CPU "
                f"{st['daemon_cpu']:.2f} s, {st['flows_per_daemon_cpu_s']:,.0f} flows per "
                f"daemon CPU-s, {st['daemon_cpu_ms_per_flow']:.2f} ms/flow"]
    hook = r.get("webhook")
    if hook:
        def backlog(b):
            if not b:
                return "n/a"
            unread = "?" if b["unread"] is None else b["unread"]
            return f"{unread} unread + {b['pending']} pending"
        out += ["", f"webhook: events of the level's complete flows {hook['expected']}, at the "
                f"receiver {hook['received']} ({hook['duplicates']} duplicate requests, "
                f"{hook['connections']} connections); backlog at t0 {backlog(hook['backlog_t0'])}, "
                f"at t1 {backlog(hook['backlog_t1'])}, at the end "
                f"{backlog(hook['backlog_end'])}; delivered from t0 to the end "
                f"{hook['delivered_in_span']:,} for {hook['expected_in_span']:,} events of the "
                f"flows counted; receiver CPU {hook['receiver_cpu']:.2f} s"
                + ("".join(f"\nPROBLEM: {p}" for p in hook["problems"]))]
    return "\n".join(out)


def compare_mixes(levels: list[dict], mixes: list[str]) -> list[dict]:
    """Each mix's flows per daemon CPU-second as a ratio to the first mix's, for
    levels of one run (the same daemons, interleaved): per round (against the
    first mix's level of the same round and user count), and pooled over the
    rounds (every round's flows over every round's daemon CPU).  One row per
    level, then one C{"round": "all"} row per mix and user count."""
    rows = []
    for users in sorted({r["users"] for r in levels}):
        at = [r for r in levels if r["users"] == users]
        reference = {r["round"]: r for r in at if r["mix"] == mixes[0]}
        pooled_ref = None
        for mix in mixes:
            mine = sorted((r for r in at if r["mix"] == mix), key=lambda r: r["round"])
            if not mine:
                continue
            ratios = []
            for r in mine:
                ref = reference.get(r["round"])
                ratio = (r["flows_per_daemon_cpu_s"] / ref["flows_per_daemon_cpu_s"]
                         if ref and ref["flows_per_daemon_cpu_s"] else float("nan"))
                ratios.append(ratio)
                rows.append(_comparison_row(users, r["round"], mix, [r], ratio))
            flows = sum(r["flows"] for r in mine)
            cpu = sum(r["daemon_cpu"] for r in mine)
            per_cpu = flows / cpu if cpu else float("inf")
            if mix == mixes[0]:
                pooled_ref = per_cpu
            row = _comparison_row(users, "all", mix, mine,
                                  per_cpu / pooled_ref if pooled_ref else float("nan"))
            row["round_ratios"] = ratios
            rows.append(row)
    return rows


def _comparison_row(users: int, rnd, mix: str, levels: list[dict], ratio: float) -> dict:
    flows = sum(r["flows"] for r in levels)
    cpu = sum(r["daemon_cpu"] for r in levels)
    seconds = sum(r["duration"] for r in levels)
    return {
        "users": users, "round": rnd, "mix": mix, "flows": flows, "flows_per_s": flows / seconds,
        "daemon_cpu": cpu, "flows_per_daemon_cpu_s": flows / cpu if cpu else float("inf"),
        "daemon_cpu_ms_per_flow": 1000 * cpu / max(flows, 1),
        "daemon_requests_per_flow": sum(r["daemon_requests_per_flow"] * r["flows"]
                                        for r in levels) / max(flows, 1),
        "smsc_requests_per_flow": sum(r["smsc_requests_per_flow"] * r["flows"]
                                      for r in levels) / max(flows, 1),
        "errors": sum(sum(r["errors"].values()) for r in levels),
        "other_cpu_pct": 100 * sum(r["other_cpu"] for r in levels) / seconds,
        "ratio": ratio,
    }


def format_comparison(rows: list[dict], mixes: list[str]) -> str:
    lines = [f"### same run, by mix: flows per daemon CPU-second, ratio to "
             f"{MIX_NAMES[mixes[0]]}", "",
             "| users | round | mix | flows | flows/s | daemon CPU-s | flows per daemon CPU-s | "
             "daemon CPU ms/flow | daemon req/flow | SMSC req/flow | errors | other CPU % | "
             "ratio |", "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        spread = ""
        if r.get("round_ratios") and len(r["round_ratios"]) > 1:
            spread = " (rounds " + ", ".join(f"{x:.2f}" for x in r["round_ratios"]) + ")"
        bold = "**" if r["round"] == "all" else ""
        lines.append(f"| {r['users']} | {r['round']} | {MIX_NAMES[r['mix']]} | {r['flows']:,} | "
                     f"{r['flows_per_s']:,.1f} | {r['daemon_cpu']:.2f} | "
                     f"{bold}{r['flows_per_daemon_cpu_s']:,.0f}{bold} | "
                     f"{r['daemon_cpu_ms_per_flow']:.2f} | {r['daemon_requests_per_flow']:.2f} | "
                     f"{r['smsc_requests_per_flow']:.2f} | {r['errors']} | "
                     f"{r['other_cpu_pct']:.0f} | {bold}{r['ratio']:.2f}{bold}{spread} |")
    return "\n".join(lines)


def compare_webhook(levels: list[dict], mixes: list[str]) -> list[dict]:
    """The daemons' CPU per flow with the webhook / without it, for levels of one
    run (fresh processes for each, interleaved), measured to quiescence (the
    C{settled} figures): per round, then pooled over the rounds (every round's
    CPU over every round's flows, on each side)."""
    rows = []
    for users in sorted({r["users"] for r in levels}):
        for mix in mixes:
            at = [r for r in levels if r["users"] == users and r["mix"] == mix]
            rounds = sorted({r["round"] for r in at})
            pooled = {False: [], True: []}
            ratios = []
            for rnd in rounds:
                side = {r["webhook_on"]: r for r in at if r["round"] == rnd}
                if set(side) != {False, True}:
                    continue
                pooled[False].append(side[False])
                pooled[True].append(side[True])
                row = _webhook_row(users, rnd, mix, [side[False]], [side[True]])
                row["order"] = "without, with" if rnd % 2 else "with, without"
                ratios.append(row["ratio"])
                rows.append(row)
            if pooled[True]:
                row = _webhook_row(users, "all", mix, pooled[False], pooled[True])
                row["order"] = ""
                row["round_ratios"] = ratios
                rows.append(row)
    return rows


def _webhook_row(users: int, rnd, mix: str, without: list[dict], with_: list[dict]) -> dict:
    def side(levels: list[dict]) -> dict:
        flows = sum(r["settled"]["flows"] for r in levels)
        cpu = sum(r["settled"]["daemon_cpu"] for r in levels)
        window_flows = sum(r["flows"] for r in levels)
        window_cpu = sum(r["daemon_cpu"] for r in levels)
        return {"flows": flows, "daemon_cpu": cpu, "ms_per_flow": 1000 * cpu / max(flows, 1),
                "window_ms_per_flow": 1000 * window_cpu / max(window_flows, 1),
                "errors": sum(r["settled"]["errors"] for r in levels),
                "events": sum((r["settled"].get("events") or 0) for r in levels),
                "drain_seconds": max(r["settled"]["drain_seconds"] for r in levels),
                "other_cpu_pct": 100 * sum(r["other_cpu"] for r in levels)
                / sum(r["duration"] for r in levels)}

    off, on = side(without), side(with_)
    added = on["ms_per_flow"] - off["ms_per_flow"]
    events_per_flow = on["events"] / max(on["flows"], 1)
    return {"users": users, "round": rnd, "mix": mix, "without": off, "with": on,
            "ratio": on["ms_per_flow"] / off["ms_per_flow"] if off["ms_per_flow"] else float("nan"),
            "window_ratio": (on["window_ms_per_flow"] / off["window_ms_per_flow"]
                             if off["window_ms_per_flow"] else float("nan")),
            "added_ms_per_flow": added, "events_per_flow": events_per_flow,
            "added_ms_per_event": added / events_per_flow if events_per_flow else float("nan")}


def format_webhook_comparison(rows: list[dict]) -> str:
    lines = ["### same run, without and with one webhook: daemon CPU per flow, to quiescence", "",
             "| users | mix | round | order | flows without | ms/flow without | flows with | "
             "ms/flow with | **with / without** | **added ms/flow** | events/flow | added ms/event "
             "| with / without, window only | longest drain s | errors | other CPU % (without, "
             "with) |",
             "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        off, on = r["without"], r["with"]
        bold = "**" if r["round"] == "all" else ""
        spread = ""
        if r.get("round_ratios") and len(r["round_ratios"]) > 1:
            spread = " (rounds " + ", ".join(f"{x:.3f}" for x in r["round_ratios"]) + ")"
        lines.append(
            f"| {r['users']} | {MIX_NAMES[r['mix']]} | {r['round']} | {r['order']} | "
            f"{off['flows']:,} | {off['ms_per_flow']:.3f} | {on['flows']:,} | "
            f"{on['ms_per_flow']:.3f} | {bold}{r['ratio']:.3f}{bold}{spread} | "
            f"{bold}{r['added_ms_per_flow']:+.3f}{bold} | {r['events_per_flow']:.3f} | "
            f"{r['added_ms_per_event']:+.3f} | {r['window_ratio']:.3f} | "
            f"{on['drain_seconds']:.1f} | {off['errors'] + on['errors']} | "
            f"{off['other_cpu_pct']:.0f}, {on['other_cpu_pct']:.0f} |")
    return "\n".join(lines)


def format_profile(report: dict, top: int = 25) -> str:
    lines = [f"py-spy samples: {report['samples']}", "", "| own share | spent in |", "|---:|---|"]
    lines += [f"| {100 * s:.1f}% | {name} |" for name, s in report["categories"]]
    lines += ["", "| own share | function |", "|---:|---|"]
    lines += [f"| {100 * s:.1f}% | `{name}` |" for name, s in report["own"][:top]]
    lines += ["", "| share | innermost msisdnd frame (with the library code it calls) |",
              "|---:|---|"]
    lines += [f"| {100 * s:.1f}% | `{name}` |" for name, s in report["by_innermost_msisdnd"][:top]]
    lines += ["", "| inclusive share | msisdnd function |", "|---:|---|"]
    lines += [f"| {100 * s:.1f}% | `{name}` |" for name, s in report["msisdnd_inclusive"][:top]]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------


def parse_users(value: str) -> list[int]:
    try:
        users = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {value!r}")
    if not users or any(u < 1 for u in users):
        raise argparse.ArgumentTypeError("user counts must be positive")
    return users


def parse_mixes(value: str) -> list[str]:
    mixes = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [m for m in mixes if m not in MIXES]
    if not mixes or unknown or len(set(mixes)) != len(mixes):
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of distinct mixes among {', '.join(MIXES)}: {value!r}")
    return mixes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Load benchmark of msisdnd: the upstream "
                                "verification mix against real daemons, Redis and the fake SMSC.")
    p.add_argument("--users", type=parse_users, default=[200],
                   help="concurrent virtual users; a comma-separated list runs a sweep "
                        "(default: 200)")
    p.add_argument("--duration", type=float, default=30, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=8, help="unmeasured seconds before each level")
    p.add_argument("--drivers", type=int, default=1,
                   help="driver processes (1: the driver runs in this process)")
    p.add_argument("--daemons", type=int, choices=(1, 2), default=1)
    p.add_argument("--window", type=int, default=10, help="the carrier's SMPP window")
    p.add_argument("--mix", type=parse_mixes, default=["upstream"],
                   metavar="{" + ",".join(MIXES) + "}[,...]",
                   help="what a flow is: the upstream verification mix (default: the device "
                        "flow), or one request: POST /register (HKDF, two Redis round "
                        "trips), or GET /__lbheartbeat__ (the HTTP floor: twisted.web, Klein, "
                        "the access log, metrics; no Redis); or backend: the Verify API's "
                        "create, the code from the fake SMSC, check (an API key made with "
                        "msisdnd api-keys create). A comma-separated list runs every level "
                        "once per mix on the same daemons and compares their flows per "
                        "daemon CPU-s with the first mix's")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the levels (every --users count, every --mix) this many times, "
                        "the mixes in alternating order (A B, B A, A B, ...); default 1")
    p.add_argument("--rate", type=float, default=None,
                   help="cap on flow starts per second (all drivers together)")
    p.add_argument("--mo-check", type=int, default=0, metavar="N",
                   help="with --daemons 2: N sessions verified by MO, which daemon got each")
    p.add_argument("--profile", choices=("py-spy", "cprofile"), default=None,
                   help="profile the (first) daemon over the measured window (py-spy) or "
                        "its whole life (cProfile)")
    p.add_argument("--suite", action="store_true",
                   help="everything: sweep --users on one daemon, the latency run at half the "
                        "best flows/s, the same sweep's best level on two daemons, --mo-check "
                        "(20 unless given), and a py-spy profile at the best level")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the processes' logs and configuration (the directory is printed)")
    p.add_argument("--nodelay", action="store_true",
                   help="experiment: run the daemons and the fake SMSC with TCP_NODELAY on "
                        "every TCP connection (bench/_nodelay.py)")
    p.add_argument("--source", default="worktree", metavar="REV",
                   help="the code the daemons run: 'worktree' (default: /work/main as it is) "
                        "or a git revision, exported with git archive")
    p.add_argument("--webhook", action="store_true",
                   help="what one [[webhook]] adds: every round runs the levels on fresh "
                        "processes without a webhook and again with one (allow_insecure, a "
                        "secret from msisdnd keygen --webhook-secret, to a local receiver "
                        "answering 204), in alternating order; each level is also measured to "
                        "quiescence (until the receiver has every event), and the daemon CPU "
                        "per flow with / without is compared")
    p.add_argument("--log-access", choices=("off", "errors", "all"), default=None,
                   help="the daemons' [log] access (default: none written, the code's default; "
                        "the key exists from the commit that made access logging configurable)")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.drivers < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--drivers and --duration must be positive, --warmup not negative")
    if args.mo_check and args.daemons != 2 and not args.suite:
        p.error("--mo-check needs --daemons 2")
    if args.rounds < 1:
        p.error("--rounds must be positive")
    if args.suite and (len(args.mix) > 1 or args.rounds > 1):
        p.error("--suite runs one mix once: no list in --mix, no --rounds")
    if args.webhook and (args.suite or args.mo_check):
        p.error("--webhook starts fresh processes per round and variant: not with --suite or "
                "--mo-check")
    # args.mixes: every mix asked for; args.mix: the first (what a level runs unless told).
    args.mixes, args.mix = args.mix, args.mix[0]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main()
    hawk_selftest()
    source, source_commit = (None, None) if args.source == "worktree" \
        else export_source(args.source)
    env = environment(source_commit)
    print(f"{env['date']}  {env['nproc']} CPUs  {env['cpu_model']}  Python {env['python']}  "
          f"Twisted {env['twisted']}  {env['redis'].split(' sha=')[0]}  commit "
          f"{env['git_commit']}{' (msisdnd/ modified)' if env['git_dirty'] else ''}",
          flush=True)
    print(f"command: {env['command']}", flush=True)
    env["nodelay"] = args.nodelay
    env["webhook"] = args.webhook
    document: dict = {"environment": env, "levels": [], "targets": {
        "flows_per_daemon_cpu_s": TARGET_FLOWS_PER_DAEMON_CPU_S,
        "accept_submit_p99_ms": TARGET_ACCEPT_SUBMIT_P99_MS, "scale_out": TARGET_SCALE_OUT}}
    clusters: list[Cluster] = []

    def emit(r: dict) -> None:
        document["levels"].append(r)
        print("\n" + format_level(r) + "\n", flush=True)
        if r.get("profile") and r["profile"].get("report"):
            print(format_profile(r["profile"]["report"]), flush=True)

    def progress(msg: str) -> None:
        print(f"-- {msg}", file=sys.stderr, flush=True)

    async def sweep(cluster: Cluster, label: str) -> list[dict]:
        results = []
        for users in args.users:
            progress(f"{label}: {users} users")
            r = await run_level(cluster, users, args, rate=args.rate if not args.suite else None,
                                label=label,
                                profile=args.profile if not args.suite else None)
            emit(r)
            results.append(r)
        return results

    async def suite_main() -> None:
        one = Cluster(1, args.window, source=source, nodelay=args.nodelay,
                      keep_logs=args.keep_logs, log_access=args.log_access)
        clusters.append(one)
        one.start()
        levels = await sweep(one, "one daemon")
        best = max(levels, key=lambda r: r["flows_per_s"])
        document["saturation"] = {"users": best["users"], "flows_per_s": best["flows_per_s"]}
        half = best["flows_per_s"] / 2
        progress(f"latency at half load: {half:.1f} flows/s, {best['users']} users")
        emit(await run_level(one, best["users"], args, rate=half,
                             label="half of the saturated flows/s"))
        if shutil.which(str(BIN / "py-spy")) or (BIN / "py-spy").exists():
            progress("py-spy profile at the saturation level")
            emit(await run_level(one, best["users"], args, label="profiled (py-spy)",
                                 profile="py-spy"))
        one.stop()
        clusters.remove(one)
        two = Cluster(2, args.window, source=source, nodelay=args.nodelay,
                      keep_logs=args.keep_logs, log_access=args.log_access)
        clusters.append(two)
        two.start()
        progress("two daemons")
        pair = []
        for users in sorted({best["users"], 2 * best["users"]}):
            r = await run_level(two, users, args, label="two daemons")
            emit(r)
            pair.append(r)
        best2 = max(pair, key=lambda r: r["flows_per_s"])
        ratio = best2["flows_per_daemon_cpu_s"] / best["flows_per_daemon_cpu_s"]
        document["scale_out"] = {"one": best["flows_per_daemon_cpu_s"],
                                 "two": best2["flows_per_daemon_cpu_s"], "ratio": ratio}
        print(f"\nscale-out: {best2['flows_per_daemon_cpu_s']:,.0f} flows per daemon CPU-s "
              f"with two daemons vs {best['flows_per_daemon_cpu_s']:,.0f} with one: "
              f"{100 * ratio:.0f}% (target >= {100 * TARGET_SCALE_OUT:.0f}%)", flush=True)
        progress("cross-daemon MO check")
        check = await mo_check(two, args.mo_check or 20)
        document["mo_check"] = check
        print_mo_check(check)

    async def plain_main() -> None:
        # --webhook: fresh processes for each round and variant (without, with a webhook),
        # the variants in alternating order; otherwise one cluster for every level.
        variants = (False, True) if args.webhook else (None,)
        shared = None
        if not args.webhook:
            shared = Cluster(args.daemons, args.window, source=source, nodelay=args.nodelay,
                             keep_logs=args.keep_logs, log_access=args.log_access,
                             profile=args.profile if args.profile == "cprofile" else None)
            clusters.append(shared)
            shared.start()
        results = []
        for rnd in range(1, args.rounds + 1):
            # Alternating order, so that a drift of the machine's speed over the run
            # favours no mix (and no variant).
            order = args.mixes if rnd % 2 else args.mixes[::-1]
            for variant in (variants if rnd % 2 else variants[::-1]):
                cluster = shared
                if variant is not None:
                    progress(f"round {rnd}: fresh processes, "
                             f"{'with' if variant else 'without'} a webhook")
                    cluster = Cluster(args.daemons, args.window, source=source,
                                      nodelay=args.nodelay, keep_logs=args.keep_logs,
                                      log_access=args.log_access,
                                      profile=args.profile if args.profile == "cprofile"
                                      else None, webhook=variant)
                    clusters.append(cluster)
                    cluster.start()
                for users in args.users:
                    for mix in order:
                        label = f"{args.daemons} daemon(s)"
                        if mix != "upstream" or len(args.mixes) > 1:
                            label += f", {MIX_NAMES[mix]}"
                        if variant is not None:
                            label += ", with a webhook" if variant else ", no webhook"
                        if args.rounds > 1:
                            label += f", round {rnd}"
                        progress(f"{label}: {users} users")
                        r = await run_level(cluster, users, args, rate=args.rate, label=label,
                                            profile=args.profile, mix=mix)
                        r["round"] = rnd
                        r["webhook_on"] = bool(variant)
                        emit(r)
                        results.append(r)
                if variant is not None:
                    stop_cluster(cluster)
        if len(results) > 1:
            print("\n" + LEVEL_HEADER)
            for r in results:
                print(format_level_row(r))
        if len(args.mixes) > 1 or args.rounds > 1:
            for variant in variants:
                mine = [r for r in results if variant is None or r["webhook_on"] == variant]
                rows = compare_mixes(mine, args.mixes)
                key = "comparison" if variant is not True else "comparison_with_webhook"
                document[key] = {"reference": args.mixes[0], "rows": rows}
                title = format_comparison(rows, args.mixes)
                if variant is not None:
                    title = title.replace("\n", f" ({'with' if variant else 'without'} the "
                                                 f"webhook)\n", 1)
                print("\n" + title, flush=True)
                if "backend" in args.mixes and args.mixes[0] == "upstream":
                    for row in rows:
                        if row["mix"] == "backend" and row["round"] == "all":
                            met = row["ratio"] >= TARGET_BACKEND_RATIO
                            print(f"\nbackend vs device, {row['users']} users"
                                  + ("" if variant is None else
                                     f" ({'with' if variant else 'without'} the webhook)")
                                  + f": {row['flows_per_daemon_cpu_s']:,.0f} backend "
                                  f"verifications per daemon CPU-s "
                                  f"({row['daemon_cpu_ms_per_flow']:.2f} ms each), "
                                  f"{row['ratio']:.2f}x the device flow's (target >= "
                                  f"{TARGET_BACKEND_RATIO:.1f}x: {'MET' if met else 'NOT MET'})",
                                  flush=True)
        if args.webhook:
            rows = compare_webhook(results, args.mixes)
            document["webhook"] = rows
            print("\n" + format_webhook_comparison(rows), flush=True)
            for row in rows:
                if row["round"] == "all":
                    print(f"\none webhook, {MIX_NAMES[row['mix']]}, {row['users']} users: "
                          f"{row['with']['ms_per_flow']:.3f} ms of daemon CPU per flow with it, "
                          f"{row['without']['ms_per_flow']:.3f} without: x{row['ratio']:.3f}, "
                          f"{row['added_ms_per_flow']:+.3f} ms per flow "
                          f"({row['events_per_flow']:.2f} events per flow, "
                          f"{row['added_ms_per_event']:+.3f} ms per event)", flush=True)
        if args.mo_check:
            check = await mo_check(shared, args.mo_check)
            document["mo_check"] = check
            print_mo_check(check)

    def stop_cluster(c: Cluster) -> None:
        c.stop()
        if c in clusters:
            clusters.remove(c)
        if c.cprofile_out:
            path = Path(tempfile.gettempdir()) / c.cprofile_out[0].name
            if path.exists():
                print(cprofile_report(path))

    async def body(_reactor) -> None:
        try:
            await (suite_main() if args.suite else plain_main())
        finally:
            for c in clusters:
                c.stop()
                if c.cprofile_out:
                    path = Path(tempfile.gettempdir()) / c.cprofile_out[0].name
                    if path.exists():
                        print(cprofile_report(path))

    try:
        task.react(lambda r: defer.Deferred.fromCoroutine(body(r)), [])
    except SystemExit as e:
        if e.code not in (0, None):
            for c in clusters:
                c.stop()
            raise
    finally:
        for c in clusters:
            c.stop()
    for r in document["levels"]:
        ok = r["flows_per_daemon_cpu_s"] >= TARGET_FLOWS_PER_DAEMON_CPU_S
        print(f"{r['label']}, {r['users']} users: {r['flows_per_s']:,.1f} flows/s, "
              f"{r['flows_per_daemon_cpu_s']:,.0f} flows per daemon CPU-s "
              f"(target >= {TARGET_FLOWS_PER_DAEMON_CPU_S}: {'MET' if ok else 'NOT MET'}); "
              f"accept->submit p99 {r['accept_submit_ms']['p99']:.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(document, f, indent=1, default=str)
    problems = [p for r in document["levels"] for p in ((r.get("webhook") or {}).get("problems")
                                                        or ())]
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems or any(sum(r["errors"].values()) for r in document["levels"]) else 0


def print_mo_check(check: dict) -> None:
    print("\n### cross-daemon MO check\n")
    print("| registered on | MO arrived on | outcome | sessions |\n|---:|---:|---|---:|")
    for row in check["matrix"]:
        print(f"| daemon {row['registered_on']} | daemon {row['mo_on']} | {row['outcome']} | "
              f"{row['sessions']} |")
    failures = [r for r in check["rows"] if r["outcome"] != "completed"]
    if failures:
        print("failures:", failures)


if __name__ == "__main__":
    sys.exit(main())
