"""The abuse limits (msisdnd.state.limits) and the carrier daily cap (msisdnd.state.daily_cap).

Every limit is tested at its edge -- the last allowed request passes, the next
is refused, the window rolls over -- against the run's real Redis.  Unit tests
drive L{Limits} with a L{task.Clock}: the Lua scripts take C{now} from the
clock the limits are given, so fixed windows, token buckets and the pumping
guard's sliding window roll over when the test advances it (Redis TTLs stay
real time).  End-to-end tests go through the HTTP API of whole gateways
(tests/gateway.py), posing as many client addresses with C{X-Forwarded-For}
(the test gateway trusts 127.0.0.0/8).
"""

from __future__ import annotations

import os

import time

import phonenumbers
import pytest
import pytest_twisted
import txredisapi
from phonenumbers import PhoneNumberType
from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks

from msisdnd import hawk
from msisdnd.verification import codes
from msisdnd.state.daily_cap import DailyCaps
from msisdnd.state.limits import Limit, Limits, LimitSettings, Refused, prefix_of
from msisdnd.sms.interfaces import MOMessage
from msisdnd.smpp.carrier import Carrier
from msisdnd.smpp.config import CarrierConfig
from msisdnd.state.sessions import CheckOutcome, SendOutcome, SessionStore

from conftest import wait_until
from gateway import MO_NUMBER, start_gateway
from test_api_edges import browserid_key

#: A realistic epoch: 40,000 s into a UTC day, 400 s into a 10-minute window,
#: 100 s into a 300-s guard bucket.
EPOCH = 1_795_000_000
SECRET = b"s" * 32
NUMBER_KEY = b"n" * 32

NUMBER = "+33612345678"
US_NUMBER = "+12015550123"
CLIENT = "198.51.100.7"

#: Limits that stay out of the way of the one a test is about.
GENEROUS = {"number_sends_10min": 10**6, "number_sends_day": 10**6, "ip_sends_minute": 10**6,
            "ip_sends_day": 10**6, "ip_registrations_minute": 10**6,
            "ip_registrations_day": 10**6, "prefix_sends_day": 10**6,
            "country_sends_day": 10**7, "network_sends_day": 10**7}


# -- helpers -----------------------------------------------------------------


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(EPOCH)
    assert c.seconds() % 86400 == 40000 and c.seconds() % 600 == 400
    return c


def make_limits(redis_pool, clock, **settings) -> Limits:
    """One daemon's limits: its own store over C{redis_pool}, time from C{clock}.

    The pumping guard and the address buckets are out of the way (10**6) unless a
    test sets them: every other limit is at its default.
    """
    settings = {"guard_floor": 10**6, "ip_sends_minute": 10**6, "ip_sends_day": 10**6,
                **settings}
    return Limits(SessionStore(redis_pool, reactor), LimitSettings(**settings), SECRET, clock)


def ref(msisdn: str) -> bytes:
    return codes.number_ref(NUMBER_KEY, msisdn)


def outcome(d):
    """Fires with C{None} when C{d} succeeded, or with the L{Refused} it failed with."""
    return d.addCallbacks(lambda _: None, lambda f: f.trap(Refused) and f.value)


@inlineCallbacks
def send(limits: Limits, msisdn: str, client: str | None = CLIENT, mcc: str | None = None,
         mnc: str | None = None):
    """One SMS to C{msisdn}, its limits checked and spent as a code's send does
    (in the session store's send start, here on a new session); fires with
    C{None}, or the L{Refused} (the session then has no code)."""
    store = limits.store
    session = os.urandom(16)
    yield store.createSession(session, b"k" * 32, 60_000)
    try:
        start = yield store.startSend(
            session, number_ref=ref(msisdn), sealed_number=b"sealed", code_mac=b"c" * 16,
            now_ms=int(limits.clock.seconds() * 1000), code_ttl_ms=600_000, cooldown_ms=0,
            max_sends=10, session_ttl_ms=60_000,
            limit_check=limits.sendCheck(msisdn, client, mcc, mnc, ref(msisdn)))
    except Refused as refusal:
        assert "c" not in (yield store.session(session))
        return refusal
    assert start.outcome is SendOutcome.STARTED
    return None


@inlineCallbacks
def wrong_code(limits: Limits, msisdn: str, client: str | None = None):
    """One wrong code for C{msisdn} from C{client}, the way the flows make it: a
    session's check reserves one of the number's failures and one of the
    client's (or finds either locked), then the wrong result is reported.
    Fires with C{True} once it locked the number for everyone, C{"locked"}
    when the check was refused."""
    check = yield begin_check(limits, msisdn, client)
    if check.outcome is CheckOutcome.LOCKED:
        return "locked"
    return (yield limits.failedCheck(check.number_ref, client))


@inlineCallbacks
def begin_check(limits: Limits, msisdn: str, client: str | None = None):
    """A new session with a code sent to C{msisdn}, and C{client}'s check of it
    begun; fires with the store's L{CodeCheck}."""
    store = limits.store
    session = os.urandom(16)
    now = int(limits.clock.seconds() * 1000)
    yield store.createSession(session, b"k" * 32, 60_000)
    yield store.startSend(session, number_ref=ref(msisdn), sealed_number=b"sealed",
                          code_mac=b"c" * 16, now_ms=now, code_ttl_ms=600_000, cooldown_ms=0,
                          max_sends=10, session_ttl_ms=60_000)
    return (yield store.beginCheck(session, now, 3, limits.attemptGuard(client)))


@inlineCallbacks
def register(limits: Limits, client: str):
    """A registration from C{client}, as the flows make it (its buckets spent in
    the script that creates the session); fires with C{None}, or the
    L{Refused} (no session was created)."""
    session = os.urandom(16)
    try:
        yield limits.store.createSession(session, b"k" * 32, 60_000, (limits, client))
    except Refused as refusal:
        assert (yield limits.store.session(session)) == {}
        return refusal
    return None


def number(prefix: str, i: int) -> str:
    """The C{i}th number of C{prefix} (prefix + 4 digits)."""
    return f"{prefix}{i:04d}"


def refused_with(result, limit: Limit) -> bool:
    return isinstance(result, Refused) and result.limit is limit


def to_midnight(clock) -> float:
    return 86400 - clock.seconds() % 86400


@pytest.fixture
def second_pool(redis_server):
    """A second connection pool to the same Redis: another daemon's."""
    pool = pytest_twisted.blockon(txredisapi.ConnectionPool(
        "127.0.0.1", redis_server.port, poolsize=2, reconnect=True, charset=None,
        convertNumbers=False))
    yield pool
    pytest_twisted.blockon(pool.disconnect())


