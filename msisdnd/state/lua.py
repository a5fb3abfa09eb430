"""Lua scripts whose keys and arguments have names.

A L{Script} declares the names of its keys and arguments; its body reads
them as C{KEY.<name>} and C{ARG.<name>}, and a caller passes them by
keyword to L{Script.run}, which puts them in the order Redis wants and
refuses a missing or unknown name.  An argument declared as C{"name:n"} is
converted with C{tonumber} once, in the prelude.

Functions that several scripts need are written once, in L{HELPERS}, and a
script names the ones it uses.

A script made with C{nonce=True} claims a Hawk nonce before anything else:
it takes a key C{nonce} and an argument C{nonce_ttl} (seconds; 0 claims
nothing, for a step no device request made), runs C{SET nonce 1 NX EX
nonce_ttl} first, and when the nonce was already claimed returns at once,
having changed nothing; L{Script.run} then fails with L{NonceReplayed}.
So a device request's nonce costs no round trip of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred

from msisdnd.state import keys
from msisdnd.state.redis import TimedRedis

#: What a nonce-claiming script answers when its nonce was already claimed.
_REPLAYED = b"nonce_replayed"
_CLAIM_NONCE = (
    "if ARG.nonce_ttl > 0 and not redis.call('SET', KEY.nonce, 1, 'NX', 'EX', ARG.nonce_ttl)"
    f" then return {{'{_REPLAYED.decode()}'}} end")


class NonceReplayed(Exception):
    """The Hawk nonce a script was to claim had been claimed already: the
    script changed nothing."""

#: Lua functions shared by scripts, by name.
HELPERS: dict[str, str] = {
    # The milliseconds a key has left, or 1 s when it has no expiry.
    "ttl": """
local function ttl(key)
  local t = redis.call('PTTL', key)
  if t < 0 then return 1000 end
  return t
end""",
    # The integer a counter holds, 0 when it does not exist.
    "count": """
local function count(key) return tonumber(redis.call('GET', key) or '0') end""",
    # Add one to a fixed-window counter; its first count sets its expiry.
    "incr": """
local function incr(key, window_ms)
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, window_ms) end
end""",
    # A token bucket {t: tokens, s: last refill ms}: the tokens it holds now.
    "bucket": """
local function bucket(key, burst, period_ms, now)
  local state = redis.call('HMGET', key, 't', 's')
  local tokens = tonumber(state[1] or burst)
  local last = tonumber(state[2] or now)
  return math.min(burst, tokens + (now - last) * burst / period_ms)
end
local function bucket_wait(tokens, burst, period_ms)
  return math.ceil((1 - tokens) * period_ms / burst)
end
local function spend(key, tokens, now, keep_ms)
  redis.call('HSET', key, 't', tokens - 1, 's', now)
  redis.call('PEXPIRE', key, keep_ms)
end""",
    # A client's token buckets at each of its address levels ({minute key,
    # day key, multiplier}: one for IPv4, an IPv6 client's /64, /56 and /48),
    # every level's bursts times its multiplier.  client_admit returns what
    # to spend, or nil and the refusal; nothing is spent until client_spend.
    "clients": """
