"""Verification state in Redis.

One small hash per session, keyed by the HMAC of its Hawk id, holds all the
session needs.  Its fields (one letter each: every verified user costs
memory for as long as the session lives):

  - C{k}: the Hawk key (32 raw bytes)
  - C{n}: the number, sealed under a key derived from the Hawk id
  - C{h}: HMAC of the number, for lookups
  - C{c}, C{x}: the MAC of the current code and its expiry (ms)
  - C{t}: tries spent (for the session's whole life: a resend gives none back)
  - C{r}, C{l}: sends made, and when the last one was made (ms)
  - C{v}: when the number was verified (ms); only verified sessions have it
  - C{d}: the last delivery state a receipt reported for the current code
  - C{a}: set once the session had its automatic resend after a failed delivery
  - C{m}: how the current code was asked for (C{t} MT, C{o} MO), for metrics
  - C{g}: the network (MCC+MNC) the client named, for the pumping guard
  - C{fv}: the format that created it (L{keys.FORMAT}); a session without
    one is format 1 (L{keys.format_of}), and reads the same

Delivery receipts are matched through short-lived keys per carrier and
message id: C{ms:m:<carrier>:<id>} holds what is needed to act on the
receipt (under the normalized id the SMSC gave), and C{ms:d:<carrier>:<alias>}
holds a receipt that came before its id was recorded (under every alias of
the receipt's id).

Every check-and-update is one Lua script, so that concurrent requests on
several daemons cannot interleave.  A device request's Hawk nonce (a
L{Nonce}) is claimed by the first script its step runs, before it reads or
changes anything (L{msisdnd.state.lua}): a replay changes nothing and fails
with L{NonceReplayed}.  Every call has our own timeout
(L{TimedRedis}): a Redis that is down becomes L{StoreUnavailable} within
C{timeout} seconds.  The keys are in L{msisdnd.state.keys}.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Iterable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from msisdnd.state import keys, limits
from msisdnd.state.limits import AttemptGuard, Limits, SendCheck
from msisdnd.state.lua import NonceReplayed, Script
from msisdnd.state.redis import StoreUnavailable, TimedRedis, text

__all__ = ["CheckOutcome", "CodeCheck", "Nonce", "NonceReplayed", "SendOutcome", "SendStart",
           "SessionStore", "StoreUnavailable"]

log = Logger()

#: Receipt states that say a message is on its way, not where it ended.
INTERMEDIATE = frozenset({"ENROUTE", "ACCEPTD"})

class SendOutcome(enum.Enum):
    """What L{SessionStore.startSend} decided."""

    STARTED = "started"
    NO_SESSION = "no_session"
    VERIFIED = "verified"
    OTHER_NUMBER = "other_number"
    COOLDOWN = "cooldown"
    CAPPED = "capped"


class CheckOutcome(enum.Enum):
    """What L{SessionStore.beginCheck} found."""

    CHECK = "check"
    LOCKED = "locked"
    NO_SESSION = "no_session"
    NO_CODE = "no_code"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class Nonce:
    """A Hawk nonce for a step's first script to claim.

    @ivar name: its key name (L{msisdnd.hawk.nonce_key}), without the prefix.
    @ivar ttl: seconds it stays claimed (L{msisdnd.hawk.nonce_ttl}).
    """

    name: bytes
    ttl: int


def _nonce(nonce: Nonce | None) -> dict:
    """A nonce-claiming script's C{nonce} and C{nonce_ttl} (a TTL of 0 claims nothing)."""
    if nonce is None:
        return {"nonce": keys.NONCE, "nonce_ttl": 0}
    return {"nonce": keys.nonce(nonce.name), "nonce_ttl": nonce.ttl}


@dataclass(frozen=True, slots=True)
class SendStart:
    outcome: SendOutcome
    sends: int = 0
    wait_ms: int = 0
    previous_last: int = 0
    #: The code, expiry, method and network the new code replaced (C{b""}s when none).
    previous: tuple[bytes, bytes, bytes, bytes] = (b"", b"", b"", b"")


