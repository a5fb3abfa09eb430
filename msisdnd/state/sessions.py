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

Delivery receipts are matched through short-lived keys per carrier and
message id: C{ms:m:<carrier>:<id>} holds what is needed to act on the
receipt (under the normalized id the SMSC gave), and C{ms:d:<carrier>:<alias>}
holds a receipt that came before its id was recorded (under every alias of
the receipt's id).

Every check-and-update is one Lua script, so that concurrent requests on
several daemons cannot interleave.  Every call has our own timeout, because
txredisapi queues commands while it is disconnected: a Redis that is down
becomes L{StoreUnavailable} within C{timeout} seconds.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

SESSION_PREFIX = b"ms:s:"
NONCE_PREFIX = b"ms:n:"
MESSAGE_PREFIX = b"ms:m:"
RECEIPT_PREFIX = b"ms:d:"


class StoreUnavailable(Exception):
    """Redis did not answer in time, or is not connected."""


def _key(prefix: bytes, ref: bytes) -> bytes:
    return prefix + base64.urlsafe_b64encode(ref).rstrip(b"=")


class SendOutcome(enum.Enum):
    """What L{RedisStore.startSend} decided."""

    STARTED = "started"
    NO_SESSION = "no_session"
    OTHER_NUMBER = "other_number"
    COOLDOWN = "cooldown"
    CAPPED = "capped"


class CheckOutcome(enum.Enum):
    """What L{RedisStore.beginCheck} found."""

    CHECK = "check"
    LOCKED = "locked"
    NO_SESSION = "no_session"
    NO_CODE = "no_code"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"


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


_CREATE = """
redis.call('HSET', KEYS[1], 'k', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# ARGV: number hmac, sealed number, code mac, now ms, code ttl ms,
#       cooldown ms, max sends, session ttl ms (when not verified), method,
#       network (both kept as they were when empty: a resend), max tries.
# Returns what it replaced (code, expiry, method, network), so that an abort
# can put the code the user already has back.
_START_SEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_session'} end
local h = redis.call('HGET', KEYS[1], 'h')
if h and h ~= ARGV[1] then return {'other_number'} end
local now = tonumber(ARGV[4])
local last = tonumber(redis.call('HGET', KEYS[1], 'l') or '0')
local sends = tonumber(redis.call('HGET', KEYS[1], 'r') or '0')
local cooldown = tonumber(ARGV[6])
if last > 0 and now - last < cooldown then
  return {'cooldown', sends, cooldown - (now - last)}
end
if sends >= tonumber(ARGV[7]) then return {'capped', sends, 0} end
if tonumber(redis.call('HGET', KEYS[1], 't') or '0') >= tonumber(ARGV[11]) then
  return {'capped', sends, 0}
end
local old = redis.call('HMGET', KEYS[1], 'c', 'x', 'm', 'g')
local method = ARGV[9] ~= '' and ARGV[9] or (old[3] or 't')
local network = ARGV[10] ~= '' and ARGV[10] or (old[4] or '')
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'n', ARGV[2], 'c', ARGV[3],
           'x', now + tonumber(ARGV[5]), 'l', now, 'r', sends + 1, 'm', method, 'g', network)
if redis.call('HEXISTS', KEYS[1], 'v') == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
end
return {'started', sends + 1, 0, last, old[1] or '', old[2] or '', old[3] or '', old[4] or ''}
"""

# ARGV: the code mac that was started, the previous last-send time, then the
# previous code, expiry, method and network (empty when there was none).
_ABORT_SEND = """
if redis.call('HGET', KEYS[1], 'c') ~= ARGV[1] then return 0 end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'c', ARGV[3], 'x', ARGV[4], 'm', ARGV[5], 'g', ARGV[6])
else
  redis.call('HDEL', KEYS[1], 'c', 'x')
end
local sends = tonumber(redis.call('HGET', KEYS[1], 'r') or '1')
redis.call('HSET', KEYS[1], 'r', math.max(sends - 1, 0))
if ARGV[2] == '0' then redis.call('HDEL', KEYS[1], 'l')
else redis.call('HSET', KEYS[1], 'l', ARGV[2]) end
return 1
"""

# ARGV: now ms, max tries, and with abuse limits (msisdnd.state.limits.AttemptGuard):
# lock prefix, failures prefix, day suffix, failures limit, ttl ms, lock ms.
# A try is spent, and one of the number's daily failures reserved, before the
# code is compared, so parallel guesses cannot share them; a locked number,
# an expired code or spent tries get no try and reserve nothing.
_BEGIN_CHECK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_session'} end
local c = redis.call('HGET', KEYS[1], 'c')
if not c then return {'no_code'} end
local h = redis.call('HGET', KEYS[1], 'h') or ''
local lock = ARGV[3] .. h
if ARGV[3] ~= '' and redis.call('EXISTS', lock) == 1 then
  return {'locked', redis.call('PTTL', lock)}
end
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'x') or '0') then
  redis.call('HDEL', KEYS[1], 'c', 'x')
  return {'expired'}
