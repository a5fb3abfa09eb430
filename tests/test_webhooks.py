"""Webhooks on the whole gateway: real Redis, the fake SMSC over TCP, a real
HTTP receiver on loopback, deliveries signed per Standard Webhooks.

Every event type fires once per cause; failures are retried with the same
webhook-id; a receiver that was down gets everything; two deliverers on one
Redis deliver each event once between them; a deliverer that died with
entries pending loses none; events wait in Redis across a restart.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import pytest_twisted
import txredisapi
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from twisted.internet import reactor, task, threads
from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

import treq
from msisdnd.events.config import WebhookConfig, new_secret
from msisdnd.events.delivery import WebhookDelivery, http_client, unpack
from msisdnd.events.payloads import Payloads
from msisdnd.state import keys
from msisdnd.state.api_keys import ApiKeys
from msisdnd.state.events import EventStream
from msisdnd.verification.settings import VerificationSettings

from conftest import wait_until
from gateway import start_gateway
from test_backend_api import call, check, create, make_key, wrong

NUMBER = "+33612345611"
SECRET = new_secret()
HTTP = http_client(reactor)  # the daemon's own client: persistent, quiet, TLS verified


class Receiver(Resource):
    """Records every POST; answers with the next of C{codes} (then 200), or
    holds the request open while C{hold} is set."""

    isLeaf = True

    def __init__(self, codes=()):
        super().__init__()
        self.codes = list(codes)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.hold = False
        self.held: list = []

    def render_POST(self, request):
        headers = {k.decode().lower(): v[0].decode()
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        self.received.append((headers, request.content.read()))
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        request.setResponseCode(self.codes.pop(0) if self.codes else 200)
        return b"ok"

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.received]

    def ids(self) -> list[str]:
        return [headers["webhook-id"] for headers, _ in self.received]


@pytest.fixture
def receiver():
    resource = Receiver()
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    resource.url = f"http://127.0.0.1:{port.getHost().port}/hooks"
    resource.port = port
    yield resource
    pytest_twisted.blockon(maybeDeferred(resource.port.stopListening))


@pytest.fixture
def events_gateway(redis_pool, tmp_path_factory):
    running = pytest_twisted.blockon(start_gateway(
        redis_pool, tmp_path_factory.mktemp("keys"), events=True, receipt_delay=0.0,
        settings=VerificationSettings(send_timeout=3.0, resend_cooldown=0)))
    yield running
    pytest_twisted.blockon(running.stop())
    pytest_twisted.blockon(running.smsc.stop())


def webhook(receiver, **overrides) -> WebhookConfig:
    return WebhookConfig(**{"name": "rp", "url": receiver.url, "secrets": (SECRET,),
                            "audience": "https://rp.example", "timeout": 1.0,
                            "allow_insecure": True, **overrides})


class Deliverers:
    """Starts deliverers for a gateway and stops them all at the end."""

    def __init__(self, gateway, redis_server):
        self.gateway = gateway
        self.redis_server = redis_server
        self.running: list[WebhookDelivery] = []

    def start(self, config: WebhookConfig, consumer: str = "a", redis_port: int | None = None,
              **kwargs) -> WebhookDelivery:
        """A deliverer whose blocking reads go to C{redis_port} (by default,
        the gateway's Redis)."""
        gateway = self.gateway
        store = gateway.store
        port = redis_port or self.redis_server.port
        delivery = WebhookDelivery(
            config, EventStream(store),
            Payloads(gateway.verifier.secrets, gateway.signer),
            lambda: txredisapi.Connection("127.0.0.1", port, reconnect=False,
                                          charset=None, convertNumbers=False),
            HTTP, reactor, consumer,
            **{"retry_delays": (0.3, 0.3, 0.3), "block_ms": 100, "maintain_every": 0.05,
               "claim_margin": 0.2, **kwargs})
        delivery.startService()
        self.running.append(delivery)
        return delivery

    @inlineCallbacks
    def stop(self, delivery: WebhookDelivery):
        self.running.remove(delivery)
        yield delivery.stopService()

    @inlineCallbacks
    def stopAll(self):
        for delivery in list(self.running):
            yield self.stop(delivery)


@pytest.fixture
def deliverers(events_gateway, redis_server):
    running = Deliverers(events_gateway, redis_server)
    # The group exists before any event, as it does once a daemon has started.
    pytest_twisted.blockon(EventStream(events_gateway.store).ensureGroup("rp"))
    yield running
    pytest_twisted.blockon(running.stopAll())


@inlineCallbacks
def settled(gateway, group: str = "rp", timeout: float = 10.0):
    """Wait until the group has read and acknowledged every entry: no more
    delivery of what is in the stream can come."""
    stream = EventStream(gateway.store)
    deadline = reactor.seconds() + timeout
    while True:
        status = yield stream.status(group)
        if status["pending"] == 0 and status["undelivered"] == 0:
            return status
        assert reactor.seconds() < deadline, status
        yield task.deferLater(reactor, 0.02, lambda: None)


def verified(receiver, secret: str = SECRET) -> list[dict]:
    """Every received event, each checked with the receiver's own library."""
    hook = Webhook(secret)
    return [hook.verify(body, headers) for headers, body in receiver.received]


@inlineCallbacks
def device_flow(gateway, number: str = NUMBER, unregister: bool = True):
    token = yield gateway.register()
    r = yield gateway.call("POST", "/sms/mt/verify", {"msisdn": number, "mcc": "208"},
                           token=token)
    assert r.code == 204, r
    code = yield gateway.pin(number)
    r = yield gateway.call("POST", "/sms/verify_code", {"code": code}, token=token)
    assert r.code == 200, r
    if unregister:
        r = yield gateway.call("POST", "/unregister", token=token)
        assert r.code == 204, r
    return token


# -- every event, once, signed ----------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_device_events_carry_the_pairwise_subject_and_no_number(events_gateway, deliverers,
                                                                receiver):
    gateway = events_gateway
    deliverers.start(webhook(receiver))
    yield device_flow(gateway)
    yield wait_until(lambda: len(receiver.received) >= 2)
    first, second = verified(receiver)
    assert (first["type"], second["type"]) == ("device.verified", "device.unregistered")
    subject = gateway.signer.subject(NUMBER, "https://rp.example")
    assert first["data"] == {"subject": subject, "audience": "https://rp.example",
                             "method": "sms/mt", "sequence": 1}
    assert second["data"]["subject"] == subject and second["data"]["sequence"] == 2
    assert all(NUMBER[1:] not in body.decode() for _, body in receiver.received)


