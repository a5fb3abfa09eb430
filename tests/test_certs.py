"""Certificate signing: BrowserID certificates, relying-party JWTs, key handling.

Every token is checked with PyJWT from the outside, with the algorithm list
pinned, against the key the server publishes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import stat
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from msisdnd.verification.certs import (
    ISSUED_AT_BACKDATE,
    BrowserIDKey,
    CertificateError,
    Signer,
    SigningKey,
    generate_ed25519_key,
    generate_rsa_key,
    load_signing_key,
    parse_browserid_key,
    parse_duration,
)

MSISDN = "+33612345678"
OTHER_MSISDN = "+33612345679"
HOST = "msisdn.example.com"
ISSUER = "https://msisdn.example.com"
SECRET = b"s" * 32
PINNED = 1_700_000_000.25
VERIFIED_AT = 1_699_999_000.5
AUTH_AT = 1_699_999_500.75


def b64url_uint(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rs_key_object(public: rsa.RSAPublicKey, *, hex_numbers: bool = False) -> dict:
    numbers = public.public_numbers()
    fmt = "x" if hex_numbers else "d"
    return {"algorithm": "RS", "n": format(numbers.n, fmt), "e": format(numbers.e, fmt)}


def ds_key_object(public: dsa.DSAPublicKey) -> dict:
    """The hex form jwcrypto writes DS keys in."""
    numbers = public.public_numbers()
    params = numbers.parameter_numbers
    return {"algorithm": "DS", "y": format(numbers.y, "x"), "p": format(params.p, "x"),
            "q": format(params.q, "x"), "g": format(params.g, "x")}


@pytest.fixture(scope="module")
def keydir(tmp_path_factory):
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def rsa_keys(keydir) -> list[SigningKey]:
    """Two server RSA keys: [current, older]."""
    return [generate_rsa_key(str(keydir / f"rsa{i}.pem")) for i in range(2)]


@pytest.fixture(scope="module")
def ed_keys(keydir) -> list[SigningKey]:
    """Two server Ed25519 keys: [current, older]."""
    return [generate_ed25519_key(str(keydir / f"ed{i}.pem")) for i in range(2)]


@pytest.fixture(scope="module")
def client_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def client_dsa() -> dsa.DSAPrivateKey:
    # Parameter generation is the slow part: once per module.
    return dsa.generate_private_key(2048)


@pytest.fixture
def rs_client_key(client_rsa) -> BrowserIDKey:
    return parse_browserid_key(json.dumps(rs_key_object(client_rsa.public_key())))


@pytest.fixture
def ds_client_key(client_dsa) -> BrowserIDKey:
    return parse_browserid_key(json.dumps(ds_key_object(client_dsa.public_key())))


def make_signer(rsa_keys, ed_keys, *, secret=SECRET, clock=lambda: PINNED) -> Signer:
    return Signer(browserid_keys=rsa_keys, jwt_keys=ed_keys, issuer_host=HOST,
                  issuer_url=ISSUER, pseudonym_secret=secret, clock=clock)


@pytest.fixture
def signer(rsa_keys, ed_keys) -> Signer:
    return make_signer(rsa_keys, ed_keys)


@pytest.fixture
def live_signer(rsa_keys, ed_keys) -> Signer:
    """A signer pinned to the real time now, so PyJWT's exp/nbf checks apply."""
    now = time.time()
    return make_signer(rsa_keys, ed_keys, clock=lambda: now)


def decode_browserid(cert: str, public_key) -> dict:
    # exp and iat are milliseconds, which PyJWT would read as far-future seconds.
    return jwt.decode(cert, public_key, algorithms=["RS256"],
                      options={"verify_exp": False, "verify_iat": False})


def jwks_key(jwks: dict, token: str) -> jwt.PyJWK:
    kid = jwt.get_unverified_header(token)["kid"]
    [found] = [k for k in jwks["keys"] if k["kid"] == kid]
    return jwt.PyJWK(found)


def bid_cert(signer: Signer, key: BrowserIDKey, msisdn: str = MSISDN, duration: int = 3600) -> str:
    return signer.browserid_certificate(public_key=key, msisdn=msisdn, duration=duration,
                                        verified_at=VERIFIED_AT, authenticated_at=AUTH_AT)


