"""Log output as the configuration asks: human text or JSON lines, a level,
written in batches off the hot path.

The plugin (L{msisdnd.tap}) hands twistd the observer itself (L{for_twistd}),
so C{[log] format} and C{level} hold however the daemon is started, to where
twistd would have written (standard output with C{--nodaemon}, else
C{--logfile} or C{twistd.log}).  C{twistd --logger msisdnd.logs.observer}
still works and gives the same observer on standard output.  Phone numbers
reach the logs only masked (L{msisdnd.masking}), codes never.

Lines are not written one by one: a L{BufferedObserver} holds them and writes
them out together, L{FLUSH_INTERVAL} seconds after the first one (or once
L{FLUSH_BYTES} are held), at once for a warning or worse, and before the
process exits (at the reactor's shutdown, in L{flush}, which the daemon calls
before it ends the process itself, and at interpreter exit).
"""

from __future__ import annotations

import atexit
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    PredicateResult,
    formatEvent,
    formatEventAsClassicLogText,
)
from zope.interface import implementer

_chosen = {"format": "text", "level": "info"}

#: Seconds an info line may wait before it is written.
FLUSH_INTERVAL = 0.1
#: Characters held before they are written whatever the time.
FLUSH_BYTES = 64 * 1024

#: Every buffered observer made, for L{flush}.
_observers: list["BufferedObserver"] = []
#: The level filters of the observers made, which L{set_level} changes.
_filters: list[LogLevelFilterPredicate] = []


def configure(format: str, level: str) -> None:
    """Record the C{[log]} settings for L{observer}."""
    _chosen.update(format=format, level=level)


def set_level(level: str) -> None:
    """Log at C{level} (a C{[log] level} name) from now on, at run time."""
    _chosen["level"] = level
    for predicate in _filters:
        predicate.clearLogLevels()
        predicate.defaultLogLevel = LogLevel.levelWithName(level)


#: What an event holds for the logging system itself, not as its own fields.
_BOOKKEEPING = {"format", "message", "isError", "system", "time", "why", "failure", "printed"}


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)[:500]


def json_line(event: dict) -> str:
    """One event as one JSON object on one line: C{time} (RFC 3339, UTC),
    C{level}, C{system}, C{message} (rendered), a failure's C{traceback},
    then the event's own fields, each made JSON-safe."""
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc)
        .isoformat(timespec="milliseconds"),
        "level": level.name if isinstance(level, type(LogLevel.info)) else "info",
        "system": event.get("log_system") or event.get("log_namespace") or "-",
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if not key.startswith("log_") and key not in _BOOKKEEPING and key not in record:
            record[key] = _json_safe(value)
    return json.dumps(record, ensure_ascii=False) + "\n"


#: Twisted's ClientService line for each failed connect, which names neither
#: the carrier nor the reason; the SMPP binds and the Redis watch say it
#: themselves (msisdnd.smpp.bind, msisdnd.state.connection).
_ANONYMOUS_RETRY = "Scheduling retry {attempt} to connect {endpoint} in {delay} seconds."


#: txredisapi's line for each failed master lookup through the sentinels,
#: once a second while none names a master; the Redis watch says it once.
_SENTINEL_LOOKUP = "txredisapi: Can't get address from Sentinel"


def without_anonymous_retries(event: dict) -> PredicateResult:
    """Drop ClientService's anonymous retry lines (the SMPP binds' and the Redis
    pool's) and txredisapi's line per failed master lookup."""
    if event.get("log_format") == _ANONYMOUS_RETRY:
        return PredicateResult.no
    text = event.get("log_text")
    if isinstance(text, str) and text.startswith(_SENTINEL_LOOKUP):
        return PredicateResult.no
    return PredicateResult.maybe