end
if tonumber(redis.call('HGET', KEYS[1], 't') or '0') >= tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], 'c', 'x')
  return {'exhausted'}
end
if ARGV[3] ~= '' then
  local failures = ARGV[4] .. h .. ARGV[5]
  local n = redis.call('INCR', failures)
  if n == 1 then redis.call('PEXPIRE', failures, ARGV[7]) end
  if n > tonumber(ARGV[6]) then
    redis.call('DECR', failures)
    redis.call('SET', lock, 1, 'PX', ARGV[8])
    return {'locked', tonumber(ARGV[8])}
  end
end
local t = redis.call('HINCRBY', KEYS[1], 't', 1)
return {'check', c, t, redis.call('HGET', KEYS[1], 'm') or '', h,
        redis.call('HGET', KEYS[1], 'g') or ''}
"""

# ARGV: the code mac checked, now ms, verified-session ttl ms
_VERIFIED = """
if redis.call('HGET', KEYS[1], 'c') ~= ARGV[1] then return false end
redis.call('HDEL', KEYS[1], 'c', 'x', 't', 'r', 'l', 'd', 'a', 'm', 'g')
redis.call('HSET', KEYS[1], 'v', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('HGET', KEYS[1], 'n')
"""

# ARGV: the code mac checked, tries spent, max tries
_WRONG = """
if tonumber(ARGV[2]) >= tonumber(ARGV[3]) and redis.call('HGET', KEYS[1], 'c') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'c', 'x')
end
return 1
"""


# KEYS: the message keys of every alias, then their early-receipt keys.
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

# KEYS as above, for the receipt's aliases.  ARGV: state, ttl ms.
# Returns the record of the message, or keeps the receipt for it.
_RECEIPT = """
local n = #KEYS / 2
for i = 1, n do
  local record = redis.call('GET', KEYS[i])
  if record then return record end
end
for i = n + 1, 2 * n do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
return false
"""

# ARGV: state.  Only an unverified session with a code keeps delivery state.
_DELIVERY = """
if redis.call('HEXISTS', KEYS[1], 'c') == 1 then redis.call('HSET', KEYS[1], 'd', ARGV[1]) end
return 1
"""

# ARGV: the new code's mac, now ms, code ttl ms, the state that failed, the
# mac of the code the failed message carried (only if it is still current).
_AUTO_RESEND = """
if redis.call('HEXISTS', KEYS[1], 'a') == 1 then return 0 end
if redis.call('HGET', KEYS[1], 'c') ~= ARGV[5] then return 0 end
local x = redis.call('HGET', KEYS[1], 'x')
if not x or tonumber(x) < tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'a', 1, 'c', ARGV[1], 'x', tonumber(ARGV[2]) + tonumber(ARGV[3]),
           'd', ARGV[4])
