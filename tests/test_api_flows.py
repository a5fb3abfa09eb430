"""The device API end to end: Hawk client -> HTTP -> Redis -> SMPP -> fake SMSC."""

from __future__ import annotations

import jwt
import pytest
import pytest_twisted


NUMBER = "+33612345678"


def rsa_browserid_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
    import json

    return json.dumps({"algorithm": "RS", "n": str(numbers.n), "e": str(numbers.e)})


@pytest_twisted.inlineCallbacks
def test_mt_flow_then_both_certificates(gateway):
    """Register, get a short code by SMS, verify it, sign both certificate forms."""
    token = yield gateway.register()
    sent = yield gateway.call("POST", "/sms/mt/verify", {
        "msisdn": NUMBER, "mcc": "208", "mnc": "10", "shortVerificationCode": True},
        token=token, headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    assert sent.code == 204, sent
    pin = yield gateway.pin(NUMBER)
    assert len(pin) == 6 and pin.isdigit()
    message = gateway.smsc.smsc.received(NUMBER)[-1]
    assert message.source == "Verify" and "code" in message.text
    verified = yield gateway.call("POST", "/sms/verify_code", {"code": pin}, token=token)
    assert (verified.code, verified.body) == (200, {"msisdn": NUMBER})

    key = rsa_browserid_key()
    browserid = yield gateway.call("POST", "/certificate/sign",
                                   {"publicKey": key, "duration": 3600}, token=token)
    assert browserid.code == 200, browserid
    well_known = yield gateway.call("GET", "/.well-known/browserid")
    pub = well_known.body["public-key"]
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pub = rsa.RSAPublicNumbers(int(pub["e"]), int(pub["n"])).public_key()
    claims = jwt.decode(browserid.body["cert"], rsa_pub, algorithms=["RS256"],
                        options={"verify_exp": False, "verify_iat": False})
    assert claims["verifiedMSISDN"] == NUMBER
    assert claims["principal"]["email"].endswith("@127.0.0.1")
    assert claims["exp"] - claims["iat"] == 3_610_000  # ms, iat back-dated 10 s

    signed = yield gateway.call("POST", "/certificate/sign", {
        "publicKey": key, "duration": 600, "format": "jwt", "audience": "https://rp.example"},
        token=token)
    keys = yield gateway.call("GET", "/.well-known/jwks.json")
    header = jwt.get_unverified_header(signed.body["cert"])
    (jwk,) = [k for k in keys.body["keys"] if k["kid"] == header["kid"]]
    claims = jwt.decode(signed.body["cert"], jwt.PyJWK(jwk).key, algorithms=["EdDSA"],
                        audience="https://rp.example", issuer=gateway.url)
    assert claims["phone_number"] == NUMBER and claims["phone_number_verified"] is True
    assert claims["amr"] == ["sms"] and "cnf" in claims


@pytest_twisted.inlineCallbacks
def test_mo_flow_silent_sms(gateway):
    """The device texts its Hawk id to the MO number; the long code comes back to the
    MO's (normalized) source, bare; posting it verifies that number."""
    from msisdnd import hawk

    token = yield gateway.register()
    hawk_id = hawk.derive_session(bytes.fromhex(token)).id
    yield gateway.smsc.smsc.deliverMO("0612345678", "33700000000",
                                      f"/v1/msisdn/sms/momt/verify {hawk_id}")
    code = yield gateway.pin(NUMBER)
    text = gateway.smsc.smsc.received(NUMBER)[-1].text
    assert text == code and len(code) == 32
    verified = yield gateway.call("POST", "/sms/verify_code", {"code": code}, token=token)
    assert verified.body == {"msisdn": NUMBER}


@pytest_twisted.inlineCallbacks
def test_wrong_codes_then_gone(gateway):
    """A wrong code says how many tries are left; after the last the code is gone (410)."""
    token = yield gateway.register()
    yield gateway.call("POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208",
                                                  "shortVerificationCode": True}, token=token)
    pin = yield gateway.pin(NUMBER)
    wrong = "000000" if pin != "000000" else "111111"
    lefts = []
    for _ in range(3):
        r = yield gateway.call("POST", "/sms/verify_code", {"code": wrong}, token=token)
        assert (r.code, r.body["errno"]) == (400, 105)
        lefts.append(r.body["triesLeft"])
    assert lefts == [2, 1, 0]
    r = yield gateway.call("POST", "/sms/verify_code", {"code": pin}, token=token)
    assert (r.code, r.body["errno"]) == (410, 111)


@pytest_twisted.inlineCallbacks
def test_second_number_and_idempotent_retry(gateway):
    """Calling mt/verify again within the cooldown sends no second SMS; another number
    in the same session is refused."""
    token = yield gateway.register()
    body = {"msisdn": NUMBER, "mcc": "208"}
    assert (yield gateway.call("POST", "/sms/mt/verify", body, token=token)).code == 204
    assert (yield gateway.call("POST", "/sms/mt/verify", body, token=token)).code == 204
    assert len(gateway.smsc.smsc.received(NUMBER)) == 1
    other = yield gateway.call("POST", "/sms/mt/verify", {"msisdn": "+33698765432", "mcc": "208"},
                               token=token)
    assert (other.code, other.body["errno"]) == (400, 107)


