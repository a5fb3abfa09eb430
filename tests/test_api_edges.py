"""Edge cases of the device API, end to end.

Real parts only, as in test_api_flows.py: the Klein API on a TCP port, a real
redis-server, the SMPP stack bound to the fake SMSC over loopback, and a
Hawk-signing client.  These tests cover what the flow tests do not: what is
kept at rest, Hawk's failure modes, the Host header, CORS, the OpenAPI
document, a Redis outage, error bodies, input validation and a failed send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from http import HTTPStatus

import jwt
import pytest
import pytest_twisted
import treq
import txredisapi
from twisted.internet import reactor, task
from twisted.internet.defer import gatherResults, inlineCallbacks

from msisdnd import __version__, hawk
from msisdnd.api import errors
from msisdnd.api.app import GatewayAPI
from msisdnd.verification.settings import VerificationSettings

from conftest import RedisServer, free_port, redis_executable, wait_until
from gateway import MO_NUMBER, start_gateway, verified_session

NUMBER = "+33612345678"  # verified in the at-rest test
PENDING_SHORT = "+33612345677"  # a short code sent, never verified
PENDING_LONG = "+33612345676"  # a long code sent over MT, never verified
MO_NATIONAL = "0612345679"  # the MO flow's source, as the carrier gives it
MO_E164 = "+33612345679"

ORIGIN = "https://app.example"  # the CORS origin tests/gateway.py configures


# -- helpers -------------------------------------------------------------------


@dataclass
class Reply:
    code: int
    phrase: str
    headers: dict[str, str]  # lowercased names; repeated headers joined with ", "
    body: object


def credentials(token: str) -> hawk.HawkCredentials:
    return hawk.derive_session(bytes.fromhex(token))


@inlineCallbacks
def send(url: str, method: str = "GET", data: bytes = b"", headers: dict | None = None):
    """One plain HTTP request; the reply with its status line's reason phrase."""
    response = yield treq.request(method, url, data=data or None,
                                  headers={k: [v] for k, v in (headers or {}).items()})
    content = yield response.content()
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = content
    flat = {k.decode().lower(): ", ".join(x.decode("latin-1") for x in v)
            for k, v in response.headers.getAllRawHeaders()}
    phrase = response.phrase.decode("latin-1") if isinstance(response.phrase, bytes) \
        else str(response.phrase)
    return Reply(response.code, phrase, flat, body)


def call(gateway, method: str, path: str, body: object = None, *, token: str | None = None,
         raw: bytes | None = None, headers: dict | None = None, with_hash: bool = True,
         ts: int | None = None, signed_url: str | None = None):
    """Like C{gateway.call}, with the reason phrase, and control over what is signed."""
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    sent = {"Content-Type": "application/json"} if data else {}
    sent.update(headers or {})
    if token is not None:
        sent["Authorization"] = hawk.authorization_header(
            credentials(token), method, signed_url or gateway.url + path, data,
            sent.get("Content-Type", ""), ts=ts, with_hash=with_hash)
    return send(gateway.url + path, method, data, sent)


def assert_error(reply: Reply, code: int, errno: int) -> None:
    """C{reply} is the JSON error C{{code, errno, error, message}} with this status and errno."""
    assert reply.code == code, reply
    assert isinstance(reply.body, dict), reply
    expected = {"code", "errno", "error", "message"} | ({"triesLeft"} if errno == 105 else set())
    assert set(reply.body) == expected, reply.body
    assert reply.body["code"] == code and reply.body["errno"] == errno, reply.body
    assert reply.body["error"] == HTTPStatus(code).phrase, reply.body
    assert isinstance(reply.body["message"], str) and reply.body["message"], reply.body


