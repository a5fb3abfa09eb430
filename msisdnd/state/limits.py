"""Abuse limits: what a stranger may make us send, and how often a number may be guessed.

Sessions are free, so limits per session are not enough.  Every decision
here is made in Lua against the Redis every daemon shares, most of them in
the session store's script of the step they guard (a registration's in the
one creating the session, a send's in its send start, a right code's in the
one marking the session verified), so that they cost no round trip:

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
from msisdnd.numbers import facts
from msisdnd.state import keys
from msisdnd.state.lua import Script
from msisdnd.state.redis import TimedRedis, text

log = Logger()


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """The limits, with the defaults C{etc/msisdnd.toml} documents."""

    number_sends_10min: int = 5
    number_sends_day: int = 10
    #: Wrong codes for a number in a row (across clients; a right code or a
    #: lock starts the count over, and it ends with the UTC day): NIST SP
    #: 800-63B's ceiling of 100.  Then the number is locked for everyone for
    #: number_lock seconds, doubled with each lock that day, at most
    #: number_lock_max.
    number_failures_day: int = 100
    number_lock: float = 900.0
    number_lock_max: float = 86400.0
    #: Wrong codes one client address (an API key, for the backend) may send
    #: for one number in a UTC day; then that client alone is locked out of
    #: that number for client_lock seconds, and its count starts over.
    client_failures_day: int = 5
    client_lock: float = 3600.0
    ip_registrations_minute: int = 10
    ip_registrations_day: int = 200
    ip_sends_minute: int = 5
    ip_sends_day: int = 50
    prefix_sends_day: int = 200
    country_sends_day: int = 10000
    network_sends_day: int = 5000
    countries: frozenset[str] = frozenset()
    #: The configuration must say so to serve every country (countries empty).
    allow_all_countries: bool = False
    #: Numbers of non-geographic calling codes (+800, +881...) are served only
    #: under these prefixes.
    allow_prefixes: frozenset[str] = frozenset()
    #: SMS parts per UTC day across every daemon and carrier (0: no budget).
    daily_sms_budget: int = 50_000
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
    API_KEY_RATE = "api_key_rate"
    API_KEY_BUDGET = "api_key_budget"


#: The budgets of an IPv6 client's /56 and /48, as multiples of its /64's.
IPV6_MULTIPLIERS = (4, 16)

#: Limits that are policies (403) rather than rates (429).
POLICIES = frozenset({Limit.COUNTRY_NOT_ALLOWED, Limit.NUMBER_TYPE, Limit.PUMPING_BLOCK})
#: How many client addresses' level keys a daemon keeps (a client's flow
#: asks for them three or four times).
CLIENT_LEVELS_CACHED = 4096


def prefix_of(msisdn: str) -> str:
    """The number less its last 4 digits (C{+3361234} for C{+33612345678})."""
    return msisdn[:-4]


# Every script checks everything first and only then spends, so a refusal
# costs nothing.  Counters are fixed windows; client addresses have token
# buckets (see msisdnd.state.lua).

#: The keys, arguments and helpers of a send's limits, in Lua: L{SEND_CHECK}
#: returns the refusal of the first limit that stops the send (only a new
#: pumping-guard block writes), L{SEND_SPEND} then spends.  The session store
#: runs both inside its send start (L{SendCheck}).
SEND_KEYS = ("lock", "number_10min", "number_day", "prefix_day", "country_day", "network_day",
             "client_minute", "client_day", "client56_minute", "client56_day", "client48_minute",
             "client48_day", "prefix_block", "network_block",
             "prefix_sent", "prefix_verified", "network_sent", "network_verified")
SEND_ARGS = ("now:n", "number_10min_limit:n", "number_day_limit:n", "prefix_limit:n",
             "country_limit:n", "network_limit:n", "client_minute_burst:n", "client_day_burst:n",
             "to_day_end:n", "to_window_end:n", "guard_buckets:n", "guard_floor:n",
             "guard_min_conversion:n", "block_ms:n", "guard_bucket_ms:n", "guard_bucket:n",
             "grace_buckets:n", "network_known", "by_client", "ipv6", "mult56:n", "mult48:n")
SEND_HELPERS = ("ttl", "incr", "bucket", "clients", "series")
SEND_CHECK = """
local with_network, by_client = ARG.network_known == '1', ARG.by_client == '1'
-- The locks, blocks and counters in one read (a missing key is false).
local v = redis.call('MGET', KEY.lock, KEY.prefix_block, KEY.network_block, KEY.number_10min,
                     KEY.number_day, KEY.prefix_day, KEY.country_day, KEY.network_day)
