"""Idempotent creates: a backend request's outcome under its C{Idempotency-Key}.

The first request with a key claims it (pending, for as long as a send may
take); a 201 answer is then kept, sealed, for a day and replayed to every
retry with the same body; a request that failed gives the key up, so the
client may retry.  Keys are scoped per API key.
"""

from __future__ import annotations

import enum

from twisted.internet.defer import Deferred

from msisdnd.state import keys
from msisdnd.state.lua import Script
from msisdnd.state.redis import TimedRedis, text

_CLAIM = Script(keys=("slot",), args=("body", "pending_ms"), body="""
local state = redis.call('HMGET', KEY.slot, 'b', 'r')
if not state[1] then
  redis.call('HSET', KEY.slot, 'b', ARG.body)
  redis.call('PEXPIRE', KEY.slot, ARG.pending_ms)
  return {'claimed'}
end
if state[1] ~= ARG.body then return {'conflict'} end
if not state[2] then return {'in_progress'} end
return {'replay', state[2]}
""")

_KEEP = Script(keys=("slot",), args=("body", "reply", "keep_ms"), body="""
if redis.call('HGET', KEY.slot, 'b') ~= ARG.body then return 0 end
redis.call('HSET', KEY.slot, 'r', ARG.reply)
redis.call('PEXPIRE', KEY.slot, ARG.keep_ms)
return 1
""")

_RELEASE = Script(keys=("slot",), args=("body",), body="""
if redis.call('HGET', KEY.slot, 'b') == ARG.body and redis.call('HEXISTS', KEY.slot, 'r') == 0 then
  redis.call('DEL', KEY.slot)
end
return 1
""")


class Claim(enum.Enum):
    """What L{Idempotency.claim} found."""

    CLAIMED = "claimed"  # a new key: go ahead, then keep or release it
    CONFLICT = "conflict"  # the key was used with another body
    IN_PROGRESS = "in_progress"  # the first request is still under way
    REPLAY = "replay"  # answered before: the kept reply comes with it


class Idempotency:
    """Idempotency keys over the shared L{TimedRedis}.

    @param key_id: scopes every call to one API key.
    @param digest: a fixed-size digest of the client's C{Idempotency-Key}.
    @param body: a digest of the request's canonical body.
    """

    def __init__(self, redis: TimedRedis):
        self.redis = redis

    def claim(self, key_id: str, digest: bytes, body: bytes, pending_ms: int) -> Deferred:
        """Fires with C{(Claim, kept reply or None)}."""
        return _CLAIM.run(self.redis, slot=keys.idempotency(key_id, digest), body=body,
                          pending_ms=pending_ms).addCallback(
            lambda reply: (Claim(text(reply[0])), reply[1] if len(reply) > 1 else None))

    def keep(self, key_id: str, digest: bytes, body: bytes, reply: bytes,
             keep_ms: int) -> Deferred:
        """Keep the (sealed) reply of the request that claimed the key."""
        return _KEEP.run(self.redis, slot=keys.idempotency(key_id, digest), body=body,
                         reply=reply, keep_ms=keep_ms)

    def release(self, key_id: str, digest: bytes, body: bytes) -> Deferred:
        """Give up a claim whose request failed, so that it may be retried."""
        return _RELEASE.run(self.redis, slot=keys.idempotency(key_id, digest), body=body)
