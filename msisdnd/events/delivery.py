"""Webhook delivery: the event stream, posted at least once to each webhook.

One L{WebhookDelivery} service per webhook and daemon.  Each is a consumer
of its webhook's group: with N daemons, each entry is read by one of them
(C{XREADGROUP}), posted, and acknowledged once the receiver answered 2xx.
A non-2xx answer, a timeout or a refused connection leaves the entry
pending; the maintenance tick claims pending entries again (C{XCLAIM}) once
they have been idle for the next delay of L{RETRY_DELAYS} — entries of a
daemon that died mid-delivery too — and dead-letters an entry whose
attempts are spent.  Every attempt keeps the event's C{webhook-id} and is
signed afresh.

Blocking reads use a connection of their own, never the pool that serves
requests; one not answered L{READ_GRACE} seconds past its block is given up
and its connection made again.  The stream is trimmed below what every webhook still needs and
what is older than L{RETAIN} (kept so that an operator may replay it); a
webhook with more than C{max_backlog} events not yet delivered dead-letters
its oldest ones explicitly (and says so, in the log and the metrics), so
that the stream stays bounded without losing any.
"""

from __future__ import annotations

import base64
import hashlib
import json
from bisect import bisect_left
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from treq.client import HTTPClient

from msisdnd.events.config import WebhookConfig
from msisdnd.events.payloads import Payloads, owner_of
from msisdnd.events.signing import Signer
from msisdnd.state.events import Entry, EventStream

#: Seconds to wait before each retry: an event is tried 8 times over about
#: 27.6 hours (at once, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h),
#: then dead-lettered.  Each wait is stretched by a jitter of up to
#: L{JITTER} of itself, drawn from the event's id (so that every daemon
#: agrees on when an event is due, and events that failed together do not
#: come back together).  The delay after an attempt is never shorter than
#: the webhook's timeout plus a margin, so that a live daemon's delivery is
#: not claimed by another while it waits for the receiver.
RETRY_DELAYS = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
JITTER = 0.1
#: Events a webhook may have undelivered before it dead-letters the oldest.
MAX_BACKLOG = 100_000
#: Seconds delivered events stay in the stream, for replays.
RETAIN = 3600.0
#: Seconds past a webhook's timeout before another daemon may claim a delivery.
CLAIM_MARGIN = 2.0
#: Seconds past its block after which a blocking read is given up and its
#: connection dropped: a Redis host that froze or was cut off sends no
#: reset, and the read would otherwise wait for ever.
READ_GRACE = 2.0
_MAX_ERROR = 200


class _Discard(Protocol):
    """Reads a receiver's answer body and throws it away; a body that has not
    ended within C{timeout} seconds has its connection dropped (a receiver
    that sends headers and then nothing must not hold a connection)."""

    def __init__(self, clock: IReactorTime, timeout: float):
        self._timer = clock.callLater(timeout, self._tooSlow)

    def _tooSlow(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: object = None) -> None:
        if self._timer.active():
            self._timer.cancel()


def pack(entry: Entry, reason: str, at_ms: int) -> bytes:
    """A dead letter: the entry (values base64), why, and when."""
    return json.dumps({"id": entry.id, "reason": reason, "at": at_ms,
                       "fields": {k: base64.b64encode(v).decode()
                                  for k, v in entry.fields.items()}}).encode()


def unpack(raw: bytes) -> tuple[str, dict[str, bytes], str]:
    """The id, fields and reason of a dead letter made by L{pack}."""
    letter = json.loads(raw)
    return (letter["id"], {k: base64.b64decode(v) for k, v in letter["fields"].items()},
            letter.get("reason", ""))


#: Upper bounds (seconds) of the delivery-latency histogram's buckets.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class DeliveryCounters:
    """What a webhook's deliveries did, for metrics.

    @ivar outcomes: attempts by outcome (C{delivered}, C{failed}), and
        entries C{dead_lettered} or C{skipped} (not for this webhook).
    @ivar latency_counts: attempts by time to the receiver's answer, per
        bucket of L{LATENCY_BUCKETS} (and one more for slower).
    @ivar backlog: entries this webhook has not delivered yet (last seen).
    @ivar over_bound: the stream was over its bound when last looked at.
    """

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {"delivered": 0, "failed": 0, "dead_lettered": 0,
                                         "skipped": 0}
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.backlog = 0
        self.over_bound = False

    def observe(self, seconds: float) -> None:
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds


class _QuietClientFactory(_HTTP11ClientFactory):
    """Twisted's per-connection HTTP client factory, without a log line for
    each connection it starts and stops."""

    noisy = False


