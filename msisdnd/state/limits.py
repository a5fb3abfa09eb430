"""Abuse limits: what a stranger may make us send, and how often a number may be guessed.

Sessions are free, so limits per session are not enough.  Every decision
here is one Lua call against the Redis every daemon shares:

  - per number: sends per 10 minutes and per day, failed checks per day
    (then the number is locked for a while);
  - per client IP: registrations and sends, as token buckets (per minute
    and per day);
  - per prefix (the number less its last 4 digits), per country and per
    MCC-MNC: daily send budgets, and an allow-list of countries;
  - per number type (phonenumbers): only mobile numbers by default;
  - the pumping guard: sends and verifications per prefix and per MCC-MNC
    over a sliding window; a prefix or network with enough sends and too few
    verifications is blocked for a while (real users enter their codes,
    pumped traffic never does).  Sends younger than C{guard_grace} are not
    counted yet: a burst of real users has not had time to enter its codes.

Numbers and addresses are keyed by HMAC; prefixes and networks appear in
clear (an operator lists and lifts blocks by prefix), never whole numbers.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import math
from collections import Counter
from dataclasses import dataclass, field

import phonenumbers
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from msisdnd.masking import mask_number

log = Logger()

PREFIX = b"ml:"
BLOCK_PREFIX = b"ml:block:"
#: A locked number's key is this prefix and the number's 16-byte HMAC.
LOCK_PREFIX = b"ml:lock:"


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """The limits, with the defaults C{etc/msisdnd.toml} documents."""

    number_sends_10min: int = 5
    number_sends_day: int = 10
    number_failures_day: int = 20
    number_lock: float = 86400.0
    ip_registrations_minute: int = 10
    ip_registrations_day: int = 200
    ip_sends_minute: int = 5
    ip_sends_day: int = 50
    prefix_sends_day: int = 200
    country_sends_day: int = 10000
    network_sends_day: int = 5000
    countries: frozenset[str] = frozenset()
    number_types: frozenset[str] = frozenset({"MOBILE", "FIXED_LINE_OR_MOBILE"})
    guard_window: float = 3600.0
    guard_floor: int = 50
    guard_min_conversion: float = 0.2
    guard_block: float = 86400.0
    guard_grace: float = 300.0


class Refused(Exception):
    """A limit said no.

    @ivar limit: which one (a L{Limit}).
    @ivar retry_after: seconds until it may say yes, or C{None} for a policy.
    """

    def __init__(self, limit: "Limit", retry_after: float | None = None):
        super().__init__(limit.value)
        self.limit = limit
        self.retry_after = retry_after


class Limit(enum.Enum):
    """Every limit, by the name metrics and logs use."""

    NUMBER_RATE = "number_rate"
    NUMBER_LOCKED = "number_locked"
    IP_RATE = "ip_rate"
    PREFIX_BUDGET = "prefix_budget"
    COUNTRY_BUDGET = "country_budget"
    NETWORK_BUDGET = "network_budget"
    COUNTRY_NOT_ALLOWED = "country_not_allowed"
    NUMBER_TYPE = "number_type"
    PUMPING_BLOCK = "pumping_block"


#: Limits that are policies (403) rather than rates (429).
POLICIES = frozenset({Limit.COUNTRY_NOT_ALLOWED, Limit.NUMBER_TYPE, Limit.PUMPING_BLOCK})


def prefix_of(msisdn: str) -> str:
    """The number less its last 4 digits (C{+3361234} for C{+33612345678})."""
    return msisdn[:-4]


# A fixed-window counter: KEYS[i] counts in a window of ARGV seconds.  A
# token bucket: a hash {t: tokens, s: last refill ms}.  The script checks
# everything first and only then spends, so a refusal costs nothing.
#
# KEYS: 1 lock, 2 number 10-min, 3 number day, 4 prefix day, 5 country day,
#       6 network day, 7 ip minute bucket, 8 ip day bucket, 9 prefix block,
#       10 network block, 11-14 the guard's series (hashes of bucket -> count):
#       prefix sent, prefix verified, network sent, network verified
# ARGV: 1 now ms, 2 number 10-min limit, 3 number day limit, 4 prefix limit,
#       5 country limit, 6 network limit, 7 ip minute burst, 8 ip day burst,
#       9 ms to the end of the day, 10 guard buckets G, 11 guard floor,
#       12 min conversion, 13 block ms, 14 guard bucket ms, 15 network known (0/1),
#       16 check the client IP (0/1: an MO has no IP), 17 ms to the end of the
#       current 10-minute window, 18 the current guard bucket, 19 grace buckets
#       (sends this recent are not yet expected to be verified)
_CHECK_SEND = """
local now = tonumber(ARGV[1])
local function ttl(key)
  local t = redis.call('PTTL', key)
  if t < 0 then return 1000 end
  return t
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'number_locked', ttl(KEYS[1])} end
if redis.call('EXISTS', KEYS[9]) == 1 then return {'pumping_block', ttl(KEYS[9]), 'prefix'} end
if ARGV[15] == '1' and redis.call('EXISTS', KEYS[10]) == 1 then
  return {'pumping_block', ttl(KEYS[10]), 'network'}
