"""Every Redis key msisdnd writes, in one place.

Two families share one Redis: C{ms:} holds sessions and what they need
(nonces, message records), C{ml:} holds the abuse limits and daily caps.
Numbers and client addresses appear only as HMACs (C{ref} arguments, raw
bytes); prefixes, countries, networks and carrier names appear in clear,
since operators list and lift blocks by them.

A Lua script may build a key from a value it reads (the code check locks
the number whose HMAC the session holds): L{NUMBER_LOCK} and
L{number_failures_prefix} exist for that, and must stay the prefixes of
L{number_lock} and L{number_failures}.
"""

from __future__ import annotations

import base64
from typing import Iterable, Mapping

#: The format of the records this version writes (the C{fv} field of session
#: hashes, API key records, event entries and account buckets).  A record without one is
#: format 1, written before formats were marked; see L{format_of}, and the
#: README's "Rolling upgrades" for the rules that keep N and N-1 together.
FORMAT = 2
FORMAT_FIELD = "fv"


def format_of(fields: Mapping) -> int:
    """The format of a record read from Redis (its fields by name, as text or
    bytes): its C{fv}, or 1 when it has none."""
    value = fields.get(FORMAT_FIELD, fields.get(FORMAT_FIELD.encode()))
    return 1 if value is None else int(value)

SESSION = b"ms:s:"
NONCE = b"ms:n:"
MESSAGE = b"ms:m:"
EARLY_RECEIPT = b"ms:d:"
API_KEY = b"ms:k:"
#: The hash of API key names -> key ids (names are unique).
API_KEY_NAMES = b"ms:kn"
PENDING = b"ms:vi:"
IDEMPOTENCY = b"ms:i:"
#: The event stream every webhook's consumer group reads.
EVENTS = b"ms:ev"
#: Pending backend verifications by the time their code expires (a sorted set).
EXPIRIES = b"ms:vx"
#: Held by the daemon sweeping EXPIRIES, so that one does at a time.
EXPIRY_SWEEP = b"ms:vx:lock"
#: The hash of suspended carriers: name -> JSON (unbind, by, at); no TTL.
SUSPENDED_CARRIERS = b"ms:cs"

LIMITS = b"ml:"
BLOCK = b"ml:block:"
#: A locked number's key is this prefix and the number's 16-byte HMAC.
NUMBER_LOCK = b"ml:lock:"


def _b64(ref: bytes) -> bytes:
    return base64.urlsafe_b64encode(ref).rstrip(b"=")


# -- sessions ------------------------------------------------------------------


def session(ref: bytes) -> bytes:
    """The hash of one session, by the HMAC of its Hawk id."""
    return SESSION + _b64(ref)


def nonce(name: bytes) -> bytes:
    """A Hawk nonce claimed within the clock skew."""
    return NONCE + name


def message_keys(carrier: str, ids: Iterable[str]) -> list[bytes]:
    """The records of sent messages by C{carrier}'s ids, then the early
    receipts kept under the same ids (one list, records first)."""
    names = [f"{carrier}:{i}".encode() for i in sorted(ids)]
    return [MESSAGE + n for n in names] + [EARLY_RECEIPT + n for n in names]


def session_ref_of(key: bytes) -> bytes:
    """The C{ref} a L{session} key was made from."""
    encoded = key[len(SESSION):]
    return base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4))


# -- backend verifications ---------------------------------------------------------


def api_key(key_id: str) -> bytes:
    """One API key's record (name, the HMAC of its secret, limits, times)."""
    return API_KEY + key_id.encode()


def pending_verification(key_id: str, number_ref: bytes) -> bytes:
    """The one pending verification of a number for an API key (its session key)."""
    return PENDING + key_id.encode() + b":" + _b64(number_ref)


def idempotency(key_id: str, digest: bytes) -> bytes:
    """A create request's outcome under its API key and C{Idempotency-Key} digest."""
    return IDEMPOTENCY + key_id.encode() + b":" + _b64(digest)


def dead_letters(webhook: str) -> bytes:
    """The entries a webhook gave up on (a list, newest first)."""
    return b"ms:wd:" + webhook.encode()


def webhook_status(webhook: str) -> bytes:
    """A webhook's last error and last success (a hash)."""
    return b"ms:ws:" + webhook.encode()


def api_key_rate(key_id: str) -> bytes:
    """An API key's request bucket (per minute)."""
    return LIMITS + b"kr:" + key_id.encode()


def api_key_budget(key_id: str, day: int) -> bytes:
    """An API key's verification sends on one UTC day."""
    return LIMITS + f"kb:{key_id}:{day}".encode()


# -- abuse limits --------------------------------------------------------------


def number_lock(number_ref: bytes) -> bytes:
    return NUMBER_LOCK + number_ref


def number_sends_10min(number_ref: bytes, window: int) -> bytes:
    return LIMITS + b"n10:" + number_ref + f":{window}".encode()


def number_sends_day(number_ref: bytes, day: int) -> bytes:
    return LIMITS + b"nd:" + number_ref + f":{day}".encode()


def number_failures_prefix() -> bytes:
    """What precedes the number's HMAC in L{number_failures}."""
    return LIMITS + b"nf:"


def day_suffix(day: int) -> bytes:
    """What follows the number's HMAC in L{number_failures}."""
    return f":{day}".encode()


def number_failures(number_ref: bytes, day: int) -> bytes:
    return number_failures_prefix() + number_ref + day_suffix(day)


def prefix_sends_day(prefix: str, day: int) -> bytes:
    return LIMITS + f"pd:{prefix}:{day}".encode()


def country_sends_day(country: str, day: int) -> bytes:
    return LIMITS + f"cd:{country}:{day}".encode()


def network_sends_day(network: str, day: int) -> bytes:
    return LIMITS + f"md:{network}:{day}".encode()


def client_bucket(kind: str, client_ref: bytes) -> bytes:
    """A client address's token bucket: C{kind} is C{rm}/C{rd} (registrations
    per minute / day) or C{sm}/C{sd} (sends)."""
    return LIMITS + kind.encode() + b":" + client_ref


def block(kind: str, what: str) -> bytes:
    """A pumping-guard block of a C{prefix} or C{network}."""
    return BLOCK + f"{kind}:{what}".encode()


def guard_series(event: str, kind: str, what: str) -> bytes:
    """The guard's counts by time bucket: C{event} C{s}ent or C{v}erified,
    C{kind} C{p}refix or C{n}etwork."""
    return LIMITS + f"g:{event}:{kind}:{what}".encode()


def sms_day(day: int) -> bytes:
    """Every SMS part sent on one UTC day, for the global budget."""
    return LIMITS + f"sms:{day}".encode()


def carrier_day(carrier: str, day: int) -> bytes:
    """A carrier's submits on one UTC day, for its daily cap."""
    return LIMITS + f"carrier:{carrier}:{day}".encode()


# -- carrier accounts shared by every daemon ------------------------------------


def account_tokens(account: str) -> bytes:
    """An account's throughput slice: a hash {n: slice, g: tokens granted}."""
    return LIMITS + b"acct:tp:" + account.encode()


def account_binds(account: str) -> bytes:
    """An account's bind permits: a sorted set of holders by lease expiry (ms)."""
    return LIMITS + b"acct:b:" + account.encode()