local function n(i) return tonumber(v[i] or '0') end
if v[1] then return {'number_locked', ttl(KEY.lock)} end
if v[2] then return {'pumping_block', ttl(KEY.prefix_block), 'prefix'} end
if with_network and v[3] then return {'pumping_block', ttl(KEY.network_block), 'network'} end
if n(4) >= ARG.number_10min_limit then return {'number_rate', ARG.to_window_end} end
if n(5) >= ARG.number_day_limit then return {'number_rate', ARG.to_day_end} end
if n(6) >= ARG.prefix_limit then return {'prefix_budget', ARG.to_day_end} end
if n(7) >= ARG.country_limit then return {'country_budget', ARG.to_day_end} end
if n(8) >= ARG.network_limit then return {'network_budget', ARG.to_day_end} end
local spent = {}
if by_client then
  local levels = {{KEY.client_minute, KEY.client_day, 1}}
  if ARG.ipv6 == '1' then
    levels[2] = {KEY.client56_minute, KEY.client56_day, ARG.mult56}
    levels[3] = {KEY.client48_minute, KEY.client48_day, ARG.mult48}
  end
  local refusal
  spent, refusal = client_admit(levels, ARG.client_minute_burst, ARG.client_day_burst, ARG.now)
  if not spent then return refusal end
end
local g, current = ARG.guard_buckets, ARG.guard_bucket
local function pumped(sent_key, verified_key)
  local sent = series_sum(sent_key, current - g + 1, current - ARG.grace_buckets)
  if sent < ARG.guard_floor then return false end
  return series_sum(verified_key, current - g + 1, current) < sent * ARG.guard_min_conversion
end
if pumped(KEY.prefix_sent, KEY.prefix_verified) then
  redis.call('SET', KEY.prefix_block, ARG.now, 'PX', ARG.block_ms)
  return {'pumping_block', ARG.block_ms, 'prefix', 'new'}
end
if with_network and pumped(KEY.network_sent, KEY.network_verified) then
  redis.call('SET', KEY.network_block, ARG.now, 'PX', ARG.block_ms)
  return {'pumping_block', ARG.block_ms, 'network', 'new'}
end
"""
SEND_SPEND = """
incr(KEY.number_10min, ARG.to_window_end)
incr(KEY.number_day, ARG.to_day_end)
incr(KEY.prefix_day, ARG.to_day_end)
incr(KEY.country_day, ARG.to_day_end)
incr(KEY.network_day, ARG.to_day_end)
client_spend(spent, ARG.now)
local span = g * ARG.guard_bucket_ms
series_add(KEY.prefix_sent, current, g, span)
if with_network then series_add(KEY.network_sent, current, g, span) end
"""

#: A registration's client buckets, in Lua: L{REGISTER_ADMIT} returns the
#: refusal when they are empty, else spends one.  The session store runs it
#: in the script that creates the session (L{Limits.registration}).
REGISTER_KEYS = ("client_minute", "client_day", "client56_minute", "client56_day",
                 "client48_minute", "client48_day")
REGISTER_ARGS = ("now:n", "minute_burst:n", "day_burst:n", "ipv6", "mult56:n", "mult48:n")
REGISTER_HELPERS = ("bucket", "clients")
REGISTER_ADMIT = """
local levels = {{KEY.client_minute, KEY.client_day, 1}}
if ARG.ipv6 == '1' then
  levels[2] = {KEY.client56_minute, KEY.client56_day, ARG.mult56}
  levels[3] = {KEY.client48_minute, KEY.client48_day, ARG.mult48}
end
local spent, refusal = client_admit(levels, ARG.minute_burst, ARG.day_burst, ARG.now)
if not spent then return refusal end
client_spend(spent, ARG.now)
"""

# The attempt was already counted when it was reserved (see AttemptGuard); a
# wrong code that used the number's last allowed failure locks the number
# for everyone (backing off), one that used the client's last, the client.
_FAILURE = Script(
    keys=("failures", "lock", "lock_count", "client_failures", "client_lock"),
    args=("limit:n", "lock_ms:n", "lock_max_ms:n", "day_ms", "by_client", "client_limit:n",
          "client_lock_ms"),
    helpers=("count", "lock"),
    body="""
