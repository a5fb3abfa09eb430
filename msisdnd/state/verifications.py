"""What a backend verification keeps beyond a session's fields.

A backend verification is a session hash (L{msisdnd.state.sessions}) that
the code scripts share with device sessions; its key is
C{keys.session(ref)} with C{ref} the 16 bytes of its id.  Its own fields:

  - C{o}, C{kn}: the API key id that owns it, and that key's name (kept, so
    that its events name it even once the key is revoked)
  - C{ct}, C{u}: when it was created and last changed (ms)
  - C{e}: when its current code expires (ms; kept after the code is gone)
  - C{st}: its final status, once it ended other than approved
    (C{canceled}, C{expired}, C{max_attempts_reached}); approved is the
    session's C{v}
  - C{q}: how many send attempts it had; C{p<n>}: attempt n's time (ms)
    and carrier, C{pd<n>}: the state its receipts reported
  - C{ix}: the key of the index that names it while it is pending
  - C{ck}: how many checks are comparing a code now (each took a try)
  - C{sq}: the sequence number of its last event

An index per API key and number names the one pending verification
(C{keys.pending_verification}), so a second create resends on it and a
check by number is never ambiguous.

With webhooks configured, each change is an event (L{msisdnd.state.events})
written by the same script, and a pending verification is in
C{keys.EXPIRIES} by its code's expiry, so that its expiry is told within a
sweep's interval even when nobody looks at it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from msisdnd.state import keys
from msisdnd.state.lua import Script
from msisdnd.state.redis import TimedRedis, text

_PENDING = """
local function pending(s, now)
  if redis.call('EXISTS', s) == 0 then return false end
  if redis.call('HEXISTS', s, 'v') == 1 or redis.call('HEXISTS', s, 'st') == 1 then
    return false
  end
  local e = redis.call('HGET', s, 'e') or redis.call('HGET', s, 'x')
  return not e or tonumber(e) >= now  -- no expiry yet: its first send is under way
end"""

# Returns the session key of the pending verification to resend on, or
# creates the new one (and points the index at it) and returns false.
_OPEN = Script(
    keys=("index", "session"),
    args=("owner", "owner_name", "now:n", "keep_ms", "format"),
    body=_PENDING + """
local existing = redis.call('GET', KEY.index)
if existing and pending(existing, ARG.now) then return existing end
redis.call('HSET', KEY.session, 'o', ARG.owner, 'kn', ARG.owner_name, 'ct', ARG.now, 'u', ARG.now,
           'ix', KEY.index, 'fv', ARG.format)
redis.call('PEXPIRE', KEY.session, ARG.keep_ms)
redis.call('SET', KEY.index, KEY.session, 'PX', ARG.keep_ms)
return false
""")

# Drops a verification that never had a code (its first send failed).
_DISCARD = Script(keys=("index", "session"), args=(), body="""
if redis.call('HEXISTS', KEY.session, 'c') == 1 or redis.call('HEXISTS', KEY.session, 'v') == 1
   or tonumber(redis.call('HGET', KEY.session, 'q') or '0') > 0 then
  return 0
end
redis.call('DEL', KEY.session)
if redis.call('GET', KEY.index) == KEY.session then redis.call('DEL', KEY.index) end
return 1
""")

_ATTEMPT = Script(keys=("session", "expiries"), args=("now", "carrier", "stream"), body="""
local s = KEY.session
if redis.call('EXISTS', s) == 0 then return 0 end
local n = redis.call('HINCRBY', s, 'q', 1)
local e = redis.call('HGET', s, 'x') or redis.call('HGET', s, 'e') or ARG.now
redis.call('HSET', s, 'p' .. n, ARG.now .. ' ' .. ARG.carrier, 'u', ARG.now, 'e', e)
if ARG.stream ~= '' then redis.call('ZADD', KEY.expiries, e, s) end
return n
""")

_END = _PENDING + """
-- End the pending verification `s` with `status`, and tell of it.
local function finish(s, status, now, keep_ms, stream, expiries)
  redis.call('HSET', s, 'st', status, 'u', now)
  redis.call('ZREM', expiries, s)
  redis.call('HDEL', s, 'c', 'x')
  redis.call('PEXPIRE', s, keep_ms)
  local index = redis.call('HGET', s, 'ix')
  if index and redis.call('GET', index) == s then redis.call('DEL', index) end
  emit(stream, 'verification.' .. status, now, s, snapshot(s))
end"""

# A verification that is still pending ends with `status`; one that has
# ended keeps its status.  Either way it stays readable for keep_ms.
_FINISH = Script(keys=("session", "expiries"), args=("status", "now", "keep_ms", "stream"),
                 helpers=("emit",), body=_END + """
local s = KEY.session
if redis.call('EXISTS', s) == 0 then return false end
if redis.call('HEXISTS', s, 'v') == 1 then return 'approved' end
local st = redis.call('HGET', s, 'st')
if st then return st end
finish(s, ARG.status, ARG.now, ARG.keep_ms, ARG.stream, KEY.expiries)
return ARG.status
""")

# A check whose code did not match is over.  The verification ends as
# max_attempts_reached only once its tries are spent and no other check is
# still comparing: one that took an earlier try may hold the right code.
_CHECK_FAILED = Script(keys=("session", "expiries"),
                       args=("max_tries:n", "now", "keep_ms", "stream"),
                       helpers=("emit",), body=_END + """