@dataclass(frozen=True, slots=True)
class CodeCheck:
    outcome: CheckOutcome
    code_mac: bytes = b""
    tries: int = 0
    method: str = ""
    number_ref: bytes = b""
    network: str = ""
    wait_ms: int = 0
    sealed_number: bytes = b""


_READ = Script(keys=("session",), args=(), nonce=True, body="""
return redis.call('HGETALL', KEY.session)
""")

_CREATE_KEYS = ("session",)
_CREATE_ARGS = ("hawk_key", "ttl_ms", "format")
_CREATE_SESSION = """
redis.call('HSET', KEY.session, 'k', ARG.hawk_key, 'fv', ARG.format)
redis.call('PEXPIRE', KEY.session, ARG.ttl_ms)
return {'ok'}
"""
_CREATE = Script(keys=_CREATE_KEYS, args=_CREATE_ARGS, body=_CREATE_SESSION)
# With the abuse limits: the client's registration buckets first (a refusal
# creates nothing).
_CREATE_ADMITTED = Script(
    keys=_CREATE_KEYS + limits.REGISTER_KEYS, args=_CREATE_ARGS + limits.REGISTER_ARGS,
    helpers=limits.REGISTER_HELPERS, body=limits.REGISTER_ADMIT + _CREATE_SESSION)

# An empty method or network keeps the session's own (a resend).  Returns
# what it replaced (code, expiry, method, network), so that an abort can put
# the code the user already has back.  With the abuse limits, the send's
# limits are checked after the session's (a client's retry within the
# cooldown spends nothing) and before anything is written, so a refusal
# leaves the session as it was; then both are spent.
_START_KEYS = ("session",)
_START_ARGS = ("number_ref", "sealed_number", "code_mac", "now:n", "code_ttl_ms:n",
               "cooldown_ms:n", "max_sends:n", "session_ttl_ms", "method", "network",
               "max_tries:n")
_START_CHECK = """
local s = KEY.session
if redis.call('EXISTS', s) == 0 then return {'no_session'} end
if redis.call('HEXISTS', s, 'v') == 1 then return {'verified'} end
local h = redis.call('HGET', s, 'h')
if h and h ~= ARG.number_ref then return {'other_number'} end
local last = tonumber(redis.call('HGET', s, 'l') or '0')
local sends = tonumber(redis.call('HGET', s, 'r') or '0')
if last > 0 and ARG.now - last < ARG.cooldown_ms then
  return {'cooldown', sends, ARG.cooldown_ms - (ARG.now - last)}
end
if sends >= ARG.max_sends then return {'capped', sends, 0} end
if tonumber(redis.call('HGET', s, 't') or '0') >= ARG.max_tries then
  return {'capped', sends, 0}
end
"""
_START_WRITE = """
local old = redis.call('HMGET', s, 'c', 'x', 'm', 'g')
local method = ARG.method ~= '' and ARG.method or (old[3] or 't')
local network = ARG.network ~= '' and ARG.network or (old[4] or '')
redis.call('HSET', s, 'h', ARG.number_ref, 'n', ARG.sealed_number, 'c', ARG.code_mac,
           'x', ARG.now + ARG.code_ttl_ms, 'l', ARG.now, 'r', sends + 1, 'm', method,
           'g', network)
if redis.call('HEXISTS', s, 'v') == 0 then redis.call('PEXPIRE', s, ARG.session_ttl_ms) end
return {'started', sends + 1, 0, last, old[1] or '', old[2] or '', old[3] or '', old[4] or ''}
"""
_START_SEND = Script(keys=_START_KEYS, args=_START_ARGS, nonce=True,
                     body=_START_CHECK + _START_WRITE)
_START_SEND_LIMITED = Script(
    keys=_START_KEYS + limits.SEND_KEYS,
    args=_START_ARGS + tuple(a for a in limits.SEND_ARGS if a != "now:n"),
    helpers=limits.SEND_HELPERS, nonce=True,
    body=_START_CHECK + limits.SEND_CHECK + limits.SEND_SPEND + _START_WRITE)
