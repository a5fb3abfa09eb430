"""msisdnd's ESME against a bare Twisted ESME: submit_sm per CPU-second, same SMSC, same run.

    .venv/bin/python bench/smpp_bare.py [--contenders bare,msisdnd] [--windows 10,100]
                                        [--rounds 5] [--messages 50000] [--warmup 2000]
                                        [--throughput 100000] [--profile] [--json FILE]
    .venv/bin/python bench/smpp_bare.py --contenders bare,msisdnd@HEAD,msisdnd@HEAD~1
    .venv/bin/python bench/smpp_bare.py --windows 100 --callgrind [--callgrind-messages 1000,4000]

The bare ESME (L{BareESME}) is the ceiling for Twisted on CPython: a
Protocol that binds, keeps W C{submit_sm} outstanding with one
struct-packed body, reads each C{submit_sm_resp} by its header only, and
spends one Deferred and one C{callLater} (its response timer) per request,
nothing else.  msisdnd's side is what C{smpp_throughput.py} measures: one
L{CarriersService}, one carrier, one transceiver bind, C{router.send} with
at most 2 x W messages in the system, every policy on (queue, per-message
deadline, the throughput cap's sliding window at C{--throughput}, far above
the rate reached so that it never holds a submit back, counters, latency
histogram).

One fake SMSC process (C{bench/_smsc_process.py}) serves every run.  Each
run is a fresh worker process (this script with C{--worker}): it binds,
warms up, and measures its own CPU time (C{time.process_time}) over N
accepted submits.  Rounds interleave the contenders (the order rotates
from round to round, so a drift of the machine's speed favours none);
figures are medians over the rounds, and the ratio is msisdnd's submit_sm
per CPU-second over the bare ESME's, per round, then the median of those.

Contenders: C{bare}; C{msisdnd} (the working tree); C{msisdnd@REV} (a git
revision exported with C{git archive}: the same run can compare commits);
C{msisdnd=DIR} (a tree holding C{msisdnd/}: an experiment); any msisdnd
with C{:nocap} (the throughput cap off).  The exit status
is 1 if any submit failed.

C{--callgrind} counts instructions instead of CPU seconds, which on a
shared machine move 2-3x between runs: each contender's worker runs under
C{valgrind --tool=callgrind} (same SMSC process) twice per window, with
N1 and N2 measured submits, and the figure is (instructions(N2) -
instructions(N1)) / (N2 - N1) per submit: start-up, bind and warm-up
cancel out.  The ratio is the bare ESME's instructions per submit over the
contender's (the same sense as the CPU ratio: msisdnd's fraction of
bare).  It replaces the timed rounds (under valgrind a worker's CPU time
says nothing).  The worker turns instrumentation on (C{callgrind_control})
only where its measured phase starts, so that start-up is not 50x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import _smpp  # noqa: E402
from _common import machine, react  # noqa: E402
# Twisted only: msisdnd is imported by a worker once its --source tree is first on
# sys.path (the exported twisted/plugins/ is no package: the installed Twisted wins).
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.protocol import Protocol  # noqa: E402

TARGET_RATIO = 0.75
DEFAULT_THROUGHPUT = 100_000.0
SUBMIT_SM, SUBMIT_SM_RESP = 0x00000004, 0x80000004
BIND_TRANSCEIVER, BIND_TRANSCEIVER_RESP = 0x00000009, 0x80000009
HEADER = struct.Struct(">IIII")
RESPONSE_TIMEOUT = 10.0
PYSPY = Path(sys.executable).with_name("py-spy")
# callgrind's summary on stderr: "==PID== Collected : 123456789" (instructions executed).
CALLGRIND_COLLECTED = re.compile(r"^==\d+== Collected : (\d+)\s*$", re.M)
CALLGRIND_SLOWDOWN = 100  # a worker under valgrind is some 50x slower: its timeout, generously


# -- the bare ESME ----------------------------------------------------------------


def bare_submit_body() -> bytes:
    """The one submit_sm body every bare request carries: what msisdnd sends for the
    benchmark's message (source "msisdnd" 5/0, destination 33612345678 1/1,
    registered_delivery 1, GSM 7-bit "Your code: 123456"), packed by hand."""
    text = b"Your code: 123456"
    return (b"\0" + bytes((5, 0)) + b"msisdnd\0" + bytes((1, 1)) + b"33612345678\0"
            + bytes((0, 0, 0)) + b"\0" + b"\0" + bytes((1, 0, 0, 0, len(text))) + text)


class BareESME(Protocol):
    """The least a Twisted ESME can do per submit_sm.

    Per request: a sequence number, one header packed in front of the same
    body, one Deferred, one C{callLater} for its response timeout (cancelled
    by the response).  Responses are matched by sequence from the header
    alone.  Nothing else: no queue, no deadline, no counters.
    """

    def __init__(self, clock, body: bytes):
        self.clock = clock
        self.body = body
        self.pending: dict[int, tuple] = {}
        self.sequence = 0
        self.buffer = b""
        self.bound = Deferred()

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # as msisdnd's PDUStream does
        creds = b"bench\0bench\0\0" + bytes((0x34, 0, 0)) + b"\0"
        self.sequence += 1
        self.transport.write(HEADER.pack(16 + len(creds), BIND_TRANSCEIVER, 0, self.sequence)
                             + creds)

    def submit(self) -> Deferred:
        seq = self.sequence = self.sequence + 1
        d = Deferred()
        self.pending[seq] = (d, self.clock.callLater(RESPONSE_TIMEOUT, self._timedOut, seq))
        body = self.body
        self.transport.write(HEADER.pack(16 + len(body), SUBMIT_SM, 0, seq) + body)
        return d

    def _timedOut(self, seq: int) -> None:
        d, _ = self.pending.pop(seq)
        d.errback(TimeoutError(f"no submit_sm_resp for {seq}"))

    def dataReceived(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        pos, end = 0, len(buf)
        unpack, pending = HEADER.unpack_from, self.pending
        while end - pos >= 16:
            length, command_id, status, seq = unpack(buf, pos)
            if end - pos < length:
                break
            pos += length
            if command_id == SUBMIT_SM_RESP:
                entry = pending.pop(seq, None)
                if entry is not None:
                    d, timer = entry
                    timer.cancel()
                    if status:
                        d.errback(RuntimeError(f"submit_sm_resp status 0x{status:08X}"))
                    else:
                        d.callback(seq)
            elif command_id == BIND_TRANSCEIVER_RESP:
                if status:
                    self.bound.errback(RuntimeError(f"bind refused: 0x{status:08X}"))
                else:
                    self.bound.callback(self)
        self.buffer = buf[pos:]


class BareDriver:
    """Keeps C{window} submits outstanding on a bare ESME until C{total} are answered."""

    def __init__(self, esme: BareESME, total: int, window: int):
        self.esme = esme
        self.total = total
        self.window = window
        self.started = 0
        self.ok = 0
        self.failed = 0
        self.done = Deferred()

    def run(self):
        for _ in range(min(self.window, self.total)):
            self._next()
        return self.done

    def _next(self) -> None:
        self.started += 1
        self.esme.submit().addCallbacks(self._ok, self._failed)

    def _ok(self, _) -> None:
        self.ok += 1
        self._finished()

    def _failed(self, _) -> None:
        self.failed += 1
        self._finished()

    def _finished(self) -> None:
        if self.ok + self.failed == self.total:
            self.done.callback(self)
        elif self.started < self.total:
            self._next()


# -- a worker: one contender, one window, one measurement -----------------------------


class Profile:
    """py-spy on this very process over the measured phase (raw collapsed stacks)."""

    def __init__(self, out: str | None):
        self.out = out
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if not self.out:
            return
        self.process = subprocess.Popen(
            [str(PYSPY), "record", "--pid", str(os.getpid()), "--rate", "250", "--nonblocking",
             "--format", "raw", "--output", self.out],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # attach before the measured phase; a sleeping process is not sampled

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=30)


def worker(args: argparse.Namespace) -> int:
    """Measure one contender at one window; print one JSON line."""
    source = os.environ.get("MSISDND_BENCH_SOURCE")
    if args.worker == "msisdnd":
        _smpp.use_source(source)
        if str(_smpp.REPO) not in sys.path:
            sys.path.append(str(_smpp.REPO))  # smpp_throughput puts it first otherwise
    from twisted.internet import reactor as _reactor  # noqa: F401
    from twisted.internet.defer import inlineCallbacks

    result: dict = {"contender": args.worker, "window": args.window}
    profile = Profile(args.profile_out)

    def start_measuring() -> None:
        if args.callgrind_worker:  # valgrind started with --instr-atstart=no: count from here
            subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())],
                           capture_output=True, check=True)
        profile.start()

    @inlineCallbacks
    def measure_bare(reactor):
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        esme = BareESME(reactor, bare_submit_body())
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", args.port), esme)
        yield esme.bound
        if args.warmup:
            yield BareDriver(esme, args.warmup, args.window).run()
        start_measuring()
        smsc0, cpu0, wall0, busy0 = (_smpp.process_cpu_seconds(args.smsc_pid),
                                     time.process_time(), time.perf_counter(),
                                     _smpp.machine_busy_seconds())
        driver = yield BareDriver(esme, args.messages, args.window).run()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        smsc = _smpp.process_cpu_seconds(args.smsc_pid) - smsc0
        busy = _smpp.machine_busy_seconds() - busy0
        profile.stop()
        esme.transport.loseConnection()
        result.update(accepted=driver.ok, failed=driver.failed, errors={}, wall=wall, cpu=cpu,
                      smsc_cpu=smsc, requeued=0, other_cpu=max(0.0, busy - cpu - smsc))

    @inlineCallbacks
    def measure_msisdnd(reactor):
        import msisdnd
        import smpp_throughput as st
        from msisdnd.smpp.service import CarriersService

        result["msisdnd_path"] = str(Path(msisdnd.__file__).parent)
        service = CarriersService([st.carrier_config(args.port, args.window, args.throughput)],
                                  reactor, send_timeout=st.SEND_TIMEOUT)
        service.startService()
        try:
            yield _smpp.wait_bound(reactor, service)
            outstanding = 2 * args.window
            if args.warmup:
                yield st.drive(service.router, args.warmup, outstanding)
            carrier = service.carriers[0]
            requeued0 = carrier.requeued
            start_measuring()
            smsc0, cpu0, wall0, busy0 = (_smpp.process_cpu_seconds(args.smsc_pid),
                                         time.process_time(), time.perf_counter(),
                                         _smpp.machine_busy_seconds())
            driver = yield st.drive(service.router, args.messages, outstanding)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            smsc = _smpp.process_cpu_seconds(args.smsc_pid) - smsc0
            busy = _smpp.machine_busy_seconds() - busy0
            profile.stop()
            result.update(accepted=driver.ok, failed=driver.failed, errors=dict(driver.errors),
                          wall=wall, cpu=cpu, smsc_cpu=smsc,
                          requeued=carrier.requeued - requeued0,
                          other_cpu=max(0.0, busy - cpu - smsc))
        finally:
            yield service.stopService()

    measure = measure_bare if args.worker == "bare" else measure_msisdnd
    react(measure)
    print(json.dumps(result), flush=True)
    return 0


# -- the parent: the SMSC, the rounds, the figures ------------------------------------


def parse_contender(text: str) -> tuple[str, str | None, bool]:
    """C{"msisdnd@HEAD:nocap"} -> (C{"msisdnd"}, C{"HEAD"}, no cap);
    C{"msisdnd=/tmp/tree"} -> (C{"msisdnd"}, C{"=/tmp/tree"}, cap on)."""
    m = re.fullmatch(r"(bare|msisdnd)(?:@([^:=]+)|(=[^:]+))?(:nocap)?", text)
    if not m or (m.group(1) == "bare" and (m.group(2) or m.group(3) or m.group(4))):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a contender is bare, msisdnd, msisdnd@REV or msisdnd=DIR (a tree "
            f"holding msisdnd/), with :nocap for msisdnd")
    return m.group(1), m.group(2) or m.group(3), bool(m.group(4))


def run_worker(args: argparse.Namespace, contender: str, window: int, port: int, smsc_pid: int,
               sources: dict, profile_out: Path | None, messages: int | None = None,
               callgrind: bool = False) -> dict:
    """One worker process: C{messages} (else C{--messages}, or C{--profile-messages} when
    profiled) measured submits; under callgrind when asked, its instruction count in
    C{instructions}."""
    kind, rev, nocap = parse_contender(contender)
    if messages is None:
        messages = args.profile_messages if profile_out is not None else args.messages
    # Instrumented from the measured phase on (the worker turns it on with callgrind_control):
    # start-up runs some 5x slower under valgrind rather than 50x.
    valgrind = (["valgrind", "--tool=callgrind", "--instr-atstart=no",
                 "--callgrind-out-file=/dev/null"] if callgrind else [])
    command = valgrind + [
        sys.executable, str(Path(__file__).resolve()), "--worker", kind,
        "--port", str(port), "--smsc-pid", str(smsc_pid), "--window", str(window),
        "--messages", str(messages), "--warmup", str(args.warmup),
        "--throughput", "0" if nocap else str(args.throughput)]
    if profile_out is not None:
        command += ["--profile-out", str(profile_out)]
    if callgrind:
        command += ["--callgrind-worker"]
    env = dict(os.environ)
    env.pop("MSISDND_BENCH_SOURCE", None)
    if rev is not None:
        env["MSISDND_BENCH_SOURCE"] = str(sources[rev][0])
        env["PYTHONPATH"] = _smpp.pythonpath(sources[rev][0])
    done = subprocess.run(command, cwd=_smpp.REPO, env=env, capture_output=True, text=True,
                          timeout=max(120, messages / 500) * (CALLGRIND_SLOWDOWN if callgrind else 1))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    collected = CALLGRIND_COLLECTED.findall(done.stderr) if callgrind else [None]
    if done.returncode or not lines or not collected:
        raise RuntimeError(f"worker {contender} at window {window} failed "
                           f"(exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = json.loads(lines[-1])
    if callgrind:
        result["instructions"] = int(collected[-1])
    result["contender"] = contender
    result["messages"] = messages
    result["per_cpu_second"] = result["accepted"] / result["cpu"] if result["cpu"] else 0.0
    result["cpu_us_per_submit"] = 1e6 * result["cpu"] / max(1, result["accepted"])
    return result


def rotated(items: list, by: int) -> list:
    by %= len(items)
    return items[by:] + items[:by]


def summarize(runs: list[dict], contenders: list[str], windows: list[int]) -> dict:
    """Medians per contender and window, and each contender's ratio to the bare ESME."""
    summary: dict = {}
    for window in windows:
        at = [r for r in runs if r["window"] == window]
        rounds = sorted({r["round"] for r in at})
        per: dict = {}
        for c in contenders:
            mine = [r for r in at if r["contender"] == c]
            per[c] = {
                "median_per_cpu_second": _smpp.median([r["per_cpu_second"] for r in mine]),
                "median_cpu_us_per_submit": _smpp.median([r["cpu_us_per_submit"] for r in mine]),
                "median_wall_per_second": _smpp.median([r["accepted"] / r["wall"] for r in mine]),
                "runs": len(mine),
            }
            if c != "bare" and "bare" in contenders:
                ratios = []
                for n in rounds:
                    mine_n = [r for r in mine if r["round"] == n]
                    bare_n = [r for r in at if r["round"] == n and r["contender"] == "bare"]
                    if mine_n and bare_n and bare_n[0]["per_cpu_second"]:
                        ratios.append(mine_n[0]["per_cpu_second"] / bare_n[0]["per_cpu_second"])
                per[c]["ratios_to_bare"] = ratios
                per[c]["median_ratio_to_bare"] = _smpp.median(ratios)
        summary[window] = per
    return summary