@inlineCallbacks
def poll(request, done, timeout: float, interval: float = 0.05):
    """Call C{request()} until C{done(reply)}; fail after C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while True:
        reply = yield request()
        if done(reply):
            return reply
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {timeout}s; last reply: {reply}")
        yield task.deferLater(reactor, interval, lambda: None)


_RSA_KEY: list[str] = []


def browserid_key() -> str:
    """A BrowserID RS public key (JSON string), made once per run."""
    if not _RSA_KEY:
        from cryptography.hazmat.primitives.asymmetric import rsa

        numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048) \
            .public_key().public_numbers()
        _RSA_KEY.append(json.dumps({"algorithm": "RS", "n": str(numbers.n), "e": str(numbers.e)}))
    return _RSA_KEY[0]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@inlineCallbacks
def dump_redis(pool):
    """Every key with its type and contents: [(key, type, [field/value/member bytes])]."""
    keys = yield pool.keys("*")
    dump = []
    for key in keys:
        kind = _text((yield pool.type(key)))
        if kind == "hash":
            fields = yield pool.hgetall(key)
            parts = [p for item in fields.items() for p in item]
        elif kind == "string":
            parts = [(yield pool.get(key))]
        elif kind == "set":
            parts = list((yield pool.smembers(key)))
        elif kind == "list":
            parts = list((yield pool.lrange(key, 0, -1)))
        elif kind == "zset":
            parts = [m for m, _ in (yield pool.zrange(key, 0, -1, withscores=True))]
        else:
            raise AssertionError(f"unexpected Redis type {kind} for {key!r}")
        dump.append((key, kind, [p if isinstance(p, bytes) else str(p).encode() for p in parts]))
    return dump


def _b64_forms(raw: bytes) -> set[bytes]:
    """Base64 (standard and URL-safe, unpadded) of C{raw} at each of the 3 alignments
    it could have inside a longer base64 string (whole 3-byte groups only, >= 6 bytes)."""
    forms = set()
    for start in range(3):
        chunk = raw[start:]
        chunk = chunk[:len(chunk) // 3 * 3]
        if len(chunk) >= 6:
            forms.add(base64.b64encode(chunk))
            forms.add(base64.urlsafe_b64encode(chunk))
    return forms


def text_forms(text: str) -> set[bytes]:
    """C{text} as bytes, as hex (both cases) and as base64 of its bytes."""
    raw = text.encode()
    return {raw, raw.hex().encode(), raw.hex().upper().encode()} | _b64_forms(raw)


def hex_secret_forms(secret_hex: str) -> set[bytes]:
    """A hex secret as text (both cases), its raw bytes, their base64, and any
    8-byte window of the raw bytes (raw or base64) or 16-character window of the hex
    (a truncated form)."""
    raw = bytes.fromhex(secret_hex)
    forms = text_forms(secret_hex.lower()) | text_forms(secret_hex.upper()) | _b64_forms(raw)
    forms |= {raw[i:i + 8] for i in range(len(raw) - 7)}
    for i in range(len(raw) - 8):  # base64 of a slice, at any alignment
        forms |= {base64.b64encode(raw[i:i + 9]), base64.urlsafe_b64encode(raw[i:i + 9])}
    forms |= {secret_hex[i:i + 16].encode() for i in range(0, len(secret_hex) - 15, 2)}
    forms |= {secret_hex[i:i + 16].upper().encode() for i in range(0, len(secret_hex) - 15, 2)}
    return forms


def is_clock_or_counter(value: bytes) -> bool:
    """A decimal counter (< 1000) or a time in ms within a day of now."""
    if not value.isdigit():
        return False
    number = int(value)
    return number < 1000 or abs(number - time.time() * 1000) < 86_400_000


# -- 1. nothing secret at rest ---------------------------------------------------


@pytest.fixture
def receipts_gateway(redis_pool, tmp_path):
    """The gateway of tests/gateway.py with an SMSC that sends delivery receipts."""
    running = pytest_twisted.blockon(start_gateway(redis_pool, tmp_path, receipt_delay=0.01))
    yield running
    pytest_twisted.blockon(running.stop())
    pytest_twisted.blockon(running.smsc.stop())


@pytest_twisted.inlineCallbacks
def test_no_secret_at_rest(receipts_gateway):
    """After a verified MT session, a pending short-code session, a pending long-code
    MT session and a pending MO session, with their delivery receipts recorded, no key
    or value in Redis holds a PIN, a long code, a phone number (E.164 with or without
    '+', national), a Hawk id or a session token -- as bytes, hex or base64, nor any
    8-byte slice of a raw id/token/code."""
    gateway = receipts_gateway
    token1, pin1 = yield verified_session(gateway, NUMBER)

    token2 = yield gateway.register()
    r = yield gateway.call("POST", "/sms/mt/verify", {
        "msisdn": PENDING_SHORT, "mcc": "208", "shortVerificationCode": True}, token=token2)
    assert r.code == 204, r
    pin2 = yield gateway.pin(PENDING_SHORT)

    token3 = yield gateway.register()
    r = yield gateway.call("POST", "/sms/mt/verify", {"msisdn": PENDING_LONG, "mcc": "208"},
                           token=token3)
    assert r.code == 204, r
    long3 = yield gateway.pin(PENDING_LONG)

    token4 = yield gateway.register()
    id4 = credentials(token4).id
    yield gateway.smsc.smsc.deliverMO(MO_NATIONAL, MO_NUMBER, "/sms/momt/verify " + id4)
    long4 = yield gateway.pin(MO_E164)

    assert re.fullmatch(r"[0-9]{6}", pin1) and re.fullmatch(r"[0-9]{6}", pin2)
    assert re.fullmatch(r"[0-9a-f]{32}", long3) and re.fullmatch(r"[0-9a-f]{32}", long4)

    def field_sets(dump):
        return [{p.decode() for p in parts[0::2]}
                for key, kind, parts in dump if key.startswith(b"ms:s:")]

    # Wait for the three pending codes' receipts to be recorded (field d).
    dump = yield poll(lambda: dump_redis(gateway.store.redis),
                      lambda d: sum({"c", "d"} <= f for f in field_sets(d)) == 3, timeout=5)
    sessions = field_sets(dump)
    assert len(sessions) == 4, [key for key, _, _ in dump]  # we are looking at the right Redis
    assert sum("v" in f for f in sessions) == 1  # the verified one
    assert any(key.startswith(b"ms:m:") for key, _, _ in dump)  # message-id records

    digit_secrets: dict[str, set[bytes]] = {}  # could be mistaken in a decimal counter
    other_secrets: dict[str, set[bytes]] = {}
    for name, pin in (("pin1", pin1), ("pin2", pin2)):
        digit_secrets[name] = text_forms(pin)
    for number in (NUMBER, PENDING_SHORT, PENDING_LONG, MO_E164):
        digit_secrets[number] = (text_forms(number) | text_forms(number.lstrip("+"))
                                 | text_forms("0" + number[3:]) | text_forms(number[3:]))
    assert MO_NATIONAL.encode() in digit_secrets[MO_E164]
    for n, token in enumerate((token1, token2, token3, token4), 1):
        other_secrets[f"token{n}"] = hex_secret_forms(token)
        other_secrets[f"hawk id{n}"] = hex_secret_forms(credentials(token).id)
    other_secrets["long3"] = hex_secret_forms(long3)
    other_secrets["long4"] = hex_secret_forms(long4)

    leaks = []
    for key, kind, parts in dump:
        for where, blob in [("key", key)] + [(f"value {i}", p) for i, p in enumerate(parts)]:
            checks = dict(other_secrets)
            if not is_clock_or_counter(blob):
                checks.update(digit_secrets)
            for name, forms in checks.items():
                for form in forms:
                    if form in blob:
                        leaks.append((name, form, key, where))
    assert leaks == []


@pytest_twisted.inlineCallbacks
def test_every_key_at_rest_expires(gateway):
    """Expiry is Redis's job: after a full MT flow, a pending session and Hawk requests
    (nonces), every key in Redis has a TTL -- nothing is kept forever."""
    yield verified_session(gateway, NUMBER)
    token = yield gateway.register()
    r = yield gateway.call("POST", "/sms/mt/verify", {"msisdn": PENDING_SHORT, "mcc": "208"},
                           token=token)
    assert r.code == 204
    keys = yield gateway.store.redis.keys("*")
    assert any(k.startswith(b"ms:n:") for k in keys) and any(k.startswith(b"ms:s:") for k in keys)
    ttls = {}
    for key in keys:
        ttls[key] = int((yield gateway.store.redis.execute_command("PTTL", key)))
    assert all(ttl > 0 for ttl in ttls.values()), ttls


# -- 2. stale timestamps ----------------------------------------------------------


@pytest.mark.parametrize("offset", [-120, 120])
@pytest_twisted.inlineCallbacks
def test_stale_timestamp_gives_a_verifiable_server_time(gateway, offset):
    """A well-signed request whose ts is 2 minutes off is 401 errno 110 with
    WWW-Authenticate: Hawk ts="<server time>", tsm="<HMAC of it>", error="Stale timestamp";
    the tsm is base64(HMAC-SHA256(key as ASCII hex, "hawk.1.ts\\n<ts>\\n")), and a request
    with the corrected time then succeeds."""
    token = yield gateway.register()
    key = credentials(token).key
    r = yield call(gateway, "POST", "/unregister", token=token, ts=int(time.time()) + offset)
    assert_error(r, 401, 110)
    www = r.headers["www-authenticate"]
    assert www.startswith("Hawk ") and 'error="Stale timestamp"' in www, www
    server_ts = int(re.search(r'\bts="(\d+)"', www).group(1))
    tsm = re.search(r'\btsm="([^"]+)"', www).group(1)
    assert abs(server_ts - time.time()) <= 2
    assert abs(server_ts - int(r.headers["timestamp"])) <= 1
    expected = base64.b64encode(hmac.new(key.encode("ascii"), f"hawk.1.ts\n{server_ts}\n".encode(),
                                         hashlib.sha256).digest()).decode()
    assert tsm == expected
    again = yield call(gateway, "POST", "/unregister", token=token, ts=server_ts)
    assert again.code == 204, again


@pytest_twisted.inlineCallbacks
def test_stale_timestamp_with_a_bad_mac_reveals_no_time(gateway):
    """Only a key holder learns the server time: a stale ts with a wrong key is a plain
    'Bad mac' 401, without ts/tsm."""
    token = yield gateway.register()
    real = credentials(token)
    forged = hawk.HawkCredentials(real.id, secrets.token_hex(32))
    header = hawk.authorization_header(forged, "POST", gateway.url + "/unregister",
                                       ts=int(time.time()) - 120)
    r = yield send(gateway.url + "/unregister", "POST", headers={"Authorization": header})
    assert_error(r, 401, 110)
    www = r.headers.get("www-authenticate", "")
    assert "ts=" not in www and "tsm=" not in www and "Stale" not in www, www


# -- 3. malformed, missing, unknown, tampered -------------------------------------------

_ID = "a" * 64


@pytest.mark.parametrize("header", [
    "Bearer abc",
    "Hawk",
    "Hawk garbage",
    'Hawk id="not-hex", ts="1", nonce="n", mac="m"',
    f'Hawk id="{_ID}", ts="soon", nonce="n", mac="m"',
    f'Hawk id="{_ID}", ts="1", nonce="n"',
    f'Hawk id="{_ID.upper()}", ts="1", nonce="n", mac="m"',
    f'Hawk id="{_ID}", ts="1", nonce="n", mac="m", ext="{"x" * 5000}"',
    f'Hawk id="{_ID}", ts="1", nonce="\u00e9", mac="m"',
], ids=["bearer", "bare-scheme", "garbage", "id-not-hex", "ts-not-digits", "no-mac",
        "id-uppercase", "over-4k", "non-ascii"])
@pytest_twisted.inlineCallbacks
def test_malformed_authorization_is_400(gateway, header):
    """A header that is not a well-formed Hawk header is 400 errno 110 (not a 500, not a 401)."""
    r = yield send(gateway.url + "/sms/verify_code", "POST", b'{"code": "123456"}',
                   {"Content-Type": "application/json",
                    "Authorization": header})
    assert_error(r, 400, 110)


@pytest_twisted.inlineCallbacks
def test_missing_authorization_is_401(gateway):
    """No Authorization header on a Hawk route: 401 errno 110 with WWW-Authenticate: Hawk."""
    for path in ("/unregister", "/sms/mt/verify", "/sms/resend_code", "/sms/verify_code",
                 "/certificate/sign"):
        r = yield call(gateway, "POST", path, {})
        assert_error(r, 401, 110)
        assert r.headers.get("www-authenticate", "").startswith("Hawk"), (path, r.headers)


@pytest_twisted.inlineCallbacks
def test_unknown_session_is_401(gateway):
    """A well-formed header signed with credentials that were never registered: 401 errno 110,
    and nothing is sent."""
    never = secrets.token_hex(32)
    r = yield call(gateway, "POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"}, token=never)
    assert_error(r, 401, 110)
    assert "Unknown credentials" in r.headers.get("www-authenticate", "")
    assert gateway.smsc.smsc.submit_count == 0


@pytest_twisted.inlineCallbacks
def test_wrong_key_is_401_bad_mac(gateway):
    """The right (registered) id with a MAC made from another key: 401 errno 110 'Bad mac'."""
    token = yield gateway.register()
    forged = hawk.HawkCredentials(credentials(token).id, secrets.token_hex(32))
    header = hawk.authorization_header(forged, "POST", gateway.url + "/unregister")
    r = yield send(gateway.url + "/unregister", "POST", headers={"Authorization": header})
    assert_error(r, 401, 110)
    assert "Bad mac" in r.headers.get("www-authenticate", "")
    assert (yield gateway.call("POST", "/unregister", token=token)).code == 204  # still alive


@pytest_twisted.inlineCallbacks
def test_payload_hash_must_match_the_body(gateway):
    """A request that declared a payload hash is refused (401 errno 110, no SMS) when the
    body or its Content-Type was changed after signing; the untampered request passes."""
    token = yield gateway.register()
    creds = credentials(token)
    url = gateway.url + "/sms/mt/verify"
    signed_body = json.dumps({"msisdn": NUMBER, "mcc": "208"}).encode()
    header = hawk.authorization_header(creds, "POST", url, signed_body, "application/json",
                                       with_hash=True)
    tampered = json.dumps({"msisdn": PENDING_SHORT, "mcc": "208"}).encode()
    r = yield send(url, "POST", tampered, {"Content-Type": "application/json",
                                           "Authorization": header})
    assert_error(r, 401, 110)
    header = hawk.authorization_header(creds, "POST", url, signed_body, "application/json",
                                       with_hash=True)
    r = yield send(url, "POST", signed_body, {"Content-Type": "text/plain",
                                              "Authorization": header})
    assert_error(r, 401, 110)
    assert gateway.smsc.smsc.submit_count == 0

    ok = yield call(gateway, "POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"},
                    token=token, with_hash=True)
    assert ok.code == 204, ok
    yield wait_until(lambda: gateway.smsc.smsc.received(NUMBER))
    assert gateway.smsc.smsc.received(PENDING_SHORT) == []


# -- 4. the Host header is not trusted -----------------------------------------------


@pytest_twisted.inlineCallbacks
def test_mac_uses_the_configured_url_not_the_host_header(gateway):
    """A request signed for the configured public URL passes whatever Host it carries;
    one signed for the host it claims (another host) fails with 401 'Bad mac'."""
    token = yield gateway.register()
    creds = credentials(token)
    body = json.dumps({"msisdn": NUMBER, "mcc": "208"}).encode()
    header = hawk.authorization_header(creds, "POST", gateway.url + "/sms/mt/verify",
                                       body, "application/json", with_hash=True)
    r = yield send(gateway.url + "/sms/mt/verify", "POST", body,
                   {"Content-Type": "application/json", "Host": "evil.example:8443",
                    "Authorization": header})
    assert r.code == 204, r

    other = yield gateway.register()
    for claimed in ("evil.example:8443", "127.0.0.1:1"):
        header = hawk.authorization_header(credentials(other), "POST",
                                           f"http://{claimed}/unregister")
        r = yield send(gateway.url + "/unregister", "POST",
                       headers={"Host": claimed, "Authorization": header})
        assert_error(r, 401, 110)
        assert "Bad mac" in r.headers.get("www-authenticate", ""), r.headers
    assert (yield gateway.call("POST", "/unregister", token=other)).code == 204


@pytest_twisted.inlineCallbacks
def test_absolute_form_request_target_is_macd_against_the_configured_url(gateway):
    """An absolute-form request line (as sent to a proxy) naming another host: the MAC is
    still over the configured URL and the request's path, so the request passes."""
    token = yield gateway.register()
    header = hawk.authorization_header(credentials(token), "POST", gateway.url + "/unregister")
    answer = yield gateway.raw(
        b"POST http://evil.example/unregister HTTP/1.1\r\nHost: evil.example\r\n"
        b"Authorization: " + header.encode() + b"\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 204"), answer[:200]