@pytest_twisted.inlineCallbacks
def test_resend_cooldown_is_429(gateway):
    token = yield gateway.register()
    yield gateway.call("POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"}, token=token)
    r = yield gateway.call("POST", "/sms/resend_code", token=token)
    assert (r.code, r.body["errno"]) == (429, 114)
    assert 1 <= int(r.headers["retry-after"]) <= 30


@pytest_twisted.inlineCallbacks
def test_certificate_needs_a_verified_number(gateway):
    token = yield gateway.register()
    r = yield gateway.call("POST", "/certificate/sign",
                           {"publicKey": rsa_browserid_key(), "duration": 60}, token=token)
    assert (r.code, r.body["errno"]) == (410, 111)


@pytest_twisted.inlineCallbacks
def test_unregister_drops_the_session(gateway):
    token = yield gateway.register()
    assert (yield gateway.call("POST", "/unregister", token=token)).code == 204
    r = yield gateway.call("POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"}, token=token)
    assert (r.code, r.body["errno"]) == (401, 110)


@pytest_twisted.inlineCallbacks
def test_replayed_request_is_refused(gateway):
    """The same Hawk header twice: the nonce is refused the second time."""
    import treq

    from msisdnd import hawk

    token = yield gateway.register()
    credentials = hawk.derive_session(bytes.fromhex(token))
    header = hawk.authorization_header(credentials, "POST", gateway.url + "/unregister")
    first = yield treq.post(gateway.url + "/unregister", headers={"Authorization": [header]})
    second = yield treq.post(gateway.url + "/unregister", headers={"Authorization": [header]})
    yield first.content()
    body = yield second.json()
    assert first.code == 204
    assert (second.code, body["errno"]) == (401, 110)


@pytest_twisted.inlineCallbacks
def test_discover(gateway):
    r = yield gateway.call("POST", "/discover", {"mcc": "208", "msisdn": NUMBER})
    assert r.body["verificationMethods"] == ["sms/mt", "sms/momt"]
    assert r.body["verificationDetails"]["sms/mt"]["url"] == gateway.url + "/sms/mt/verify"
    assert r.body["verificationDetails"]["sms/momt"]["moVerifier"] == "+33700000000"
    r = yield gateway.call("POST", "/discover", {"mcc": "208"})
    assert r.body["verificationMethods"] == ["sms/momt"]
    for bad, errno in [({"mcc": "20"}, 107), ({}, 108), ({"mcc": "208", "mnc": "1"}, 107),
                       ({"mcc": "208", "msisdn": "+331"}, 107)]:
        r = yield gateway.call("POST", "/discover", bad)
        assert (r.code, r.body["errno"]) == (400, errno), bad


@pytest.mark.parametrize("raw,errno", [(b"{", 106), (b"[1]", 106)])
@pytest_twisted.inlineCallbacks
def test_bad_json(gateway, raw, errno):
    r = yield gateway.call("POST", "/discover", raw=raw)
    assert (r.code, r.body["errno"], r.body["error"]) == (400, errno, "Bad Request")


@pytest_twisted.inlineCallbacks
def test_body_over_the_limit_is_413(gateway):
    r = yield gateway.call("POST", "/discover", raw=b"{" + b" " * 30000 + b"}")
    assert (r.code, r.body["errno"]) == (413, 113)


@pytest_twisted.inlineCallbacks
def test_unknown_route_is_json_404(gateway):
    r = yield gateway.call("GET", "/nope")
    assert r.code == 404 and r.body["code"] == 404
    assert "timestamp" in r.headers


@pytest_twisted.inlineCallbacks
def test_heartbeat_reports_storage_and_carriers(gateway):
    r = yield gateway.call("GET", "/__heartbeat__")
    assert (r.code, r.body) == (200, {"storage": True, "carriers": True})



@pytest_twisted.inlineCallbacks
def test_the_registering_daemon_does_not_fetch_the_new_sessions_key(gateway):
    """The daemon that registered a session keeps its Hawk key: the session's
    first request there reads no key from Redis (one round trip fewer), as a
    session whose key field is gone from Redis shows; a daemon that did not
    register it (here: its key cache emptied) reads it, and finds none."""
    from msisdnd import hawk
    from msisdnd.state import keys
    from msisdnd.verification import codes

    token = yield gateway.register()
    hawk_id = hawk.derive_session(bytes.fromhex(token)).id
    session = keys.session(codes.session_ref(gateway.verifier.secrets.session, hawk_id))
    assert (yield gateway.store.redis.hdel(session, "k")) == 1
    r = yield gateway.call("POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"},
                           token=token)
    assert r.code == 204
    gateway.verifier.hawk._keys.clear()
    r = yield gateway.call("POST", "/sms/verify_code", {"code": "0" * 32}, token=token)
    assert (r.code, r.body["errno"]) == (401, 110)
