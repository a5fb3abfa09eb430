"""What every benchmark reports about where it ran."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU model /proc/cpuinfo names, or C{"unknown"}."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def run(*command: str) -> str:
    """A command's output in the repository (C{"unknown"} when it fails)."""
    try:
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    """Date, core count, CPU, Python, commit and the command line, for RESULTS.md."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "git_commit": run("git", "rev-parse", "--short", "HEAD"),
        "command": " ".join(["python"] + sys.argv),
    }


def redis_answers(port: int) -> bool:
    """A redis-server on loopback C{port} answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def http_ok(url: str) -> bool:
    """C{url} answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str) -> float:
    """utime + stime of C{pid} (its threads included), from C{/proc/<pid>/stat}."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def cpu_wait_seconds(pid: int | str) -> float:
    """How long C{pid}'s main thread (a Twisted process's reactor) has been
    runnable but waiting for a CPU, from C{/proc/<pid>/schedstat}."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all CPUs), from C{/proc/stat}."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS


def react(main) -> None:
    """Run C{main(reactor)} (a coroutine function, or one returning a
    Deferred) under C{task.react}, returning when it succeeded; a failure
    still ends the process with C{task.react}'s status 1."""
    from twisted.internet import defer, task

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)), [])
    except SystemExit as e:
        if e.code not in (0, None):
            raise
