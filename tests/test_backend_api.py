"""The backend Verify API on the whole gateway: real Redis, the fake SMSC over TCP.

API keys, every status transition, resends on the same id, idempotency,
cancel, key isolation, the key's own limits, the abuse limits shared with
the device API, nothing in clear in Redis; and the expiry driven by a
task.Clock over the real store.
"""

from __future__ import annotations

import json
import re

import pytest
import pytest_twisted
import treq
from openapi_spec_validator import validate
from twisted.internet import reactor, task
from twisted.internet.defer import DeferredList, inlineCallbacks

from msisdnd.api.openapi import spec
from msisdnd.smpp import codec
from msisdnd.state.api_keys import ApiKeyRecord, ApiKeys
from msisdnd.state.idempotency import Idempotency
from msisdnd.state.limits import LimitSettings
from msisdnd.state.sessions import SessionStore
from msisdnd.verification.authentication import ApiKeyAuthenticator, api_key_mac, new_api_key
from msisdnd.verification.backend import BackendVerifications, Status
from msisdnd.verification.errors import UnknownVerification
from msisdnd.verification.flows import Verifier
from msisdnd.verification.settings import Secrets, VerificationSettings
from msisdnd.verification.texts import SMSTexts

from conftest import wait_until
from gateway import Response, raw_request, start_gateway
from test_api_edges import dump_redis
from test_flows_clock import Outbox

NUMBER = "+33612345601"


# -- helpers ------------------------------------------------------------------------


@inlineCallbacks
def make_key(gateway, name: str, *, rate: int = 600, budget: int = 0, expires: int = 0):
    """A new API key in the gateway's Redis; fires with the key a backend sends."""
    key_id, secret = new_api_key()
    created = yield ApiKeys(gateway.store).create(ApiKeyRecord(
        key_id=key_id, name=name, mac=api_key_mac(gateway.verifier.secrets.api_key, secret),
        created=int(reactor.seconds() * 1000), expires=expires, rate_per_minute=rate,
        daily_budget=budget))
    assert created
    return f"{key_id}.{secret}"


@inlineCallbacks
def call(gateway, method: str, path: str, body: object = None, *, key: str | None = None,
         headers: dict[str, str] | None = None):
    """One backend request with C{key} as its bearer token."""
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    if data:
        sent["Content-Type"] = "application/json"
    response = yield treq.request(method, gateway.url + path, data=data,
                                  headers={k: [v] for k, v in sent.items()})
    content = yield response.content()
    flat = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    return Response(response.code, flat, json.loads(content) if content else None)


@inlineCallbacks
def create(gateway, key: str, to: str = NUMBER, expect: int = 201, **fields):
    r = yield call(gateway, "POST", "/v2/verifications", {"to": to, **fields}, key=key)
    assert r.code == expect, r
    return r.body


@inlineCallbacks
def check(gateway, key: str, code: str, expect: int = 200, **target):
    r = yield call(gateway, "POST", "/v2/verifications/check", {"code": code, **target}, key=key)
    assert r.code == expect, r
    return r.body


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


@pytest.fixture
def resend_gateway(redis_pool, tmp_path_factory):
    """The gateway with no resend cooldown, so that resends can be tested at once."""
    running = pytest_twisted.blockon(start_gateway(
        redis_pool, tmp_path_factory.mktemp("keys"),
        settings=VerificationSettings(send_timeout=3.0, resend_cooldown=0)))
    yield running
    pytest_twisted.blockon(running.stop())
    pytest_twisted.blockon(running.smsc.stop())


# -- API keys -------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_missing_unknown_expired_and_revoked_keys_get_401_with_a_bearer_challenge(gateway):
    good = yield make_key(gateway, "good")
    key_id, secret = good.split(".")
    expired = yield make_key(gateway, "expired", expires=int(reactor.seconds() * 1000) - 1)
    revoked = yield make_key(gateway, "revoked")
    assert (yield ApiKeys(gateway.store).revoke("revoked")) == revoked.split(".")[0]
    for header in [None, "Basic abc", f"Bearer {key_id}", f"Bearer {key_id}.{secret[:-1]}x",
                   f"Bearer {'0' * 16}.{secret}", f"Bearer {expired}", f"Bearer {revoked}"]:
        r = yield call(gateway, "POST", "/v2/verifications/check", {"code": "123456", "id": "x"},
                       headers={"Authorization": header} if header else {})
        assert r.code == 401 and r.body["errno"] == 110, (header, r)
        assert r.headers["www-authenticate"].startswith("Bearer"), header
        assert set(r.body) == {"code", "errno", "error", "message"}
    r = yield call(gateway, "GET", "/v2/verifications/VE" + "0" * 32, key=good)
    assert r.code == 404 and r.body["errno"] == 126


