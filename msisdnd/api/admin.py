"""The admin listener: the status page (C{/}), C{/metrics} (Prometheus),
C{/binds} and C{/health} (JSON), and the actions of
L{msisdnd.api.admin_actions} (behind a token)."""

from __future__ import annotations

import json
from typing import Callable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Site

from msisdnd.api.admin_actions import MAX_BODY, ActionsResource, AdminActions, Token
from msisdnd.api.request import limited
from msisdnd.api.status import StatusBoard
from msisdnd.api.status_page import render


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


class _StatusPage(Resource):
    """C{GET /}: the status page, from one snapshot of the board."""

    isLeaf = True

    def __init__(self, board: StatusBoard):
        super().__init__()
        self.board = board

    def render_GET(self, request) -> bytes:
        board = self.board
        snapshot = board.take()
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Security-Policy",
                          b"default-src 'none'; style-src 'unsafe-inline'")
        return render(snapshot, board.recent(snapshot, 60), board.recent(snapshot, 3600))


class UnloggedSite(Site):
    """A site that writes no access log line: the admin listener's scrapes
    (every few seconds, forever) and the dev fake SMSC's pages (whose URLs
    hold phone numbers) would drown the log."""

    noisy = False

    def log(self, request) -> None:
        pass


def admin_site(registry: CollectorRegistry, board: StatusBoard,
               health: Callable[[], object] | None = None,
               actions: AdminActions | None = None,
               tokens: Callable[[], Sequence[Token]] = tuple,
               show_version: bool = True) -> Site:
    """The admin site: the status page and C{/binds} from the C{board}'s
    snapshots, the metrics C{registry} (whose collector reads the same
    board), and the C{health} detail the public heartbeat keeps to two
    booleans; with C{actions}, the actions too, for the bearer C{tokens}
    (read each time: a reload may change them); without a C{Server} header
    unless C{show_version} (C{[http] show_version})."""
    root = Resource()
    root.putChild(b"", _StatusPage(board))
    if actions is not None:
        resource = ActionsResource(actions, tokens)
        for path in (b"carriers", b"reload", b"log-level"):
            root.putChild(path, resource)
    root.putChild(b"metrics", _MetricsResource(registry))
    root.putChild(b"binds", _JSONResource(lambda: board.take().binds_json()))
    if health is not None:
        root.putChild(b"health", _JSONResource(health))
    # No body is buffered past MAX_BODY.
    return UnloggedSite(root, requestFactory=limited(MAX_BODY, show_version))
