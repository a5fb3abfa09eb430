"""Scale-out: 1, 2, 3 ... daemons on one Redis, the same run, interleaved.

    .venv/bin/python bench/scaleout.py --daemons 1,2,3 --users-per-daemon 20 --rounds 3
    .venv/bin/python bench/scaleout.py --daemons 1,2,3 --rate-per-daemon 60 --rounds 3

For each daemon count N one cluster of C{bench/load.py} (its own
C{redis-server}, the fake SMSC, N C{twistd -n msisdnd} on that Redis) is
started once; every round then runs one level on each cluster, the counts
in alternating order (1 2 3, 3 2 1, ...), with N x C{--users-per-daemon}
users (user i on daemon i mod N) and, with C{--rate-per-daemon}, a cap of N
x that many flow starts per second.  The levels are load.py's own
(L{load.run_level}): the upstream device mix, a warm-up, then a measured
window in which the CPU of every process is read from C{/proc} and Redis's
C{INFO commandstats} is diffed.

Reported, per level and pooled over the rounds per daemon count:

- flows per daemon CPU-second (every daemon's utime + stime together) and
  its ratio to one daemon's (in the same round, and pooled);
- Redis's CPU (its utime + stime) and commands (Lua-internal calls
  included) per flow, and from them flows and commands per Redis
  CPU-second: the flows/s one Redis core can carry at the cost measured;
- daemons one Redis serves: one Redis core's flows/s over one daemon core's
  (one daemon's flows per CPU-second), i.e. daemon CPU per flow over Redis
  CPU per flow;
- what bounds the level: each daemon's CPU % of a core, and the machine's
  busy % of all its cores (the rest of the cluster and anything else).

C{--pin auto} (the default) puts daemon i on core i with C{sched_setaffinity}
(every thread) when the machine has more cores than the run's largest daemon
count (one left for Redis, the SMSC and the driver); otherwise no level is
pinned and the report says so.  C{--pin on} pins daemon i to core i mod nproc
whatever the count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402
from _common import react  # noqa: E402

#: Flows per daemon CPU-second with N daemons / with one, same run (issue 15).
TARGET = load.TARGET_SCALE_OUT


def parse_counts(value: str) -> list[int]:
    counts = load.parse_users(value)
    if len(set(counts)) != len(counts) or 1 not in counts:
        raise argparse.ArgumentTypeError(
            f"distinct daemon counts, one of them 1 (the reference): {value!r}")
    return sorted(counts)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Scale-out of msisdnd: flows per daemon "
                                "CPU-second with 1, 2, 3 ... daemons on one Redis, and Redis's "
                                "CPU and commands per flow, in one run.")
    p.add_argument("--daemons", type=parse_counts, default=[1, 2, 3],
                   help="daemon counts, comma-separated, 1 among them (default: 1,2,3)")
    p.add_argument("--users-per-daemon", type=int, default=20,
                   help="virtual users per daemon (default 20: one daemon's saturation point)")
    p.add_argument("--rate-per-daemon", type=float, default=None,
                   help="cap on flow starts per second per daemon (the same load per daemon "
                        "at every count); default: none, saturation")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=15, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=5, help="unmeasured seconds before each")
    p.add_argument("--drivers", type=int, default=1, help="driver processes (see load.py)")
    p.add_argument("--window", type=int, default=10, help="the carrier's SMPP window")
    p.add_argument("--pin", choices=("auto", "on", "off"), default="auto",
                   help="daemon i on core i: auto when the machine has more cores than "
                        "daemons, on whatever the count, off")
    p.add_argument("--source", default="worktree", metavar="REV",
                   help="the code the daemons run: the working tree or a git revision "
                        "(git archive), as load.py's --source")
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    args = p.parse_args(argv)
    if (args.users_per_daemon < 1 or args.rounds < 1 or args.drivers < 1
            or args.duration <= 0 or args.warmup < 0):
        p.error("--users-per-daemon, --rounds, --drivers and --duration must be positive")
    # What load.run_level reads.
    args.mix = "upstream"
    return args


def pin(cluster: load.Cluster, mode: str, most: int) -> list[int] | None:
    """Daemon i's threads on core i (mod the core count): the cores, or None.
    C{auto} pins only when the machine has more cores than C{most} daemons (the
    largest count of the run), so that every level is placed alike."""
    cores = os.cpu_count() or 1
    if mode == "off" or (mode == "auto" and cores <= most):
        return None
    placed = []
    for i, pid in enumerate(cluster.daemon_pids):
        core = i % cores
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), {core})
        placed.append(core)
    return placed


def start_cluster(n: int, args, source: Path | None, attempts: int = 3) -> load.Cluster:
    """A started cluster of C{n} daemons.  load.py picks free ports before the
    processes bind them, so on a shared machine another process can take one
    in between: such a start is stopped and made again, C{attempts} times."""
    for attempt in range(1, attempts + 1):
        cluster = load.Cluster(n, args.window, source=source, keep_logs=args.keep_logs)
        try:
            cluster.start()
            return cluster
        except SystemExit as e:
            cluster.stop()
            if attempt == attempts:
                raise
            print(f"-- {n} daemon(s) did not start ({str(e).splitlines()[0]}); again",
                  file=sys.stderr, flush=True)
    raise AssertionError("unreachable")


def level_figures(r: dict) -> dict:
    """One level's scale-out figures from load.run_level's result."""
    d = r["duration"]
    cpu = r["cpu_seconds"]
    flows = max(r["flows"], 1)
    redis_cpu = sum(cpu["redis"])
    commands = sum(r["redis_calls_per_flow"].values()) * r["flows"]
    every = sum(sum(v) for v in cpu.values()) + r["other_cpu"]
    return {
        "daemons": r["daemons"], "round": r["round"], "users": r["users"],
        "flows": r["flows"], "flows_per_s": r["flows_per_s"], "daemon_cpu": r["daemon_cpu"],
        "daemon_cpu_pct": [100 * x / d for x in cpu["daemon"]],
        "flows_per_daemon_cpu_s": r["flows_per_daemon_cpu_s"],
        "redis_cpu": redis_cpu, "redis_cpu_pct": 100 * redis_cpu / d,
        "redis_commands": commands,
        "redis_ms_per_flow": 1000 * redis_cpu / flows,
        "redis_commands_per_flow": commands / flows,
        "smsc_cpu_pct": 100 * sum(cpu["smsc"]) / d, "driver_cpu_pct": 100 * sum(cpu["driver"]) / d,
        "other_cpu_pct": 100 * r["other_cpu"] / d,
        "machine_busy_pct": 100 * every / (d * (os.cpu_count() or 1)),
        "errors": sum(r["errors"].values()),
    }


def redis_cost(rows: list[dict]) -> dict:
    """Redis's CPU and commands per flow over these levels, and what one Redis
    CPU-second carries at that cost."""
    flows = sum(r["flows"] for r in rows)
    redis_cpu = sum(r["redis_cpu"] for r in rows)
    commands = sum(r["redis_commands"] for r in rows)
    return {
        "redis_ms_per_flow": 1000 * redis_cpu / max(flows, 1),
        "redis_commands_per_flow": commands / max(flows, 1),
        "flows_per_redis_cpu_s": flows / redis_cpu if redis_cpu else float("inf"),
        "redis_commands_per_cpu_s": commands / redis_cpu if redis_cpu else float("inf"),
    }


def pooled(rows: list[dict]) -> dict:
    """Every round's flows over every round's CPU, for one daemon count."""
    flows = sum(r["flows"] for r in rows)
    daemon_cpu = sum(r["daemon_cpu"] for r in rows)
    return {
        "daemons": rows[0]["daemons"], "rounds": len(rows), "flows": flows,
        "flows_per_s": sum(r["flows_per_s"] for r in rows) / len(rows),
        "flows_per_daemon_cpu_s": flows / daemon_cpu if daemon_cpu else float("inf"),
        "daemon_cpu_ms_per_flow": 1000 * daemon_cpu / max(flows, 1),
        **redis_cost(rows),
        "daemon_cpu_pct": [sum(r["daemon_cpu_pct"][i] for r in rows) / len(rows)
                           for i in range(rows[0]["daemons"])],
        "redis_cpu_pct": sum(r["redis_cpu_pct"] for r in rows) / len(rows),
        "machine_busy_pct": sum(r["machine_busy_pct"] for r in rows) / len(rows),
        "other_cpu_pct": sum(r["other_cpu_pct"] for r in rows) / len(rows),
        "errors": sum(r["errors"] for r in rows),
    }


def compare(rows: list[dict]) -> list[dict]:
    """Per daemon count, pooled, with its ratio to one daemon (pooled, and per round)."""
    by_count: dict[int, list[dict]] = {}
    for r in rows:
        by_count.setdefault(r["daemons"], []).append(r)
    one = {r["round"]: r["flows_per_daemon_cpu_s"] for r in by_count[1]}
    reference = pooled(by_count[1])
    out = []
    for n in sorted(by_count):
        row = pooled(by_count[n])
        row["ratio"] = row["flows_per_daemon_cpu_s"] / reference["flows_per_daemon_cpu_s"]
        row["round_ratios"] = [r["flows_per_daemon_cpu_s"] / one[r["round"]]
                               for r in sorted(by_count[n], key=lambda r: r["round"])
                               if one.get(r["round"])]
        # One Redis core's flows/s over one daemon core's (one daemon's figure).
        row["daemons_per_redis_core"] = (row["flows_per_redis_cpu_s"]
                                         / reference["flows_per_daemon_cpu_s"])
        out.append(row)
    return out


LEVEL_HEADER = ("| daemons | round | users | flows | flows/s | daemon CPU % (each) | flows per "
                "daemon CPU-s | Redis CPU % | Redis CPU ms/flow | Redis cmds/flow | SMSC CPU % | "
                "driver CPU % | other CPU % | machine busy % | errors |\n"
                "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def format_level(r: dict) -> str:
    each = "+".join(f"{x:.0f}" for x in r["daemon_cpu_pct"])
    return (f"| {r['daemons']} | {r['round']} | {r['users']} | {r['flows']:,} | "
            f"{r['flows_per_s']:,.1f} | {each} | {r['flows_per_daemon_cpu_s']:,.0f} | "
            f"{r['redis_cpu_pct']:.0f} | {r['redis_ms_per_flow']:.3f} | "
            f"{r['redis_commands_per_flow']:.1f} | {r['smsc_cpu_pct']:.0f} | "
            f"{r['driver_cpu_pct']:.0f} | {r['other_cpu_pct']:.0f} | "
            f"{r['machine_busy_pct']:.0f} | {r['errors']} |")


SUMMARY_HEADER = ("| daemons | flows/s | flows per daemon CPU-s | ratio to one daemon (rounds) "
                  "| daemon CPU ms/flow | Redis CPU ms/flow | Redis cmds/flow | flows per Redis "
                  "CPU-s | Redis cmds per CPU-s | daemons per Redis core | daemon CPU % (each) | "
                  "machine busy % |\n"
                  "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|")


def format_summary(r: dict) -> str:
    rounds = ", ".join(f"{x:.2f}" for x in r["round_ratios"])
    each = "+".join(f"{x:.0f}" for x in r["daemon_cpu_pct"])
    return (f"| {r['daemons']} | {r['flows_per_s']:,.1f} | **{r['flows_per_daemon_cpu_s']:,.0f}** | "
            f"**{r['ratio']:.2f}** ({rounds}) | {r['daemon_cpu_ms_per_flow']:.2f} | "
            f"{r['redis_ms_per_flow']:.3f} | {r['redis_commands_per_flow']:.1f} | "
            f"{r['flows_per_redis_cpu_s']:,.0f} | {r['redis_commands_per_cpu_s']:,.0f} | "
            f"{r['daemons_per_redis_core']:.1f} | {each} | {r['machine_busy_pct']:.0f} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    load.hawk_selftest()
    source, env = load.announce(args.source)
    clusters: dict[int, load.Cluster] = {}
    levels: list[dict] = []
    rows: list[dict] = []
    placement: dict[int, list[int] | None] = {}

    async def body(_reactor) -> None:
        for n in args.daemons:
            clusters[n] = start_cluster(n, args, source)
            placement[n] = pin(clusters[n], args.pin, max(args.daemons))
            print(f"{n} daemon(s): " + (f"pinned to cores {placement[n]}" if placement[n]
                                        else "not pinned"), flush=True)
        print("\n" + LEVEL_HEADER, flush=True)
        for rnd in range(1, args.rounds + 1):
            for n in (args.daemons if rnd % 2 else args.daemons[::-1]):
                users = n * args.users_per_daemon
                rate = n * args.rate_per_daemon if args.rate_per_daemon else None
                label = f"{n} daemon(s), round {rnd}"
                print(f"-- {label}: {users} users", file=sys.stderr, flush=True)
                r = await load.run_level(clusters[n], users, args, rate=rate, label=label)
                r["round"] = rnd
                levels.append(r)
                rows.append(level_figures(r))
                print(format_level(rows[-1]), flush=True)

    try:
        react(body)
    finally:
        for cluster in clusters.values():
            cluster.stop()
    summary = compare(rows)
    print("\n### pooled over the rounds, ratio to one daemon in the same run\n")
    print(SUMMARY_HEADER)
    for r in summary:
        print(format_summary(r))
    print()
    for r in summary:
        if r["daemons"] == 1:
            continue
        met = r["ratio"] >= TARGET
        print(f"{r['daemons']} daemons: {r['flows_per_daemon_cpu_s']:,.0f} flows per daemon "
              f"CPU-s, {100 * r['ratio']:.0f}% of one daemon's (target >= "
              f"{100 * TARGET:.0f}%: {'MET' if met else 'NOT MET'})")
    redis = redis_cost(rows)
    print(f"Redis: {redis['redis_ms_per_flow']:.3f} ms of CPU and "
          f"{redis['redis_commands_per_flow']:.1f} commands per flow, "
          f"{redis['flows_per_redis_cpu_s']:,.0f} flows and "
          f"{redis['redis_commands_per_cpu_s']:,.0f} commands per Redis CPU-s (every level)")
    errors = sum(r["errors"] for r in rows)
    print(f"failed flows: {errors}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "pinned": {str(k): v for k, v in placement.items()},
                       "levels": rows, "summary": summary, "redis": redis,
                       "target": TARGET}, f, indent=1, default=str)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
