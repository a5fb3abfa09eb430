"""The keyed forms of secrets (L{msisdnd.verification.codes}) against the references."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from msisdnd.verification import codes


@given(st.binary(min_size=1, max_size=64))
def test_the_number_key_is_rfc5869_hkdf(hawk_id):
    """The key a session's number is sealed under is HKDF-SHA256 of its Hawk
    id (no salt, info C{msisdnd/number-at-rest}, 32 bytes), as
    C{cryptography}'s HKDF derives it: numbers sealed before still open."""
    reference = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                     info=b"msisdnd/number-at-rest").derive(hawk_id)
    assert codes._id_key(hawk_id.hex()) == reference


def test_a_number_opens_with_its_id_only():
    hawk_id, other = "ab" * 32, "cd" * 32
    sealed = codes.seal_number(hawk_id, "+33612345678")
    assert codes.open_number(hawk_id, sealed) == "+33612345678"
    assert codes.open_number(other, sealed) is None


def test_a_session_ref_is_the_truncated_hmac_of_its_id_remembered_or_not():
    import hashlib
    import hmac

    key, other = b"k" * 32, b"o" * 32
    hawk_id = "ab" * 32
    expected = hmac.new(key, bytes.fromhex(hawk_id), hashlib.sha256).digest()[:16]
    assert codes.session_ref(key, hawk_id) == codes.session_ref(key, hawk_id) == expected
    assert codes.session_ref(other, hawk_id) != expected  # the secret is part of the key
