"""Certificates that say "this key belongs to whoever controls this number".

Two forms come out of here, both signed with PyJWT:

  - the BrowserID certificate that upstream msisdn-gateway clients ask
    C{/certificate/sign} for: RS256 over the server's RSA key, timestamps in
    milliseconds, the client's BrowserID key echoed as C{public-key};
  - a JWT for relying parties (RFC 8725 practice): EdDSA, a C{kid} found in
    L{Signer.jwks}, OIDC phone claims, and the client's key bound as
    C{cnf.jwk} (RFC 7800) when it can be written as a JWK.

The module also parses what the client posts (L{parse_browserid_key},
L{parse_duration}) and loads or generates the server's signing keys.  It
knows nothing of HTTP, sessions or Redis.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm
from jwt.utils import base64url_encode

__all__ = [
    "BrowserIDKey",
    "CertificateError",
    "Signer",
    "SigningKey",
    "generate_ed25519_key",
    "generate_rsa_key",
    "load_signing_key",
    "parse_browserid_key",
    "parse_duration",
]

MAX_PUBLIC_KEY_BYTES = 8 * 1024
"""The longest C{publicKey} string accepted, in UTF-8 bytes."""

BROWSERID_RSA_BITS = 2048
"""The only RSA modulus size BrowserID verifiers accept for an issuer key.

