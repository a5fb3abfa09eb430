"""Delivery receipts reaching the verification flow."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks

from msisdnd import hawk
from msisdnd.verification import codes

from conftest import wait_until

NUMBER = "+33612345678"


@inlineCallbacks
def fields_when(gateway, token, predicate, timeout=5.0):
    """Poll the session's stored fields until C{predicate(fields)}; fail at the deadline."""
    hawk_id = hawk.derive_session(bytes.fromhex(token)).id
    ref = codes.session_ref(gateway.verifier.secrets.session, hawk_id)
    deadline = reactor.seconds() + timeout
    while True:
        fields = yield gateway.store.session(ref)
        if predicate(fields):
            return fields
        assert reactor.seconds() < deadline, f"session fields never matched: {sorted(fields)}"
        yield task.deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.inlineCallbacks
def test_delivered_receipt_is_recorded(gateway_with_receipts):
    """A DELIVRD receipt sets the pending code's delivery state."""
    gw = gateway_with_receipts
    token = yield gw.register()
    yield gw.call("POST", "/sms/mt/verify", {"msisdn": NUMBER, "mcc": "208"}, token=token)
    yield fields_when(gw, token, lambda f: f.get("d") == b"DELIVRD")
    assert len(gw.smsc.smsc.received(NUMBER)) == 1


@pytest_twisted.inlineCallbacks
def test_undelivered_code_is_resent_once_with_a_new_code(gateway_with_receipts):
    """UNDELIV while the code is valid: one new code goes out, the old one stops
    working, and a second failure sends nothing more."""
    gw = gateway_with_receipts
    gw.smsc.smsc.faults.receipt_state = "UNDELIV"
    token = yield gw.register()
    r = yield gw.call("POST", "/sms/mt/verify",
                      {"msisdn": NUMBER, "mcc": "208", "shortVerificationCode": True}, token=token)
    assert r.code == 204
    yield wait_until(lambda: len(gw.smsc.smsc.received(NUMBER)) == 2)
    first, second = (m.text.split()[-1] for m in gw.smsc.smsc.received(NUMBER))
    assert first != second
    yield fields_when(gw, token, lambda f: f.get("a") == b"1")
    assert len(gw.smsc.smsc.received(NUMBER)) == 2  # no third SMS after the second failure
    old = yield gw.call("POST", "/sms/verify_code", {"code": first}, token=token)
    assert (old.code, old.body["errno"]) == (400, 105)
    new = yield gw.call("POST", "/sms/verify_code", {"code": second}, token=token)
    assert new.body == {"msisdn": NUMBER}


@pytest_twisted.inlineCallbacks
def test_receipt_before_the_response_still_counts(gateway_with_receipts):
    """An UNDELIV receipt that beats its submit_sm_resp is kept and acted on."""
    gw = gateway_with_receipts
    gw.smsc.smsc.faults.update(receipt_state="UNDELIV", receipt_before_response=True)
    token = yield gw.register()
    yield gw.call("POST", "/sms/mt/verify",
                  {"msisdn": NUMBER, "mcc": "208", "shortVerificationCode": True}, token=token)
    yield wait_until(lambda: len(gw.smsc.smsc.received(NUMBER)) == 2)