# -- 5. CORS -------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_cors_allowed_origin(gateway):
    """The configured origin is echoed with credentials on GET /, on a POST, and on an
    error (so a browser app can read it); Vary: Origin tells caches."""
    token = yield gateway.register()
    replies = [
        (yield call(gateway, "GET", "/", headers={"Origin": ORIGIN})),
        (yield call(gateway, "POST", "/register", headers={"Origin": ORIGIN})),
        (yield call(gateway, "POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"},
                    token=token, headers={"Origin": ORIGIN})),
        (yield call(gateway, "POST", "/sms/verify_code", {}, headers={"Origin": ORIGIN})),
    ]
    assert [r.code for r in replies] == [200, 200, 204, 401]
    for r in replies:
        assert r.headers.get("access-control-allow-origin") == ORIGIN, r
        assert r.headers.get("access-control-allow-credentials") == "true", r
        assert "origin" in r.headers.get("vary", "").lower(), r
        assert "timestamp" in r.headers.get("access-control-expose-headers", "").lower()


@pytest_twisted.inlineCallbacks
def test_cors_unlisted_origin_gets_nothing(gateway):
    """An origin not configured gets no Access-Control-* header, on requests or preflights
    (a prefix or suffix of the allowed origin does not count either)."""
    for origin in ("https://evil.example", "https://app.example.evil", "http://app.example",
                   "null"):
        for method, path in (("GET", "/"), ("POST", "/register"), ("OPTIONS", "/sms/mt/verify")):
            r = yield call(gateway, method, path, headers={
                "Origin": origin, "Access-Control-Request-Method": "POST"})
            assert r.code in (200, 204), r
            assert not [h for h in r.headers if h.startswith("access-control-")], (origin, r)


