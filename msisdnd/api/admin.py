"""The admin listener: C{/metrics} (Prometheus), C{/binds} and C{/health} (JSON)."""

from __future__ import annotations

import json
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Site


class _JSONResource(Resource):
    isLeaf = True

    def __init__(self, produce: Callable[[], object]):
        super().__init__()
        self.produce = produce

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(self.produce(), indent=2).encode()


class _MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry):
        super().__init__()
        self.registry = registry

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class UnloggedSite(Site):
    """A site that writes no access log line: the admin listener's scrapes
    (every few seconds, forever) and the dev fake SMSC's pages (whose URLs
    hold phone numbers) would drown the log."""

    noisy = False

    def log(self, request) -> None:
        pass


def admin_site(registry: CollectorRegistry, binds: Callable[[], object],
               health: Callable[[], object] | None = None) -> Site:
    """The admin site over the metrics C{registry}, the C{binds} snapshot and
    the C{health} detail the public heartbeat keeps to two booleans."""
    root = Resource()
    root.putChild(b"metrics", _MetricsResource(registry))
    root.putChild(b"binds", _JSONResource(binds))
    index = {"metrics": "/metrics", "binds": "/binds"}
    if health is not None:
        root.putChild(b"health", _JSONResource(health))
        index["health"] = "/health"
    root.putChild(b"", _JSONResource(lambda: index))
    return UnloggedSite(root)
