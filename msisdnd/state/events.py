"""The event stream: what happened, written with the change that caused it.

Every script that changes a session in a way a relying service hears of
appends an entry to one Redis Stream (C{keys.EVENTS}) in the same Lua call
(L{msisdnd.state.lua.HELPERS}' C{emit}), so there is no change without its
event and no event without its change.  An entry holds references, never a
number in clear: the type, the time, the session's key and a per-session
sequence; a device event the number sealed under the server's events key;
a backend event a snapshot of the verification's fields (its number sealed
under the backend key).

Each webhook reads the stream through a consumer group of its own, so a
slow receiver holds back no other; each daemon is a consumer.  An entry is
done for a webhook once it is delivered or dead-lettered (acknowledged);
the stream is trimmed below the oldest entry some webhook still needs.
Blocking reads go through a connection of their own (L{EventStream.read}
takes it), never through the pool that serves requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from twisted.internet.defer import Deferred, inlineCallbacks

from msisdnd.state import keys
from msisdnd.state.lua import Script
from msisdnd.state.redis import TimedRedis, text

#: Dead letters kept per webhook (the oldest go first beyond this).
DEAD_LETTERS_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry: its id and its fields (names as text, values as bytes)."""

    id: str
    fields: dict[str, bytes]

    @property
    def type(self) -> str:
        return text(self.fields.get("t", b""))

    @property
    def format(self) -> int:
        """The format of the daemon that wrote it (1 for entries without C{fv})."""
        return keys.format_of(self.fields)


@dataclass(frozen=True, slots=True)
class Pending:
    """An entry read by a consumer of a group and not yet acknowledged."""

    id: str
    consumer: str
    idle_ms: int
    deliveries: int


def _entries(reply: Any) -> list[Entry]:
    found = []
    for item in reply or ():
        if item is None or len(item) < 2 or item[1] is None:  # deleted while pending
            continue
        raw = item[1]
        found.append(Entry(text(item[0]), {text(raw[i]): raw[i + 1]
                                           for i in range(0, len(raw) - 1, 2)}))
    return found


def _id_after(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _id_before(a: str, b: str) -> bool:
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) < (int(bms), int(bseq or 0))


_DEAD_LETTER = Script(
    keys=("stream", "dead", "status"),
    args=("group", "id", "entry", "reason", "now", "kept:n"),
    body="""
local kept = redis.call('LPUSH', KEY.dead, ARG.entry)
if kept > ARG.kept then  -- the oldest dead letter goes; counted, never silently
  redis.call('LTRIM', KEY.dead, 0, ARG.kept - 1)
  redis.call('HINCRBY', KEY.status, 'dropped', kept - ARG.kept)
end
redis.call('HINCRBY', KEY.status, 'dead', 1)
redis.call('HSET', KEY.status, 'last_dead', ARG.reason, 'last_dead_at', ARG.now)
return redis.call('XACK', KEY.stream, ARG.group, ARG.id)
""")


