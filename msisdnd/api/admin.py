"""The admin listener: C{/metrics} (Prometheus), C{/binds} and C{/health}
(JSON), and the actions of L{msisdnd.api.admin_actions} (behind a token)."""

from __future__ import annotations

import json
from typing import Callable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Site

from msisdnd.api.admin_actions import ActionsResource, AdminActions, Token


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
               health: Callable[[], object] | None = None,
               actions: AdminActions | None = None,
               tokens: Callable[[], Sequence[Token]] = tuple) -> Site:
    """The admin site over the metrics C{registry}, the C{binds} snapshot and
    the C{health} detail the public heartbeat keeps to two booleans; with
    C{actions}, the actions too, for the bearer C{tokens} (read each time:
    a reload may change them)."""
    root = Resource()
    if actions is not None:
        resource = ActionsResource(actions, tokens)
        for path in (b"carriers", b"reload", b"log-level"):
            root.putChild(path, resource)
    root.putChild(b"metrics", _MetricsResource(registry))
    root.putChild(b"binds", _JSONResource(binds))
    index = {"metrics": "/metrics", "binds": "/binds"}
    if health is not None:
        root.putChild(b"health", _JSONResource(health))
        index["health"] = "/health"
    root.putChild(b"", _JSONResource(lambda: index))
    return UnloggedSite(root)