@inlineCallbacks
def eventually(attempt, timeout: float = 5.0, interval: float = 0.02):
    """Call C{attempt()} (a Deferred firing with a bool) on the real reactor until it
    fires true; fail after C{timeout} seconds.  For what only real time changes:
    Redis TTLs, other daemons' ticks."""
    deadline = time.monotonic() + timeout
    while not (yield attempt()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {attempt}")
        yield task.deferLater(reactor, interval, lambda: None)


def passes(d):
    """C{d} (an L{outcome}) as a bool: the send passed."""
    return d.addCallback(lambda result: result is None)


# -- per number ----------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_number_ten_minute_window_edge_and_rollover(redis_pool, clock):
    """Five codes to one number in a 10-minute window pass, the sixth is refused
    (NUMBER_RATE, with a positive Retry-After); the next window passes again."""
    limits = make_limits(redis_pool, clock)
    for _ in range(5):
        assert (yield send(limits, NUMBER)) is None
    sixth = yield send(limits, NUMBER)
    assert refused_with(sixth, Limit.NUMBER_RATE)
    assert sixth.retry_after is not None and 0 < sixth.retry_after <= 600
    assert refused_with((yield send(limits, NUMBER)), Limit.NUMBER_RATE)
    assert limits.counters.refused["number_rate"] == 2
    assert (yield send(limits, "+33612345679")) is None  # another number is unaffected
    clock.advance(199)  # the window ends 200 s after EPOCH
    assert refused_with((yield send(limits, NUMBER)), Limit.NUMBER_RATE)
    clock.advance(1)
    assert (yield send(limits, NUMBER)) is None


@pytest_twisted.inlineCallbacks
def test_number_rate_retry_after_is_the_time_to_the_window_end(redis_pool, clock):
    """A refusal says how long until a send passes: 400 s into a 10-minute window,
    that is 200 s, not 600."""
    limits = make_limits(redis_pool, clock)
    for _ in range(5):
        assert (yield send(limits, NUMBER)) is None
    sixth = yield send(limits, NUMBER)
    assert refused_with(sixth, Limit.NUMBER_RATE)
    clock.advance(200)
    assert (yield send(limits, NUMBER)) is None  # it did pass after 200 s...
    assert sixth.retry_after <= 200  # ...but the refusal said ~600


@pytest_twisted.inlineCallbacks
def test_number_daily_cap_across_windows_rolls_over_at_utc_midnight(redis_pool, clock):
    """Ten codes a UTC day to one number, whatever the 10-minute windows allow; the
    eleventh waits for midnight UTC (not 24 hours after the first send)."""
    limits = make_limits(redis_pool, clock)
    first_to_midnight = to_midnight(clock)
    for _ in range(2):
        for _ in range(5):
            assert (yield send(limits, NUMBER)) is None
        assert refused_with((yield send(limits, NUMBER)), Limit.NUMBER_RATE)
        clock.advance(600)
    eleventh = yield send(limits, NUMBER)  # a fresh 10-minute window, but the day is spent
    assert refused_with(eleventh, Limit.NUMBER_RATE)
    assert 600 < eleventh.retry_after <= first_to_midnight
    clock.advance(to_midnight(clock) - 1)
    assert refused_with((yield send(limits, NUMBER)), Limit.NUMBER_RATE)
    clock.advance(1)
    assert clock.seconds() % 86400 == 0
    for _ in range(5):
        assert (yield send(limits, NUMBER)) is None
    assert refused_with((yield send(limits, NUMBER)), Limit.NUMBER_RATE)


# -- per client address --------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_ip_send_bucket_per_minute(redis_pool, clock):
    """Sends from one address: a burst of 5, then one token every 12 s; another
    address has its own bucket."""
    limits = make_limits(redis_pool, clock, ip_sends_minute=5, ip_sends_day=50)
    for i in range(5):
        assert (yield send(limits, number("+3361111", i))) is None
    sixth = yield send(limits, number("+3361111", 5))
    assert refused_with(sixth, Limit.IP_RATE)
    assert sixth.retry_after == 12.0
    assert (yield send(limits, number("+3361111", 5), client="198.51.100.8")) is None
    clock.advance(11.5)
    late = yield send(limits, number("+3361111", 6))
    assert refused_with(late, Limit.IP_RATE) and 0.5 <= late.retry_after <= 0.501
    clock.advance(0.5)
    assert (yield send(limits, number("+3361111", 6))) is None
    assert refused_with((yield send(limits, number("+3361111", 7))), Limit.IP_RATE)


@pytest_twisted.inlineCallbacks
def test_ip_send_bucket_per_day(redis_pool, clock):
    """50 sends from one address pass (spread over minutes), the 51st is refused
    until the day bucket refills one token (86400 / 50 = 1728 s)."""
    limits = make_limits(redis_pool, clock, ip_sends_minute=10**6, ip_sends_day=50)
    for i in range(50):
        assert (yield send(limits, number("+3361111", i))) is None
    refusal = yield send(limits, number("+3361111", 50))
    assert refused_with(refusal, Limit.IP_RATE) and refusal.retry_after == 1728.0
    clock.advance(1727)
    assert refused_with((yield send(limits, number("+3361111", 50))), Limit.IP_RATE)
    clock.advance(1)
    assert (yield send(limits, number("+3361111", 50))) is None
    assert refused_with((yield send(limits, number("+3361111", 51))), Limit.IP_RATE)


@pytest_twisted.inlineCallbacks
def test_ip_registration_buckets(redis_pool, clock):
    """Registrations: a burst of ip_registrations_minute, one more every 60/N s; the
    daily bucket caps a slow stream; another address and the send buckets are apart."""
    limits = make_limits(redis_pool, clock, ip_registrations_minute=10,
                         ip_registrations_day=200)
    for _ in range(10):
        assert (yield register(limits, CLIENT)) is None
    eleventh = yield register(limits, CLIENT)
    assert refused_with(eleventh, Limit.IP_RATE) and eleventh.retry_after == 6.0
    assert (yield register(limits, "198.51.100.8")) is None
    assert (yield send(limits, NUMBER, client=CLIENT)) is None  # sends have their own bucket
    clock.advance(6)
    assert (yield register(limits, CLIENT)) is None
    assert refused_with((yield register(limits, CLIENT)), Limit.IP_RATE)

    daily = make_limits(redis_pool, clock, ip_registrations_minute=1000, ip_registrations_day=3)
    client = "203.0.113.9"
    for _ in range(3):
        assert (yield register(daily, client)) is None
    fourth = yield register(daily, client)
    assert refused_with(fourth, Limit.IP_RATE) and fourth.retry_after == 28800.0
    clock.advance(60)  # a new minute does not help
    assert refused_with((yield register(daily, client)), Limit.IP_RATE)
    clock.advance(28800 - 60)
    assert (yield register(daily, client)) is None
    assert refused_with((yield register(daily, client)), Limit.IP_RATE)


@pytest_twisted.inlineCallbacks
def test_mo_sends_skip_the_address_check(redis_pool, clock):
    """An MO has no client address (client=None): no IP bucket is checked or spent,
    and MOs do not share one \"no address\" bucket either."""
    limits = make_limits(redis_pool, clock, ip_sends_minute=1, ip_sends_day=1)
    for i in range(10):
        assert (yield send(limits, number("+3361111", i), client=None)) is None
    assert (yield send(limits, number("+3362222", 0), client=CLIENT)) is None
    assert refused_with((yield send(limits, number("+3362222", 1), client=CLIENT)),
                        Limit.IP_RATE)
    assert (yield send(limits, number("+3362222", 1), client=None)) is None


# -- per prefix, country, network ------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_prefix_daily_budget(redis_pool, clock):
    """Three numbers of one prefix pass, the fourth is refused (PREFIX_BUDGET);
    another prefix passes; the budget is back at midnight UTC."""
    limits = make_limits(redis_pool, clock, prefix_sends_day=3)
    assert prefix_of("+33612340001") == "+3361234"
    for i in range(3):
        assert (yield send(limits, number("+3361234", i))) is None
    fourth = yield send(limits, number("+3361234", 3))
    assert refused_with(fourth, Limit.PREFIX_BUDGET)
    assert 0 < fourth.retry_after <= to_midnight(clock)
    assert (yield send(limits, number("+3369876", 0))) is None
    clock.advance(to_midnight(clock))
    assert (yield send(limits, number("+3361234", 3))) is None


@pytest_twisted.inlineCallbacks
def test_country_daily_budget(redis_pool, clock):
    """Three French numbers (different prefixes) pass, the fourth is refused
    (COUNTRY_BUDGET); another country passes."""
    limits = make_limits(redis_pool, clock, country_sends_day=3)
    for i in range(3):
        assert (yield send(limits, f"+336{i}1230000")) is None
    assert refused_with((yield send(limits, "+33641230000")), Limit.COUNTRY_BUDGET)
    assert (yield send(limits, US_NUMBER)) is None
    clock.advance(to_midnight(clock))
    assert (yield send(limits, "+33641230000")) is None


@pytest_twisted.inlineCallbacks
def test_network_daily_budget(redis_pool, clock):
    """Sends naming MCC-MNC 208-10: three pass, the fourth is refused
    (NETWORK_BUDGET); another MNC passes.  Sends with no MNC (or no MCC) count
    under the number's region instead: three French ones pass, the fourth is
    refused; a Spanish one is another region's."""
    limits = make_limits(redis_pool, clock, network_sends_day=3)
    for i in range(3):
        assert (yield send(limits, f"+336{i}1230000", mcc="208", mnc="10")) is None
    fourth = yield send(limits, "+33641230000", mcc="208", mnc="10")
    assert refused_with(fourth, Limit.NETWORK_BUDGET)
    assert (yield send(limits, "+33641230000", mcc="208", mnc="20")) is None
    assert (yield send(limits, "+33650000000")) is None
    assert (yield send(limits, "+33660000000", mcc="208")) is None
    assert (yield send(limits, "+33670000000")) is None
    regional = yield send(limits, "+33680000000", mcc="208")
    assert refused_with(regional, Limit.NETWORK_BUDGET)
    assert (yield send(limits, "+34612345678")) is None


# -- countries and number types ---------------------------------------------------


def _example(kind) -> str | None:
    example = phonenumbers.example_number_for_type("FR", kind)
    if example is None:
        return None
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)