@pytest_twisted.inlineCallbacks
def test_cors_preflight(gateway):
    """OPTIONS /sms/mt/verify from the allowed origin: 204 with Allow-Methods including POST
    and Allow-Headers including Authorization and Content-Type."""
    r = yield call(gateway, "OPTIONS", "/sms/mt/verify", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.code == 204, r
    assert r.body is None
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-allow-credentials"] == "true"
    methods = {m.strip().upper() for m in r.headers["access-control-allow-methods"].split(",")}
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert "POST" in methods
    assert {"authorization", "content-type"} <= allowed
    assert gateway.smsc.smsc.submit_count == 0


# -- 6. the OpenAPI document is true ------------------------------------------------


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


@pytest_twisted.inlineCallbacks
def test_openapi_document_matches_the_routes(gateway):
    """GET /api-specs is an OpenAPI 3 document of this server; every (path, method) the
    Klein app routes (but OPTIONS/HEAD) is in it, and every operation in it is served."""
    r = yield call(gateway, "GET", "/api-specs")
    assert r.code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.body
    assert re.fullmatch(r"3\.\d+\.\d+", doc["openapi"])
    assert doc["info"]["version"] == __version__ and doc["info"]["title"]
    assert doc["servers"] == [{"url": gateway.url}]
    assert sorted(doc["components"]["schemas"]["Error"]["properties"]["errno"]["enum"]) \
        == sorted(errors.ERRNOS)

    routed = set()
    for rule in GatewayAPI.app.url_map.iter_rules():
        for method in (rule.methods or set()) - {"OPTIONS", "HEAD"}:
            routed.add((_openapi_path(rule.rule), method.lower()))
    documented = {(path, method) for path, item in doc["paths"].items() for method in item
                  if method in {"get", "post", "put", "patch", "delete"}}
    assert len(routed) >= 14
    assert routed - documented == set()
    assert documented - routed == set()

    for path, method in sorted(documented):
        served = yield call(gateway, method.upper(), path)
        assert served.code not in (404, 405, 500), (path, method, served)
        assert str(served.code) in doc["paths"][path][method]["responses"], (path, method, served)


# -- 7. Redis stopped and restarted ---------------------------------------------------


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own, which it may stop and restart."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(redis_executable(), free_port(), str(directory))
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@inlineCallbacks
def _timed(deferred_factory):
    started = time.monotonic()
    reply = yield deferred_factory()
    return reply, time.monotonic() - started


@pytest_twisted.inlineCallbacks
def test_redis_stopped_then_restarted(private_redis, tmp_path):
    """With Redis gone, /register, a Hawk route and /__heartbeat__ answer 503 (errno 201,
    Retry-After; storage false) within the store timeout -- a Hawk route says 503, not
    401, so clients keep their token; once Redis is back on the same port, the pool
    reconnects and the Lua scripts work again (also after SCRIPT FLUSH: EVALSHA NOSCRIPT
    falls back to EVAL), and a whole MT flow succeeds."""
    pool = txredisapi.lazyConnectionPool("127.0.0.1", private_redis.port, charset=None,
                                         convertNumbers=False, reconnect=True)
    gw = yield start_gateway(pool, tmp_path)
    try:
        token = yield gw.register()
        assert (yield call(gw, "GET", "/__heartbeat__")).code == 200

        private_redis.stop()
        down = yield gatherResults([
            _timed(lambda: call(gw, "POST", "/register")),
            _timed(lambda: call(gw, "POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"},
                                token=token)),
            _timed(lambda: call(gw, "GET", "/__heartbeat__")),
        ])
        (register, t1), (hawked, t2), (heartbeat, t3) = down
        for reply in (register, hawked):
            assert_error(reply, 503, 201)
            assert int(reply.headers["retry-after"]) >= 1
        assert (heartbeat.code, heartbeat.body) == (503, {"storage": False, "carriers": True})
        assert max(t1, t2, t3) < 4.0, (t1, t2, t3)
        assert gw.smsc.smsc.submit_count == 0

        private_redis.start()
        yield poll(lambda: call(gw, "POST", "/register"), lambda r: r.code == 200, timeout=15)
        heartbeat = yield poll(lambda: call(gw, "GET", "/__heartbeat__"),
                               lambda r: r.code == 200, timeout=15)
        assert heartbeat.body == {"storage": True, "carriers": True}

        # The restarted Redis kept nothing: the old session is a clean 401, not a 500.
        lost = yield call(gw, "POST", "/unregister", token=token)
        assert_error(lost, 401, 110)

        # Scripts gone from the server's cache while the client still knows their SHAs.
        private_redis.command("SCRIPT", "FLUSH")
        token, pin = yield verified_session(gw, NUMBER)
        assert re.fullmatch(r"[0-9]{6}", pin)
    finally:
        yield gw.stop()
        yield gw.smsc.stop()
        yield pool.disconnect()