_SEND_OUTCOMES = frozenset(outcome.value for outcome in SendOutcome)

# The previous code, expiry, method and network are empty when there was none.
_ABORT_SEND = Script(
    keys=("session",),
    args=("code_mac", "previous_last", "previous_code", "previous_expiry", "previous_method",
          "previous_network"),
    body="""
local s = KEY.session
if redis.call('HGET', s, 'c') ~= ARG.code_mac then return 0 end
if ARG.previous_code ~= '' then
  redis.call('HSET', s, 'c', ARG.previous_code, 'x', ARG.previous_expiry,
             'm', ARG.previous_method, 'g', ARG.previous_network)
else
  redis.call('HDEL', s, 'c', 'x')
end
local sends = tonumber(redis.call('HGET', s, 'r') or '1')
redis.call('HSET', s, 'r', math.max(sends - 1, 0))
if ARG.previous_last == '0' then redis.call('HDEL', s, 'l')
else redis.call('HSET', s, 'l', ARG.previous_last) end
return 1
""")

# With abuse limits (guard = '1', see AttemptGuard), a try is spent and one
# of the number's failures reserved — and one of the client's for that
# number — before the code is compared, so parallel guesses cannot share
# them; a locked number (for everyone, or for this client), an expired code
# or spent tries get no try and reserve nothing.
_BEGIN_CHECK = Script(
    keys=("session",),
    args=("now:n", "max_tries:n", "guard", "lock_prefix", "failures_prefix", "day_suffix",
          "failures_limit:n", "failures_ttl_ms", "lock_ms:n", "lock_max_ms:n", "client",
          "client_limit:n", "client_lock_ms"),
    helpers=("lock",), nonce=True,
    body="""
local s = KEY.session
if redis.call('EXISTS', s) == 0 then return {'no_session'} end
local c = redis.call('HGET', s, 'c')
if not c then return {'no_code'} end
local h = redis.call('HGET', s, 'h') or ''
local guarded = ARG.guard == '1'
local lock = ARG.lock_prefix .. h
local by_client = guarded and ARG.client ~= ''
local client_lock = lock .. ':' .. ARG.client
if guarded then
  local wait = math.max(redis.call('PTTL', lock), by_client and redis.call('PTTL', client_lock) or -2)
  if wait > 0 then return {'locked', wait} end
end
if ARG.now > tonumber(redis.call('HGET', s, 'x') or '0') then
  redis.call('HDEL', s, 'c', 'x')
  return {'expired'}
end
if tonumber(redis.call('HGET', s, 't') or '0') >= ARG.max_tries then
  return {'exhausted'}  -- the code stays: a check that took the last try may still match
end
if guarded then
  local failures = ARG.failures_prefix .. h .. ARG.day_suffix
  local n = redis.call('INCR', failures)
  if n == 1 then redis.call('PEXPIRE', failures, ARG.failures_ttl_ms) end
  if n > ARG.failures_limit then
    return {'locked', lock_number(lock, lock .. ':count' .. ARG.day_suffix, failures,
                                  ARG.lock_ms, ARG.lock_max_ms, ARG.failures_ttl_ms)}
  end
  if by_client then
    local mine = ARG.failures_prefix .. h .. ':' .. ARG.client .. ARG.day_suffix
    local m = redis.call('INCR', mine)
    if m == 1 then redis.call('PEXPIRE', mine, ARG.failures_ttl_ms) end
    if m > ARG.client_limit then
      redis.call('DECR', failures)
      return {'locked', lock_client(client_lock, mine, ARG.client_lock_ms)}
    end
  end
end
local t = redis.call('HINCRBY', s, 't', 1)
-- A backend verification counts the checks still comparing (see verifications.py).
if redis.call('HEXISTS', s, 'o') == 1 then redis.call('HINCRBY', s, 'ck', 1) end
return {'check', c, t, redis.call('HGET', s, 'm') or '', h, redis.call('HGET', s, 'g') or '',
        redis.call('HGET', s, 'n') or ''}
""")

