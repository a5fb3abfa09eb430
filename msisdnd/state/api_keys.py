"""Backend API keys in Redis: their records, their rate and their daily budget.

A key is C{<key id>.<secret>}.  Redis keeps, under the key id, the key's
name, its limits and times, and the HMAC of its secret under a server key —
never the secret.  Names are unique (a hash of name -> key id).  Revoking a
key deletes its record, so every daemon refuses it from the next request.

A request is admitted in one Lua call once its secret checked out: a token
from the key's per-minute bucket, and for a request that sends an SMS one
unit of the key's budget for the UTC day; the key's last use is recorded.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from twisted.internet.defer import Deferred, inlineCallbacks

from msisdnd.state import keys
from msisdnd.state.lua import Script
from msisdnd.state.redis import TimedRedis, text

_DAY_MS = 86_400_000

_CREATE = Script(
    keys=("names", "record"),
    args=("name", "key_id", "mac", "created", "expires", "rate", "budget", "format"),
    body="""
if redis.call('HSETNX', KEY.names, ARG.name, ARG.key_id) == 0 then return 0 end
redis.call('HSET', KEY.record, 'name', ARG.name, 'mac', ARG.mac, 'created', ARG.created,
           'expires', ARG.expires, 'rate', ARG.rate, 'budget', ARG.budget, 'used', 0,
           'fv', ARG.format)
return 1
""")

_REVOKE = Script(keys=("names",), args=("name", "record_prefix", "rate_prefix"), body="""
local id = redis.call('HGET', KEY.names, ARG.name)
if not id then return false end
redis.call('HDEL', KEY.names, ARG.name)
redis.call('DEL', ARG.record_prefix .. id, ARG.rate_prefix .. id)
return id
""")

_ADMIT = Script(
    keys=("record", "bucket", "budget"),
    args=("now:n", "rate:n", "daily_budget:n", "sends:n", "to_day_end:n"),
    helpers=("bucket", "count"),
    body="""
if redis.call('EXISTS', KEY.record) == 0 then return {'revoked'} end
local tokens = bucket(KEY.bucket, ARG.rate, 60000, ARG.now)
if tokens < 1 then return {'rate', bucket_wait(tokens, ARG.rate, 60000)} end
if ARG.sends > 0 and ARG.daily_budget > 0
   and count(KEY.budget) + ARG.sends > ARG.daily_budget then
  return {'budget', ARG.to_day_end}
end
spend(KEY.bucket, tokens, ARG.now, 120000)
if ARG.sends > 0 then
  if redis.call('INCRBY', KEY.budget, ARG.sends) == ARG.sends then
    redis.call('PEXPIRE', KEY.budget, ARG.to_day_end)
  end
end
redis.call('HSET', KEY.record, 'used', ARG.now)
return {'ok'}
""")


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """What Redis keeps of one API key (times in ms since the epoch; 0 = never).

    @ivar mac: the HMAC of the key's secret under the server's API key secret.
    @ivar rate_per_minute: requests per minute, across every daemon.
    @ivar daily_budget: verification SMS per UTC day (0: no budget).
    @ivar format: the format of the record as stored (L{keys.format_of}: 1
        for a key created before formats were marked).
    """

    key_id: str
    name: str
    mac: bytes
    created: int
    expires: int
    rate_per_minute: int
    daily_budget: int
    last_used: int = 0
    format: int = keys.FORMAT

    def expired(self, now_ms: int) -> bool:
        return self.expires != 0 and now_ms >= self.expires


class Admission(enum.Enum):
    """What L{ApiKeys.admit} decided."""

    OK = "ok"
    RATE = "rate"
    BUDGET = "budget"
    REVOKED = "revoked"


class ApiKeys:
    """The API key records, over the shared L{TimedRedis}."""

    def __init__(self, redis: TimedRedis):
        self.redis = redis

    def create(self, record: ApiKeyRecord) -> Deferred:
        """Store a new key; fires with C{False} when its name is taken."""
        return _CREATE.run(
            self.redis, names=keys.API_KEY_NAMES, record=keys.api_key(record.key_id),
            name=record.name, key_id=record.key_id, mac=record.mac, created=record.created,
            expires=record.expires, rate=record.rate_per_minute,
            budget=record.daily_budget, format=keys.FORMAT).addCallback(
                lambda created: int(created) == 1)

    def get(self, key_id: str) -> Deferred:
        """Fires with the key's L{ApiKeyRecord}, or C{None} (unknown or revoked)."""
        return self.redis.call("hgetall", keys.api_key(key_id)).addCallback(
            lambda fields: _record(key_id, fields) if fields else None)

    @inlineCallbacks
    def all(self):
        """Fires with every key's record, by name."""
        names = yield self.redis.call("hgetall", keys.API_KEY_NAMES)
        found = []
        for key_id in (names or {}).values():
            record = yield self.get(text(key_id))
            if record is not None:
                found.append(record)
        return sorted(found, key=lambda r: r.name)

    def revoke(self, name: str) -> Deferred:
        """Delete the key named C{name}; fires with its key id, or C{None}."""
        return _REVOKE.run(
            self.redis, names=keys.API_KEY_NAMES, name=name, record_prefix=keys.api_key(""),
            rate_prefix=keys.api_key_rate("")).addCallback(
            lambda key_id: text(key_id) if key_id else None)

    @inlineCallbacks
    def admit(self, record: ApiKeyRecord, now_ms: int, sends: int = 0):
        """Spend one request of the key's rate, and C{sends} of its daily budget.

        Fires with C{(Admission, retry_after_ms)}; nothing is spent unless OK.
        """
        day, into_day = divmod(now_ms, _DAY_MS)
        reply = yield _ADMIT.run(
            self.redis, record=keys.api_key(record.key_id),
            bucket=keys.api_key_rate(record.key_id),
            budget=keys.api_key_budget(record.key_id, day), now=now_ms,
            rate=record.rate_per_minute, daily_budget=record.daily_budget, sends=sends,
            to_day_end=_DAY_MS - into_day)
        return Admission(text(reply[0])), int(reply[1]) if len(reply) > 1 else 0

    def refund(self, record: ApiKeyRecord, now_ms: int, sends: int = 1) -> Deferred:
        """Give back budget that L{admit} spent for an SMS that was not sent."""
        return self.redis.call("decrby", keys.api_key_budget(record.key_id, now_ms // _DAY_MS),
                               sends)


def _record(key_id: str, fields: dict) -> ApiKeyRecord:
    values = {text(k): v for k, v in fields.items()}
    return ApiKeyRecord(key_id=key_id, name=text(values["name"]), mac=values["mac"],
                        created=int(values["created"]), expires=int(values["expires"]),
                        rate_per_minute=int(values["rate"]), daily_budget=int(values["budget"]),
                        last_used=int(values.get("used", 0)), format=keys.format_of(values))