if count(KEY.failures) >= ARG.limit then
  lock_number(KEY.lock, KEY.lock_count, KEY.failures, ARG.lock_ms, ARG.lock_max_ms, ARG.day_ms)
  return 2
end
if ARG.by_client == '1' and count(KEY.client_failures) >= ARG.client_limit then
  lock_client(KEY.client_lock, KEY.client_failures, ARG.client_lock_ms)
  return 1
end
return 0
""")


@dataclass(frozen=True, slots=True)
class AttemptGuard:
    """What the session store's code check needs to reserve a failure atomically.

    Every check reserves one of the number's failures, and one of the
    checking client's for that number, before the code is compared; a right
    code starts the number's count over and gives the client's back
    (L{Limits.verified}).  So guesses sent together cannot pass the lock
    check all at once.  The keys are built in Lua from the HMAC the session
    holds: C{lock_prefix + h} (the number's lock, for everyone), C{lock_prefix
    + h + ":" + client} (this client's), C{failures_prefix + h + day_suffix}
    and C{failures_prefix + h + ":" + client + day_suffix}.
    """

    lock_prefix: bytes
    failures_prefix: bytes
    day_suffix: bytes
    limit: int
    ttl_ms: int
    lock_ms: int
    lock_max_ms: int = 0
    #: The checking client's key part (empty: not counted per client).
    client: bytes = b""
    client_limit: int = 0
    client_lock_ms: int = 0


# A right code starts the number's failures over, gives the client the one
# its check reserved, and counts in the guard's series (prefix, and the
# network when there is one).  The session store runs VERIFIED_COUNT in the
# script that marks the session verified (Limits.verifiedCount).
VERIFIED_KEYS = ("failures", "client_failures", "prefix_verified", "network_verified")
VERIFIED_ARGS = ("span_ms:n", "guard_bucket:n", "guard_buckets:n", "give_back", "network_known")
VERIFIED_HELPERS = ("count", "series")
VERIFIED_COUNT = """
if ARG.give_back == '1' then
  redis.call('DEL', KEY.failures)
  if count(KEY.client_failures) > 0 then redis.call('DECR', KEY.client_failures) end
end
series_add(KEY.prefix_verified, ARG.guard_bucket, ARG.guard_buckets, ARG.span_ms)
if ARG.network_known == '1' then
  series_add(KEY.network_verified, ARG.guard_bucket, ARG.guard_buckets, ARG.span_ms)
end
"""
_VERIFIED = Script(keys=VERIFIED_KEYS, args=VERIFIED_ARGS, helpers=VERIFIED_HELPERS,
                   body=VERIFIED_COUNT + "return 1")


@dataclass(frozen=True, slots=True)
class SendCheck:
    """One SMS's limits, ready for a script (L{Limits.sendCheck}).

    @ivar values: the named keys and arguments of L{SEND_KEYS} and L{SEND_ARGS}.
    """

    limits: "Limits"
    msisdn: str
    prefix: str
    network: str
    values: dict

    def refusal(self, reply: list) -> Refused:
        """The L{Refused} of a refusal L{SEND_CHECK} returned (counted; a new
        pumping-guard block is logged)."""
        return self.limits._sendRefusal(reply, self.msisdn, self.prefix, self.network)


@dataclass
class Counters:
    """What the limits decided, for metrics: refusals by limit, blocks by kind."""

    refused: Counter = field(default_factory=Counter)
    blocks: Counter = field(default_factory=Counter)
    unblocks: int = 0


class Limits:
    """Every abuse limit, over the Redis connection the session store uses.

    @param redis: the L{TimedRedis} (in the daemon, the session store) whose
        connection and timeouts the limits share.
    @param secret: keys the HMAC of client addresses.
    """

    def __init__(self, redis: TimedRedis, settings: LimitSettings, secret: bytes,
                 clock: IReactorTime):
        self.store = redis
        self.secret = secret
        self.clock = clock
        self.counters = Counters()
        self._guard_buckets = 12
        self._levels: dict[str, tuple[tuple[bytes, ...], bool]] = {}
        self.use(settings)

    def use(self, settings: LimitSettings) -> None:
        """Apply C{settings} from now on (a reload); counts kept in Redis stay."""
        self.settings = settings
        self._guard_span = max(1.0, settings.guard_window / self._guard_buckets)
        self._grace_buckets = math.ceil(settings.guard_grace / self._guard_span)

    def _hash(self, kind: bytes, value: str) -> bytes:
        return hmac.new(self.secret, kind + b"\0" + value.encode(), hashlib.sha256).digest()[:12]

    def _client_levels(self, client: str) -> tuple[tuple[bytes, ...], bool]:
        """The keys of C{client}'s address levels, and whether it is IPv6.

        An IPv4 address counts alone (many mobile users share one behind
        carrier-grade NAT, so there is no /24 level).  An IPv6 address counts
        by its /64 (what one subscriber holds), its /56 and its /48, the
        wider levels with L{IPV6_MULTIPLIERS} times the budgets: one /48 no
        longer makes 65,536 clients.  The last L{CLIENT_LEVELS_CACHED}
        clients' keys are kept.
        """
        levels = self._levels.get(client)
        if levels is None:
            if len(self._levels) >= CLIENT_LEVELS_CACHED:
                self._levels.pop(next(iter(self._levels)))
            levels = self._levels[client] = self._levels_of(client)
        return levels

    def _levels_of(self, client: str) -> tuple[tuple[bytes, ...], bool]:
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return (self._hash(b"ip", client),) * 3, False
        if address.version == 4:
            return (self._hash(b"ip", str(address)),) * 3, False
        return tuple(self._hash(b"ip", str(ipaddress.ip_network(f"{address}/{bits}",
                                                               strict=False)))
                     for bits in (64, 56, 48)), True

    def _client_buckets(self, client: str, minute_kind: str, day_kind: str) -> dict:
        """The named keys and arguments of C{client}'s buckets, for a script."""
        levels, ipv6 = self._client_levels(client)
        named = {}
        for name, ref in zip(("client", "client56", "client48"), levels):
            named[f"{name}_minute"] = keys.client_bucket(minute_kind, ref)
            named[f"{name}_day"] = keys.client_bucket(day_kind, ref)
        return {**named, "ipv6": 1 if ipv6 else 0, "mult56": IPV6_MULTIPLIERS[0],
                "mult48": IPV6_MULTIPLIERS[1]}

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def _day(self, now_ms: int) -> tuple[int, int]:
        day = now_ms // 86_400_000
        return day, (day + 1) * 86_400_000 - now_ms

    def _bucket(self, now_ms: int) -> int:
        return now_ms // int(self._guard_span * 1000)

    def refusal(self, reply: list) -> Refused:
        """The L{Refused} of a limit script's refusal (counted)."""
        limit = Limit(text(reply[0]))
        retry = int(reply[1]) / 1000 if len(reply) > 1 else None
        self.counters.refused[limit.value] += 1
        return Refused(limit, None if limit in POLICIES and limit is not Limit.PUMPING_BLOCK
                       else retry)

    # -- checks --------------------------------------------------------------

    def checkNumber(self, msisdn: str) -> None:
        """Refuse, without I/O, a number of a type or country not allowed.

        Non-geographic numbers (satellite phones, international networks:
        phonenumbers' region C{001}, which cannot be listed as a country)
        are refused unless their prefix is in C{allow_prefixes}.

        @raise Refused: L{Limit.NUMBER_TYPE} or L{Limit.COUNTRY_NOT_ALLOWED}.
        """
        number = facts(msisdn)
        region = number.region
        settings = self.settings
        if region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY and not any(
                msisdn.startswith(prefix) for prefix in settings.allow_prefixes):
            self.counters.refused[Limit.COUNTRY_NOT_ALLOWED.value] += 1
            raise Refused(Limit.COUNTRY_NOT_ALLOWED)
        if settings.countries and region not in settings.countries:
            self.counters.refused[Limit.COUNTRY_NOT_ALLOWED.value] += 1
            raise Refused(Limit.COUNTRY_NOT_ALLOWED)
        if number.kind not in settings.number_types:
            self.counters.refused[Limit.NUMBER_TYPE.value] += 1
            raise Refused(Limit.NUMBER_TYPE)

    def registration(self, client: str) -> dict:
        """The named keys and arguments of L{REGISTER_ADMIT} for C{client}: one
        registration from its buckets, spent by the script that creates the
        session, which fails with L{Refused} (creating nothing) when they are empty."""
        settings = self.settings
        return dict(**self._client_buckets(client, "rm", "rd"), now=self._now_ms(),
                    minute_burst=settings.ip_registrations_minute,
                    day_burst=settings.ip_registrations_day)

    def sendCheck(self, msisdn: str, client: str | None, mcc: str | None, mnc: str | None,
                  number_ref: bytes) -> "SendCheck":
        """The limits of one SMS to C{msisdn} from C{client}, for the session
        store's send start to check and spend (L{SEND_CHECK}, L{SEND_SPEND}).

        Everything is checked before anything is spent; a refusal costs
        nothing, and fails the send with L{Refused} saying which limit stopped it.
        """
        settings = self.settings
        now = self._now_ms()
        day, to_day_end = self._day(now)
        prefix = prefix_of(msisdn)
        number = facts(msisdn)
        country = str(number.country_code)
        network = f"{mcc}{mnc}" if mcc and mnc else ""
        # Without a network the client named consistently, the network budget
        # counts the number's region instead, never nothing; the pumping guard
        # watches real networks only (a region's would block a whole country
        # for one prefix's pumping, which the prefix guard already catches).
        budgeted = network or "region-" + (number.region or country)
        return SendCheck(self, msisdn, prefix, network, dict(
            lock=keys.number_lock(number_ref),
            number_10min=keys.number_sends_10min(number_ref, now // 600_000),
            number_day=keys.number_sends_day(number_ref, day),
            prefix_day=keys.prefix_sends_day(prefix, day),
            country_day=keys.country_sends_day(country, day),
            network_day=keys.network_sends_day(budgeted, day),
            **self._client_buckets(client or "-", "sm", "sd"),
            prefix_block=keys.block("prefix", prefix),
            network_block=keys.block("network", network),
            prefix_sent=keys.guard_series("s", "p", prefix),
            prefix_verified=keys.guard_series("v", "p", prefix),
            network_sent=keys.guard_series("s", "n", network),
            network_verified=keys.guard_series("v", "n", network),
            now=now, number_10min_limit=settings.number_sends_10min,
            number_day_limit=settings.number_sends_day, prefix_limit=settings.prefix_sends_day,
            country_limit=settings.country_sends_day, network_limit=settings.network_sends_day,
            client_minute_burst=settings.ip_sends_minute, client_day_burst=settings.ip_sends_day,
            to_day_end=to_day_end, to_window_end=600_000 - now % 600_000,
            guard_buckets=self._guard_buckets, guard_floor=settings.guard_floor,
            guard_min_conversion=settings.guard_min_conversion,
            block_ms=int(settings.guard_block * 1000),
            guard_bucket_ms=int(self._guard_span * 1000), guard_bucket=self._bucket(now),
            grace_buckets=self._grace_buckets, network_known=1 if network else 0,
            by_client=1 if client else 0))

    def _sendRefusal(self, reply: list, msisdn: str, prefix: str, network: str) -> Refused:
        refusal = self.refusal(reply)
        if len(reply) > 3:
            kind = text(reply[2])
            self.counters.blocks[kind] += 1
            log.warn("Pumping guard: {kind} {what} blocked for {hours:.1f} h "
                     "(sends without verifications; last to {to})",
                     kind=kind, what=prefix if kind == "prefix" else network,
                     hours=self.settings.guard_block / 3600, to=mask_number(msisdn))
        return refusal

    # -- outcomes ------------------------------------------------------------

    def verified(self, msisdn: str, mcc: str | None, mnc: str | None,
                 number_ref: bytes | None = None, client: str | None = None):
        """A code was entered right: the conversion the pumping guard watches,
        and (with C{number_ref}) the number's failures start over and the
        C{client}'s reserved failure is given back.  (A code check counts
        it in the session store's script that marks the session verified:
        L{verifiedCount}.)"""
        return _VERIFIED.run(self.store, **self.verifiedCount(msisdn, mcc, mnc, number_ref,
                                                              client))

    def verifiedCount(self, msisdn: str, mcc: str | None, mnc: str | None,
                      number_ref: bytes | None = None, client: str | None = None) -> dict:
        """The named keys and arguments of L{VERIFIED_COUNT} (see L{verified})."""
        now = self._now_ms()
        day, _ = self._day(now)
        network = f"{mcc}{mnc}" if mcc and mnc else ""
        return dict(
            failures=keys.number_failures(number_ref or b"", day),
            client_failures=keys.number_failures(
                (number_ref or b"") + b":" + self._checker(client), day),
            prefix_verified=keys.guard_series("v", "p", prefix_of(msisdn)),
            network_verified=keys.guard_series("v", "n", network),
            span_ms=int(self._guard_buckets * self._guard_span * 1000),
            guard_bucket=self._bucket(now), guard_buckets=self._guard_buckets,
            give_back=0 if number_ref is None else 1, network_known=1 if network else 0)

    def _checker(self, client: str | None) -> bytes:
        """The key part of a client checking codes (its address level, or its API key)."""
        if not client:
            return b""
        return self._client_levels(client)[0][0].hex().encode()

    def attemptGuard(self, client: str | None = None) -> AttemptGuard:
        """The reservation the store makes for each code check by C{client}
        (see L{AttemptGuard})."""
        settings = self.settings
        day, to_day_end = self._day(self._now_ms())
        return AttemptGuard(keys.NUMBER_LOCK, keys.number_failures_prefix(), keys.day_suffix(day),
                            settings.number_failures_day, to_day_end,
                            int(settings.number_lock * 1000),
                            int(settings.number_lock_max * 1000), self._checker(client),
                            settings.client_failures_day, int(settings.client_lock * 1000))

    @inlineCallbacks
    def failedCheck(self, number_ref: bytes, client: str | None = None):
        """A wrong code for the number: the one that used the number's last
        allowed failure locks it for everyone, the client's last, the client.

        Fires with C{True} when the number was locked for everyone."""
        settings = self.settings
        day, to_day_end = self._day(self._now_ms())
        checker = self._checker(client)
        lock = keys.number_lock(number_ref)
        locked = yield _FAILURE.run(
            self.store, failures=keys.number_failures(number_ref, day), lock=lock,
            lock_count=lock + b":count" + keys.day_suffix(day),
            client_failures=keys.number_failures(number_ref + b":" + checker, day),
            client_lock=lock + b":" + checker, limit=settings.number_failures_day,
            lock_ms=int(settings.number_lock * 1000),
            lock_max_ms=int(settings.number_lock_max * 1000), day_ms=to_day_end,
            by_client=1 if checker else 0, client_limit=settings.client_failures_day,
            client_lock_ms=int(settings.client_lock * 1000))
        if int(locked) == 2:
            log.warn("A number was locked for everyone after {n} wrong codes in a row",
                     n=settings.number_failures_day)
        elif int(locked) == 1:
            log.info("A client was locked out of a number after {n} wrong codes",
                     n=settings.client_failures_day)
        return int(locked) == 2

    # -- operators -----------------------------------------------------------

    @inlineCallbacks
    def blocks(self):
        """Every pumping-guard block: C{[(kind, what, seconds left)]}."""
        found = []
        cursor = 0
        while True:
            cursor, names = yield self.store.call("scan", cursor, keys.BLOCK.decode() + "*", 1000)
            for key in names:
                kind, _, what = text(key)[len(keys.BLOCK):].partition(":")
                ttl = yield self.store.call("execute_command", "PTTL", key)
                found.append((kind, what, max(0, int(ttl)) / 1000))
            if int(cursor) == 0:
                return sorted(found)

    @inlineCallbacks
    def lift(self, kind: str, what: str):
        """Lift one block, and forget the sends it counted (else the next send
        would block it again); fires with C{True} if there was a block."""
        short = {"prefix": "p", "network": "n"}.get(kind, kind)
        yield self.store.call("delete", keys.guard_series("s", short, what))
        removed = yield self.store.call("delete", keys.block(kind, what))
        if removed:
            self.counters.unblocks += 1
            log.info("Pumping guard: {kind} {what} unblocked by an operator", kind=kind, what=what)
        return bool(removed)