# The proof binds the verified state to a server secret (codes.verified_mac).
# A device session's event carries its number sealed for events (`sealed`);
# a backend verification's carries its snapshot.  With the abuse limits, the
# verification is counted for them too (limits.VERIFIED_COUNT), in a pcall:
# counting must not turn a verified number into an error.
_VERIFIED_KEYS = ("session",)
_VERIFIED_ARGS = ("code_mac", "now", "ttl_ms", "stream", "sealed", "proof")
_MARK_VERIFIED = """
local s = KEY.session
if redis.call('HGET', s, 'c') ~= ARG.code_mac then return false end
local method = redis.call('HGET', s, 'm') or 't'
redis.call('HDEL', s, 'c', 'x', 't', 'r', 'l', 'd', 'a', 'g', 'ck')
redis.call('HSET', s, 'v', ARG.now, 'vm', ARG.proof, 'm', method)
redis.call('PEXPIRE', s, ARG.ttl_ms)
if redis.call('HEXISTS', s, 'o') == 1 then
  emit(ARG.stream, 'verification.approved', ARG.now, s, snapshot(s))
else
  emit(ARG.stream, 'device.verified', ARG.now, s, {'n', ARG.sealed, 'm', method})
end
"""
_VERIFIED = Script(keys=_VERIFIED_KEYS, args=_VERIFIED_ARGS, helpers=("emit",),
                   body=_MARK_VERIFIED + "return redis.call('HGET', s, 'n')")
_VERIFIED_COUNTED = Script(
    keys=_VERIFIED_KEYS + limits.VERIFIED_KEYS, args=_VERIFIED_ARGS + limits.VERIFIED_ARGS,
    helpers=("emit", *limits.VERIFIED_HELPERS),
    body=_MARK_VERIFIED + "local counted = pcall(function()\n" + limits.VERIFIED_COUNT
    + "end)\nreturn {redis.call('HGET', s, 'n'), counted and 1 or 0}")

# Only a verified device session's end is an event.
_DELETE = Script(keys=("session",), args=("stream", "sealed", "now"), helpers=("emit",),
                 nonce=True, body="""
local s = KEY.session
if redis.call('HEXISTS', s, 'v') == 1 and redis.call('HEXISTS', s, 'o') == 0 then
  emit(ARG.stream, 'device.unregistered', ARG.now, s, {'n', ARG.sealed})
end
return redis.call('DEL', s)
""")


# The two receipt scripts take a variable number of keys (every alias of a
# message id), laid out by keys.message_keys: the records, then the early
# receipts.  Raw KEYS, for that reason.

# ARGV: the record, its ttl ms.  Returns an early receipt's state, if any.
_RECORD_SENT = """
local n = #KEYS / 2
for i = 1, n do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
for i = n + 1, 2 * n do
  local state = redis.call('GET', KEYS[i])
  if state then
    for j = n + 1, 2 * n do redis.call('DEL', KEYS[j]) end
    return state
  end
end
return false
"""

# ARGV: state, ttl ms.  Returns the record of the message, or keeps the
# receipt for it.
_RECEIPT = """
local n = #KEYS / 2
for i = 1, n do
  local record = redis.call('GET', KEYS[i])
  if record then return record end
end
for i = n + 1, 2 * n do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
return false
"""

