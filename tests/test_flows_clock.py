"""Verification flows driven by task.Clock: expiry without waiting, on a real Redis.

The SMS side is an in-memory double of ISMSSender (our own interface); the
store is the real one.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import fail, succeed
from zope.interface import implementer

from msisdnd import hawk
from msisdnd.verification import flows
from msisdnd.verification.settings import Secrets, VerificationSettings
from msisdnd.sms.interfaces import DeliveryReceipt, ISMSSender, NoRouteError, SendResult
from msisdnd.verification.texts import SMSTexts
from msisdnd.state.sessions import SessionStore

NUMBER = "+33612345678"


@implementer(ISMSSender)
class Outbox:
    """Keeps every SMS; the SMSC accepts them all at once."""

    def __init__(self):
        self.sent = []
        self.down = False

    def send(self, sms, timeout=None):
        if self.down:
            return fail(NoRouteError("no carrier"))
        self.sent.append(sms)
        return succeed(SendResult("memory", (str(len(self.sent)),)))

    def available(self):
        return True


@pytest.fixture
def verifier(redis_pool):
    clock = task.Clock()
    clock.advance(1_795_000_000)
    outbox = Outbox()
    v = flows.Verifier(SessionStore(redis_pool, reactor), outbox, VerificationSettings(),
                       Secrets.from_master(b"k" * 32), SMSTexts(), clock)
    v.outbox, v.test_clock = outbox, clock
    return v


@pytest_twisted.inlineCallbacks
def register(verifier):
    token = yield verifier.register()
    return hawk.derive_session(bytes.fromhex(token)).id


@pytest_twisted.inlineCallbacks
def test_code_expires_after_its_lifetime(verifier):
    """A code checked one second after its 10 minutes is gone (410), not wrong."""
    hawk_id = yield register(verifier)
    yield verifier.sendCode(hawk_id, NUMBER, mcc="208", mnc=None, short=True, locale="en")
    code = verifier.outbox.sent[-1].text.split()[-1]
    assert verifier.outbox.sent[-1].validity == 600
    verifier.test_clock.advance(601)
    with pytest.raises(flows.CodeGone):
        yield verifier.verifyCode(hawk_id, code)


@pytest_twisted.inlineCallbacks
def test_code_works_until_its_last_second(verifier):
    hawk_id = yield register(verifier)
    yield verifier.sendCode(hawk_id, NUMBER, mcc="208", mnc=None, short=True, locale="en")
    code = verifier.outbox.sent[-1].text.split()[-1]
    verifier.test_clock.advance(599)
    assert (yield verifier.verifyCode(hawk_id, code)) == NUMBER


@pytest_twisted.inlineCallbacks
def test_resend_cooldown_rolls_over(verifier):
    """Within 30 s a resend is refused with the time left; after it, a new code replaces
    the old one, and the old one stops working."""
    hawk_id = yield register(verifier)
    yield verifier.sendCode(hawk_id, NUMBER, mcc="208", mnc=None, short=True, locale="en")
    old = verifier.outbox.sent[-1].text.split()[-1]
    verifier.test_clock.advance(20)
    with pytest.raises(flows.ResendTooSoon) as caught:
        yield verifier.resendCode(hawk_id, locale="en")
    assert caught.value.retry_after == pytest.approx(10, abs=0.01)
    verifier.test_clock.advance(10)
    yield verifier.resendCode(hawk_id, locale="en")
    new = verifier.outbox.sent[-1].text.split()[-1]
    if new != old:
        with pytest.raises(flows.WrongCode):
            yield verifier.verifyCode(hawk_id, old)
    assert (yield verifier.verifyCode(hawk_id, new)) == NUMBER


@pytest_twisted.inlineCallbacks
def test_a_failed_resend_keeps_the_code_the_user_has(verifier):
    """A resend no carrier accepts answers SendFailed, and the code already sent still works."""
    hawk_id = yield register(verifier)
    yield verifier.sendCode(hawk_id, NUMBER, mcc="208", mnc=None, short=True, locale="en")
    code = verifier.outbox.sent[-1].text.split()[-1]
    verifier.test_clock.advance(31)
    verifier.outbox.down = True
    with pytest.raises(flows.SendFailed):
        yield verifier.resendCode(hawk_id, locale="en")
    verifier.outbox.down = False
    assert (yield verifier.verifyCode(hawk_id, code)) == NUMBER


@pytest_twisted.inlineCallbacks
def test_no_resend_once_the_tries_are_spent(verifier):
    """After the session's last wrong try, a resend is refused and no SMS goes out:
    its code could never be checked."""
    hawk_id = yield register(verifier)
    yield verifier.sendCode(hawk_id, NUMBER, mcc="208", mnc=None, short=True, locale="en")
    code = verifier.outbox.sent[-1].text.split()[-1]
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(3):
        with pytest.raises(flows.WrongCode):
            yield verifier.verifyCode(hawk_id, wrong)
    verifier.test_clock.advance(31)
    with pytest.raises(flows.TooManySends):
        yield verifier.resendCode(hawk_id, locale="en")
    assert len(verifier.outbox.sent) == 1


@pytest_twisted.inlineCallbacks
def test_a_late_receipt_for_an_older_code_changes_nothing(verifier):
    """UNDELIV for the first code, arriving after a resend replaced it: no automatic
    resend, and the current code still works."""
    from msisdnd.sms.message_ids import message_id_aliases

    hawk_id = yield register(verifier)
    yield verifier.sendCode(hawk_id, NUMBER, mcc="208", mnc=None, short=True, locale="en")
    verifier.test_clock.advance(31)
    yield verifier.resendCode(hawk_id, locale="en")
    current = verifier.outbox.sent[-1].text.split()[-1]
    yield verifier.receiptReceived(DeliveryReceipt("memory", "1", message_id_aliases("1"),
                                                   "UNDELIV"))
    assert len(verifier.outbox.sent) == 2
    assert (yield verifier.verifyCode(hawk_id, current)) == NUMBER