@pytest_twisted.inlineCallbacks
def test_a_key_rate_and_daily_budget_are_enforced(gateway):
    slow = yield make_key(gateway, "slow", rate=2)
    for _ in range(2):
        r = yield call(gateway, "GET", "/v2/verifications/VE" + "0" * 32, key=slow)
        assert r.code == 404
    r = yield call(gateway, "GET", "/v2/verifications/VE" + "0" * 32, key=slow)
    assert r.code == 429 and r.body["errno"] == 122 and int(r.headers["retry-after"]) >= 1

    thrifty = yield make_key(gateway, "thrifty", budget=1)
    yield create(gateway, thrifty, "+33612345602", expect=400, channel="voice")  # refunded
    yield create(gateway, thrifty, "+33612345602")
    r = yield call(gateway, "POST", "/v2/verifications", {"to": "+33612345603"}, key=thrifty)
    assert r.code == 429 and r.body["errno"] == 123 and int(r.headers["retry-after"]) >= 1
    assert gateway.smsc.smsc.received("+33612345603") == []


# -- the flow ---------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_create_answers_201_once_the_smsc_accepted_and_the_right_code_approves(gateway):
    key = yield make_key(gateway, "shop")
    verification = yield create(gateway, key, locale="fr", code_length=8)
    assert re.fullmatch(r"VE[0-9a-f]{32}", verification["id"])
    assert verification["to"] == NUMBER and verification["channel"] == "sms"
    assert verification["status"] == "pending"
    for name in ("created_at", "updated_at", "expires_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", verification[name])
    assert verification["expires_at"] > verification["created_at"]
    [attempt] = verification["send_attempts"]
    assert attempt["carrier"] == "fake" and attempt["delivery"] == "pending"
    [sms] = gateway.smsc.smsc.received(NUMBER)
    assert sms.text.startswith("Votre code")
    code = yield gateway.pin(NUMBER)
    assert re.fullmatch(r"\d{8}", code)

    result = yield check(gateway, key, wrong(code), id=verification["id"])
    assert result == {"id": verification["id"], "status": "pending", "valid": False,
                      "tries_left": 2}
    result = yield check(gateway, key, code, id=verification["id"])
    assert result["status"] == "approved" and result["valid"] is True
    again = yield check(gateway, key, code, id=verification["id"])
    assert again["status"] == "approved" and again["valid"] is False
    fetched = yield call(gateway, "GET", f"/v2/verifications/{verification['id']}", key=key)
    assert fetched.code == 200 and fetched.body["status"] == "approved"
    assert fetched.headers["cache-control"] == "no-store"


@pytest_twisted.inlineCallbacks
def test_the_last_wrong_try_reaches_max_attempts_and_ends_the_verification(gateway):
    key = yield make_key(gateway, "shop")
    verification = yield create(gateway, key)
    code = yield gateway.pin(NUMBER)
    answers = []
    for _ in range(3):
        answers.append((yield check(gateway, key, wrong(code), to=NUMBER)))
    assert [(a["status"], a["tries_left"]) for a in answers] == [
        ("pending", 2), ("pending", 1), ("max_attempts_reached", 0)]
    late = yield check(gateway, key, code, id=verification["id"])
    assert late == {"id": verification["id"], "status": "max_attempts_reached", "valid": False,
                    "tries_left": 0}
    r = yield call(gateway, "POST", "/v2/verifications/check", {"code": code, "to": NUMBER},
                   key=key)
    assert r.code == 404 and r.body["errno"] == 126  # none pending for the number


