"""SMPP MT throughput: how many submit_sm msisdnd's ESME side sends per second and per CPU-second.

    PYTHONPATH=. python bench/smpp_throughput.py [--messages N] [--windows 1,10,100]
                                                 [--warmup N] [--json] [--profile]

The fake SMSC runs in its own process (C{bench/_smsc_process.py}: loopback,
delivery receipts off); the ESME runs here: one L{CarriersService} with one
carrier and one transceiver bind, at each window size in turn.  A driver
keeps at most C{2 x window} messages in the system, calling
C{router.send} again as each result comes back, so every send goes through
the router, the carrier's queue and deadline, the session's window and its
response timer, as in production, without a queue of millions.

For each window it reports:

  - C{submit_sm/s}: accepted submits per wall-clock second.  At a full
    window the two processes take turns (the ESME writes a window's worth,
    the SMSC answers all of it, the ESME handles the answers and refills
    the window), so wall time is close to ESME CPU + SMSC CPU, and this
    figure depends on both;
  - C{ESME submit_sm per CPU-second}: accepted submits divided by this
    process's CPU time (C{time.process_time}), the figure that does not
    depend on the SMSC's speed -- the target is 50,000 at window 100;
  - the SMSC's CPU-seconds (utime + stime from C{/proc/<pid>/stat}), to
    see how much of the wall time is the SMSC's.

Any failed send is counted and reported (and the exit status is 1); there
should be none.  With C{--profile}, only the window-100 case runs, its
measured phase under cProfile, and the 30 functions with the most own time
are printed, then msisdnd's functions by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import Deferred, inlineCallbacks  # noqa: E402

from msisdnd.smpp.config import CarrierConfig  # noqa: E402
from msisdnd.smpp.service import CarriersService  # noqa: E402
from msisdnd.sms.interfaces import OutboundSMS  # noqa: E402

from _common import machine  # noqa: E402
from _smpp import (  # noqa: E402,F401  (re-exported: older callers import them from here)
    code_state,
    describe_code,
    free_port,
    process_cpu_seconds,
    start_smsc,
    stop_smsc,
    wait_bound,
    wait_for_listener,
)

TEXT = "Your code: 123456"
DESTINATION = "+33612345678"
SEND_TIMEOUT = 30.0
TARGET_PER_CPU_SECOND = 50_000
PROFILE_WINDOW = 100
PROFILE_TOP = 30
#: Seconds the bind may take before the run fails.
BIND_DEADLINE = 15.0


# -- the fake SMSC's process: see _smpp.py -------------------------------------


# -- the ESME side -------------------------------------------------------------


def carrier_config(port: int, window: int, throughput: float = 0.0) -> CarrierConfig:
    """One carrier, one transceiver bind to the fake SMSC, room for the driver's load.

    C{throughput} 0 leaves the carrier's throughput cap off; any other value
    turns it on (its sliding window runs on every submit).
    """
    return CarrierConfig.from_mapping({
        "name": "bench",
        "host": "127.0.0.1",
        "port": port,
        "bind": "transceiver",
        "system_id": "bench",
        "password": "bench",
        "mt_sender": "msisdnd",
        "default": True,
        "window": window,
        "queue_size": 4 * window,
        "throughput": throughput,
    }, "bench carrier")


class Driver:
    """Sends C{total} messages through C{router}, at most C{outstanding} at once.

    A new C{router.send} is made as each result comes back.  L{run} fires
    once every send has a result.

    @ivar ok: sends that succeeded.
    @ivar errors: failed sends, by exception type name.
    """

    def __init__(self, router, sms: OutboundSMS, total: int, outstanding: int,
                 timeout: float = SEND_TIMEOUT):
        self.router = router
        self.sms = sms
        self.total = total
        self.outstanding = outstanding
        self.timeout = timeout
        self.ok = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self._started = 0
        self._in_system = 0
        self._launching = False
        self._done = Deferred()

    def run(self) -> Deferred:
        """Start sending; fire with this driver once every send has finished."""
        self._launch()
        return self._done

    def _launch(self) -> None:
        # A send may fail at once (its callback runs inside router.send):
        # the guard keeps that from recursing into this loop.
        if self._launching:
            return
        self._launching = True
        try:
            while self._started < self.total and self._in_system < self.outstanding:
                self._started += 1
                self._in_system += 1
                self.router.send(self.sms, self.timeout).addCallbacks(
                    self._succeeded, self._failed)
        finally:
            self._launching = False

    def _succeeded(self, result: object) -> None:
        self.ok += 1
        self._finished()

    def _failed(self, failure) -> None:
        self.failed += 1
        self.errors[failure.type.__name__] += 1
        self._finished()

    def _finished(self) -> None:
        self._in_system -= 1
        if self.ok + self.failed == self.total:
            self._done.callback(self)
        else:
            self._launch()


@dataclass
class WindowResult:
    """What one window size measured; the rates count accepted submits only."""

    window: int
    messages: int
    accepted: int
    wall_seconds: float
    esme_cpu_seconds: float
    smsc_cpu_seconds: float
    errors: dict[str, int] = field(default_factory=dict)
    carrier_errors: dict[str, int] = field(default_factory=dict)
    requeued: int = 0
    profiled: bool = False

    @property
    def submits_per_second(self) -> float:
        return self.accepted / self.wall_seconds

    @property
    def esme_submits_per_cpu_second(self) -> float:
        return self.accepted / self.esme_cpu_seconds if self.esme_cpu_seconds else float("inf")

    def as_json(self) -> dict:
        return asdict(self) | {
            "submit_sm_per_second": round(self.submits_per_second),
            "esme_submit_sm_per_cpu_second": round(self.esme_submits_per_cpu_second),
            "failed_sends": sum(self.errors.values()),
        }


def drive(router, count: int, outstanding: int) -> Deferred:
    """Send C{count} messages through C{router}; fire with the finished L{Driver}."""
    sms = OutboundSMS(destination=DESTINATION, text=TEXT)
    return Driver(router, sms, count, outstanding).run()


@inlineCallbacks
def measure_window(reactor, port: int, smsc_pid: int, window: int, messages: int,
                   warmup: int, profiler: cProfile.Profile | None = None,
                   throughput: float = 0.0):
    """Bind, warm up, then time C{messages} sends at C{window}; fire with a L{WindowResult}."""
    service = CarriersService([carrier_config(port, window, throughput)], reactor,
                              send_timeout=SEND_TIMEOUT)
    service.startService()
    try:
        # SMPPBind.whenBound is gone (commit 0497254): poll the bind, with a deadline.
        yield wait_bound(reactor, service, timeout=BIND_DEADLINE)
        outstanding = 2 * window
        if warmup:
            yield drive(service.router, warmup, outstanding)
        carrier = service.carriers[0]
        errors_before, requeued_before = Counter(carrier.errors), carrier.requeued

        smsc_cpu, cpu, wall = process_cpu_seconds(smsc_pid), time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        driver = yield drive(service.router, messages, outstanding)
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        smsc_cpu = process_cpu_seconds(smsc_pid) - smsc_cpu

        return WindowResult(
            window=window, messages=messages, accepted=driver.ok, wall_seconds=wall, esme_cpu_seconds=cpu,
            smsc_cpu_seconds=smsc_cpu, errors=dict(driver.errors),
            carrier_errors=dict(Counter(carrier.errors) - errors_before),
            requeued=carrier.requeued - requeued_before, profiled=profiler is not None,
        )
    finally:
        yield service.stopService()


# -- reporting -----------------------------------------------------------------


def environment() -> dict:
    """Where the figures were measured, and on which code."""
    return machine() | {"code": describe_code(code_state())}


def format_table(results: list[WindowResult]) -> str:
    """The results as a plain-text table."""
    header = (f"{'window':>6}  {'messages':>8}  {'wall s':>7}  {'submit_sm/s':>11}  "
              f"{'ESME CPU s':>10}  {'ESME submit_sm/CPU-s':>20}  {'SMSC CPU s':>10}  "
              f"{'failed':>6}  {'requeued':>8}")
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.window:>6}  {r.messages:>8}  {r.wall_seconds:>7.2f}  "
            f"{r.submits_per_second:>11,.0f}  {r.esme_cpu_seconds:>10.2f}  "
            f"{r.esme_submits_per_cpu_second:>20,.0f}  {r.smsc_cpu_seconds:>10.2f}  "
            f"{sum(r.errors.values()):>6}  {r.requeued:>8}")
    return "\n".join(lines)


def verdict(results: list[WindowResult]) -> str | None:
    """Whether the window-100 figure meets the target, or C{None} without one."""
    for r in results:
        if r.window == 100 and not r.profiled:
            met = "MET" if r.esme_submits_per_cpu_second >= TARGET_PER_CPU_SECOND else "NOT MET"
            return (f"target >= {TARGET_PER_CPU_SECOND:,} ESME submit_sm per CPU-second at "
                    f"window 100: {r.esme_submits_per_cpu_second:,.0f} -> {met}")
    return None


def profile_report(profiler: cProfile.Profile, top: int = PROFILE_TOP) -> str:
    """The C{top} functions by own time, then msisdnd's by cumulative time.

    cProfile's clock is the wall clock: C{epoll.poll} is mostly time spent
    waiting for the SMSC, and C{socket.send} may include time the kernel
    spent elsewhere.  Own times of Python functions are CPU in practice.
    """
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    out.write("msisdnd's own functions by cumulative time:\n")
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(r"msisdnd/", top // 2)
    return out.getvalue()


# -- main ------------------------------------------------------------------------


def parse_windows(value: str) -> list[int]:
    """C{"1,10,100"} -> C{[1, 10, 100]}."""
    try:
        windows = [int(w) for w in value.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {value!r}")
    if not windows or any(not 1 <= w <= 1000 for w in windows):
        raise argparse.ArgumentTypeError("windows must be between 1 and 1000")
    return windows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="SMPP MT throughput of msisdnd's ESME against the fake SMSC "
                    "(in its own process).")
    parser.add_argument("--messages", type=int, default=50_000,
                        help="messages measured per window (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2_000,
                        help="messages sent before measuring, per window (default: %(default)s)")
    parser.add_argument("--windows", type=parse_windows, default=[1, 10, 100],
                        help="comma-separated window sizes (default: 1,10,100)")
    parser.add_argument("--throughput", type=float, default=0.0,
                        help="the carrier's throughput cap, submit_sm per second; 0 (the "
                             "default, as in the recorded runs) leaves the cap off, a value "
                             "far above the rate reached (100000) runs its sliding window "
                             "on every submit without ever holding one back")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--profile", action="store_true",
                        help=f"run only window {PROFILE_WINDOW}, under cProfile, and print "
                             f"the top {PROFILE_TOP} functions by own time")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.warmup < 0:
        parser.error("--messages must be positive and --warmup not negative")
    if args.throughput < 0:
        parser.error("--throughput must not be negative")
    if args.profile:
        args.windows = [PROFILE_WINDOW]
    return args


def run(args: argparse.Namespace) -> tuple[list[WindowResult], cProfile.Profile | None]:
    """Start the fake SMSC, measure every window, always kill the SMSC."""
    port = free_port()
    smsc = start_smsc(port)
    profiler = cProfile.Profile() if args.profile else None
    results: list[WindowResult] = []

    @inlineCallbacks
    def main(reactor):
        for window in args.windows:
            result = yield measure_window(reactor, port, smsc.pid, window, args.messages,
                                          args.warmup, profiler, args.throughput)
            results.append(result)
            if not args.json:
                print(f"window {window}: {result.submits_per_second:,.0f} submit_sm/s, "
                      f"{result.esme_submits_per_cpu_second:,.0f} per ESME CPU-second",
                      file=sys.stderr, flush=True)

    try:
        task.react(lambda reactor: main(reactor), [])
    except SystemExit as e:
        if e.code:
            raise
    finally:
        stop_smsc(smsc)
    return results, profiler


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results, profiler = run(args)
    if len(results) != len(args.windows):
        print("interrupted before every window was measured", file=sys.stderr)
        return 2
    failed = sum(sum(r.errors.values()) for r in results)
    if args.json:
        document = {"environment": environment(),
                    "target_esme_submit_sm_per_cpu_second_at_window_100": TARGET_PER_CPU_SECOND,
                    "results": [r.as_json() for r in results]}
        print(json.dumps(document, indent=2))
    else:
        env = environment()
        print(f"{env['date']}  {env['nproc']} CPUs  {env['cpu_model']}  "
              f"Python {env['python']}  commit {env['git_commit']}")
        print(f"code: {env['code']}")
        print(format_table(results))
        for r in results:
            if r.errors or r.carrier_errors:
                print(f"window {r.window}: failed sends {r.errors}, "
                      f"carrier errors {r.carrier_errors}")
        line = verdict(results)
        if line:
            print(line)
        if profiler is not None:
            print("\n(figures above were measured under cProfile: not comparable)\n")
    if profiler is not None:
        print(profile_report(profiler), file=sys.stderr if args.json else sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
