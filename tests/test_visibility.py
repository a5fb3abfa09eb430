"""Carrier-down visibility, through the real daemon: a fake SMSC stopped and restarted.

The log says once that the carrier is down (naming it and why) and once that
it is back (with how long it was down); traffic failing over to the backup
carrier and returning is one line each; C{/binds}, C{/health}, C{msisdnd
binds} and the metrics say the same.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request

import pytest
import pytest_twisted

from msisdnd.device.client import MSISDNClient

from conftest import wait_until
from test_daemon import BIN, run_daemon, scrape

#: The fake carrier takes French numbers first (by MCC), "backup" next (by prefix).
BACKUP = """
    [[carrier]]
    name = "backup"
    host = "127.0.0.1"
    port = {port}
    system_id = "msisdnd"
    password = "pw"
    mt_sender = "msisdnd"
    prefixes = ["+33"]
    region = "FR"
    reconnect_delay_initial = 0.05
    reconnect_delay_max = 0.2
"""
FAKE = """
    mcc = ["208"]
    reconnect_grace = 0.3
"""


@pytest.fixture
def two_carriers(smsc_factory, redis_server, tmp_path):
    primary, backup = smsc_factory(), smsc_factory()
    for running in run_daemon(tmp_path, primary, redis_server, carrier=FAKE,
                              tables=BACKUP.format(port=backup.portNumber)):
        running.backup = backup
        yield running


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def _carrier(running, name: str, path: str = "/binds") -> dict:
    return next(c for c in _json(running.admin + path)["carriers"] if c["name"] == name)


def _lines(running, pattern: str) -> list[str]:
    return [line for line in running.log().splitlines() if re.search(pattern, line)]


@pytest_twisted.inlineCallbacks
def _send(running, number: str):
    """A verification code sent to C{number} (a French mobile, MCC 208)."""
    client = MSISDNClient(running.api)
    yield client.register()
    yield client.mtVerify(number, "208", short=True)


@pytest_twisted.inlineCallbacks
def test_a_carrier_down_and_back_is_told_once_with_its_reason_and_duration(two_carriers):
    running = two_carriers
    primary, backup = running.harness, running.backup
    yield wait_until(lambda: scrape(running.admin).get('msisdnd_carrier_up{carrier="backup"}')
                     == 1, timeout=10, interval=0.05)
    yield _send(running, "+33612345671")
    yield wait_until(lambda: primary.smsc.received("+33612345671"))
    metrics = scrape(running.admin)
    assert metrics['msisdnd_carrier_up{carrier="fake"}'] == 1
    assert metrics['msisdnd_carrier_seconds_since_last_submit{carrier="fake"}'] >= 0
    assert 'msisdnd_carrier_seconds_since_last_submit{carrier="backup"}' not in metrics

    port = primary.portNumber
    yield primary.stop()
    yield wait_until(lambda: _carrier(running, "fake")["state"] == "down", timeout=10,
                     interval=0.05)
    yield wait_until(lambda: _carrier(running, "fake")["last_error"] == "connection refused",
                     timeout=10, interval=0.05)
    (down,) = _lines(running, r"Carrier fake is down")
    assert re.search(r"Carrier fake is down: (connection refused|session lost: \w.*)", down), down
    assert _lines(running, r"fake/0: session lost: ")  # the bind says which session went
    assert not _lines(running, r"Scheduling retry")   # nor anonymous retries

    carrier = _carrier(running, "fake")
    (bind,) = [b for b in _json(running.admin + "/binds")["binds"] if b["carrier"] == "fake"]
    assert carrier["down_since"] and carrier["reconnecting_since"] is None
    assert bind["state"] in ("connecting", "binding") and bind["down_since"]
    assert bind["last_error"] == "connection refused" and bind["last_bind_status"] is None
    health = _carrier(running, "fake", "/health")
    assert (health["up"], health["down_since"]) == (False, carrier["down_since"])
    table = subprocess.run([os.path.join(BIN, "msisdnd"), "binds", "--admin", running.admin],
                           capture_output=True, text=True, timeout=30)
    assert f"carrier fake is down since {carrier['down_since']}: connection refused" \
        in table.stdout, table.stdout
    fake_row = next(line for line in table.stdout.splitlines() if line.startswith("fake "))
    assert fake_row.endswith("connection refused") and carrier["down_since"] in fake_row
    assert scrape(running.admin)['msisdnd_carrier_up{carrier="fake"}'] == 0

    # French traffic fails over to the backup: one line, counted.
    for number in ("+33612345672", "+33612345673"):
        yield _send(running, number)
        yield wait_until(lambda: backup.smsc.received(number))
    (failover,) = _lines(running, r"fails over")
    assert "Traffic for carrier fake fails over to backup: fake is down" in failover
    metrics = scrape(running.admin)
    assert metrics['msisdnd_failovers_total{carrier="fake",to="backup"}'] == 2

    primary.listen(port)
    yield wait_until(lambda: _carrier(running, "fake")["state"] == "up", timeout=10,
                     interval=0.05)
    (back,) = _lines(running, r"Carrier fake is back")
    seconds = float(re.search(r"is back after ([\d.]+) s down", back).group(1))
    assert seconds > 0
    assert len(_lines(running, r"Carrier fake is down")) == 1
    carrier = _carrier(running, "fake")
    assert carrier["down_since"] is None and carrier["last_error"] == "connection refused"
    assert scrape(running.admin)['msisdnd_carrier_up{carrier="fake"}'] == 1

    yield _send(running, "+33612345674")
    yield wait_until(lambda: primary.smsc.received("+33612345674"))
    (returned,) = _lines(running, r"Traffic returns")
    assert re.search(r"Traffic returns to carrier fake after [\d.]+ s", returned), returned
    assert scrape(running.admin)['msisdnd_failovers_total{carrier="fake",to="backup"}'] == 2