jwcrypto (browserid-crypto), which Firefox and the Mozilla verifier use,
maps an RS key to a key size by its modulus (512, 1024 or 2048 bits, give or
take one) and rejects anything else as a bad key, so a 3072-bit issuer key
would produce certificates nobody can verify.
"""

ISSUED_AT_BACKDATE = 10
"""Seconds a BrowserID certificate's C{iat} is set in the past, for verifiers'
clock skew (as upstream)."""

_PSEUDONYM_HEX_CHARS = 32
_MIN_SECRET_BYTES = 16
_HEX_DIGITS = frozenset(string.hexdigits)

RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192
"""The sizes of client RSA moduli accepted, in bits."""

RSA_EXPONENT_LIMIT = 1 << 32
"""Client RSA exponents must be below this (and odd, and at least 3)."""

# The primes below 1000, and their product: a modulus sharing a factor with
# it is not a product of two large primes.
_SMALL_PRIMES = frozenset(
    p for p in range(2, 1000) if all(p % d for d in range(2, math.isqrt(p) + 1)))
_SMALL_PRIMES_PRODUCT = math.prod(_SMALL_PRIMES)

_RSA_FIELDS = ("n", "e")
_DSA_FIELDS = ("y", "p", "q", "g")

ClientPublicKey = rsa.RSAPublicKey | dsa.DSAPublicKey
ServerPrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class CertificateError(ValueError):
    """The client's certificate request is unusable.

    The message says why in words fit for the C{message} of an HTTP 400
    answer; it never repeats the client's input.
    """


@dataclass(frozen=True, slots=True)
class BrowserIDKey:
    """A client's BrowserID public key, checked.

    @ivar algorithm: C{"RS"} or C{"DS"}.
    @ivar raw: the JSON object the client posted, unchanged, to be echoed as
        the certificate's C{public-key}.
    @ivar public_key: the same key as a C{cryptography} public key.
    """

    algorithm: str
    raw: dict[str, Any]
    public_key: ClientPublicKey

    def to_jwk(self) -> dict[str, str] | None:
        """The key as an RFC 7517 JWK, for C{cnf.jwk}.

        @return: C{{"kty": "RSA", "n": ..., "e": ...}} (base64url) for an RS
            key; C{None} for a DS key, since JWK has no DSA key type.
        """
        if not isinstance(self.public_key, rsa.RSAPublicKey):
            return None
        full = RSAAlgorithm.to_jwk(self.public_key, as_dict=True)
        return {"kty": "RSA", "n": full["n"], "e": full["e"]}


def parse_browserid_key(value: object) -> BrowserIDKey:
    """Check the C{publicKey} a client posted to C{/certificate/sign}.

    C{value} is a JSON string holding C{{"algorithm": "RS", "n", "e"}} or
    C{{"algorithm": "DS", "y", "p", "q", "g"}}, each number a string of
    decimal or hex digits: the BrowserID draft allows both, and jwcrypto
    writes RS keys in decimal and DS keys in hex.  A key whose numbers are
    all made of the digits 0-9 is read as decimal, any other as hex.  The
    choice is made per key, not per number: a hex key's C{e} of 65537 is
    C{"10001"}, which alone would pass for decimal.  Members other than
    these are allowed and kept in L{BrowserIDKey.raw}.

    The checks (each refusal says which one failed):
      - RS: the modulus C{n} 2048 to 8192 bits, odd, and with no prime
        factor below 1000 (so C{2^8191 + 1}, a multiple of 3, is refused);
        the exponent C{e} odd and C{3 <= e < 2^32} (an C{e} near C{n} is
        refused).  SP 800-56B's partial public-key validation, less its
        test that C{n} is composite, which costs a modular exponentiation
        of up to 8192 bits per request.
      - DS: C{p} 1024 to 4096 bits, C{q} 160 or 256 bits, prime, dividing
        C{p - 1}, C{1 < g < p}, C{1 < y < p}; C{cryptography} must accept
        the numbers as a key (C{p} of 1024, 2048, 3072 or 4096 bits); then
        C{g^q = 1} and C{y^q = 1 (mod p)}: both lie in the subgroup of
        order C{q} (FIPS 186-4 / SP 800-89), which refuses C{g} or C{y} of
        C{p - 1}, of order 2.  C{q} must be prime (Miller-Rabin, 16 random
        bases), so that C{g} and C{y} have order C{q} exactly; the
        primality of C{p} is not tested (4096-bit exponentiations).

    @param value: the C{publicKey} member of the request body.
    @return: the checked key.
    @raise CertificateError: if C{value} is not such a key.
    """
    if not isinstance(value, str):
        raise CertificateError("publicKey must be a string holding a JSON object")
    if (
        len(value) > MAX_PUBLIC_KEY_BYTES
        or len(value.encode("utf-8", "surrogatepass")) > MAX_PUBLIC_KEY_BYTES
    ):
        raise CertificateError(
            f"publicKey must be at most {MAX_PUBLIC_KEY_BYTES} bytes long")
    try:
        raw = json.loads(value, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise CertificateError("publicKey is not valid JSON") from None
    if not isinstance(raw, dict):
        raise CertificateError("publicKey must be a JSON object")

    algorithm = raw.get("algorithm")
    if algorithm == "RS":
        public_key: ClientPublicKey = _rsa_public_key(raw)
    elif algorithm == "DS":
        public_key = _dsa_public_key(raw)
    else:
        raise CertificateError('publicKey algorithm must be "RS" or "DS"')
    return BrowserIDKey(algorithm=algorithm, raw=raw, public_key=public_key)


def _reject_constant(name: str) -> object:
    # NaN and Infinity are not JSON, and would make the certificate invalid
    # JSON when an unknown member carrying them is echoed.
    raise ValueError(name)


def _numbers(raw: dict[str, Any], names: Sequence[str]) -> list[int]:
    """The positive integers in members C{names}, in that order.

    They are all read in one base: decimal if every one of them is made of
    decimal digits only, else hex.  Deciding value by value would misread
    hex keys, whose C{e} of 65537 is written C{"10001"}.
    """
    texts = []
    for name in names:
        if name not in raw:
            raise CertificateError(f'publicKey is missing "{name}"')
        text = raw[name]
        if (not isinstance(text, str) or not text or not text.isascii()
                or not _HEX_DIGITS.issuperset(text)):
            raise CertificateError(
                f'publicKey "{name}" must be a string of decimal or hex digits')
        texts.append(text)
    if all(text.isdigit() for text in texts):
        try:
            numbers = [int(text, 10) for text in texts]
        except ValueError:
            # int() refuses decimal strings past sys.get_int_max_str_digits().
            raise CertificateError("publicKey numbers are too long") from None
    else:
        numbers = [int(text, 16) for text in texts]
    for name, number in zip(names, numbers):
        if number <= 0:
            raise CertificateError(f'publicKey "{name}" must be positive')
    return numbers


def _rsa_public_key(raw: dict[str, Any]) -> rsa.RSAPublicKey:
    n, e = _numbers(raw, _RSA_FIELDS)
    if not RSA_MIN_BITS <= n.bit_length() <= RSA_MAX_BITS:
        raise CertificateError(
            f"RSA publicKey modulus must be {RSA_MIN_BITS} to {RSA_MAX_BITS} bits")
    if e < 3 or e % 2 == 0:
        raise CertificateError("RSA publicKey exponent must be odd and at least 3")
    if e >= RSA_EXPONENT_LIMIT:
        raise CertificateError("RSA publicKey exponent must be below 2^32")
    if n % 2 == 0:
        raise CertificateError("RSA publicKey modulus must be odd")
    if math.gcd(n, _SMALL_PRIMES_PRODUCT) != 1:
        raise CertificateError("RSA publicKey modulus has a small prime factor")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        raise CertificateError("publicKey is not a usable RSA key") from None


def _dsa_public_key(raw: dict[str, Any]) -> dsa.DSAPublicKey:
    y, p, q, g = _numbers(raw, _DSA_FIELDS)
    if p.bit_length() < 1024:
        raise CertificateError('DSA publicKey "p" must be at least 1024 bits')
    if p.bit_length() > 4096:
        raise CertificateError('DSA publicKey "p" must be at most 4096 bits')
    if q.bit_length() not in (160, 256):
        raise CertificateError('DSA publicKey "q" must be 160 or 256 bits')
    if not _probably_prime(q):
        raise CertificateError('DSA publicKey "q" must be prime')
    if (p - 1) % q:
        raise CertificateError('DSA publicKey "q" must divide p - 1')
    if not 1 < g < p:
        raise CertificateError('DSA publicKey "g" must be between 1 and p')
    if not 1 < y < p:
        raise CertificateError('DSA publicKey "y" must be between 1 and p')
    try:
        public_key = dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
    except ValueError:
        raise CertificateError("publicKey is not a usable DSA key") from None
    # p has at most 4096 bits and q 256: two such exponentiations are cheap.
    if pow(g, q, p) != 1:
        raise CertificateError('DSA publicKey "g" must generate the subgroup of order q')
    if pow(y, q, p) != 1:
        raise CertificateError('DSA publicKey "y" must lie in the subgroup of order q')
    return public_key


def _probably_prime(n: int, rounds: int = 16) -> bool:
    """Miller-Rabin with random bases: a composite passes with odds below 4^-rounds.

    Random bases, since a client could choose a composite that passes any
    fixed set.  Meant for DSA's C{q} (at most 256 bits): cheap.
    """
    if n < 2 or math.gcd(n, _SMALL_PRIMES_PRODUCT) != 1:
        return n in _SMALL_PRIMES
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(rounds):
        x = pow(2 + secrets.randbelow(n - 3), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def parse_duration(value: object, maximum: int) -> int:
    """Check the C{duration} a client asked its certificate to last.

    @param value: the C{duration} member of the request body: a whole number
        of seconds, as a JSON integer or an integral number such as
        C{3600.0}.  Booleans, strings, NaN and infinities are refused.
    @param maximum: the longest lifetime this server grants, in seconds.
    @return: C{value} as an C{int}, lowered to C{maximum} if above it (a cap,
        not an error: upstream clients ask for what they like).
    @raise CertificateError: if C{value} is not a positive whole number.
    """
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CertificateError("duration must be a positive whole number of seconds")
    return min(value, maximum)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One of the server's private signing keys.

    @ivar kid: its key id: the RFC 7638 JWK thumbprint of the public key
        (base64url SHA-256), which is standard, does not depend on where
        the file lives, and changes whenever the key does.
    @ivar private_key: an RSA or Ed25519 private key.
    @ivar algorithm: the JWS C{alg} it signs with: C{"RS256"} or C{"EdDSA"}.
    """

    kid: str
    private_key: ServerPrivateKey
    algorithm: str

    def public_jwk(self) -> dict[str, str]:
        """The public half as a JWK, with C{kid}, C{use} and C{alg}.

        @return: a new dict, fit for a JWKS C{keys} list.
        """
        jwk = _bare_public_jwk(self.private_key)
        jwk.update(kid=self.kid, use="sig", alg=self.algorithm)
        return jwk


