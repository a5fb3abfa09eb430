"""Carrier accounts' limits shared by every daemon, kept in Redis.

L{SharedLeases} hands out an account's throughput tokens slice by slice and
L{SharedPermits} its bind permits (see L{msisdnd.sms.accounts} for the
contract).  Time is Redis's (C{TIME} in the scripts), never a daemon's
clock, so daemons whose clocks disagree still share one slice and one lease
expiry.  While Redis cannot be reached each falls back to the in-memory
source at the account's local share (its limits over C{expected_daemons}),
and says so once; it goes back to Redis when Redis answers again.
"""

from __future__ import annotations

from typing import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from msisdnd.sms.accounts import (SLICE, Account, IBindPermits, IThroughputLeases, Lease,
                                  LocalLeases, LocalPermits)
from msisdnd.state import keys
from msisdnd.state.lua import Script
from msisdnd.state.redis import TimedRedis

log = Logger()

# Redis's time in milliseconds (the scripts are replicated as effects).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# slice_tokens of msisdnd.sms.accounts, in Lua: per_slice is the rate in
# thousandths times the slice in ms (millionths of a token), kept exact.
_TAKE = Script(keys=("bucket",), args=("per_slice:n", "slice_ms:n", "want:n", "version"),
               body=_NOW + """
local n = math.floor(now / ARG.slice_ms)
local carried = ((ARG.per_slice % 1000000) * (n % 1000000)) % 1000000
local allowed = math.floor((carried + ARG.per_slice) / 1000000)
local state = redis.call('HMGET', KEY.bucket, 'n', 'g')
local granted = 0
if tonumber(state[1]) == n then granted = tonumber(state[2]) end
local give = math.max(0, math.min(ARG.want, allowed - granted))
if give > 0 then
  redis.call('HSET', KEY.bucket, 'n', n, 'g', granted + give, 'fv', ARG.version)
  redis.call('PEXPIRE', KEY.bucket, 10 * ARG.slice_ms)
end
return {give, (n + 1) * ARG.slice_ms - now, n}
""")

_GIVE_BACK = Script(keys=("bucket",), args=("slice:n", "unused:n"), body="""
local state = redis.call('HMGET', KEY.bucket, 'n', 'g')
if tonumber(state[1]) ~= ARG.slice then return 0 end
redis.call('HSET', KEY.bucket, 'g', math.max(0, tonumber(state[2]) - ARG.unused))
return 1
""")

# Take or renew holder's permit: expired leases are dropped first.
_ACQUIRE = Script(keys=("permits",), args=("holder", "limit:n", "lease_ms:n"), body=_NOW + """
redis.call('ZREMRANGEBYSCORE', KEY.permits, '-inf', now)
if not redis.call('ZSCORE', KEY.permits, ARG.holder)
   and redis.call('ZCARD', KEY.permits) >= ARG.limit then
  return 0
end
redis.call('ZADD', KEY.permits, now + ARG.lease_ms, ARG.holder)
if redis.call('PTTL', KEY.permits) < ARG.lease_ms then
  redis.call('PEXPIRE', KEY.permits, ARG.lease_ms)
end
return 1
""")


class _Fallback:
    """Logs once when a shared source leaves Redis for its local share, and
    once when it is back."""

    def __init__(self, what: str):
        self.what = what
        self.local = False

    def away(self, failure) -> None:
        if not self.local:
            self.local = True
            log.warn("Redis is away ({why}): {what} keep to this daemon's share "
                     "(expected_daemons)", why=failure.getErrorMessage(), what=self.what)

    def back(self) -> None:
        if self.local:
            self.local = False
            log.info("Redis is back: {what} are shared again", what=self.what)