# Only an unverified session with a code keeps delivery state; a backend
# verification keeps each attempt's (attempt 0: the message was no attempt),
# and tells of it; an attempt undelivered after the automatic resend was
# spent means the verification failed.  An intermediate state (ENROUTE...)
# arriving after a final one, or a state repeated, changes nothing (and
# tells nothing).
_DELIVERY = Script(
    keys=("session",), args=("state", "attempt", "stream", "now", "undelivered", "final"),
    helpers=("emit",), body="""
local s = KEY.session
local function settle(field)
  local known = redis.call('HGET', s, field)
  if known == ARG.state then return false end  -- a repeated receipt changes nothing
  if ARG.final == '0' and known and known ~= 'ENROUTE' and known ~= 'ACCEPTD' then
    return false
  end
  redis.call('HSET', s, field, ARG.state)
  return true
end
if redis.call('HEXISTS', s, 'c') == 1 then settle('d') end
if ARG.attempt ~= '0' and redis.call('HEXISTS', s, 'p' .. ARG.attempt) == 1
   and settle('pd' .. ARG.attempt) then
  emit(ARG.stream, 'verification.delivery', ARG.now, s,
       snapshot(s, {'da', ARG.attempt, 'ds', ARG.state}))
  if ARG.undelivered == '1' and redis.call('HEXISTS', s, 'a') == 1
     and redis.call('HGET', s, 'q') == ARG.attempt then  -- the latest attempt failed
    emit(ARG.stream, 'verification.failed', ARG.now, s, snapshot(s, {'da', ARG.attempt}))
  end
end
return 1
""")

# The failed message's code must still be the current one, and valid.
_AUTO_RESEND = Script(
    keys=("session",), args=("code_mac", "now:n", "code_ttl_ms:n", "state", "failed_mac"),
    body="""
local s = KEY.session
if redis.call('HEXISTS', s, 'a') == 1 then return 0 end
if redis.call('HGET', s, 'c') ~= ARG.failed_mac then return 0 end
local x = redis.call('HGET', s, 'x')
if not x or tonumber(x) < ARG.now then return 0 end
redis.call('HSET', s, 'a', 1, 'c', ARG.code_mac, 'x', ARG.now + ARG.code_ttl_ms, 'd', ARG.state)
return 1
""")