@pytest_twisted.inlineCallbacks
def test_backend_events_fire_once_per_cause(events_gateway, deliverers, receiver):
    gateway = events_gateway
    deliverers.start(webhook(receiver))
    key = yield make_key(gateway, "shop")
    approved = yield create(gateway, key, "+33612345612")
    code = yield gateway.pin("+33612345612")
    yield check(gateway, key, code, id=approved["id"])
    canceled = yield create(gateway, key, "+33612345613")
    yield call(gateway, "POST", f"/v2/verifications/{canceled['id']}/cancel", key=key)
    spent = yield create(gateway, key, "+33612345614")
    code = yield gateway.pin("+33612345614")
    for _ in range(3):
        yield check(gateway, key, wrong(code), id=spent["id"])

    def by_id():
        found: dict[str, list[str]] = {}
        for event in receiver.events():
            found.setdefault(event["data"]["id"], []).append(event["type"])
        return found

    yield wait_until(lambda: len(by_id().get(spent["id"], [])) >= 2
                     and len(by_id().get(approved["id"], [])) >= 2
                     and by_id().get(canceled["id"]))
    yield settled(gateway)
    found = by_id()
    assert sorted(found[approved["id"]]) == ["verification.approved", "verification.delivery"]
    assert sorted(found[canceled["id"]]) in (["verification.canceled"],
                                             ["verification.canceled", "verification.delivery"])
    assert "verification.max_attempts_reached" in found[spent["id"]]
    for event in verified(receiver):
        assert event["data"]["api_key"] == "shop" and "to" not in event["data"]
    [approval] = [e for e in receiver.events() if e["type"] == "verification.approved"]
    assert approval["data"]["status"] == "approved"
    [delivery] = [e for e in receiver.events() if e["type"] == "verification.delivery"
                  and e["data"]["id"] == approved["id"]]
    assert delivery["data"]["attempt"] == 1 and delivery["data"]["delivery"] == "delivered"
    # Per verification, the sequence numbers order what arrives.
    sequences = [e["data"]["sequence"] for e in receiver.events()
                 if e["data"]["id"] == approved["id"]]
    assert sorted(sequences) == [1, 2]