def test_country_allow_list(redis_pool, clock):
    """countries={"FR"}: a US number is refused (COUNTRY_NOT_ALLOWED, a policy: no
    Retry-After), a French one is allowed; an empty list serves every region."""
    limits = make_limits(redis_pool, clock, countries=frozenset({"FR"}))
    with pytest.raises(Refused) as refused:
        limits.checkNumber(US_NUMBER)
    assert refused.value.limit is Limit.COUNTRY_NOT_ALLOWED
    assert refused.value.retry_after is None
    assert limits.counters.refused["country_not_allowed"] == 1
    limits.checkNumber(NUMBER)
    make_limits(redis_pool, clock).checkNumber(US_NUMBER)


def test_number_types(redis_pool, clock):
    """By default only mobile (and fixed-or-mobile) numbers are served: French
    toll-free, premium-rate, VoIP, shared-cost and fixed-line numbers are refused
    (NUMBER_TYPE); number_types widens the set."""
    limits = make_limits(redis_pool, clock)
    refused_kinds = [PhoneNumberType.TOLL_FREE, PhoneNumberType.PREMIUM_RATE,
                     PhoneNumberType.VOIP, PhoneNumberType.SHARED_COST,
                     PhoneNumberType.FIXED_LINE]
    examples = {k: _example(k) for k in refused_kinds}
    assert sum(e is not None for e in examples.values()) >= 3
    for kind, example in examples.items():
        if example is None:
            continue
        assert phonenumbers.number_type(phonenumbers.parse(example)) == kind
        with pytest.raises(Refused) as refused:
            limits.checkNumber(example)
        assert refused.value.limit is Limit.NUMBER_TYPE, example
        assert refused.value.retry_after is None
    limits.checkNumber(_example(PhoneNumberType.MOBILE))
    limits.checkNumber(US_NUMBER)  # FIXED_LINE_OR_MOBILE

    voip = _example(PhoneNumberType.VOIP)
    wider = make_limits(redis_pool, clock, number_types=frozenset({"MOBILE", "VOIP"}))
    wider.checkNumber(voip)
    wider.checkNumber(NUMBER)
    with pytest.raises(Refused):
        wider.checkNumber(_example(PhoneNumberType.TOLL_FREE))
    with pytest.raises(Refused):
        wider.checkNumber(US_NUMBER)  # FIXED_LINE_OR_MOBILE is no longer listed


# -- a refusal costs nothing --------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_a_refused_send_consumes_no_counter(redis_pool, clock):
    """Sends refused at the prefix budget or at the address's bucket spend nothing:
    not the number's window, not the country's budget, not the address's tokens."""
    limits = make_limits(redis_pool, clock, prefix_sends_day=1, ip_sends_minute=3,
                         ip_sends_day=50)
    other = number("+3361234", 1)
    assert (yield send(limits, number("+3361234", 0), client="203.0.113.1")) is None
    for _ in range(20):
        assert refused_with((yield send(limits, other, client="203.0.113.1")),
                            Limit.PREFIX_BUDGET)
    day = int(clock.seconds()) // 86400
    assert (yield redis_pool.get(f"ml:cd:33:{day}".encode())) == b"1"
    assert (yield redis_pool.get(f"ml:pd:+3361234:{day}".encode())) == b"1"
    # the address spent one token out of three, the refused twenty spent none
    for i in range(2):
        assert (yield send(limits, f"+33655{i}00000", client="203.0.113.1")) is None
    assert refused_with((yield send(limits, "+33655200000", client="203.0.113.1")),
                        Limit.IP_RATE)
    # with a bigger budget (another daemon's settings), the number still has all 5
    raised = make_limits(redis_pool, clock, prefix_sends_day=1000, ip_sends_minute=3)
    for i in range(5):
        assert (yield send(raised, other, client=f"203.0.113.{10 + i}")) is None
    assert refused_with((yield send(raised, other, client="203.0.113.20")), Limit.NUMBER_RATE)
    # sends refused at the (empty) address bucket did not count against their number
    victim = "+33698765432"
    for _ in range(5):
        assert refused_with((yield send(raised, victim, client="203.0.113.1")), Limit.IP_RATE)
    for i in range(5):
        assert (yield send(raised, victim, client=f"203.0.113.{30 + i}")) is None
    assert refused_with((yield send(raised, victim, client="203.0.113.40")), Limit.NUMBER_RATE)


@pytest_twisted.inlineCallbacks
def test_ipv6_addresses_of_one_subnet_share_a_bucket(redis_pool, clock):
    """Two addresses of one IPv6 /64 are one client for the address buckets."""
    limits = make_limits(redis_pool, clock, ip_registrations_minute=1,
                         ip_registrations_day=10)
    assert (yield register(limits, "2001:db8:1:2::1")) is None
    assert refused_with((yield register(limits, "2001:db8:1:2::1")), Limit.IP_RATE)
    assert refused_with((yield register(limits, "2001:db8:1:2::2")), Limit.IP_RATE)


# -- failed checks --------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_failed_checks_lock_the_number_until_the_lock_expires(redis_pool, clock):
    """number_failures_day=3: the third wrong code locks the number (sends refused
    with NUMBER_LOCKED); the lock lives number_lock seconds in Redis, then sends
    pass; other numbers were never locked; the count starts over the next day."""
    limits = make_limits(redis_pool, clock, number_failures_day=3, number_lock=1.0)
    assert (yield wrong_code(limits, NUMBER)) is False
    assert (yield wrong_code(limits, NUMBER)) is False
    assert (yield send(limits, NUMBER)) is None
    assert (yield wrong_code(limits, NUMBER)) is True
    locked = yield send(limits, NUMBER)
    assert refused_with(locked, Limit.NUMBER_LOCKED)
    assert 0 < locked.retry_after <= 1.0
    assert (yield send(limits, "+33612345679")) is None
    yield eventually(lambda: passes(send(limits, NUMBER)))
    clock.advance(to_midnight(clock))
    assert (yield wrong_code(limits, NUMBER)) is False
    assert (yield wrong_code(limits, NUMBER)) is False
    assert (yield wrong_code(limits, NUMBER)) is True