end
local function count(key) return tonumber(redis.call('GET', key) or '0') end
local to_window_end, to_day_end = tonumber(ARGV[17]), tonumber(ARGV[9])
if count(KEYS[2]) >= tonumber(ARGV[2]) then return {'number_rate', to_window_end} end
if count(KEYS[3]) >= tonumber(ARGV[3]) then return {'number_rate', to_day_end} end
if count(KEYS[4]) >= tonumber(ARGV[4]) then return {'prefix_budget', to_day_end} end
if count(KEYS[5]) >= tonumber(ARGV[5]) then return {'country_budget', to_day_end} end
if ARGV[15] == '1' and count(KEYS[6]) >= tonumber(ARGV[6]) then
  return {'network_budget', to_day_end}
end
local function bucket(key, burst, period)
  local state = redis.call('HMGET', key, 't', 's')
  local tokens = tonumber(state[1] or burst)
  local last = tonumber(state[2] or now)
  tokens = math.min(burst, tokens + (now - last) * burst / period)
  return tokens
end
local by_ip = ARGV[16] == '1'
local minute, day = 0, 0
if by_ip then
  minute = bucket(KEYS[7], tonumber(ARGV[7]), 60000)
  if minute < 1 then return {'ip_rate', math.ceil((1 - minute) * 60000 / tonumber(ARGV[7]))} end
  day = bucket(KEYS[8], tonumber(ARGV[8]), 86400000)
  if day < 1 then return {'ip_rate', math.ceil((1 - day) * 86400000 / tonumber(ARGV[8]))} end
end
local g, current, grace = tonumber(ARGV[10]), tonumber(ARGV[18]), tonumber(ARGV[19])
local function sum(key, first, last)
  if last < first then return 0 end
  local buckets = {}
  for b = first, last do buckets[#buckets + 1] = b end
  local total = 0
  for _, v in ipairs(redis.call('HMGET', key, unpack(buckets))) do total = total + tonumber(v or '0') end
  return total
end
local floor, minimum = tonumber(ARGV[11]), tonumber(ARGV[12])
local function pumped(sent_key, verified_key)
  local sent = sum(sent_key, current - g + 1, current - grace)
  if sent < floor then return false end
  return sum(verified_key, current - g + 1, current) < sent * minimum
end
if pumped(KEYS[11], KEYS[12]) then
  redis.call('SET', KEYS[9], now, 'PX', ARGV[13])
  return {'pumping_block', tonumber(ARGV[13]), 'prefix', 'new'}
end
if ARGV[15] == '1' and pumped(KEYS[13], KEYS[14]) then
  redis.call('SET', KEYS[10], now, 'PX', ARGV[13])
  return {'pumping_block', tonumber(ARGV[13]), 'network', 'new'}
end
local function incr(key, window)
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, window) end
end
incr(KEYS[2], to_window_end)
incr(KEYS[3], ARGV[9])
incr(KEYS[4], ARGV[9])
incr(KEYS[5], ARGV[9])
if ARGV[15] == '1' then incr(KEYS[6], ARGV[9]) end
if by_ip then
  redis.call('HSET', KEYS[7], 't', minute - 1, 's', now)
  redis.call('PEXPIRE', KEYS[7], 120000)
  redis.call('HSET', KEYS[8], 't', day - 1, 's', now)
  redis.call('PEXPIRE', KEYS[8], 172800000)