@pytest_twisted.inlineCallbacks
def test_undeliverable_after_the_automatic_resend_is_a_failure(events_gateway, deliverers,
                                                               receiver):
    gateway = events_gateway
    gateway.smsc.smsc.faults.receipt_state = "UNDELIV"
    deliverers.start(webhook(receiver, events=frozenset({"verification.failed",
                                                         "verification.delivery"})))
    key = yield make_key(gateway, "shop")
    verification = yield create(gateway, key, "+33612345615")
    yield wait_until(lambda: any(e["type"] == "verification.failed"
                                 for e in receiver.events()))
    kinds = [e["type"] for e in receiver.events()]
    assert kinds.count("verification.failed") == 1 and kinds.count("verification.delivery") == 2
    [failure] = [e for e in receiver.events() if e["type"] == "verification.failed"]
    assert failure["data"]["id"] == verification["id"] and failure["data"]["attempt"] == 2
    assert len(gateway.smsc.smsc.received("+33612345615")) == 2  # the one automatic resend


@pytest_twisted.inlineCallbacks
def test_an_expiry_nobody_saw_is_told_by_the_sweep(redis_pool, redis_server, tmp_path_factory,
                                                    receiver):
    gateway = yield start_gateway(redis_pool, tmp_path_factory.mktemp("keys"), events=True,
                                  settings=VerificationSettings(send_timeout=3.0, code_ttl=0.3))
    running = Deliverers(gateway, redis_server)
    try:
        yield EventStream(gateway.store).ensureGroup("rp")
        running.start(webhook(receiver))
        key = yield make_key(gateway, "shop")
        verification = yield create(gateway, key, "+33612345616")
        swept = yield gateway.api.backend.sweepExpired()
        assert swept == 0  # not yet

        @inlineCallbacks
        def sweep_until_ended():
            ended = yield gateway.api.backend.sweepExpired()
            return ended

        ended = 0
        deadline = reactor.seconds() + 5
        while ended == 0 and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.05, lambda: None)
            ended = yield sweep_until_ended()
        assert ended == 1
        again = yield gateway.api.backend.sweepExpired()
        assert again == 0
        yield wait_until(lambda: any(e["type"] == "verification.expired"
                                     for e in receiver.events()))
        [expired] = [e for e in receiver.events() if e["type"] == "verification.expired"]
        assert expired["data"]["id"] == verification["id"]
        assert expired["data"]["status"] == "expired"
        fetched = yield call(gateway, "GET", f"/v2/verifications/{verification['id']}", key=key)
        assert fetched.body["status"] == "expired"
        yield settled(gateway)
        assert [e["type"] for e in receiver.events()].count("verification.expired") == 1
    finally:
        yield running.stopAll()
        yield gateway.stop()
        yield gateway.smsc.stop()


# -- at least once ----------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_failures_are_retried_with_the_same_webhook_id(events_gateway, deliverers, receiver):
    receiver.codes = [500, 500]
    deliverers.start(webhook(receiver, events=frozenset({"device.verified"})))
    yield device_flow(events_gateway, unregister=False)
    yield wait_until(lambda: len(receiver.received) >= 3, timeout=10)
    assert len(set(receiver.ids())) == 1 and len(receiver.ids()) == 3
    verified(receiver)  # every attempt is signed
    yield settled(events_gateway)
    assert len(receiver.ids()) == 3


@pytest_twisted.inlineCallbacks
def test_a_receiver_that_was_down_gets_everything_after(events_gateway, deliverers, receiver):
    port = receiver.port.getHost().port
    yield receiver.port.stopListening()
    deliverers.start(webhook(receiver, events=frozenset({"device.verified"})),
                     retry_delays=(0.3,) * 6)
    for i in range(3):
        yield device_flow(events_gateway, f"+3361234562{i}", unregister=False)
    delivery = deliverers.running[-1]
    yield wait_until(lambda: delivery.counters.outcomes["failed"] >= 1)
    status = yield EventStream(events_gateway.store).status("rp")
    receiver.port = reactor.listenTCP(port, Site(receiver), interface="127.0.0.1")
    yield wait_until(lambda: len(set(receiver.ids())) == 3, timeout=10)
    assert status["pending"] + status["undelivered"] >= 1