@pytest_twisted.inlineCallbacks
def test_check_by_number_and_the_request_shapes_it_refuses(gateway):
    key = yield make_key(gateway, "shop")
    r = yield call(gateway, "POST", "/v2/verifications/check", {"code": "123456", "to": NUMBER},
                   key=key)
    assert r.code == 404 and r.body["errno"] == 126
    verification = yield create(gateway, key)
    code = yield gateway.pin(NUMBER)
    for body, errno in [({"code": code}, 107), ({"code": code, "id": verification["id"],
                                                  "to": NUMBER}, 107),
                        ({"id": verification["id"]}, 108), ({"code": 123456, "to": NUMBER}, 107),
                        ({"code": "12345", "to": NUMBER}, 107)]:
        r = yield call(gateway, "POST", "/v2/verifications/check", body, key=key)
        assert r.code == 400 and r.body["errno"] == errno, body
    for body, errno in [({}, 108), ({"to": "0612345678"}, 107), ({"to": NUMBER, "code_length": 5},
                                                                  107),
                        ({"to": NUMBER, "code_length": True}, 107),
                        ({"to": NUMBER, "app_hash": "CallMe+9000!"}, 107)]:
        r = yield call(gateway, "POST", "/v2/verifications", body, key=key)
        assert r.code == 400 and r.body["errno"] == errno, body
    r = yield call(gateway, "POST", "/v2/verifications", key=key,
                   headers={"Content-Type": "application/json"})
    assert r.code == 400
    result = yield check(gateway, key, code, to=NUMBER)
    assert result["id"] == verification["id"] and result["valid"] is True


@pytest_twisted.inlineCallbacks
def test_a_second_create_resends_on_the_same_id_within_cooldown_and_cap(resend_gateway):
    gateway = resend_gateway
    key = yield make_key(gateway, "shop")
    first = yield create(gateway, key)
    old = yield gateway.pin(NUMBER)
    second = yield create(gateway, key)
    assert second["id"] == first["id"] and len(second["send_attempts"]) == 2
    new = yield gateway.pin(NUMBER)
    assert len(gateway.smsc.smsc.received(NUMBER)) == 2
    if new != old:
        stale = yield check(gateway, key, old, id=first["id"])
        assert stale["valid"] is False and stale["status"] == "pending"
    for _ in range(2):  # up to the cap: the first send and 3 resends
        yield create(gateway, key)
    r = yield call(gateway, "POST", "/v2/verifications", {"to": NUMBER}, key=key)
    assert r.code == 429 and r.body["errno"] == 115
    fresh = yield gateway.pin(NUMBER)
    result = yield check(gateway, key, fresh, id=first["id"])
    assert result["valid"] is True


@pytest_twisted.inlineCallbacks
def test_a_second_create_within_the_cooldown_is_refused_with_retry_after(gateway):
    key = yield make_key(gateway, "shop")
    yield create(gateway, key)
    r = yield call(gateway, "POST", "/v2/verifications", {"to": NUMBER}, key=key)
    assert r.code == 429 and r.body["errno"] == 114 and 1 <= int(r.headers["retry-after"]) <= 30
    assert len(gateway.smsc.smsc.received(NUMBER)) == 1


@pytest_twisted.inlineCallbacks
def test_cancel_stops_the_code_at_once(gateway):
    key = yield make_key(gateway, "shop")
    verification = yield create(gateway, key)
    code = yield gateway.pin(NUMBER)
    r = yield call(gateway, "POST", f"/v2/verifications/{verification['id']}/cancel", key=key)
    assert r.code == 200 and r.body["status"] == "canceled" and r.body["to"] == NUMBER
    result = yield check(gateway, key, code, id=verification["id"])
    assert result["status"] == "canceled" and result["valid"] is False
    again = yield call(gateway, "POST", f"/v2/verifications/{verification['id']}/cancel", key=key)
    assert again.body["status"] == "canceled"
    r = yield call(gateway, "POST", "/v2/verifications/check", {"code": code, "to": NUMBER},
                   key=key)
    assert r.code == 404
    later = yield create(gateway, key)  # the number's limits apply, not the old one's cooldown
    assert later["id"] != verification["id"] and later["status"] == "pending"


@pytest_twisted.inlineCallbacks
def test_a_key_sees_only_its_own_verifications(gateway):
    mine = yield make_key(gateway, "mine")
    theirs = yield make_key(gateway, "theirs")
    verification = yield create(gateway, mine)
    code = yield gateway.pin(NUMBER)
    vid = verification["id"]
    for method, path, body in [("GET", f"/v2/verifications/{vid}", None),
                               ("POST", f"/v2/verifications/{vid}/cancel", {}),
                               ("POST", "/v2/verifications/check", {"id": vid, "code": code}),
                               ("POST", "/v2/verifications/check", {"to": NUMBER, "code": code})]:
        r = yield call(gateway, method, path, body, key=theirs)
        assert r.code == 404 and r.body["errno"] == 126, path
    result = yield check(gateway, mine, code, id=vid)
    assert result["valid"] is True


