"""C{msisdnd}: the operator's tools beside the daemon.

  - C{msisdnd keygen [--out DIR] [--secret FILE] [--webhook-secret FILE]}: signing
    keys, a master secret, a webhook secret
  - C{msisdnd check-config PATH}: the start-up check, without starting
  - C{msisdnd binds --admin URL}: every bind of a running daemon, as a table
  - C{msisdnd carrier suspend|resume|rebind NAME --admin URL [--unbind]}: a carrier
    of a running daemon (a suspension holds on every daemon)
  - C{msisdnd reload --admin URL}: the daemon re-reads its configuration
  - C{msisdnd log-level LEVEL --admin URL}: the daemon's log level, now
    (these three take the admin token from C{--token-file} or
    C{$MSISDND_ADMIN_TOKEN_FILE})
  - C{msisdnd send-test-sms --config PATH --to NUMBER --text TEXT}: one MT
  - C{msisdnd blocks --config PATH [--lift KIND:WHAT]}: the pumping guard's blocks
  - C{msisdnd api-keys create|list|revoke --config PATH ...}: backend API keys
  - C{msisdnd verify start|check --server URL --api-key KEY ...}: the backend API by hand
  - C{msisdnd webhooks status|replay --config PATH ...}: webhook deliveries
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from typing import Sequence, TextIO

from zope.interface import implementer

from msisdnd.config import ConfigError, load_config
from msisdnd.sms.interfaces import IReceiptReceiver, OutboundSMS, SendError


def keygen(out_dir: str | None, secret_file: str | None, out: TextIO,
           webhook_secret_file: str | None = None, admin_token_file: str | None = None) -> int:
    """Write C{browserid.pem} (RSA 2048) and C{jwt.pem} (Ed25519) in C{out_dir},
    a master secret, a webhook secret, an admin token: each unless it exists."""
    from msisdnd.verification import certs

    if out_dir is not None:
        os.makedirs(out_dir, mode=0o700, exist_ok=True)
        for name, make in (("browserid.pem", certs.generate_rsa_key),
                           ("jwt.pem", certs.generate_ed25519_key)):
            path = os.path.join(out_dir, name)
            if os.path.exists(path):
                key = certs.load_signing_key(path)
                print(f"{path}: kept ({key.algorithm}, kid {key.kid})", file=out)
            else:
                key = make(path)
                print(f"{path}: written ({key.algorithm}, kid {key.kid})", file=out)
    if webhook_secret_file is not None:
        from msisdnd.events.config import new_secret

        _write_secret(webhook_secret_file, new_secret(), "a new webhook secret", out)
    if secret_file is not None:
        _write_secret(secret_file, secrets.token_hex(32), "a new master secret", out)
    if admin_token_file is not None:
        _write_secret(admin_token_file, "admin " + secrets.token_urlsafe(32),
                      "a new admin token, named admin", out)
    return 0


def _write_secret(path: str, value: str, what: str, out: TextIO) -> None:
    """Write C{value} to a new file only its owner reads, unless C{path} exists."""
    if os.path.exists(path):
        print(f"{path}: kept", file=out)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    print(f"{path}: written ({what})", file=out)


def _load(path: str, err: TextIO):
    """The configuration at C{path}, its warnings printed; C{None} (problem printed) if bad."""
    try:
        config = load_config(path)
    except ConfigError as e:
        print(f"msisdnd: {e}", file=err)
        return None
    for warning in config.warnings:
        print(f"msisdnd: warning: {warning}", file=err)
    return config


def check_config(path: str, out: TextIO, err: TextIO) -> int:
    """Validate C{path} as the daemon would; one line per problem, exit 2 on error."""
    config = _load(path, err)
    if config is None:
        return 2
    sessions = sum(len(c.session_specs) for c in config.carriers)
    print(f"{path}: OK ({len(config.carriers)} carriers, {sessions} SMPP sessions, "
          f"API {config.http.public_url.base})", file=out)
    return 0


def format_binds(snapshot: dict) -> str:
    """The admin listener's C{/binds} as an aligned table."""
    columns = ("carrier", "name", "mode", "state", "in_flight", "window", "queue_depth",
               "reconnects", "bind_failures", "last_enquire_link_rtt", "down_since",
               "last_bind_status", "last_error")
    rows = [columns]
    for bind in snapshot.get("binds", []):
        row = []
        for column in columns:
            value = bind.get(column)
            if column == "last_enquire_link_rtt" and value is not None:
                value = f"{value * 1000:.1f}ms"
            row.append("-" if value is None else str(value))
        rows.append(tuple(row))
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    for carrier in snapshot.get("carriers", []):
        if carrier.get("state", "up") != "up":
            outage = carrier.get("down_since") or carrier.get("reconnecting_since")
            lines.append(f"carrier {carrier['name']} is {carrier['state']} since {outage}: "
                         f"{carrier.get('last_error') or 'no error yet'}")
    errors = {c["name"]: c.get("errors") for c in snapshot.get("carriers", []) if c.get("errors")}
    if errors:
        lines.append("errors: " + json.dumps(errors, sort_keys=True))
    return "\n".join(lines)