@pytest_twisted.inlineCallbacks
def test_two_deliverers_on_one_redis_deliver_each_event_once(events_gateway, deliverers,
                                                             receiver):
    config = webhook(receiver, events=frozenset({"device.verified"}))
    first, second = deliverers.start(config, "a"), deliverers.start(config, "b")
    for i in range(8):
        yield device_flow(events_gateway, f"+336123456{30 + i}", unregister=False)
    yield wait_until(lambda: len(receiver.received) >= 8)
    yield settled(events_gateway)
    assert len(receiver.ids()) == len(set(receiver.ids())) == 8
    assert first.counters.outcomes["delivered"] + second.counters.outcomes["delivered"] == 8


@pytest_twisted.inlineCallbacks
def test_entries_a_dead_deliverer_read_are_claimed_by_another(events_gateway, deliverers,
                                                              receiver):
    stream = EventStream(events_gateway.store)
    for i in range(3):
        yield device_flow(events_gateway, f"+336123456{40 + i}", unregister=False)
    # A daemon read them and died before posting them.
    taken = yield stream.readNow("rp", "dead-daemon", 100)
    assert len([e for e in taken if e.type == "device.verified"]) == 3
    deliverers.start(webhook(receiver, events=frozenset({"device.verified"})), "alive")
    yield wait_until(lambda: len(receiver.received) >= 3, timeout=10)
    assert sorted(receiver.ids()) == sorted(f"msg_{e.id}" for e in taken
                                            if e.type == "device.verified")


@pytest_twisted.inlineCallbacks
def test_events_wait_in_redis_across_a_restart(events_gateway, deliverers, receiver):
    config = webhook(receiver, events=frozenset({"device.verified"}))
    first = deliverers.start(config)
    yield deliverers.stop(first)
    yield device_flow(events_gateway, "+33612345650", unregister=False)
    assert receiver.received == []
    deliverers.start(config)
    yield wait_until(lambda: len(receiver.received) == 1)


@pytest_twisted.inlineCallbacks
def test_spent_attempts_are_dead_lettered(events_gateway, deliverers, receiver):
    receiver.codes = [500] * 10
    delivery = deliverers.start(webhook(receiver, events=frozenset({"device.verified"})),
                                retry_delays=(0.3,))
    yield device_flow(events_gateway, "+33612345651", unregister=False)
    stream = EventStream(events_gateway.store)
    yield wait_until(lambda: delivery.counters.outcomes["dead_lettered"] == 1, timeout=10)
    assert len(receiver.received) == 2
    status = yield stream.status("rp")
    assert status["dead"] == 1 and status["pending"] == 0
    assert status["last_error"] == "HTTP 500"


# -- signatures and contents -------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_a_tampered_body_fails_verification(events_gateway, deliverers, receiver):
    deliverers.start(webhook(receiver))
    yield device_flow(events_gateway, "+33612345652", unregister=False)
    yield wait_until(lambda: receiver.received)
    headers, body = receiver.received[0]
    Webhook(SECRET).verify(body, headers)
    tampered = body.replace(b"device.verified", b"device.verifieD")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


@pytest_twisted.inlineCallbacks
def test_the_number_only_with_include_number_and_filters_by_api_key(
        events_gateway, deliverers, receiver):
    gateway = events_gateway
    deliverers.start(webhook(receiver, name="rp", include_number=True,
                             api_keys=frozenset({"shop"})))
    shop = yield make_key(gateway, "shop")
    other = yield make_key(gateway, "other")
    mine = yield create(gateway, shop, "+33612345653")
    yield create(gateway, other, "+33612345654")
    yield device_flow(gateway, "+33612345655", unregister=False)
    yield wait_until(lambda: any(e["type"] == "device.verified" for e in receiver.events())
                     and any(e["type"] == "verification.delivery" for e in receiver.events()))
    yield settled(gateway)
    backend = [e for e in receiver.events() if e["type"].startswith("verification.")]
    assert {e["data"]["id"] for e in backend} == {mine["id"]}
    assert all(e["data"]["to"] == "+33612345653" for e in backend)
    [device] = [e for e in receiver.events() if e["type"] == "device.verified"]
    assert device["data"]["msisdn"] == "+33612345655"