@pytest_twisted.inlineCallbacks
def test_idempotency_replays_the_first_answer_and_refuses_another_body(gateway):
    key = yield make_key(gateway, "shop")
    idem = {"Idempotency-Key": "order-1234"}
    first = yield call(gateway, "POST", "/v2/verifications", {"to": NUMBER}, key=key,
                       headers=idem)
    replay = yield call(gateway, "POST", "/v2/verifications", {"to": NUMBER}, key=key,
                        headers=idem)
    assert first.code == replay.code == 201 and replay.body == first.body
    assert len(gateway.smsc.smsc.received(NUMBER)) == 1
    other = yield call(gateway, "POST", "/v2/verifications", {"to": "+33612345609"}, key=key,
                       headers=idem)
    assert other.code == 422 and other.body["errno"] == 124
    # Scoped per API key: another key may use the same Idempotency-Key.
    second_key = yield make_key(gateway, "other")
    theirs = yield call(gateway, "POST", "/v2/verifications", {"to": "+33612345609"},
                        key=second_key, headers=idem)
    assert theirs.code == 201 and theirs.body["id"] != first.body["id"]
    # Only a 201 is remembered: a refused request may be retried with a good body.
    bad = yield call(gateway, "POST", "/v2/verifications", {"to": "nope"}, key=key,
                     headers={"Idempotency-Key": "order-5678"})
    assert bad.code == 400
    good = yield call(gateway, "POST", "/v2/verifications", {"to": "+33612345608"}, key=key,
                      headers={"Idempotency-Key": "order-5678"})
    assert good.code == 201


@pytest_twisted.inlineCallbacks
def test_a_retry_while_the_first_request_waits_for_the_smsc_gets_409(gateway):
    key = yield make_key(gateway, "shop")
    gateway.smsc.smsc.faults.response_delay = 0.5
    idem = {"Idempotency-Key": "slow-1"}
    first = call(gateway, "POST", "/v2/verifications", {"to": NUMBER}, key=key, headers=idem)
    yield wait_until(lambda: gateway.smsc.smsc.submit_count >= 1)
    retry = yield call(gateway, "POST", "/v2/verifications", {"to": NUMBER}, key=key,
                       headers=idem)
    assert retry.code == 409 and retry.body["errno"] == 125 and retry.headers["retry-after"]
    done = yield first
    assert done.code == 201


@pytest_twisted.inlineCallbacks
def test_a_send_that_cannot_be_made_gets_503_and_leaves_nothing_pending(gateway):
    key = yield make_key(gateway, "shop")
    gateway.smsc.smsc.faults.fail_every = 1
    gateway.smsc.smsc.faults.fail_status = codec.status_code("ESME_RSUBMITFAIL")
    r = yield call(gateway, "POST", "/v2/verifications", {"to": NUMBER}, key=key)
    assert r.code == 503 and r.body["errno"] == 201 and r.headers["retry-after"]
    r = yield call(gateway, "POST", "/v2/verifications/check", {"code": "123456", "to": NUMBER},
                   key=key)
    assert r.code == 404
    dump = yield dump_redis(gateway.store.redis)
    owned = [k for k, kind, parts in dump if kind == "hash" and b"o" in parts[::2]]
    assert owned == []
    gateway.smsc.smsc.faults.fail_every = 0
    yield create(gateway, key)


@pytest_twisted.inlineCallbacks
def test_fetch_shows_each_attempts_delivery_from_the_receipts(gateway_with_receipts):
    gateway = gateway_with_receipts
    key = yield make_key(gateway, "shop")
    verification = yield create(gateway, key)

    @inlineCallbacks
    def delivered():
        r = yield call(gateway, "GET", f"/v2/verifications/{verification['id']}", key=key)
        return [a["delivery"] for a in r.body["send_attempts"]] == ["delivered"]

    yield wait_until_async(delivered)


@inlineCallbacks
def wait_until_async(predicate, timeout: float = 5.0):
    """Poll an asynchronous predicate until it fires true, or fail after C{timeout}."""
    deadline = reactor.seconds() + timeout
    while not (yield predicate()):
        assert reactor.seconds() < deadline, "timed out"
        yield task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.inlineCallbacks
