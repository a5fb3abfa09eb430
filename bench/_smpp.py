"""What the SMPP benchmarks share: the fake SMSC's process, CPU time, binds, the code under test.

Used by C{smpp_throughput.py}, C{smpp_bare.py}, C{smpp_soak.py} and
C{smpp_fuzz.py} (bench/ is not a package: each script has bench/ first on
C{sys.path}, so C{import _smpp} finds this file).

Nothing here imports msisdnd at module level, so that a script can put
another copy of msisdnd (C{--source REV}, see L{export_source}) on
C{sys.path} before it imports msisdnd itself.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SMSC_SCRIPT = BENCH / "_smsc_process.py"

# -- processes -------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_listener(process: subprocess.Popen, port: int, deadline: float = 15.0) -> None:
    """Poll until C{127.0.0.1:port} accepts a connection, or fail at C{deadline} seconds."""
    give_up = time.monotonic() + deadline
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the fake SMSC exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > give_up:
                raise RuntimeError(f"the fake SMSC did not listen on port {port} "
                                   f"within {deadline:g}s") from None
            time.sleep(0.05)


def pythonpath(*first: str | Path | None) -> str:
    """C{PYTHONPATH} with C{first} (the code under test) before what this process was given."""
    return os.pathsep.join(str(p) for p in (*first, os.environ.get("PYTHONPATH")) if p)


def start_smsc(port: int, source: Path | None = None) -> subprocess.Popen:
    """Start the fake SMSC (C{bench/_smsc_process.py}) on C{port}; wait until it listens.

    @param source: a tree exported by L{export_source} whose msisdnd the SMSC
        runs, or C{None} for the working tree.
    """
    env = dict(os.environ, PYTHONPATH=pythonpath(source or REPO))
    if source is not None:
        env["MSISDND_BENCH_SOURCE"] = str(source)
    process = subprocess.Popen([sys.executable, str(SMSC_SCRIPT), str(port)],
                               cwd=REPO, env=env, stdin=subprocess.DEVNULL)
    try:
        wait_for_listener(process, port)
    except BaseException:
        stop_smsc(process)
        raise
    return process


def stop_smsc(process: subprocess.Popen) -> None:
    """Kill the fake SMSC process and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process C{pid}, from C{/proc/<pid>/stat} (10 ms ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; the fields after it don't.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds every core spent busy since boot (C{/proc/stat}: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / _CLOCK_TICKS


# -- the code under test ---------------------------------------------------------


def run_git(*args: str, strip: bool = True) -> str:
    """A read-only git command's output in the repository, or C{"unknown"}."""
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
        return out.strip() if strip else out
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def export_source(rev: str) -> tuple[Path, str]:
    """C{git archive} of C{msisdnd/} and C{twisted/} at C{rev} into a temporary directory.

    A process with that directory first on C{sys.path} runs that commit's
    msisdnd, whatever the working tree holds meanwhile (others edit it).
    Returns the directory and the short commit.  Read-only for the repository.
    """
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.strip()
    out = Path(tempfile.mkdtemp(prefix=f"msisdnd-src-{commit}-"))
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "msisdnd", "twisted"],
                             cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out, commit


def use_source(directory: str | Path | None) -> None:
    """Put the msisdnd in C{directory} (else the repository's) first on C{sys.path}.

    Call before anything imports msisdnd.
    """
    where = str(directory or REPO)
    if where in sys.path:
        sys.path.remove(where)
    sys.path.insert(0, where)


def code_state() -> dict:
    """The commit checked out, and msisdnd/ files that differ from it (others' edits)."""
    changed = run_git("status", "--porcelain", "--untracked-files=all", "msisdnd", strip=False)
    return {
        "commit": run_git("rev-parse", "--short", "HEAD"),
        "msisdnd_changed": [line[3:] for line in changed.splitlines() if line.strip()]
        if changed != "unknown" else ["unknown"],
    }


def describe_code(state: dict, source: str = "working tree") -> str:
    """One line: the commit, and whether msisdnd/ had uncommitted changes."""
    changed = state["msisdnd_changed"]
    if source != "working tree":
        return f"{source} (HEAD is {state['commit']})"
    if not changed:
        return f"{state['commit']} (working tree; msisdnd/ clean)"
    return (f"{state['commit']} (working tree; msisdnd/ had uncommitted changes: "
            f"{', '.join(changed)})")


# -- waiting on the reactor ------------------------------------------------------


def wait_until(reactor, predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.01):
    """A Deferred that fires once C{predicate()} holds (polled every C{interval} s),
    or fails with C{TimeoutError(what)} after C{timeout} seconds."""
    from twisted.internet.defer import Deferred

    d = Deferred()
    give_up = time.monotonic() + timeout

    def poll() -> None:
        try:
            done = predicate()
        except Exception as e:  # a predicate that breaks fails the wait, loudly
            d.errback(e)
            return
        if done:
            d.callback(None)
        elif time.monotonic() > give_up:
            d.errback(TimeoutError(f"{what}: not within {timeout:g}s"))
        else:
            reactor.callLater(interval, poll)

    poll()
    return d


def bound_binds(service) -> int:
    """How many of a L{CarriersService}'s binds hold a bound session.

    C{SMPPBind.session} is set once the SMSC accepted the bind (and
    cleared when it is lost), before the carrier hears of it.
    """
    return sum(1 for bind in service.binds if getattr(bind, "session", None) is not None)


def wait_bound(reactor, service, count: int | None = None, timeout: float = 15.0):
    """Fire once C{count} binds (all when C{None}) are bound and every carrier takes sends.

    Polls: C{SMPPBind.whenBound} is gone (commit 0497254), and the carriers'
    listener interface is the product's to change.
    """
    want = len(service.binds) if count is None else count

    def ready() -> bool:
        return bound_binds(service) >= want and all(c.available for c in service.carriers)

    return wait_until(reactor, ready, timeout, f"{want} bind(s) of the carrier service bound")


# -- the log ---------------------------------------------------------------------


class FailureWatch:
    """Counts what the Twisted log says went wrong while it watches.

    C{failures}: events carrying a C{log_failure} (an exception logged with
    C{log.failure}, an unhandled error in a Deferred); C{criticals}: events
    at level critical.  The first few of each are kept, formatted.
    """

    def __init__(self, keep: int = 5):
        self.keep = keep
        self.failures = 0
        self.criticals = 0
        self.warnings = 0
        self.examples: list[str] = []

    def __call__(self, event: dict) -> None:
        from twisted.logger import LogLevel, formatEvent

        level = event.get("log_level")
        if "log_failure" in event:
            self.failures += 1
            if len(self.examples) < self.keep:
                failure = event["log_failure"]
                self.examples.append(f"{formatEvent(event)}: {failure.getTraceback()}")
        elif level == LogLevel.critical:
            self.criticals += 1
            if len(self.examples) < self.keep:
                self.examples.append(formatEvent(event))
        elif level == LogLevel.warn:
            self.warnings += 1

    def __enter__(self) -> "FailureWatch":
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc) -> None:
        from twisted.logger import globalLogPublisher

        globalLogPublisher.removeObserver(self)


def quiet_twisted_log() -> None:
    """Start Twisted's global log with no output: events reach the observers
    added with C{globalLogPublisher.addObserver} and go nowhere else (no
    unbounded buffer of early events, no printing)."""
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False,
                                     discardBuffer=True)


# -- figures -----------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