@pytest_twisted.inlineCallbacks
def test_no_event_is_written_without_webhooks(gateway):
    yield device_flow(gateway, "+33612345656")
    length = yield gateway.store.call("execute_command", "EXISTS", keys.EVENTS)
    assert int(length) == 0


@pytest_twisted.inlineCallbacks
def test_what_the_stream_holds_has_no_number_in_clear(events_gateway, deliverers):
    gateway = events_gateway
    key = yield make_key(gateway, "shop")
    yield create(gateway, key, "+33612345657")
    yield device_flow(gateway, "+33612345658")
    entries = yield EventStream(gateway.store).entries()
    assert entries
    blob = b"".join(k.encode() + v for e in entries for k, v in e.fields.items())
    for number in ("33612345657", "33612345658", "2345657", "2345658"):
        assert number.encode() not in blob


# -- operators -------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_operators_see_the_status_and_replay_dead_letters(events_gateway, deliverers, receiver,
                                                          redis_server, tmp_path):
    from test_daemon import BIN, write_config

    receiver.codes = [500] * 2
    delivery = deliverers.start(webhook(receiver, events=frozenset({"device.verified"})),
                                retry_delays=(0.3,))
    yield device_flow(events_gateway, "+33612345659", unregister=False)
    yield wait_until(lambda: delivery.counters.outcomes["dead_lettered"] == 1, timeout=10)
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    config = write_config(tmp_path, 1, redis_server.port, 1, 2)
    with open(config, "a") as f:
        f.write(f'\n[[webhook]]\nname = "rp"\nurl = "{receiver.url}"\n'
                f'secret_file = "{secret_file}"\nallow_insecure = true\n')

    def cli(*args):
        return threads.deferToThread(
            subprocess.run, [os.path.join(BIN, "msisdnd"), "webhooks", *args, "--config", config],
            capture_output=True, text=True, timeout=30)

    status = yield cli("status")
    assert status.returncode == 0, status.stderr
    [header, row] = status.stdout.splitlines()
    assert header.split()[:5] == ["webhook", "pending", "retrying", "unread", "dead"]
    assert row.split()[:5] == ["rp", "0", "0", "0", "1"] and "HTTP 500" in row
    dead_id = receiver.ids()[0]
    replay = yield cli("replay", "--dead")
    assert replay.returncode == 0 and f"replayed {dead_id[4:]} as" in replay.stdout
    yield wait_until(lambda: len(receiver.received) == 3)
    assert receiver.ids()[2] != dead_id  # a replay is a new delivery
    assert verified(receiver)[2]["type"] == "device.verified"
    status = yield cli("status")
    assert status.stdout.splitlines()[1].split()[4] == "0"
    again = yield cli("replay", "--id", receiver.ids()[2][4:])  # kept for replays once delivered
    assert again.returncode == 0
    yield wait_until(lambda: len(receiver.received) == 4)
    missing = yield cli("replay", "--id", "1-1")
    assert missing.returncode == 1 and "no event 1-1" in missing.stderr


@pytest_twisted.inlineCallbacks
def test_over_the_bound_the_oldest_are_dead_lettered_not_lost(events_gateway, deliverers,
                                                              receiver):
    yield maybeDeferred(receiver.port.stopListening)
    config = webhook(receiver, events=frozenset({"device.verified"}))
    for i in range(4):
        yield device_flow(events_gateway, f"+3361234566{i}", unregister=False)
    delivery = deliverers.start(config, max_backlog=2, retry_delays=(30.0,), block_ms=100)
    yield wait_until(lambda: delivery.counters.outcomes["dead_lettered"] >= 2, timeout=10)
    stream = EventStream(events_gateway.store)
    letters = yield stream.deadLetters("rp")
    reasons = {unpack(raw)[2] for raw in letters}
    assert reasons == {"over the bound of undelivered events"}
    status = yield stream.status("rp")
    assert len(letters) == 2 and status["pending"] + status["undelivered"] == 2