def _admin_open(request, timeout: float):
    """Open C{request} on the admin listener itself: never through the
    environment's http_proxy (the bearer token would go to the proxy), and
    following no redirect (it would carry the token elsewhere)."""
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    return opener.open(request, timeout=timeout)


def binds(admin_url: str, out: TextIO, err: TextIO) -> int:
    try:
        with _admin_open(admin_url.rstrip("/") + "/binds", timeout=10) as resp:
            snapshot = json.load(resp)
    except (OSError, ValueError) as e:
        print(f"msisdnd: cannot read {admin_url}/binds: {e}", file=err)
        return 1
    print(format_binds(snapshot), file=out)
    return 0


def read_admin_token(path: str | None) -> str:
    """The first token of an C{[admin] token_file} (C{TOKEN} or C{NAME TOKEN} lines).

    @raise ValueError: no file given, or it holds no token (the message says so).
    """
    path = path or os.environ.get("MSISDND_ADMIN_TOKEN_FILE")
    if not path:
        raise ValueError("the admin token is needed: --token-file FILE "
                         "(or $MSISDND_ADMIN_TOKEN_FILE), the [admin] token_file")
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if words and not words[0].startswith("#"):
                    return words[-1]
    except OSError as e:
        raise ValueError(f"cannot read the admin token file {path}: {e.strerror or e}") from None
    raise ValueError(f"no token in {path}")


