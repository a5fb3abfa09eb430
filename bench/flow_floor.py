"""The daemon's complete flows against the HTTP floor, measured in the same run.

    .venv/bin/python bench/flow_floor.py                       # 50 users, 3 rounds
    .venv/bin/python bench/flow_floor.py --rounds 6 --duration 15 --json out.json
    .venv/bin/python bench/flow_floor.py --profile device-jwt  # py-spy on that level
    .venv/bin/python bench/flow_floor.py --flows device-jwt --rounds 3 --no-redis-count
                                          # the latency goal: run as root with tcpdump

The floor is a bare Klein route in its own process (C{flow_floor.py --role
bare}): C{POST /echo} reads a small JSON body and answers a small JSON, on
Twisted's default reactor and C{twisted.web}, with no access log.  The daemon
runs as C{bench/load.py} runs it (C{load.Cluster}: its own redis-server, the
fake SMSC, C{twistd msisdnd} with the default logging and every check on).
The same driver (C{load.Driver}, in this process) loads each in turn:

  - C{bare}: one C{POST /echo} per flow;
  - C{device-jwt}: register, mt/verify (with payload-hashed Hawk, as every
    device request here), the code read off the fake SMSC, verify_code,
    certificate/sign with C{"format": "jwt"} (EdDSA), unregister: 5 daemon
    requests;
  - C{device-browserid}: the same, signing a BrowserID (RSA-2048) certificate;
  - C{backend}: the backend Verify API's create and check (2 requests).

Each round measures every level once (the order reversed every other round),
each over C{--warmup} then C{--duration} seconds at C{--users} concurrent
users.  The figure of a flow is its B{ratio to the floor}: the daemon's CPU
per complete flow divided by the bare server's CPU for as many requests as
the flow makes to the daemon, both from the same round; the median of the
rounds is reported.  Absolute CPU figures on a shared machine move 2-3x
between sessions; the ratio is what RESULTS.md compares.

Then (unless C{--no-latency}) the device JWT flow again at half the flows/s
it reached saturated: latency per endpoint (p50/p95/p99) at both loads and
the time from the driver's C{mt/verify} write to the fake SMSC's receipt of
the C{submit_sm}.  Those are the apparatus's times: they include the
driver's and the fake SMSC's own scheduling (Python processes, each busy
with hundreds of flows).  So when it can (root, C{tcpdump} on C{PATH}; it
says why not otherwise, and C{--no-wire} turns it off) the latency phase
captures the loopback (L{_wire}: C{tcpdump -i lo} on the API and SMPP
ports, read back in Python) during a saturated level of its own (its
figures are then the saturated ones; the half rate stays half the best
round's) and the half-load level, and reports beside each figure the same on the wire, from
kernel timestamps: per endpoint, the request's last segment to the answer's
first (the daemon's own answer time), and "HTTP accept to C{submit_sm} on
the wire" (issue 16's goal, p99 < 5 ms at half load), the C{mt/verify}'s
last segment to the segment completing the C{submit_sm} to its number.
Beside each latency level, how long the daemon's reactor thread was
runnable but waiting for a CPU (C{/proc/<pid>/schedstat}), per second: on a
machine shared with other work the tail is mostly that wait.  A
capture that lost data, or matched no C{mt/verify} to a C{submit_sm}, is a
PROBLEM (exit status 1).  And (unless C{--no-redis-count}) Redis's commands per
flow, from C{MONITOR} over a few flows of one user: the round trips (the
daemon's own commands) and the commands scripts ran.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import _wire  # noqa: E402
import load  # noqa: E402
from _common import cpu_seconds, cpu_wait_seconds, machine_busy_seconds, react  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402

FLOWS = ("device-jwt", "device-browserid", "backend")
#: Goal of issue 16: the device flow (JWT) at most this many times the HTTP floor.
TARGET_RATIO = 2.0
#: The levels of the bare server: the floor, and the references beside it.
FLOORS = ("bare", "bare-resource", "bare-lean")
#: The bare route's answer.
BARE_ANSWER = b'{"ok": true, "msisdn": "+33612345678"}'
#: The driver's name of each daemon endpoint, for the wire's figures beside its own.
ENDPOINT_NAMES = {"/register": "register", "/sms/mt/verify": "sms/mt/verify",
                  "/sms/verify_code": "sms/verify_code", "/certificate/sign": "certificate/sign",
                  "/unregister": "unregister", "/v2/verifications": "backend create",
                  "/v2/verifications/check": "backend check"}


# -- the floor: a bare Klein route -------------------------------------------------------


def bare_main() -> int:
    """C{--role bare}: serve C{POST /echo} on three free loopback ports, through a
    Klein route on the first, a plain C{twisted.web} C{Resource} on the second
    (what Klein's routing costs), and the Klein route again on a C{Site} that
    does not parse POST bodies as forms (C{parsePOSTFormSubmission=False}, as
    the daemon's C{APISite}: what Twisted's default form parsing costs the
    floor); print the ports on one line."""
    from klein import Klein
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    def answer(request) -> bytes:
        json.loads(request.content.read())
        request.setHeader(b"Content-Type", b"application/json")
        return BARE_ANSWER

    app = Klein()
    app.route("/echo", methods=["POST"])(answer)

    class Echo(Resource):
        isLeaf = True

        def render_POST(self, request):
            return answer(request)

    root = Resource()
    root.putChild(b"echo", Echo())
    ports = []
    for resource, forms in ((app.resource(), True), (root, True), (app.resource(), False)):
        site = Site(resource, parsePOSTFormSubmission=forms)
        site.log = lambda request: None  # the floor writes no access line
        ports.append(reactor.listenTCP(0, site, interface="127.0.0.1").getHost().port)
    print(*ports, flush=True)
    reactor.run()
    return 0


class Bare:
    """The bare server's process."""

    def __init__(self, directory: Path):
        self.log = directory / "bare.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, __file__, "--role", "bare"],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            first = self.log.read_text().split("\n", 1)
            ports = first[0].split()
            if len(first) == 2 and len(ports) == 3 and all(p.isdigit() for p in ports):
                self.url, self.resource_url, self.lean_url = (f"http://127.0.0.1:{p}"
                                                              for p in ports)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"the bare server did not start:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


# -- one level -----------------------------------------------------------------------------


def endpoint_name(request: _wire.Request) -> str:
    """A captured request's endpoint, as the driver names it (its status added
    when it is an error)."""
    path = request.path.split("?", 1)[0]
    name = ENDPOINT_NAMES.get(path, f"{request.method} {path}")
    return name if request.status is None or request.status < 400 else f"{name} ({request.status})"


def api_port(cluster: load.Cluster) -> int:
    return int(cluster.api[0].rsplit(":", 1)[1])


def wire_figures(cluster: load.Cluster, capture: _wire.Capture, t0: float, t1: float) -> dict:
    """The level's latencies on the wire, from its capture (read, then deleted)."""
    capture.stop()
    try:
        wire = _wire.read_capture(capture.path.read_bytes(), api_ports={api_port(cluster)},
                                  smpp_ports={cluster.smpp_port})
    finally:
        if not cluster.keep_logs:
            capture.path.unlink(missing_ok=True)
    return {"answer_ms": wire.answer_times(t0, t1, name=endpoint_name),
            "accept_submit_ms": wire.accept_submit(t0, t1),
            "requests": len(wire.requests), "submits": len(wire.submits),
            "gaps": wire.gaps, "unpaired": wire.unpaired, "dropped": capture.dropped}


async def measure(cluster: load.Cluster, bare: Bare, mix: str, args, *,
                  rate: float | None = None, profile: bool = False,
                  capture: bool = False) -> dict:
    """One level of C{mix}: warm up, measure C{args.duration} s, return its figures;
    with C{capture}, the loopback captured too (L{_wire}) and its figures added."""
    floor = mix in FLOORS
    target = bare.proc.pid if floor else cluster.daemon_pids[0]
    url = {"bare": bare.url, "bare-resource": bare.resource_url,
           "bare-lean": bare.lean_url}.get(mix, cluster.api[0])
    if not floor:
        cluster.clear_messages()
    # Made once per cluster (a subprocess, seconds): before the level's clock starts.
    api_key = cluster.api_key() if mix == "backend" else None
    wire = (_wire.Capture.start(cluster.dir, [api_port(cluster), cluster.smpp_port],
                                name=f"wire-{mix}-" + (f"{rate:.0f}-per-s" if rate else "saturated"))
            if capture else None)
    start = time.time() + 0.3
    t0 = start + args.warmup
    t1 = t0 + args.duration
    spec = {"api": [url], "smsc": cluster.smsc_http, "users": args.users, "start": start,
            "t0": t0, "t1": t1, "seed": time.time(), "number_base": cluster.number_base(),
            "mix": "bare" if floor else mix,
            "api_key": api_key, "rate": rate}
    run = defer.Deferred.fromCoroutine(load.Driver(spec).run())
    await task.deferLater(reactor, max(0.0, t0 - time.time()), lambda: None)
    cpu0, busy0, own0 = cpu_seconds(target), machine_busy_seconds(), cpu_seconds(os.getpid())
    wait0 = cpu_wait_seconds(target)
    spy = None
    if profile:
        out = BENCH / "out"
        out.mkdir(exist_ok=True)
        spy_out = out / f"pyspy-flow_floor-{mix}-{time.strftime('%Y%m%dT%H%M%S')}.txt"
        spy = (subprocess.Popen(  # noqa: ASYNC220 - as the window opens
            [str(load.BIN / "py-spy"), "record", "--pid", str(target), "--duration",
             str(int(args.duration)), "--rate", "200", "--nonblocking", "--format", "raw",
             "--output", str(spy_out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
            spy_out)
    await task.deferLater(reactor, max(0.0, t1 - time.time()), lambda: None)
    cpu = cpu_seconds(target) - cpu0
    waited = cpu_wait_seconds(target) - wait0
    own = cpu_seconds(os.getpid()) - own0
    busy = machine_busy_seconds() - busy0
    try:
        stats = await run
    finally:
        result_wire = wire_figures(cluster, wire, t0, t1) if wire is not None else None
    flows = stats["flows"]
    requests = sum(n for name, n in stats["requests"].items() if not name.startswith("smsc"))
    result = {
        "mix": mix, "users": args.users, "rate": rate, "duration": args.duration,
        "flows": flows, "flows_per_s": flows / args.duration,
        "errors": sum(stats["errors"].values()), "error_kinds": stats["errors"],
        "requests_per_flow": requests / max(flows, 1),
        "cpu_s": cpu, "cpu_ms_per_flow": 1000 * cpu / max(flows, 1),
        "cpu_ms_per_request": 1000 * cpu / max(requests, 1),
        "driver_cpu_s": own, "other_cpu_pct": 100 * max(0.0, busy - cpu - own) / args.duration,
        "cpu_wait_ms_per_s": 1000 * waited / args.duration,
        "latency_ms": {k: load.summarize_ms(v) for k, v in stats["latency"].items()},
        "accept_submit_ms": load.summarize_ms(stats["accept_submit"]),
    }
    if result_wire is not None:
        result["wire"] = result_wire
    if spy is not None:
        proc, path = spy
        proc.communicate(timeout=60)
        result["profile"] = {"file": str(path),
                             "report": load.pyspy_report(path) if path.exists() else None}
    return result


# -- Redis commands per flow ------------------------------------------------------------


class Monitor:
    """A C{MONITOR} connection to the cluster's Redis, counting what it sees.

    C{client}: the commands clients sent (each one round trip), C{lua}: those
    scripts ran (C{[0 lua]} in MONITOR's lines)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.buf = b""
        self._lines()  # +OK

    def _lines(self) -> list[bytes]:
        self.sock.settimeout(0.5)
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                self.buf += chunk
                if len(chunk) < (1 << 16):
                    break
        except TimeoutError:
            pass
        lines, _, self.buf = self.buf.rpartition(b"\r\n")
        return lines.split(b"\r\n") if lines else []

    def counts(self) -> tuple[Counter, Counter]:
        client: Counter = Counter()
        lua: Counter = Counter()
        while True:
            lines = self._lines()
            if not lines:
                return client, lua
            for line in lines:
                if not line.startswith(b"+") or b'"' not in line:
                    continue
                command = line.split(b'"', 2)[1].decode().lower()
                if command in ("monitor", "info", "ping"):
                    continue
                (lua if b"[0 lua]" in line else client)[command] += 1

    def close(self) -> None:
        self.sock.close()


async def redis_per_flow(cluster: load.Cluster, mix: str, flows: int) -> dict:
    """Redis commands per complete C{mix} flow: C{flows} flows, one user, under MONITOR."""
    monitor = Monitor(cluster.redis_port)
    try:
        spec = {"api": [cluster.api[0]], "smsc": cluster.smsc_http, "users": 1,
                "start": time.time(), "t0": time.time(), "t1": time.time() + 3600,
                "seed": 0, "number_base": cluster.number_base(), "mix": mix,
                "api_key": cluster.api_key() if mix == "backend" else None}
        driver = load.Driver(spec)
        user = load.User(0, driver.apis[0])
        done = 0
        for _ in range(flows + 1):
            await driver.flow(user)  # the first one warms the caches; not counted
            if done == 0:
                monitor.counts()
            done += 1
        client, lua = monitor.counts()
        for conn in user.conns.values():
            conn.transport.loseConnection()
    finally:
        monitor.close()
    n = flows
    return {"mix": mix, "flows": n,
            "round_trips": sum(client.values()) / n, "lua_commands": sum(lua.values()) / n,
            "commands": (sum(client.values()) + sum(lua.values())) / n,
            "client": {k: v / n for k, v in client.most_common()},
            "lua": {k: v / n for k, v in lua.most_common()}}


# -- reports ---------------------------------------------------------------------------------


def ratios(rounds: list[dict[str, dict]], floor: str = "bare") -> dict[str, dict]:
    """Per flow: each round's ratio to the floor (the level C{floor}) and their median."""
    out = {}
    for mix in rounds[0]:
        if mix in FLOORS:
            continue
        per_round = []
        for levels in rounds:
            bare, level = levels[floor], levels[mix]
            floor_ms = bare["cpu_ms_per_request"] * level["requests_per_flow"]
            if not (floor_ms and level["flows"]):
                continue  # reported as a problem
            per_round.append({"ratio": level["cpu_ms_per_flow"] / floor_ms,
                              "cpu_ms_per_flow": level["cpu_ms_per_flow"],
                              "floor_ms": floor_ms})
        if not per_round:
            continue
        out[mix] = {"rounds": per_round,
                    "median": statistics.median(r["ratio"] for r in per_round),
                    "cpu_ms_per_flow": statistics.median(r["cpu_ms_per_flow"] for r in per_round),
                    "floor_ms": statistics.median(r["floor_ms"] for r in per_round)}
    return out


def level_row(rnd: int, r: dict) -> str:
    return (f"| {rnd} | {r['mix']} | {r['flows']:,} | {r['errors']} | "
            f"{r['requests_per_flow']:.2f} | {r['cpu_s']:.2f} | {r['cpu_ms_per_flow']:.3f} | "
            f"{r['cpu_ms_per_request']:.3f} | {r['flows_per_s']:,.1f} | "
            f"{r['other_cpu_pct']:.0f} |")


def _cells(s: dict | None, count: str = "n") -> str:
    if not s or not s.get(count):
        return "- | - | - | -"
    return f"{s[count]:,} | {s['p50']:.2f} | {s['p95']:.2f} | {s['p99']:.2f}"


def latency_table(title: str, r: dict) -> str:
    """Per endpoint p50/p95/p99: the driver's (request written -> answer read,
    the apparatus) and, when the level was captured, the wire's (request's
    last segment -> answer's first segment, kernel timestamps)."""
    wire = r.get("wire")
    lines = [f"{title}: {r['flows_per_s']:,.1f} flows/s, {r['users']} users"
             + (f", rate {r['rate']:.1f}/s" if r["rate"] else "")
             + f"; the daemon on CPU {1000 * r['cpu_s'] / r['duration']:.0f} ms/s, runnable but "
               f"waiting for a CPU {r['cpu_wait_ms_per_s']:.0f} ms/s"]
    head = "| endpoint | n | p50 ms | p95 ms | p99 ms |"
    rule = "|---|---:|---:|---:|---:|"
    if wire:
        head += " on the wire: n | p50 ms | p95 ms | p99 ms |"
        rule += "---:|---:|---:|---:|"
    lines += [head, rule]
    names = sorted(set(r["latency_ms"]) | set(wire["answer_ms"] if wire else ()))
    for name in names:
        row = f"| {name} | {_cells(r['latency_ms'].get(name))} |"
        if wire:
            row += f" {_cells(wire['answer_ms'].get(name))} |"
        lines.append(row)
    row = f"| **mt/verify -> submit_sm** | {_cells(r['accept_submit_ms'])} |"
    if wire:
        row += f" {_cells(wire['accept_submit_ms'])} |"
    lines.append(row)
    lines.append("(the apparatus: the driver's write -> its read of the answer, and of the "
                 "mt/verify -> submit_sm row the fake SMSC's time of receipt"
                 + ("; on the wire: the request's last segment -> the answer's first, and "
                    "the submit_sm's segment, kernel timestamps)" if wire else ")"))
    if wire:
        lines.append(f"(capture: {wire['requests']:,} requests, {wire['submits']:,} submit_sm, "
                     f"{wire['gaps']} gaps, {wire['unpaired']} answers unpaired, "
                     f"{wire['accept_submit_ms']['missing']} sends answered 2xx without their "
                     f"submit_sm, {wire['accept_submit_ms']['refused']} refused or unanswered, "
                     f"tcpdump dropped {wire['dropped']})")
    return "\n".join(lines)


def wire_problems(r: dict) -> list[str]:
    """What says a level's capture cannot be trusted."""
    wire = r.get("wire")
    if wire is None:
        return []
    out = []
    if r["flows"] and not wire["accept_submit_ms"]["n"]:
        out.append("no mt/verify matched to a submit_sm on the wire")
    if wire["dropped"] is None or wire["dropped"] or wire["gaps"]:
        out.append(f"the capture lost data: tcpdump dropped {wire['dropped']}, "
                   f"{wire['gaps']} gaps")
    return out


def parse_flows(value: str) -> list[str]:
    flows = [v.strip() for v in value.split(",") if v.strip()]
    if not flows or any(f not in FLOWS for f in flows) or len(set(flows)) != len(flows):
        raise argparse.ArgumentTypeError(f"distinct flows among {', '.join(FLOWS)}: {value!r}")
    return flows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="msisdnd's complete flows against a bare Klein "
                                            "route, same run: daemon CPU per flow / CPU of as "
                                            "many bare requests")
    p.add_argument("--users", type=int, default=50, help="concurrent users per level")
    p.add_argument("--duration", type=float, default=10, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=3, help="unmeasured seconds per level")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--flows", type=parse_flows, default=list(FLOWS),
                   help=f"which flows, comma-separated ({','.join(FLOWS)})")
    p.add_argument("--klein", action="store_true",
                   help="also measure the bare route as a plain twisted.web Resource (what "
                        "Klein's routing costs per request)")
    p.add_argument("--lean-floor", action="store_true",
                   help="also measure the bare Klein route on a Site that does not parse POST "
                        "bodies as forms (as the daemon's), and each flow's ratio to it")
    p.add_argument("--no-latency", action="store_true",
                   help="skip the device JWT flow at half its saturated flows/s")
    p.add_argument("--latency-rate", type=float, default=None, metavar="R",
                   help="measure latency at R flows/s instead of half the saturated flows/s")
    p.add_argument("--no-wire", action="store_true",
                   help="do not capture the loopback during the latency phase (on by default "
                        "when root with tcpdump: the latencies on the wire)")
    p.add_argument("--no-redis-count", action="store_true",
                   help="skip counting Redis commands per flow (MONITOR)")
    p.add_argument("--redis-flows", type=int, default=20,
                   help="flows counted under MONITOR, per flow kind")
    p.add_argument("--profile", choices=("bare",) + FLOWS, default=None,
                   help="py-spy the process of this level in the last round")
    p.add_argument("--source", default="worktree", metavar="REV",
                   help="run the daemon from `git archive REV` instead of the working tree")
    p.add_argument("--redis-pool", type=int, default=None, metavar="N",
                   help="the daemon's [redis] pool_size (default: the daemon's default)")
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    p.add_argument("--role", choices=("bare",), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.users < 1 or args.duration <= 0 or args.warmup < 0 or args.rounds < 1:
        p.error("--users, --duration and --rounds must be positive, --warmup not negative")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.role == "bare":
        return bare_main()
    load.hawk_selftest()
    source, env = load.announce(args.source)
    document: dict = {"environment": env, "rounds": [], "target_ratio": TARGET_RATIO}
    cluster = load.Cluster(1, 10, source=source, keep_logs=args.keep_logs)
    if args.redis_pool is not None:
        config = cluster._config

        def with_pool(*a, **kw) -> Path:
            path = config(*a, **kw)
            path.write_text(path.read_text().replace(
                "[redis]\n", f"[redis]\npool_size = {args.redis_pool}\n", 1))
            return path

        cluster._config = with_pool
    bare: list[Bare] = []
    failed: list[str] = []

    def progress(msg: str) -> None:
        print(f"-- {msg}", file=sys.stderr, flush=True)

    async def body(_reactor) -> None:
        cluster.start()
        bare.append(Bare(cluster.dir))
        print("\n| round | level | flows | errors | daemon requests/flow | CPU s | CPU ms/flow "
              "| CPU ms/request | flows/s | other CPU % |\n"
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
        order = (["bare"] + (["bare-resource"] if args.klein else [])
                 + (["bare-lean"] if args.lean_floor else []) + args.flows)
        for rnd in range(1, args.rounds + 1):
            levels = {}
            for mix in (order if rnd % 2 else order[::-1]):
                progress(f"round {rnd}: {mix}")
                r = await measure(cluster, bare[0], mix, args,
                                  profile=args.profile == mix and rnd == args.rounds)
                levels[mix] = r
                print(level_row(rnd, r), flush=True)
                if r["errors"] or not r["flows"]:
                    failed.append(f"round {rnd} {mix}: {r['flows']} flows, errors "
                                  f"{r['error_kinds']}")
            document["rounds"].append(levels)
        document["ratios"] = ratios(document["rounds"])
        print()
        if args.klein:
            klein = [levels["bare"]["cpu_ms_per_request"]
                     / levels["bare-resource"]["cpu_ms_per_request"]
                     for levels in document["rounds"]]
            document["klein_over_resource"] = klein
            print(f"bare Klein route / bare twisted.web Resource, CPU per request: "
                  f"{statistics.median(klein):.2f} (rounds: "
                  f"{', '.join(format(k, '.2f') for k in klein)})")
        for mix, figure in document["ratios"].items():
            print(f"{load.MIX_NAMES.get(mix, mix)}: {figure['median']:.2f}x the HTTP floor "
                  f"(median of {len(figure['rounds'])} rounds: "
                  f"{', '.join(format(x['ratio'], '.2f') for x in figure['rounds'])}); "
                  f"{figure['cpu_ms_per_flow']:.3f} ms of daemon CPU per flow, floor "
                  f"{figure['floor_ms']:.3f} ms", flush=True)
        if args.lean_floor:
            document["lean_ratios"] = ratios(document["rounds"], "bare-lean")
            for mix, figure in document["lean_ratios"].items():
                print(f"{load.MIX_NAMES.get(mix, mix)}: {figure['median']:.2f}x the floor without "
                      f"form parsing (median of {len(figure['rounds'])} rounds: "
                      f"{', '.join(format(x['ratio'], '.2f') for x in figure['rounds'])}); floor "
                      f"{figure['floor_ms']:.3f} ms", flush=True)
        for levels in document["rounds"][-1:]:
            for mix, r in levels.items():
                if r.get("profile", {}).get("report"):
                    print(f"\npy-spy, {mix}:\n" + load.format_profile(r["profile"]["report"]))
        if not args.no_latency and "device-jwt" in args.flows:
            saturated = [levels["device-jwt"] for levels in document["rounds"]]
            best = max(saturated, key=lambda r: r["flows_per_s"])
            rate = args.latency_rate or best["flows_per_s"] / 2
            why_not = "--no-wire" if args.no_wire else _wire.unavailable()
            print(f"\nlatency on the wire: "
                  + (f"off ({why_not})" if why_not else "on (tcpdump -i lo)"), flush=True)
            if why_not is None:
                progress("device-jwt saturated, the loopback captured")
                best = await measure(cluster, bare[0], "device-jwt", args, capture=True)
            progress("device-jwt at half load")
            half = await measure(cluster, bare[0], "device-jwt", args, rate=rate,
                                 capture=why_not is None)
            for name, r in (("saturated", best), ("half load", half)):
                if r["errors"] or not r["flows"]:
                    failed.append(f"{name}: {r['flows']} flows, errors {r['error_kinds']}")
                failed.extend(f"{name}: {problem}" for problem in wire_problems(r))
            document["latency"] = {"saturated": best, "half": half, "wire": why_not or "on"}
            print("\n" + latency_table("device JWT flow, saturated", best))
            where = "--latency-rate" if args.latency_rate else "half load"
            print("\n" + latency_table("device JWT flow, " + (
                "--latency-rate" if args.latency_rate else "half the saturated flows/s"), half))
            print(f"\nmt/verify -> submit_sm p99 at {where}: "
                  f"{half['accept_submit_ms']['p99']:.2f} ms (the apparatus: the driver's "
                  f"write -> the fake SMSC's receipt)", flush=True)
            if "wire" in half:
                print(f"mt/verify -> submit_sm p99 at {where}, on the wire: "
                      f"{half['wire']['accept_submit_ms']['p99']:.2f} ms (the request's last "
                      f"segment -> the submit_sm's segment; goal < "
                      f"{load.TARGET_ACCEPT_SUBMIT_P99_MS:g} ms)", flush=True)
        if not args.no_redis_count:
            document["redis"] = []
            print("\n| flow | Redis round trips | commands (scripts' included) | by the daemon "
                  "| in scripts |\n|---|---:|---:|---|---|")
            for mix in args.flows:
                progress(f"Redis commands per flow: {mix}")
                r = await redis_per_flow(cluster, mix, args.redis_flows)
                document["redis"].append(r)
                print(f"| {mix} | {r['round_trips']:.2f} | {r['commands']:.2f} | "
                      + ", ".join(f"{k} {v:.2f}" for k, v in r["client"].items()) + " | "
                      + ", ".join(f"{k} {v:.2f}" for k, v in r["lua"].items()) + " |",
                      flush=True)

    try:
        react(body)
    finally:
        for b in bare:
            b.stop()
        cluster.stop()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(document, f, indent=1, default=str)
    for problem in failed:
        print(f"PROBLEM: {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
