"""Verification codes and the keyed forms in which anything secret is stored.

Codes come from C{secrets} and are uniform (upstream's short codes were
biased toward leading ones); they are stored only as MACs and compared in
constant time.  Phone numbers are stored encrypted under a key derived from
the client's Hawk id, which the server never stores, plus an HMAC for
lookups.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_MAC_BYTES = 16
_NONCE_BYTES = 12
#: How many sessions' number keys and stored ids a daemon keeps (L{_id_key},
#: L{session_ref}).
ID_KEYS_CACHED = 4096


def short_code(digits: int = 6) -> str:
    """C{digits} decimal digits, each value equally likely."""
    return f"{secrets.randbelow(10 ** digits):0{digits}d}"


def long_code(hex_chars: int = 32) -> str:
    """C{hex_chars} lowercase hex digits (the silent-SMS code)."""
    return secrets.token_hex(hex_chars // 2)


def code_mac(key: bytes, session_ref: bytes, code: str) -> bytes:
    """The stored form of C{code}: bound to its session, keyed, truncated to 128 bits."""
    return hmac.new(key, session_ref + b"\0" + code.encode("ascii"), hashlib.sha256).digest()[:_MAC_BYTES]


def same_mac(a: bytes, b: bytes) -> bool:
    """Constant-time equality of two MACs."""
    return hmac.compare_digest(a, b)


@functools.lru_cache(maxsize=ID_KEYS_CACHED)
def session_ref(key: bytes, hawk_id: str) -> bytes:
    """The stored form of a Hawk id: HMAC(secret, id), truncated to 128 bits.

    Each step of a session's flow asks for it: the last L{ID_KEYS_CACHED}
    are kept in process memory, as the number keys are (L{_id_key})."""
    return hmac.new(key, bytes.fromhex(hawk_id), hashlib.sha256).digest()[:_MAC_BYTES]


def number_ref(key: bytes, msisdn: str) -> bytes:
    """The lookup form of an E.164 number: HMAC(secret, number), truncated to 128 bits."""
    return hmac.new(key, msisdn.encode("ascii"), hashlib.sha256).digest()[:_MAC_BYTES]


def verified_mac(key: bytes, session_ref: bytes, number_ref: bytes, verified_ms: int,
                 method: str) -> bytes:
    """The proof kept beside a verified state: it binds the session, the
    number, when and how it was verified to a server secret."""
    message = b"\0".join((session_ref, number_ref, str(verified_ms).encode(), method.encode()))
    return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def proves_verified(key: bytes, session_ref: bytes, fields: dict, msisdn: str,
                    number_key: bytes) -> bool:
    """Whether a session's fields hold a verified state the server wrote for
    C{msisdn}: its number's HMAC matches, and so does the proof (constant time)."""
    number = fields.get("h", b"")
    proof = fields.get("vm", b"")
    verified = fields.get("v")
    if verified is None or not same_mac(number_ref(number_key, msisdn), number):
        return False
    method = fields.get("m", b"").decode("ascii", "replace")
    return same_mac(verified_mac(key, session_ref, number, int(verified), method), proof)


@functools.lru_cache(maxsize=ID_KEYS_CACHED)
def _id_key(hawk_id: str) -> bytes:
    """The key a session's number is sealed under: HKDF-SHA256 of its Hawk id,
    no salt, info C{msisdnd/number-at-rest}, 32 bytes.

    A session's steps open its number several times within minutes (a flow
    seals it once and opens it two or three times): the last
    L{ID_KEYS_CACHED} keys are kept in process memory, beside the Hawk keys
    the authenticator caches.
    """
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"msisdnd/number-at-rest").derive(bytes.fromhex(hawk_id))


def seal(key: bytes, plain: bytes) -> bytes:
    """C{plain} encrypted and authenticated under C{key} (32 bytes), with a random nonce."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plain, None)


def unseal(key: bytes, sealed: bytes) -> bytes | None:
    """What L{seal} sealed, or C{None} if it does not open with C{key}."""
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], None)
    except (InvalidTag, ValueError):
        return None


def seal_number(hawk_id: str, msisdn: str) -> bytes:
    """C{msisdn} encrypted under a key only the holder of C{hawk_id} can derive."""
    return seal(_id_key(hawk_id), msisdn.encode("ascii"))


def open_number(hawk_id: str, sealed: bytes) -> str | None:
    """The number L{seal_number} sealed, or C{None} if it does not open with this id."""
    plain = unseal(_id_key(hawk_id), sealed)
    return None if plain is None else plain.decode("ascii")
