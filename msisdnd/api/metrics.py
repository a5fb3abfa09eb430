"""Prometheus metrics, read from the running parts when scraped.

The hot paths keep plain counters of their own (the carrier's sent and error
counts, the verifier's outcomes); this collector turns them into metric
families at scrape time, so a scrape costs the hot path nothing.  HTTP
requests are observed as they finish.
"""

from __future__ import annotations

import platform
import re
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from msisdnd import __version__
from msisdnd.api.status import Snapshot, Take
from msisdnd.sms.status import LATENCY_BUCKETS

#: The routes HTTP metrics are labelled with; anything else is "other".
ROUTES = frozenset({
    "/", "/__heartbeat__", "/__lbheartbeat__", "/__version__", "/api-specs", "/discover",
    "/register", "/unregister", "/sms/mt/verify", "/sms/resend_code", "/sms/verify_code",
    "/certificate/sign", "/.well-known/browserid", "/.well-known/jwks.json",
    "/.well-known/msisdnd-configuration", "/docs", "/v2/verifications",
    "/v2/verifications/check",
})
#: The status a request is counted with when its client left before the
#: answer (nginx's "client closed request").
CLIENT_LEFT = 499
#: Routes with an id in their path, labelled by their template.
_TEMPLATES = ((re.compile(r"/v2/verifications/[^/]+/cancel"), "/v2/verifications/{id}/cancel"),
              (re.compile(r"/v2/verifications/[^/]+"), "/v2/verifications/{id}"))


def route_of(path: str) -> str:
    """The label of a request path: a known route, a route template, or C{other}."""
    if path in ROUTES:
        return path
    for pattern, template in _TEMPLATES:
        if pattern.fullmatch(path):
            return template
    return "other"


def _buckets(bounds: Iterable[float], counts: list[int]) -> list[tuple[str, int]]:
    """Per-bucket counts (the last one past every bound) as cumulative Prometheus buckets."""
    cumulative, buckets = 0, []
    for bound, count in zip(bounds, counts):
        cumulative += count
        buckets.append((str(bound), cumulative))
    buckets.append(("+Inf", cumulative + counts[-1]))
    return buckets


