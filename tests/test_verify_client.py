"""The backend API's client (msisdnd.verify_client), `msisdnd api-keys` and
`msisdnd verify`, against the real `twistd msisdnd` (tests/test_daemon.py's fixture).

The fake SMSC runs in this process's reactor: a blocking call made here would
keep the daemon's submit_sm from being answered.  So every client call and
every CLI run goes to a thread (L{threads.deferToThread}) and the tests wait
for it as a Deferred.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads
from twisted.internet.defer import inlineCallbacks

from msisdnd.verify_client import (
    AuthenticationError,
    InvalidRequest,
    NotFound,
    RateLimited,
    VerifyClient,
)

from conftest import free_port, wait_until
from test_daemon import BIN, daemon  # noqa: F401  (daemon: the fixture, re-exported)

#: What `msisdnd api-keys create` prints on its last line.
KEY = re.compile(r"([0-9a-f]{16})\.[A-Za-z0-9_-]{43}")
#: A well-formed verification id that no key owns.
UNKNOWN_ID = "VE" + "0" * 32


# -- helpers --------------------------------------------------------------------

def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`msisdnd ARGS` (blocking: call it through L{cli})."""
    return subprocess.run([os.path.join(BIN, "msisdnd"), *args], capture_output=True,
                          text=True, timeout=60, env=env)


def cli(*args: str, env: dict | None = None):
    """`msisdnd ARGS` in a thread; fires with the CompletedProcess."""
    return threads.deferToThread(run_cli, *args, env=env)


def unique(name: str) -> str:
    """A key name no other test (this session's Redis is shared) has taken."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


@inlineCallbacks
def make_key(daemon, name: str, **limits):
    """A new API key (the string a backend sends); C{limits}: rate_per_minute=, daily_budget=."""
    options = [f"--{option.replace('_', '-')}={value}" for option, value in limits.items()]
    result = yield cli("api-keys", "create", "--config", daemon.config, "--name", unique(name),
                       *options)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


def call(method, *args, **kwargs):
    """A synchronous client method, in a thread."""
    return threads.deferToThread(method, *args, **kwargs)


@inlineCallbacks
def pin(daemon, number: str, count: int = 1):
    """The code in the C{count}th SMS the fake SMSC got for C{number} (its last word)."""
    smsc = daemon.harness.smsc
    yield wait_until(lambda: len(smsc.received(number)) >= count)
    return smsc.received(number)[count - 1].text.split()[-1]


def wrong(code: str) -> str:
    """A code of the same length that is not C{code}."""
    return "".join("1" if digit == "0" else "0" for digit in code)


@inlineCallbacks
def poll(method, until, timeout: float = 10.0):
    """Call C{method} (in a thread) until C{until(answer)}; fail after C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while True:
        answer = yield call(method)
        if until(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"still {answer!r} after {timeout}s")
        yield task.deferLater(reactor, 0.05, lambda: None)


# -- msisdnd api-keys -------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_api_keys_create_list_and_revoke(daemon):
    """`create` prints the key alone on its last line, `list` shows its name and id but
    never its secret, a taken name is refused, and `revoke` takes effect at once."""
    name = unique("ops")
    created = yield cli("api-keys", "create", "--config", daemon.config, "--name", name)
    assert created.returncode == 0, created.stderr
    key = created.stdout.splitlines()[-1]
    match = KEY.fullmatch(key)
    assert match, created.stdout
    key_id, secret = match.group(1), key.partition(".")[2]
    assert f"created {name} (key id {key_id})" in created.stdout

    listed = yield cli("api-keys", "list", "--config", daemon.config)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(name + " ")]
    assert row.split()[:2] == [name, key_id]
    assert secret not in listed.stdout

    again = yield cli("api-keys", "create", "--config", daemon.config, "--name", name)
    assert again.returncode != 0
    assert f"a key named {name!r} exists" in again.stderr
    assert not KEY.search(again.stdout)

    client = VerifyClient(daemon.api, key)
    with pytest.raises(NotFound):  # the key is good: only the verification is unknown
        yield call(client.fetch, UNKNOWN_ID)

    revoked = yield cli("api-keys", "revoke", "--config", daemon.config, name)
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked {name} (key id {key_id})" in revoked.stdout
    with pytest.raises(AuthenticationError) as refused:
        yield call(client.fetch, UNKNOWN_ID)
    assert (refused.value.status, refused.value.errno) == (401, 110)
    challenge = yield threads.deferToThread(www_authenticate, daemon.api, key)
    assert challenge.startswith("Bearer")

    listed = yield cli("api-keys", "list", "--config", daemon.config)
    assert name not in listed.stdout
    gone = yield cli("api-keys", "revoke", "--config", daemon.config, name)
    assert gone.returncode == 1 and f"no key named {name!r}" in gone.stderr


