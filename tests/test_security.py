"""What a stranger tried against the device API, on the whole gateway (real
Redis, the fake SMSC over TCP): each attack as a test.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq
from test_api_edges import browserid_key

from msisdnd import hawk

NUMBER = "+33612345671"


def authorization(gateway, token: str, path: str, body: bytes) -> str:
    credentials = hawk.derive_session(bytes.fromhex(token))
    return hawk.authorization_header(credentials, "POST", gateway.url + path, body,
                                     "application/json", with_hash=True)


@pytest_twisted.inlineCallbacks
def verified_session(gateway, number: str = NUMBER):
    token = yield gateway.register()
    r = yield gateway.call("POST", "/sms/mt/verify", {"msisdn": number, "mcc": "208"},
                           token=token)
    assert r.code == 204, r
    code = yield gateway.pin(number)
    r = yield gateway.call("POST", "/sms/verify_code", {"code": code}, token=token)
    assert r.code == 200, r
    return token


@pytest_twisted.inlineCallbacks
def test_deeply_nested_json_is_bad_json_not_a_500(gateway):
    for path in ("/discover", "/register"):
        r = yield gateway.call("POST", path, raw=b"[" * 10_000)
        assert r.code == 400 and r.body["errno"] == 106, (path, r)
    token = yield gateway.register()
    r = yield gateway.call("POST", "/sms/mt/verify", raw=b"[" * 10_000, token=token)
    assert r.code == 400 and r.body["errno"] == 106


@pytest_twisted.inlineCallbacks
def test_a_verified_session_triggers_no_more_sms(gateway):
    token = yield verified_session(gateway)
    sent = len(gateway.smsc.smsc.received(NUMBER))
    for path, body in [("/sms/resend_code", {}),
                       ("/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"})]:
        r = yield gateway.call("POST", path, body, token=token)
        assert r.code == 409 and r.body["errno"] == 127, (path, r)
    assert len(gateway.smsc.smsc.received(NUMBER)) == sent


@pytest_twisted.inlineCallbacks
def test_two_authorization_headers_are_refused(gateway):
    token = yield gateway.register()
    body = b'{"msisdn": "+33612345672", "mcc": "208"}'
    header = authorization(gateway, token, "/sms/mt/verify", body)
    response = yield treq.post(gateway.url + "/sms/mt/verify", data=body, headers={
        "Content-Type": ["application/json"], "Authorization": [header, header]})
    payload = yield response.json()
    assert response.code == 400 and payload["errno"] == 110
    assert gateway.smsc.smsc.received("+33612345672") == []


@pytest_twisted.inlineCallbacks
def test_discover_refuses_a_null_msisdn(gateway):
    r = yield gateway.call("POST", "/discover", {"mcc": "208", "msisdn": None})
    assert r.code == 400 and r.body["errno"] == 107
    r = yield gateway.call("POST", "/discover", {"mcc": "208"})
    assert r.code == 200


@pytest_twisted.inlineCallbacks
def test_a_daemon_refuses_a_nonce_it_served_even_if_redis_forgot_it(gateway):
    """A Redis restored from a snapshot rolls nonces back; the daemon that served
    a request still refuses its replay within the skew window."""
    token = yield gateway.register()
    body = b"{}"
    header = authorization(gateway, token, "/sms/resend_code", body)
    headers = {"Content-Type": ["application/json"], "Authorization": [header]}
    first = yield treq.post(gateway.url + "/sms/resend_code", data=body, headers=headers)
    assert first.code == 400  # authenticated (its nonce claimed), then: no number yet
    keys = yield gateway.store.redis.keys("ms:n:*")
    assert keys
    yield gateway.store.redis.delete(*keys)  # the snapshot from before the request
    replay = yield treq.post(gateway.url + "/sms/resend_code", data=body, headers=headers)
    payload = yield replay.json()
    assert replay.code == 401 and payload["errno"] == 110


@pytest_twisted.inlineCallbacks
def test_writing_a_verified_state_into_redis_forges_no_certificate(gateway):
    """Setting v and n on one's own session (Redis write access, no password by
    default) used to get a certificate for anyone's number; the verified state is
    now bound to a server secret."""
    from msisdnd.state import keys
    from msisdnd.verification import codes

    victim = yield verified_session(gateway, "+33612345673")
    victim_ref = codes.session_ref(gateway.verifier.secrets.session,
                                   hawk.derive_session(bytes.fromhex(victim)).id)
    victim_fields = yield gateway.store.session(victim_ref)
    attacker = yield gateway.register()
    attacker_id = hawk.derive_session(bytes.fromhex(attacker)).id
    ref = codes.session_ref(gateway.verifier.secrets.session, attacker_id)
    key = keys.session(ref)
    yield gateway.store.redis.hset(key, "v", victim_fields["v"])
    yield gateway.store.redis.hset(key, "n", codes.seal_number(attacker_id, "+33612345673"))
    for name in ("h", "vm", "m"):  # copied from the victim's session, readable in a dump
        yield gateway.store.redis.hset(key, name, victim_fields[name])
    rsa = __import__("test_api_flows").rsa_browserid_key()
    r = yield gateway.call("POST", "/certificate/sign", {"publicKey": rsa, "duration": 60},
                           token=attacker)
    assert r.code == 410 and r.body["errno"] == 111, r
    good = yield gateway.call("POST", "/certificate/sign", {"publicKey": rsa, "duration": 60},
                              token=victim)
    assert good.code == 200


@pytest_twisted.inlineCallbacks
def test_a_body_without_a_payload_hash_is_refused(gateway):
    """One intercepted /certificate/sign header plus a swapped body gave a 24 h
    certificate for the victim's number bound to the attacker's key: a request
    with a body must declare its payload hash."""
    token = yield verified_session(gateway, "+33612345674")
    rsa = __import__("test_api_flows").rsa_browserid_key()
    credentials = hawk.derive_session(bytes.fromhex(token))
    url = gateway.url + "/certificate/sign"
    victim_body = json.dumps({"publicKey": rsa, "duration": 60}).encode()
    header = hawk.authorization_header(credentials, "POST", url, victim_body,
                                       "application/json")  # no hash, as upstream clients
    swapped = json.dumps({"publicKey": rsa, "duration": 86400}).encode()
    r = yield treq.post(url, data=swapped, headers={"Authorization": [header],
                                                   "Content-Type": ["application/json"]})
    payload = yield r.json()
    assert r.code == 401 and payload["errno"] == 110
    assert "Payload hash required" in r.headers.getRawHeaders(b"WWW-Authenticate")[0].decode()
    # Bodiless requests need none.
    r = yield gateway.call("POST", "/unregister", token=token, with_hash=False)
    assert r.code == 204


@pytest_twisted.inlineCallbacks
def test_the_legacy_switch_accepts_bodies_without_a_hash(gateway):
    gateway.verifier.hawk.require_payload_hash = False
    token = yield gateway.register()
    r = yield gateway.call("POST", "/sms/mt/verify", {"msisdn": "+33612345675", "mcc": "208"},
                           token=token, with_hash=False)
    assert r.code == 204


@pytest_twisted.inlineCallbacks
def test_only_the_service_apps_hashes_go_in_an_sms(gateway):
    """A client could put 11 characters of its own on a line of an SMS sent to
    another number ("CallMe+9000"); only configured app hashes are accepted."""
    from gateway import APP_HASH

    token = yield gateway.register()
    r = yield gateway.call("POST", "/sms/mt/verify", {"msisdn": "+33612345676", "mcc": "208",
                                                      "appHash": "CallMe+9000"}, token=token)
    assert r.code == 400 and r.body["errno"] == 107
    assert gateway.smsc.smsc.received("+33612345676") == []
    r = yield gateway.call("POST", "/sms/mt/verify", {
        "msisdn": "+33612345676", "mcc": "208", "shortVerificationCode": True,
        "appHash": APP_HASH}, token=token)
    assert r.code == 204
    [sms] = gateway.smsc.smsc.received("+33612345676")
    assert APP_HASH in sms.text and "CallMe" not in sms.text


@pytest_twisted.inlineCallbacks
def test_the_client_mcc_counts_only_when_it_is_the_numbers_regions(gateway):
    """A French number sent with mcc 310 (a US network) is served, but the US
    network is neither used for routing nor charged to its budget: the mismatch
    is logged and counted."""
    from msisdnd.verification.networks import mcc_regions, network_for

    assert {"US", "PR", "GU"} <= mcc_regions("310") and "FR" in mcc_regions("208")
    assert network_for("+33612345677", "310", "260").consistent is False
    assert network_for("+33612345677", "208", "01").mcc == "208"
    assert network_for("+14155550123", "311", "480").consistent  # several MCCs per country
    token = yield gateway.register()
    before = gateway.verifier.mcc_mismatches
    r = yield gateway.call("POST", "/sms/mt/verify", {"msisdn": "+33612345677", "mcc": "310",
                                                      "mnc": "260"}, token=token)
    assert r.code == 204
    assert gateway.verifier.mcc_mismatches == before + 1
    fields = yield gateway.store.session(gateway.verifier._ref(
        hawk.derive_session(bytes.fromhex(token)).id))
    assert fields["g"] == b""  # no network recorded for the budgets and the guard


@pytest.mark.parametrize("other_daemon", [False, True], ids=["same-daemon", "other-daemon"])
@pytest_twisted.inlineCallbacks
def test_a_replay_of_each_hawk_route_is_refused_and_changes_nothing(gateway, other_daemon):
    """Every Hawk route's request sent again as it was (same header, same body)
    is refused 401 (errno 110, Invalid nonce) and changes nothing: no second
    SMS, no second try spent, no second certificate, no second unregister.
    The daemon that served it refuses it from memory; another daemon (here:
    the same one, its memory of nonces emptied) through the nonce the step's
    first script claimed in Redis."""
    from msisdnd.verification import codes

    number = "+33612345674"
    token = yield gateway.register()
    ref = codes.session_ref(gateway.verifier.secrets.session,
                            hawk.derive_session(bytes.fromhex(token)).id)

    @pytest_twisted.inlineCallbacks
    def twice(path, payload, refusal="Invalid nonce"):
        body = json.dumps(payload).encode()
        headers = {"Content-Type": ["application/json"],
                   "Authorization": [authorization(gateway, token, path, body)]}
        first = yield treq.post(gateway.url + path, data=body, headers=headers)
        yield first.content()
        before = yield gateway.store.session(ref)
        if other_daemon:
            gateway.verifier.hawk._nonces.clear()
        replay = yield treq.post(gateway.url + path, data=body, headers=headers)
        answer = yield replay.json()
        assert (replay.code, answer["errno"]) == (401, 110), (path, answer)
        assert replay.headers.getRawHeaders("WWW-Authenticate") == [f'Hawk error="{refusal}"']
        assert (yield gateway.store.session(ref)) == before, path
        return first.code

    assert (yield twice("/sms/mt/verify", {"msisdn": number, "mcc": "208",
                                           "shortVerificationCode": True})) == 204
    assert len(gateway.smsc.smsc.received(number)) == 1
    assert (yield twice("/sms/resend_code", {})) == 429  # within the cooldown
    pin = yield gateway.pin(number)
    wrong = str((int(pin) + 1) % 10 ** len(pin)).zfill(len(pin))
    assert (yield twice("/sms/verify_code", {"code": wrong})) == 400
    assert int((yield gateway.store.session(ref))["t"]) == 1  # one try spent, not two
    assert (yield twice("/sms/verify_code", {"code": pin})) == 200
    assert len(gateway.smsc.smsc.received(number)) == 1
    assert (yield twice("/certificate/sign", {"publicKey": browserid_key(), "duration": 60,
                                              "format": "jwt"})) == 200
    # The session is gone: its key is unknown before the nonce is looked at.
    assert (yield twice("/unregister", {}, "Unknown credentials")) == 204


@pytest_twisted.inlineCallbacks
def test_a_replay_with_an_invalid_body_is_answered_the_body_error(gateway):
    """A request whose body is refused never reaches its step, whose first
    script claims the nonce: its replay is answered the same 400 (nothing
    changed either time)."""
    token = yield gateway.register()
    body = json.dumps({"msisdn": "+331", "mcc": "208"}).encode()
    headers = {"Content-Type": ["application/json"],
               "Authorization": [authorization(gateway, token, "/sms/mt/verify", body)]}
    for _ in range(2):
        r = yield treq.post(gateway.url + "/sms/mt/verify", data=body, headers=headers)
        payload = yield r.json()
        assert (r.code, payload["errno"]) == (400, 107)
        gateway.verifier.hawk._nonces.clear()