@pytest_twisted.inlineCallbacks
def test_a_redis_outage_is_not_one_warning_per_request(private_redis, tmp_path):
    """Every request fails while Redis is away (a failover does that for
    seconds): the API says so in at most ten warnings a minute, not one each."""
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher

    pool = txredisapi.lazyConnectionPool("127.0.0.1", private_redis.port, charset=None,
                                         convertNumbers=False, reconnect=True)
    gw = yield start_gateway(pool, tmp_path)
    seen = []
    try:
        private_redis.stop()
        globalLogPublisher.addObserver(seen.append)
        replies = yield gatherResults([call(gw, "POST", "/register") for _ in range(25)])
    finally:
        globalLogPublisher.removeObserver(seen.append)
        yield gw.stop()
        yield gw.smsc.stop()
        yield pool.disconnect()
    assert [r.code for r in replies] == [503] * 25
    warnings = [formatEvent(e) for e in seen if e.get("log_level") is LogLevel.warn
                and formatEvent(e).startswith("Redis unavailable")]
    assert len(warnings) == 10, warnings


# -- 8. error bodies -------------------------------------------------------------------


@inlineCallbacks
def _wrong_code(gateway):
    token = yield gateway.register()
    yield gateway.call("POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208",
                                                  "shortVerificationCode": True}, token=token)
    pin = yield gateway.pin(NUMBER)
    return (yield call(gateway, "POST", "/sms/verify_code",
                       {"code": "000000" if pin != "000000" else "111111"}, token=token))


@inlineCallbacks
def _unverified_sign(gateway):
    token = yield gateway.register()
    return (yield call(gateway, "POST", "/certificate/sign",
                       {"publicKey": browserid_key(), "duration": 60}, token=token))


@inlineCallbacks
def _resend_too_soon(gateway):
    token = yield gateway.register()
    yield gateway.call("POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"}, token=token)
    return (yield call(gateway, "POST", "/sms/resend_code", token=token))


@inlineCallbacks
def _second_number(gateway):
    token = yield gateway.register()
    yield gateway.call("POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"}, token=token)
    return (yield call(gateway, "POST", "/sms/mt/verify", {"msisdn": PENDING_SHORT, "mcc": "208"},
                       token=token))


_ERROR_CASES = [
    ("404", 404, 107, lambda g: call(g, "GET", "/nope")),  # no errno of its own
    ("405", 405, 107, lambda g: call(g, "GET", "/register")),
    ("bad-json", 400, 106, lambda g: call(g, "POST", "/discover", raw=b"{")),
    ("not-utf8", 400, 106, lambda g: call(g, "POST", "/discover", raw=b'{"mcc": "\xff"}')),
    ("invalid", 400, 107, lambda g: call(g, "POST", "/discover", {"mcc": "20"})),
    ("missing", 400, 108, lambda g: call(g, "POST", "/discover", {})),
    ("no-auth", 401, 110, lambda g: call(g, "POST", "/unregister")),
    ("bad-auth", 400, 110, lambda g: call(g, "POST", "/unregister",
                                          headers={"Authorization": "Hawk junk"})),
    ("wrong-code", 400, 105, _wrong_code),
    ("not-verified", 410, 111, _unverified_sign),
    ("second-number", 400, 107, _second_number),
    ("resend-too-soon", 429, 114, _resend_too_soon),
    ("too-large", 413, 113, lambda g: call(g, "POST", "/discover", raw=b"{" + b" " * 30000 + b"}")),
]


@pytest.mark.parametrize("name,code,errno,make", _ERROR_CASES, ids=[c[0] for c in _ERROR_CASES])
@pytest_twisted.inlineCallbacks
def test_error_bodies(gateway, name, code, errno, make):
    """Every error body has exactly code, errno, error, message (plus triesLeft only for
    errno 105), `error` is the reason phrase of the status, and it is JSON."""
    r = yield make(gateway)
    assert_error(r, code, errno)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    if errno == 105:
        assert isinstance(r.body["triesLeft"], int) and r.body["triesLeft"] == 2
    if code == 405:
        assert "GET" not in r.headers["allow"] and "POST" in r.headers["allow"]
    if code in (429, 503):
        assert int(r.headers["retry-after"]) >= 1


@pytest.mark.parametrize("name,code,errno,make", _ERROR_CASES,
                         ids=[c[0] for c in _ERROR_CASES])
@pytest_twisted.inlineCallbacks
def test_error_field_is_the_status_lines_reason_phrase(gateway, name, code, errno, make):
    """The `error` member is the same reason phrase the status line carries."""
    r = yield make(gateway)
    assert r.code == code
    assert r.body["error"] == r.phrase, (r.body["error"], r.phrase)


@pytest_twisted.inlineCallbacks
def test_too_many_sends_error_body(redis_pool, tmp_path):
    """With no cooldown, the first send and its 3 resends pass; the next is 429 errno 115
    with the exact error body, and no fifth SMS goes out."""
    gw = yield start_gateway(redis_pool, tmp_path,
                             settings=VerificationSettings(send_timeout=3.0, resend_cooldown=0.0))
    try:
        token = yield gw.register()
        r = yield call(gw, "POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"}, token=token)
        assert r.code == 204, r
        for _ in range(3):
            r = yield call(gw, "POST", "/sms/resend_code", token=token)
            assert r.code == 204, r
        r = yield call(gw, "POST", "/sms/resend_code", token=token)
        assert_error(r, 429, 115)
        yield wait_until(lambda: len(gw.smsc.smsc.received(NUMBER)) == 4)
        assert gw.smsc.smsc.submit_count == 4
    finally:
        yield gw.stop()
        yield gw.smsc.stop()


