"""The API against its own OpenAPI document, on a real daemon and a real Redis.

Schemathesis reads C{/api-specs} from a C{twistd msisdnd} subprocess (its
built-in fake SMSC on loopback) and sends each operation generated requests,
device operations signed with Hawk (payload hash included) and backend ones
with an API key.  Every answer must be documented: no 5xx, a status code the
operation lists, its content type, a body and headers matching its schema.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import time
import urllib.request

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from msisdnd import hawk

from conftest import free_port
from test_daemon import BIN, start, write_config

#: Generated requests per operation: enough to reach every documented answer
#: of a small API, few enough for the test command's budget.
EXAMPLES = 40
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


class HawkAuth(requests.auth.AuthBase):
    """Sign each prepared request with a device session's Hawk credentials."""

    def __init__(self, token: str):
        self.credentials = hawk.derive_session(bytes.fromhex(token))

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        request.headers["Authorization"] = hawk.authorization_header(
            self.credentials, request.method, request.url, body,
            request.headers.get("Content-Type", ""), with_hash=bool(body))
        return request


class BearerAuth(requests.auth.AuthBase):
    def __init__(self, key: str):
        self.key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.key}"
        return request


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


@pytest.fixture(scope="module")
def running_daemon(redis_server, tmp_path_factory):
    """A daemon with its built-in fake SMSC; yields its API URL, a backend API
    key and its log file."""
    home = tmp_path_factory.mktemp("schema")
    api, smpp, smsc_http = free_port(), free_port(), free_port()
    config = write_config(
        home, smpp, redis_server.port, api, free_port(), redis_db=7,
        limits="ip_registrations_day = 10000000\nip_sends_day = 10000000\n",
        tables=f"""
            [dev]
            fake_smsc = true
            fake_smsc_smpp = "tcp:{smpp}:interface=127.0.0.1"
            fake_smsc_http = "tcp:{smsc_http}:interface=127.0.0.1"
        """)
    process, log_path = start(config, home)
    url = f"http://127.0.0.1:{api}"
    try:
        deadline = time.monotonic() + 30
        while _get(url + "/__heartbeat__") != 200:
            assert process.poll() is None and time.monotonic() < deadline, \
                pathlib.Path(log_path).read_text()
            time.sleep(0.1)
        created = subprocess.run(
            [os.path.join(BIN, "msisdnd"), "api-keys", "create", "--config", config,
             "--name", "schema", "--rate-per-minute", "100000", "--daily-budget", "0"],
            capture_output=True, text=True, check=True, cwd=str(home))
        key = created.stdout.strip().splitlines()[-1]  # shown once, on the last line
        yield {"url": url, "key": key, "log": pathlib.Path(log_path)}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def api_schema(running_daemon):
    loaded = schemathesis.openapi.from_url(running_daemon["url"] + "/api-specs")
    loaded.config.update(base_url=running_daemon["url"])
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented(case, running_daemon):
    security = case.operation.definition.raw.get("security") or []
    names = {name for requirement in security for name in requirement}
    auth = None
    if "hawk" in names:  # a session of its own: a generated /unregister ends one
        token = requests.post(running_daemon["url"] + "/register", timeout=10)
        auth = HawkAuth(token.json()["msisdnSessionToken"])
    elif "apiKey" in names:
        auth = BearerAuth(running_daemon["key"])
    case.call_and_validate(auth=auth, checks=CHECKS, timeout=15)


def test_the_daemon_logged_no_unhandled_error(running_daemon):
    """After the generated requests (this module's first test), the daemon's
    log holds no traceback: every odd request was answered on purpose."""
    text = running_daemon["log"].read_text()
    assert "Starting factory" in text or "listening" in text.lower(), text[:2000]
    assert "Traceback" not in text and "Unhandled" not in text, text[-4000:]