class EventStream:
    """The event stream and the webhooks' groups, over the shared L{TimedRedis}."""

    def __init__(self, redis: TimedRedis):
        self.redis = redis

    def _command(self, *args: Any) -> Deferred:
        return self.redis.call("execute_command", *args)

    @inlineCallbacks
    def ensureGroup(self, group: str):
        """Create C{group}, reading what is appended from now on, unless it exists."""
        try:
            yield self._command("XGROUP", "CREATE", keys.EVENTS, group, "$", "MKSTREAM")
        except Exception as e:  # BUSYGROUP: it exists, with its position kept
            if "BUSYGROUP" not in str(e):
                raise

    @staticmethod
    def read(connection: Any, group: str, consumer: str, count: int,
             block_ms: int | None = None) -> Deferred:
        """New entries for C{group}; fires with a list of L{Entry}.

        @param connection: with C{block_ms}, a connection of its own (the read
            blocks it up to C{block_ms}); without, any (the read returns at once).
        """
        block = ("BLOCK", block_ms) if block_ms is not None else ()
        d = connection.execute_command("XREADGROUP", "GROUP", group, consumer, "COUNT", count,
                                       *block, "STREAMS", keys.EVENTS, ">")
        return d.addCallback(lambda reply: _entries(reply[0][1]) if reply else [])

    def ack(self, group: str, entry_ids: Iterable[str]) -> Deferred:
        return self._command("XACK", keys.EVENTS, group, *entry_ids)

    @inlineCallbacks
    def pending(self, group: str, min_idle_ms: int = 0, count: int = 100):
        """The oldest C{count} entries of C{group} pending at least C{min_idle_ms}."""
        reply = yield self._command("XPENDING", keys.EVENTS, group, "IDLE", min_idle_ms,
                                    "-", "+", count)
        return [Pending(text(r[0]), text(r[1]), int(r[2]), int(r[3])) for r in reply or ()]

    @inlineCallbacks
    def claim(self, group: str, consumer: str, entry_ids: list[str], min_idle_ms: int):
        """Take over pending entries idle at least C{min_idle_ms} (another
        consumer may have taken them first); fires with the L{Entry}s taken."""
        if not entry_ids:
            return []
        reply = yield self._command("XCLAIM", keys.EVENTS, group, consumer, min_idle_ms,
                                    *entry_ids)
        return _entries(reply)

    def entries(self, start: str = "-", end: str = "+", count: int = 100) -> Deferred:
        return self._command("XRANGE", keys.EVENTS, start, end, "COUNT", count).addCallback(
            _entries)

    def append(self, fields: dict[str, bytes | str]) -> Deferred:
        """Add an entry (a replay); fires with its id."""
        flat = [part for item in fields.items() for part in item]
        return self._command("XADD", keys.EVENTS, "*", *flat).addCallback(text)

    def deadLetter(self, group: str, entry: Entry, reason: str, now_ms: int,
                   packed: bytes) -> Deferred:
        """Move an entry C{group} gave up on to its dead letters, and acknowledge it."""
        return _DEAD_LETTER.run(
            self.redis, stream=keys.EVENTS, dead=keys.dead_letters(group),
            status=keys.webhook_status(group), group=group, id=entry.id, entry=packed,
            reason=reason, now=now_ms, kept=DEAD_LETTERS_KEPT)

    def deadLetters(self, group: str, count: int = DEAD_LETTERS_KEPT) -> Deferred:
        return self.redis.call("lrange", keys.dead_letters(group), 0, count - 1)

    @inlineCallbacks
    def forgetDeadLetters(self, group: str, packed: list[bytes]):
        """Drop dead letters that were replayed."""
        for item in packed:
            yield self._command("LREM", keys.dead_letters(group), 0, item)

    def recordSuccess(self, group: str, now_ms: int) -> Deferred:
        return self._command("HSET", keys.webhook_status(group), "last_success_at", now_ms)

    def recordError(self, group: str, reason: str, now_ms: int) -> Deferred:
        return self._command("HSET", keys.webhook_status(group), "last_error", reason,
                             "last_error_at", now_ms)

    @inlineCallbacks
    def status(self, group: str):
        """What an operator asks of a webhook: C{pending} (read, not yet
        delivered), C{retrying} (of those, tried more than once),
        C{undelivered} (not read yet), C{dead}, and the last error and success."""
        fields = yield self.redis.call("hgetall", keys.webhook_status(group))
        fields = {text(k): text(v) for k, v in (fields or {}).items()}
        pending = yield self.pending(group, 0, 10_000)
        dead = yield self.redis.call("llen", keys.dead_letters(group))
        lag = yield self.lag(group)
        return {"pending": len(pending), "retrying": sum(1 for p in pending if p.deliveries > 1),
                "undelivered": lag, "dead": int(dead),
                "last_error": fields.get("last_error"),
                "last_error_at": int(fields["last_error_at"]) if "last_error_at" in fields
                else None,
                "last_success_at": int(fields["last_success_at"])
                if "last_success_at" in fields else None,
                "last_dead": fields.get("last_dead"),
                "dead_dropped": int(fields.get("dropped", 0))}

    @inlineCallbacks
    def groups(self):
        """Every group: C{{name: {"last": last delivered id, "pending": n, "lag": n}}}."""
        try:
            reply = yield self._command("XINFO", "GROUPS", keys.EVENTS)
        except Exception as e:
            if "no such key" in str(e).lower():
                return {}
            raise
        found = {}
        for row in reply or ():
            info = {text(row[i]): row[i + 1] for i in range(0, len(row) - 1, 2)}
            lag = info.get("lag")
            found[text(info["name"])] = {"last": text(info["last-delivered-id"]),
                                         "pending": int(info["pending"]),
                                         "lag": int(lag) if lag is not None else None}
        return found

    @inlineCallbacks
    def lag(self, group: str):
        """How many entries C{group} has not read yet (0 when unknown)."""
        groups = yield self.groups()
        lag = groups.get(group, {}).get("lag")
        return lag or 0

    def length(self) -> Deferred:
        return self._command("XLEN", keys.EVENTS).addCallback(int)

    def readNow(self, group: str, consumer: str, count: int) -> Deferred:
        """New entries for C{group}, without waiting (through the pool)."""
        return self.read(self, group, consumer, count)

    def execute_command(self, *args: Any) -> Deferred:
        return self._command(*args)

    @inlineCallbacks
    def needed(self, only: frozenset[str] | None = None):
        """The oldest entry each group (of C{only}, when given) still needs:
        C{{group: id}}."""
        found = {}
        for name, info in (yield self.groups()).items():
            if only is not None and name not in only:
                continue
            oldest = yield self.pending(name, 0, 1)
            found[name] = oldest[0].id if oldest else _id_after(info["last"])
        return found

    @staticmethod
    def holdsBack(group: str, needed: dict[str, str]) -> bool:
        """Whether C{group} needs the oldest entry any group needs."""
        mine = needed.get(group)
        return mine is not None and not any(_id_before(other, mine) for other in needed.values())

    @inlineCallbacks
    def trim(self, before_ms: int, groups: frozenset[str] | None = None):
        """Drop the entries older than C{before_ms} that every group (of
        C{groups}: the webhooks configured; a group left by a webhook that is
        gone would hold the stream for ever) is done with; fires with how many."""
        needed = yield self.needed(groups)
        if not needed:
            return 0
        floor = needed[next(group for group in needed if self.holdsBack(group, needed))]
        if _id_before(f"{before_ms}-0", floor):
            floor = f"{before_ms}-0"
        removed = yield self._command("XTRIM", keys.EVENTS, "MINID", floor)
        return int(removed)