class _HeadersOnly(Protocol):
    """A receiver that answers 200 with a body it never sends."""

    posts = 0

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" in data or data.startswith(b"POST"):
            _HeadersOnly.posts += data.count(b"POST ")
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")


@pytest_twisted.inlineCallbacks
def test_a_receiver_that_never_sends_its_body_holds_nothing_up(events_gateway, deliverers):
    """The status decides: a 2xx whose body never comes is a delivery, the
    connection is dropped after the timeout, later events go out, and the
    deliverer stops promptly."""
    _HeadersOnly.posts = 0
    port = reactor.listenTCP(0, Factory.forProtocol(_HeadersOnly), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/hooks"
        delivery = deliverers.start(WebhookConfig(
            name="rp", url=url, secrets=(SECRET,), timeout=0.5, allow_insecure=True,
            events=frozenset({"device.verified"})))
        for i in range(3):
            yield device_flow(events_gateway, f"+3361234567{i}", unregister=False)
        yield wait_until(lambda: delivery.counters.outcomes["delivered"] == 3, timeout=10)
        stopped = deliverers.stop(delivery)
        yield wait_until(lambda: stopped.called, timeout=5)
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_revoked_key_s_verifications_still_tell_their_events(events_gateway, deliverers,
                                                                receiver):
    """Rotation revokes the old key; its pending verifications' events still name it
    and reach the webhooks that asked for that key."""
    gateway = events_gateway
    deliverers.start(webhook(receiver, api_keys=frozenset({"shop"})))
    key = yield make_key(gateway, "shop")
    verification = yield create(gateway, key, "+33612345690")
    yield ApiKeys(gateway.store).revoke("shop")
    yield gateway.verifier.verifications.finish(
        bytes.fromhex(verification["id"][2:]), "canceled", int(reactor.seconds() * 1000), 1000)
    yield wait_until(lambda: any(e["type"] == "verification.canceled"
                                 for e in receiver.events()))
    [event] = [e for e in receiver.events() if e["type"] == "verification.canceled"]
    assert event["data"]["api_key"] == "shop"


@pytest_twisted.inlineCallbacks
def test_a_gone_webhooks_group_does_not_hold_the_stream(events_gateway, deliverers, receiver):
    """A webhook renamed or removed leaves its group behind: the stream is trimmed
    for the configured webhooks only."""
    stream = EventStream(events_gateway.store)
    yield stream.ensureGroup("old")
    deliverers.start(webhook(receiver, events=frozenset({"device.verified"})))
    yield device_flow(events_gateway, "+33612345691", unregister=False)
    yield wait_until(lambda: len(receiver.received) == 1)
    yield settled(events_gateway)
    removed = yield stream.trim(int(reactor.seconds() * 1000) + 1000, frozenset({"rp"}))
    assert removed >= 1 and (yield stream.length()) == 0


@pytest_twisted.inlineCallbacks
def test_a_blocking_read_on_a_redis_gone_silent_is_given_up(events_gateway, deliverers,
                                                            receiver, tmp_path):
    """A Redis whose host froze or was cut off sends no reset: a blocking
    read on it would wait for ever (and the webhook with it, even after a
    failover).  Not answered within its block and a grace, it is given up,
    its connection dropped, and reading starts again."""
    import signal

    from twisted.logger import LogLevel, formatEvent, globalLogPublisher

    from conftest import RedisServer, free_port, redis_executable

    frozen = RedisServer(redis_executable(), free_port(), str(tmp_path))
    frozen.start()
    frozen.command("XGROUP", "CREATE", keys.EVENTS.decode(), "rp", "$", "MKSTREAM")
    seen: list[str] = []

    def observe(event):
        if event.get("log_level") is LogLevel.warn:
            seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    delivery = deliverers.start(webhook(receiver), redis_port=frozen.port)
    try:
        yield wait_until(lambda: delivery._connection is not None)
        frozen.process.send_signal(signal.SIGSTOP)
        yield wait_until(lambda: any("cannot read events" in line for line in seen),
                         timeout=10)
    finally:
        globalLogPublisher.removeObserver(observe)
        frozen.process.send_signal(signal.SIGCONT)
        yield deliverers.stop(delivery)
        frozen.stop()
