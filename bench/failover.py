"""Flows through a Redis Sentinel failover under load.

    .venv/bin/python bench/failover.py                       # 8 users, 10 s, kill, 15 s
    .venv/bin/python bench/failover.py --rounds 3 --users 16
    .venv/bin/python bench/failover.py --users 2 --before 1 --after 5 --json   # smoke size

Every part is real: a Redis master, its replica and three sentinels
(C{redis-server}, C{--sentinel} for the sentinels; C{tests/sentinels.py},
C{down-after-milliseconds} from C{--down-after}), one daemon
(C{twistd msisdnd}, C{[redis] sentinels}), and, in this process, the fake
SMSC on loopback and the load: C{--users} virtual users, each looping an MT
flow (C{/register}, C{/sms/mt/verify}, the code read off the fake SMSC,
C{/sms/verify_code}, C{/certificate/sign}), a fresh number per flow.

After C{--before} seconds the master is SIGKILLed (no goodbye); the load
goes on for C{--after} seconds.  Reported per round:

  - flows/s before the kill (the reference), and after service came back,
    as a ratio to it (same run, same machine);
  - the failover as the sentinels saw it (kill -> a new master named) and
    the time without service (kill -> the first request sent after the kill
    that succeeded);
  - requests answered 503 (with C{Retry-After}), 500 (must be 0), those
    of a flow begun before the kill that met the loss window (a step the
    old master acknowledged and did not replicate: 401 errno 110, 400
    errno 105, 410 errno 111), and any other refusal; flows cut short;
  - sessions lost: every session verified before the kill is asked for a
    certificate again after it; one that is refused (its session is gone,
    or not verified) is lost.  C{--wait} makes no difference to the daemon:
    the replica usually has everything on loopback, which is the point of
    measuring it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "tests", REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import treq  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.web.client import HTTPConnectionPool  # noqa: E402

from _common import http_ok, machine, run  # noqa: E402
from msisdnd import hawk  # noqa: E402
from msisdnd.fakesmsc.smsc import FakeSMSC  # noqa: E402
from msisdnd.state.embedded import redis_executable  # noqa: E402
from sentinels import MASTER_NAME, SentinelGroup, free_port  # noqa: E402

BIN = Path(sys.executable).parent
#: [limits] for one address sending everything (the largest values accepted).
LIMITS = """
[limits]
countries = ["FR"]
number_sends_10min = 1000
ip_registrations_minute = 100000
ip_registrations_day = 10000000
ip_sends_minute = 100000
ip_sends_day = 10000000
prefix_sends_day = 10000000
guard_floor = 1000000
daily_sms_budget = 0
"""


def public_key() -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048) \
        .public_key().public_numbers()
    return json.dumps({"algorithm": "RS", "n": str(numbers.n), "e": str(numbers.e)})


class Daemon:
    """One `twistd msisdnd` on the group's sentinels, its SMSC in this process."""

    def __init__(self, directory: Path, group: SentinelGroup, smpp_port: int):
        from msisdnd.cli import keygen

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(os.devnull, "w") as quiet:
            keygen(str(directory / "keys"), str(directory / "master"), quiet)
        sentinels = ", ".join(f'"{a}"' for a in group.sentinel_addresses)
        config = directory / "msisdnd.toml"
        config.write_text(textwrap.dedent(f"""
            [http]
            listen = "tcp:{self.port}:interface=127.0.0.1"
            public_url = "{self.url}"
            max_connections_per_client = 4096
            [admin]
            listen = ""
            [redis]
            sentinels = [{sentinels}]
            master_name = "{MASTER_NAME}"
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
            port = {smpp_port}
            system_id = "msisdnd"
            password = "pw"
            mt_sender = "msisdnd"
            default = true
            region = "FR"
            reconnect_delay_initial = 0.05
            reconnect_delay_max = 0.2
        """) + LIMITS)
        self.log = directory / "daemon.log"
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [str(BIN / "twistd"), "--nodaemon", "--pidfile=", "msisdnd", "--config",
                 str(config)], stdout=out, stderr=subprocess.STDOUT, cwd=directory,
                start_new_session=True)

    @defer.inlineCallbacks
    def stop(self):
        """SIGTERM, and wait for the exit with the reactor turning (the fake
        SMSC in this process answers the daemon's unbind)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while self.process.poll() is None and time.monotonic() < deadline:
            yield task.deferLater(reactor, 0.05, lambda: None)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Load:
    """The virtual users and everything they saw."""

    def __init__(self, url: str, smsc: FakeSMSC, key: str):
        self.url = url
        self.smsc = smsc
        self.key = key
        self.http = HTTPConnectionPool(reactor)
        self.http.maxPersistentPerHost = 256
        self.running = True
        #: (sent, answered, step, status, Retry-After, errno, when its flow began)
        self.requests: list[tuple[float, float, str, int, str | None, int | None, float]] = []
        self.flows: list[tuple[float, str]] = []  # (end, token) of each verified flow
        self.cut = 0
        self._next = 0

    def number(self) -> str:
        self._next += 1
        return f"+3361{self._next:07d}"

    @defer.inlineCallbacks
    def call(self, name: str, path: str, body: object = None, token: str | None = None,
             began: float = 0.0):
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Type": ["application/json"]} if data else {}
        if token is not None:
            credentials = hawk.derive_session(bytes.fromhex(token))
            headers["Authorization"] = [hawk.authorization_header(
                credentials, "POST", self.url + path, data, "application/json" if data else "",
                with_hash=True)]
        started = time.monotonic()
        try:
            response = yield treq.post(self.url + path, data=data or None, headers=headers,
                                       pool=self.http, timeout=15)
            content = yield response.content()
            code = response.code
            retry = response.headers.getRawHeaders(b"retry-after", [b""])[0].decode() or None
        except Exception:
            content, code, retry = b"", 0, None
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = None
        errno = parsed.get("errno") if isinstance(parsed, dict) else None
        self.requests.append((started, time.monotonic(), name, code, retry, errno, began))
        return code, (parsed if code in (200, 201) else None)

    @defer.inlineCallbacks
    def flow(self):
        number, began = self.number(), time.monotonic()
        code, body = yield self.call("register", "/register", began=began)
        if code != 200:
            return False
        token = body["msisdnSessionToken"]
        code, _ = yield self.call("verify", "/sms/mt/verify", {
            "msisdn": number, "mcc": "208", "shortVerificationCode": True}, token, began)
        if code != 204:
            return False
        deadline = time.monotonic() + 5
        while not self.smsc.received(number[1:]) and not self.smsc.received(number):
            if time.monotonic() > deadline:
                return False
            yield task.deferLater(reactor, 0.01, lambda: None)
        text = (self.smsc.received(number[1:]) or self.smsc.received(number))[-1].text
        pin = text.splitlines()[0].split()[-1]
        code, _ = yield self.call("verify_code", "/sms/verify_code", {"code": pin}, token,
                                  began)
        if code != 200:
            return False
        code, _ = yield self.call("sign", "/certificate/sign",
                                  {"publicKey": self.key, "duration": 60}, token, began)
        if code != 200:
            return False
        self.flows.append((time.monotonic(), token))
        return True

    @defer.inlineCallbacks
    def user(self):
        while self.running:
            ok = yield self.flow()
            if not ok:
                self.cut += 1
                yield task.deferLater(reactor, 0.05, lambda: None)


@defer.inlineCallbacks
def one_round(args, directory: Path, key: str):
    group = SentinelGroup(redis_executable(), str(directory),
                          down_after_ms=args.down_after, failover_timeout_ms=3000)
    smsc = FakeSMSC(reactor)
    listening = reactor.listenTCP(0, smsc.buildFactory(), interface="127.0.0.1")
    daemon = None
    load = None
    try:
        group.start()
        daemon = Daemon(directory, group, listening.getHost().port)
        deadline = time.monotonic() + 60
        while not http_ok(daemon.url + "/__heartbeat__"):
            if daemon.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not start:\n{daemon.log.read_text()[-3000:]}")
            yield task.deferLater(reactor, 0.1, lambda: None)
        load = Load(daemon.url, smsc, key)
        users = [load.user() for _ in range(args.users)]
        started = time.monotonic()
        yield task.deferLater(reactor, args.before, lambda: None)
        old = group.master_port()
        killed = time.monotonic()
        group.kill_master()
        promoted = None
        while time.monotonic() < killed + args.after:
            if promoted is None and group.master_port() not in (old, None):
                promoted = time.monotonic()
            yield task.deferLater(reactor, 0.05, lambda: None)
        load.running = False
        yield defer.DeferredList(users)
        ended = time.monotonic()
        before = [token for end, token in load.flows if end < killed]
        lost = 0
        for token in before:
            code, _ = yield load.call("recheck", "/certificate/sign",
                                      {"publicKey": key, "duration": 60}, token)
            lost += code != 200
        yield load.http.closeCachedConnections()
    finally:
        if daemon is not None:
            yield daemon.stop()
        yield listening.stopListening()
        group.stop()
    first_ok = min((end for start, end, name, code, *_ in load.requests
                    if start > killed and name != "recheck" and 200 <= code < 300),
                   default=None)
    during = [r for r in load.requests if r[2] != "recheck"]
    flows_before = sum(1 for end, _ in load.flows if started + 1 <= end < killed)
    flows_after = sum(1 for end, _ in load.flows if first_ok is not None and end >= first_ok)
    before_rate = flows_before / max(killed - started - 1, 1e-9)
    after_rate = flows_after / max(ended - first_ok, 1e-9) if first_ok else 0.0
    return {
        "users": args.users,
        "flows_per_s_before": round(before_rate, 1),
        "flows_per_s_after_over_before": round(after_rate / before_rate, 2) if before_rate else None,
        "failover_s": round(promoted - killed, 2) if promoted else None,
        "without_service_s": round(first_ok - killed, 2) if first_ok else None,
        "requests": len(during),
        "503": sum(1 for r in during if r[3] == 503),
        "503_without_retry_after": sum(1 for r in during if r[3] == 503 and not r[4]),
        "500": sum(1 for r in during if r[3] == 500),
        "loss_window": sum(1 for r in during if lost_step(r, killed)),
        "other_refusals": sum(1 for r in during if r[3] not in (200, 204, 503, 500)
                              and not lost_step(r, killed)),
        "flows_cut": load.cut,
        "sessions_verified_before": len(before),
        "sessions_lost": lost,
    }


#: What a step acknowledged by the old master and not replicated makes a
#: later step of its flow answer (README, "More than one machine"): the
#: session gone (401, 110), the code gone (400, 105), not verified (410, 111).
LOSS_WINDOW = {(401, 110), (400, 105), (410, 111)}


def lost_step(request: tuple, killed: float) -> bool:
    """A refusal of the loss window, in a flow begun before the kill."""
    _, _, _, code, _, errno, began = request
    return began < killed and (code, errno) in LOSS_WINDOW


def table(rows: list[dict]) -> str:
    head = ("| round | users | flows/s before | after / before | failover s | without service s "
            "| requests | 503 | 500 | loss window | other | flows cut | sessions before | lost |")
    lines = [head, "|" + "---:|" * 14]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['users']} | {r['flows_per_s_before']} | "
                     f"{r['flows_per_s_after_over_before']} | {r['failover_s']} | "
                     f"{r['without_service_s']} | {r['requests']} | {r['503']} | {r['500']} | "
                     f"{r['loss_window']} | {r['other_refusals']} | {r['flows_cut']} | "
                     f"{r['sessions_verified_before']} | {r['sessions_lost']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--before", type=float, default=10.0, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=15.0, help="seconds of load after it")
    parser.add_argument("--down-after", type=int, default=1000,
                        help="the sentinels' down-after-milliseconds")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("redis-server") is None and not os.path.exists(redis_executable()):
        raise SystemExit("no redis-server")
    key = public_key()
    rows = []

    @defer.inlineCallbacks
    def rounds():
        try:
            for _ in range(args.rounds):
                with tempfile.TemporaryDirectory(prefix="msisdnd-failover-") as where:
                    rows.append((yield one_round(args, Path(where), key)))
        finally:
            reactor.stop()

    failures = []
    reactor.callWhenRunning(lambda: rounds().addErrback(failures.append))
    reactor.run()
    if failures:
        failures[0].printTraceback()
        return 1
    env = machine()
    dirty = run("git", "status", "--porcelain") not in ("", "unknown")
    if args.json:
        print(json.dumps({"results": rows, "environment": env}, indent=1))
    else:
        print(table(rows))
        print(f"\ncommand: {env['command']}")
        print(f"commit: {env['git_commit']}" + (" (working tree changed)" if dirty else ""))
        print(f"machine: {env['nproc']} CPUs, {env['cpu_model']}, Python {env['python']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