@pytest_twisted.inlineCallbacks
def test_a_guessing_client_is_locked_out_of_the_number_alone(redis_pool, clock):
    """With the defaults, one address's client_failures_day wrong codes lock that
    address out of the number (its next check is refused, no try spent), while
    the number stays open to every other address and to sends; after
    client_lock the address may check again, its count started over."""
    limits = make_limits(redis_pool, clock, client_lock=0.3)
    stranger, owner = "198.51.100.7", "2001:db8:5::1"
    for _ in range(LimitSettings().client_failures_day):
        assert (yield wrong_code(limits, NUMBER, stranger)) is False
    assert (yield wrong_code(limits, NUMBER, stranger)) == "locked"
    assert (yield wrong_code(limits, "+33612345679", stranger)) is False
    assert (yield wrong_code(limits, NUMBER, owner)) is False
    assert (yield send(limits, NUMBER, owner)) is None

    @inlineCallbacks
    def checks_again():
        return (yield wrong_code(limits, NUMBER, stranger)) is False

    yield eventually(checks_again)
    assert (yield wrong_code(limits, NUMBER, stranger)) is False


@pytest_twisted.inlineCallbacks
def test_a_locked_client_is_told_the_longer_of_its_lock_and_the_numbers(redis_pool, clock):
    """A stranger locked out for an hour, then the number locked for everyone
    for a minute: the stranger's Retry-After is its own hour, everyone else's
    the number's minute."""
    limits = make_limits(redis_pool, clock, number_failures_day=4, client_failures_day=2,
                         client_lock=3600.0, number_lock=60.0)
    stranger = "198.51.100.7"
    for _ in range(2):
        assert (yield wrong_code(limits, NUMBER, stranger)) is False
    for client in ("198.51.100.8", "198.51.100.8"):
        yield wrong_code(limits, NUMBER, client)
    assert refused_with((yield send(limits, NUMBER)), Limit.NUMBER_LOCKED)
    theirs = yield begin_check(limits, NUMBER, stranger)
    others = yield begin_check(limits, NUMBER, "198.51.100.9")
    assert theirs.outcome is others.outcome is CheckOutcome.LOCKED
    assert 3500_000 < theirs.wait_ms <= 3600_000 and 50_000 < others.wait_ms <= 60_000


@pytest_twisted.inlineCallbacks
def test_many_clients_lock_the_number_for_everyone_with_a_backing_off_lock(redis_pool, clock):
    """number_failures_day wrong codes from many addresses lock the number for
    everyone; each later lock that day lasts twice the one before, at most
    number_lock_max, and each starts the count over."""
    limits = make_limits(redis_pool, clock, number_failures_day=4, client_failures_day=2,
                         number_lock=0.4, number_lock_max=1.0)
    addresses = (f"198.51.100.{n}" for n in range(1, 100))
    waits = []
    for _ in range(3):
        results = []
        for _ in range(2):
            client = next(addresses)
            for _ in range(2):
                results.append((yield wrong_code(limits, NUMBER, client)))
        assert results == [False, False, False, True]
        assert (yield wrong_code(limits, NUMBER, next(addresses))) == "locked"
        refused = yield send(limits, NUMBER)
        assert refused_with(refused, Limit.NUMBER_LOCKED)
        waits.append(refused.retry_after)
        yield eventually(lambda: passes(send(limits, NUMBER)))
    assert 0.2 < waits[0] <= 0.4 and 0.6 < waits[1] <= 0.8 and 0.8 < waits[2] <= 1.0, waits


# -- the pumping guard -----------------------------------------------------------------


def guard(redis_pool, clock, **extra) -> Limits:
    return make_limits(redis_pool, clock, **{**GENEROUS, "guard_floor": 50,
                                             "guard_min_conversion": 0.2,
                                             "guard_window": 3600, "guard_grace": 0, **extra})


@pytest_twisted.inlineCallbacks
def test_pumping_scenario_blocks_the_pumped_prefix_only(redis_pool, clock):
    """1,200 sends to distinct numbers of +3361234 and no verification: the 51st
    is refused (PUMPING_BLOCK) and so is every one after, one block counted; all
    the while 300 sends to three other prefixes, 30% of them verified, pass.
    blocks() lists the prefix; lift() removes it."""
    limits = guard(redis_pool, clock)
    pumped = "+3361234"
    ordinary = ["+3365555", "+3366666", "+3367777"]
    results = []
    ordinary_refused = []
    for i in range(1200):
        results.append((yield send(limits, number(pumped, i), client=f"203.0.113.{i % 250}")))
        if i % 4 == 0:
            j = i // 4
            msisdn = number(ordinary[j % 3], j)
            r = yield send(limits, msisdn, client=f"198.51.100.{j % 250}")
            if r is not None:
                ordinary_refused.append((j, r.limit))
            elif j % 10 < 3:
                yield limits.verified(msisdn, None, None)
        if i % 100 == 0:
            clock.advance(1)
    assert all(r is None for r in results[:50])
    assert all(refused_with(r, Limit.PUMPING_BLOCK) for r in results[50:])
    assert results[50].retry_after == 86400.0
    assert ordinary_refused == []
    assert limits.counters.blocks == {"prefix": 1}
    assert limits.counters.refused["pumping_block"] == 1150
    found = yield limits.blocks()
    assert [(kind, what) for kind, what, _ in found] == [("prefix", pumped)]
    assert 86000 < found[0][2] <= 86400
    assert (yield limits.lift("prefix", pumped)) is True
    assert (yield limits.blocks()) == []
    assert limits.counters.unblocks == 1
    assert (yield limits.lift("prefix", pumped)) is False


@pytest_twisted.inlineCallbacks
def test_a_lifted_prefix_takes_sends_again(redis_pool, clock):
    """After an operator lifts a prefix's block, sends to it pass again."""
    limits = guard(redis_pool, clock)
    for i in range(51):
        yield send(limits, number("+3361234", i))
    assert limits.counters.blocks == {"prefix": 1}
    assert (yield limits.lift("prefix", "+3361234")) is True
    assert (yield send(limits, number("+3361234", 51))) is None


@pytest_twisted.inlineCallbacks
def test_pumping_guard_spares_a_prefix_with_enough_verifications(redis_pool, clock):
    """A prefix whose sends are verified at exactly the minimum conversion (20%)
    is never blocked, however far past the floor; at just under it, it is."""
    limits = guard(redis_pool, clock)
    for i in range(300):
        assert (yield send(limits, number("+3365555", i))) is None, i
        if i % 5 == 0:
            yield limits.verified(number("+3365555", i), None, None)
    assert limits.counters.blocks == {}
    # 49 sends, 9 verified: at the 51st check 50 sends and 9 < 10 verified
    for i in range(50):
        assert (yield send(limits, number("+3366666", i))) is None
        if i % 5 == 0 and i < 45:
            yield limits.verified(number("+3366666", i), None, None)
    assert refused_with((yield send(limits, number("+3366666", 50))), Limit.PUMPING_BLOCK)


@pytest_twisted.inlineCallbacks
def test_pumping_guard_window_slides(redis_pool, clock):
    """Unverified sends count for guard_window: 50 sends to a prefix, and 55
    minutes later the next is still refused; an hour later it passes."""
    limits = guard(redis_pool, clock)
    for prefix in ("+3361111", "+3362222"):
        for i in range(50):
            assert (yield send(limits, number(prefix, i))) is None
    clock.advance(3300)
    assert refused_with((yield send(limits, number("+3361111", 50))), Limit.PUMPING_BLOCK)
    clock.advance(300)
    assert (yield send(limits, number("+3362222", 50))) is None
    for i in range(51, 100):
        assert (yield send(limits, number("+3362222", i))) is None
    assert refused_with((yield send(limits, number("+3362222", 100))), Limit.PUMPING_BLOCK)


