"""/certificate/sign refuses broken client keys with 400, errno 107, and signs good ones.

tests/test_certs.py checks each rule of L{parse_browserid_key}; this runs the
broken keys through the whole gateway once, for a verified session.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import dsa, rsa

NUMBER = "+33612345671"


@pytest.fixture(scope="module")
def good_keys():
    rs = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ds = dsa.generate_private_key(2048).public_key()
    return rs.public_numbers(), ds.public_numbers()


def rs_key(n: int, e: int) -> str:
    return json.dumps({"algorithm": "RS", "n": str(n), "e": str(e)})


def ds_key(numbers, **changes: int) -> str:
    params = numbers.parameter_numbers
    values = {"y": numbers.y, "p": params.p, "q": params.q, "g": params.g, **changes}
    return json.dumps({"algorithm": "DS", **{k: format(v, "x") for k, v in values.items()}})


def broken_keys(good_keys) -> dict[str, str]:
    rs, ds = good_keys
    p = ds.parameter_numbers.p
    return {
        "even modulus": rs_key(rs.n + 1, 65537),
        "2^8191 + 1": rs_key((1 << 8191) + 1, 65537),
        "e close to n": rs_key(rs.n, rs.n - 2),
        "e of 2^32 + 1": rs_key(rs.n, (1 << 32) + 1),
        "modulus of 1024 bits": rs_key((1 << 1023) + 1, 65537),
        "DSA y = p - 1": ds_key(ds, y=p - 1),
        "DSA g = p - 1": ds_key(ds, g=p - 1),
        "DSA y outside the subgroup": ds_key(ds, y=2),
    }


@pytest_twisted.inlineCallbacks
def test_broken_keys_are_400_107_and_good_ones_signed(gateway, good_keys):
    token = yield gateway.register()
    sent = yield gateway.call("POST", "/sms/mt/verify", {
        "msisdn": NUMBER, "mcc": "208", "shortVerificationCode": True}, token=token)
    assert sent.code == 204, sent
    pin = yield gateway.pin(NUMBER)
    verified = yield gateway.call("POST", "/sms/verify_code", {"code": pin}, token=token)
    assert verified.code == 200, verified

    for name, key in broken_keys(good_keys).items():
        r = yield gateway.call("POST", "/certificate/sign",
                               {"publicKey": key, "duration": 60}, token=token)
        assert (r.code, r.body["errno"]) == (400, 107), (name, r)
        assert set(r.body) == {"code", "errno", "error", "message"}, (name, r.body)

    rs, ds = good_keys
    for key in (rs_key(rs.n, rs.e), ds_key(ds)):
        r = yield gateway.call("POST", "/certificate/sign",
                               {"publicKey": key, "duration": 60}, token=token)
        assert r.code == 200 and r.body["cert"].count(".") == 2, r
