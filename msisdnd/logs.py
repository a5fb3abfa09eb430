"""Log output as the configuration asks: human text or JSON lines, and a level.

C{twistd} sets up logging itself, after the plugin has built its service;
run it with C{--logger msisdnd.logs.observer} and the observer follows the
C{[log]} section that L{configure} recorded while the service was built.
Phone numbers reach the logs only masked (L{msisdnd.masking}), codes never.
"""

from __future__ import annotations

import sys
from typing import TextIO

import json
from datetime import datetime, timezone
from typing import Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    textFileLogObserver,
)

_chosen = {"format": "text", "level": "info"}


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


def without_anonymous_retries(event: dict) -> PredicateResult:
    """Drop ClientService's anonymous retry lines (the SMPP binds' and the Redis pool's)."""
    if event.get("log_format") == _ANONYMOUS_RETRY:
        return PredicateResult.no
    return PredicateResult.maybe


def observer(out: TextIO | None = None) -> ILogObserver:
    """The observer for C{twistd --logger}: the configured format, filtered by
    level, without ClientService's anonymous retry lines."""
    out = out or sys.stdout
    base = (FileLogObserver(out, json_line) if _chosen["format"] == "json"
            else textFileLogObserver(out))
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(_chosen["level"]))
    _filters.append(predicate)
    return FilteringLogObserver(base, [without_anonymous_retries, predicate])