def format_runs(runs: list[dict]) -> str:
    lines = ["| round | window | contender | submits | wall s | CPU s | submit_sm per CPU-s "
             "| CPU us/submit | SMSC CPU s | other CPU % | failed | ratio to bare (same round) |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        bare = [b for b in runs if b["round"] == r["round"] and b["window"] == r["window"]
                and b["contender"] == "bare"]
        ratio = (f"{r['per_cpu_second'] / bare[0]['per_cpu_second']:.3f}"
                 if bare and r["contender"] != "bare" else "")
        lines.append(f"| {r['round']} | {r['window']} | {r['contender']} | {r['accepted']:,} | "
                     f"{r['wall']:.2f} | {r['cpu']:.2f} | {r['per_cpu_second']:,.0f} | "
                     f"{r['cpu_us_per_submit']:.1f} | {r['smsc_cpu']:.2f} | "
                     f"{100 * r.get('other_cpu', 0.0) / r['wall']:.0f} | {r['failed']} | "
                     f"{ratio} |")
    return "\n".join(lines)


def format_summary(summary: dict, contenders: list[str]) -> str:
    lines = ["| window | contender | runs | median submit_sm per CPU-s | median CPU us/submit "
             "| median submit_sm/s (wall) | median ratio to bare | each round's ratio |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    for window, per in summary.items():
        for c in contenders:
            s = per[c]
            ratio = s.get("median_ratio_to_bare")
            lines.append(
                f"| {window} | {c} | {s['runs']} | {s['median_per_cpu_second']:,.0f} | "
                f"{s['median_cpu_us_per_submit']:.1f} | {s['median_wall_per_second']:,.0f} | "
                f"{'' if ratio is None else f'{ratio:.3f}'} | "
                f"{', '.join(f'{x:.3f}' for x in s.get('ratios_to_bare', []))} |")
    return "\n".join(lines)


def callgrind_runs(args: argparse.Namespace, port: int, smsc_pid: int, sources: dict) -> list[dict]:
    """Every contender's worker under callgrind at N1 and N2 submits, per window."""
    runs = []
    for window in args.windows:
        for contender in args.contenders:
            for messages in args.callgrind_messages:
                r = run_worker(args, contender, window, port, smsc_pid, sources, None,
                               messages=messages, callgrind=True)
                runs.append(r)
                print(f"callgrind window {window} {contender} {messages:,} submits: "
                      f"{r['instructions']:,} instructions", file=sys.stderr, flush=True)
    return runs


def summarize_callgrind(runs: list[dict], contenders: list[str], windows: list[int],
                        counts: tuple[int, int]) -> dict:
    """Instructions per submit, (I(N2) - I(N1)) / (N2 - N1), per window and contender,
    and the bare ESME's over each contender's (same run)."""
    n1, n2 = counts
    summary: dict = {}
    for window in windows:
        per: dict = {}
        for c in contenders:
            by_count = {r["messages"]: r["instructions"] for r in runs
                        if r["window"] == window and r["contender"] == c}
            per[c] = {"instructions": {str(n): by_count[n] for n in counts},
                      "instructions_per_submit": (by_count[n2] - by_count[n1]) / (n2 - n1)}
        if "bare" in per:
            for c in contenders:
                if c != "bare":
                    per[c]["ratio_bare_over_contender"] = (
                        per["bare"]["instructions_per_submit"] / per[c]["instructions_per_submit"])
        summary[window] = per
    return summary


def format_callgrind(summary: dict, contenders: list[str], counts: tuple[int, int]) -> str:
    n1, n2 = counts
    lines = [f"| window | contender | instructions, {n1:,} submits | instructions, {n2:,} submits "
             "| instructions per submit | bare / contender |",
             "|---:|---|---:|---:|---:|---:|"]
    for window, per in summary.items():
        for c in contenders:
            s = per[c]
            ratio = s.get("ratio_bare_over_contender")
            lines.append(f"| {window} | {c} | {s['instructions'][str(n1)]:,} | "
                         f"{s['instructions'][str(n2)]:,} | {s['instructions_per_submit']:,.0f} | "
                         f"{'' if ratio is None else f'{ratio:.3f}'} |")
    return "\n".join(lines)


# py-spy's collapsed stacks: where the CPU of a run went.
PROFILE_BUCKETS = (
    ("the driver (bench)", ("bench/smpp_throughput.py", "bench/smpp_bare.py")),
    ("msisdnd carrier.py (queue, policy, outcomes)", ("smpp/carrier.py",)),
    ("msisdnd session.py (window, timers)", ("smpp/session.py",)),
    ("msisdnd framing.py", ("smpp/framing.py",)),
    ("msisdnd codec.py (submit body, resp decode)", ("smpp/codec.py",)),
    ("msisdnd alphabet.py (GSM encoding)", ("smpp/alphabet.py",)),
    ("msisdnd router.py", ("smpp/router.py",)),
    ("msisdnd, other", ("msisdnd/",)),
    ("Deferreds", ("twisted/internet/defer.py",)),
    ("callLater/timers (reactor base)", ("twisted/internet/base.py",)),
    ("TCP read/write (twisted tcp, abstract)", ("twisted/internet/tcp.py",
                                                "twisted/internet/abstract.py")),
    ("epoll reactor", ("twisted/internet/epollreactor.py", "twisted/internet/posixbase.py")),
)


def profile_buckets(path: Path) -> tuple[int, Counter]:
    """Samples in all, and by the innermost frame's bucket (own time)."""
    total, buckets = 0, Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        label = "other (stdlib, builtins)"
        for frame in reversed(frames):
            found = next((name for name, keys in PROFILE_BUCKETS
                          if any(k in frame for k in keys)), None)
            if found:
                label = found
                break
        buckets[label] += n
    return total, buckets


def format_profiles(profiles: dict[str, tuple[Path, dict]]) -> str:
    """CPU us per submit by bucket, per contender (py-spy at 250 Hz: a sample is 4 ms)."""
    rows: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    for contender, (path, run) in profiles.items():
        total, buckets = profile_buckets(path)
        scale = run["cpu"] * 1e6 / max(1, run["accepted"]) / max(1, total)
        totals[contender] = run["cpu"] * 1e6 / max(1, run["accepted"])
        for label, n in buckets.items():
            rows.setdefault(label, {})[contender] = n * scale
    names = list(profiles)
    lines = ["| own time in | " + " | ".join(f"{c} us/submit" for c in names) + " |",
             "|---|" + "---:|" * len(names)]
    for label in sorted(rows, key=lambda k: -max(rows[k].values())):
        lines.append(f"| {label} | " + " | ".join(f"{rows[label].get(c, 0.0):.1f}"
                                                  for c in names) + " |")
    lines.append("| **all (process CPU per submit)** | "
                 + " | ".join(f"**{totals[c]:.1f}**" for c in names) + " |")
    return "\n".join(lines)


def verdicts(summary: dict, key: str, describe: Callable[[str, dict], tuple[str, str]]
             ) -> list[str]:
    """One line per window and capped contender: its ratio C{key} against the target."""
    lines = []
    for window, per in summary.items():
        for c, s in per.items():
            ratio = s.get(key)
            if ratio is not None and ":nocap" not in c:
                what, how = describe(c, s)
                verdict = "MET" if ratio >= TARGET_RATIO else "NOT MET"
                lines.append(f"window {window}: {what} = {ratio:.3f} ({how}; target >= "
                             f"{TARGET_RATIO}) -> {verdict}")
    return lines


def parent(args: argparse.Namespace) -> int:
    sources: dict[str, tuple[Path, str]] = {}
    for c in args.contenders:
        _, rev, _ = parse_contender(c)
        if rev is not None and rev not in sources:
            if rev.startswith("="):  # a directory: an experiment, not a commit
                sources[rev] = (Path(rev[1:]).resolve(), f"directory {rev[1:]}")
            else:
                sources[rev] = _smpp.export_source(rev)
    state = _smpp.code_state()
    env = machine()
    print("command: " + " ".join([".venv/bin/python", "bench/smpp_bare.py"] + sys.argv[1:]))
    print("commit: " + _smpp.describe_code(state) + "".join(
        f"; msisdnd{rev}: {commit}" if rev.startswith("=") else f"; {rev} = {commit} (git archive)"
        for rev, (_, commit) in sources.items()))
    print(f"machine: {env['date']}, {env['nproc']} CPUs, {env['cpu_model']}, "
          f"Python {env['python']}")
    if args.callgrind:
        n1, n2 = args.callgrind_messages
        print(f"settings: callgrind (instructions, not CPU time): each worker twice per window, "
              f"{n1:,} and {n2:,} measured submits after {args.warmup:,} warm-up; windows "
              f"{args.windows}; msisdnd throughput cap {args.throughput:g}/s (never reached) "
              f"unless :nocap; one SMSC process for all runs", flush=True)
    else:
        print(f"settings: {args.messages:,} measured submits per run after {args.warmup:,} "
              f"warm-up; rounds {args.rounds}; windows {args.windows}; msisdnd throughput cap "
              f"{args.throughput:g}/s (never reached) unless :nocap; one SMSC process for all "
              f"runs", flush=True)

    port = _smpp.free_port()
    smsc = _smpp.start_smsc(port)
    runs: list[dict] = []
    grind: list[dict] = []
    profiles: dict[str, tuple[Path, dict]] = {}
    try:
        if args.callgrind:
            grind = callgrind_runs(args, port, smsc.pid, sources)
        timed_rounds = 0 if args.callgrind else args.rounds
        for n in range(1, timed_rounds + 1):
            for window in args.windows:
                for contender in rotated(list(args.contenders), n - 1):
                    r = run_worker(args, contender, window, port, smsc.pid, sources, None)
                    r["round"] = n
                    runs.append(r)
                    print(f"round {n} window {window} {contender}: "
                          f"{r['per_cpu_second']:,.0f} submit_sm per CPU-s "
                          f"({r['cpu_us_per_submit']:.1f} us each)", file=sys.stderr, flush=True)
        if args.profile and not PYSPY.exists():
            print(f"--profile: no py-spy at {PYSPY} (pip install py-spy, or the bench extra); "
                  "no profile", file=sys.stderr)
        elif args.profile:
            out_dir = _smpp.BENCH / "out"  # git-ignored
            out_dir.mkdir(exist_ok=True)
            window = max(args.windows)
            stamp = time.strftime("%Y%m%dT%H%M%S")
            for contender in args.contenders:
                label = re.sub(r"[^A-Za-z0-9_.:-]+", "_", contender)
                out = out_dir / f"pyspy-smpp-bare-{stamp}-{label}-w{window}.txt"
                r = run_worker(args, contender, window, port, smsc.pid, sources, out)
                if out.exists():
                    profiles[contender] = (out, r)
    finally:
        _smpp.stop_smsc(smsc)

    summary = summarize(runs, list(args.contenders), args.windows) if runs else {}
    grind_summary = (summarize_callgrind(grind, list(args.contenders), args.windows,
                                         args.callgrind_messages) if grind else {})
    if runs:
        print()
        print(format_runs(runs))
        print()
        print(format_summary(summary, list(args.contenders)))
    if grind:
        print()
        print(f"callgrind: instructions per submit = (I({args.callgrind_messages[1]:,}) - "
              f"I({args.callgrind_messages[0]:,})) / {args.callgrind_messages[1] - args.callgrind_messages[0]:,}")
        print(format_callgrind(grind_summary, list(args.contenders), args.callgrind_messages))
    failed = sum(r["failed"] for r in runs + grind)
    print()
    for line in verdicts(summary, "median_ratio_to_bare", lambda c, s: (
            f"{c} / bare", f"median of {len(s['ratios_to_bare'])} rounds")):
        print(line)
    for line in verdicts(grind_summary, "ratio_bare_over_contender", lambda c, s: (
            f"bare / {c} instructions per submit", "callgrind")):
        print(line)
    print(f"failed submits: {failed}")
    if profiles:
        print()
        print(f"py-spy (250 Hz, own time, window {max(args.windows)}, "
              f"{args.profile_messages:,} submits per run; files in bench/out/):")
        print(format_profiles(profiles))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "environment": env | {"code": state, "sources": {k: v[1] for k, v in sources.items()}},
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "runs": runs, "summary": {str(k): v for k, v in summary.items()},
            "callgrind": {"messages": list(args.callgrind_messages), "runs": grind,
                          "summary": {str(k): v for k, v in grind_summary.items()}}
            if args.callgrind else None,
            "profiles": {c: {"file": str(p), "buckets": dict(profile_buckets(p)[1])}
                         for c, (p, _) in profiles.items()},
            "target_ratio": TARGET_RATIO,
        }, indent=2))
    return 1 if failed else 0