end
local span = g * tonumber(ARGV[14])
local function count_send(key)
  redis.call('HINCRBY', key, current, 1)
  redis.call('PEXPIRE', key, span)
  if redis.call('HLEN', key) > 2 * g then
    for _, bucket in ipairs(redis.call('HKEYS', key)) do
      if tonumber(bucket) <= current - g then redis.call('HDEL', key, bucket) end
    end
  end
end
count_send(KEYS[11])
if ARGV[15] == '1' then count_send(KEYS[13]) end
return {'ok'}
"""

# KEYS: 1 ip minute bucket, 2 ip day bucket.  ARGV: now ms, minute burst, day burst.
_CHECK_REGISTER = """
local now = tonumber(ARGV[1])
local function bucket(key, burst, period)
  local state = redis.call('HMGET', key, 't', 's')
  local tokens = tonumber(state[1] or burst)
  local last = tonumber(state[2] or now)
  return math.min(burst, tokens + (now - last) * burst / period)
end
local minute = bucket(KEYS[1], tonumber(ARGV[2]), 60000)
if minute < 1 then return {'ip_rate', math.ceil((1 - minute) * 60000 / tonumber(ARGV[2]))} end
local day = bucket(KEYS[2], tonumber(ARGV[3]), 86400000)
if day < 1 then return {'ip_rate', math.ceil((1 - day) * 86400000 / tonumber(ARGV[3]))} end
redis.call('HSET', KEYS[1], 't', minute - 1, 's', now)
redis.call('PEXPIRE', KEYS[1], 120000)
redis.call('HSET', KEYS[2], 't', day - 1, 's', now)
redis.call('PEXPIRE', KEYS[2], 172800000)
return {'ok'}
"""

# KEYS: 1 failures day, 2 lock.  ARGV: limit, lock ms.  The attempt was
# already counted when it was reserved (see AttemptGuard); a wrong code that
# used the last allowed attempt locks the number.
_FAILURE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], 1, 'PX', ARGV[2])
  return 1
end
return 0
"""



@dataclass(frozen=True, slots=True)
class AttemptGuard:
    """What the store's code check needs to reserve a failure atomically.

    Every check reserves one of the number's daily failures before the code
    is compared; a right code gives it back (L{Limits.verified}).  So guesses
    sent together cannot pass the lock check all at once.
    """

    lock_prefix: bytes
    failures_prefix: bytes
    day_suffix: bytes
    limit: int
    ttl_ms: int
    lock_ms: int

# KEYS: the number's failures today (or ""), then the guard's verified series
# (prefix, network).  ARGV: the window's span ms, the current bucket, buckets
# per window (older ones are dropped).
_VERIFIED = """
if KEYS[1] ~= '' and tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
for i = 2, #KEYS do
  redis.call('HINCRBY', KEYS[i], ARGV[2], 1)
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
  if redis.call('HLEN', KEYS[i]) > 2 * tonumber(ARGV[3]) then
    for _, bucket in ipairs(redis.call('HKEYS', KEYS[i])) do
      if tonumber(bucket) <= tonumber(ARGV[2]) - tonumber(ARGV[3]) then
        redis.call('HDEL', KEYS[i], bucket)
      end
    end
  end
end
return 1
"""


@dataclass
class Counters:
    """What the limits decided, for metrics: refusals by limit, blocks by kind."""

    refused: Counter = field(default_factory=Counter)
    blocks: Counter = field(default_factory=Counter)
    unblocks: int = 0