class PartsCollector(Collector):
    """Carriers, binds, the verifier, the store and the webhooks, as metric
    families, from one L{Snapshot} per scrape (C{take})."""

    def __init__(self, take: Take, webhook_buckets: tuple[float, ...] = ()):
        self.take = take
        self.webhook_buckets = webhook_buckets

    def collect(self) -> Iterable:
        snapshot = self.take()
        yield from self._carriers(snapshot)
        yield from self._verifications(snapshot)
        if snapshot.refusals is not None:
            yield from self._limits(snapshot)
        if snapshot.webhooks:
            yield from self._webhooks(snapshot)

    def _carriers(self, snapshot: Snapshot) -> Iterable:
        up = GaugeMetricFamily("msisdnd_binds_up", "Bound sessions per carrier", labels=["carrier"])
        carrier_up = GaugeMetricFamily(
            "msisdnd_carrier_up", "1 while the carrier has a live bind, 0 while it is "
            "reconnecting or down", labels=["carrier"])
        since_submit = GaugeMetricFamily(
            "msisdnd_carrier_seconds_since_last_submit",
            "Seconds since the SMSC last accepted a submit_sm (absent before the first)",
            labels=["carrier"])
        failovers = CounterMetricFamily(
            "msisdnd_failovers", "Messages sent through another carrier than their first choice",
            labels=["carrier", "to"])
        window = GaugeMetricFamily("msisdnd_bind_window_in_use", "Outstanding requests per bind",
                                   labels=["carrier", "bind"])
        rtt = GaugeMetricFamily("msisdnd_bind_enquire_link_rtt_seconds",
                                "Last enquire_link round trip", labels=["carrier", "bind"])
        reconnects = CounterMetricFamily("msisdnd_bind_reconnects", "Sessions lost after binding",
                                         labels=["carrier", "bind"])
        queue = GaugeMetricFamily("msisdnd_carrier_queue_depth", "Parts waiting to be sent",
                                  labels=["carrier"])
        capacity = GaugeMetricFamily("msisdnd_carrier_queue_capacity",
                                     "Parts the carrier's queue holds at most (queue_size)",
                                     labels=["carrier"])
        no_permit = GaugeMetricFamily("msisdnd_binds_waiting_permit",
                                      "Binds waiting for a permit of their account (max_binds)",
                                      labels=["carrier"])
        outcomes = CounterMetricFamily("msisdnd_submit_outcomes", "submit_sm outcomes by status",
                                       labels=["carrier", "status"])
        latency = HistogramMetricFamily("msisdnd_submit_latency_seconds",
                                        "From send to the SMSC's acceptance", labels=["carrier"])
        mo = CounterMetricFamily("msisdnd_mo_received", "MO messages received", labels=["carrier"])
        junk = CounterMetricFamily("msisdnd_inbound_dropped",
                                   "deliver_sm/data_sm dropped as unusable", labels=["carrier"])
        receipts = CounterMetricFamily("msisdnd_receipts_received", "Delivery receipts received",
                                       labels=["carrier"])
        bound: dict[str, int] = {}
        for bind in snapshot.binds:
            carrier = bind["carrier"]
            bound[carrier] = bound.get(carrier, 0) + (bind["state"] == "bound")
            window.add_metric([carrier, bind["name"]], bind["in_flight"])
            reconnects.add_metric([carrier, bind["name"]], bind["reconnects"])
            if bind["last_enquire_link_rtt"] is not None:
                rtt.add_metric([carrier, bind["name"]], bind["last_enquire_link_rtt"])
        for reading in snapshot.readings:
            name = reading.name
            up.add_metric([name], bound.get(name, 0))
            carrier_up.add_metric([name], 1 if reading.up else 0)
            if reading.last_submit_age is not None:
                since_submit.add_metric([name], reading.last_submit_age)
            queue.add_metric([name], reading.queue_depth)
            capacity.add_metric([name], reading.queue_size)
            no_permit.add_metric([name], reading.waiting_permits)
            for status, count in reading.outcomes.items():
                outcomes.add_metric([name, status], count)
            latency.add_metric([name], _buckets(LATENCY_BUCKETS, list(reading.latency_counts)),
                               reading.latency_sum)
            mo.add_metric([name], reading.mo)
            receipts.add_metric([name], reading.receipts)
            junk.add_metric([name], reading.dropped)
        for (first, to), count in sorted(snapshot.failovers.items()):
            failovers.add_metric([first, to], count)
        yield from (up, carrier_up, since_submit, failovers, window, rtt, reconnects, queue,
                    capacity, no_permit, outcomes, latency, mo, receipts, junk)
        suspended = GaugeMetricFamily("msisdnd_carrier_suspended",
                                      "1 while an operator has the carrier suspended",
                                      labels=["carrier"])
        for reading in snapshot.readings:
            suspended.add_metric([reading.name], 1 if reading.suspended else 0)
        yield suspended

    def _verifications(self, snapshot: Snapshot) -> Iterable:
        verifications = CounterMetricFamily(
            "msisdnd_verifications", "Verification steps by method and outcome",
            labels=["method", "outcome"])
        for (method, outcome), count in sorted(snapshot.verifications.items()):
            verifications.add_metric([method, outcome], count)
        yield verifications
        silent = CounterMetricFamily("msisdnd_mo_verifications",
                                     "Silent-SMS requests answered or dropped", labels=["outcome"])
        for outcome, count in snapshot.mo_verifications.items():
            silent.add_metric([outcome], count)
        yield silent
        mismatches = CounterMetricFamily(
            "msisdnd_mcc_mismatches", "Sends whose client named an MCC not of the number's region")
        mismatches.add_metric([], snapshot.mcc_mismatches)
        yield mismatches
        states = CounterMetricFamily("msisdnd_receipts_by_state", "Delivery receipts by state",
                                     labels=["state"])
        for state, count in sorted(snapshot.receipt_states.items()):
            states.add_metric([state], count)
        yield states
        errors = CounterMetricFamily("msisdnd_redis_errors", "Redis calls that failed or timed out")
        errors.add_metric([], snapshot.redis_errors)
        yield errors

    def _limits(self, snapshot: Snapshot) -> Iterable:
        refused = CounterMetricFamily("msisdnd_limit_refusals", "Requests refused, by limit",
                                      labels=["limit"])
        for limit, count in sorted(snapshot.refusals.items()):
            refused.add_metric([limit], count)
        blocks = CounterMetricFamily("msisdnd_pumping_blocks",
                                     "Pumping-guard blocks set by this daemon", labels=["kind"])
        for kind, count in sorted((snapshot.blocks or {}).items()):
            blocks.add_metric([kind], count)
        unblocks = CounterMetricFamily("msisdnd_pumping_unblocks",
                                       "Pumping-guard blocks lifted by an operator")
        unblocks.add_metric([], snapshot.unblocks)
        yield from (refused, blocks, unblocks)

    def _webhooks(self, snapshot: Snapshot) -> Iterable:
        deliveries = CounterMetricFamily(
            "msisdnd_webhook_deliveries", "Webhook delivery attempts and entries, by outcome",
            labels=["webhook", "outcome"])
        latency = HistogramMetricFamily("msisdnd_webhook_delivery_seconds",
                                        "From posting an event to the receiver's answer",
                                        labels=["webhook"])
        backlog = GaugeMetricFamily("msisdnd_webhook_backlog",
                                    "Events not yet delivered to the webhook", labels=["webhook"])
        over = GaugeMetricFamily("msisdnd_webhook_stream_over_bound",
                                 "1 when the event stream is over its bound (dead-lettering)",
                                 labels=["webhook"])
        for webhook in snapshot.webhooks:
            name = webhook["name"]
            for outcome, count in sorted(webhook["outcomes"].items()):
                deliveries.add_metric([name, outcome], count)
            latency.add_metric([name], _buckets(self.webhook_buckets,
                                                list(webhook["latency_counts"])),
                               webhook["latency_sum"])
            backlog.add_metric([name], webhook["backlog"])
            over.add_metric([name], 1 if webhook["over_bound"] else 0)
        yield from (deliveries, latency, backlog, over)