def www_authenticate(api: str, key: str) -> str:
    """The C{WWW-Authenticate} header of a refused backend request."""
    request = urllib.request.Request(f"{api}/v2/verifications/{UNKNOWN_ID}",
                                     headers={"Authorization": f"Bearer {key}"})
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as error:
        assert error.code == 401
        return error.headers.get("WWW-Authenticate", "")
    raise AssertionError("the request was not refused")


# -- the client's flow ---------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_client_create_check_fetch(daemon):
    """create -> a wrong check -> the right check -> a later check -> fetch (its SMS
    delivered) -> a new verification checked by number."""
    number = "+33612345601"
    daemon.harness.smsc.receipt_delay = 0.5  # the fixture's SMSC sends no receipts otherwise
    client = VerifyClient(daemon.api, (yield make_key(daemon, "flow")))

    created = yield call(client.create, number)
    assert (created.status, created.to, created.channel) == ("pending", number, "sms")
    assert created.id.startswith("VE")
    (attempt,) = created.send_attempts
    assert attempt.carrier == "fake"
    code = yield pin(daemon, number)
    assert code.isdigit() and len(code) == 6

    missed = yield call(client.check, wrong(code), id=created.id)
    assert (missed.id, missed.valid, missed.tries_left, missed.status) == \
        (created.id, False, 2, "pending")
    right = yield call(client.check, code, id=created.id)
    assert (right.valid, right.status) == (True, "approved")
    later = yield call(client.check, code, id=created.id)
    assert (later.valid, later.status) == (False, "approved")

    fetched = yield poll(lambda: client.fetch(created.id),
                         lambda v: v.send_attempts[0].delivery == "delivered")
    assert (fetched.id, fetched.status, fetched.to) == (created.id, "approved", number)
    assert len(fetched.send_attempts) == 1

    with pytest.raises(NotFound):  # by number, only a pending verification is found
        yield call(client.check, code, to=number)
    second = yield call(client.create, number)
    assert second.id != created.id and second.status == "pending"
    code = yield pin(daemon, number, 2)
    by_number = yield call(client.check, code, to=number)
    assert (by_number.id, by_number.valid, by_number.status) == (second.id, True, "approved")


# -- typed errors ----------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_unknown_verification_is_not_found(daemon):
    """An unknown id, a malformed one, or another key's verification: NotFound, 404, errno 126."""
    number = "+33612345602"
    mine = VerifyClient(daemon.api, (yield make_key(daemon, "mine")))
    theirs = VerifyClient(daemon.api, (yield make_key(daemon, "theirs")))
    created = yield call(theirs.create, number)
    for method, args, kwargs in ((mine.fetch, (UNKNOWN_ID,), {}),
                                 (mine.fetch, ("not-an-id",), {}),
                                 (mine.check, ("123456",), {"id": UNKNOWN_ID}),
                                 (mine.fetch, (created.id,), {}),
                                 (mine.cancel, (created.id,), {})):
        with pytest.raises(NotFound) as missing:
            yield call(method, *args, **kwargs)
        assert (missing.value.status, missing.value.errno) == (404, 126), (method, args)
    assert (yield call(theirs.fetch, created.id)).status == "pending"


@pytest_twisted.inlineCallbacks
def test_key_rate_limits_requests(daemon):
    """With --rate-per-minute 2 the third request is RateLimited: 429, errno 122, retry_after."""
    client = VerifyClient(daemon.api, (yield make_key(daemon, "rate", rate_per_minute=2)))
    for _ in range(2):
        with pytest.raises(NotFound):
            yield call(client.fetch, UNKNOWN_ID)
    with pytest.raises(RateLimited) as limited:
        yield call(client.fetch, UNKNOWN_ID)
    assert (limited.value.status, limited.value.errno) == (429, 122)
    assert limited.value.retry_after is not None and limited.value.retry_after > 0


@pytest_twisted.inlineCallbacks
def test_key_daily_budget_limits_creates(daemon):
    """With --daily-budget 1 the second create is RateLimited (errno 123) and sends nothing."""
    number = "+33612345603"
    client = VerifyClient(daemon.api, (yield make_key(daemon, "budget", daily_budget=1)))
    yield call(client.create, number)
    with pytest.raises(RateLimited) as limited:
        yield call(client.create, number)
    assert (limited.value.status, limited.value.errno) == (429, 123)
    assert len(daemon.harness.smsc.received(number)) == 1