def rp_jwt(signer: Signer, key: BrowserIDKey, audience: str | None = "https://rp.example",
           msisdn: str = MSISDN) -> str:
    return signer.jwt_certificate(public_key=key, msisdn=msisdn, duration=600,
                                  verified_at=VERIFIED_AT, audience=audience)


def principal_of(cert: str) -> str:
    return jwt.decode(cert, options={"verify_signature": False})["principal"]["email"]


# BrowserID certificates


def test_browserid_certificate_claims(signer, rsa_keys, rs_client_key):
    cert = bid_cert(signer, rs_client_key)

    header = jwt.get_unverified_header(cert)
    assert header["alg"] == "RS256"
    assert header["kid"] == rsa_keys[0].kid
    claims = decode_browserid(cert, rsa_keys[0].private_key.public_key())
    assert claims["public-key"] == rs_client_key.raw
    assert claims["iss"] == HOST
    assert claims["iat"] == 1_699_999_990_250
    assert claims["exp"] == 1_700_003_600_250
    assert claims["verifiedMSISDN"] == MSISDN
    assert claims["lastVerifiedAt"] == 1_699_999_000_500
    assert claims["lastAuthAt"] == 1_699_999_500_750
    assert re.fullmatch(r"[0-9a-f]{32}@msisdn\.example\.com", claims["principal"]["email"])
    assert MSISDN[1:] not in cert and MSISDN[1:] not in claims["principal"]["email"]


def test_browserid_certificate_echoes_ds_key(signer, rsa_keys, ds_client_key):
    claims = decode_browserid(bid_cert(signer, ds_client_key),
                              rsa_keys[0].private_key.public_key())
    assert claims["public-key"] == ds_client_key.raw
    assert claims["public-key"]["algorithm"] == "DS"


def test_principal_is_a_keyed_stable_pseudonym(rsa_keys, ed_keys, signer, rs_client_key):
    first = principal_of(bid_cert(signer, rs_client_key))
    assert principal_of(bid_cert(signer, rs_client_key)) == first
    assert principal_of(bid_cert(make_signer(rsa_keys, ed_keys), rs_client_key)) == first
    assert principal_of(bid_cert(signer, rs_client_key, msisdn=OTHER_MSISDN)) != first
    other_secret = make_signer(rsa_keys, ed_keys, secret=b"t" * 32)
    assert principal_of(bid_cert(other_secret, rs_client_key)) != first

    md5 = hashlib.md5(MSISDN.encode()).digest()
    local_part = first.split("@")[0]
    assert local_part not in {md5.hex(), str(uuid.UUID(bytes=md5)), md5.hex()[:32]}


def test_browserid_public_key_is_current_key_in_decimal(signer, rsa_keys):
    published = signer.browserid_public_key()
    numbers = rsa_keys[0].private_key.public_key().public_numbers()
    assert published == {"algorithm": "RS", "n": str(numbers.n), "e": str(numbers.e)}
    # What we publish is a key a client could post back: our parser accepts it.
    assert parse_browserid_key(json.dumps(published)).public_key.public_numbers() == numbers


def test_browserid_certificate_verifies_via_published_key(signer, rs_client_key):
    published = signer.browserid_public_key()
    public = rsa.RSAPublicNumbers(int(published["e"]), int(published["n"])).public_key()
    cert = bid_cert(signer, rs_client_key)
    assert decode_browserid(cert, public)["verifiedMSISDN"] == MSISDN
    assert decode_browserid(cert, jwks_key(signer.jwks(), cert))["iss"] == HOST


# Relying-party JWTs