class Metrics:
    """The daemon's registry: the parts' collector (over C{take}, a
    L{msisdnd.api.status.StatusBoard.take}), the HTTP histograms,
    C{msisdnd_build_info} (version, Python) and the standard C{process_*}
    metrics (CPU, memory, open files, start time; on Linux)."""

    def __init__(self, take: Take, webhook_buckets: tuple[float, ...] = ()):
        self.registry = CollectorRegistry()
        self.registry.register(PartsCollector(take, webhook_buckets))
        self.http_requests = Counter("msisdnd_http_requests", "HTTP requests by route and status",
                                     ["route", "status"], registry=self.registry)
        self.http_latency = Histogram("msisdnd_http_request_seconds", "HTTP request latency",
                                      ["route"], registry=self.registry)
        Info("msisdnd_build", "The running msisdnd", registry=self.registry).info(
            {"version": __version__, "python": platform.python_version()})
        ProcessCollector(registry=self.registry)
        #: The labelled children per (route, status), made on first use:
        #: C{labels()} costs more than the increment and the observation.
        #: Bounded: routes are L{ROUTES}, the templates and C{other}.
        self._children: dict[tuple[str, int], tuple] = {}

    def requestDone(self, request: object, seconds: float) -> None:
        """Count and time a request that ended: answered, or its client gone
        before the answer (status L{CLIENT_LEFT}; Twisted's code would still
        say 200)."""
        path = request.path.decode("latin-1") if isinstance(request.path, bytes) else "?"
        route = route_of(path)
        code = request.code if getattr(request, "finished", True) else CLIENT_LEFT
        key = (route, code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.http_requests.labels(route, str(code)),
                                              self.http_latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)