def admin_action(admin_url: str, path: str, body: dict, token_file: str | None,
                 out: TextIO, err: TextIO, timeout: float = 120.0) -> int:
    """POST an action to the admin listener and print its outcome; 0 when
    done, 1 with the daemon's reason when refused (2 when unreachable)."""
    import urllib.error
    import urllib.request

    try:
        token = read_admin_token(token_file)
    except ValueError as e:
        print(f"msisdnd: {e}", file=err)
        return 2
    request = urllib.request.Request(
        admin_url.rstrip("/") + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with _admin_open(request, timeout) as resp:
            answer = json.load(resp)
    except urllib.error.HTTPError as e:
        try:
            why = json.load(e).get("error", e.reason)
        except ValueError:
            why = e.reason
        print(f"msisdnd: {path.lstrip('/')}: {why} (HTTP {e.code})", file=err)
        return 1
    except (OSError, ValueError) as e:
        print(f"msisdnd: cannot reach the admin listener {admin_url}: {e}", file=err)
        return 2
    answer.pop("ok", None)
    for warning in answer.pop("restart_needed", []):
        print(f"msisdnd: warning: {warning} changed: it takes effect at the next restart",
              file=err)
    print(f"{path.lstrip('/')}: done {json.dumps(answer, sort_keys=True)}", file=out)
    return 0


@implementer(IReceiptReceiver)
class _Receipts:
    def __init__(self) -> None:
        self.received = []

    def receiptReceived(self, receipt) -> None:
        self.received.append(receipt)


def send_test_sms(reactor, config_path: str, to: str, text: str, wait: float,
                  out: TextIO, err: TextIO):
    """Bind the configured carriers, send one MT, print its ids and its receipt."""
    from twisted.internet import task
    from twisted.internet.defer import inlineCallbacks

    from msisdnd.smpp.service import CarriersService
    from msisdnd.sms.message_ids import normalize_message_id

    @inlineCallbacks
    def run():
        config = _load(config_path, err)
        if config is None:
            return 2
        receipts = _Receipts()
        service = CarriersService(config.carriers, reactor,
                                  send_timeout=config.verification.send_timeout,
                                  receipt_receiver=receipts)
        service.startService()
        try:
            deadline = reactor.seconds() + wait
            while not service.router.available():
                if reactor.seconds() > deadline:
                    print("msisdnd: no carrier bound in time", file=err)
                    return 1
                yield task.deferLater(reactor, 0.1, lambda: None)
            try:
                result = yield service.router.send(OutboundSMS(destination=to, text=text))
            except SendError as e:
                print(f"msisdnd: not sent: {e}", file=err)
                return 1
            print(f"sent via {result.carrier}: message ids {', '.join(result.message_ids)}",
                  file=out)
            print(f"waiting up to {deadline - reactor.seconds():.0f} s for its delivery "
                  f"receipt...", file=out, flush=True)
            ours = {normalize_message_id(i) for i in result.message_ids}
            while reactor.seconds() < deadline:
                for receipt in receipts.received:
                    if receipt.message_id in ours:  # converted per receipt_id_format
                        print(f"receipt: {receipt.state}"
                              + (f" (error {receipt.error})" if receipt.error else ""), file=out)
                        return 0
                yield task.deferLater(reactor, 0.1, lambda: None)
            print("no receipt yet: the SMSC has not sent one in time, or sent it on "
                  "another bind of the same account (a running daemon's, which then "
                  "takes it: see its log and msisdnd_receipts_received_total)", file=out)
            return 0
        finally:
            yield service.stopService()

    return run()


def _with_redis(reactor, config_path: str, err: TextIO, work):
    """Run C{work(config, redis)} against the Redis the configuration names.

    Fires with C{work}'s exit status, or 2 when the configuration is bad.
    """
    from twisted.internet.defer import inlineCallbacks

    from msisdnd.state.connection import SentinelMaster, connect_alone
    from msisdnd.state.redis import TimedRedis

    @inlineCallbacks
    def run():
        config = _load(config_path, err)
        if config is None:
            return 2
        settings = config.redis
        master = SentinelMaster(settings, reactor) if settings.sentinels else None
        if master is not None:
            master.startService()
        try:
            pool = yield connect_alone(settings, master=master)
            try:
                status = yield work(config, TimedRedis(pool, reactor, timeout=5.0))
                return status
            finally:
                yield pool.disconnect()
        finally:
            if master is not None:
                yield master.stopService()

    return run()


def lift_target(text: str) -> tuple[str, str]:
    """C{--lift}'s argument as (kind, what): C{prefix:+3361234} (a number
    less its last 4 digits) or C{network:20801} (an MCC and MNC)."""
    kind, _, what = text.partition(":")
    if (kind == "prefix" and re.fullmatch(r"\+[0-9]{1,15}", what)) or (
            kind == "network" and re.fullmatch(r"[0-9]{5,6}", what)):
        return kind, what
    raise argparse.ArgumentTypeError(
        f"takes prefix:+3361234 (a number less its last 4 digits) or network:20801 "
        f"(MCC and MNC), not {text!r}")


def blocks(reactor, config_path: str, lift: tuple[str, str] | None, out: TextIO,
           err: TextIO):
    """List the pumping guard's blocks, or lift one (C{prefix:+3361234}, C{network:20801})."""
    from twisted.internet.defer import inlineCallbacks

    from msisdnd.state.limits import Limits

    @inlineCallbacks
    def work(config, redis):
        limits = Limits(redis, config.limits, config.secrets.number, reactor)
        if lift is not None:
            kind, what = lift
            if not (yield limits.lift(kind, what)):
                print(f"msisdnd: no block on {kind} {what}", file=err)
                return 1
            print(f"lifted: {kind} {what}", file=out)
            return 0
        found = yield limits.blocks()
        for kind, what, left in found:
            print(f"{kind:8} {what:16} {left / 3600:6.1f} h left", file=out)
        if not found:
            print("no blocks", file=out)
        return 0

    return _with_redis(reactor, config_path, err, work)


def _when(ms: int) -> str:
    import datetime

    if not ms:
        return "-"
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


_KEY_NAME = "1 to 64 letters, digits, '_', '.' or '-'"


def api_keys(reactor, config_path: str, args: argparse.Namespace, out: TextIO, err: TextIO):
    """Create, list or revoke the backend API keys (C{args.action})."""
    import re

    from twisted.internet.defer import inlineCallbacks

    from msisdnd.state.api_keys import ApiKeyRecord, ApiKeys
    from msisdnd.verification.authentication import api_key_mac, new_api_key

    if args.action in ("create", "revoke") and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}",
                                                                args.name):
        print(f"msisdnd: a key name is {_KEY_NAME}: {args.name!r}", file=err)
        return _done(2)

    @inlineCallbacks
    def work(config, redis):
        keys = ApiKeys(redis)
        now = int(reactor.seconds() * 1000)
        if args.action == "create":
            key_id, secret = new_api_key()
            record = ApiKeyRecord(
                key_id=key_id, name=args.name, mac=api_key_mac(config.secrets.api_key, secret),
                created=now, expires=now + int(args.expires * 86_400_000) if args.expires else 0,
                rate_per_minute=args.rate_per_minute, daily_budget=args.daily_budget)
            if not (yield keys.create(record)):
                print(f"msisdnd: a key named {args.name!r} exists (revoke it, or choose "
                      "another name)", file=err)
                return 1
            print(f"created {args.name} (key id {key_id}): {args.rate_per_minute} requests/min, "
                  f"{args.daily_budget or 'no'} verifications/day, expires "
                  f"{_when(record.expires) if record.expires else 'never'}", file=out)
            print("The key is shown once, on the next line; keep it secret:", file=out)
            print(f"{key_id}.{secret}", file=out)
            return 0
        if args.action == "revoke":
            key_id = yield keys.revoke(args.name)
            if key_id is None:
                print(f"msisdnd: no key named {args.name!r}", file=err)
                return 1
            print(f"revoked {args.name} (key id {key_id})", file=out)
            return 0
        records = yield keys.all()
        rows = [("name", "key id", "created", "last used", "expires", "rate/min", "budget/day")]
        for r in records:
            expires = _when(r.expires) + (" (expired)" if r.expired(now) else "") \
                if r.expires else "never"
            rows.append((r.name, r.key_id, _when(r.created), _when(r.last_used), expires,
                         str(r.rate_per_minute), str(r.daily_budget or "-")))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)
        return 0

    return _with_redis(reactor, config_path, err, work)


def verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """C{verify start NUMBER} / C{verify check ID CODE} against a running daemon."""
    import dataclasses

    from msisdnd.verify_client import VerifyClient, VerifyError

    api_key = args.api_key or os.environ.get("MSISDND_API_KEY")
    if not api_key:
        print("msisdnd: give --api-key or set MSISDND_API_KEY", file=err)
        return 2
    client = VerifyClient(args.server, api_key)
    try:
        if args.action == "start":
            answer = dataclasses.asdict(client.create(args.number, locale=args.locale))
        else:
            answer = dataclasses.asdict(client.check(args.code, id=args.id))
    except VerifyError as e:
        extra = "".join(f", {name} {value}" for name, value in (
            ("errno", e.errno), ("retry after", e.retry_after), ("tries left", e.tries_left))
            if value is not None)
        print(f"msisdnd: {e.status or 'no answer'}: {e.message.rstrip('.')}{extra}", file=err)
        return 1
    print(json.dumps(answer, indent=2), file=out)
    return 0 if args.action == "start" or answer["valid"] else 1


def webhooks(reactor, config_path: str, args: argparse.Namespace, out: TextIO, err: TextIO):
    """C{status}: each webhook's deliveries; C{replay}: deliver an event (or
    the dead letters) to a webhook again."""
    from twisted.internet.defer import inlineCallbacks

    from msisdnd.events.delivery import unpack
    from msisdnd.state.events import EventStream

    @inlineCallbacks
    def work(config, redis):
        names = [w.name for w in config.webhooks]
        if not names:
            print(f"msisdnd: {config_path} configures no [[webhook]]", file=err)
            return 1
        stream = EventStream(redis)
        if args.action == "status":
            rows = [("webhook", "pending", "retrying", "unread", "dead", "dropped", "last success",
                     "last error")]
            for name in names:
                st = yield stream.status(name)
                error = (f"{_when(st['last_error_at'])} {st['last_error']}"
                         if st["last_error"] else "-")
                rows.append((name, str(st["pending"]), str(st["retrying"]),
                             str(st["undelivered"]), str(st["dead"]), str(st["dead_dropped"]),
                             _when(st["last_success_at"] or 0), error))
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)
            return 0
        name = args.webhook or (names[0] if len(names) == 1 else None)
        if name not in names:
            print(f"msisdnd: name the webhook with --webhook ({', '.join(names)})", file=err)
            return 2
        if args.dead:
            letters = yield stream.deadLetters(name)
            for raw in reversed(letters):  # oldest first
                entry_id, fields, _ = unpack(raw)
                new_id = yield stream.append({**fields, "only": name})
                print(f"replayed {entry_id} as {new_id}", file=out)
            yield stream.forgetDeadLetters(name, list(letters))
            if not letters:
                print(f"no dead letters for {name}", file=out)
            return 0
        found = yield stream.entries(args.id, args.id, 1)
        fields = found[0].fields if found else None
        if fields is None:
            for raw in (yield stream.deadLetters(name)):
                entry_id, letter_fields, _ = unpack(raw)
                if entry_id == args.id:
                    fields = letter_fields
        if fields is None:
            print(f"msisdnd: no event {args.id} in the stream or {name}'s dead letters",
                  file=err)
            return 1
        new_id = yield stream.append({**{k: v for k, v in fields.items() if k != "only"},
                                      "only": name})
        print(f"replayed {args.id} as {new_id}", file=out)
        return 0

    return _with_redis(reactor, config_path, err, work)