def test_jwt_verifies_by_kid_from_jwks(live_signer, ed_keys, rs_client_key):
    token = rp_jwt(live_signer, rs_client_key)

    assert jwt.get_unverified_header(token)["kid"] == ed_keys[0].kid
    claims = jwt.decode(token, jwks_key(live_signer.jwks(), token), algorithms=["EdDSA"],
                        audience="https://rp.example", issuer=ISSUER,
                        options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss"]})
    assert claims["phone_number"] == MSISDN
    assert claims["phone_number_verified"] is True
    assert claims["amr"] == ["sms"]
    assert claims["auth_time"] == int(VERIFIED_AT)
    assert claims["nbf"] == claims["iat"] - ISSUED_AT_BACKDATE  # clock lag allowance
    assert claims["exp"] == claims["iat"] + 600
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16


def test_jwt_times_follow_the_clock(signer, rs_client_key):
    claims = jwt.decode(rp_jwt(signer, rs_client_key), options={"verify_signature": False})
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (
        int(PINNED), int(PINNED) - ISSUED_AT_BACKDATE, int(PINNED) + 600)


def test_jwt_ids_are_unique(signer, rs_client_key):
    jtis = {jwt.decode(rp_jwt(signer, rs_client_key),
                       options={"verify_signature": False})["jti"] for _ in range(5)}
    assert len(jtis) == 5


def test_jwt_audience_is_checked(live_signer, rs_client_key):
    token = rp_jwt(live_signer, rs_client_key)
    key = jwks_key(live_signer.jwks(), token)
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key, algorithms=["EdDSA"], audience="https://other.example")
    with pytest.raises(jwt.InvalidIssuerError):
        jwt.decode(token, key, algorithms=["EdDSA"], audience="https://rp.example",
                   issuer="https://evil.example")


def test_jwt_subject_is_pairwise(signer, rs_client_key):
    def sub(audience, msisdn=MSISDN):
        token = rp_jwt(signer, rs_client_key, audience=audience, msisdn=msisdn)
        return jwt.decode(token, options={"verify_signature": False})["sub"]

    a = sub("https://a.example")
    assert sub("https://a.example") == a
    assert sub("https://b.example") != a
    assert sub("https://a.example", OTHER_MSISDN) != a
    principal = principal_of(bid_cert(signer, rs_client_key)).split("@")[0]
    assert a != principal
    assert sub(None) == principal


def test_jwt_without_audience_has_no_aud(signer, rs_client_key):
    claims = jwt.decode(rp_jwt(signer, rs_client_key, audience=None),
                        options={"verify_signature": False})
    assert "aud" not in claims


def test_jwt_refuses_empty_audience(signer, rs_client_key):
    with pytest.raises(ValueError):
        rp_jwt(signer, rs_client_key, audience="")


