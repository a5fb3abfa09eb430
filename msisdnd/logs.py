"""Log output as the configuration asks: human text or JSON lines, and a level.

C{twistd} sets up logging itself, after the plugin has built its service;
run it with C{--logger msisdnd.logs.observer} and the observer follows the
C{[log]} section that L{configure} recorded while the service was built.
Phone numbers reach the logs only masked (L{msisdnd.masking}), codes never.
"""

from __future__ import annotations

import sys
from typing import TextIO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

_chosen = {"format": "text", "level": "info"}


def configure(format: str, level: str) -> None:
    """Record the C{[log]} settings for L{observer}."""
    _chosen.update(format=format, level=level)


def observer(out: TextIO | None = None) -> ILogObserver:
    """The observer for C{twistd --logger}: the configured format, filtered by level."""
    out = out or sys.stdout
    base = jsonFileLogObserver(out) if _chosen["format"] == "json" else textFileLogObserver(out)
    level = LogLevel.levelWithName(_chosen["level"])
    return FilteringLogObserver(base, [LogLevelFilterPredicate(defaultLogLevel=level)])