@pytest_twisted.inlineCallbacks
def test_timestamp_header_on_200_204_and_401(gateway):
    """Every answer carries Timestamp (the server's clock, integer seconds), which Hawk
    clients use to correct their clock, and C{X-Content-Type-Options: nosniff} (a
    browser never reads an answer as anything but its declared type): on 200, 204
    and 401 alike."""
    token = yield gateway.register()
    replies = [
        (yield call(gateway, "GET", "/")),
        (yield call(gateway, "POST", "/register")),
        (yield call(gateway, "POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"},
                    token=token)),
        (yield call(gateway, "POST", "/unregister")),
        (yield call(gateway, "POST", "/unregister", token=secrets.token_hex(32))),
    ]
    assert [r.code for r in replies] == [200, 200, 204, 401, 401]
    for r in replies:
        assert re.fullmatch(r"[0-9]+", r.headers.get("timestamp", "")), r
        assert abs(int(r.headers["timestamp"]) - time.time()) <= 2
        assert r.headers.get("x-content-type-options") == "nosniff", r


# -- 9. validation ---------------------------------------------------------------------


@pytest.mark.parametrize("body,errno", [
    ({"mcc": "208"}, 108),
    ({"msisdn": NUMBER}, 108),
    ({"msisdn": 33612345678, "mcc": "208"}, 107),
    ({"msisdn": 12345, "mcc": "208"}, 107),
    ({"msisdn": "+1", "mcc": "208"}, 107),
    ({"msisdn": None, "mcc": "208"}, 107),
    ({"msisdn": "+33" + "6" * 40, "mcc": "208"}, 107),
    ({"msisdn": NUMBER, "mcc": "2080"}, 107),
    ({"msisdn": NUMBER, "mcc": 208}, 107),
    ({"msisdn": NUMBER, "mcc": "２０８"}, 107),
    ({"msisdn": NUMBER, "mcc": "208", "mnc": "x"}, 107),
    ({"msisdn": NUMBER, "mcc": "208", "mnc": "1"}, 107),
    ({"msisdn": NUMBER, "mcc": "208", "appHash": "abc"}, 107),
    ({"msisdn": NUMBER, "mcc": "208", "appHash": "abcdefghijkl"}, 107),
    ({"msisdn": NUMBER, "mcc": "208", "appHash": "abcdefghij!"}, 107),
    ({"msisdn": NUMBER, "mcc": "208", "appHash": 12345678901}, 107),
], ids=["no-msisdn", "no-mcc", "msisdn-int-e164", "msisdn-int", "msisdn-plus1", "msisdn-null",
        "msisdn-long", "mcc-4", "mcc-int", "mcc-fullwidth", "mnc-x", "mnc-1", "apphash-short",
        "apphash-long", "apphash-char", "apphash-int"])
@pytest_twisted.inlineCallbacks
def test_mt_verify_validation(gateway, body, errno):
    """Bad /sms/mt/verify bodies (valid Hawk) are 400 with the right errno, and send nothing."""
    token = yield gateway.register()
    r = yield call(gateway, "POST", "/sms/mt/verify", body, token=token)
    assert_error(r, 400, errno)
    assert gateway.smsc.smsc.submit_count == 0


@pytest.mark.parametrize("flag", ["true", 1, "yes"])
@pytest_twisted.inlineCallbacks
def test_only_boolean_true_asks_for_a_short_code(gateway, flag):
    """shortVerificationCode must be the JSON boolean true: a truthy string or number gets
    the default, a bare 32-hex long code."""
    token = yield gateway.register()
    r = yield call(gateway, "POST", "/sms/mt/verify",
                   {"msisdn": NUMBER, "mcc": "208", "shortVerificationCode": flag}, token=token)
    assert r.code == 204, r
    yield wait_until(lambda: gateway.smsc.smsc.received(NUMBER))
    assert re.fullmatch(r"[0-9a-f]{32}", gateway.smsc.smsc.received(NUMBER)[-1].text)


@pytest.mark.parametrize("body,errno", [
    ({}, 108),
    ({"code": "12345"}, 107),
    ({"code": "1234567"}, 107),
    ({"code": "12a456"}, 107),
    ({"code": "١٢٣٤٥٦"}, 107),
    ({"code": 123456}, 107),
    ({"code": None}, 107),
    ({"code": "0" * 31}, 107),
    ({"code": "g" * 32}, 107),
], ids=["missing", "short-5", "short-7", "non-digit", "arabic-digits", "int", "null", "hex-31",
        "hex-non-hex"])
@pytest_twisted.inlineCallbacks
def test_verify_code_validation_spends_no_try(gateway, body, errno):
    """A malformed code is 400 107/108 and spends no try: three of them, then a wrong
    well-formed code still has 2 tries left."""
    token = yield gateway.register()
    yield gateway.call("POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208",
                                                  "shortVerificationCode": True}, token=token)
    pin = yield gateway.pin(NUMBER)
    for _ in range(3):
        r = yield call(gateway, "POST", "/sms/verify_code", body, token=token)
        assert_error(r, 400, errno)
    wrong = yield call(gateway, "POST", "/sms/verify_code",
                       {"code": "000000" if pin != "000000" else "111111"}, token=token)
    assert_error(wrong, 400, 105)
    assert wrong.body["triesLeft"] == 2


def _claims(cert: str) -> dict:
    return jwt.decode(cert, options={"verify_signature": False})


@pytest.mark.parametrize("duration,expected", [
    ("NaN", "refused"),
    ("Infinity", "refused"),
    ("-Infinity", "refused"),
    ("1e400", "refused"),
    ("-1", 107),
    ("0", 107),
    ("0.5", 107),
    ("3600.5", 107),
    ("true", 107),
    ('"3600"', 107),
    ("null", 107),
    ("3600.0", ("signed", 3600)),
    ("1000000000000", ("signed", 86400)),
    ("1" + "0" * 40, ("signed", 86400)),
    ("1e300", ("signed", 86400)),
], ids=lambda v: str(v))
@pytest_twisted.inlineCallbacks
def test_certificate_duration(gateway, duration, expected):
    """/certificate/sign's duration (for a verified session): non-finite values never sign
    ("refused": any 400 with 106 or 107); non-positive, fractional or non-number values are
    107; an integral float is taken; anything over the maximum is capped at 86400 s
    (exp - iat = (duration + 10 s back-dating) in ms)."""
    token, _ = yield verified_session(gateway, NUMBER)
    raw = ('{"publicKey": %s, "duration": %s}' % (json.dumps(browserid_key()), duration)).encode()
    r = yield call(gateway, "POST", "/certificate/sign", raw=raw, token=token)
    if expected == "refused":
        assert r.code == 400 and r.body["errno"] in (106, 107), r
        assert_error(r, 400, r.body["errno"])
    elif isinstance(expected, tuple):
        assert r.code == 200, r
        claims = _claims(r.body["cert"])
        assert claims["exp"] - claims["iat"] == (expected[1] + 10) * 1000
    else:
        assert_error(r, 400, expected)


