"""The discovery document, the cache headers of the public documents, and
docs/relying-parties.md's examples run against the whole gateway on loopback.

The guide's Python blocks are taken from the guide itself and run (its two
example constants swapped for this gateway's URL and a test audience), so
that what it tells relying parties to write keeps working.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import HTTPServer
from pathlib import Path

import jwt
import pytest
import pytest_twisted
import treq
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks

from msisdnd.api import device
from msisdnd.events.config import EVENTS, new_secret
from msisdnd.events.signing import Signer as WebhookSigner

from gateway import verified_session

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "relying-parties.md"
NUMBER = "+33612345678"
AUDIENCE = "https://rp.example"
CACHED = "public, max-age=3600"
DISCOVERY = "/.well-known/msisdnd-configuration"


# -- helpers -----------------------------------------------------------------


def guide_block(defines: str) -> str:
    """The guide's ```python block that holds C{defines}."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    (block,) = [b for b in blocks if defines in b]
    return block


def run_guide(*defines: str, gateway=None, name: str = "guide") -> dict:
    """Execute the guide's blocks holding C{defines}, in one namespace, with
    the example gateway and audience replaced by this test's."""
    namespace: dict = {"__name__": name}
    for what in defines:
        code = guide_block(what)
        if gateway is not None:
            code = code.replace('"https://verify.example.com"', repr(gateway.url))
        exec(compile(code, str(GUIDE), "exec"), namespace)
    return namespace


def device_key() -> tuple[rsa.RSAPrivateKey, str]:
    """An RSA key and its BrowserID form, as a device posts it."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private.public_key().public_numbers()
    return private, json.dumps({"algorithm": "RS", "n": str(numbers.n), "e": str(numbers.e)})


@inlineCallbacks
def certificate(gateway, token: str, public_key: str, **extra):
    signed = yield gateway.call("POST", "/certificate/sign",
                                {"publicKey": public_key, "duration": 600, **extra}, token=token)
    assert signed.code == 200, signed
    return signed.body["cert"]


@inlineCallbacks
def fetch(gateway, url: str):
    """GET an absolute URL of the gateway through the test's client."""
    assert url.startswith(gateway.url + "/"), url
    response = yield gateway.call("GET", url[len(gateway.url):])
    assert response.code == 200, response
    return response.body


def urls(value) -> list[str]:
    """Every string in a JSON value that looks like a URL."""
    if isinstance(value, dict):
        return [u for v in value.values() for u in urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in urls(v)]
    return [value] if isinstance(value, str) and "://" in value else []


# -- the document ------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_the_discovery_document(gateway):
    """Every field, from the configured public URL; the webhook events are the
    events package's own list; the environment is the one the API was given."""
    r = yield gateway.call("GET", DISCOVERY)
    assert r.code == 200 and r.headers["content-type"].startswith("application/json")
    base = gateway.url
    assert r.body == {
        "issuer": base,
        "jwks_uri": base + "/.well-known/jwks.json",
        "browserid_uri": base + "/.well-known/browserid",
        "device_api": {
            "discover": base + "/discover",
            "register": base + "/register",
            "sms_mt_verify": base + "/sms/mt/verify",
            "sms_resend_code": base + "/sms/resend_code",
            "sms_verify_code": base + "/sms/verify_code",
            "certificate_sign": base + "/certificate/sign",
            "unregister": base + "/unregister",
        },
        "backend_api": base + "/v2/verifications",
        "verification_methods": ["sms/mt", "sms/momt"],
        "certificate_formats": {
            "browserid": {"alg": "RS256", "iss": "127.0.0.1", "time_unit": "milliseconds"},
            "jwt": {"alg": "EdDSA", "iss": base, "time_unit": "seconds"},
        },
        "webhook_events": list(EVENTS),
        "environment": "testing",
        "api_specs": base + "/api-specs",
        "docs": base + "/docs",
    }
    assert device.WEBHOOK_EVENTS == EVENTS


@pytest_twisted.inlineCallbacks
def test_every_url_is_ours_and_answers(gateway):
    """Every URL is under the public URL; the GET ones answer 200, the POST ones
    are routed (not 404 or 405); a forged Host header changes nothing."""
    doc = (yield gateway.call("GET", DISCOVERY)).body
    found = urls(doc)
    assert len(found) == 14
    for url in found:
        assert url == gateway.url or url.startswith(gateway.url + "/"), url
    gets = {doc["issuer"], doc["jwks_uri"], doc["browserid_uri"], doc["api_specs"], doc["docs"]}
    posts = set(doc["device_api"].values()) | {doc["backend_api"]}
    assert gets | posts == set(found)
    for url in sorted(gets):
        r = yield gateway.call("GET", url[len(gateway.url):] or "/")
        assert r.code == 200, (url, r)
    for url in sorted(posts):
        r = yield gateway.call("POST", url[len(gateway.url):])
        assert r.code not in (404, 405), (url, r)

    forged = yield gateway.call("GET", DISCOVERY, headers={"Host": "evil.example",
                                                           "X-Forwarded-Host": "evil.example"})
    assert forged.body == doc


