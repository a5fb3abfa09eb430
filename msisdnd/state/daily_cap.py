"""The per-carrier daily cap, shared by every daemon through Redis.

Each daemon adds the submits its carriers had accepted since the last tick
to a per-carrier, per-day (UTC) counter; a carrier whose day total reaches
its C{daily_cap} is tripped until midnight: the router stops choosing it and
fails over, or the API answers 503.  The count lags by at most one tick
(C{interval}), so a cap can be passed by that much traffic, never more.
"""

from __future__ import annotations

from typing import Sequence

from twisted.application.internet import TimerService
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from msisdnd.smpp.carrier import Carrier
from msisdnd.state.sessions import StoreUnavailable

log = Logger()

_ADD = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return total
"""


class CarrierBreaker(TimerService):
    """Trips carriers past their daily cap (a service ticking every C{interval} s)."""

    def __init__(self, carriers: Sequence[Carrier], store, clock, interval: float = 1.0):
        super().__init__(interval, self.tick)
        self.carriers = [c for c in carriers if c.config.daily_cap]
        self.store = store
        self.clock = clock
        self._reported = {c.name: c.sent for c in self.carriers}
        self.trips = 0

    @inlineCallbacks
    def tick(self):
        now_ms = int(self.clock.seconds() * 1000)
        day, to_midnight = divmod(now_ms, 86_400_000)
        to_midnight = 86_400_000 - to_midnight
        for carrier in self.carriers:
            delta = carrier.sent - self._reported[carrier.name]
            try:
                total = yield self.store.script(
                    _ADD, [f"ml:carrier:{carrier.name}:{day}".encode()], [delta, to_midnight])
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
