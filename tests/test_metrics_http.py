"""The HTTP request metrics: each finished request counted by route and status, timed by route."""

from __future__ import annotations

from types import SimpleNamespace

import pytest_twisted

from msisdnd.api.metrics import ROUTES, Metrics
from msisdnd.api.status import Snapshot

from conftest import wait_until
from gateway import raw_request


def _snapshot() -> Snapshot:
    return Snapshot(taken=0.0, started=0.0, version="x", environment="test", redis={},
                    redis_errors=0, carriers=[], binds=[], readings=[], unserved=[],
                    failovers={}, verifications={}, mo_verifications={}, mcc_mismatches=0,
                    receipt_states={})


def test_requests_counted_by_route_and_status_and_timed_by_route():
    metrics = Metrics(_snapshot)
    done = [(b"/sms/verify_code", 200, 0.01), (b"/sms/verify_code", 200, 0.02),
            (b"/sms/verify_code", 400, 0.5), (b"/v2/verifications/abc", 200, 0.03),
            (b"/nowhere", 404, 0.001), (b"/elsewhere", 404, 0.002)]
    for path, code, seconds in done:
        metrics.requestDone(SimpleNamespace(path=path, code=code), seconds)
    value = metrics.registry.get_sample_value
    assert value("msisdnd_http_requests_total",
                 {"route": "/sms/verify_code", "status": "200"}) == 2
    assert value("msisdnd_http_requests_total",
                 {"route": "/sms/verify_code", "status": "400"}) == 1
    assert value("msisdnd_http_requests_total",
                 {"route": "/v2/verifications/{id}", "status": "200"}) == 1
    assert value("msisdnd_http_requests_total", {"route": "other", "status": "404"}) == 2
    assert value("msisdnd_http_request_seconds_count", {"route": "/sms/verify_code"}) == 3
    assert abs(value("msisdnd_http_request_seconds_sum", {"route": "/sms/verify_code"})
               - 0.53) < 1e-9


@pytest_twisted.inlineCallbacks
def test_a_strangers_paths_and_methods_make_no_new_labels(gateway):
    """Hundreds of distinct paths, spellings and methods over real HTTP: the request
    metrics' label sets stay those of the known routes, C{other}, and a few statuses."""
    metrics = Metrics(_snapshot)
    gateway.port.factory.onDone = metrics.requestDone
    targets = [b"/x%d" % i for i in range(150)] + [
        b"/v2/verifications/VE%d/cancel/x" % i for i in range(50)] + [
        b"//register", b"/regi%73ter", b"/%ff", b"/register?x=1", b"/register/", b"*"]
    for i, target in enumerate(targets):
        method = (b"GET", b"POST", b"PUT", b"get", b"OPTIONS", b"BREW")[i % 6]
        answered = yield gateway.raw(raw_request(method, target))
        assert answered.startswith(b"HTTP/1.1 "), answered
    yield wait_until(lambda: gateway.port.factory.active == 0)
    labels = {(s.labels["route"], s.labels["status"])
              for family in metrics.registry.collect() if family.name == "msisdnd_http_requests"
              for s in family.samples if s.name == "msisdnd_http_requests_total"}
    assert sum(metrics.registry.get_sample_value("msisdnd_http_requests_total", dict(
        route=route, status=status)) for route, status in labels) >= len(targets) - 1
    assert {route for route, _ in labels} <= ROUTES | {"other", "/v2/verifications/{id}"}
    assert len(labels) <= 12, labels


@pytest_twisted.inlineCallbacks
def test_a_client_that_left_before_the_answer_is_not_counted_a_success(gateway):
    """A client hangs up while /register waits: the request is counted with status 499
    (nginx's "client closed request"), not as the 200 Twisted's request starts with."""
    metrics = Metrics(_snapshot)
    gateway.port.factory.onDone = metrics.requestDone
    yield gateway.hangUpWhileRegistering()
    value = metrics.registry.get_sample_value
    assert value("msisdnd_http_requests_total", {"route": "/register", "status": "200"}) is None
    assert value("msisdnd_http_requests_total", {"route": "/register", "status": "499"}) == 1
    assert value("msisdnd_http_request_seconds_count", {"route": "/register"}) == 1
