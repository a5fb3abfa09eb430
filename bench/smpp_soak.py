"""SMPP soak: N MT through two binds of one carrier while the SMSC cuts the link, under faults.

    .venv/bin/python bench/smpp_soak.py [--messages 10000] [--cuts 10] [--scenarios throttle,nul]
                                        [--binds 2] [--window 10] [--throughput 500]
                                        [--fail-every 50] [--json FILE]

For each scenario, in this process: a fake SMSC (L{FakeSMSC}, receipts off,
keeping every message) listens on loopback, and msisdnd's carrier side
(L{CarriersService}: one carrier, C{--binds} transceiver binds, the
daemon's default C{send_timeout} of 10 s) sends N distinct messages
through C{router.send}, at most C{--outstanding} at once.  Each time the
messages accepted pass another 1/(cuts+1) of N, and every bind is up, the
SMSC aborts every connection (a cut link: what was in flight either way
is lost), C{--cuts} times in all.  The binds' reconnect timers are short
(C{--reconnect-*}, C{--enquire-link-interval}) so that ten cuts in a short
run are not taken for a flapping bind (see bench/README.md).

Scenarios (the SMSC's fault knobs):
  - C{throttle}: every C{--fail-every}th C{submit_sm} is answered
    ESME_RTHROTTLED (C{fail_every} / C{fail_status});
  - C{nul}: every C{submit_sm_resp} carries its message_id without the
    terminating NUL (C{id_without_nul});
  - C{plain}: the cuts alone.

The SMSC answers each C{submit_sm} C{--response-delay} seconds after it
stored the message (20 ms by default, a real SMSC's answer time; it is what
keeps submits in flight).  A cut comes a random 0-1 s after its share of
messages was accepted (C{--cut-phase random}, seeded; at most half the
share's time at the cap), so it finds the link in any phase of the
throughput cap's bursts; C{--cut-phase burst} cuts at once, windows full.

It counts, per scenario:
  - delivered: distinct (destination, text) among the messages the SMSC
    stored (every message sent has its own);
  - lost: sends whose Deferred failed, never fired (within the deadline), or
    succeeded for a message the SMSC never stored.  Must be 0;
  - duplicated: stored messages beyond the first of their (destination,
    text): the at-least-once resubmits after a cut.  Target: <= 0.1%;
  - in doubt: the submits in flight when a link was cut, summed over the
    cuts.  Each may or may not have been stored; the carrier resubmits them
    (a PIN twice rather than never), so duplicates are bounded by them, and
    a duplicate beyond them is a bug;
  - submits per message: C{submit_sm} the SMSC received / N (throttled ones
    included);
  - id mismatches: succeeded sends whose message id is none of the ids the
    SMSC gave that message (with C{nul}, whether the id kept its last octet).

The exit status is 1 if any message was lost or duplicated beyond those in
doubt, 2 if a scenario could not run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import _smpp  # noqa: E402

_smpp.use_source(None)

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import Deferred, inlineCallbacks  # noqa: E402

from _common import machine  # noqa: E402
from msisdnd.fakesmsc.smsc import FakeSMSC  # noqa: E402
from msisdnd.smpp import codec  # noqa: E402
from msisdnd.smpp.config import CarrierConfig  # noqa: E402
from msisdnd.smpp.service import CarriersService  # noqa: E402
from msisdnd.sms.interfaces import OutboundSMS  # noqa: E402

SCENARIOS = ("plain", "throttle", "nul")
DUPLICATE_TARGET = 0.001
SEND_TIMEOUT = 10.0  # the daemon's default [verification] send_timeout


class Soak:
    """One scenario: the SMSC, the carrier service, the driver and the cutter."""

    def __init__(self, reactor, scenario: str, args: argparse.Namespace):
        self.reactor = reactor
        self.scenario = scenario
        self.args = args
        self.smsc = FakeSMSC(reactor, receipt_delay=None, max_messages=10 * args.messages + 1000)
        if scenario == "throttle":
            self.smsc.faults.update(fail_every=args.fail_every, fail_status=codec.ESME_RTHROTTLED)
        elif scenario == "nul":
            self.smsc.faults.update(id_without_nul=True)
        self.port = None
        self.service: CarriersService | None = None
        self.started = 0
        self.ok = 0
        self.failed: Counter[str] = Counter()
        self.results: dict[int, tuple] = {}
        self.cuts: list[float] = []
        self.cut_in_flight: list[int] = []
        self._done = Deferred()
        self._launching = False
        self._random = random.Random(f"{args.seed}/{scenario}")
        self._cut_due: float | None = None
        # A cut's random delay: up to a second (the cap's period), and at most half
        # the time its share of messages takes at the cap, so every cut falls in the run.
        share = args.messages / (args.cuts + 1)
        self.cut_spread = min(1.0, 0.5 * share / args.throughput) if args.throughput else 0.01
        if args.response_delay:
            self.smsc.faults.update(response_delay=args.response_delay)

    def config(self) -> CarrierConfig:
        a = self.args
        return CarrierConfig.from_mapping({
            "name": "soak", "host": "127.0.0.1", "port": self.port.getHost().port,
            "bind": "transceiver", "binds": a.binds, "system_id": "soak", "password": "soak",
            "mt_sender": "msisdnd", "default": True, "window": a.window,
            "throughput": a.throughput, "throttle_pause": a.throttle_pause,
            "reconnect_delay_initial": a.reconnect_initial, "reconnect_delay_max": a.reconnect_max,
            "enquire_link_interval": a.enquire_link_interval,
        }, "soak carrier")

    @staticmethod
    def message(i: int) -> OutboundSMS:
        return OutboundSMS(destination=f"+336{i:08d}", text=f"Your code: {i:06d}")

    @inlineCallbacks
    def run(self):
        reactor = self.reactor
        self.port = reactor.listenTCP(0, self.smsc.buildFactory(), interface="127.0.0.1")
        self.service = CarriersService([self.config()], reactor, send_timeout=SEND_TIMEOUT)
        self.service.startService()
        cutter = task.LoopingCall(self._maybeCut)
        wall = time.perf_counter()
        try:
            yield _smpp.wait_bound(reactor, self.service, timeout=15)
            cutter.start(0.01, now=False)
            self._launch()
            deadline = reactor.callLater(self.args.deadline, self._giveUp)
            yield self._done
            if deadline.active():
                deadline.cancel()
        finally:
            wall = time.perf_counter() - wall
            if cutter.running:
                cutter.stop()
            yield self.service.stopService()
            yield self.port.stopListening()
        return self.report(wall)

    # -- the driver --------------------------------------------------------

    def _launch(self) -> None:
        if self._launching:
            return
        self._launching = True
        try:
            total = self.args.messages
            while self.started < total and self.started - self.resolved < self.args.outstanding:
                i = self.started
                self.started += 1
                self.service.router.send(self.message(i)).addCallbacks(
                    self._succeeded, self._failedSend, callbackArgs=(i,), errbackArgs=(i,))
        finally:
            self._launching = False

    @property
    def resolved(self) -> int:
        return len(self.results)

    def _succeeded(self, result, i: int) -> None:
        self.ok += 1
        self.results[i] = ("ok", result.message_ids)
        self._next()

    def _failedSend(self, failure, i: int) -> None:
        self.failed[failure.type.__name__] += 1
        self.results[i] = ("failed", failure.getErrorMessage())
        self._next()

    def _next(self) -> None:
        if self.resolved == self.args.messages:
            if not self._done.called:
                self._done.callback(None)
        else:
            self._launch()

    def _giveUp(self) -> None:
        if not self._done.called:
            self._done.callback(None)

    # -- the cutter --------------------------------------------------------

    def _maybeCut(self) -> None:
        a = self.args
        done = len(self.cuts)
        if done >= a.cuts:
            return
        if self.ok < (done + 1) * a.messages / (a.cuts + 1):
            return
        now = time.perf_counter()
        if self._cut_due is None:
            # Accepted counts move only while submits flow, so a cut at the
            # moment a threshold is passed would always find the windows full
            # (the throughput cap sends in bursts): a link fails at any moment.
            self._cut_due = now + (self._random.uniform(0.0, self.cut_spread)
                                   if a.cut_phase == "random" else 0.0)
        if now < self._cut_due:
            return
        if _smpp.bound_binds(self.service) < len(self.service.binds):
            return
        sessions = list(self.smsc.sessions)
        if not sessions:
            return
        self.cut_in_flight.append(sum(c.in_flight for c in self.service.carriers))
        self.cuts.append(now)
        self._cut_due = None
        for session in sessions:
            session.transport.abortConnection()

    # -- the figures -------------------------------------------------------

    def report(self, wall: float) -> dict:
        a = self.args
        stored = Counter((m.destination, m.text) for m in self.smsc.messages)
        ids: dict[tuple, set] = {}
        for m in self.smsc.messages:
            ids.setdefault((m.destination, m.text), set()).update(m.message_ids)
        lost_failed = sum(1 for r in self.results.values() if r[0] == "failed")
        unresolved = a.messages - self.resolved
        missing = mismatched = 0
        for i, (outcome, detail) in self.results.items():
            if outcome != "ok":
                continue
            sms = self.message(i)
            key = (sms.destination.lstrip("+"), sms.text)
            if key not in stored:
                missing += 1
            elif not set(detail) <= ids[key]:
                mismatched += 1
        duplicates = sum(n - 1 for n in stored.values())
        carrier = self.service.carriers[0]
        return {
            "scenario": self.scenario,
            "messages": a.messages,
            "delivered": len(stored),
            "lost": lost_failed + unresolved + missing,
            "lost_failed": lost_failed,
            "lost_unresolved": unresolved,
            "lost_missing_at_smsc": missing,
            "failures": dict(self.failed),
            "duplicated": duplicates,
            "duplicated_share": duplicates / a.messages,
            "smsc_submits": self.smsc.submit_count,
            "submits_per_message": self.smsc.submit_count / a.messages,
            "esme_resubmitted": carrier.resubmitted,
            "esme_requeued": carrier.requeued,
            "throttled_pauses": carrier.throttled,
            "carrier_errors": dict(carrier.errors),
            "cuts": len(self.cuts),
            "in_flight_at_cuts": self.cut_in_flight,
            "in_doubt": sum(self.cut_in_flight),
            "duplicated_beyond_in_doubt": max(0, duplicates - sum(self.cut_in_flight)),
            "reconnects": sum(b.reconnects for b in self.service.binds),
            "smsc_binds": self.smsc.bind_count,
            "id_mismatches": mismatched,
            "wall_seconds": wall,
        }


def format_table(rows: list[dict]) -> str:
    lines = ["| scenario | messages | delivered | lost | duplicated | submits per message "
             "| SMSC submit_sm | resubmits (ESME) | throttle pauses | cuts | reconnects "
             "| id mismatches | log failures | wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['messages']:,} | {r['delivered']:,} | {r['lost']} | "
            f"{r['duplicated']} ({100 * r['duplicated_share']:.2f}%) | "
            f"{r['submits_per_message']:.4f} | {r['smsc_submits']:,} | {r['esme_resubmitted']} | "
            f"{r['throttled_pauses']} | {r['cuts']} | {r['reconnects']} | {r['id_mismatches']} | "
            f"{r['log_failures']} | {r['wall_seconds']:.1f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=10_000, help="MT per scenario (%(default)s)")
    p.add_argument("--cuts", type=int, default=10, help="link cuts per scenario (%(default)s)")
    p.add_argument("--scenarios", default="throttle,nul",
                   type=lambda v: [s for s in v.split(",") if s],
                   help=f"comma-separated, of {', '.join(SCENARIOS)} (default: throttle,nul)")
    p.add_argument("--binds", type=int, default=2, help="binds of the carrier (%(default)s)")
    p.add_argument("--window", type=int, default=10, help="window per bind (%(default)s)")
    p.add_argument("--throughput", type=float, default=500.0,
                   help="the carrier's throughput cap, submit_sm/s (%(default)g; 0: none)")
    p.add_argument("--outstanding", type=int, default=200,
                   help="sends in flight at most (%(default)s)")
    p.add_argument("--fail-every", type=int, default=50,
                   help="throttle: every Nth submit_sm gets ESME_RTHROTTLED (%(default)s)")
    p.add_argument("--throttle-pause", type=float, default=0.1,
                   help="the carrier's throttle_pause, s (%(default)g)")
    p.add_argument("--reconnect-initial", type=float, default=0.2,
                   help="reconnect_delay_initial, s (%(default)g)")
    p.add_argument("--reconnect-max", type=float, default=2.0,
                   help="reconnect_delay_max, s (%(default)g)")
    p.add_argument("--enquire-link-interval", type=float, default=1.0,
                   help="enquire_link_interval, s: a bind up this long with answers is no "
                        "flap, so its reconnect delay starts afresh (%(default)g)")
    p.add_argument("--response-delay", type=float, default=0.02,
                   help="seconds the SMSC takes to answer a submit_sm it stored (%(default)g)")
    p.add_argument("--cut-phase", choices=("random", "burst"), default="random",
                   help="when a cut comes once its share of messages is accepted: after a "
                        "random 0-1 s (default; a link fails at any moment), or at once "
                        "(burst: the windows are then full, the worst case for duplicates)")
    p.add_argument("--seed", type=int, default=1, help="seeds the cuts' delays (%(default)s)")
    p.add_argument("--deadline", type=float, default=600.0,
                   help="seconds a scenario may take; sends unresolved then are lost "
                        "(%(default)g)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown or not args.scenarios:
        p.error(f"--scenarios: unknown {unknown}; choose from {', '.join(SCENARIOS)}")
    if args.messages < 1 or args.cuts < 0 or args.binds < 1 or args.outstanding < 1:
        p.error("--messages, --binds and --outstanding must be positive, --cuts not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = _smpp.code_state()
    env = machine()
    print("command: " + " ".join([".venv/bin/python", "bench/smpp_soak.py"] + sys.argv[1:]))
    print("commit: " + _smpp.describe_code(state))
    print(f"machine: {env['date']}, {env['nproc']} CPUs, {env['cpu_model']}, "
          f"Python {env['python']}")
    print(f"settings: {args.messages:,} MT per scenario, {args.binds} transceiver binds, window "
          f"{args.window}, throughput {args.throughput:g}/s, {args.cuts} cuts (every bind's "
          f"connection aborted by the SMSC), send_timeout {SEND_TIMEOUT:g}s, at most "
          f"{args.outstanding} sends in flight; throttle: fail_every {args.fail_every}, "
          f"throttle_pause {args.throttle_pause:g}s; reconnect {args.reconnect_initial:g}-"
          f"{args.reconnect_max:g}s, enquire_link_interval {args.enquire_link_interval:g}s; "
          f"cut phase {args.cut_phase}, seed {args.seed}; SMSC response delay "
          f"{args.response_delay:g}s",
          flush=True)
    _smpp.quiet_twisted_log()
    rows: list[dict] = []

    @inlineCallbacks
    def run_all(reactor):
        for scenario in args.scenarios:
            with _smpp.FailureWatch() as watch:
                row = yield Soak(reactor, scenario, args).run()
            row["log_failures"] = watch.failures + watch.criticals
            row["log_examples"] = watch.examples
            row["log_warnings"] = watch.warnings
            rows.append(row)
            print(f"{scenario}: delivered {row['delivered']:,}, lost {row['lost']}, duplicated "
                  f"{row['duplicated']}, {row['wall_seconds']:.1f}s", file=sys.stderr, flush=True)

    try:
        task.react(lambda reactor: run_all(reactor), [])
    except SystemExit as e:
        if e.code:
            print("a scenario could not run (see above)", file=sys.stderr)
            return 2
    print()
    print(format_table(rows))
    print()
    for r in rows:
        verdict = "MET" if r["duplicated_share"] <= DUPLICATE_TARGET else "NOT MET"
        print(f"{r['scenario']}: lost {r['lost']} (failed {r['lost_failed']} {r['failures']}, "
              f"never resolved {r['lost_unresolved']}, succeeded but not at the SMSC "
              f"{r['lost_missing_at_smsc']}); duplicated {r['duplicated']} "
              f"({100 * r['duplicated_share']:.2f}%, target <= {100 * DUPLICATE_TARGET:.1f}%: "
              f"{verdict}); in flight at each cut {r['in_flight_at_cuts']} "
              f"(in doubt: {r['in_doubt']}; duplicates beyond them: "
              f"{r['duplicated_beyond_in_doubt']}, must be 0); "
              f"carrier errors {r['carrier_errors']}")
        for example in r["log_examples"]:
            print(f"  log failure: {example}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "environment": env | {"code": state}, "settings": vars(args), "scenarios": rows,
        }, indent=2, default=str))
    return 1 if any(r["lost"] or r["duplicated_beyond_in_doubt"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