@pytest_twisted.inlineCallbacks
def test_idempotent_create_replays_and_conflicts(daemon):
    """The same Idempotency-Key replays the first answer without a second SMS; with another
    number it is InvalidRequest, 422, errno 124, and that number gets nothing."""
    number, other = "+33612345604", "+33612345605"
    client = VerifyClient(daemon.api, (yield make_key(daemon, "idem")))
    token = uuid.uuid4().hex
    first = yield call(client.create, number, idempotency_key=token)
    replayed = yield call(client.create, number, idempotency_key=token)
    assert replayed.id == first.id and replayed.to == number
    assert len(daemon.harness.smsc.received(number)) == 1
    with pytest.raises(InvalidRequest) as conflict:
        yield call(client.create, other, idempotency_key=token)
    assert (conflict.value.status, conflict.value.errno) == (422, 124)
    assert daemon.harness.smsc.received(other) == []


@pytest_twisted.inlineCallbacks
def test_cancel_ends_the_verification(daemon):
    """cancel -> status canceled; the right code afterwards answers canceled, valid False."""
    number = "+33612345606"
    client = VerifyClient(daemon.api, (yield make_key(daemon, "cancel")))
    created = yield call(client.create, number)
    code = yield pin(daemon, number)
    canceled = yield call(client.cancel, created.id)
    assert (canceled.id, canceled.status) == (created.id, "canceled")
    late = yield call(client.check, code, id=created.id)
    assert (late.valid, late.status) == (False, "canceled")
    assert (yield call(client.fetch, created.id)).status == "canceled"


# -- msisdnd verify ---------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_verify_cli_start_and_check(daemon):
    """`verify start` prints the verification as JSON; `verify check` exits 1 for a wrong
    code and 0 for the right one; an error prints its errno and exits 1."""
    number = "+33612345607"
    key = yield make_key(daemon, "cli")
    server = ("--server", daemon.api, "--api-key", key)

    started = yield cli("verify", "start", *server, number, "--locale", "fr")
    assert started.returncode == 0, started.stderr
    verification = json.loads(started.stdout)
    assert (verification["to"], verification["status"]) == (number, "pending")
    assert [a["carrier"] for a in verification["send_attempts"]] == ["fake"]
    code = yield pin(daemon, number)
    assert daemon.harness.smsc.received(number)[0].text.startswith("Votre code")  # --locale fr

    missed = yield cli("verify", "check", *server, verification["id"], wrong(code))
    assert missed.returncode == 1, missed.stderr
    assert json.loads(missed.stdout) == {"id": verification["id"], "status": "pending",
                                         "valid": False, "tries_left": 2}
    right = yield cli("verify", "check", *server, verification["id"], code)
    assert right.returncode == 0, right.stderr
    assert json.loads(right.stdout)["valid"] is True
    assert json.loads(right.stdout)["status"] == "approved"

    unknown = yield cli("verify", "check", *server, UNKNOWN_ID, "123456")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert "404" in unknown.stderr and "errno 126" in unknown.stderr

    env = {k: v for k, v in os.environ.items() if k != "MSISDND_API_KEY"}
    keyless = yield cli("verify", "start", "--server", daemon.api, number, env=env)
    assert keyless.returncode == 2 and "--api-key" in keyless.stderr


# -- the client stands alone ---------------------------------------------------------------

def test_client_module_needs_only_the_standard_library(tmp_path):
    """verify_client.py copied alone into a directory imports and works with only that
    directory and the standard library on sys.path (no Twisted, no msisdnd)."""
    import msisdnd.verify_client

    shutil.copy(msisdnd.verify_client.__file__, tmp_path / "verify_client.py")
    probe = f"""
import importlib.util, sys
sys.path.insert(0, {str(tmp_path)!r})
assert importlib.util.find_spec("twisted") is None, "twisted is reachable: not a clean path"
assert importlib.util.find_spec("msisdnd") is None, "msisdnd is reachable: not a clean path"
import verify_client
try:
    verify_client.VerifyClient("http://127.0.0.1:{free_port()}", "k", timeout=5).fetch("VE1")
except verify_client.Unavailable as error:
    assert error.status == 0
else:
    raise AssertionError("a closed port answered")
print(sorted(m for m in sys.modules if m.split(".")[0] in ("twisted", "msisdnd")))
"""
    # -I: no environment, no user site, no script directory; -S: no site-packages.
    result = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                            text=True, timeout=60, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