@pytest.mark.parametrize("path", [DISCOVERY, "/.well-known/jwks.json", "/.well-known/browserid"])
@pytest_twisted.inlineCallbacks
def test_public_documents_are_cacheable(gateway, path):
    """Cache-Control: public, max-age=3600, and Vary: Origin (with CORS origins
    configured, an answer with or without Access-Control-Allow-Origin must not
    be handed to another origin by a shared cache)."""
    plain = yield gateway.call("GET", path)
    assert plain.code == 200
    assert plain.headers["cache-control"] == CACHED
    assert plain.headers["vary"] == "Origin"
    assert "access-control-allow-origin" not in plain.headers
    browser = yield gateway.call("GET", path, headers={"Origin": "https://app.example"})
    assert browser.headers["cache-control"] == CACHED
    assert browser.headers["vary"] == "Origin"
    assert browser.headers["access-control-allow-origin"] == "https://app.example"


@pytest_twisted.inlineCallbacks
def test_other_answers_stay_no_store(gateway):
    for path in ("/", "/api-specs", "/__version__"):
        r = yield gateway.call("GET", path)
        assert r.headers["cache-control"] == "no-store", path


# -- the certificates against the document -----------------------------------------


@pytest_twisted.inlineCallbacks
def test_issuer_is_the_iss_of_issued_certificates(gateway):
    """The JWT certificate's iss is the document's issuer, the BrowserID one's
    the document's BrowserID iss; each is signed with the algorithm named."""
    doc = (yield gateway.call("GET", DISCOVERY)).body
    token, _ = yield verified_session(gateway, NUMBER)
    _, public = device_key()
    jwt_cert = yield certificate(gateway, token, public, format="jwt", audience=AUDIENCE)
    browserid_cert = yield certificate(gateway, token, public)
    formats = doc["certificate_formats"]

    claims = jwt.decode(jwt_cert, options={"verify_signature": False})
    assert claims["iss"] == doc["issuer"] == gateway.url
    assert jwt.get_unverified_header(jwt_cert)["alg"] == formats["jwt"]["alg"]
    assert formats["jwt"]["iss"] == doc["issuer"]

    claims = jwt.decode(browserid_cert, options={"verify_signature": False})
    assert claims["iss"] == formats["browserid"]["iss"]
    assert jwt.get_unverified_header(browserid_cert)["alg"] == formats["browserid"]["alg"]
    assert claims["exp"] > time.time() * 1000  # milliseconds


@pytest_twisted.inlineCallbacks
def test_guide_verification_with_the_fetched_jwks(gateway):
    """The guide's checks with the JWK Set fetched by the test's client
    (jwt.PyJWKSet): they pass for the audience asked, and fail for another
    audience, another issuer, no audience, or another algorithm."""
    doc = (yield gateway.call("GET", DISCOVERY)).body
    token, _ = yield verified_session(gateway, NUMBER)
    _, public = device_key()
    cert = yield certificate(gateway, token, public, format="jwt", audience=AUDIENCE)
    keys = jwt.PyJWKSet.from_dict((yield fetch(gateway, doc["jwks_uri"])))
    key = keys[jwt.get_unverified_header(cert)["kid"]]
    require = {"require": ["iss", "sub", "aud", "exp", "iat"]}

    claims = jwt.decode(cert, key.key, algorithms=["EdDSA"], issuer=doc["issuer"],
                        audience=AUDIENCE, options=require)
    assert claims["phone_number"] == NUMBER and claims["aud"] == AUDIENCE
    assert claims["cnf"]["jwk"]["kty"] == "RSA"

    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(cert, key.key, algorithms=["EdDSA"], issuer=doc["issuer"],
                   audience="https://other.example", options=require)
    with pytest.raises(jwt.InvalidIssuerError):
        jwt.decode(cert, key.key, algorithms=["EdDSA"], issuer="https://other.example",
                   audience=AUDIENCE, options=require)
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(cert, key.key, algorithms=["EdDSA"], issuer=doc["issuer"])
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(cert, key.key, algorithms=["RS256"], issuer=doc["issuer"],
                   audience=AUDIENCE)