def _bare_public_jwk(private_key: ServerPrivateKey) -> dict[str, str]:
    """The public key's JWK with only its RFC 7638 required members."""
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        full = RSAAlgorithm.to_jwk(public, as_dict=True)
        return {"kty": "RSA", "n": full["n"], "e": full["e"]}
    full = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {"kty": "OKP", "crv": full["crv"], "x": full["x"]}


def _thumbprint(jwk: dict[str, str]) -> str:
    """The RFC 7638 thumbprint of a JWK holding exactly its required members."""
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":"))
    digest = hashes.Hash(hashes.SHA256())
    digest.update(canonical.encode("utf-8"))
    return base64url_encode(digest.finalize()).decode("ascii")


def _signing_key(private_key: object, origin: str) -> SigningKey:
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < 2048:
            raise ValueError(
                f"{origin}: RSA key is {private_key.key_size} bits, at least 2048 needed")
        algorithm = "RS256"
    elif isinstance(private_key, ed25519.Ed25519PrivateKey):
        algorithm = "EdDSA"
    else:
        # A file holding the wrong kind of key is a bad value, not a bug.
        raise ValueError(f"{origin}: not an RSA or Ed25519 private key")  # noqa: TRY004
    return SigningKey(
        kid=_thumbprint(_bare_public_jwk(private_key)),
        private_key=private_key,
        algorithm=algorithm,
    )


