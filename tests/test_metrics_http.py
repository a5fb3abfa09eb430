"""The HTTP request metrics: each finished request counted by route and status, timed by route."""

from __future__ import annotations

from types import SimpleNamespace

from msisdnd.api.metrics import Metrics
from msisdnd.api.status import Snapshot


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