@implementer(IThroughputLeases)
class SharedLeases:
    """Throughput tokens of each account from Redis, slice by slice."""

    def __init__(self, redis: TimedRedis, clock: IReactorTime, slice_seconds: float = SLICE):
        self.redis = redis
        self.slice_ms = round(slice_seconds * 1000)
        self.local = LocalLeases(clock, divisor=None, slice_seconds=slice_seconds)
        self._fallback = _Fallback("carrier throughput caps")

    def take(self, account: Account, want: int) -> Deferred:
        d = _TAKE.run(self.redis, bucket=keys.account_tokens(account.key),
                      per_slice=round(account.throughput * 1000) * self.slice_ms,
                      slice_ms=self.slice_ms, want=want, version=keys.FORMAT)

        def granted(reply: list) -> Lease:
            self._fallback.back()
            tokens, left_ms, n = (int(x) for x in reply)
            return Lease(tokens, left_ms / 1000, n)

        def away(failure) -> Deferred:
            self._fallback.away(failure)
            return self.local.take(account, want)

        return d.addCallbacks(granted, away)

    def giveBack(self, account: Account, lease: Lease, unused: int) -> None:
        if self._fallback.local:
            self.local.giveBack(account, lease, unused)
            return
        _GIVE_BACK.run(self.redis, bucket=keys.account_tokens(account.key), slice=lease.slice,
                       unused=unused).addErrback(lambda f: None)  # they lapse with their slice


@implementer(IBindPermits)
class SharedPermits(Service):
    """Bind permits of each account in Redis, renewed every third of their
    lease while held; a permit that cannot be renewed because Redis is away
    is kept (every daemon is as blind), one another daemon took meanwhile
    is lost.  While Redis is away, new permits come from the local share,
    except for an account whose last answer from Redis was that every
    permit is held: their holders keep them, so none is free."""

    def __init__(self, redis: TimedRedis, clock: IReactorTime):
        self.redis = redis
        self.clock = clock
        self.local = LocalPermits(shared=False)
        self._fallback = _Fallback("carrier bind limits")
        #: Held permits by holder: their renewal timer (C{None} while one is in flight).
        self._held: dict[str, IDelayedCall | None] = {}
        #: Accounts whose permits Redis last said were all held.
        self._full: set[str] = set()

    def acquire(self, account: Account, holder: str, lost: Callable[[], None]) -> Deferred:
        def answered(reply: object) -> bool:
            self._fallback.back()
            granted = bool(int(reply))
            if granted:
                self._full.discard(account.key)
            else:
                self._full.add(account.key)
            return granted

        def away(failure) -> Deferred | bool:
            self._fallback.away(failure)
            if account.key in self._full:
                return False
            return self.local.acquire(account, holder, lost)

        def held(yes: bool) -> bool:
            if yes:
                self._renewLater(account, holder, lost)
            return yes

        return self._run(account, holder).addCallbacks(answered, away).addCallback(held)

    def _run(self, account: Account, holder: str) -> Deferred:
        return _ACQUIRE.run(self.redis, permits=keys.account_binds(account.key), holder=holder,
                            limit=account.max_binds,
                            lease_ms=round(account.bind_lease * 1000))

    def _renewLater(self, account: Account, holder: str, lost: Callable[[], None]) -> None:
        previous = self._held.get(holder)
        if previous is not None and previous.active():
            previous.cancel()
        self._held[holder] = self.clock.callLater(account.bind_lease / 3, self._renew,
                                                  account, holder, lost)

    def _renew(self, account: Account, holder: str, lost: Callable[[], None]) -> None:
        self._held[holder] = None  # a renewal in flight

        def answered(reply: object) -> None:
            self._fallback.back()
            if holder not in self._held:  # released meanwhile: the renewal may have re-added it
                self._forget(account, holder)
            elif not int(reply):
                del self._held[holder]
                self.local.release(account, holder)
                lost()
            else:
                self._renewLater(account, holder, lost)

        def away(failure) -> None:
            self._fallback.away(failure)
            if holder in self._held:
                self._renewLater(account, holder, lost)

        self._run(account, holder).addCallbacks(answered, away)

    def release(self, account: Account, holder: str) -> None:
        if holder not in self._held:
            return
        timer = self._held.pop(holder)
        if timer is not None and timer.active():
            timer.cancel()
        self._forget(account, holder)

    def _forget(self, account: Account, holder: str) -> None:
        self.local.release(account, holder)
        self.redis.call("zrem", keys.account_binds(account.key), holder).addErrback(
            lambda f: None)  # its lease runs out

    def stopService(self):
        super().stopService()
        for timer in self._held.values():
            if timer is not None and timer.active():
                timer.cancel()
        self._held.clear()