class Limits:
    """Every abuse limit, over the store's Redis connection.

    @param store: the L{msisdnd.state.sessions.RedisStore} whose connection and
        timeouts the limits share.
    @param secret: keys the HMAC of client addresses.
    """

    def __init__(self, store, settings: LimitSettings, secret: bytes, clock: IReactorTime):
        self.store = store
        self.settings = settings
        self.secret = secret
        self.clock = clock
        self.counters = Counters()
        guard_buckets = 12
        self._guard_buckets = guard_buckets
        self._guard_span = max(1.0, settings.guard_window / guard_buckets)
        self._grace_buckets = math.ceil(settings.guard_grace / self._guard_span)

    def _hash(self, kind: bytes, value: str) -> bytes:
        return hmac.new(self.secret, kind + b"\0" + value.encode(), hashlib.sha256).digest()[:12]

    def _client_key(self, client: str) -> bytes:
        """An IPv4 address counts alone; an IPv6 one by its /64 (what one subscriber holds)."""
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return self._hash(b"ip", client)
        if address.version == 6:
            return self._hash(b"ip", str(ipaddress.ip_network(f"{address}/64", strict=False)))
        return self._hash(b"ip", str(address))

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def _day(self, now_ms: int) -> tuple[int, int]:
        day = now_ms // 86_400_000
        return day, (day + 1) * 86_400_000 - now_ms

    def _series(self, kind: str, what: str, event: str) -> bytes:
        """The guard's hash of bucket -> count for one prefix or network."""
        return PREFIX + f"g:{event}:{kind}:{what}".encode()

    def _bucket(self, now_ms: int) -> int:
        return now_ms // int(self._guard_span * 1000)

    def _refusal(self, reply: list) -> Refused:
        limit = Limit(reply[0].decode() if isinstance(reply[0], bytes) else reply[0])
        retry = int(reply[1]) / 1000 if len(reply) > 1 else None
        self.counters.refused[limit.value] += 1
        return Refused(limit, None if limit in POLICIES and limit is not Limit.PUMPING_BLOCK
                       else retry)

    # -- checks --------------------------------------------------------------

    def checkNumber(self, msisdn: str) -> None:
        """Refuse, without I/O, a number of a type or country not allowed.

        @raise Refused: L{Limit.NUMBER_TYPE} or L{Limit.COUNTRY_NOT_ALLOWED}.
        """
        number = phonenumbers.parse(msisdn, None)
        region = phonenumbers.region_code_for_number(number) or ""
        settings = self.settings
        if settings.countries and region not in settings.countries:
            self.counters.refused[Limit.COUNTRY_NOT_ALLOWED.value] += 1
            raise Refused(Limit.COUNTRY_NOT_ALLOWED)
        kind = phonenumbers.number_type(number)
        names = {v: k for k, v in vars(phonenumbers.PhoneNumberType).items() if k.isupper()}
        if names.get(kind, "UNKNOWN") not in settings.number_types:
            self.counters.refused[Limit.NUMBER_TYPE.value] += 1
            raise Refused(Limit.NUMBER_TYPE)

    @inlineCallbacks
    def checkRegister(self, client: str):
        """Spend one registration from C{client}'s buckets; raise L{Refused} when empty."""
        settings = self.settings
        ip = self._client_key(client)
        reply = yield self.store.script(_CHECK_REGISTER, [
            PREFIX + b"rm:" + ip, PREFIX + b"rd:" + ip,
        ], [self._now_ms(), settings.ip_registrations_minute, settings.ip_registrations_day])
        if reply[0] not in (b"ok", "ok"):
            raise self._refusal(reply)

    @inlineCallbacks
    def checkSend(self, msisdn: str, client: str | None, mcc: str | None, mnc: str | None,
                  number_ref: bytes):
        """Account one SMS to C{msisdn}, or raise L{Refused} saying which limit stops it.

        Everything is checked before anything is spent; a refusal costs nothing.
        """
        settings = self.settings
        now = self._now_ms()
        day, to_day_end = self._day(now)
        number = number_ref
        prefix = prefix_of(msisdn)
        country = str(phonenumbers.parse(msisdn, None).country_code)
        network = f"{mcc}{mnc}" if mcc and mnc else ""
        ip = self._client_key(client or "-")
        guard = [self._series("p", prefix, "s"), self._series("p", prefix, "v"),
                 self._series("n", network, "s"), self._series("n", network, "v")]
        keys = [
            LOCK_PREFIX + number,
            PREFIX + b"n10:" + number + f":{now // 600_000}".encode(),
            PREFIX + b"nd:" + number + f":{day}".encode(),
            PREFIX + f"pd:{prefix}:{day}".encode(),
            PREFIX + f"cd:{country}:{day}".encode(),
            PREFIX + f"md:{network}:{day}".encode(),
            PREFIX + b"sm:" + ip, PREFIX + b"sd:" + ip,
            BLOCK_PREFIX + f"prefix:{prefix}".encode(),
            BLOCK_PREFIX + f"network:{network}".encode(),
            *guard,
        ]
        reply = yield self.store.script(_CHECK_SEND, keys, [
            now, settings.number_sends_10min, settings.number_sends_day, settings.prefix_sends_day,
            settings.country_sends_day, settings.network_sends_day, settings.ip_sends_minute,
            settings.ip_sends_day, to_day_end, self._guard_buckets, settings.guard_floor,
            settings.guard_min_conversion, int(settings.guard_block * 1000),
            int(self._guard_span * 1000), 1 if network else 0, 1 if client else 0,
            600_000 - now % 600_000, self._bucket(now), self._grace_buckets,
        ])
        if reply[0] in (b"ok", "ok"):
            return
        refusal = self._refusal(reply)
        if len(reply) > 3:
            kind = reply[2].decode() if isinstance(reply[2], bytes) else reply[2]
            self.counters.blocks[kind] += 1
            log.warn("Pumping guard: {kind} {what} blocked for {hours:.1f} h "
                     "(sends without verifications; last to {to})",
                     kind=kind, what=prefix if kind == "prefix" else network,
                     hours=settings.guard_block / 3600, to=mask_number(msisdn))
        raise refusal

    # -- outcomes ------------------------------------------------------------

    def verified(self, msisdn: str, mcc: str | None, mnc: str | None,
                 number_ref: bytes | None = None):
        """A code was entered right: the conversion the pumping guard watches,
        and (with C{number_ref}) the check's reserved failure given back."""
        now = self._now_ms()
        network = f"{mcc}{mnc}" if mcc and mnc else ""
        keys = [self._failures_key(number_ref) if number_ref is not None else b"",
                self._series("p", prefix_of(msisdn), "v")]
        if network:
            keys.append(self._series("n", network, "v"))
        return self.store.script(_VERIFIED, keys, [
            int(self._guard_buckets * self._guard_span * 1000), self._bucket(now),
            self._guard_buckets])

    def attemptGuard(self) -> AttemptGuard:
        """The reservation the store makes for each code check (see L{AttemptGuard})."""
        settings = self.settings
        day, to_day_end = self._day(self._now_ms())
        return AttemptGuard(LOCK_PREFIX, PREFIX + b"nf:", f":{day}".encode(),
                            settings.number_failures_day, to_day_end,
                            int(settings.number_lock * 1000))

    def _failures_key(self, number_ref: bytes) -> bytes:
        day, _ = self._day(self._now_ms())
        return PREFIX + b"nf:" + number_ref + f":{day}".encode()

    @inlineCallbacks
    def failedCheck(self, number_ref: bytes):
        """A wrong code for the number: the one that used the last attempt locks it."""
        settings = self.settings
        locked = yield self.store.script(_FAILURE, [
            self._failures_key(number_ref), LOCK_PREFIX + number_ref,
        ], [settings.number_failures_day, int(settings.number_lock * 1000)])
        if locked:
            log.warn("A number was locked after {n} failed checks today",
                     n=settings.number_failures_day)
        return bool(locked)

    # -- operators -----------------------------------------------------------

    @inlineCallbacks
    def blocks(self):
        """Every pumping-guard block: C{[(kind, what, seconds left)]}."""
        found = []
        cursor = 0
        while True:
            cursor, keys = yield self.store.call("scan", cursor, BLOCK_PREFIX.decode() + "*", 1000)
            for key in keys:
                name = key.decode() if isinstance(key, bytes) else key
                kind, _, what = name[len(BLOCK_PREFIX):].partition(":")
                ttl = yield self.store.call("execute_command", "PTTL", key)
                found.append((kind, what, max(0, int(ttl)) / 1000))
            if int(cursor) == 0:
                return sorted(found)

    @inlineCallbacks
    def lift(self, kind: str, what: str):
        """Lift one block, and forget the sends it counted (else the next send
        would block it again); fires with C{True} if there was a block."""
        short = {"prefix": "p", "network": "n"}.get(kind, kind)
        yield self.store.call("delete", self._series(short, what, "s"))
        removed = yield self.store.call("delete", BLOCK_PREFIX + f"{kind}:{what}".encode())
        if removed:
            self.counters.unblocks += 1
            log.info("Pumping guard: {kind} {what} unblocked by an operator", kind=kind, what=what)
        return bool(removed)