local function client_admit(levels, minute_burst, day_burst, now)
  local spent = {}
  for _, level in ipairs(levels) do
    local per_minute, per_day = minute_burst * level[3], day_burst * level[3]
    local m = bucket(level[1], per_minute, 60000, now)
    if m < 1 then return nil, {'ip_rate', bucket_wait(m, per_minute, 60000)} end
    local d = bucket(level[2], per_day, 86400000, now)
    if d < 1 then return nil, {'ip_rate', bucket_wait(d, per_day, 86400000)} end
    spent[#spent + 1] = {level[1], m, level[2], d}
  end
  return spent
end
local function client_spend(spent, now)
  for _, s in ipairs(spent) do
    spend(s[1], s[2], now, 120000)
    spend(s[3], s[4], now, 172800000)
  end
end""",
    # Lock a number for everyone: base_ms doubled with each lock of it that
    # day (count_key), at most max_ms; its failure count starts over, the
    # lock being the penalty.  Returns the lock's ms.
    "lock": """
local function lock_number(lock, count_key, failures, base_ms, max_ms, day_ms)
  local locks = redis.call('INCR', count_key)
  if locks == 1 then redis.call('PEXPIRE', count_key, day_ms) end
  local ms = math.floor(math.min(base_ms * 2 ^ (locks - 1), max_ms))
  redis.call('SET', lock, 1, 'PX', ms)
  redis.call('DEL', failures)
  return ms
end
local function lock_client(lock, failures, ms)
  redis.call('SET', lock, 1, 'PX', ms)
  redis.call('DEL', failures)
  return ms
end""",
    # A series of counts by time bucket (a hash bucket -> count), kept for
    # `buckets` buckets: add one to the current bucket, drop the old ones.
    # Only a bucket's first count sets the expiry (one bucket beyond the span,
    # so the bucket's later counts live the span too) and looks for old buckets:
    # the hash grows only then.
    "series": """
local function series_add(key, current, buckets, span_ms)
  if redis.call('HINCRBY', key, current, 1) ~= 1 then return end
  redis.call('PEXPIRE', key, span_ms + math.ceil(span_ms / buckets))
  if redis.call('HLEN', key) > 2 * buckets then
    for _, b in ipairs(redis.call('HKEYS', key)) do
      if tonumber(b) <= current - buckets then redis.call('HDEL', key, b) end
    end
  end
end
local function series_sum(key, first, last)
  if last < first then return 0 end
  local names = {}
  for b = first, last do names[#names + 1] = b end
  local total = 0
  for _, v in ipairs(redis.call('HMGET', key, unpack(names))) do
    total = total + tonumber(v or '0')
  end
  return total
end""",
    # Append an event about session `s` to `stream` ('': events are off),
    # numbered with the session's next sequence; `fields` is a flat list.
    "emit": """
local function emit(stream, kind, now, s, fields)
  if stream == '' then return end
  local entry = {'t', kind, 'ts', now, 's', s, 'sq', redis.call('HINCRBY', s, 'sq', 1),
                 '""" + keys.FORMAT_FIELD + """', '""" + str(keys.FORMAT) + """'}
  for _, v in ipairs(fields) do entry[#entry + 1] = v end
  redis.call('XADD', stream, '*', unpack(entry))
end
-- What a backend verification's events carry of it (its number stays sealed).
local function snapshot(s, more)
  local out, all = more or {}, redis.call('HGETALL', s)
  for i = 1, #all, 2 do
    local k = all[i]
    if k == 'o' or k == 'kn' or k == 'ct' or k == 'u' or k == 'e' or k == 'x' or k == 'v'
       or k == 'st' or k == 'q' or k == 'n' or k == 't' or string.match(k, '^pd?%d+$') then
      out[#out + 1] = 'f.' .. k
      out[#out + 1] = all[i + 1]
    end
  end
  return out
end""",
}


def _name(declared: str) -> str:
    return declared.partition(":")[0]


@dataclass(frozen=True)
class Script:
    """One Lua script, its keys and arguments named.

    @ivar keys: key names, in the order of C{KEYS}.
    @ivar args: argument names, in the order of C{ARGV}; C{"name:n"} reads
        the argument as a number.
    @ivar body: the Lua, reading C{KEY.<name>} and C{ARG.<name>}.
    @ivar helpers: names in L{HELPERS} the body calls.
    @ivar nonce: claim a Hawk nonce first (see the module's docstring): the
        key C{nonce} and the argument C{nonce_ttl} are added.
    """

    keys: tuple[str, ...]
    args: tuple[str, ...]
    body: str
    helpers: tuple[str, ...] = ()
    nonce: bool = False
    source: str = field(init=False, repr=False)
    _names: frozenset = field(init=False, repr=False, compare=False)
    _arg_names: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.nonce:
            object.__setattr__(self, "keys", ("nonce", *self.keys))
            object.__setattr__(self, "args", ("nonce_ttl:n", *self.args))
        key_table = ", ".join(f"{k} = KEYS[{i}]" for i, k in enumerate(self.keys, 1))
        arg_table = ", ".join(
            f"{_name(a)} = tonumber(ARGV[{i}])" if a.endswith(":n") else f"{a} = ARGV[{i}]"
            for i, a in enumerate(self.args, 1))
        prelude = [f"local KEY = {{{key_table}}}", f"local ARG = {{{arg_table}}}"]
        prelude += [HELPERS[name].strip() for name in self.helpers]
        if self.nonce:
            prelude.append(_CLAIM_NONCE)
        object.__setattr__(self, "source", "\n".join(prelude) + "\n" + self.body.strip() + "\n")
        object.__setattr__(self, "_arg_names", tuple(map(_name, self.args)))
        object.__setattr__(self, "_names", frozenset(self.keys + self._arg_names))

    def run(self, redis: TimedRedis, **values: Any) -> Deferred:
        """Run the script with its keys and arguments given by name.

        The Deferred fails with L{NonceReplayed} when the script claims a
        nonce and it had been claimed.

        @raise TypeError: a name is missing or unknown (before anything is sent).
        """
        if values.keys() != self._names:
            missing = sorted(self._names - values.keys())
            unknown = sorted(values.keys() - self._names)
            raise TypeError(f"script arguments: missing {missing}, unknown {unknown}")
        d = redis.script(self.source, [values[k] for k in self.keys],
                         [values[a] for a in self._arg_names])
        if self.nonce:
            d.addCallback(_unless_replayed)
        return d


def _unless_replayed(reply: Any) -> Any:
    if isinstance(reply, list) and len(reply) == 1 and reply[0] == _REPLAYED:
        raise NonceReplayed()
    return reply
