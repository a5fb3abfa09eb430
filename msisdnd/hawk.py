"""Hawk sessions: token derivation, Authorization header parsing and checking.

A session is a random 32-byte C{msisdnSessionToken}.  Client and server both
derive the Hawk credentials from it with HKDF (L{derive_session}); the server
keeps the Hawk key in Redis under an HMAC of the id
(L{msisdnd.verification.codes.session_ref}) and never stores the id itself.

The header is parsed once, strictly, here (the grammar mohawk's parser
accepts, in one pass); mohawk computes the MAC (its C{calculate_mac}) and
normalizes the content type for the payload hash (C{parse_content_type}),
and the comparisons are C{hmac.compare_digest}.  mohawk's C{Receiver} is not
used: it parses the header again and formats debug messages eagerly on every
request.  Neither is its C{calculate_payload_hash}: see L{payload_hash}.

Checking a request is split around the caller's Redis round trips::

    parsed = parse_header(request_authorization)        # 400 / 401, no I/O
    key = <fetch from Redis by session_ref(secret, parsed.id)>
                                                        # absent: UnknownSession
    verify_request(parsed, credentials, method=..., url=..., content=...,
                   content_type=..., now=...)           # MAC, hash, clock
    <the step's first script: SET nonce_key(parsed) 1 NX EX nonce_ttl(skew),
     and nothing else if it was set>                    # set: ReplayedNonce

This module does no I/O and imports nothing from Twisted.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlparse

import mohawk
import mohawk.util
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from mohawk.base import EmptyValue

__all__ = [
    "BadMAC",
    "HawkCredentials",
    "HawkError",
    "MalformedHeader",
    "MissingAuthorization",
    "MissingPayloadHash",
    "ParsedHeader",
    "ReplayedNonce",
    "StaleTimestamp",
    "UnknownSession",
    "authorization_header",
    "derive_session",
    "is_hawk_id",
    "new_session_token",
    "nonce_key",
    "nonce_ttl",
    "parse_header",
    "payload_hash",
    "verify_request",
]

SESSION_TOKEN_INFO = b"identity.mozilla.com/picl/v1/sessionToken"
TOKEN_LENGTH = 32
MAX_HEADER_LENGTH = 4096
DEFAULT_SKEW = 60

_HAWK_ID = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,20}")
#: One attribute of a Hawk header: a name, a quoted value of the characters Hawk
#: allows (no quote, no backslash, no control character), then a comma or the end.
_ATTRIBUTE = re.compile(
    r'(\w+)="([ a-zA-Z0-9_!#$%&\'()*+,\-./:;<=>?@\[\]^`{|}~]*)"\s*(?:,\s*|$)')
#: The attribute names a Hawk header may carry.
_ATTRIBUTE_NAMES = frozenset(("id", "ts", "tsm", "nonce", "hash", "error", "ext", "mac", "app",
                              "dlg"))


@dataclass(frozen=True)
class HawkCredentials:
    """Hawk credentials of one session.

    @ivar id: the Hawk id, 64 lowercase hex digits.
    @ivar key: the Hawk key as 64 hex digits; this hex I{string} (its ASCII
        bytes) is the HMAC key, as upstream clients use it.
    @ivar algorithm: the MAC hash, always C{"sha256"} for sessions.
    """

    id: str
    key: str
    algorithm: str = "sha256"

    def _as_mohawk(self) -> dict[str, str]:
        # A fresh dict each time: mohawk's Resource writes into it.
        return {"id": self.id, "key": self.key, "algorithm": self.algorithm}


class ParsedHeader(NamedTuple):
    """A syntactically valid Hawk C{Authorization} header, not yet verified.

    A named tuple: immutable as a frozen dataclass is, made in under half
    its time (one per device request).

    @ivar id: the Hawk id, 64 lowercase hex digits.
    @ivar ts: the client's timestamp, seconds since the epoch.
    @ivar nonce: the client's nonce (non-empty).
    @ivar mac: the request MAC as sent (base64).
    @ivar hash: the payload hash as sent, or C{None} if the client sent none.
    @ivar ext: the C{ext} value, or C{None}.
    @ivar raw: the whole header, as given to L{parse_header}.
    @ivar app: the C{app} value, or C{None}.
    @ivar dlg: the C{dlg} value, or C{None}.
    @ivar ts_text: C{ts} as sent (digits): the MAC covers this text.
    """

    id: str
    ts: int
    nonce: str
    mac: str
    hash: str | None
    ext: str | None
    raw: str
    app: str | None = None
    dlg: str | None = None
    ts_text: str = ""


class HawkError(Exception):
    """A request failed Hawk authentication.

    The HTTP layer answers C{status} with errno 110, and sends
    C{www_authenticate} (when not C{None}) as the C{WWW-Authenticate} header.
    C{reason} is safe to show the client; the exception's message is not
    (it may hold mohawk's details).

    @ivar status: 400 (malformed header) or 401.
    @ivar reason: a short human message.
    @ivar www_authenticate: the C{WWW-Authenticate} value, or C{None}.
    """

    status: int = 401
    reason: str = "Unauthorized"
    www_authenticate: str | None = None

    def __init__(self, detail: str = "", www_authenticate: str | None = None) -> None:
        super().__init__(detail or self.reason)
        if www_authenticate is not None:
            self.www_authenticate = www_authenticate


class MalformedHeader(HawkError):
    """The header is not a well-formed Hawk header (or is over 4 KiB)."""

    status = 400
    reason = "Malformed Hawk header"


class MissingAuthorization(HawkError):
    """The request has no C{Authorization} header at all."""

    reason = "Missing Authorization header"
    www_authenticate = "Hawk"


class UnknownSession(HawkError):
    """The Hawk id names no live session (raised by the caller on a Redis miss)."""

    reason = "Unknown credentials"
    www_authenticate = 'Hawk error="Unknown credentials"'


class MissingPayloadHash(HawkError):
    """A request with a body declared no payload hash, and one is required:
    without it, the body is not authenticated (a captured header could carry
    another body)."""

    reason = "Payload hash required"
    www_authenticate = 'Hawk error="Payload hash required"'


class BadMAC(HawkError):
    """The MAC, or the payload hash the client declared, does not match."""

    reason = "Bad mac"
    www_authenticate = 'Hawk error="Bad mac"'


class StaleTimestamp(HawkError):
    """The MAC is good but the timestamp is outside the allowed skew.

    C{www_authenticate} is C{Hawk ts="<server time>", tsm="<MAC of it>",
    error="Stale timestamp"} so that the client can verify it and correct
    its clock offset.
    """

    reason = "Stale timestamp"


class ReplayedNonce(HawkError):
    """The (id, ts, nonce) triple was already used (raised by the caller)."""

    reason = "Invalid nonce"
    www_authenticate = 'Hawk error="Invalid nonce"'


def new_session_token() -> bytes:
    """A new random session token (32 bytes; clients see it hex-encoded)."""
    return secrets.token_bytes(TOKEN_LENGTH)


def derive_session(token: bytes) -> HawkCredentials:
    """The Hawk credentials of the session with token C{token}.

    HKDF-SHA256 with no salt and info
    C{identity.mozilla.com/picl/v1/sessionToken}, 64 bytes: the first 32 as
    hex are the id, the last 32 as hex are the key.

    @raise ValueError: if C{token} is not 32 bytes long.
    """
    if len(token) != TOKEN_LENGTH:
        raise ValueError(f"session token must be {TOKEN_LENGTH} bytes")
    okm = HKDF(
        algorithm=hashes.SHA256(), length=64, salt=None, info=SESSION_TOKEN_INFO
    ).derive(token)
    return HawkCredentials(id=okm[:32].hex(), key=okm[32:].hex())


def is_hawk_id(text: str) -> bool:
    """Whether C{text} has the shape of a Hawk id (64 lowercase hex digits)."""
    return _HAWK_ID.fullmatch(text) is not None


def parse_header(header: str | None) -> ParsedHeader:
    """Parse an C{Authorization} header (as text) into a L{ParsedHeader}.

    Only syntax is checked; the id is not looked up and nothing is verified.
    A header that is not pure ASCII is malformed, so the HTTP layer may
    decode the raw bytes as Latin-1.

    @raise MissingAuthorization: if C{header} is C{None}.
    @raise MalformedHeader: for anything else that is not a Hawk header with
        C{id} (64 lowercase hex), C{ts} (digits), C{nonce} and C{mac}, and for
        headers over 4 KiB.
    """
    if header is None:
        raise MissingAuthorization()
    if len(header) > MAX_HEADER_LENGTH:
        raise MalformedHeader("header too long")
    if not header.isascii():
        raise MalformedHeader("header is not ASCII")
    scheme, space, text = header.partition(" ")
    if not space or scheme.lower() != "hawk":
        raise MalformedHeader("not a Hawk header")
    attributes: dict[str, str] = {}
    pos, end = 0, len(text)
    while pos < end:
        match = _ATTRIBUTE.match(text, pos)
        if match is None:
            raise MalformedHeader("not a list of Hawk attributes")
        name, value = match.groups()
        if name not in _ATTRIBUTE_NAMES:
            raise MalformedHeader(f"unknown attribute {name!r}")
        if name in attributes:
            raise MalformedHeader(f"duplicate attribute {name!r}")
        attributes[name] = value
        pos = match.end()
    for name in ("id", "ts", "nonce", "mac"):
        if not attributes.get(name):
            raise MalformedHeader(f"missing {name}")
    if not is_hawk_id(attributes["id"]):
        raise MalformedHeader("id is not a Hawk id")
    if _TIMESTAMP.fullmatch(attributes["ts"]) is None:
        raise MalformedHeader("ts is not a number")
    return ParsedHeader(
        id=attributes["id"],
        ts=int(attributes["ts"]),
        nonce=attributes["nonce"],
        mac=attributes["mac"],
        hash=attributes.get("hash"),
        ext=attributes.get("ext"),
        raw=header,
        app=attributes.get("app"),
        dlg=attributes.get("dlg"),
        ts_text=attributes["ts"],
    )


class _Resource:
    """What C{mohawk.util.calculate_mac} reads of a request: its fields as sent."""

    __slots__ = ("app", "credentials", "dlg", "ext", "host", "method", "name", "nonce", "port",
                 "timestamp")

    def __init__(self, parsed: ParsedHeader, credentials: HawkCredentials, method: str,
                 url: str) -> None:
        self.credentials = {"key": credentials.key, "algorithm": credentials.algorithm}
        self.timestamp = parsed.ts_text or str(parsed.ts)
        self.nonce = parsed.nonce
        self.method = method.upper()
        self.name, self.host, self.port = _url_parts(url)
        self.ext, self.app, self.dlg = parsed.ext, parsed.app, parsed.dlg


@functools.lru_cache(maxsize=256)
def _url_parts(url: str) -> tuple[str, str, str]:
    """The resource (path and query), host and port the MAC covers, as mohawk reads a URL."""
    parts = urlparse(url)
    resource = f"{parts.path}?{parts.query}" if parts.query else parts.path
    port = parts.port
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme)
    return resource or "", parts.hostname or "", str(port)


def payload_hash(content: bytes, content_type: str, algorithm: str = "sha256") -> bytes:
    """Hawk's payload hash of C{content} sent as C{content_type} (base64, as bytes).

    The same bytes as C{mohawk.util.calculate_payload_hash(content,
    algorithm, content_type)}: the hash of C{hawk.1.payload\\n}, mohawk's
    normalized content type (C{parse_content_type}: up to the first C{;},
    stripped, lowercased) and C{\\n}, the body, C{\\n}; text as UTF-8.
    mohawk's function is not called because it also builds a debug message
    holding a C{pprint.pformat} of everything it hashed, the body included,
    on every call (about 90 us for a 700-byte C{certificate/sign} body,
    against 2 us for the hash).  tests/test_hawk.py proves the two equal
    (C{test_payload_hash_is_mohawks}) and that mohawk's C{Sender} and
    C{Receiver} agree with L{verify_request}.
    """
    digest = hashlib.new(algorithm, b"hawk.1.payload\n")
    digest.update(mohawk.util.parse_content_type(content_type).encode("utf-8"))
    digest.update(b"\n")
    digest.update(content)
    digest.update(b"\n")
    return base64.b64encode(digest.digest())


def verify_request(
    parsed: ParsedHeader,
    credentials: HawkCredentials,
    *,
    method: str,
    url: str,
    content: bytes,
    content_type: str,
    now: float,
    skew: float = DEFAULT_SKEW,
    require_hash: bool = False,
) -> None:
    """Check the MAC, the payload hash if any, and the timestamp of a request.

    C{url} must be built by the caller from the I{configured} public URL
    (scheme, host, port) and the request's raw path and query: the C{Host}
    header is never trusted, and behind a TLS-terminating proxy the MAC is
    over port 443 even though the daemon listens elsewhere.

    When the client sent a payload hash, C{content} and C{content_type} must
    match it.  When it sent none (as upstream clients did), a request with a
    body is refused if C{require_hash}, and otherwise accepted with its body
    unauthenticated (the legacy switch).

    The MAC is checked before the timestamp, so only a holder of the key
    learns the server time from L{StaleTimestamp}.  Nonces are not checked
    here: the caller claims L{nonce_key} in Redis after this returns.

    @param now: the current time (seconds since the epoch); tests pin it.
    @param skew: the largest accepted difference between C{ts} and C{now}.

    @raise UnknownSession: if C{credentials} are not those of C{parsed.id}.
    @raise BadMAC: if the MAC or the declared payload hash does not match.
    @raise StaleTimestamp: if the MAC is good but C{ts} is too far from C{now}.
    @raise MissingPayloadHash: a body and no hash, when C{require_hash}.
    """
    if not hmac.compare_digest(parsed.id, credentials.id):
        raise UnknownSession("credentials are for another id")
    if require_hash and content and parsed.hash is None:
        raise MissingPayloadHash("no payload hash for a request with a body")
    server_ts = math.floor(now)
    mac = mohawk.util.calculate_mac("header", _Resource(parsed, credentials, method, url),
                                    parsed.hash or "")
    if not hmac.compare_digest(mac, parsed.mac.encode("ascii")):
        # Never our MAC in the message: it goes to logs.
        raise BadMAC("MAC mismatch")
    if parsed.hash is not None:
        ours = payload_hash(content, content_type, credentials.algorithm)
        if not hmac.compare_digest(ours, parsed.hash.encode("ascii")):
            raise BadMAC("payload hash mismatch")
    if abs(parsed.ts - server_ts) > skew:
        tsm = mohawk.util.calculate_ts_mac(server_ts, credentials._as_mohawk())
        raise StaleTimestamp(
            www_authenticate=(
                f'Hawk ts="{server_ts}", tsm="{tsm.decode("ascii")}", '
                'error="Stale timestamp"'
            )
        )


def nonce_key(parsed: ParsedHeader) -> str:
    """The Redis key recording the use of C{parsed}'s (id, ts, nonce).

    After L{verify_request} passed, the caller's first Lua script for the
    request runs C{SET <key> 1 NX EX <nonce_ttl(skew)>} before anything
    else, and does nothing more when the key already existed (the caller
    then raises L{ReplayedNonce}).  The key is C{"hn:"} and 22 base64url
    characters: a 128-bit truncated SHA-256 of the triple.
    """
    triple = f"{parsed.id}\n{parsed.ts}\n{parsed.nonce}".encode("ascii")
    digest = hashlib.sha256(triple).digest()[:16]
    return "hn:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def nonce_ttl(skew: float = DEFAULT_SKEW) -> int:
    """Seconds a nonce key must live: as long as its C{ts} can be accepted.

    A C{ts} is accepted from C{ts - skew} to C{ts + skew}, so C{2 * skew};
    plus 2 s for clock flooring and for daemons whose clocks differ slightly.
    """
    return math.ceil(2 * skew) + 2


def authorization_header(
    credentials: HawkCredentials,
    method: str,
    url: str,
    content: bytes = b"",
    content_type: str = "",
    *,
    ts: int | None = None,
    nonce: str | None = None,
    with_hash: bool = False,
) -> str:
    """A Hawk C{Authorization} header for a request (the reference client's signer).

    @param url: the absolute URL the client calls; its host and port are
        MAC'd, so it must be the server's public URL.
    @param ts: the timestamp to sign, default now.
    @param nonce: the nonce, default 16 random base64url characters.
    @param with_hash: include a payload hash over C{content} and
        C{content_type}.  Upstream clients send none, which leaves the body
        unauthenticated.
    """
    if nonce is None:
        nonce = secrets.token_urlsafe(12)
    if not with_hash:
        content, content_type = EmptyValue, EmptyValue
    sender = mohawk.Sender(
        credentials._as_mohawk(),
        url,
        method,
        content=content,
        content_type=content_type,
        always_hash_content=with_hash,
        nonce=nonce,
        _timestamp=ts,
    )
    return sender.request_header