def test_cnf_binds_rs_key(signer, client_rsa, rs_client_key):
    claims = jwt.decode(rp_jwt(signer, rs_client_key), options={"verify_signature": False})
    numbers = client_rsa.public_key().public_numbers()
    expected = {"kty": "RSA", "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}
    assert claims["cnf"] == {"jwk": expected}
    assert rs_client_key.to_jwk() == expected
    assert jwt.PyJWK(claims["cnf"]["jwk"]).key.public_numbers() == numbers


def test_no_cnf_for_ds_key(signer, ds_client_key):
    assert ds_client_key.to_jwk() is None
    claims = jwt.decode(rp_jwt(signer, ds_client_key), options={"verify_signature": False})
    assert "cnf" not in claims
    assert claims["phone_number"] == MSISDN


# Keys, rotation, JWKS


def test_jwks_lists_every_key(signer, rsa_keys, ed_keys):
    keys = signer.jwks()["keys"]
    assert [k["kid"] for k in keys] == [k.kid for k in (*rsa_keys, *ed_keys)]
    assert len({k["kid"] for k in keys}) == 4
    for jwk in keys:
        assert jwk["use"] == "sig"
        assert "d" not in jwk and "p" not in jwk
        assert jwt.PyJWK(jwk).algorithm_name == jwk["alg"]
    assert [k["alg"] for k in keys] == ["RS256", "RS256", "EdDSA", "EdDSA"]
    assert [k["kty"] for k in keys] == ["RSA", "RSA", "OKP", "OKP"]


def test_rsa_kid_is_rfc7638_thumbprint(rsa_keys):
    numbers = rsa_keys[0].private_key.public_key().public_numbers()
    canonical = f'{{"e":"{b64url_uint(numbers.e)}","kty":"RSA","n":"{b64url_uint(numbers.n)}"}}'
    digest = hashlib.sha256(canonical.encode()).digest()
    assert rsa_keys[0].kid == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_ed25519_kid_matches_rfc8037_vector(tmp_path):
    # RFC 8037 appendix A.1 private key; A.3 gives its thumbprint.
    d = base64.urlsafe_b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
    private = ed25519.Ed25519PrivateKey.from_private_bytes(d)
    path = tmp_path / "rfc.pem"
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    assert load_signing_key(str(path)).kid == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_token_from_rotated_key_still_verifies(rsa_keys, ed_keys, rs_client_key):
    now = time.time()
    before = make_signer(rsa_keys[1:], ed_keys[1:], clock=lambda: now)
    old_jwt = rp_jwt(before, rs_client_key)
    old_cert = bid_cert(before, rs_client_key)

    after = make_signer(rsa_keys, ed_keys, clock=lambda: now)
    assert jwt.get_unverified_header(old_jwt)["kid"] == ed_keys[1].kid
    assert jwt.get_unverified_header(rp_jwt(after, rs_client_key))["kid"] == ed_keys[0].kid
    claims = jwt.decode(old_jwt, jwks_key(after.jwks(), old_jwt), algorithms=["EdDSA"],
                        audience="https://rp.example", issuer=ISSUER)
    assert claims["phone_number"] == MSISDN
    assert decode_browserid(old_cert, jwks_key(after.jwks(), old_cert))["iss"] == HOST
    # Once the old key is withdrawn its tokens no longer find a key.
    with pytest.raises(ValueError):
        jwks_key(make_signer(rsa_keys[:1], ed_keys[:1]).jwks(), old_jwt)


def test_algorithm_confusion_is_refused(live_signer, rsa_keys, ed_keys, rs_client_key):
    token = rp_jwt(live_signer, rs_client_key)
    cert = bid_cert(live_signer, rs_client_key)
    for signed, key in ((token, ed_keys[0]), (cert, rsa_keys[0])):
        pem = key.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        with pytest.raises(jwt.PyJWTError):
            jwt.decode(signed, pem, algorithms=["HS256"], options={"verify_aud": False})

    published = jwks_key(live_signer.jwks(), token)
    claims = {"iss": ISSUER, "sub": "x", "aud": "https://rp.example", "phone_number": MSISDN}
    unsigned = jwt.encode(claims, None, algorithm="none")
    # The classic forgery: HMAC keyed with the (public) verification key.
    public_bytes = ed_keys[0].private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    forged_hmac = jwt.encode(claims, public_bytes, algorithm="HS256",
                             headers={"kid": ed_keys[0].kid})
    for forged in (unsigned, forged_hmac):
        with pytest.raises(jwt.InvalidAlgorithmError):
            jwt.decode(forged, published, algorithms=["EdDSA"], audience="https://rp.example")


def test_generated_keys_are_private_and_reload(tmp_path):
    for generate, algorithm in ((generate_rsa_key, "RS256"), (generate_ed25519_key, "EdDSA")):
        path = tmp_path / f"{algorithm}.pem"
        made = generate(str(path))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        loaded = load_signing_key(str(path))
        assert (loaded.kid, loaded.algorithm) == (made.kid, algorithm)
        with pytest.raises(FileExistsError):
            generate(str(path))
        assert load_signing_key(str(path)).kid == made.kid


def write_pem(path, private_key, encryption=None) -> str:
    path.write_bytes(private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption()))
    return str(path)