return 1
"""


def _message_keys(carrier: str, aliases: Any) -> list[bytes]:
    names = [f"{carrier}:{alias}".encode() for alias in sorted(aliases)]
    return [MESSAGE_PREFIX + n for n in names] + [RECEIPT_PREFIX + n for n in names]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStore:
    """The session store over a txredisapi connection (pool).

    @param redis: a txredisapi connection or pool made with C{charset=None}
        (values are bytes).
    """

    def __init__(self, redis: Any, clock: IReactorTime, timeout: float = 1.5):
        self.redis = redis
        self.clock = clock
        self.timeout = timeout
        self.errors = 0

    def call(self, method: str, *args: Any, **kwargs: Any) -> Deferred:
        """One txredisapi command, bounded by C{timeout}.

        Fails with L{StoreUnavailable} when Redis does not answer in time or is
        not connected.  The limits and the breaker share this connection, and
        its timeouts, through L{call} and L{script}.
        """
        result: Deferred = Deferred()

        def expire() -> None:
            if not result.called:
                self.errors += 1
                result.errback(StoreUnavailable(f"Redis did not answer within {self.timeout}s"))

        timer = self.clock.callLater(self.timeout, expire)

        def done(value: Any) -> None:
            if timer.active():
                timer.cancel()
            if result.called:
                return
            if isinstance(value, Failure):
                self.errors += 1
                if value.check(ConnectionError) or "onnection" in type(value.value).__name__:
                    result.errback(StoreUnavailable(str(value.value)))
                else:
                    result.errback(value)
            else:
                result.callback(value)

        try:
            d = getattr(self.redis, method)(*args, **kwargs)
        except Exception as e:
            timer.cancel()
            self.errors += 1
            result.errback(StoreUnavailable(f"Redis call failed: {e!r}"))
            return result
        d.addBoth(done)
        return result

    def script(self, source: str, keys: list[bytes], args: list[Any]) -> Deferred:
        """Run a Lua script (by EVALSHA, with txredisapi's EVAL fallback), bounded by C{timeout}."""
        return self.call("eval", source, keys, [a if isinstance(a, bytes) else str(a) for a in args])

    # -- sessions ----------------------------------------------------------

    def createSession(self, ref: bytes, hawk_key: bytes, ttl_ms: int) -> Deferred:
        return self.script(_CREATE, [_key(SESSION_PREFIX, ref)], [hawk_key, ttl_ms])

    def hawkKey(self, ref: bytes) -> Deferred:
        """Fires with the session's raw Hawk key, or C{None}."""
        return self.call("hget", _key(SESSION_PREFIX, ref), "k")

    def session(self, ref: bytes) -> Deferred:
        """Fires with the session's fields (C{dict} of bytes), empty when there is none."""
        return self.call("hgetall", _key(SESSION_PREFIX, ref)).addCallback(
            lambda fields: {_text(k): v for k, v in (fields or {}).items()})

    def deleteSession(self, ref: bytes) -> Deferred:
        return self.call("delete", _key(SESSION_PREFIX, ref))

    # -- sending codes -----------------------------------------------------

    def startSend(self, ref: bytes, *, number_ref: bytes, sealed_number: bytes, code_mac: bytes,
                  now_ms: int, code_ttl_ms: int, cooldown_ms: int, max_sends: int,
                  session_ttl_ms: int, method: str = "", network: str = "",
                  max_tries: int = 3) -> Deferred:
        """Record a new code for the session's number, within its limits.

        Fires with a L{SendStart}: C{STARTED} (the code is stored), or why
        not: no session, a second number, within the cooldown (C{wait_ms}),
        or out of sends (including a session whose tries are spent: a code
        it could never check is not worth an SMS).  An empty C{method} or
        C{network} keeps the session's own.
        """
        d = self.script(_START_SEND, [_key(SESSION_PREFIX, ref)], [
            number_ref, sealed_number, code_mac, now_ms, code_ttl_ms, cooldown_ms,
            max_sends, session_ttl_ms, method, network, max_tries])

        def parsed(reply: list) -> SendStart:
            outcome = SendOutcome(_text(reply[0]))
            numbers = [int(v) for v in reply[1:4]] + [0, 0, 0]
            previous = tuple(v if isinstance(v, bytes) else str(v).encode() for v in reply[4:8])
            return SendStart(outcome, numbers[0], numbers[1], numbers[2],
                             previous if len(previous) == 4 else (b"", b"", b"", b""))

        return d.addCallback(parsed)

    def abortSend(self, ref: bytes, code_mac: bytes, start: SendStart) -> Deferred:
        """Undo a L{startSend} whose SMS never reached the SMSC: the code the
        user already had, if any, is the current one again."""
        return self.script(_ABORT_SEND, [_key(SESSION_PREFIX, ref)],
                          [code_mac, start.previous_last, *start.previous])

    # -- checking codes ----------------------------------------------------

    def beginCheck(self, ref: bytes, now_ms: int, max_tries: int, guard: Any = None) -> Deferred:
        """Spend one try and fetch the code's MAC; fires with a L{CodeCheck}.

        With an L{msisdnd.state.limits.AttemptGuard}, one of the number's daily
        failures is reserved too, and a locked number gets no try (C{LOCKED}).
        """
        extra = ([guard.lock_prefix, guard.failures_prefix, guard.day_suffix, guard.limit,
                  guard.ttl_ms, guard.lock_ms] if guard is not None else [b""])
        d = self.script(_BEGIN_CHECK, [_key(SESSION_PREFIX, ref)], [now_ms, max_tries, *extra])

        def parsed(reply: list) -> CodeCheck:
            outcome = CheckOutcome(_text(reply[0]))
            if outcome is CheckOutcome.CHECK:
                return CodeCheck(outcome, reply[1], int(reply[2]), _text(reply[3]), reply[4],
                                 _text(reply[5]))
            if outcome is CheckOutcome.LOCKED:
                return CodeCheck(outcome, wait_ms=int(reply[1]))
            return CodeCheck(outcome)

        return d.addCallback(parsed)

    def markVerified(self, ref: bytes, code_mac: bytes, now_ms: int, ttl_ms: int) -> Deferred:
        """The code matched: drop the volatile state, keep the session as verified.

        Fires with the sealed number, or C{None} if the code changed meanwhile.
        """
        return self.script(_VERIFIED, [_key(SESSION_PREFIX, ref)], [code_mac, now_ms, ttl_ms])

    def wrongCode(self, ref: bytes, code_mac: bytes, tries: int, max_tries: int) -> Deferred:
        """The code did not match: after the last try, the code is gone."""
        return self.script(_WRONG, [_key(SESSION_PREFIX, ref)], [code_mac, tries, max_tries])

    # -- Hawk nonces -------------------------------------------------------

    def claimNonce(self, key: bytes, ttl: int) -> Deferred:
        """Fires with C{True} the first time C{key} is claimed within C{ttl} seconds."""
        return self.call("set", NONCE_PREFIX + key, b"1", expire=ttl,
                          only_if_not_exists=True).addCallback(
            lambda reply: reply is not None and _text(reply) == "OK")

    # -- delivery receipts -------------------------------------------------

    def recordSent(self, carrier: str, message_ids: Any, record: bytes, ttl_ms: int) -> Deferred:
        """Remember C{record} under each normalized id of a sent message's parts.

        A receipt looks itself up under every alias of its id, so one key per
        id is enough.  Fires with the state of a receipt that arrived before
        this (bytes), or C{None}.
        """
        return self.script(_RECORD_SENT, _message_keys(carrier, message_ids), [record, ttl_ms])

    def receiptArrived(self, carrier: str, aliases: Any, state: str, ttl_ms: int) -> Deferred:
        """Fires with the record of the receipt's message, or C{None} (the
        receipt is then kept for L{recordSent} to find)."""
        return self.script(_RECEIPT, _message_keys(carrier, aliases), [state, ttl_ms])

    def setDelivery(self, ref: bytes, state: str) -> Deferred:
        return self.script(_DELIVERY, [_key(SESSION_PREFIX, ref)], [state])

    def claimAutoResend(self, ref: bytes, failed_mac: bytes, code_mac: bytes, now_ms: int,
                        code_ttl_ms: int, state: str) -> Deferred:
        """Replace the code C{failed_mac} for the one automatic resend; fires
        with C{True} if the session had none yet and that code is still the
        current one and valid (a late receipt for an older code does nothing)."""
        return self.script(_AUTO_RESEND, [_key(SESSION_PREFIX, ref)],
                          [code_mac, now_ms, code_ttl_ms, state, failed_mac]).addCallback(bool)

    def ping(self) -> Deferred:
        return self.call("ping")