def http_client(reactor: IReactorTime, persistent_per_host: int = 16) -> HTTPClient:
    """The webhooks' HTTP client: TLS verified (Twisted's browser-like policy),
    connections kept per receiver for a batch's concurrency (treq's default
    pool keeps two, so most deliveries paid a new connection), and no log
    line per connection."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = persistent_per_host
    pool._factory = _QuietClientFactory  # a private attribute: Twisted has no public switch
    return HTTPClient(Agent(reactor, pool=pool))


class WebhookDelivery(Service):
    """Delivers the event stream to one webhook.

    @param connect: makes the connection the blocking reads use (a
        Deferred firing with a txredisapi connection).
    @param http: posts a delivery: C{http.request(method, url, data=,
        headers=, timeout=, allow_redirects=False)}, as treq does.
    @param consumer: this daemon's name in the webhook's group.
    """

    log = Logger()

    def __init__(self, webhook: WebhookConfig, stream: EventStream, payloads: Payloads,
                 connect: Callable[[], Deferred], http: Any,
                 clock: IReactorTime, consumer: str, *,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS, block_ms: int = 2000,
                 batch: int = 16, max_backlog: int = MAX_BACKLOG,
                 maintain_every: float = 1.0, claim_margin: float = CLAIM_MARGIN,
                 webhooks: frozenset[str] | None = None):
        self.webhook = webhook
        #: Every configured webhook's name: the groups the stream is kept for.
        self.webhooks = webhooks if webhooks is not None else frozenset({webhook.name})
        self.group = webhook.name
        self.stream = stream
        self.payloads = payloads
        self.connect = connect
        self.http = http
        self.clock = clock
        self.consumer = consumer
        self.retry_delays = tuple(max(d, webhook.timeout + claim_margin) for d in retry_delays)
        self.block_ms = block_ms
        self.batch = batch
        self.max_backlog = max_backlog
        self.signer = Signer(webhook.secrets)
        self.counters = DeliveryCounters()
        self._maintain = task.LoopingCall(self.maintain)
        self._maintain.clock = clock
        self._maintain_every = maintain_every
        self._connection: Any = None
        self._loop: Deferred | None = None
        self._inflight: dict[str, Deferred] = {}
        self._ticks = 0
        self._down = False

    # -- service -------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._loop = self._run()
        self._maintain.start(self._maintain_every, now=False)

    @inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._maintain.running:
            self._maintain.stop()
        if self._connection is not None:
            yield self._connection.disconnect()
        if self._loop is not None:
            yield self._loop
        if self._inflight:
            yield DeferredList(list(self._inflight.values()))

    # -- reading new entries -------------------------------------------------

    @inlineCallbacks
    def _run(self):
        while self.running:
            try:
                if self._connection is None:
                    self._connection = yield self.connect()
                    yield self.stream.ensureGroup(self.group)
                entries = yield EventStream.read(
                    self._connection, self.group, self.consumer, self.batch, self.block_ms,
                ).addTimeout(self.block_ms / 1000 + READ_GRACE, self.clock)
            except Exception as e:
                if not self.running:
                    return
                self._redisDown(e)
                connection, self._connection = self._connection, None
                if connection is not None:
                    # A refusal (a demoted master's READONLY) leaves it open.
                    connection.disconnect()
                yield task.deferLater(self.clock, 1.0, lambda: None)
                continue
            self._redisBack()
            yield DeferredList([self._deliver(entry) for entry in entries])

    def _redisDown(self, error: Exception) -> None:
        if not self._down:
            self._down = True
            self.log.warn("Webhook {webhook}: cannot read events from Redis ({why}); retrying",
                          webhook=self.group, why=str(error)[:_MAX_ERROR])

    def _redisBack(self) -> None:
        if self._down:
            self._down = False
            self.log.info("Webhook {webhook}: reading events again", webhook=self.group)

    # -- one delivery ----------------------------------------------------------

    def _deliver(self, entry: Entry) -> Deferred:
        d = self._attempt(entry)
        self._inflight[entry.id] = d
        d.addBoth(lambda result: self._inflight.pop(entry.id, None) and result)
        return d

    @inlineCallbacks
    def _attempt(self, entry: Entry):
        only = entry.fields.get("only")
        name = owner_of(entry)
        if (only is not None and only.decode() != self.group) \
                or not self.webhook.wants(entry.type, name):
            self.counters.outcomes["skipped"] += 1
            yield self.stream.ack(self.group, [entry.id])
            return
        body = self.payloads.build(entry, self.webhook, name)
        if body is None:
            yield self._deadLetter(entry, "the event's sealed number no longer opens")
            return
        now = self.clock.seconds()
        headers = self.signer.headers(f"msg_{entry.id}", body, now)
        headers.update({"content-type": "application/json", "user-agent": "msisdnd-webhooks"})
        try:
            response = yield self.http.request(
                "POST", self.webhook.url, data=body,
                headers={k: [v] for k, v in headers.items()}, timeout=self.webhook.timeout,
                allow_redirects=False)
            # The status decides; the body is read and thrown away on the side.
            response.deliverBody(_Discard(self.clock, self.webhook.timeout))
            code = response.code
            error = None if 200 <= code < 300 else f"HTTP {code}"
        except Exception as e:
            error = f"{type(e).__name__}: {e}"[:_MAX_ERROR]
        self.counters.observe(self.clock.seconds() - now)
        now_ms = int(self.clock.seconds() * 1000)
        if error is None:
            self.counters.outcomes["delivered"] += 1
            yield self.stream.ack(self.group, [entry.id])
            yield self.stream.recordSuccess(self.group, now_ms)
            return
        self.counters.outcomes["failed"] += 1
        self.log.info("Webhook {webhook}: {event} {id} not delivered: {why}",
                      webhook=self.group, event=entry.type, id=entry.id, why=error)
        yield self.stream.recordError(self.group, error, now_ms)

    @inlineCallbacks
    def _deadLetter(self, entry: Entry, reason: str):
        now_ms = int(self.clock.seconds() * 1000)
        yield self.stream.deadLetter(self.group, entry, reason, now_ms,
                                     pack(entry, reason, now_ms))
        self.counters.outcomes["dead_lettered"] += 1  # counted once it is kept
        self.log.warn("Webhook {webhook}: {event} {id} dead-lettered: {why}",
                      webhook=self.group, event=entry.type, id=entry.id, why=reason)

    # -- retries, trimming, the bound ------------------------------------------

    @inlineCallbacks
    def maintain(self):
        """Retry what is due, dead-letter what is spent, trim, watch the bound.

        Never fails: a Redis outage is the read loop's to report.
        """
        if self._connection is None:
            return
        try:
            yield self._retry()
            self._ticks += 1
            if self._ticks % 10 == 1:
                yield self._bound()
                yield self.stream.trim(int((self.clock.seconds() - RETAIN) * 1000),
                                       self.webhooks)
        except Exception as e:
            self.log.debug("Webhook {webhook}: maintenance skipped: {why}",
                           webhook=self.group, why=str(e))

    def _wait_ms(self, entry_id: str, deliveries: int) -> int:
        """How long an entry delivered C{deliveries} times waits before the next try."""
        spread = int.from_bytes(hashlib.blake2b(entry_id.encode(), digest_size=2).digest(),
                                "big") / 0xFFFF
        return int(self.retry_delays[deliveries - 1] * (1 + JITTER * spread) * 1000)

    @inlineCallbacks
    def _retry(self):
        shortest = int(min(self.retry_delays) * 1000)
        due, spent = [], []
        for p in (yield self.stream.pending(self.group, shortest, 100)):
            if p.id in self._inflight:
                continue
            if p.deliveries > len(self.retry_delays):
                spent.append(p.id)
            else:
                wait = self._wait_ms(p.id, p.deliveries)
                if p.idle_ms >= wait:
                    due.append((p.id, wait))
        for entry_id, idle in due:
            for entry in (yield self.stream.claim(self.group, self.consumer, [entry_id], idle)):
                self._deliver(entry)
        if spent:
            for entry in (yield self.stream.claim(self.group, self.consumer, spent, shortest)):
                yield self._deadLetter(entry, f"not delivered after {len(self.retry_delays) + 1}"
                                              " attempts")

    @inlineCallbacks
    def _bound(self):
        groups = yield self.stream.groups()
        orphans = sorted(set(groups) - self.webhooks)
        if orphans and self._ticks == 1:
            self.log.warn("Event groups of no configured webhook: {groups} (the stream is "
                          "trimmed without them; remove them with XGROUP DESTROY ms:ev NAME)",
                          groups=", ".join(orphans))
        mine = groups.get(self.group, {})
        self.counters.backlog = (mine.get("lag") or 0) + mine.get("pending", 0)
        over = self.counters.backlog - self.max_backlog
        self.counters.over_bound = over > 0
        if over <= 0:
            return
        self.log.warn("Webhook {webhook}: {backlog} events undelivered, over the bound of "
                      "{bound}; dead-lettering the oldest {over}", webhook=self.group,
                      backlog=self.counters.backlog, bound=self.max_backlog, over=over)
        taken = yield self.stream.pending(self.group, 0, min(over, 500))
        entries = yield self.stream.claim(self.group, self.consumer,
                                          [p.id for p in taken if p.id not in self._inflight], 0)
        if len(entries) < over:
            entries += (yield self.stream.readNow(self.group, self.consumer,
                                                  min(over - len(entries), 500)))
        for entry in entries:
            yield self._deadLetter(entry, "over the bound of undelivered events")
