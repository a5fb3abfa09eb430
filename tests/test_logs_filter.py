"""The log observer drops Twisted ClientService's anonymous retry line (the
SMPP binds and the Redis pool both use ClientService; they say it by name
themselves) and keeps everything else."""

from __future__ import annotations

import io

from twisted.application.internet import ClientService
from twisted.internet.defer import fail
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import Logger, globalLogPublisher

from msisdnd import logs


class _Refused:
    def connect(self, factory):
        return fail(ConnectionRefusedError())


def test_clientservices_retry_line_is_dropped_and_ours_kept():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    clock = Clock()
    service = ClientService(_Refused(), Factory.forProtocol(Protocol), clock=clock,
                            retryPolicy=lambda attempt: 1.0)
    try:
        service.startService()
    finally:
        globalLogPublisher.removeObserver(events.append)
        service.stopService()
    retries = [e for e in events if "Scheduling retry" in e.get("log_format", "")]
    assert retries, "Twisted no longer logs its retry line this way: revisit msisdnd.logs"
    out = io.StringIO()
    observe = logs.observer(out)
    for event in retries:
        observe(event)
    assert out.getvalue() == ""
    Logger(observer=observe).warn("Carrier {carrier} is down: {why}", carrier="fake",
                                  why="connection refused")
    assert "Carrier fake is down: connection refused" in out.getvalue()


def test_txredisapis_line_per_failed_master_lookup_is_dropped():
    """txredisapi logs (legacy log.msg) each failed lookup through the
    sentinels; the Redis watch says it once, by name."""
    import inspect

    import txredisapi
    from twisted.python import log

    assert logs._SENTINEL_LOOKUP in inspect.getsource(txredisapi), \
        "txredisapi no longer words its lookup failure this way: revisit msisdnd.logs"
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        log.msg(logs._SENTINEL_LOOKUP + ": no master")
        log.msg("txredisapi: something else")
    finally:
        globalLogPublisher.removeObserver(events.append)
    out = io.StringIO()
    observe = logs.observer(out)
    for event in events:
        observe(event)
    logs.flush()  # info lines are held for a batch
    text = out.getvalue()
    assert "Can't get address" not in text and "txredisapi: something else" in text, text
