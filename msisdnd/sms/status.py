"""What the carrier side tells operators, as plain data.

The SMPP side fills these in (L{msisdnd.smpp.service.CarriersService.status});
the admin listener, the metrics and the status page read them, and know
nothing of SMPP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

#: Upper bounds (seconds) of the submit-latency histogram's buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class UnknownCarrier(KeyError):
    """No carrier of that name is configured here."""

    def __str__(self) -> str:
        return str(self.args[0])


def timestamp(seconds: float | None) -> str | None:
    """C{seconds} since the epoch as RFC 3339 (UTC), for the admin listener."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds") \
        .replace("+00:00", "Z")


@dataclass(frozen=True)
class CarrierReading:
    """What the metrics need of one carrier beyond its JSON snapshot."""

    name: str
    up: bool
    queue_depth: int
    outcomes: dict[str, int]
    latency_counts: tuple[int, ...]
    latency_sum: float
    mo: int
    receipts: int
    dropped: int
    last_submit_age: float | None
    suspended: bool = False
    waiting_permits: int = 0
    queue_size: int = 0


@dataclass(frozen=True)
class CarriersStatus:
    """Every carrier and bind at one moment: their JSON snapshots, the
    metrics' readings, the destinations no live carrier takes, and the
    failovers by (first choice, carrier taken)."""

    carriers: list[dict]
    binds: list[dict]
    readings: list[CarrierReading] = field(default_factory=list)
    unserved: list[str] = field(default_factory=list)
    failovers: dict[tuple[str, str], int] = field(default_factory=dict)
