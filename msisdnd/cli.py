"""C{msisdnd}: the operator's tools beside the daemon.

  - C{msisdnd keygen --out DIR [--secret FILE]}: signing keys (and a master secret)
  - C{msisdnd check-config PATH}: the start-up check, without starting
  - C{msisdnd binds --admin URL}: every bind of a running daemon, as a table
  - C{msisdnd send-test-sms --config PATH --to NUMBER --text TEXT}: one MT
  - C{msisdnd blocks --config PATH [--lift KIND:WHAT]}: the pumping guard's blocks
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from typing import Sequence, TextIO

from zope.interface import implementer

from msisdnd.config import ConfigError, load_config
from msisdnd.sms.interfaces import IReceiptReceiver, OutboundSMS, SendError


def keygen(out_dir: str, secret_file: str | None, out: TextIO) -> int:
    """Write C{browserid.pem} (RSA 2048) and C{jwt.pem} (Ed25519) unless they exist."""
    from msisdnd.verification import certs

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
    if secret_file is not None:
        if os.path.exists(secret_file):
            print(f"{secret_file}: kept", file=out)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(secret_file)), mode=0o700, exist_ok=True)
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            print(f"{secret_file}: written (a new master secret)", file=out)
    return 0


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
               "reconnects", "bind_failures", "last_bind_status", "last_enquire_link_rtt")
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
    errors = {c["name"]: c.get("errors") for c in snapshot.get("carriers", []) if c.get("errors")}
    if errors:
        lines.append("errors: " + json.dumps(errors, sort_keys=True))
    return "\n".join(lines)


def binds(admin_url: str, out: TextIO, err: TextIO) -> int:
    import urllib.request

    try:
        with urllib.request.urlopen(admin_url.rstrip("/") + "/binds", timeout=10) as resp:
            snapshot = json.load(resp)
    except (OSError, ValueError) as e:
        print(f"msisdnd: cannot read {admin_url}/binds: {e}", file=err)
        return 1
    print(format_binds(snapshot), file=out)
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
    from msisdnd.sms.message_ids import message_id_aliases

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
            ours = frozenset().union(*(message_id_aliases(i) for i in result.message_ids))
            while reactor.seconds() < deadline:
                for receipt in receipts.received:
                    if receipt.aliases & ours:
                        print(f"receipt: {receipt.state}"
                              + (f" (error {receipt.error})" if receipt.error else ""), file=out)
                        return 0
                yield task.deferLater(reactor, 0.1, lambda: None)
            print("no receipt yet", file=out)
            return 0
        finally:
            yield service.stopService()

    return run()


def _redis_pool(config):
    """A txredisapi pool to the Redis C{config} names (the embedded one's socket too)."""
    import txredisapi

    settings = config.redis
    common = dict(poolsize=1, reconnect=False, charset=None, convertNumbers=False,
                  password=settings.password, username=settings.username,
                  connectTimeout=settings.timeout)
    if settings.unix_socket:
        return txredisapi.UnixConnectionPool(settings.unix_socket, dbid=settings.db, **common)
    return txredisapi.ConnectionPool(settings.host, settings.port, dbid=settings.db, **common)


def blocks(reactor, config_path: str, lift: str | None, out: TextIO, err: TextIO):
    """List the pumping guard's blocks, or lift one (C{prefix:+3361234}, C{network:20801})."""
    from twisted.internet.defer import inlineCallbacks

    from msisdnd.state.limits import Limits
    from msisdnd.state.sessions import SessionStore

    @inlineCallbacks
    def run():
        config = _load(config_path, err)
        if config is None:
            return 2
        pool = yield _redis_pool(config)
        try:
            limits = Limits(SessionStore(pool, reactor, timeout=5.0), config.limits,
                            config.secrets.number, reactor)
            if lift is not None:
                kind, _, what = lift.partition(":")
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
        finally:
            yield pool.disconnect()

    return run()


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
    p = sub.add_parser("keygen", help="write signing keys (and a master secret)")
    p.add_argument("--out", required=True, help="directory for browserid.pem and jwt.pem")
    p.add_argument("--secret", help="also write a master secret to this file")
    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("path")
    p = sub.add_parser("binds", help="the binds of a running daemon")
    p.add_argument("--admin", required=True, help="the admin listener's URL")
    p = sub.add_parser("send-test-sms", help="send one MT through the configured carriers")
    p.add_argument("--config", required=True)
    p.add_argument("--to", required=True, help="E.164 number")
    p.add_argument("--text", required=True)
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for bind and receipt")
    p = sub.add_parser("blocks", help="list the pumping guard's blocks, or lift one")
    p.add_argument("--config", required=True)
    p.add_argument("--lift", metavar="KIND:WHAT", help="e.g. prefix:+3361234 or network:20801")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out, err = sys.stdout, sys.stderr
    if args.command == "keygen":
        return keygen(args.out, args.secret, out)
    if args.command == "check-config":
        return check_config(args.path, out, err)
    if args.command == "binds":
        return binds(args.admin, out, err)
    if args.command == "blocks":
        return _react(lambda reactor: blocks(reactor, args.config, args.lift, out, err))
    return _react(lambda reactor: send_test_sms(reactor, args.config, args.to, args.text,
                                                args.wait, out, err))


if __name__ == "__main__":
    sys.exit(main())