def test_load_signing_key_refuses_unusable_keys(tmp_path):
    small = write_pem(tmp_path / "small.pem",
                      rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(ValueError, match="2048"):
        load_signing_key(small)
    encrypted = write_pem(tmp_path / "enc.pem", ed25519.Ed25519PrivateKey.generate(),
                          serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(ValueError, match="encrypted"):
        load_signing_key(encrypted)
    ecdsa = write_pem(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError, match="RSA or Ed25519"):
        load_signing_key(ecdsa)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    with pytest.raises(ValueError, match="PEM"):
        load_signing_key(str(junk))


def test_signer_refuses_bad_configuration(tmp_path, rsa_keys, ed_keys):
    big = load_signing_key(write_pem(
        tmp_path / "big.pem", rsa.generate_private_key(public_exponent=65537, key_size=3072)))
    bad = {
        "BrowserID key": {"browserid_keys": [big], "jwt_keys": ed_keys},
        "Ed25519": {"browserid_keys": rsa_keys, "jwt_keys": rsa_keys[:1]},
        "no BrowserID": {"browserid_keys": [], "jwt_keys": ed_keys},
        "no JWT": {"browserid_keys": rsa_keys, "jwt_keys": []},
        "twice": {"browserid_keys": rsa_keys, "jwt_keys": [ed_keys[0], ed_keys[0]]},
        "16 bytes": {"browserid_keys": rsa_keys, "jwt_keys": ed_keys, "pseudonym_secret": b"short"},
    }
    for message, kwargs in bad.items():
        arguments = {"issuer_host": HOST, "issuer_url": ISSUER, "pseudonym_secret": SECRET}
        arguments.update(kwargs)
        with pytest.raises(ValueError, match=message):
            Signer(**arguments)


# Parsing what the client posts


def test_parse_rs_key_decimal_and_hex(client_rsa):
    public = client_rsa.public_key()
    for hex_numbers in (False, True):
        posted = rs_key_object(public, hex_numbers=hex_numbers)
        key = parse_browserid_key(json.dumps(posted))
        assert key.algorithm == "RS"
        assert key.raw == posted
        assert key.public_key.public_numbers() == public.public_numbers()


def test_hex_key_with_all_digit_exponent_is_read_as_hex(client_rsa):
    # 65537 is "10001" in hex: read alone it would pass for decimal 10001.
    posted = rs_key_object(client_rsa.public_key(), hex_numbers=True)
    assert posted["e"] == "10001"
    assert parse_browserid_key(json.dumps(posted)).public_key.public_numbers().e == 65537


def test_parse_keeps_extra_members(client_rsa):
    posted = {**rs_key_object(client_rsa.public_key()), "version": "2012.08.15"}
    assert parse_browserid_key(json.dumps(posted)).raw == posted


def test_parse_ds_key(client_dsa):
    posted = ds_key_object(client_dsa.public_key())
    key = parse_browserid_key(json.dumps(posted))
    assert key.algorithm == "DS"
    assert key.raw == posted
    assert key.public_key.public_numbers() == client_dsa.public_key().public_numbers()


def test_parse_ds_key_1024_160():
    public = dsa.generate_private_key(1024).public_key()
    key = parse_browserid_key(json.dumps(ds_key_object(public)))
    assert key.public_key.public_numbers() == public.public_numbers()


def _rs(n: int, e: int = 65537) -> str:
    return json.dumps({"algorithm": "RS", "n": str(n), "e": str(e)})


N2048 = (1 << 2047) | 0xFFFF1


def _ds_variant(public: dsa.DSAPublicKey, **changes: int) -> str:
    posted = ds_key_object(public)
    posted.update({name: format(value, "x") for name, value in changes.items()})
    return json.dumps(posted)


@pytest.mark.parametrize(("value", "reason"), [
    (None, "must be a string"),
    ({"algorithm": "RS", "n": "1", "e": "3"}, "must be a string"),
    (b'{"algorithm": "RS"}', "must be a string"),
    ("{not json", "not valid JSON"),
    ("[" * 5000, "not valid JSON"),
    ('["RS"]', "JSON object"),
    (json.dumps({"algorithm": "EC", "n": str(N2048), "e": "65537"}), '"RS" or "DS"'),
    (json.dumps({"n": str(N2048), "e": "65537"}), '"RS" or "DS"'),
    (_rs((1 << 1023) | 1), "2048 to 8192 bits"),
    (_rs((1 << 8192) | 1), "2048 to 8192 bits"),
    (json.dumps({"algorithm": "RS", "n": str(N2048)}), 'missing "e"'),
    (json.dumps({"algorithm": "RS", "n": "12ab-34", "e": "65537"}), "decimal or hex digits"),
    (json.dumps({"algorithm": "RS", "n": "0x" + format(N2048, "x"), "e": "65537"}),
     "decimal or hex digits"),
    (json.dumps({"algorithm": "RS", "n": " " + str(N2048), "e": "65537"}),
     "decimal or hex digits"),
    (json.dumps({"algorithm": "RS", "n": N2048, "e": 65537}), "decimal or hex digits"),
    (json.dumps({"algorithm": "RS", "n": "", "e": "65537"}), "decimal or hex digits"),
    (json.dumps({"algorithm": "RS", "n": "\u0663" * 700, "e": "65537"}), "decimal or hex digits"),
    (_rs(N2048, e=0), "must be positive"),
    (_rs(N2048, e=65536), "odd and at least 3"),
    (_rs(N2048, e=1), "odd and at least 3"),
    (json.dumps({"algorithm": "RS", "n": str(N2048), "e": "65537", "x": "y" * 9000}),
     "at most 8192 bytes"),
    (json.dumps({"algorithm": "RS", "n": str(N2048), "e": "65537", "x": "\u00e9" * 4500}),
     "at most 8192 bytes"),
    (f'{{"algorithm": "RS", "n": "{N2048}", "e": "65537", "x": NaN}}', "not valid JSON"),
    (json.dumps({"algorithm": "DS", "y": "5", "p": "7", "q": "3"}), 'missing "g"'),
])
def test_parse_rejects(value, reason):
    with pytest.raises(CertificateError, match=re.escape(reason)):
        parse_browserid_key(value)


def test_parse_rejects_bad_dsa_numbers(client_dsa):
    public = client_dsa.public_key()
    numbers = public.public_numbers()
    p = numbers.parameter_numbers.p
    cases = {
        '"p" must be at least 1024 bits': {"p": (1 << 1022) + 1},
        '"q" must be 160 or 256 bits': {"q": (1 << 223) + 1},
        '"q" must divide p - 1': {"p": p + 2},
        '"g" must be between 1 and p': {"g": p + 1},
        '"y" must be between 1 and p': {"y": p},
    }
    for reason, changes in cases.items():
        with pytest.raises(CertificateError, match=re.escape(reason)):
            parse_browserid_key(_ds_variant(public, **changes))
    with pytest.raises(CertificateError, match="usable DSA key"):
        # A p that divides by q but is not one of the sizes DSA allows.
        q = numbers.parameter_numbers.q
        odd_p = q * ((1 << 1535) // q) + 1
        parse_browserid_key(_ds_variant(public, p=odd_p, g=2, y=3))


def test_key_at_the_size_limit_is_accepted(client_rsa):
    posted = rs_key_object(client_rsa.public_key())
    posted["pad"] = ""
    posted["pad"] = "x" * (8192 - len(json.dumps(posted)))
    assert len(json.dumps(posted)) == 8192
    assert parse_browserid_key(json.dumps(posted)).raw == posted


@pytest.mark.parametrize(("value", "expected"), [
    (1, 1),
    (3600, 3600),
    (3600.0, 3600),
    (86400, 86400),
    (86401, 86400),
    (10**9, 86400),
    (1e300, 86400),
    (10**400, 86400),
])
def test_parse_duration_accepts(value, expected):
    result = parse_duration(value, 86400)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value", [
    0, -5, 0.0, -1.0, 1.5, math.nan, math.inf, -math.inf, "60", "3600", True, False, None,
    [60], {"s": 60},
])
def test_parse_duration_rejects(value):
    with pytest.raises(CertificateError, match="positive whole number"):
        parse_duration(value, 86400)


def test_certificate_error_is_a_value_error():
    assert issubclass(CertificateError, ValueError)


# Broken keys that pass for keys at a glance: each is refused, and says why.


def _no_small_factor(bits: int) -> int:
    """An odd number of C{bits} bits with no prime factor below 1000 (not a real
    modulus: the checks do not test that it is a product of two primes)."""
    n = (1 << (bits - 1)) + 1
    while any(n % p == 0 for p in range(3, 1000, 2)):
        n += 2
    return n


def test_rsa_even_modulus_is_refused(client_rsa):
    n = client_rsa.public_key().public_numbers().n
    for even in (n + 1, n - 1, 1 << 2047, (1 << 8192) - 2):
        with pytest.raises(CertificateError, match="modulus must be odd"):
            parse_browserid_key(_rs(even))


def test_rsa_modulus_with_a_small_factor_is_refused(client_rsa):
    n = client_rsa.public_key().public_numbers().n
    # 2^8191 + 1 is 8192 bits and odd, and a multiple of 3.
    for bad in ((1 << 8191) + 1, 3 * n, 997 * _no_small_factor(2040)):
        with pytest.raises(CertificateError, match="small prime factor"):
            parse_browserid_key(_rs(bad))


@pytest.mark.parametrize("e", ["n - 2", "n + 2", 1 << 32 | 1, (1 << 64) + 1, 1 << 32])
def test_rsa_exponent_is_capped(client_rsa, e):
    n = client_rsa.public_key().public_numbers().n
    e = {"n - 2": n - 2, "n + 2": n + 2}.get(e, e)
    with pytest.raises(CertificateError, match=r"exponent must be (below 2\^32|odd)"):
        parse_browserid_key(_rs(n, e))


@pytest.mark.parametrize("e", [3, 17, 65537, (1 << 32) - 1])
def test_rsa_exponents_in_range_are_accepted(client_rsa, e):
    n = client_rsa.public_key().public_numbers().n
    assert parse_browserid_key(_rs(n, e)).public_key.public_numbers().e == e


@pytest.mark.parametrize("bits", [2048, 8192])
def test_rsa_moduli_at_the_size_bounds_are_accepted(bits):
    n = _no_small_factor(bits)
    assert n.bit_length() == bits
    assert parse_browserid_key(_rs(n)).public_key.public_numbers().n == n


@pytest.mark.parametrize("bits", [2047, 8193])
def test_rsa_moduli_past_the_size_bounds_are_refused(bits):
    with pytest.raises(CertificateError, match="2048 to 8192 bits"):
        parse_browserid_key(_rs(_no_small_factor(bits)))


def test_dsa_y_or_g_of_order_two_is_refused(client_dsa):
    public = client_dsa.public_key()
    p = public.public_numbers().parameter_numbers.p
    with pytest.raises(CertificateError, match='"y" must lie in the subgroup of order q'):
        parse_browserid_key(_ds_variant(public, y=p - 1))
    with pytest.raises(CertificateError, match='"g" must generate the subgroup of order q'):
        parse_browserid_key(_ds_variant(public, g=p - 1))


def test_dsa_y_or_g_outside_the_subgroup_is_refused(client_dsa):
    public = client_dsa.public_key()
    numbers = public.public_numbers()
    params = numbers.parameter_numbers
    p, q, g = params.p, params.q, params.g
    # A generator of the whole group's largest part: 2 is almost never in
    # the order-q subgroup of a 2048-bit p.
    assert pow(2, q, p) != 1
    with pytest.raises(CertificateError, match='"y" must lie in the subgroup'):
        parse_browserid_key(_ds_variant(public, y=2))
    with pytest.raises(CertificateError, match='"g" must generate the subgroup'):
        parse_browserid_key(_ds_variant(public, g=2))
    # y * (p - 1): the key's y, moved out of the subgroup by an element of order 2.
    with pytest.raises(CertificateError, match='"y" must lie in the subgroup'):
        parse_browserid_key(_ds_variant(public, y=(numbers.y * (p - 1)) % p))
    # Another element of the subgroup is a fine y.
    other = pow(g, 12345, p)
    assert parse_browserid_key(_ds_variant(public, y=other)).public_key.public_numbers().y == other


def _mersenne(k: int) -> int:
    return (1 << k) - 1


def test_dsa_composite_q_is_refused(client_dsa):
    public = client_dsa.public_key()
    assert public.public_numbers().parameter_numbers.q.bit_length() == 256
    # Even; a multiple of 3; and 256 bits made of Mersenne primes only, no
    # factor below 1000, so that only Miller-Rabin can tell.
    for composite in ((1 << 255) + 2, (1 << 255) + 1,
                      _mersenne(89) ** 2 * _mersenne(61) * _mersenne(17)):
        assert composite.bit_length() == 256
        with pytest.raises(CertificateError, match='"q" must be prime'):
            parse_browserid_key(_ds_variant(public, q=composite))


def test_dsa_p_over_4096_bits_is_refused(client_dsa):
    public = client_dsa.public_key()
    q = public.public_numbers().parameter_numbers.q
    p = q * ((1 << 8191) // q) + 1
    with pytest.raises(CertificateError, match='"p" must be at most 4096 bits'):
        parse_browserid_key(_ds_variant(public, p=p, g=2, y=3))


def test_good_keys_still_pass(client_rsa, client_dsa, rs_client_key, ds_client_key):
    assert rs_client_key.public_key.public_numbers() == client_rsa.public_key().public_numbers()
    assert ds_client_key.public_key.public_numbers() == client_dsa.public_key().public_numbers()
    numbers = client_dsa.public_key().public_numbers()
    params = numbers.parameter_numbers
    assert pow(params.g, params.q, params.p) == 1 and pow(numbers.y, params.q, params.p) == 1
