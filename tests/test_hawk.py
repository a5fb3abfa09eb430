"""Hawk sessions: derivation vector, header parsing, MAC / hash / clock checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msisdnd.hawk import (
    BadMAC,
    HawkCredentials,
    HawkError,
    MalformedHeader,
    MissingAuthorization,
    StaleTimestamp,
    UnknownSession,
    authorization_header,
    derive_session,
    new_session_token,
    nonce_key,
    nonce_ttl,
    parse_header,
    payload_hash,
    verify_request,
)

TOKEN = bytes(range(32))
INFO = b"identity.mozilla.com/picl/v1/sessionToken"
URL = "https://msisdn.example.com/v1/msisdn/sms/verify_code"
NOW = 1_700_000_000.25
BODY = b'{"code":"123456"}'
JSON = "application/json"


def rfc5869_hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 with an empty salt, written out from RFC 5869."""
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


@pytest.fixture
def creds() -> HawkCredentials:
    return derive_session(TOKEN)


def sign(creds, *, url=URL, content=BODY, ts=int(NOW), nonce="abc123", with_hash=False):
    return authorization_header(
        creds, "POST", url, content, JSON, ts=ts, nonce=nonce, with_hash=with_hash
    )


def verify(header, creds, *, url=URL, content=BODY, content_type=JSON, now=NOW):
    verify_request(
        parse_header(header), creds, method="POST", url=url,
        content=content, content_type=content_type, now=now,
    )


def test_derive_session_known_answer():
    okm = rfc5869_hkdf_sha256(TOKEN, INFO, 64)
    creds = derive_session(TOKEN)
    assert creds == HawkCredentials(id=okm[:32].hex(), key=okm[32:].hex(), algorithm="sha256")
    assert re.fullmatch(r"[0-9a-f]{64}", creds.id)


def test_derive_session_rejects_wrong_length():
    with pytest.raises(ValueError):
        derive_session(b"short")


def test_new_session_tokens():
    a, b = new_session_token(), new_session_token()
    assert len(a) == 32 and a != b


@pytest.mark.parametrize("with_hash", [False, True])
def test_round_trip(creds, with_hash):
    header = sign(creds, with_hash=with_hash)
    parsed = parse_header(header)
    assert (parsed.id, parsed.ts, parsed.nonce) == (creds.id, int(NOW), "abc123")
    assert (parsed.hash is not None) is with_hash
    assert parsed.raw == header
    verify(header, creds)


def test_round_trip_with_query_and_empty_body(creds):
    url = URL + "?lang=fr"
    header = authorization_header(creds, "GET", url, ts=int(NOW), nonce="n")
    verify_request(parse_header(header), creds, method="GET", url=url,
                   content=b"", content_type="", now=NOW)


def test_tampered_mac(creds):
    header = sign(creds)
    mac = re.search(r'mac="([^"]*)"', header).group(1)
    forged = base64.b64encode(bytes(32)).decode()
    with pytest.raises(BadMAC) as e:
        verify(header.replace(mac, forged), creds)
    assert e.value.status == 401


def test_wrong_key(creds):
    other = derive_session(bytes(32))
    header = sign(HawkCredentials(id=creds.id, key=other.key))
    with pytest.raises(BadMAC):
        verify(header, creds)


def test_body_changed_with_hash(creds):
    with pytest.raises(BadMAC):
        verify(sign(creds, with_hash=True), creds, content=b'{"code":"000000"}')


def test_content_type_changed_with_hash(creds):
    with pytest.raises(BadMAC):
        verify(sign(creds, with_hash=True), creds, content_type="text/plain")


def test_body_changed_without_hash_is_accepted(creds):
    # Upstream clients send no payload hash; their bodies are not authenticated.
    verify(sign(creds), creds, content=b'{"code":"000000"}')


@pytest.mark.parametrize("url", [
    "https://evil.example.com/v1/msisdn/sms/verify_code",
    "https://msisdn.example.com:8443/v1/msisdn/sms/verify_code",
    "http://msisdn.example.com/v1/msisdn/sms/verify_code",
    "https://msisdn.example.com/v1/msisdn/sms/verify_code?x=1",
])
def test_mac_covers_host_port_and_resource(creds, url):
    with pytest.raises(BadMAC):
        verify(sign(creds), creds, url=url)


def test_explicit_default_port_is_the_same_url(creds):
    verify(sign(creds), creds, url="https://msisdn.example.com:443/v1/msisdn/sms/verify_code")


