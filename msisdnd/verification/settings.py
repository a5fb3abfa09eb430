"""The verification service's settings and secrets, fixed at start-up.

These are plain values: the configuration loader fills them once, and
nothing reads the environment or files later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


@dataclass(frozen=True, slots=True)
class VerificationSettings:
    """Codes, tries, sends and lifetimes (seconds unless named otherwise).

    Defaults follow NIST SP 800-63B and OWASP ASVS V2.7: codes live ten
    minutes, are used once, are stored only as MACs, and tries are few.
    """

    short_code_digits: int = 6
    long_code_hex: int = 32
    code_ttl: float = 600.0
    max_tries: int = 3
    resend_cooldown: float = 30.0
    max_resends: int = 3
    unverified_session_ttl: float = 1800.0
    verified_session_ttl: float = 90 * 86400.0
    certificate_max_duration: int = 86400
    send_timeout: float = 10.0
    hawk_skew: float = 60.0
    store_timeout: float = 1.5

    @property
    def max_sends(self) -> int:
        """The first send and its resends."""
        return 1 + self.max_resends


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"msisdnd/" + purpose).derive(master)


@dataclass(frozen=True, slots=True)
class Secrets:
    """Keys derived from one master secret, one per purpose.

    @ivar session: keys the HMAC of a Hawk id, the only form in which the id
        is stored.
    @ivar code: keys the MAC of a verification code.
    @ivar number: keys the HMAC of a phone number, for lookups and limits.
    @ivar pseudonym: keys the stable pseudonymous ids in certificates.
    @ivar transit: seals what the server must read back without the client
        (a number awaiting its delivery receipt), for minutes at most.
    @ivar api_key: keys the HMAC of backend API keys' secrets, the only form
        in which they are stored.
    @ivar backend: seals what a backend verification keeps for its API key to
        read back (the number, an idempotent reply), for a day at most.
    @ivar events: seals the number a device event carries until the event is
        delivered (a day at most).
    @ivar verified: keys the MAC that binds a verified state to its session,
        number, time and method, so that a write to Redis cannot forge one.
    """

    session: bytes = field(repr=False)
    code: bytes = field(repr=False)
    number: bytes = field(repr=False)
    pseudonym: bytes = field(repr=False)
    transit: bytes = field(repr=False)
    api_key: bytes = field(repr=False)
    backend: bytes = field(repr=False)
    events: bytes = field(repr=False)
    verified: bytes = field(repr=False)

    @classmethod
    def from_master(cls, master: bytes) -> "Secrets":
        if len(master) < 32:
            raise ValueError("the master secret must be at least 32 bytes")
        return cls(_derive(master, b"session"), _derive(master, b"code"),
                   _derive(master, b"number"), _derive(master, b"pseudonym"),
                   _derive(master, b"transit"), _derive(master, b"api-key"),
                   _derive(master, b"backend"), _derive(master, b"events"),
                   _derive(master, b"verified"))


@dataclass(frozen=True, slots=True)
class PublicURL:
    """Where clients reach us, as configured (never from the Host header).

    @ivar base: e.g. C{https://verify.example.com/v1/msisdn} (no trailing /).
    """

    base: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"public URL must be http(s)://host[:port][/prefix]: {self.base!r}")
        object.__setattr__(self, "base", self.base.rstrip("/"))

    @property
    def host(self) -> str:
        return urlsplit(self.base).hostname or ""

    @property
    def prefix(self) -> str:
        """The path the front proxy mounts us under (C{""} when none)."""
        return urlsplit(self.base).path.rstrip("/")

    def url_for(self, path: str, query: str = "") -> str:
        """The public URL of one of our routes (C{path} as the daemon sees it)."""
        return self.base + path + (f"?{query}" if query else "")