class SessionStore(TimedRedis):
    """The session store: every session step, one Lua script each.

    It is the L{TimedRedis} the daemon's other stores (limits, daily caps)
    share, so that one connection pool and one timeout serve them all.

    @param events_stream: the stream the scripts append events to
        (L{msisdnd.state.events}); empty when no webhook is configured.
    """

    def __init__(self, redis: Any, clock: IReactorTime, timeout: float = 1.5,
                 events_stream: bytes = b""):
        super().__init__(redis, clock, timeout)
        self.events_stream = events_stream

    # -- sessions ----------------------------------------------------------

    def createSession(self, ref: bytes, hawk_key: bytes, ttl_ms: int,
                      admission: tuple[Limits, str] | None = None) -> Deferred:
        """Create a session with its Hawk key, for C{ttl_ms}.

        With an C{admission} (the abuse limits and the client's address), one
        of the client's registrations is spent in the same script; when its
        buckets are empty nothing is created and the Deferred fails with
        L{Refused<msisdnd.state.limits.Refused>}.
        """
        values = dict(session=keys.session(ref), hawk_key=hawk_key, ttl_ms=ttl_ms,
                      format=keys.FORMAT)
        if admission is None:
            return _CREATE.run(self, **values)
        limiter, client = admission

        def admitted(reply: list) -> None:
            if text(reply[0]) != "ok":
                raise limiter.refusal(reply)

        return _CREATE_ADMITTED.run(self, **limiter.registration(client), **values).addCallback(
            admitted)

    def hawkKey(self, ref: bytes) -> Deferred:
        """Fires with the session's raw Hawk key, or C{None}."""
        return self.call("hget", keys.session(ref), "k")

    def session(self, ref: bytes, nonce: Nonce | None = None) -> Deferred:
        """Fires with the session's fields (C{dict} of bytes), empty when there is none.

        With a C{nonce}, it is claimed in the same round trip (a script),
        and a replay fails with L{NonceReplayed}.  Any format's session
        reads the same (fields are only ever added; see L{keys.FORMAT}):
        those of a format before a field existed lack it."""
        if nonce is not None:
            return _READ.run(self, session=keys.session(ref), **_nonce(nonce)).addCallback(
                lambda flat: {text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)})
        return self.call("hgetall", keys.session(ref)).addCallback(
            lambda fields: {text(k): v for k, v in (fields or {}).items()})

    def deleteSession(self, ref: bytes, sealed_for_events: bytes = b"", now_ms: int = 0,
                      nonce: Nonce | None = None) -> Deferred:
        """Drop a session (claiming C{nonce} first); a verified device
        session's end is an event, which carries C{sealed_for_events} (its
        number sealed for events)."""
        return _DELETE.run(self, session=keys.session(ref), stream=self.events_stream,
                           sealed=sealed_for_events, now=now_ms, **_nonce(nonce))

    # -- sending codes -----------------------------------------------------

    def startSend(self, ref: bytes, *, number_ref: bytes, sealed_number: bytes, code_mac: bytes,
                  now_ms: int, code_ttl_ms: int, cooldown_ms: int, max_sends: int,
                  session_ttl_ms: int, method: str = "", network: str = "",
                  max_tries: int = 3, nonce: Nonce | None = None,
                  limit_check: SendCheck | None = None) -> Deferred:
        """Record a new code for the session's number, within its limits.

        Fires with a L{SendStart}: C{STARTED} (the code is stored), or why
        not: no session, a session already verified (it sends no more codes),
        a second number, within the cooldown (C{wait_ms}),
        or out of sends (including a session whose tries are spent: a code
        it could never check is not worth an SMS).  An empty C{method} or
        C{network} keeps the session's own.  C{nonce} is claimed first.

        With a C{limit_check}, the send's abuse limits are checked after the
        session's, and spent with it, in the same script: a limit that stops
        the send fails it with L{Refused<msisdnd.state.limits.Refused>}, the
        session as it was.
        """
        values = dict(session=keys.session(ref), number_ref=number_ref,
                      sealed_number=sealed_number, code_mac=code_mac, now=now_ms,
                      code_ttl_ms=code_ttl_ms, cooldown_ms=cooldown_ms, max_sends=max_sends,
                      session_ttl_ms=session_ttl_ms, method=method, network=network,
                      max_tries=max_tries, **_nonce(nonce))
        if limit_check is None:
            d = _START_SEND.run(self, **values)
        else:
            d = _START_SEND_LIMITED.run(self, **{**limit_check.values, **values})

        def parsed(reply: list) -> SendStart:
            if limit_check is not None and text(reply[0]) not in _SEND_OUTCOMES:
                raise limit_check.refusal(reply)
            outcome = SendOutcome(text(reply[0]))
            numbers = [int(v) for v in reply[1:4]] + [0, 0, 0]
            previous = tuple(v if isinstance(v, bytes) else str(v).encode() for v in reply[4:8])
            return SendStart(outcome, numbers[0], numbers[1], numbers[2],
                             previous if len(previous) == 4 else (b"", b"", b"", b""))

        return d.addCallback(parsed)

    def abortSend(self, ref: bytes, code_mac: bytes, start: SendStart) -> Deferred:
        """Undo a L{startSend} whose SMS never reached the SMSC: the code the
        user already had, if any, is the current one again."""
        code, expiry, method, network = start.previous
        return _ABORT_SEND.run(
            self, session=keys.session(ref), code_mac=code_mac, previous_last=start.previous_last,
            previous_code=code, previous_expiry=expiry, previous_method=method,
            previous_network=network)

    # -- checking codes ----------------------------------------------------

    def beginCheck(self, ref: bytes, now_ms: int, max_tries: int,
                   guard: AttemptGuard | None = None, nonce: Nonce | None = None) -> Deferred:
        """Spend one try and fetch the code's MAC; fires with a L{CodeCheck}.

        With an L{AttemptGuard}, one of the number's daily failures is
        reserved too, and a locked number gets no try (C{LOCKED}).
        C{nonce} is claimed first.
        """
        d = _BEGIN_CHECK.run(
            self, session=keys.session(ref), now=now_ms, max_tries=max_tries,
            guard=0 if guard is None else 1,
            lock_prefix=guard.lock_prefix if guard else b"",
            failures_prefix=guard.failures_prefix if guard else b"",
            day_suffix=guard.day_suffix if guard else b"",
            failures_limit=guard.limit if guard else 0,
            failures_ttl_ms=guard.ttl_ms if guard else 0,
            lock_ms=guard.lock_ms if guard else 0,
            lock_max_ms=guard.lock_max_ms if guard else 0,
            client=guard.client if guard else b"",
            client_limit=guard.client_limit if guard else 0,
            client_lock_ms=guard.client_lock_ms if guard else 0, **_nonce(nonce))

        def parsed(reply: list) -> CodeCheck:
            outcome = CheckOutcome(text(reply[0]))
            if outcome is CheckOutcome.CHECK:
                return CodeCheck(outcome, reply[1], int(reply[2]), text(reply[3]), reply[4],
                                 text(reply[5]), sealed_number=reply[6])
            if outcome is CheckOutcome.LOCKED:
                return CodeCheck(outcome, wait_ms=int(reply[1]))
            return CodeCheck(outcome)

        return d.addCallback(parsed)

    def markVerified(self, ref: bytes, code_mac: bytes, now_ms: int, ttl_ms: int,
                     proof: bytes = b"", sealed_for_events: bytes = b"",
                     count: dict | None = None) -> Deferred:
        """The code matched: drop the volatile state, keep the session as
        verified (at C{now_ms}, with its C{proof}).

        Fires with the sealed number, or C{None} if the code changed meanwhile.
        A device session's event carries C{sealed_for_events}.  With C{count}
        (L{Limits.verifiedCount<msisdnd.state.limits.Limits.verifiedCount>}),
        the abuse limits count the verification in the same script; if that
        fails, the session is verified all the same (and a warning logged).
        """
        values = dict(session=keys.session(ref), code_mac=code_mac, now=now_ms, ttl_ms=ttl_ms,
                      stream=self.events_stream, sealed=sealed_for_events, proof=proof)
        if count is None:
            return _VERIFIED.run(self, **values)

        def counted(reply: list | None) -> bytes | None:
            if reply is None:
                return None
            if int(reply[1]) != 1:
                log.warn("The pumping guard missed a verification (its count failed in Redis)")
            return reply[0]

        return _VERIFIED_COUNTED.run(self, **count, **values).addCallback(counted)

    # -- delivery receipts -------------------------------------------------

    def recordSent(self, carrier: str, message_ids: Iterable[str], record: bytes,
                   ttl_ms: int) -> Deferred:
        """Remember C{record} under each normalized id of a sent message's parts.

        A receipt looks itself up under every alias of its id, so one key per
        id is enough.  Fires with the state of a receipt that arrived before
        this (bytes), or C{None}.
        """
        return self.script(_RECORD_SENT, keys.message_keys(carrier, message_ids),
                           [record, ttl_ms])

    def receiptArrived(self, carrier: str, aliases: Iterable[str], state: str,
                       ttl_ms: int) -> Deferred:
        """Fires with the record of the receipt's message, or C{None} (the
        receipt is then kept for L{recordSent} to find)."""
        return self.script(_RECEIPT, keys.message_keys(carrier, aliases), [state, ttl_ms])

    def setDelivery(self, ref: bytes, state: str, attempt: int = 0, now_ms: int = 0,
                    undelivered: bool = False) -> Deferred:
        """Record what a receipt said of the current code (and of a backend
        verification's send C{attempt}: an event)."""
        return _DELIVERY.run(self, session=keys.session(ref), state=state, attempt=attempt,
                             stream=self.events_stream, now=now_ms,
                             undelivered=1 if undelivered else 0,
                             final=0 if state in INTERMEDIATE else 1)

    def claimAutoResend(self, ref: bytes, failed_mac: bytes, code_mac: bytes, now_ms: int,
                        code_ttl_ms: int, state: str) -> Deferred:
        """Replace the code C{failed_mac} for the one automatic resend; fires
        with C{True} if the session had none yet and that code is still the
        current one and valid (a late receipt for an older code does nothing)."""
        return _AUTO_RESEND.run(
            self, session=keys.session(ref), code_mac=code_mac, now=now_ms,
            code_ttl_ms=code_ttl_ms, state=state, failed_mac=failed_mac).addCallback(bool)