def test_nothing_in_clear_in_redis_after_backend_flows(gateway):
    key = yield make_key(gateway, "shop")
    verification = yield create(gateway, key, code_length=10)
    code = yield gateway.pin(NUMBER)
    yield check(gateway, key, wrong(code), id=verification["id"])
    yield call(gateway, "POST", "/v2/verifications", {"to": "+33612345607"}, key=key,
               headers={"Idempotency-Key": "order-1"})
    dump = yield dump_redis(gateway.store.redis)
    blob = b"\n".join([k for k, _, _ in dump] + [p for _, _, parts in dump for p in parts])
    secret = key.split(".")[1].encode()
    for needle in [NUMBER[1:].encode(), NUMBER[4:].encode(), b"2345607", code.encode(), secret,
                   b"order-1"]:
        assert needle not in blob, needle


@pytest_twisted.inlineCallbacks
def test_number_limits_are_shared_with_the_device_api(redis_pool, tmp_path_factory):
    gateway = yield start_gateway(redis_pool, tmp_path_factory.mktemp("keys"),
                                  limits=LimitSettings(number_sends_10min=2,
                                                       ip_sends_minute=100))
    try:
        for _ in range(2):
            token = yield gateway.register()
            r = yield gateway.call("POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"},
                                   token=token)
            assert r.code == 204, r
        key = yield make_key(gateway, "shop")
        r = yield call(gateway, "POST", "/v2/verifications", {"to": NUMBER}, key=key)
        assert r.code == 429 and r.body["errno"] == 116 and r.headers["retry-after"]
        assert len(gateway.smsc.smsc.received(NUMBER)) == 2
    finally:
        yield gateway.stop()
        yield gateway.smsc.stop()


@pytest_twisted.inlineCallbacks
def test_backend_routes_send_no_cors_headers(gateway):
    key = yield make_key(gateway, "shop")
    origin = {"Origin": "https://app.example"}
    backend = yield call(gateway, "GET", "/v2/verifications/VE" + "0" * 32, key=key,
                         headers=origin)
    device = yield call(gateway, "GET", "/__version__", headers=origin)
    assert "access-control-allow-origin" not in backend.headers
    assert device.headers["access-control-allow-origin"] == "https://app.example"
    preflight = yield treq.request("OPTIONS", gateway.url + "/v2/verifications",
                                   headers={"Origin": ["https://app.example"],
                                            "Access-Control-Request-Method": ["POST"]})
    assert not preflight.headers.hasHeader(b"Access-Control-Allow-Origin")


# -- the document --------------------------------------------------------------------


def test_the_openapi_document_is_valid_and_describes_the_backend_api():
    document = spec("https://verify.example")
    validate(document)
    create_op = document["paths"]["/v2/verifications"]["post"]
    assert {"201", "400", "401", "403", "409", "413", "422", "429", "503"} <= set(
        create_op["responses"])
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "requestBody" in operation:
                assert "413" in operation["responses"], (path, method)
                assert operation["requestBody"]["content"]["application/json"]["example"] \
                    is not None, (path, method)
            if "security" in operation:
                assert "401" in operation["responses"], (path, method)
    headers = document["components"]["responses"]["Error429"]["headers"]
    assert {"Retry-After", "Timestamp"} <= set(headers)
    assert "WWW-Authenticate" in document["components"]["responses"]["Error401"]["headers"]


@pytest_twisted.inlineCallbacks
def test_docs_renders_our_document_from_the_installed_swagger_ui(gateway):
    page = yield treq.get(gateway.url + "/docs")
    html = (yield page.text())
    assert page.code == 200 and page.headers.getRawHeaders(b"content-type")[0].startswith(
        b"text/html")
    assert 'url: "/api-specs"' in html and "petstore" not in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/docs/") for a in assets), assets
    for asset in assets:
        r = yield treq.get(gateway.url + asset)
        body = yield r.content()
        assert r.code == 200 and len(body) > 100, asset