def parse_windows(value: str) -> list[int]:
    try:
        windows = [int(w) for w in value.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {value!r}")
    if not windows or any(not 1 <= w <= 1000 for w in windows):
        raise argparse.ArgumentTypeError("windows must be between 1 and 1000")
    return windows


def parse_counts(value: str) -> tuple[int, int]:
    try:
        counts = tuple(int(n) for n in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not two comma-separated integers: {value!r}")
    if len(counts) != 2 or not 1 <= counts[0] < counts[1]:
        raise argparse.ArgumentTypeError(f"want N1,N2 with 1 <= N1 < N2: {value!r}")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contenders", default=["bare", "msisdnd"],
                   type=lambda v: [c for c in v.split(",") if c and parse_contender(c)],
                   help="comma-separated: bare, msisdnd, msisdnd@REV, msisdnd=DIR, and "
                        "any msisdnd with :nocap (default: bare,msisdnd)")
    p.add_argument("--windows", type=parse_windows, default=[10, 100],
                   help="comma-separated SMPP windows (default: 10,100)")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default: %(default)s)")
    p.add_argument("--messages", type=int, default=50_000,
                   help="measured submits per run (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2_000,
                   help="unmeasured submits before each run (default: %(default)s)")
    p.add_argument("--throughput", type=float, default=DEFAULT_THROUGHPUT,
                   help="msisdnd's throughput cap, submit_sm/s (default: %(default)g, on but "
                        "never reached); :nocap contenders run with 0")
    p.add_argument("--profile", action="store_true",
                   help="after the rounds, one more run per contender at the largest window "
                        "under py-spy (the measured phase only); own time per submit by part")
    p.add_argument("--profile-messages", type=int, default=200_000,
                   help="measured submits in each profiled run (default: %(default)s)")
    p.add_argument("--callgrind", action="store_true",
                   help="instead of the timed rounds, each contender's worker under valgrind's "
                        "callgrind at two message counts per window: instructions per submit "
                        "and the bare ESME's over each contender's (repeatable on a noisy machine)")
    p.add_argument("--callgrind-messages", metavar="N1,N2", type=parse_counts,
                   default=(1000, 4000),
                   help="the two measured submit counts of --callgrind (default: 1000,4000)")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    # A worker's own options (the parent passes them).
    p.add_argument("--worker", choices=("bare", "msisdnd"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--smsc-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--window", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--profile-out", help=argparse.SUPPRESS)
    p.add_argument("--callgrind-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.messages < 1 or args.warmup < 0 or args.throughput < 0:
        p.error("--rounds and --messages must be positive, --warmup and --throughput not negative")
    if not args.worker and not args.contenders:
        p.error("--contenders names none")
    if args.callgrind and not args.worker and not (shutil.which("valgrind")
                                                   and shutil.which("callgrind_control")):
        p.error("--callgrind: no valgrind (with callgrind_control) on PATH "
                "(apt-get install valgrind)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