@pytest.mark.parametrize("extra,errno", [
    ({"publicKey": {"algorithm": "RS", "n": "1", "e": "3"}}, 107),
    ({"publicKey": 42}, 107),
    ({"publicKey": "not json"}, 107),
    ({"publicKey": '{"algorithm": "RS", "n": "35", "e": "3"}'}, 107),
    ({"format": "pem"}, 107),
    ({"format": None}, 107),
    ({"audience": ""}, 107),
    ({"audience": 5}, 107),
    ({"publicKey": None}, 107),
], ids=["key-object", "key-int", "key-not-json", "key-tiny", "format-pem", "format-null",
        "audience-empty", "audience-int", "key-null"])
@pytest_twisted.inlineCallbacks
def test_certificate_sign_validation(gateway, extra, errno):
    """Bad publicKey/format/audience on /certificate/sign for a verified session: 400 107."""
    token, _ = yield verified_session(gateway, NUMBER)
    body = {"publicKey": browserid_key(), "duration": 60, **extra}
    r = yield call(gateway, "POST", "/certificate/sign", body, token=token)
    assert_error(r, 400, errno)


@pytest_twisted.inlineCallbacks
def test_certificate_sign_missing_fields(gateway):
    """publicKey and duration are both required (108)."""
    token, _ = yield verified_session(gateway, NUMBER)
    for body in ({"duration": 60}, {"publicKey": browserid_key()}, {}):
        r = yield call(gateway, "POST", "/certificate/sign", body, token=token)
        assert_error(r, 400, 108)


# -- 10. a send that fails leaves nothing behind ------------------------------------------


@pytest_twisted.inlineCallbacks
def test_send_failure_is_503_and_withdrawn(redis_pool, tmp_path):
    """An SMSC that never answers: mt/verify is 503 errno 201 with Retry-After after the
    0.5 s send_timeout; the code was withdrawn and the cooldown not spent, so once the SMSC
    answers again an immediate mt/verify is 204 and sends a code that verifies -- and the
    withdrawn code never shows up at the SMSC."""
    gw = yield start_gateway(redis_pool, tmp_path,
                             settings=VerificationSettings(send_timeout=0.5))
    smsc = gw.smsc.smsc
    try:
        token = yield gw.register()
        smsc.faults.never_respond = True
        body = {"msisdn": NUMBER, "mcc": "208", "shortVerificationCode": True}
        failed, elapsed = yield _timed(lambda: call(gw, "POST", "/sms/mt/verify", body,
                                                    token=token))
        assert_error(failed, 503, 201)
        assert int(failed.headers["retry-after"]) >= 1
        assert 0.4 <= elapsed < 3.0, elapsed
        assert smsc.submit_count == 1 and smsc.received(NUMBER) == []

        # The withdrawn code is not there to guess: no code, so 410.
        gone = yield call(gw, "POST", "/sms/verify_code", {"code": "123456"}, token=token)
        assert_error(gone, 410, 111)

        smsc.faults.never_respond = False
        again = yield call(gw, "POST", "/sms/mt/verify", body, token=token)
        assert again.code == 204, again
        pin = yield gw.pin(NUMBER)
        verified = yield call(gw, "POST", "/sms/verify_code", {"code": pin}, token=token)
        assert (verified.code, verified.body) == (200, {"msisdn": NUMBER}), verified
        assert len(smsc.received(NUMBER)) == 1
    finally:
        yield gw.smsc.stop()  # drops the never-answered submit, so stopping does not wait on it
        yield gw.stop()


def test_access_log_names_the_client_behind_trusted_proxies_only():
    """The access log shows X-Forwarded-For's client only when the peer is a trusted proxy."""
    import ipaddress

    from twisted.web.test.requesthelper import DummyRequest

    from msisdnd.api.clientaddr import access_log_formatter, client_address

    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    via_proxy = DummyRequest([b""])
    via_proxy.client = __import__("twisted.internet.address", fromlist=["x"]).IPv4Address(
        "TCP", "10.1.2.3", 1234)
    via_proxy.requestHeaders.setRawHeaders(b"X-Forwarded-For", [b"203.0.113.7, 10.9.9.9"])
    via_proxy.code, via_proxy.sentLength = 200, 0
    assert client_address(via_proxy, trusted) == "203.0.113.7"
    assert access_log_formatter(trusted)("ts", via_proxy).startswith('"203.0.113.7"')
    direct = DummyRequest([b""])
    direct.client = via_proxy.client.__class__("TCP", "198.51.100.4", 1234)
    direct.requestHeaders.setRawHeaders(b"X-Forwarded-For", [b"203.0.113.7"])
    assert client_address(direct, trusted) == "198.51.100.4"
    assert client_address(via_proxy, []) == "10.1.2.3"


@pytest_twisted.inlineCallbacks
def test_unexpected_error_is_500_999_without_a_traceback(gateway):
    """A failure nobody foresaw answers 500 errno 999 with no detail of it in the body."""
    def broken():
        raise RuntimeError("internal detail 0xdeadbeef")

    gateway.verifier.register = broken
    r = yield gateway.call("POST", "/register")
    assert (r.code, r.body["errno"], r.body["error"]) == (500, 999, "Internal Server Error")
    flat = json.dumps(r.body)
    assert "deadbeef" not in flat and "Traceback" not in flat and "RuntimeError" not in flat


@pytest_twisted.inlineCallbacks
def test_a_client_that_hangs_up_mid_send_finds_its_code_on_retry(gateway):
    """The client drops the connection while the SMSC is slow to accept: the send
    still completes, and the client's retry (within the cooldown) is 204 with no
    second SMS, and the code that went out verifies."""
    import treq
    from twisted.internet.defer import CancelledError
    from twisted.web._newclient import ResponseNeverReceived

    from msisdnd import hawk

    gateway.smsc.smsc.faults.response_delay = 0.3
    token = yield gateway.register()
    body = json.dumps({"msisdn": NUMBER, "mcc": "208", "shortVerificationCode": True}).encode()
    credentials = hawk.derive_session(bytes.fromhex(token))
    header = hawk.authorization_header(credentials, "POST", gateway.url + "/sms/mt/verify", body,
                                       "application/json", with_hash=True)
    with pytest.raises((CancelledError, ResponseNeverReceived)):
        yield treq.post(gateway.url + "/sms/mt/verify", data=body, timeout=0.05, headers={
            "Authorization": [header], "Content-Type": ["application/json"]})
    yield wait_until(lambda: gateway.smsc.smsc.received(NUMBER))
    gateway.smsc.smsc.faults.response_delay = 0
    retry = yield gateway.call("POST", "/sms/mt/verify", {
        "msisdn": NUMBER, "mcc": "208", "shortVerificationCode": True}, token=token)
    assert retry.code == 204
    assert len(gateway.smsc.smsc.received(NUMBER)) == 1
    pin = gateway.smsc.smsc.received(NUMBER)[0].text.split()[-1]
    done = yield gateway.call("POST", "/sms/verify_code", {"code": pin}, token=token)
    assert done.body == {"msisdn": NUMBER}