# -- expiry, driven by a clock --------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_a_verification_expires_with_its_code(redis_pool):
    clock = task.Clock()
    clock.advance(1_795_000_000)
    store = SessionStore(redis_pool, reactor)
    secrets = Secrets.from_master(b"e" * 32)
    outbox = Outbox()
    verifier = Verifier(store, outbox, VerificationSettings(), secrets, SMSTexts(), clock)
    keys = ApiKeys(store)
    backend = BackendVerifications(verifier, ApiKeyAuthenticator(keys, secrets.api_key, clock),
                                   Idempotency(store), clock)
    key_id, secret = new_api_key()
    record = ApiKeyRecord(key_id, "clock", api_key_mac(secrets.api_key, secret),
                          int(clock.seconds() * 1000), 0, 60, 0)
    yield keys.create(record)
    verification, replayed = yield backend.create(record, NUMBER, locale="en")
    assert not replayed
    code = outbox.sent[-1].text.split()[-1]
    clock.advance(599)
    fetched = yield backend.fetch(record, verification["id"])
    assert fetched["status"] == "pending"
    clock.advance(2)
    result = yield backend.check(record, code, verification_id=verification["id"])
    assert (result.status, result.valid) == (Status.EXPIRED, False)
    fetched = yield backend.fetch(record, verification["id"])
    assert fetched["status"] == "expired" and fetched["expires_at"] == verification["expires_at"]
    with pytest.raises(UnknownVerification):
        yield backend.check(record, code, to=NUMBER)
    # A new create for the number opens a new verification.
    clock.advance(60)
    fresh, _ = yield backend.create(record, NUMBER, locale="en")
    assert fresh["id"] != verification["id"] and fresh["status"] == "pending"


@pytest_twisted.inlineCallbacks
def test_concurrent_creates_for_one_number_send_once(resend_gateway):
    """Two creates racing for one number and key end on one verification id."""
    gateway = resend_gateway
    key = yield make_key(gateway, "shop")
    results = yield DeferredList([call(gateway, "POST", "/v2/verifications", {"to": NUMBER},
                                       key=key) for _ in range(2)])
    answers = [r for ok, r in results if ok]
    ids = {r.body["id"] for r in answers if r.code == 201}
    assert len(ids) == 1, answers


@pytest_twisted.inlineCallbacks
def test_the_right_code_sent_twice_at_once_on_the_last_try_approves(gateway):
    """Two wrong tries, then the right code twice at once (a double click): one
    check takes the last try and approves; the other reports the tries spent."""
    key = yield make_key(gateway, "shop")
    for attempt in range(5):
        number = f"+336123457{attempt:02d}"
        verification = yield create(gateway, key, number)
        code = yield gateway.pin(number)
        for _ in range(2):
            yield check(gateway, key, wrong(code), id=verification["id"])
        both = yield DeferredList([call(gateway, "POST", "/v2/verifications/check",
                                        {"id": verification["id"], "code": code}, key=key)
                                   for _ in range(2)])
        answers = sorted((r.body["status"], r.body["valid"]) for ok, r in both)
        assert ("approved", True) in answers, answers
        fetched = yield call(gateway, "GET", f"/v2/verifications/{verification['id']}", key=key)
        assert fetched.body["status"] == "approved"


@pytest_twisted.inlineCallbacks
def test_checks_racing_for_the_last_try_never_lose_the_right_code(gateway):
    key = yield make_key(gateway, "shop")
    for attempt in range(5):
        number = f"+336123458{attempt:02d}"
        verification = yield create(gateway, key, number)
        code = yield gateway.pin(number)
        bodies = [{"id": verification["id"], "code": c} for c in (code, wrong(code), wrong(code))]
        answers = yield DeferredList([call(gateway, "POST", "/v2/verifications/check", body,
                                           key=key) for body in bodies])
        [right] = [r for ok, r in answers if r.body["valid"]]
        assert right.body["status"] == "approved"


@pytest_twisted.inlineCallbacks
def test_the_last_wrong_try_waits_for_a_check_still_comparing(gateway):
    """A check that took a try and is still comparing its code (begun here by
    hand) may hold the right one: the wrong check that spends the last try
    does not end the verification under it; the last check to finish does."""
    key = yield make_key(gateway, "shop")
    verification = yield create(gateway, key)
    code = yield gateway.pin(NUMBER)
    ref = bytes.fromhex(verification["id"][2:])
    now_ms = int(reactor.seconds() * 1000)
    comparing = yield gateway.store.beginCheck(ref, now_ms, gateway.settings.max_tries)
    assert comparing.tries == 1
    body = {"id": verification["id"], "code": wrong(code)}
    first = yield call(gateway, "POST", "/v2/verifications/check", body, key=key)
    last = yield call(gateway, "POST", "/v2/verifications/check", body, key=key)
    assert (first.body["status"], last.body["status"]) == ("pending", "pending")
    assert last.body["tries_left"] == 0
    status = yield gateway.verifier.verifications.checkFailed(
        ref, gateway.settings.max_tries, now_ms, 60_000)
    assert status == "max_attempts_reached"
    fetched = yield call(gateway, "GET", f"/v2/verifications/{verification['id']}", key=key)
    assert fetched.body["status"] == "max_attempts_reached"


