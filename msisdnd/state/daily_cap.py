"""The daily caps, shared by every daemon through Redis: per carrier, and in all.

Each daemon adds the submits (SMS parts) its carriers had accepted since the
last tick to a per-carrier, per-day (UTC) counter, and to one counter of
every part sent that day.  A carrier whose day total reaches its
C{daily_cap} is tripped until midnight: the router stops choosing it and
fails over, or the API answers 503.  When the day's parts reach the global
C{daily_sms_budget}, every carrier is tripped until midnight: the budget an
operator sets from what they can afford, whatever pumps.  The counts lag
by at most one tick (C{interval}), so a cap can be passed by that much
traffic, never more.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from twisted.application.internet import TimerService
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from msisdnd.state import keys
from msisdnd.state.lua import Script
from msisdnd.state.redis import StoreUnavailable, TimedRedis

log = Logger()

_DAY_MS = 86_400_000

_ADD = Script(keys=("day",), args=("delta", "to_midnight_ms"), body="""
local total = redis.call('INCRBY', KEY.day, ARG.delta)
if redis.call('PTTL', KEY.day) < 0 then redis.call('PEXPIRE', KEY.day, ARG.to_midnight_ms) end
return total
""")


class _CapConfig(Protocol):
    daily_cap: int


class CappedCarrier(Protocol):
    """What the daily cap reads and sets on a carrier (L{msisdnd.smpp.carrier.Carrier})."""

    name: str
    config: _CapConfig
    #: Submits the SMSC accepted since start.
    sent: int
    #: Set while the carrier is past its cap: the router does not choose it.
    tripped: bool


class DailyCaps(TimerService):
    """Trips carriers past their daily cap, or all past the global budget
    (a service ticking every C{interval} s).

    @param carriers: every carrier; without a global budget, those without a
        cap are ignored.
    @param budget: SMS parts per UTC day in all (0: none).
    """

    def __init__(self, carriers: Sequence[CappedCarrier], redis: TimedRedis,
                 clock: IReactorTime, interval: float = 1.0, budget: int = 0):
        super().__init__(interval, self.tick)
        self.redis = redis
        self.clock = clock
        self._reported: dict[CappedCarrier, int] = {}
        self.use(carriers, budget)
        self.trips = 0
        self.over_budget = False

    def use(self, carriers: Sequence[CappedCarrier], budget: int) -> None:
        """Count C{carriers} against C{budget} from now on (a reload changed
        them); a carrier kept keeps its count."""
        self.budget = budget
        self.carriers = [c for c in carriers if c.config.daily_cap or budget]
        self._reported = {c: self._reported.get(c, c.sent) for c in self.carriers}

    @inlineCallbacks
    def tick(self):
        day, into_day = divmod(int(self.clock.seconds() * 1000), _DAY_MS)
        to_midnight = _DAY_MS - into_day
        try:
            over = False
            if self.budget:
                delta = sum(c.sent - self._reported[c] for c in self.carriers)
                total = yield _ADD.run(self.redis, day=keys.sms_day(day), delta=delta,
                                       to_midnight_ms=to_midnight)
                over = int(total) >= self.budget
            for carrier in self.carriers:
                delta = carrier.sent - self._reported[carrier]
                cap = carrier.config.daily_cap
                tripped = over
                if cap:
                    total = yield _ADD.run(self.redis, day=keys.carrier_day(carrier.name, day),
                                           delta=delta, to_midnight_ms=to_midnight)
                    tripped = tripped or int(total) >= cap
                self._reported[carrier] = self._reported.get(carrier, 0) + delta
                self._set(carrier, tripped, cap)
        except StoreUnavailable:
            return
        except Exception:  # a failover's READONLY, say: the next tick tries again
            log.failure("The daily caps could not be counted")
            return
        if over != self.over_budget:
            self.over_budget = over
            if over:
                log.warn("The daily SMS budget of {budget} parts is spent: no carrier is "
                         "chosen until midnight UTC", budget=self.budget)
            else:
                log.info("The daily SMS budget is open again (a new day)")

    def _set(self, carrier: CappedCarrier, tripped: bool, cap: int) -> None:
        if tripped and not carrier.tripped:
            self.trips += 1
            if cap:
                log.warn("{carrier} reached its daily cap of {cap} submits (or the daily "
                         "budget is spent): not chosen until midnight UTC",
                         carrier=carrier.name, cap=cap)
        elif carrier.tripped and not tripped:
            log.info("{carrier} is chosen again (a new day)", carrier=carrier.name)
        carrier.tripped = tripped