def test_credentials_for_another_id(creds):
    with pytest.raises(UnknownSession) as e:
        verify(sign(creds), derive_session(bytes(32)))
    assert e.value.status == 401


@pytest.mark.parametrize("delta", [-120, 120])
def test_stale_timestamp(creds, delta):
    now = NOW + delta
    with pytest.raises(StaleTimestamp) as e:
        verify(sign(creds), creds, now=now)
    assert e.value.status == 401
    fields = dict(re.findall(r'(\w+)="([^"]*)"', e.value.www_authenticate))
    assert e.value.www_authenticate.startswith("Hawk ")
    assert fields["ts"] == str(int(now))
    assert fields["error"] == "Stale timestamp"
    expected = hmac.new(creds.key.encode("ascii"), f"hawk.1.ts\n{int(now)}\n".encode(),
                        hashlib.sha256).digest()
    assert base64.b64decode(fields["tsm"]) == expected


def test_skew_boundary(creds):
    verify(sign(creds), creds, now=NOW + 60)
    with pytest.raises(StaleTimestamp):
        verify(sign(creds), creds, now=NOW + 61)


def test_stale_and_bad_mac_is_bad_mac(creds):
    # The clock is only reported to a client that holds the key.
    with pytest.raises(BadMAC):
        verify(sign(creds), derive_session(TOKEN), content=b"x", now=NOW + 3600,
               url="https://other.example.com/")


def test_default_timestamp_is_now(creds):
    header = authorization_header(creds, "POST", URL, BODY, JSON)
    verify(header, creds, now=time.time())


@pytest.mark.parametrize("header", [
    'Basic dXNlcjpwYXNz',
    'Bearer abc',
    'Hawk',
    '',
    'garbage',
    'Hawk id="{id}", ts="1700000000", nonce="n"',
    'Hawk id="{id}", ts="1700000000", mac="m"',
    'Hawk id="{id}", nonce="n", mac="m"',
    'Hawk ts="1700000000", nonce="n", mac="m"',
    'Hawk id="{id}", ts="1700000000", nonce="", mac="m"',
    'Hawk id="{id}", ts="soon", nonce="n", mac="m"',
    'Hawk id="{id}", ts="-5", nonce="n", mac="m"',
    'Hawk id="abc", ts="1700000000", nonce="n", mac="m"',
    'Hawk id="{upper}", ts="1700000000", nonce="n", mac="m"',
    'Hawk id="{id}g", ts="1700000000", nonce="n", mac="m"',
    'Hawk id="{id}", ts="1700000000", nonce="n", mac="m", foo="bar"',
    'Hawk id="{id}", id="{id}", ts="1700000000", nonce="n", mac="m"',
    'Hawk id="{id}", ts="1700000000", nonce="n", mac="m" trailing',
    'Hawk id="{id}", ts="1700000000", nonce="n\u00e9", mac="m"',
    'Hawk id="{id}", ts="1700000000", nonce="n", mac="m", ext="' + "x" * 5000 + '"',
])
def test_malformed_headers(creds, header):
    header = header.format(id=creds.id, upper=creds.id.upper())
    with pytest.raises(MalformedHeader) as e:
        parse_header(header)
    assert e.value.status == 400
    assert e.value.www_authenticate is None


def test_oversized_valid_header(creds):
    header = authorization_header(creds, "GET", URL, ts=int(NOW), nonce="n" * 5000)
    with pytest.raises(MalformedHeader):
        parse_header(header)


def test_missing_authorization():
    with pytest.raises(MissingAuthorization) as e:
        parse_header(None)
    assert e.value.status == 401
    assert e.value.www_authenticate == "Hawk"


@given(st.text(max_size=300))
def test_parse_header_only_raises_hawk_errors(text):
    for header in (text, "Hawk " + text):
        try:
            parse_header(header)
        except HawkError:
            pass


@given(st.dictionaries(
    st.sampled_from(["id", "ts", "nonce", "mac", "hash", "ext", "app", "dlg", "x"]),
    st.text(max_size=70), max_size=8))
def test_parse_header_hawk_shaped_input(attributes):
    header = "Hawk " + ", ".join(f'{k}="{v}"' for k, v in attributes.items())
    try:
        parsed = parse_header(header)
    except HawkError:
        return
    assert re.fullmatch(r"[0-9a-f]{64}", parsed.id) and parsed.nonce and parsed.mac


