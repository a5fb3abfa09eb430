"""One reading of the running daemon, shared by C{/metrics}, C{/binds} and the status page.

L{StatusBoard.take} reads every part once into a L{Snapshot}: plain data,
copied, so that one answer of the admin listener never mixes two moments.
The board also keeps a short history of its counters (one reading every
L{SAMPLE_EVERY} seconds, for an hour) so the status page can say what
happened in the last minute and the last hour, not only since the start.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime

from msisdnd.sms.status import CarrierReading, CarriersStatus

#: Seconds between two readings kept in the history.
SAMPLE_EVERY = 10.0
#: The longest window the history answers for.
HISTORY = 3600.0


@dataclass(frozen=True)
class Snapshot:
    """The daemon at one moment (C{taken}, the clock's seconds)."""

    taken: float
    started: float
    version: str
    environment: str
    redis: dict[str, Any]
    redis_errors: int
    carriers: list[dict]
    binds: list[dict]
    readings: list[CarrierReading]
    unserved: list[str]
    failovers: dict[tuple[str, str], int]
    verifications: dict[tuple[str, str], int]
    mo_verifications: dict[str, int]
    mcc_mismatches: int
    receipt_states: dict[str, int]
    refusals: dict[str, int] | None = None
    blocks: dict[str, int] | None = None
    unblocks: int = 0
    webhooks: list[dict] = field(default_factory=list)

    def binds_json(self) -> dict:
        """The admin listener's C{/binds}: every carrier and every bind."""
        return {"carriers": self.carriers, "binds": self.binds}

    def counters(self) -> dict[tuple[str, ...], int]:
        """The counters the history keeps: submit outcomes by carrier and
        status, verification outcomes by method."""
        found: dict[tuple[str, ...], int] = {}
        for reading in self.readings:
            for status, count in reading.outcomes.items():
                found["submit", reading.name, status] = count
        for (method, outcome), count in self.verifications.items():
            found["verification", method, outcome] = count
        return found


class StatusBoard:
    """Takes L{Snapshot}s of the daemon's parts and remembers their counters.

    @param carriers: the carrier side (its C{status()}, a
        L{msisdnd.sms.status.CarriersStatus}).
    @param redis_watch: a L{msisdnd.state.connection.RedisWatch} (its
        C{state}, C{since} and C{address}), or C{None}.
    @param limits: the L{msisdnd.state.limits.Limits} (its C{counters}), or C{None}.
    @param webhooks: the deliveries (their C{group} and C{counters}), a live
        sequence.
    """

    def __init__(self, clock: IReactorTime, carriers: Any, verifier: Any,
                 store: Any, *, redis_watch: Any = None, limits: Any = None,
                 webhooks: Iterable = (), version: str = "", environment: str = ""):
        self.clock = clock
        self.carriers = carriers
        self.verifier = verifier
        self.store = store
        self.redis_watch = redis_watch
        self.limits = limits
        self.webhooks = webhooks  # read at each snapshot: a reload may change them
        self.version = version
        self.environment = environment
        self.started = clock.seconds()
        self._history: deque[tuple[float, dict]] = deque()

    def take(self) -> Snapshot:
        """Read every part once; remember the counters (at most every L{SAMPLE_EVERY} s)."""
        now = self.clock.seconds()
        verifier = self.verifier
        carriers: CarriersStatus = self.carriers.status()
        watch = self.redis_watch
        redis = ({"state": watch.state.value, "since": watch.since, "address": watch.address}
                 if watch is not None else {"state": "unknown", "since": None, "address": ""})
        counters = self.limits.counters if self.limits is not None else None
        snapshot = Snapshot(
            taken=now, started=self.started, version=self.version,
            environment=self.environment, redis=redis, redis_errors=self.store.errors,
            carriers=carriers.carriers, binds=carriers.binds, readings=carriers.readings,
            unserved=carriers.unserved, failovers=carriers.failovers,
            verifications=dict(verifier.outcomes),
            mo_verifications={"handled": verifier.mo_handled, "dropped": verifier.mo_dropped},
            mcc_mismatches=verifier.mcc_mismatches,
            receipt_states=dict(verifier.receipt_states),
            refusals=dict(counters.refused) if counters is not None else None,
            blocks=dict(counters.blocks) if counters is not None else None,
            unblocks=counters.unblocks if counters is not None else 0,
            webhooks=[{"name": d.group, "outcomes": dict(d.counters.outcomes),
                       "latency_counts": tuple(d.counters.latency_counts),
                       "latency_sum": d.counters.latency_sum, "backlog": d.counters.backlog,
                       "over_bound": d.counters.over_bound} for d in self.webhooks],
        )
        self._remember(snapshot)
        return snapshot

    def sample(self) -> None:
        """Take a snapshot for the history only (on a timer)."""
        self.take()

    def _remember(self, snapshot: Snapshot) -> None:
        history = self._history
        if history and snapshot.taken - history[-1][0] < SAMPLE_EVERY:
            return
        history.append((snapshot.taken, snapshot.counters()))
        # Keep one reading older than the longest window, to measure it from.
        while len(history) > 1 and history[1][0] <= snapshot.taken - HISTORY:
            history.popleft()

    def recent(self, snapshot: Snapshot, seconds: float) -> dict[tuple[str, ...], int]:
        """How much each of C{snapshot}'s counters grew in the last C{seconds}
        (since the start when the daemon is younger; from the oldest reading
        kept otherwise)."""
        since = snapshot.taken - seconds
        base: dict[tuple[str, ...], int] = {}
        if snapshot.started < since and self._history:
            base = self._history[0][1]
            for taken, counters in self._history:
                if taken > since:
                    break
                base = counters
        return {key: count - base.get(key, 0) for key, count in snapshot.counters().items()}

    def service(self) -> TimerService:
        """The timer that keeps the history going between page loads and scrapes."""
        timer = TimerService(SAMPLE_EVERY, self.sample)
        timer.clock = self.clock
        return timer


Take = Callable[[], Snapshot]