@pytest_twisted.inlineCallbacks
def test_pumping_guard_series_outlive_the_window_after_their_last_count(redis_pool, clock):
    """A series' first count in a bucket sets its expiry to the window and one
    bucket more, later counts in that bucket leave it: counts made until the
    bucket's end are kept for the whole window after them.  Old buckets are
    dropped as new ones start, never more than twice the window's buckets kept."""
    from msisdnd.state import keys

    limits = guard(redis_pool, clock)
    sent = keys.guard_series("s", "p", "+3361234")
    window_ms, bucket_ms = 3600 * 1000, 300 * 1000
    yield send(limits, number("+3361234", 0))
    first = yield redis_pool.execute_command("PTTL", sent)
    assert window_ms < first <= window_ms + bucket_ms
    yield send(limits, number("+3361234", 1))
    assert (yield redis_pool.execute_command("PTTL", sent)) <= first
    assert (yield redis_pool.hgetall(sent)) == {str(EPOCH // 300).encode(): b"2"}
    for i in range(2, 40):
        clock.advance(300)
        yield send(limits, number("+3361234", i))
        assert window_ms < (yield redis_pool.execute_command("PTTL", sent)) <= window_ms + bucket_ms
    assert len((yield redis_pool.hgetall(sent))) <= 24


@pytest_twisted.inlineCallbacks
def test_pumping_guard_blocks_a_network(redis_pool, clock):
    """Sends naming MCC-MNC 208-10, each to a different prefix, none verified: the
    51st is refused and the network blocked; another network, a send naming no
    network, and a verified network are not."""
    limits = guard(redis_pool, clock)
    results = []
    for i in range(60):
        results.append((yield send(limits, f"+336{i:04d}0000", mcc="208", mnc="10")))
        ok = yield send(limits, f"+337{i:04d}0000", mcc="208", mnc="20")
        assert ok is None, i
        if i % 3 == 0:
            yield limits.verified(f"+337{i:04d}0000", "208", "20")
    assert all(r is None for r in results[:50])
    assert all(refused_with(r, Limit.PUMPING_BLOCK) for r in results[50:])
    assert limits.counters.blocks == {"network": 1}
    found = yield limits.blocks()
    assert [(kind, what) for kind, what, _ in found] == [("network", "20810")]
    assert (yield send(limits, "+33699990000")) is None  # no network named
    assert (yield send(limits, "+33699990001", mcc="208", mnc="01")) is None
    assert (yield limits.lift("network", "20810")) is True
    assert (yield limits.blocks()) == []


# -- two daemons, one Redis ---------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_two_daemons_share_the_limits(redis_pool, second_pool, clock):
    """Two Limits on two connection pools to the same Redis: the number's five
    sends are split between them and the sixth is refused by either; a lock or a
    pumping block made by one holds on the other."""
    a = make_limits(redis_pool, clock, number_failures_day=2)
    b = make_limits(second_pool, clock, number_failures_day=2)
    for i in range(5):
        assert (yield send(a if i % 2 else b, NUMBER)) is None
    assert refused_with((yield send(a, NUMBER)), Limit.NUMBER_RATE)
    assert refused_with((yield send(b, NUMBER)), Limit.NUMBER_RATE)

    other = "+33698765432"
    yield wrong_code(a, other)
    assert (yield wrong_code(b, other)) is True
    assert refused_with((yield send(a, other)), Limit.NUMBER_LOCKED)

    ga, gb = guard(redis_pool, clock), guard(second_pool, clock)
    for i in range(50):
        assert (yield send(ga if i % 2 else gb, number("+3367777", i))) is None
    assert refused_with((yield send(ga, number("+3367777", 50))), Limit.PUMPING_BLOCK)
    assert refused_with((yield send(gb, number("+3367777", 51))), Limit.PUMPING_BLOCK)
    assert ga.counters.blocks == {"prefix": 1} and gb.counters.blocks == {}


# -- end to end through the API ------------------------------------------------------------


def xff(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"203.0.113.{n}"}


@inlineCallbacks
def new_session(gw, n: int):
    r = yield gw.call("POST", "/register", headers=xff(n))
    assert r.code == 200, r
    return r.body["msisdnSessionToken"]


@inlineCallbacks
def mt_verify(gw, token: str, n: int, msisdn: str = NUMBER, mnc: str | None = None):
    body = {"msisdn": msisdn, "mcc": "208", "shortVerificationCode": True}
    if mnc is not None:
        body["mnc"] = mnc
    r = yield gw.call("POST", "/sms/mt/verify", body, token=token, headers=xff(n))
    return r


def pins(gw, msisdn: str) -> list[str]:
    """Every short code the fake SMSC holds for C{msisdn}, oldest first."""
    return [m.text.splitlines()[0].split()[-1] for m in gw.smsc.smsc.received(msisdn)]


@inlineCallbacks
def stop(*gateways):
    for gw in gateways:
        yield gw.stop()
        yield gw.smsc.stop()


@pytest_twisted.inlineCallbacks
def test_api_registrations_per_address(redis_pool, tmp_path):
    """/register past ip_registrations_minute from one forwarded address: 429,
    errno 117, with Retry-After; another address still registers."""
    gw = yield start_gateway(redis_pool, tmp_path, limits=LimitSettings(ip_registrations_minute=3))
    try:
        for _ in range(3):
            assert (yield gw.call("POST", "/register", headers=xff(1))).code == 200
        r = yield gw.call("POST", "/register", headers=xff(1))
        assert (r.code, r.body["errno"]) == (429, 117)
        assert 1 <= int(r.headers["retry-after"]) <= 20
        assert (yield gw.call("POST", "/register", headers=xff(2))).code == 200
    finally:
        yield stop(gw)


@pytest_twisted.inlineCallbacks
def test_api_number_rate_across_sessions(redis_pool, tmp_path):
    """Six sessions, six addresses, one number: five codes are sent, the sixth
    request is 429 errno 116 with Retry-After, and no sixth SMS goes out."""
    gw = yield start_gateway(redis_pool, tmp_path, limits=LimitSettings())
    try:
        for n in range(1, 6):
            token = yield new_session(gw, n)
            assert (yield mt_verify(gw, token, n)).code == 204
        assert len(gw.smsc.smsc.received(NUMBER)) == 5
        token = yield new_session(gw, 6)
        r = yield mt_verify(gw, token, 6)
        assert (r.code, r.body["errno"]) == (429, 116)
        assert 1 <= int(r.headers["retry-after"]) <= 600
        assert len(gw.smsc.smsc.received(NUMBER)) == 5
    finally:
        yield stop(gw)


@pytest_twisted.inlineCallbacks
def test_api_countries_and_types_are_403(redis_pool, tmp_path):
    """countries={"FR"}: a US number is 403 errno 119 and no SMS; a French
    toll-free number is 403 errno 119 too; a French mobile gets its code."""
    gw = yield start_gateway(redis_pool, tmp_path,
                             limits=LimitSettings(countries=frozenset({"FR"})))
    try:
        for n, msisdn in enumerate([US_NUMBER, _example(PhoneNumberType.TOLL_FREE)], 1):
            token = yield new_session(gw, n)
            r = yield mt_verify(gw, token, n, msisdn)
            assert (r.code, r.body["errno"]) == (403, 119), msisdn
            assert "retry-after" not in r.headers
            assert gw.smsc.smsc.received(msisdn) == []
        token = yield new_session(gw, 9)
        assert (yield mt_verify(gw, token, 9)).code == 204
        assert len(gw.smsc.smsc.received(NUMBER)) == 1
    finally:
        yield stop(gw)


@pytest_twisted.inlineCallbacks
def test_api_wrong_codes_lock_the_number_on_both_paths(redis_pool, tmp_path):
    """number_failures_day=3 wrong codes across two sessions lock the number: the
    right code on a third session is 429 errno 121 (no try spent), a new
    mt/verify is 429 errno 121 with no SMS; once the lock expires, sends pass
    again and the count has started over: the owner's right code verifies."""
    gw = yield start_gateway(redis_pool, tmp_path,
                             limits=LimitSettings(number_failures_day=3, number_lock=2.0))
    try:
        tokens = []
        for n in (1, 2, 3):
            tokens.append((yield new_session(gw, n)))
            assert (yield mt_verify(gw, tokens[-1], n)).code == 204
        pin = yield gw.pin(NUMBER)  # the third session's code
        wrong = "000000" if pin != "000000" else "111111"
        for token, n in [(tokens[0], 1), (tokens[0], 1), (tokens[1], 2)]:
            r = yield gw.call("POST", "/sms/verify_code", {"code": wrong}, token=token,
                              headers=xff(n))
            assert (r.code, r.body["errno"]) == (400, 105)
        r = yield gw.call("POST", "/sms/verify_code", {"code": pin}, token=tokens[2],
                          headers=xff(3))
        assert (r.code, r.body["errno"]) == (429, 121)
        assert 1 <= int(r.headers["retry-after"]) <= 2
        token = yield new_session(gw, 4)
        r = yield mt_verify(gw, token, 4)
        assert (r.code, r.body["errno"]) == (429, 121)
        assert len(gw.smsc.smsc.received(NUMBER)) == 3

        fifth = yield new_session(gw, 5)

        @inlineCallbacks
        def sends_again():
            r = yield mt_verify(gw, fifth, 5)
            return r.code == 204

        yield eventually(sends_again, timeout=6.0)
        r = yield gw.call("POST", "/sms/verify_code", {"code": pin}, token=tokens[2],
                          headers=xff(3))
        assert (r.code, r.body) == (200, {"msisdn": NUMBER})
    finally:
        yield stop(gw)


@pytest_twisted.inlineCallbacks
def test_api_a_foreign_or_missing_network_is_charged_to_the_numbers_region(redis_pool,
                                                                           tmp_path):
    """A French number sent with a US MCC-MNC spends the French region's network
    budget (network_sends_day=1), so the next French number with no MNC is
    refused 429 errno 118, while a number sent with a French network passes."""
    gw = yield start_gateway(redis_pool, tmp_path, limits=LimitSettings(network_sends_day=1))
    try:
        token = yield new_session(gw, 1)
        r = yield gw.call("POST", "/sms/mt/verify", {"msisdn": "+33612345677", "mcc": "310",
                                                     "mnc": "260"}, token=token, headers=xff(1))
        assert r.code == 204
        second = yield new_session(gw, 2)
        r = yield mt_verify(gw, second, 2, msisdn="+33612345676")
        assert (r.code, r.body["errno"]) == (429, 118)
        third = yield new_session(gw, 3)
        r = yield mt_verify(gw, third, 3, msisdn="+33612345675", mnc="01")
        assert r.code == 204
    finally:
        yield stop(gw)


@pytest_twisted.inlineCallbacks
def test_api_a_stranger_cannot_lock_the_owner_out(redis_pool, tmp_path):
    """With the default limits, a stranger who starts sessions for someone's
    number and guesses from one address has client_failures_day codes
    compared, then 429 errno 121 for an hour; the owner, from another address,
    still gets a code and verifies with it."""
    gw = yield start_gateway(redis_pool, tmp_path, limits=LimitSettings())
    try:
        allowed = LimitSettings().client_failures_day
        guesses = []
        for _ in range(2):
            token = yield new_session(gw, 1)
            assert (yield mt_verify(gw, token, 1)).code == 204
            wrong = next(c for c in ("000000", "111111", "222222") if c not in pins(gw, NUMBER))
            for _ in range(3):
                r = yield gw.call("POST", "/sms/verify_code", {"code": wrong}, token=token,
                                  headers=xff(1))
                guesses.append((r.code, r.body["errno"]))
        assert guesses == [(400, 105)] * allowed + [(429, 121)] * (6 - allowed)
        assert 3500 <= int(r.headers["retry-after"]) <= 3600
        owner = yield new_session(gw, 2)
        assert (yield mt_verify(gw, owner, 2)).code == 204
        r = yield gw.call("POST", "/sms/verify_code", {"code": pins(gw, NUMBER)[-1]},
                          token=owner, headers=xff(2))
        assert (r.code, r.body) == (200, {"msisdn": NUMBER})
    finally:
        yield stop(gw)


@pytest_twisted.inlineCallbacks
def test_concurrent_wrong_codes_are_bounded_by_the_failure_limit(redis_pool, tmp_path):
    """Wrong codes for one number sent together over three sessions: at most
    number_failures_day of them are compared, the others find the number locked."""
    from twisted.internet.defer import DeferredList

    from msisdnd.verification.flows import WrongCode

    gw = yield start_gateway(redis_pool, tmp_path, limits=LimitSettings(number_failures_day=2))
    try:
        ids = []
        for n in (1, 2, 3):
            token = yield new_session(gw, n)
            assert (yield mt_verify(gw, token, n)).code == 204
            ids.append(hawk.derive_session(bytes.fromhex(token)).id)
        wrong = next(c for c in ("000000", "111111", "222222", "333333")
                     if c not in pins(gw, NUMBER))
        results = yield DeferredList([gw.verifier.verifyCode(hawk_id, wrong)
                                      for hawk_id in ids for _ in range(2)],
                                     consumeErrors=True)
        kinds = [type(value.value).__name__ for ok, value in results if not ok]
        assert len(kinds) == 6 and set(kinds) <= {"WrongCode", "Refused"}, kinds
        assert sum(isinstance(v.value, WrongCode) for _, v in results) <= 2, kinds
    finally:
        yield stop(gw)


@pytest_twisted.inlineCallbacks
def test_api_pumping_guard_counts_verifications(redis_pool, tmp_path):
    """Through the API, with guard_floor=4 and guard_min_conversion=0.5: a network
    whose codes are all entered (verify_code) keeps getting codes past the floor;
    an unverified network, and an unverified prefix, get 403 errno 120 with
    Retry-After at the fifth send, and no SMS."""
    gw = yield start_gateway(redis_pool, tmp_path, limits=LimitSettings(
        guard_floor=4, guard_min_conversion=0.5, guard_block=3600.0, guard_grace=0.0))
    try:
        n = 0
        for i in range(6):  # network 208-10, every code verified
            n += 1
            msisdn = f"+3366{i}000000"
            token = yield new_session(gw, n)
            assert (yield mt_verify(gw, token, n, msisdn, mnc="10")).code == 204, i
            (pin,) = pins(gw, msisdn)
            r = yield gw.call("POST", "/sms/verify_code", {"code": pin}, token=token,
                              headers=xff(n))
            assert r.code == 200, r
        for i in range(5):  # network 208-20, nothing verified, distinct prefixes
            n += 1
            msisdn = f"+3365{i}000000"
            token = yield new_session(gw, n)
            r = yield mt_verify(gw, token, n, msisdn, mnc="20")
            if i < 4:
                assert r.code == 204, (i, r)
            else:
                assert (r.code, r.body["errno"]) == (403, 120)
                assert 3500 <= int(r.headers["retry-after"]) <= 3600
                assert gw.smsc.smsc.received(msisdn) == []
        for i in range(5):  # one prefix, no network named, nothing verified
            n += 1
            msisdn = f"+3361234000{i}"
            token = yield new_session(gw, n)
            r = yield mt_verify(gw, token, n, msisdn)
            assert r.code == (204 if i < 4 else 403), (i, r)
        assert r.body["errno"] == 120
        assert gw.verifier.limits.counters.blocks == {"network": 1, "prefix": 1}
        found = yield gw.verifier.limits.blocks()
        assert [(k, w) for k, w, _ in found] == [("network", "20820"), ("prefix", "+3361234")]
    finally:
        yield stop(gw)


@pytest_twisted.inlineCallbacks
def test_api_two_gateways_share_the_limits(redis_pool, second_pool, tmp_path):
    """Two gateways (own ports, own SMSCs, own Redis pools, one Redis): three codes
    through one and two through the other; the sixth is 429 errno 116 on both."""
    gw1 = yield start_gateway(redis_pool, tmp_path, limits=LimitSettings())
    gw2 = yield start_gateway(second_pool, tmp_path, limits=LimitSettings())
    try:
        assert gw1.url != gw2.url
        for n in range(1, 6):
            gw = gw1 if n <= 3 else gw2
            token = yield new_session(gw, n)
            assert (yield mt_verify(gw, token, n)).code == 204
        assert len(gw1.smsc.smsc.received(NUMBER)) == 3
        assert len(gw2.smsc.smsc.received(NUMBER)) == 2
        for n, gw in [(6, gw1), (7, gw2)]:
            token = yield new_session(gw, n)
            r = yield mt_verify(gw, token, n)
            assert (r.code, r.body["errno"]) == (429, 116)
        assert len(gw1.smsc.smsc.received(NUMBER)) + len(gw2.smsc.smsc.received(NUMBER)) == 5
    finally:
        yield stop(gw1, gw2)


@pytest_twisted.inlineCallbacks
def test_limits_survive_a_restart(redis_pool, redis_server, tmp_path):
    """Five codes through a gateway that is then stopped; a new gateway on a new
    connection to the same Redis refuses the sixth (429 errno 116)."""
    gw = yield start_gateway(redis_pool, tmp_path, limits=LimitSettings())
    try:
        for n in range(1, 6):
            token = yield new_session(gw, n)
            assert (yield mt_verify(gw, token, n)).code == 204
    finally:
        yield stop(gw)
    pool = yield txredisapi.ConnectionPool("127.0.0.1", redis_server.port, poolsize=2,
                                           reconnect=True, charset=None, convertNumbers=False)
    restarted = yield start_gateway(pool, tmp_path, limits=LimitSettings())
    try:
        token = yield new_session(restarted, 6)
        r = yield mt_verify(restarted, token, 6)
        assert (r.code, r.body["errno"]) == (429, 116)
        assert restarted.smsc.smsc.received(NUMBER) == []
    finally:
        yield stop(restarted)
        yield pool.disconnect()


@pytest_twisted.inlineCallbacks
def test_mo_refused_by_a_limit_is_dropped_quietly(redis_pool, tmp_path):
    """An MO from a number the limits refuse is dropped like any refused MO: no
    SMS, counted in mo_dropped, and the Deferred fires without a failure."""
    gw = yield start_gateway(redis_pool, tmp_path,
                             limits=LimitSettings(countries=frozenset({"FR"})))
    try:
        token = yield new_session(gw, 1)
        hawk_id = hawk.derive_session(bytes.fromhex(token)).id
        d = gw.verifier.moReceived(MOMessage("fake", US_NUMBER, MO_NUMBER,
                                             f"/v1/msisdn/sms/momt/verify {hawk_id}"))
        result = yield outcome(d)
        assert gw.verifier.mo_dropped == 1
        assert gw.smsc.smsc.received(US_NUMBER) == []
        assert result is None, result
    finally:
        yield stop(gw)


# -- the carrier daily cap -------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_carrier_daily_cap_trips_the_carrier(redis_pool, tmp_path):
    """A carrier with daily_cap=3: after three accepted submits the breaker trips
    it, the router has no carrier left and /sms/mt/verify answers 503 errno 201."""
    gw = yield start_gateway(redis_pool, tmp_path, carrier_overrides={"daily_cap": 3})
    breaker = DailyCaps(gw.carriers.carriers, gw.store, reactor, interval=0.05)
    breaker.startService()
    try:
        (carrier,) = gw.carriers.carriers
        for n in range(3):
            token = yield new_session(gw, n)
            assert (yield mt_verify(gw, token, n, f"+3361234567{n}")).code == 204
            if n < 2:
                assert carrier.available
        yield wait_until(lambda: carrier.tripped)
        assert breaker.trips == 1
        assert not carrier.available and not gw.carriers.router.available()
        token = yield new_session(gw, 9)
        r = yield mt_verify(gw, token, 9)
        assert (r.code, r.body["errno"]) == (503, 201)
        assert len(gw.smsc.smsc.messages) == 3
    finally:
        yield breaker.stopService()
        yield stop(gw)


@pytest_twisted.inlineCallbacks
def test_carrier_daily_cap_is_shared_by_two_daemons(redis_pool, second_pool, tmp_path):
    """Two gateways whose carrier (same name) has daily_cap=3, each with its own
    breaker: two submits on one and one on the other trip the carrier on both."""
    gw1 = yield start_gateway(redis_pool, tmp_path, carrier_overrides={"daily_cap": 3})
    gw2 = yield start_gateway(second_pool, tmp_path, carrier_overrides={"daily_cap": 3})
    breakers = [DailyCaps(gw.carriers.carriers, gw.store, reactor, interval=0.05)
                for gw in (gw1, gw2)]
    for b in breakers:
        b.startService()
    try:
        (c1,), (c2,) = gw1.carriers.carriers, gw2.carriers.carriers
        day = int(reactor.seconds() * 1000) // 86_400_000
        key = f"ml:carrier:fake:{day}".encode()
        for n, gw in [(1, gw1), (2, gw1)]:
            token = yield new_session(gw, n)
            assert (yield mt_verify(gw, token, n, f"+3361234567{n}")).code == 204
        yield wait_until(lambda: c1.sent == 2)
        yield eventually(lambda: redis_pool.get(key).addCallback(lambda v: v == b"2"))
        assert not c1.tripped and not c2.tripped
        token = yield new_session(gw2, 3)
        assert (yield mt_verify(gw2, token, 3, "+33612345673")).code == 204
        yield wait_until(lambda: c1.tripped and c2.tripped)
        assert (breakers[0].trips, breakers[1].trips) == (1, 1)
    finally:
        for b in breakers:
            yield b.stopService()
        yield stop(gw1, gw2)


def _carrier(clock, **overrides) -> Carrier:
    config = CarrierConfig.from_mapping({
        "name": "capped", "host": "127.0.0.1", "port": 1, "system_id": "msisdnd",
        "password": "pw", **overrides}, "carrier[capped]")
    return Carrier(config, clock)


@pytest_twisted.inlineCallbacks
def test_carrier_daily_cap_rolls_over_at_utc_midnight(redis_pool, clock):
    """The breaker counts per UTC day from its clock: tripped at the cap, chosen
    again at midnight."""
    carrier = _carrier(clock, daily_cap=3)
    breaker = DailyCaps([carrier], SessionStore(redis_pool, reactor), clock, interval=1.0)
    carrier.sent = 3
    yield breaker.tick()
    assert carrier.tripped and breaker.trips == 1
    clock.advance(to_midnight(clock) - 1)
    yield breaker.tick()
    assert carrier.tripped
    clock.advance(1)
    yield breaker.tick()
    assert not carrier.tripped
    carrier.sent = 5
    yield breaker.tick()
    assert not carrier.tripped
    carrier.sent = 6
    yield breaker.tick()
    assert carrier.tripped and breaker.trips == 2


@pytest_twisted.inlineCallbacks
def test_carrier_breaker_leaves_no_key_without_expiry(redis_pool, clock):
    """A breaker ticking for an idle capped carrier leaves no counter that never
    expires."""
    carrier = _carrier(clock, daily_cap=3)
    breaker = DailyCaps([carrier], SessionStore(redis_pool, reactor), clock, interval=1.0)
    yield breaker.tick()
    assert not carrier.tripped
    day = int(clock.seconds()) // 86400
    key = f"ml:carrier:capped:{day}".encode()
    ttl = yield redis_pool.execute_command("PTTL", key)
    assert ttl != -1, "the day's counter never expires"


@pytest_twisted.inlineCallbacks
def test_pumping_guard_gives_a_burst_time_to_verify(redis_pool, clock):
    """With the default 5-minute grace, a burst of 200 fresh sends to one prefix is not
    blocked while its users may still be typing their codes; once the burst is older
    than the grace and still unverified, the next send is blocked."""
    limits = guard(redis_pool, clock, guard_grace=300)
    for i in range(200):
        assert (yield send(limits, f"+3361234{i:04d}", client=None)) is None
    clock.advance(600)
    assert refused_with((yield send(limits, "+33612349999", client=None)), Limit.PUMPING_BLOCK)


@pytest_twisted.inlineCallbacks
def test_ipv6_clients_are_counted_by_64_56_and_48(redis_pool, clock):
    """One /64 gets the address budget; its /56 four times it, its /48 sixteen
    times: a stranger holding a /48 no longer has 65,536 budgets."""
    limits = make_limits(redis_pool, clock, ip_sends_minute=1)
    numbers = iter(f"+336123{i:05d}" for i in range(100))
    # Four /64s of one /56 pass, once each; the fifth /64 of that /56 is refused.
    for i in range(4):
        assert (yield send(limits, next(numbers), f"2001:db8:0:{i}::1")) is None
    assert refused_with((yield send(limits, next(numbers), "2001:db8:0:4::1")), Limit.IP_RATE)
    assert refused_with((yield send(limits, next(numbers), "2001:db8:0:1::2")), Limit.IP_RATE)
    # The /48 holds 16 budgets: four /56s of four /64s each pass, then it is spent.
    passed = 4
    for block in range(1, 5):
        for i in range(4):
            result = yield send(limits, next(numbers), f"2001:db8:0:{block * 256 + i:x}::1")
            passed += result is None
    assert passed == 16
    # Another /48 is another client; IPv4 counts per address (carrier-grade NAT).
    assert (yield send(limits, next(numbers), "2001:db8:1::1")) is None
    assert (yield send(limits, next(numbers), "192.0.2.1")) is None
    assert refused_with((yield send(limits, next(numbers), "192.0.2.1")), Limit.IP_RATE)
    assert (yield send(limits, next(numbers), "192.0.2.2")) is None


@pytest_twisted.inlineCallbacks
def test_the_daily_sms_budget_trips_every_carrier_until_midnight(redis_pool, clock):
    """Parts sent through every carrier, by every daemon, count against one budget:
    past it no carrier is chosen until midnight UTC."""
    store = SessionStore(redis_pool, reactor)
    first, second = _carrier(clock), _carrier(clock, name="other")
    one = DailyCaps([first, second], store, clock, interval=1.0, budget=10)
    two = DailyCaps([_carrier(clock, name="third")], store, clock, interval=1.0, budget=10)
    first.sent, second.sent = 4, 3
    yield one.tick()
    assert not first.tripped and not second.tripped
    two.carriers[0].sent = 3  # another daemon's parts count too
    yield two.tick()
    assert two.carriers[0].tripped and two.over_budget
    yield one.tick()
    assert first.tripped and second.tripped and one.over_budget
    clock.advance(to_midnight(clock))
    yield one.tick()
    assert not first.tripped and not second.tripped and not one.over_budget


def test_non_geographic_numbers_are_served_only_under_allowed_prefixes(redis_pool, clock):
    """Iridium (+8816, +8817) numbers typed MOBILE got SMS with the defaults; the
    calling codes no country holds are refused unless their prefix is listed."""
    limits = make_limits(redis_pool, clock)
    for number in ("+881612345678", "+881712345678", "+88213123456"):
        with pytest.raises(Refused) as refused:
            limits.checkNumber(number)
        assert refused.value.limit is Limit.COUNTRY_NOT_ALLOWED, number
    allowed = make_limits(redis_pool, clock, allow_prefixes=frozenset({"+8817"}))
    allowed.checkNumber("+881712345678")
    with pytest.raises(Refused):
        allowed.checkNumber("+881612345678")



@pytest_twisted.inlineCallbacks
def test_api_a_verification_the_guard_cannot_count_is_still_verified(redis_pool, tmp_path):
    """The pumping guard counts a verification in the script that marks the
    session verified; if counting fails there (here: its series key holds a
    string), the number is verified all the same and a warning is logged."""
    from twisted.logger import formatEvent, globalLogPublisher

    from msisdnd.state import keys

    gw = yield start_gateway(redis_pool, tmp_path, limits=LimitSettings())
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        yield redis_pool.set(keys.guard_series("v", "p", prefix_of(NUMBER)), b"not a hash")
        token = yield new_session(gw, 1)
        assert (yield mt_verify(gw, token, 1)).code == 204
        r = yield gw.call("POST", "/sms/verify_code", {"code": pins(gw, NUMBER)[-1]},
                          token=token, headers=xff(1))
        assert (r.code, r.body) == (200, {"msisdn": NUMBER})
        r = yield gw.call("POST", "/certificate/sign", {"publicKey": browserid_key(),
                                                        "duration": 60}, token=token)
        assert r.code == 200
        assert any("pumping guard missed a verification" in formatEvent(e) for e in seen)
    finally:
        globalLogPublisher.removeObserver(seen.append)
        yield stop(gw)


def test_number_facts_are_phonenumbers_own():
    """facts() tells the region, calling code and type phonenumbers gives, the
    same whether worked out or remembered."""
    from msisdnd.numbers import facts

    for _ in range(2):
        for e164 in ("+447911123456", "+881612345678", "+33123456789", "+14155550123"):
            number = phonenumbers.parse(e164, None)
            got = facts(e164)
            assert got.region == (phonenumbers.region_code_for_number(number) or "")
            assert got.country_code == number.country_code
            assert getattr(PhoneNumberType, got.kind) == phonenumbers.number_type(number)
    assert (facts("+881612345678").region, facts("+33123456789").kind) == ("001", "FIXED_LINE")


def test_client_levels_are_the_same_remembered_and_the_cache_is_bounded(monkeypatch):
    """A client's level keys are those worked out afresh, whether remembered
    or not; past the bound the oldest client is forgotten, and worked out
    again the same when it comes back."""
    from twisted.internet.task import Clock

    from msisdnd.state import limits as limits_module

    monkeypatch.setattr(limits_module, "CLIENT_LEVELS_CACHED", 3)
    limits = Limits(None, LimitSettings(), b"s" * 32, Clock())
    clients = ["192.0.2.1", "2001:db8:1:2::7", "not an address", "198.51.100.9"]
    first = [limits._client_levels(c) for c in clients]
    assert len(limits._levels) == 3 and clients[0] not in limits._levels
    assert first == [limits._levels_of(c) for c in clients] == [
        limits._client_levels(c) for c in clients]
    assert first[1][1] is True and len(set(first[1][0])) == 3  # /64, /56, /48
    assert first[0][1] is False and len(set(first[0][0])) == 1
