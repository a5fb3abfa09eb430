"""The per-carrier daily cap, shared by every daemon through Redis.

Each daemon adds the submits its carriers had accepted since the last tick
to a per-carrier, per-day (UTC) counter; a carrier whose day total reaches
its C{daily_cap} is tripped until midnight: the router stops choosing it and
fails over, or the API answers 503.  The count lags by at most one tick
(C{interval}), so a cap can be passed by that much traffic, never more.
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
    """Trips carriers past their daily cap (a service ticking every C{interval} s).

    @param carriers: every carrier; those without a cap are ignored.
    """

    def __init__(self, carriers: Sequence[CappedCarrier], redis: TimedRedis,
                 clock: IReactorTime, interval: float = 1.0):
        super().__init__(interval, self.tick)
        self.carriers = [c for c in carriers if c.config.daily_cap]
        self.redis = redis
        self.clock = clock
        self._reported = {c.name: c.sent for c in self.carriers}
        self.trips = 0

    @inlineCallbacks
    def tick(self):
        day, into_day = divmod(int(self.clock.seconds() * 1000), _DAY_MS)
        for carrier in self.carriers:
            delta = carrier.sent - self._reported[carrier.name]
            try:
                total = yield _ADD.run(self.redis, day=keys.carrier_day(carrier.name, day),
                                       delta=delta, to_midnight_ms=_DAY_MS - into_day)
            except StoreUnavailable:
                return
            except Exception:  # a failover's READONLY, say: the next tick tries again
                log.failure("The daily-cap count failed for {carrier}", carrier=carrier.name)
                return
            self._reported[carrier.name] += delta
            tripped = int(total) >= carrier.config.daily_cap
            if tripped and not carrier.tripped:
                self.trips += 1
                log.warn("{carrier} reached its daily cap of {cap} submits: not chosen "
                         "until midnight UTC", carrier=carrier.name, cap=carrier.config.daily_cap)
            elif carrier.tripped and not tripped:
                log.info("{carrier} is chosen again (a new day)", carrier=carrier.name)
            carrier.tripped = tripped