@pytest_twisted.inlineCallbacks
def test_odd_ids_paths_and_bodies_are_4xx_not_500(gateway):
    key = yield make_key(gateway, "shop")
    for body in [{"id": "hello", "code": "123456"}, {"id": "tel:+33612345601", "code": "123456"},
                 {"id": "VE" + "z" * 32, "code": "123456"}]:
        r = yield call(gateway, "POST", "/v2/verifications/check", body, key=key)
        assert r.code == 404 and r.body["errno"] == 126, (body, r)
    for method, path in [("GET", "/v2//verifications/x"), ("POST", "/v2//verifications"),
                         ("POST", "/sms//verify_code")]:
        r = yield call(gateway, method, path, {}, key=key)
        assert r.code == 404, (path, r)
    r = yield call(gateway, "POST", "/v2/verifications", {"to": NUMBER, "note": "\ud800"},
                   key=key, headers={"Idempotency-Key": "k1"})
    assert r.code == 201


@pytest_twisted.inlineCallbacks
def test_wrong_codes_lock_one_key_out_of_the_number_not_the_others(redis_pool, tmp_path):
    """Under the default limits, one API key's client_failures_day wrong codes
    for a number (across its verifications) lock that key out of the number:
    its next check is 429 errno 121 with Retry-After.  Another key's
    verification of the same number still approves."""
    gw = yield start_gateway(redis_pool, tmp_path, limits=LimitSettings())
    try:
        guesser = yield make_key(gw, "guesser")
        other = yield make_key(gw, "other")
        first = yield create(gw, guesser)
        code = yield gw.pin(NUMBER)
        for _ in range(3):
            yield check(gw, guesser, wrong(code), id=first["id"])
        second = yield create(gw, guesser)
        code = yield gw.pin(NUMBER)
        answers = []
        for _ in range(LimitSettings().client_failures_day - 3):
            answers.append((yield check(gw, guesser, wrong(code), id=second["id"]))["valid"])
        assert answers == [False, False]
        r = yield call(gw, "POST", "/v2/verifications/check", {"code": code, "id": second["id"]},
                       key=guesser)
        assert (r.code, r.body["errno"]) == (429, 121) and int(r.headers["retry-after"]) > 3000
        theirs = yield create(gw, other)
        result = yield check(gw, other, (yield gw.pin(NUMBER)), id=theirs["id"])
        assert result["status"] == "approved" and result["valid"] is True
    finally:
        yield gw.stop()
        yield gw.smsc.stop()


@pytest.mark.parametrize("path", [b"//v2/verifications", b"/%762/verifications",
                                  b"/v2%2Fverifications", b"/%76%32/verifications"])
@pytest_twisted.inlineCallbacks
def test_no_cors_headers_for_the_backend_under_another_spelling(gateway, path):
    """A path Klein routes to a backend route, spelt with a slash too many or
    percent-encoded, gets no CORS header either: not on the preflight, not on
    the answer."""
    origin = b"Origin: https://app.example"
    preflight = yield gateway.raw(raw_request(b"OPTIONS", path, b"", origin,
                                              b"Access-Control-Request-Method: POST"))
    answer = yield gateway.raw(raw_request(b"POST", path, b"{}", origin,
                                           b"Content-Type: application/json",
                                           b"Authorization: Bearer nope.nope"))
    assert preflight.startswith(b"HTTP/1.1 204 ") and answer.startswith(b"HTTP/1.1 401 "), \
        (preflight, answer)  # routed as the backend's
    assert b"WWW-Authenticate: Bearer" in answer
    for raw in (preflight, answer):
        assert b"\r\naccess-control-" not in raw.split(b"\r\n\r\n")[0].lower(), raw
