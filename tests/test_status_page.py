"""The admin listener's status page: rendered by a real headless Chromium from a
running daemon, and escaped, self-contained HTML.

The browser test skips (saying why) only where no Chromium can be had; where
one is on the PATH and does not render the page, it fails.  `.ci/run`
installs Debian's `chromium` when it runs as root with apt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from html.parser import HTMLParser

import pytest
import pytest_twisted
from twisted.internet import threads

from msisdnd.api.status import Snapshot
from msisdnd.sms.status import CarrierReading
from msisdnd.api.status_page import render

from conftest import wait_until
from test_daemon import run_daemon

FAST_DOWN = """
    reconnect_grace = 0.3
"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Rows(HTMLParser):
    """The page's carrier and bind rows (their data- attributes), and its text."""

    def __init__(self):
        super().__init__()
        self.rows: dict[tuple[str, str], str] = {}
        self.text: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        for kind in ("carrier", "bind"):
            if tag == "tr" and f"data-{kind}" in attrs:
                self.rows[kind, attrs[f"data-{kind}"]] = attrs.get("data-state")

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Rows:
    rows = _Rows()
    rows.feed(html)
    return rows


@pytest.fixture
def chromium():
    path = _chromium()
    if path is None:
        reason = ("no chromium on the PATH (install Debian's chromium: "
                  "apt-get install chromium; .ci/run does it as root)")
        print(f"SKIPPED: {reason}", file=sys.stderr)
        pytest.skip(reason)
    return path


@pytest.fixture
def fast_down_daemon(smsc_factory, redis_server, tmp_path):
    yield from run_daemon(tmp_path, smsc_factory(), redis_server, carrier=FAST_DOWN)


def _browse(chromium: str, tmp_path, url: str, *options: str) -> str:
    """Run headless Chromium on C{url} with C{options}; its stdout.  A Chromium
    that exits non-zero fails the test (with its stderr)."""
    command = [chromium, "--headless", "--disable-gpu", "--no-first-run",
               "--no-default-browser-check", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", *options, url]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-3000:]}"
    return done.stdout


def _look(chromium: str, tmp_path, url: str, name: str) -> _Rows:
    """The rendered DOM of the page, and a screenshot of it as C{name}.png
    (one Chromium run does both)."""
    shot = tmp_path / f"{name}.png"
    dom = _browse(chromium, tmp_path, url, "--dump-dom", f"--screenshot={shot}",
                  "--window-size=1280,1100", "--hide-scrollbars")
    rows = _parse(dom)
    assert "msisdnd" in "".join(rows.text), f"chromium rendered no status page:\n{dom[:2000]}"
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", \
        "chromium wrote no screenshot"
    return rows


def _carrier_state(admin: str) -> str:
    import json

    with urllib.request.urlopen(admin + "/binds", timeout=5) as resp:
        return json.load(resp)["carriers"][0]["state"]


@pytest_twisted.inlineCallbacks
def test_chromium_shows_the_carrier_up_then_down(chromium, fast_down_daemon, tmp_path):
    running = fast_down_daemon
    page = running.admin + "/"
    yield wait_until(lambda: _carrier_state(running.admin) == "up", timeout=10, interval=0.05)
    rows = yield threads.deferToThread(_look, chromium, tmp_path, page, "status-up")
    assert rows.rows[("carrier", "fake")] == "up"
    assert rows.rows[("bind", "fake/0")] == "bound"
    assert "script" not in rows.tags
    text = " ".join(rows.text)
    assert "Redis" in text and "/metrics" in text and "production" in text

    yield running.harness.stop()
    yield wait_until(lambda: _carrier_state(running.admin) == "down", timeout=10, interval=0.05)
    rows = yield threads.deferToThread(_look, chromium, tmp_path, page, "status-down")
    assert rows.rows[("carrier", "fake")] == "down"
    assert rows.rows[("bind", "fake/0")] in ("connecting", "binding")
    assert "connection refused" in " ".join(rows.text) or "session lost" in " ".join(rows.text)
    print(f"screenshots: {tmp_path / 'status-up.png'}, {tmp_path / 'status-down.png'}")


def test_the_page_is_served_as_html_with_the_admin_urls(fast_down_daemon):
    daemon = fast_down_daemon
    with urllib.request.urlopen(daemon.admin + "/", timeout=5) as resp:
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        html = resp.read().decode()
    rows = _parse(html)
    assert rows.rows[("carrier", "fake")] == "up"
    assert '<meta http-equiv="refresh"' in html
    for url in ("/metrics", "/binds", "/health"):
        assert f'href="{url}"' in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    with urllib.request.urlopen(daemon.admin + "/binds", timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/json"


def _snapshot(**changes) -> Snapshot:
    values = dict(
        taken=1000.0, started=100.0, version="1.0", environment="<b>prod</b>",
        redis={"state": "up", "since": 100.0, "address": "127.0.0.1:6379"}, redis_errors=0,
        carriers=[{"name": "c<1>", "state": "down", "since": "s", "down_since": "d",
                   "reconnecting_since": None, "queue_depth": 2,
                   "last_error": "<script>alert(1)</script>"}],
        binds=[{"name": "c<1>/0", "mode": "transceiver", "state": "connecting", "since": "s",
                "in_flight": 0, "window": 10, "queue_depth": 2, "last_enquire_link_rtt": None,
                "reconnects": 3, "last_bind_status": "ESME_RINVPASWD",
                "last_error": "bind refused: ESME_RINVPASWD"}],
        readings=[CarrierReading("c<1>", False, 2, {"ESME_ROK": 5, "ESME_RTHROTTLED": 1},
                                 (0,), 0.0, 0, 0, 0, 30.0)],
        unserved=["default"], failovers={}, verifications={("sms/mt", "started"): 7},
        mo_verifications={"handled": 0, "dropped": 0}, mcc_mismatches=0, receipt_states={},
        refusals={"ip_sends": 4}, blocks={"prefix": 1}, unblocks=0,
        webhooks=[{"name": "hook", "outcomes": {"delivered": 3}, "latency_counts": (0,),
                   "latency_sum": 0.0, "backlog": 9, "over_bound": False}])
    values.update(changes)
    return Snapshot(**values)


def test_every_value_on_the_page_is_escaped():
    snapshot = _snapshot()
    html = render(snapshot, {("submit", "c<1>", "ESME_ROK"): 2},
                  {("verification", "sms/mt", "started"): 7}).decode()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>prod</b>" not in html and "&lt;b&gt;prod&lt;/b&gt;" in html
    rows = _parse(html)
    assert rows.rows[("carrier", "c<1>")] == "down"
    text = " ".join(rows.text)
    assert "ESME_ROK 2" in text  # the last minute
    assert "ESME_ROK 5, ESME_RTHROTTLED 1" in text  # since start
    assert "ip_sends 4" in text and "prefix 1" in text
    assert "15m 0s" in text  # uptime
    assert "Destinations without a live carrier" in text and "default" in text