@implementer(ILogObserver)
class BufferedObserver:
    """Formats each event as it comes and writes the lines out in batches.

    An info or debug line is held until C{interval} seconds after the first
    line held (one write for all of them), or until C{limit} characters are
    held; a warning, an error or a critical line is written at once with
    everything held before it.  After L{stop} (the reactor's shutdown) every
    line is written as it comes.

    @param out: where the lines go; written, then flushed, once per batch.
    @param format: an event to its text, or C{None} to write nothing.
    @param clock: an C{IReactorTime} for the wait.
    """

    def __init__(self, out: TextIO, format: Callable[[dict], str | None], clock: Any,
                 interval: float = FLUSH_INTERVAL, limit: int = FLUSH_BYTES):
        self.out = out
        self.format = format
        self.clock = clock
        self.interval = interval
        self.limit = limit
        self._held: list[str] = []
        self._size = 0
        self._call: Any = None
        self._direct = False

    def __call__(self, event: dict) -> None:
        text = self.format(event)
        if not text:
            return
        self._held.append(text)
        self._size += len(text)
        if (self._direct or self._size >= self.limit
                or event.get("log_level", LogLevel.info) >= LogLevel.warn):
            self.flush()
        elif self._call is None:
            self._call = self.clock.callLater(self.interval, self._due)

    def _due(self) -> None:
        self._call = None
        self.flush()

    def flush(self) -> None:
        """Write out every line held, now."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        if not self._held:
            return
        text, self._held, self._size = "".join(self._held), [], 0
        self.out.write(text)
        self.out.flush()

    def stop(self) -> None:
        """Write out what is held, and from now on every line as it comes."""
        self._direct = True
        self.flush()


def flush() -> None:
    """Write out every observer's held lines (before the process ends itself)."""
    for buffered in _observers:
        try:
            buffered.flush()
        except (OSError, ValueError):
            pass


atexit.register(flush)


def _buffered(out: TextIO, reactor: Any = None) -> BufferedObserver:
    if reactor is None:
        from twisted.internet import reactor
    # Text as twistd writes it: RFC 3339 time, [system], the message.
    format = json_line if _chosen["format"] == "json" else formatEventAsClassicLogText
    buffered = BufferedObserver(out, format, reactor)
    _observers.append(buffered)
    reactor.addSystemEventTrigger("after", "shutdown", buffered.stop)
    return buffered


def observer(out: TextIO | None = None, reactor: Any = None) -> ILogObserver:
    """The configured format, filtered by level (L{set_level} changes it),
    without ClientService's anonymous retry lines, buffered; for C{twistd
    --logger} (on standard output) and L{for_twistd}."""
    base = _buffered(out or sys.stdout, reactor)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(_chosen["level"]))
    _filters.append(predicate)
    return FilteringLogObserver(base, [without_anonymous_retries, predicate])


def for_twistd(twistd_options: Any, reactor: Any = None) -> ILogObserver | None:
    """The observer for the application twistd runs, writing where twistd
    would write its own; C{None} when twistd is told to log elsewhere
    (C{--logger} names an observer, or C{--syslog}).

    @param twistd_options: twistd's own options (the plugin options' C{parent}),
        or C{None} when run without twistd.
    """
    if twistd_options is None:
        return observer(sys.stdout, reactor)
    if twistd_options.get("logger") or twistd_options.get("syslog"):
        return None
    path = twistd_options.get("logfile") or ""
    if path == "-" and not twistd_options.get("nodaemon"):
        return None     # twistd refuses it: "Daemons cannot log to stdout"
    if path == "-" or (not path and twistd_options.get("nodaemon")):
        return observer(sys.stdout, reactor)
    from twisted.python.logfile import LogFile

    return observer(LogFile.fromFullPath(path or "twistd.log"), reactor)


class WarningBudget:
    """At most C{limit} warnings a C{period}; then one line saying how many were held back.

    A broken or hostile peer can send a bad PDU per packet, and a Redis
    failover fails every request for a few seconds; one log line each would
    flood the log.  The first C{limit} of a period are logged in full; the
    next warning after the period says how many were not.
    """

    def __init__(self, log: Logger, limit: int = 10, period: float = 60.0,
                 now: Any = time.monotonic):
        self.log = log
        self.limit = limit
        self.period = period
        self.now = now
        self._started = 0.0
        self._logged = 0
        self.suppressed = 0

    def warn(self, format: str, **kwargs: Any) -> None:
        now = self.now()
        if now - self._started >= self.period:
            if self.suppressed:
                self.log.warn("{count} more warnings like these were not logged in the last "
                              "{period:.0f}s", count=self.suppressed, period=self.period)
            self._started, self._logged, self.suppressed = now, 0, 0
        if self._logged < self.limit:
            self._logged += 1
            self.log.warn(format, **kwargs)
        else:
            self.suppressed += 1