def test_nonce_key(creds):
    parsed = parse_header(sign(creds))
    key = nonce_key(parsed)
    assert key.startswith("hn:") and len(key) <= 32
    assert key == nonce_key(parse_header(sign(creds)))
    assert key != nonce_key(parse_header(sign(creds, nonce="abc124")))
    assert key != nonce_key(parse_header(sign(creds, ts=int(NOW) + 1)))
    assert key != nonce_key(parse_header(sign(derive_session(bytes(32)))))


def test_nonce_ttl_covers_acceptance_window():
    assert nonce_ttl(60) >= 120


def test_bad_mac_message_does_not_reveal_our_mac(creds):
    header = sign(creds)
    good_mac = re.search(r'mac="([^"]*)"', header).group(1)
    forged = header.replace(good_mac, base64.b64encode(bytes(32)).decode())
    with pytest.raises(BadMAC) as e:
        verify(forged, creds)
    assert good_mac not in str(e.value)


def test_no_mohawk_replay_warning(creds, caplog):
    with caplog.at_level("WARNING", logger="mohawk"):
        verify(sign(creds), creds)
    assert caplog.records == []


# -- our parser and checks against mohawk's (Sender, Receiver, parse_authorization_header) --

#: The characters Hawk allows in an attribute value.
HAWK_VALUE_CHARS = (" abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                    "_!#$%&'()*+,-./:;<=>?@[]^`{|}~")
hawk_values = st.text(alphabet=HAWK_VALUE_CHARS, min_size=1, max_size=20)


def mohawk_attributes(header):
    """What mohawk's own parser makes of C{header}, or C{None} if it refuses it."""
    import mohawk.exc
    import mohawk.util

    try:
        return mohawk.util.parse_authorization_header(header)
    except (mohawk.exc.HawkFail, ValueError):
        return None


separators = st.sampled_from([", ", ",", " , ", "  ,", ",\t", " ", ""])
attribute_values = st.one_of(hawk_values, st.text(max_size=6), st.just(""))


@st.composite
def hawk_shaped_headers(draw):
    """Mostly well-formed Hawk headers (the four required attributes, valid or not,
    extras, in any order) with all the ways separators and values can go wrong."""
    creds = derive_session(TOKEN)
    valid = {"id": creds.id, "ts": "1700000000", "nonce": "n0nce", "mac": "bWFj"}
    attributes = [(k, v if draw(st.integers(0, 9)) else draw(attribute_values))
                  for k, v in valid.items() if draw(st.integers(0, 19))]
    attributes += draw(st.lists(st.tuples(
        st.sampled_from(["hash", "ext", "app", "dlg", "tsm", "error", "x", "id", "mac"]),
        attribute_values), max_size=3))
    attributes = draw(st.permutations(attributes))
    seps = [", "] * len(attributes) if draw(st.booleans()) else \
        [draw(separators) for _ in attributes]
    scheme = draw(st.sampled_from(["Hawk ", "Hawk ", "hawk ", "HAWK ", "Hawk  ", "Hawk",
                                   "Bearer ", " Hawk "]))
    tail = draw(st.sampled_from(["", "", "", " ", ",", " x", "\t"]))
    return scheme + "".join(f'{k}="{v}"{sep}' for (k, v), sep in zip(attributes, seps)) + tail


@given(hawk_shaped_headers())
def test_parser_accepts_what_mohawk_accepts(header):
    """parse_header accepts a header iff mohawk's parser does (and it has the id, ts,
    nonce and mac we require), with the same attribute values."""
    if not header.isascii():
        return
    theirs = mohawk_attributes(header)
    try:
        ours = parse_header(header)
    except MalformedHeader:
        ours = None
    if theirs is None:
        assert ours is None, header
        return
    required = all(theirs.get(k) for k in ("id", "ts", "nonce", "mac"))
    if not required or not re.fullmatch(r"[0-9a-f]{64}", theirs["id"]) \
            or not re.fullmatch(r"[0-9]{1,20}", theirs["ts"]):
        assert ours is None, header
        return
    assert ours is not None, header
    assert (ours.id, ours.ts_text, ours.nonce, ours.mac, ours.hash, ours.ext, ours.app,
            ours.dlg) == (theirs["id"], theirs["ts"], theirs["nonce"], theirs["mac"],
                          theirs.get("hash"), theirs.get("ext"), theirs.get("app"),
                          theirs.get("dlg"))


request_urls = st.builds(
    lambda scheme, host, port, path, query: (
        f"{scheme}://{host}{'' if port is None else f':{port}'}/{path}"
        + (f"?{query}" if query else "")),
    st.sampled_from(["http", "https"]),
    st.sampled_from(["msisdn.example.com", "127.0.0.1", "Example.COM"]),
    st.one_of(st.none(), st.integers(1, 65535)),
    st.text(alphabet="abcxyz/_-.09", max_size=20),
    st.text(alphabet="abc=&09", max_size=10),
)


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "delete"]),
    url=request_urls,
    content=st.binary(max_size=64),
    content_type=st.sampled_from(["", "application/json", "Application/JSON; charset=utf-8",
                                  "text/plain"]),
    with_hash=st.booleans(),
    ext=st.one_of(st.none(), hawk_values),
    app=st.one_of(st.none(), st.tuples(hawk_values, st.one_of(st.none(), hawk_values))),
    nonce=hawk_values,
    drift=st.integers(-90, 90),
    tamper=st.sampled_from([None, "content", "content_type", "url", "method", "key"]),
)
def test_checks_agree_with_mohawk(method, url, content, content_type, with_hash, ext, app,
                                  nonce, drift, tamper):
    """A request signed by mohawk's Sender: verify_request accepts it exactly when
    mohawk's Receiver does, and refuses it for the same reason."""
    import mohawk
    import mohawk.exc
    from mohawk.base import EmptyValue

    creds = derive_session(TOKEN)
    ts = int(NOW) + drift
    app_value, dlg = app if app else (None, None)
    sender = mohawk.Sender(
        {"id": creds.id, "key": creds.key, "algorithm": "sha256"}, url, method,
        content=content if with_hash else EmptyValue,
        content_type=content_type if with_hash else EmptyValue,
        always_hash_content=with_hash, nonce=nonce, _timestamp=ts, ext=ext, app=app_value,
        dlg=dlg)
    header = sender.request_header
    check_url, check_method, check_content, check_type, key = url, method, content, \
        content_type, creds.key
    if tamper == "content":
        check_content = content + b"!"
    elif tamper == "content_type":
        check_type = "text/html"
    elif tamper == "url":
        check_url = url + "x"
    elif tamper == "method":
        check_method = "PATCH"
    elif tamper == "key":
        key = derive_session(bytes(32)).key

    second = None
    while second != int(time.time()):  # mohawk reads the clock again: the same second
        second = int(time.time())
        try:
            mohawk.Receiver(
                lambda _id: {"id": creds.id, "key": key, "algorithm": "sha256"}, header,
                check_url, check_method, content=check_content, content_type=check_type,
                accept_untrusted_content=not with_hash, timestamp_skew_in_seconds=60,
                localtime_offset_in_seconds=int(NOW) - second,
                seen_nonce=lambda *a: False)
            theirs = None
        except mohawk.exc.TokenExpired:
            theirs = StaleTimestamp
        except (mohawk.exc.MacMismatch, mohawk.exc.MisComputedContentHash):
            theirs = BadMAC
    if len(header) > 4096:
        return
    try:
        verify_request(parse_header(header), HawkCredentials(creds.id, key),
                       method=check_method, url=check_url, content=check_content,
                       content_type=check_type, now=NOW, skew=60)
        ours = None
    except (BadMAC, StaleTimestamp) as e:
        ours = type(e)
    assert ours is theirs
    if tamper in ("url", "method", "key") or (tamper and with_hash):
        assert ours is BadMAC
    elif tamper is None and abs(drift) <= 60:
        assert ours is None


@given(
    content=st.binary(max_size=2048),
    content_type=st.one_of(
        st.sampled_from(["", "application/json", " Application/JSON ; charset=utf-8",
                         "text/plain;", ";", "a;b;c"]),
        st.text(max_size=40)),
    algorithm=st.sampled_from(["sha256", "sha1"]),
)
def test_payload_hash_is_mohawks(content, content_type, algorithm):
    """Our payload hash (hashlib over mohawk's normalized parts) is byte for byte
    mohawk's calculate_payload_hash, whatever the body and the content type."""
    import mohawk.util

    assert payload_hash(content, content_type, algorithm) == \
        mohawk.util.calculate_payload_hash(content, algorithm, content_type)


@given(content=st.binary(max_size=256), content_type=st.text(max_size=30))
def test_payload_hash_is_what_mohawks_sender_declares(content, content_type):
    """The hash mohawk's Sender puts in its header is payload_hash of what it sent."""
    header = parse_header(authorization_header(
        derive_session(TOKEN), "POST", URL, content, content_type, with_hash=True))
    assert header.hash == payload_hash(content, content_type).decode("ascii")