def key_slot_problem(slot: str, key: SigningKey) -> str | None:
    """Why C{key} cannot sign in C{slot} (C{"browserid"}: RSA of exactly
    L{BROWSERID_RSA_BITS} bits; C{"jwt"}: Ed25519), or C{None} when it can."""
    if slot == "browserid":
        if (not isinstance(key.private_key, rsa.RSAPrivateKey) or key.algorithm != "RS256"
                or key.private_key.key_size != BROWSERID_RSA_BITS):
            return f"must be a {BROWSERID_RSA_BITS}-bit RSA key"
    elif not isinstance(key.private_key, ed25519.Ed25519PrivateKey) or key.algorithm != "EdDSA":
        return "must be an Ed25519 key"
    return None


def load_signing_key(path: str) -> SigningKey:
    """Read a signing key from an unencrypted PEM file.

    @param path: a PKCS8 (C{BEGIN PRIVATE KEY}) file, or the traditional
        OpenSSL form, holding an RSA key of at least 2048 bits or an Ed25519
        key.
    @return: the key, its C{kid} the RFC 7638 thumbprint (see L{SigningKey}).
    @raise OSError: if the file cannot be read.
    @raise ValueError: if it holds no such key, or an encrypted one.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(f"{path}: the key is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{path}: not a PEM private key") from None
    return _signing_key(private_key, path)


def generate_rsa_key(path: str, bits: int = BROWSERID_RSA_BITS) -> SigningKey:
    """Make a new RSA signing key and write it to a new file.

    @param path: where to write it, as unencrypted PKCS8 PEM, mode 0600.
    @param bits: the modulus size; keep the default for BrowserID (see
        L{BROWSERID_RSA_BITS}).
    @return: the new key.
    @raise FileExistsError: if C{path} exists; a key is never overwritten.
    @raise ValueError: if C{bits} is below 2048.
    """
    if bits < 2048:
        raise ValueError(f"RSA keys need at least 2048 bits, not {bits}")
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    _write_private_key(path, private_key)
    return _signing_key(private_key, path)


def generate_ed25519_key(path: str) -> SigningKey:
    """Make a new Ed25519 signing key and write it to a new file.

    @param path: where to write it, as unencrypted PKCS8 PEM, mode 0600.
    @return: the new key.
    @raise FileExistsError: if C{path} exists; a key is never overwritten.
    """
    private_key = ed25519.Ed25519PrivateKey.generate()
    _write_private_key(path, private_key)
    return _signing_key(private_key, path)


def _write_private_key(path: str, private_key: ServerPrivateKey) -> None:
    pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        # The umask may have narrowed the mode; say exactly what we mean.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(pem)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class Signer:
    """Signs certificates with the server's current keys, and publishes them all.

    Each key list holds the current key first, then older keys that are
    still published (in L{jwks}) so tokens they signed keep verifying while
    they live out their lifetime.

    Pseudonyms: a certificate never names the number in its subject.  The
    BrowserID principal is C{<p>@<issuer_host>}, C{p} the first 32 hex
    digits of HMAC-SHA256(C{pseudonym_secret}, C{"principal\\0" + msisdn}):
    stable for a number, and without the secret not reversible by trying
    every number (upstream used an unkeyed MD5, which was).  The JWT C{sub}
    is the same value with no audience, and with one a pairwise value,
    HMAC-SHA256(C{pseudonym_secret}, C{"sub\\0" + audience + "\\0" +
    msisdn}), likewise cut to 32 hex digits, so relying parties cannot join
    their users on it.  E.164 numbers hold no NUL, so the last NUL splits
    the input unambiguously.  Changing the secret changes every pseudonym.
    """

    def __init__(
        self,
        *,
        browserid_keys: Sequence[SigningKey],
        jwt_keys: Sequence[SigningKey],
        issuer_host: str,
        issuer_url: str,
        pseudonym_secret: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """
        @param browserid_keys: RS256 keys of exactly L{BROWSERID_RSA_BITS}
            bits, current first.
        @param jwt_keys: EdDSA (Ed25519) keys, current first.
        @param issuer_host: the host named in BrowserID certificates
            (C{iss} and the principal's domain), e.g. C{"msisdn.example.com"}.
        @param issuer_url: the JWT C{iss}, e.g. C{"https://msisdn.example.com"}.
        @param pseudonym_secret: at least 16 random bytes keying the
            pseudonyms; keep it stable and secret.
        @param clock: the current time in seconds since the epoch.
        @raise ValueError: if a list is empty, a key is of the wrong kind,
            two keys share a C{kid}, an issuer is empty or the secret short.
        """
        if not issuer_host or not issuer_url:
            raise ValueError("issuer_host and issuer_url must not be empty")
        if len(pseudonym_secret) < _MIN_SECRET_BYTES:
            raise ValueError(f"pseudonym_secret needs at least {_MIN_SECRET_BYTES} bytes")
        self.useKeys(browserid_keys, jwt_keys)
        self._issuer_host = issuer_host
        self._issuer_url = issuer_url
        self._secret = bytes(pseudonym_secret)
        self._clock = clock

    def useKeys(self, browserid_keys: Sequence[SigningKey], jwt_keys: Sequence[SigningKey]) -> None:
        """Sign with the first of each list and publish them all, from now on
        (a reload: see the README's key rotation, in two steps).

        @raise ValueError: as the constructor, for the keys; the keys in use
            are kept.
        """
        if not browserid_keys:
            raise ValueError("no BrowserID signing key")
        if not jwt_keys:
            raise ValueError("no JWT signing key")
        for slot, label, keys in (("browserid", "BrowserID", browserid_keys),
                                  ("jwt", "JWT", jwt_keys)):
            for key in keys:
                problem = key_slot_problem(slot, key)
                if problem:
                    raise ValueError(f"{label} key {key.kid} {problem}")
        kids = [key.kid for key in (*browserid_keys, *jwt_keys)]
        if len(set(kids)) != len(kids):
            raise ValueError("the same key is configured twice")
        self._browserid_keys = tuple(browserid_keys)
        self._jwt_keys = tuple(jwt_keys)

    def _pseudonym(self, message: str) -> str:
        mac = hmac.HMAC(self._secret, hashes.SHA256())
        mac.update(message.encode("utf-8"))
        return mac.finalize().hex()[:_PSEUDONYM_HEX_CHARS]

    def _principal(self, msisdn: str) -> str:
        return self._pseudonym("principal\0" + msisdn)

    def subject(self, msisdn: str, audience: str | None = None) -> str:
        """The C{sub} a JWT certificate for C{msisdn} carries for C{audience}
        (pairwise when given), as the device events carry it."""
        if audience is None:
            return self._principal(msisdn)
        return self._pseudonym("sub\0" + audience + "\0" + msisdn)

    def browserid_certificate(
        self,
        *,
        public_key: BrowserIDKey,
        msisdn: str,
        duration: int,
        verified_at: float,
        authenticated_at: float,
    ) -> str:
        """A BrowserID certificate for C{public_key}, as upstream issued them.

        Claims: C{public-key} (the key as posted), C{principal.email}
        (see the class docstring), C{iss} (the issuer host), C{iat} (now
        less L{ISSUED_AT_BACKDATE} s), C{exp}, C{verifiedMSISDN},
        C{lastVerifiedAt} and C{lastAuthAt}; every time in milliseconds.

        @param public_key: the client's checked key.
        @param msisdn: the verified number, E.164 with its C{+}.
        @param duration: the lifetime in seconds, from L{parse_duration}.
        @param verified_at: when the number was verified (epoch seconds).
        @param authenticated_at: when the session last authenticated.
        @return: a compact JWS, RS256, its header naming the C{kid}.
        """
        now = self._clock()
        key = self._browserid_keys[0]
        payload = {
            "public-key": public_key.raw,
            "principal": {"email": f"{self._principal(msisdn)}@{self._issuer_host}"},
            "iss": self._issuer_host,
            "iat": _ms(now - ISSUED_AT_BACKDATE),
            "exp": _ms(now + duration),
            "verifiedMSISDN": msisdn,
            "lastVerifiedAt": _ms(verified_at),
            "lastAuthAt": _ms(authenticated_at),
        }
        return jwt.encode(payload, key.private_key, algorithm=key.algorithm,
                          headers={"kid": key.kid})

    def jwt_certificate(
        self,
        *,
        public_key: BrowserIDKey,
        msisdn: str,
        duration: int,
        verified_at: float,
        audience: str | None,
    ) -> str:
        """A JWT saying the holder of C{public_key} controls C{msisdn}.

        Claims: C{iss} (the issuer URL), C{sub} (see the class docstring),
        C{aud} if given, C{iat} and C{nbf} (now), C{exp}, a random C{jti},
        C{phone_number}, C{phone_number_verified} (true), C{amr} (C{["sms"]},
        RFC 8176), C{auth_time}; all times in whole seconds.  An RS key is
        bound as C{cnf.jwk} (RFC 7800); a DS key gets no C{cnf}, since JWK
        has no DSA key type, so such a token proves the number only.

        @param public_key: the client's checked key.
        @param msisdn: the verified number, E.164 with its C{+}.
        @param duration: the lifetime in seconds, from L{parse_duration}.
        @param verified_at: when the number was verified (epoch seconds).
        @param audience: the relying party the token is for, or C{None}.
        @return: a compact JWS, EdDSA, its header naming the C{kid}.
        @raise ValueError: if C{audience} is the empty string.
        """
        if audience is not None and not audience:
            raise ValueError("audience must not be empty")
        now = int(self._clock())
        key = self._jwt_keys[0]
        subject = self.subject(msisdn, audience)
        claims: dict[str, Any] = {
            "iss": self._issuer_url,
            "sub": subject,
            "iat": now,
            "nbf": now - ISSUED_AT_BACKDATE,  # verifiers whose clock lags still accept it
            "exp": now + duration,
            "jti": secrets.token_urlsafe(16),
            "phone_number": msisdn,
            "phone_number_verified": True,
            "amr": ["sms"],
            "auth_time": int(verified_at),
        }
        if audience is not None:
            claims["aud"] = audience
        jwk = public_key.to_jwk()
        if jwk is not None:
            claims["cnf"] = {"jwk": jwk}
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm,
                          headers={"kid": key.kid})

    def browserid_public_key(self) -> dict[str, str]:
        """The current BrowserID key, as C{/.well-known/browserid} publishes it.

        @return: C{{"algorithm": "RS", "n": ..., "e": ...}}, numbers in
            decimal as jwcrypto writes them.
        """
        numbers = self._browserid_keys[0].private_key.public_key().public_numbers()
        return {"algorithm": "RS", "n": str(numbers.n), "e": str(numbers.e)}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Every public key, current and older, as a JWK Set.

        @return: C{{"keys": [...]}}, the RSA keys then the Ed25519 keys,
            each with C{kid}, C{use} C{"sig"} and C{alg}.
        """
        return {"keys": [key.public_jwk()
                         for key in (*self._browserid_keys, *self._jwt_keys)]}
