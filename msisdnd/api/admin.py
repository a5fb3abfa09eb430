"""The admin listener: C{/metrics} (Prometheus) and C{/binds} (JSON)."""

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


def admin_site(registry: CollectorRegistry, binds: Callable[[], object]) -> Site:
    """The admin site over the metrics C{registry} and the C{binds} snapshot."""
    root = Resource()
    root.putChild(b"metrics", _MetricsResource(registry))
    root.putChild(b"binds", _JSONResource(binds))
    root.putChild(b"", _JSONResource(lambda: {"metrics": "/metrics", "binds": "/binds"}))
    site = Site(root)
    site.noisy = False
    return site