@pytest_twisted.inlineCallbacks
def test_guide_jwt_example_runs_as_written(gateway):
    """The guide's block itself, PyJWKClient and all (it fetches with urllib,
    so it runs in a thread while the reactor serves it): it verifies a
    certificate for its audience, refuses one for another audience, and its
    proof of possession accepts the bound key only, for the right nonce."""
    namespace = yield threads.deferToThread(
        run_guide, "def verify_certificate", "def verify_proof", gateway=gateway)
    assert namespace["AUDIENCE"] == AUDIENCE
    token, _ = yield verified_session(gateway, NUMBER)
    private, public = device_key()
    cert = yield certificate(gateway, token, public, format="jwt", audience=AUDIENCE)
    other = yield certificate(gateway, token, public, format="jwt",
                              audience="https://other.example")

    claims = yield threads.deferToThread(namespace["verify_certificate"], cert)
    assert claims["phone_number"] == NUMBER and claims["iss"] == gateway.url
    with pytest.raises(jwt.InvalidAudienceError):
        yield threads.deferToThread(namespace["verify_certificate"], other)

    def proof(key, nonce: str) -> str:
        return jwt.encode({"nonce": nonce, "aud": AUDIENCE, "iat": int(time.time())}, key,
                          algorithm="RS256")

    verify_proof = namespace["verify_proof"]
    verify_proof(proof(private, "n-1"), claims, "n-1")
    with pytest.raises(jwt.InvalidTokenError):
        verify_proof(proof(private, "n-1"), claims, "n-2")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(jwt.InvalidSignatureError):
        verify_proof(proof(stranger, "n-1"), claims, "n-1")


@pytest_twisted.inlineCallbacks
def test_guide_browserid_example(gateway):
    """The guide's BrowserID check verifies a BrowserID certificate against the
    JWK Set (times in milliseconds), for the document's BrowserID iss only."""
    doc = (yield gateway.call("GET", DISCOVERY)).body
    verify = run_guide("def verify_browserid_certificate")["verify_browserid_certificate"]
    token, _ = yield verified_session(gateway, NUMBER)
    _, public = device_key()
    cert = yield certificate(gateway, token, public)
    jwks = yield fetch(gateway, doc["jwks_uri"])
    keys = jwt.PyJWKSet.from_dict(jwks)
    host = doc["certificate_formats"]["browserid"]["iss"]

    claims = verify(cert, keys, host)
    assert claims["verifiedMSISDN"] == NUMBER
    assert claims["exp"] - claims["iat"] == 610_000
    with pytest.raises(jwt.InvalidIssuerError):
        verify(cert, keys, "other.example")
    jwt_only = jwt.PyJWKSet.from_dict({"keys": [k for k in jwks["keys"] if k["alg"] == "EdDSA"]})
    with pytest.raises(jwt.InvalidTokenError):
        verify(cert, jwt_only, host)


# -- the webhook receiver -----------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_guide_webhook_receiver(monkeypatch):
    """The guide's receiver accepts what msisdnd's webhook signer sends, handles
    a retry (same webhook-id) once, and refuses a body that was changed."""
    secret = new_secret()
    monkeypatch.setenv("MSISDND_WEBHOOK_SECRET", secret)
    namespace = run_guide("class Receiver")
    handled: list[dict] = []
    namespace["handle"] = handled.append
    server = HTTPServer(("127.0.0.1", 0), namespace["Receiver"])
    server.RequestHandlerClass.log_message = lambda *args: None
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    signer = WebhookSigner((secret,))
    body = json.dumps({"type": "verification.approved", "timestamp": "2026-11-30T16:20:00.000Z",
                       "data": {"id": "VE" + "0" * 32, "status": "approved", "sequence": 2}},
                      separators=(",", ":")).encode()

    @inlineCallbacks
    def post(data: bytes, message_id: str = "msg_1-0"):
        headers = signer.headers(message_id, body, time.time())
        headers["content-type"] = "application/json"
        response = yield treq.post(url, data=data, headers={k: [v] for k, v in headers.items()})
        yield response.content()
        return response.code

    try:
        assert (yield post(body)) == 204
        assert (yield post(body)) == 204  # a retry: same id, fresh timestamp and signature
        assert (yield post(body.replace(b"approved", b"canceled"))) == 400
        assert (yield post(body, "msg_2-0")) == 204
    finally:
        yield threads.deferToThread(server.shutdown)
        server.server_close()
    assert [event["data"]["sequence"] for event in handled] == [2, 2]
    assert handled[0]["type"] == "verification.approved"