def test_client_behind_a_unix_socket_proxy_is_the_forwarded_one():
    """Behind a proxy on a Unix socket the client is the proxy's last hop, not one
    address shared by every client; with no header it is "local"."""
    from twisted.internet.address import UNIXAddress
    from twisted.web.test.requesthelper import DummyRequest

    from msisdnd.api.clientaddr import client_address

    request = DummyRequest([b""])
    request.client = UNIXAddress(b"/run/msisdnd/http.sock")
    assert client_address(request, []) == "local"
    request.requestHeaders.setRawHeaders(b"X-Forwarded-For", [b"198.51.100.9, 203.0.113.7"])
    assert client_address(request, []) == "203.0.113.7"


@pytest_twisted.inlineCallbacks
def test_redis_going_away_and_back_is_one_warning_each(private_redis):
    """The watch pings every 50 ms; Redis stopped for ten more of its looks gives
    one warning naming the address, and Redis back on the same port one more,
    saying how long it was away."""
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher

    from msisdnd.state.connection import Reachability, RedisWatch
    from msisdnd.state.redis import TimedRedis

    class CountedRedis(TimedRedis):
        pings = 0

        def ping(self):
            self.pings += 1
            return super().ping()

    pool = txredisapi.lazyConnectionPool("127.0.0.1", private_redis.port, charset=None,
                                         convertNumbers=False, reconnect=True)
    address = f"127.0.0.1:{private_redis.port}"
    redis = CountedRedis(pool, reactor, timeout=0.3)
    watch = RedisWatch(redis, address, reactor, interval=0.05)
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        watch.startService()
        yield wait_until(lambda: watch.state is Reachability.UP, timeout=5)
        private_redis.stop()
        yield wait_until(lambda: watch.state is Reachability.DOWN, timeout=5)
        looked = redis.pings
        yield wait_until(lambda: redis.pings >= looked + 10, timeout=10)
        private_redis.start()
        yield wait_until(lambda: watch.state is Reachability.UP, timeout=15)
    finally:
        globalLogPublisher.removeObserver(seen.append)
        watch.stopService()
        yield pool.disconnect()
    warnings = [formatEvent(e) for e in seen
                if e.get("log_level") is LogLevel.warn and "Redis at" in formatEvent(e)]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"Redis at {address} is unreachable")
    assert warnings[1].startswith(f"Redis at {address} is back after ")


def test_a_policy_check_redis_did_not_answer_is_silent_and_made_again():
    """Redis gone while its maxmemory-policy is being read: no warning for the
    check (the outage is told once, as DOWN), and the policy is read once
    Redis is found up again."""
    from twisted.internet.defer import Deferred, fail, succeed
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher

    from msisdnd.state.connection import Reachability, RedisWatch
    from msisdnd.state.redis import StoreUnavailable

    class Redis:
        """Answers pings while C{up}; the policy reads wait on C{pending}."""
        up = True

        def __init__(self):
            self.pending: list[Deferred] = []

        def ping(self):
            return succeed(b"PONG") if self.up else fail(StoreUnavailable("gone"))

        def call(self, method, *args):
            self.pending.append(Deferred())
            return self.pending[-1]

    clock, redis = task.Clock(), Redis()
    watch = RedisWatch(redis, "r:1", clock, interval=1.0)
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        watch.startService()
        assert watch.state is Reachability.UP and len(redis.pending) == 1
        redis.up = False
        redis.pending[0].errback(txredisapi.ConnectionError("Lost connection"))
        clock.advance(1.0)
        assert watch.state is Reachability.DOWN
        redis.up = True
        clock.advance(1.0)
        assert watch.state is Reachability.UP and len(redis.pending) == 2
        redis.pending[1].callback([b"maxmemory-policy", b"allkeys-lru"])
        clock.advance(1.0)
        assert len(redis.pending) == 2  # read once per time up
        watch.stopService()
    finally:
        globalLogPublisher.removeObserver(seen.append)
    warnings = [formatEvent(e) for e in seen
                if e.get("log_level") is LogLevel.warn and "r:1" in formatEvent(e)]
    assert len(warnings) == 3, warnings
    assert warnings[0].startswith("Redis at r:1 is unreachable")
    assert warnings[1].startswith("Redis at r:1 is back after ")
    assert "has maxmemory-policy allkeys-lru" in warnings[2]


@pytest.mark.parametrize("content_type, body, code, errno", [
    ("Application/JSON ; charset=UTF-8", b'{"code": "000000"}', 410, 111),
    ("application/json;charset=utf-8", b'{"code": "000000"}', 410, 111),
    ('text/plain; a="b;c"', b'{"code": "000000"}', 410, 111),
    ("application/json", b"\xff\xfe{", 400, 106),
    ("", b"", 400, 108),
])
@pytest_twisted.inlineCallbacks
def test_payload_hash_over_real_http_as_mohawks_sender_signs_it(gateway, content_type, body,
                                                                code, errno):
    """mohawk's Sender signs a body and a Content-Type with parameters, odd case, a
    body not UTF-8, or none at all: the hash checks out (no 401), and the route
    judges the body (this verified session's code is used up: 410)."""
    token, _ = yield verified_session(gateway, NUMBER)
    header = hawk.authorization_header(credentials(token), "POST",
                                       gateway.url + "/sms/verify_code", body, content_type,
                                       with_hash=True)
    headers = {"Authorization": header}
    if content_type:
        headers["Content-Type"] = content_type
    r = yield send(gateway.url + "/sms/verify_code", "POST", body, headers)
    assert_error(r, code, errno)
    tampered = hawk.authorization_header(credentials(token), "POST",
                                         gateway.url + "/sms/verify_code", body + b" ",
                                         content_type, with_hash=True)
    r = yield send(gateway.url + "/sms/verify_code", "POST", body,
                   {**headers, "Authorization": tampered})
    assert_error(r, 401, 110)