def _done(status: int):
    from twisted.internet.defer import succeed

    return succeed(status)


def _react(run) -> int:
    from twisted.internet import task

    codes = []
    try:
        task.react(lambda reactor: run(reactor).addCallback(codes.append))
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code)
    return codes[0] if codes else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msisdnd", description="msisdnd operator tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("keygen", help="write signing keys, a master secret, a webhook secret")
    p.add_argument("--out", help="directory for browserid.pem and jwt.pem")
    p.add_argument("--secret", help="also write a master secret to this file")
    p.add_argument("--webhook-secret", metavar="FILE",
                   help="write a new webhook secret (whsec_...) to this file")
    p.add_argument("--admin-token", metavar="FILE",
                   help="write a new admin token (for [admin] token_file) to this file")
    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("path")
    p = sub.add_parser("binds", help="the binds of a running daemon")
    p.add_argument("--admin", required=True, help="the admin listener's URL")
    p = sub.add_parser("carrier", help="suspend, resume or rebind a carrier of a running daemon")
    p.add_argument("action", choices=("suspend", "resume", "rebind"))
    p.add_argument("name", help="the carrier's name")
    p.add_argument("--unbind", action="store_true",
                   help="with suspend: let its binds go too, once drained (no receipts, no MO)")
    _admin_arguments(p)
    p = sub.add_parser("reload", help="make a running daemon re-read its configuration")
    _admin_arguments(p)
    p = sub.add_parser("log-level", help="set a running daemon's log level")
    p.add_argument("level", choices=("debug", "info", "warn", "error"))
    _admin_arguments(p)
    p = sub.add_parser("send-test-sms", help="send one MT through the configured carriers")
    p.add_argument("--config", required=True)
    p.add_argument("--to", required=True, help="E.164 number")
    p.add_argument("--text", required=True)
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for bind and receipt")
    p = sub.add_parser("blocks", help="list the pumping guard's blocks, or lift one")
    p.add_argument("--config", required=True)
    p.add_argument("--lift", metavar="KIND:WHAT", type=lift_target,
                   help="e.g. prefix:+3361234 or network:20801")
    p = sub.add_parser("api-keys", help="create, list or revoke backend API keys")
    keys = p.add_subparsers(dest="action", required=True)
    k = keys.add_parser("create", help="make a key and print it, once, on the last line")
    k.add_argument("--config", required=True)
    k.add_argument("--name", required=True, help=f"a unique name: {_KEY_NAME}")
    k.add_argument("--rate-per-minute", type=_positive, default=60,
                   help="requests per minute, across every daemon (default 60)")
    k.add_argument("--daily-budget", type=_natural, default=1000,
                   help="verification SMS per UTC day; 0 for no budget (default 1000)")
    k.add_argument("--expires", type=_positive, metavar="DAYS", help="expire after DAYS days")
    k = keys.add_parser("list", help="every key (never its secret)")
    k.add_argument("--config", required=True)
    k = keys.add_parser("revoke", help="revoke a key at once, on every daemon")
    k.add_argument("--config", required=True)
    k.add_argument("name")
    p = sub.add_parser("webhooks", help="webhook deliveries: status, replay")
    hooks = p.add_subparsers(dest="action", required=True)
    h = hooks.add_parser("status", help="per webhook: pending, retrying, dead, last error")
    h.add_argument("--config", required=True)
    h = hooks.add_parser("replay", help="deliver an event, or the dead letters, again")
    h.add_argument("--config", required=True)
    h.add_argument("--webhook", help="the webhook (needed when there are several)")
    which = h.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", help="the event's id (its webhook-id without msg_)")
    which.add_argument("--dead", action="store_true", help="every dead letter of the webhook")
    p = sub.add_parser("verify", help="the backend API of a running daemon")
    actions = p.add_subparsers(dest="action", required=True)
    for name, help_text in (("start", "send a code to a number"),
                            ("check", "check a code against a verification")):
        a = actions.add_parser(name, help=help_text)
        a.add_argument("--server", required=True, help="the daemon's public URL")
        a.add_argument("--api-key", help="the API key (default: $MSISDND_API_KEY)")
        if name == "start":
            a.add_argument("number", help="E.164, e.g. +33612345678")
            a.add_argument("--locale", help="the SMS text's language, e.g. fr")
        else:
            a.add_argument("id", help="the verification id (VE...)")
            a.add_argument("code")
    return parser


