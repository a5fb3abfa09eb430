"""The shipped monitoring files (etc/prometheus/msisdnd-alerts.yml,
etc/grafana/msisdnd.json) name only metrics a running daemon exports."""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path

import pytest
import pytest_twisted
import yaml

from msisdnd import __version__
from msisdnd.cli import keygen

from conftest import free_port, wait_until
from test_daemon import Running, heartbeat_ok, start, write_config

REPO = Path(__file__).resolve().parent.parent
ALERTS = REPO / "etc" / "prometheus" / "msisdnd-alerts.yml"
DASHBOARD = REPO / "etc" / "grafana" / "msisdnd.json"
#: Series Prometheus makes itself for every scrape target.
PROMETHEUS_OWN = {"up"}
_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "inf", "nan"}
_NAME = r"[A-Za-z_:][A-Za-z0-9_:]*"
#: The series a metric family of each type exposes, from the name on its TYPE
#: line (prometheus-client writes a counter's with its _total).
_SERIES = {"counter": ("",), "gauge": ("",), "untyped": ("",), "info": ("",),
           "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana variable query) reads."""
    names = set(re.findall(rf"label_values\(\s*({_NAME})\s*,", expr))
    expr = re.sub(r"label_values\([^)]*\)", "", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                     # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)                               # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                              # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    for match in re.finditer(_NAME, expr):
        if match.start() and (expr[match.start() - 1].isdigit() or expr[match.start() - 1] == "."):
            continue                                                    # 1e3, 0.5e
        if expr[match.end():].lstrip().startswith("("):
            continue                                                    # a function
        if match.group() not in _NOT_METRICS:
            names.add(match.group())
    return names


def exported_series(exposition: str) -> set[str]:
    """Every series name the Prometheus text exposition declares or holds."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            names |= {family + suffix for suffix in _SERIES[kind]}
        elif line and not line.startswith("#"):
            names.add(re.match(_NAME, line).group())
    return names


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
              for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_metric_names_finds_the_metrics_and_only_them():
    assert metric_names('sum by (carrier, le) (rate(msisdnd_a_bucket{x="y{z}", le!="1"}'
                        '[$__rate_interval])) / on(instance) group_left(version) b_info '
                        '> 0.5e1 and time() - c offset 5m') == {"msisdnd_a_bucket", "b_info", "c"}
    assert metric_names("label_values(msisdnd_build_info, instance)") == {"msisdnd_build_info"}


def test_exported_series_expands_each_family_by_its_type():
    text = ("# TYPE a_total counter\n# TYPE h histogram\n# TYPE g gauge\n"
            'h_bucket{le="+Inf"} 1.0\nother 2\n')
    assert exported_series(text) == {"a_total", "h_bucket", "h_sum", "h_count", "g", "other"}


def test_the_files_cover_what_operators_alert_on():
    alerts = alert_expressions()
    for needed in ("MsisdndCarrierDown", "MsisdndSubmitErrors", "MsisdndCarrierQueueNearFull",
                   "MsisdndRedisErrors", "MsisdndWebhookDeadLetters", "MsisdndPumpingBlocks"):
        assert needed in alerts
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "msisdnd" and len(dashboard["panels"]) >= 10
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


@pytest.fixture
def daemon_with_a_webhook(smsc_factory, redis_server, tmp_path):
    """A running daemon with one [[webhook]] (its metric families exist only then)."""
    harness = smsc_factory()
    api_port, admin_port = free_port(), free_port()
    secret = tmp_path / "webhook-secret"
    with open(os.devnull, "w") as quiet:
        keygen(None, None, quiet, webhook_secret_file=str(secret))
    config = write_config(tmp_path, harness.portNumber, redis_server.port, api_port, admin_port,
                          tables=f'[[webhook]]\nname = "rp"\nurl = "http://127.0.0.1:{free_port()}/"'
                                 f'\nsecret_file = "{secret}"\nallow_insecure = true\n')
    process, log_path = start(config, tmp_path, logger=False)
    running = Running(process, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{admin_port}",
                      log_path)
    try:
        pytest_twisted.blockon(wait_until(lambda: heartbeat_ok(running), timeout=30,
                                          interval=0.1))
        yield running
    finally:
        process.terminate()
        pytest_twisted.blockon(wait_until(lambda: process.poll() is not None, timeout=20,
                                          interval=0.05))


def test_every_metric_the_files_name_is_exported_by_a_running_daemon(daemon_with_a_webhook):
    with urllib.request.urlopen(daemon_with_a_webhook.admin + "/metrics", timeout=5) as resp:
        exposition = resp.read().decode()
    exported = exported_series(exposition) | PROMETHEUS_OWN
    for name, expr in alert_expressions().items():
        names = metric_names(expr)
        assert names and names <= exported, (name, names - exported)
    for expr in dashboard_expressions():
        names = metric_names(expr)
        assert names and names <= exported, (expr, names - exported)
    assert re.search(rf'^msisdnd_build_info\{{.*version="{re.escape(__version__)}"', exposition,
                     re.M), exposition
    assert re.search(r'^msisdnd_build_info\{.*python="3\.\d+\.\d+"', exposition, re.M)
    for standard in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                     "process_open_fds", "process_start_time_seconds"):
        assert re.search(rf"^{standard} [0-9.e+]+$", exposition, re.M), standard
    assert 'msisdnd_carrier_queue_capacity{carrier="fake"} 1000.0' in exposition