local s = KEY.session
if redis.call('EXISTS', s) == 0 then return false end
local comparing = redis.call('HINCRBY', s, 'ck', -1)
if redis.call('HEXISTS', s, 'v') == 1 then return 'approved' end
local st = redis.call('HGET', s, 'st')
if st then return st end
if comparing > 0 or tonumber(redis.call('HGET', s, 't') or '0') < ARG.max_tries then
  return 'pending'
end
finish(s, 'max_attempts_reached', ARG.now, ARG.keep_ms, ARG.stream, KEY.expiries)
return 'max_attempts_reached'
""")

# The verifications whose codes expired by now, and that nobody ended yet.
_SWEEP = Script(keys=("expiries",), args=("now:n", "keep_ms", "stream", "limit"),
                helpers=("emit",), body=_END + """
local ended = 0
for _, s in ipairs(redis.call('ZRANGEBYSCORE', KEY.expiries, '-inf', ARG.now,
                              'LIMIT', 0, ARG.limit)) do
  redis.call('ZREM', KEY.expiries, s)
  if redis.call('EXISTS', s) == 1 and not pending(s, ARG.now) and
     redis.call('HEXISTS', s, 'v') == 0 and redis.call('HEXISTS', s, 'st') == 0 then
    finish(s, 'expired', ARG.now, ARG.keep_ms, ARG.stream, KEY.expiries)
    ended = ended + 1
  end
end
return ended
""")

# A backend verification's code could not be delivered (its automatic
# resend could not be sent).
_FAILED = Script(keys=("session",), args=("now", "stream"), helpers=("emit",), body="""
local s = KEY.session
if redis.call('HEXISTS', s, 'o') == 0 then return 0 end
emit(ARG.stream, 'verification.failed', ARG.now, s, snapshot(s))
return 1
""")


class VerificationStore:
    """The backend verifications' own scripts, over the shared L{TimedRedis}."""

    def __init__(self, redis: TimedRedis):
        self.redis = redis

    @property
    def stream(self) -> bytes:
        return getattr(self.redis, "events_stream", b"")

    def open(self, owner: str, owner_name: str, number_ref: bytes, ref: bytes, now_ms: int,
             keep_ms: int) -> Deferred:
        """Create the verification C{ref}, unless C{owner} has one pending for
        the number: fires with that one's C{ref} then, else C{None}."""
        return _OPEN.run(self.redis, index=keys.pending_verification(owner, number_ref),
                         session=keys.session(ref), owner=owner, owner_name=owner_name,
                         now=now_ms, keep_ms=keep_ms, format=keys.FORMAT).addCallback(
            lambda existing: keys.session_ref_of(existing) if existing else None)

    def pending(self, owner: str, number_ref: bytes) -> Deferred:
        """Fires with the C{ref} of C{owner}'s verification the index names for
        the number (pending or not: the caller reads it), or C{None}."""
        return self.redis.call("get", keys.pending_verification(owner, number_ref)).addCallback(
            lambda key: keys.session_ref_of(key) if key else None)

    def discard(self, owner: str, number_ref: bytes, ref: bytes) -> Deferred:
        """Drop a verification whose first code never went out."""
        return _DISCARD.run(self.redis, index=keys.pending_verification(owner, number_ref),
                            session=keys.session(ref))

    def attempt(self, ref: bytes, now_ms: int, carrier: str) -> Deferred:
        """Record a send attempt the SMSC accepted; fires with its number (1, 2...)."""
        return _ATTEMPT.run(self.redis, session=keys.session(ref), expiries=keys.EXPIRIES,
                            now=now_ms, carrier=carrier, stream=self.stream).addCallback(int)

    def finish(self, ref: bytes, status: str, now_ms: int, keep_ms: int) -> Deferred:
        """End a pending verification with C{status}; fires with the status it
        has now (its earlier final one if it had ended), or C{None} if gone."""
        return _FINISH.run(self.redis, session=keys.session(ref), expiries=keys.EXPIRIES,
                           status=status, now=now_ms, keep_ms=keep_ms,
                           stream=self.stream).addCallback(
            lambda status: text(status) if status else None)

    def checkFailed(self, ref: bytes, max_tries: int, now_ms: int, keep_ms: int) -> Deferred:
        """A check of C{ref} that took a try did not approve it; fires with
        its status now (C{pending}; C{max_attempts_reached} when this was
        the last check comparing and the tries are spent; an earlier final
        status, or C{approved}), or C{None} if gone."""
        return _CHECK_FAILED.run(self.redis, session=keys.session(ref), expiries=keys.EXPIRIES,
                                 max_tries=max_tries, now=now_ms, keep_ms=keep_ms,
                                 stream=self.stream).addCallback(
            lambda status: text(status) if status else None)

    def sweepExpired(self, now_ms: int, keep_ms: int, limit: int = 100) -> Deferred:
        """End (as expired) up to C{limit} verifications whose codes expired
        unnoticed; fires with how many.  Atomic: daemons sweeping together
        end each one once."""
        return _SWEEP.run(self.redis, expiries=keys.EXPIRIES, now=now_ms, keep_ms=keep_ms,
                          stream=self.stream, limit=limit).addCallback(int)

    def failed(self, ref: bytes, now_ms: int) -> Deferred:
        """Tell that a backend verification's code could not be delivered."""
        return _FAILED.run(self.redis, session=keys.session(ref), now=now_ms,
                           stream=self.stream)