def _admin_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--admin", required=True, help="the admin listener's URL")
    p.add_argument("--token-file", help="the admin token file (default: "
                                        "$MSISDND_ADMIN_TOKEN_FILE)")


def _positive(value: str) -> int:
    number = _natural(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value!r}")
    return number


def _natural(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value!r}")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out, err = sys.stdout, sys.stderr
    if args.command == "keygen":
        if not (args.out or args.secret or args.webhook_secret or args.admin_token):
            print("msisdnd: keygen needs --out, --secret, --webhook-secret or --admin-token",
                  file=err)
            return 2
        return keygen(args.out, args.secret, out, args.webhook_secret, args.admin_token)
    if args.command == "check-config":
        return check_config(args.path, out, err)
    if args.command == "binds":
        return binds(args.admin, out, err)
    if args.command == "carrier":
        body = {"unbind": True} if args.unbind else {}
        if args.unbind and args.action != "suspend":
            print("msisdnd: --unbind goes with suspend", file=err)
            return 2
        from urllib.parse import quote

        return admin_action(args.admin, f"/carriers/{quote(args.name, safe='')}/{args.action}",
                            body, args.token_file, out, err)
    if args.command == "reload":
        return admin_action(args.admin, "/reload", {}, args.token_file, out, err)
    if args.command == "log-level":
        return admin_action(args.admin, "/log-level", {"level": args.level}, args.token_file,
                            out, err)
    if args.command == "blocks":
        return _react(lambda reactor: blocks(reactor, args.config, args.lift, out, err))
    if args.command == "api-keys":
        return _react(lambda reactor: api_keys(reactor, args.config, args, out, err))
    if args.command == "verify":
        return verify(args, out, err)
    if args.command == "webhooks":
        return _react(lambda reactor: webhooks(reactor, args.config, args, out, err))
    return _react(lambda reactor: send_test_sms(reactor, args.config, args.to, args.text,
                                                args.wait, out, err))


if __name__ == "__main__":
    sys.exit(main())
