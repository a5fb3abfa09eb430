"""The C{[[webhook]]} tables: where events go, signed with what, filtered how.

::

    [[webhook]]
    name = "rp"                                        # default: the URL's host
    url = "https://rp.example/hooks/msisdnd"
    secret_file = "/etc/msisdnd/secrets/webhook-rp"    # whsec_... lines, each signs
    events = ["verification.approved", "device.verified"]  # default: every event
    api_keys = []                                      # backend events of these keys only
    audience = "https://rp.example"                    # the device events' pairwise subject
    include_number = false
    timeout = 5
    allow_insecure = false                             # http and loopback: tests and dev only

Validated once, with the rest of the configuration; a secret never
appears in an error.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from msisdnd.validation import ConfigError, Table, is_array, kind

#: Every event a webhook may receive.
EVENTS = (
    "verification.approved", "verification.canceled", "verification.expired",
    "verification.max_attempts_reached", "verification.failed", "verification.delivery",
    "device.verified", "device.unregistered",
)
KEYS = ("name", "url", "secret_file", "events", "api_keys", "audience", "include_number",
        "timeout", "allow_insecure")
SECRET_PREFIX = "whsec_"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: The most a secret file may hold (bytes).
_SECRET_FILE_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One webhook, validated.

    @ivar secrets: the Standard Webhooks secrets (C{whsec_...}); each signs.
    @ivar events: the event types it receives.
    @ivar api_keys: backend events only from these API keys (names); empty: all.
    """

    name: str
    url: str
    secrets: tuple[str, ...] = field(repr=False)
    events: frozenset[str] = frozenset(EVENTS)
    api_keys: frozenset[str] = frozenset()
    audience: str | None = None
    include_number: bool = False
    timeout: float = 5.0
    allow_insecure: bool = False

    def wants(self, event: str, api_key: str | None) -> bool:
        """Whether this webhook receives C{event} (of the key named C{api_key})."""
        if event not in self.events:
            return False
        return not (self.api_keys and event.startswith("verification.")
                    and api_key not in self.api_keys)


def read_secrets(path: str) -> tuple[str, ...]:
    """The secrets in a secret file: one C{whsec_<base64 of 24-64 bytes>} per line.

    @raise ValueError: a line that is not one (the message never shows it).
    """
    with open(path, "rb") as handle:
        raw = handle.read(_SECRET_FILE_MAX + 1)
    if len(raw) > _SECRET_FILE_MAX:
        raise ValueError("is larger than 64 KiB")
    found = []
    for number, line in enumerate(raw.decode("ascii", "replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if not line.startswith(SECRET_PREFIX):
            raise ValueError(f"line {number} does not start with {SECRET_PREFIX!r}")
        try:
            key = base64.b64decode(line[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"line {number} is not base64 after {SECRET_PREFIX!r}") from None
        if not 24 <= len(key) <= 64:
            raise ValueError(f"line {number} holds {len(key)} bytes; a secret is 24 to 64")
        found.append(line)
    if not found:
        raise ValueError("holds no secret")
    return tuple(found)


def new_secret() -> str:
    """A new Standard Webhooks secret (32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def _public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    return not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


def check_destination(host: str, port: int,
                      resolve: Callable[[str, int], list[str]] | None = None) -> str | None:
    """Why a webhook must not be delivered to C{host}, or C{None}.

    An address literal is checked as it is; a name is resolved, and every
    address it resolves to must be public.  A name that does not resolve
    now is allowed.  This runs at start-up only: a name that later resolves
    to a private address is not caught (TLS verification still stands).
    """
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        try:
            addresses = (resolve or _resolve)(host, port)
        except OSError:
            return None
    private = [a for a in addresses if not _public_address(a)]
    if private:
        return (f"resolves to a loopback, private or link-local address ({private[0]}); "
                "set allow_insecure = true for tests and development")
    return None


def _resolve(host: str, port: int) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def parse_webhooks(items: Any, resolve_file: Callable[[Table, str, Any], str]) -> tuple[
        WebhookConfig, ...]:
    """Every C{[[webhook]]} table, validated (names unique).

    @param resolve_file: makes a file name of the configuration absolute and
        checks it is a readable file (the loader's own check).
    """
    if items is None:
        return ()
    if not is_array(items):
        raise ConfigError("webhook", f"must be an array of tables ([[webhook]]), not {kind(items)}")
    webhooks: list[WebhookConfig] = []
    for i, item in enumerate(items):
        t = Table(item, f"webhook[{i}]", KEYS)
        allow_insecure = t.boolean("allow_insecure", False)
        url = t.string("url", required=True, empty=False, limit=2048)
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            t.fail("url", f"must be an https URL, not {url!r}")
        if parts.scheme != "https" and not allow_insecure:
            t.fail("url", "must be https (set allow_insecure = true for tests and development)")
        if parts.username or parts.password:
            t.fail("url", "must not hold credentials; the signature authenticates us")
        if not allow_insecure:
            why = check_destination(parts.hostname, parts.port or 443)
            if why:
                t.fail("url", why)
        name = t.string("name", parts.hostname, limit=64)
        if not _NAME.fullmatch(name):
            t.fail("name", f"must be 1 to 64 letters, digits, '_', '.' or '-', not {name!r}")
        if any(w.name == name for w in webhooks):
            t.fail("name", f"{name!r} names another webhook; give each its own name")
        path = resolve_file(t, "secret_file", t.raw("secret_file"))
        try:
            secrets = read_secrets(path)
        except (OSError, ValueError) as e:
            t.fail("secret_file", f"{path}: {e}")
        if t.raw("events") is not None and not t.array("events"):
            t.fail("events", "must list at least one event, or be left out (every event)")
        events = []
        for j, event in enumerate(t.array("events")):
            if event not in EVENTS:
                t.fail(f"events[{j}]", f"unknown event {event!r}; the events are "
                                        f"{', '.join(EVENTS)}")
            events.append(event)
        api_keys = []
        for j, key in enumerate(t.array("api_keys")):
            if not isinstance(key, str) or not _NAME.fullmatch(key):
                t.fail(f"api_keys[{j}]", f"must be an API key's name, not {key!r}")
            api_keys.append(key)
        audience = t.string("audience", limit=256)
        if audience == "":
            t.fail("audience", "must not be empty (leave it out for none)")
        webhooks.append(WebhookConfig(
            name=name, url=url, secrets=secrets,
            events=frozenset(events) if t.raw("events") is not None else frozenset(EVENTS),
            api_keys=frozenset(api_keys), audience=audience,
            include_number=t.boolean("include_number", False),
            timeout=t.number("timeout", 5.0, above=0.0, most=30.0),
            allow_insecure=allow_insecure))
    return tuple(webhooks)
