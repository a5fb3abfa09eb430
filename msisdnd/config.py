"""The daemon's configuration: one TOML file, read and validated whole at start-up and on reload.

C{twistd -n msisdnd --config PATH} calls L{load_config}, which reads the file
and returns a frozen L{Config}, or raises L{ConfigError} naming the first
thing that is wrong, in one line::

    etc/msisdnd.toml: [http].public_url: must be http(s)://host[:port][/prefix], not 'ftp://x'
    etc/msisdnd.toml: carrier[0] "fake".window: must be between 1 and 1000, not 0

It is read at start-up and on an explicit reload (C{msisdnd reload}, SIGHUP),
validated whole each time; nothing else reads the file, the environment or the
files it names,
except the key files, which the daemon parses (only their presence and
permissions are checked here).  C{etc/msisdnd.toml} is the documented sample
with every key and its default; C{etc/msisdnd.dev.toml} is what the dev run
uses.

The sections: C{[http]}, C{[admin]}, C{[redis]}, C{[keys]}, C{[secrets]},
C{[verification]}, C{[sms]}, C{[[carrier]]} (see L{msisdnd.smpp.config}),
C{[log]} and C{[dev]}.  Unknown sections and keys are errors, with the
closest known name suggested.

Decisions worth knowing:
  - File names (C{[keys]}, C{[secrets].master_file}, C{[redis].dir}, and the
    C{tls} files of carriers) are relative to the configuration file's
    directory, and are made absolute here.  Endpoint descriptions (strports)
    are not rewritten: paths inside them (a C{unix:} socket, an C{ssl:} key)
    are relative to the daemon's working directory, as with any twistd
    option.
  - Endpoint descriptions are checked with C{serverFromString}, which parses
    without listening (it does load the files of C{ssl:} endpoints).  A
    C{systemd:} description is accepted unparsed, since it can only be
    resolved under socket activation.
  - C{[http].api_prefix} is the path a front proxy mounts us under.  When
    C{public_url} has no path, the public base is C{public_url + api_prefix};
    when both give a path they must be equal.  Either way the result is
    C{Config.http.public_url} (its C{prefix} is the mount path).
  - The master secret is 64 or more hexadecimal digits (32+ bytes), inline
    or in C{master_file}; it never appears in an error message.
  - Problems that do not stop the daemon (a private key readable by every
    user, say) are collected in C{Config.warnings}, one line each, for the
    daemon to log.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from msisdnd.state.limits import LimitSettings
from msisdnd.verification.settings import PublicURL, Secrets, VerificationSettings
from msisdnd.events.config import WebhookConfig, parse_webhooks
from msisdnd.smpp.config import CarrierConfig, parse_carriers
from msisdnd.validation import ConfigError, Table, is_array, kind

__all__ = [
    "AdminConfig", "Config", "ConfigError", "DevConfig", "HTTPConfig", "KeysConfig",
    "LogConfig", "RedisConfig", "SMSConfig", "load_config", "parse_config",
]

DEFAULT_HTTP_LISTEN = "tcp:8000:interface=127.0.0.1"
#: [http]: seconds for a request to arrive; connections open at once, in
#: total and per client address (systemd/msisdnd.service's LimitNOFILE=
#: is sized from max_connections).
DEFAULT_REQUEST_DEADLINE = 10.0
DEFAULT_MAX_CONNECTIONS = 4096
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 64
DEFAULT_ADMIN_LISTEN = "tcp:8001:interface=127.0.0.1"
DEFAULT_FAKE_SMSC_SMPP = "tcp:2775:interface=127.0.0.1"
DEFAULT_FAKE_SMSC_HTTP = "tcp:8025:interface=127.0.0.1"
DEFAULT_REDIS_DIR = "var/redis"
DEFAULT_REDIS_PORT = 6379
#: [redis] with sentinels: seconds to wait for the sentinels' answer on the
#: master (txredisapi waits 10 s by default, too long for a failover).
DEFAULT_DISCOVERY_TIMEOUT = 1.0
MAX_DISCOVERY_TIMEOUT = 2.0
#: [redis] keys that only sentinels use (with url they are in the URL).
_SENTINEL_ONLY = ("master_name", "username", "password", "db", "sentinel_username",
                  "sentinel_password", "quorum", "discovery_timeout")
#: The embedded redis-server's socket, in its C{dir}.
EMBEDDED_SOCKET_NAME = "redis.sock"
#: The least master secret, in hexadecimal digits (32 bytes).
MASTER_HEX_MIN = 64
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warn", "error")
#: Which API requests write an access log line: none, those answered 4xx/5xx, all.
LOG_ACCESS = ("off", "errors", "all")

# The most a master_file may hold.
_MASTER_FILE_MAX = 4096
# The most an [admin] token_file may hold, and the shortest token in it.
_TOKEN_FILE_MAX = 65536
_TOKEN_MIN = 32
_ADMIN_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{_TOKEN_MIN},}}")
# The longest embedded socket path: sun_path is 104 bytes on macOS, 108 on
# Linux, with the NUL; msisdnd.state.embedded refuses longer than 100.
_UNIX_PATH_MAX = 100

_SECTIONS: dict[str, tuple[str, ...]] = {
    "http": ("listen", "public_url", "api_prefix", "cors_origins", "max_body",
             "trusted_proxies", "show_version", "request_deadline", "max_connections",
             "hawk_require_payload_hash",
             "max_connections_per_client"),
    "admin": ("listen", "token_file"),
    "redis": ("url", "embedded", "dir", "timeout", "pool_size", "sentinels", "master_name",
              "username", "password", "db", "sentinel_username", "sentinel_password",
              "quorum", "discovery_timeout"),
    "keys": ("browserid", "jwt"),
    "secrets": ("master", "master_file"),
    "verification": tuple(f.name for f in fields(VerificationSettings)),
    "sms": ("default_locale", "webotp_host", "app_hashes"),
    "carrier": (),
    "webhook": (),
    "service": ("environment",),
    "log": ("format", "level", "access"),
    "dev": ("fake_smsc", "fake_smsc_smpp", "fake_smsc_http"),
    "limits": tuple(f.name for f in fields(LimitSettings)),
}

# (kind, low, high) of each LimitSettings number: "int" counts or "float" seconds.
_LIMIT_RANGES: dict[str, tuple[str, float, float]] = {
    "number_sends_10min": ("int", 1, 1000),
    "number_sends_day": ("int", 1, 10000),
    "number_failures_day": ("int", 1, 100),
    "daily_sms_budget": ("int", 0, 1_000_000_000),
    "number_lock": ("float", 60, 30 * 86400),
    "number_lock_max": ("float", 60, 30 * 86400),
    "client_failures_day": ("int", 1, 100),
    "client_lock": ("float", 60, 30 * 86400),
    "ip_registrations_minute": ("int", 1, 100000),
    "ip_registrations_day": ("int", 1, 10000000),
    "ip_sends_minute": ("int", 1, 100000),
    "ip_sends_day": ("int", 1, 10000000),
    "prefix_sends_day": ("int", 1, 10000000),
    "country_sends_day": ("int", 1, 100000000),
    "network_sends_day": ("int", 1, 100000000),
    "guard_window": ("float", 60, 7 * 86400),
    "guard_floor": ("int", 1, 1000000),
    "guard_min_conversion": ("float", 0, 1),
    "guard_block": ("float", 60, 30 * 86400),
    "guard_grace": ("float", 0, 3600),
}

# (kind, low, high) of each VerificationSettings field: "int" or "float"
# (seconds; an integer is welcome), and for long_code_hex, an even count.
_DAY = 86400
_VERIFICATION_RANGES: dict[str, tuple[str, float, float]] = {
    "short_code_digits": ("int", 4, 10),
    "long_code_hex": ("int", 16, 64),
    "code_ttl": ("float", 30, 3600),
    "max_tries": ("int", 1, 100),
    "resend_cooldown": ("float", 0, 3600),
    "max_resends": ("int", 0, 20),
    "unverified_session_ttl": ("float", 60, _DAY),
    "verified_session_ttl": ("float", 3600, 400 * _DAY),
    "certificate_max_duration": ("int", 60, 30 * _DAY),
    "send_timeout": ("float", 1, 60),
    "hawk_skew": ("float", 5, 600),
    "store_timeout": ("float", 0.1, 30),
}

_HEX = re.compile(r"[0-9a-fA-F]+")
_APP_HASH = re.compile(r"[A-Za-z0-9+/]{11}")
_HOST_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_PREFIX = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)+")
_TOML_POSITION = re.compile(
    r"(?P<problem>.*?) \((?P<where>at line \d+, column \d+|at end of document)\)", re.DOTALL)
_URL_PASSWORD = re.compile(r"(//[^/@]*?:)[^/@]*@")
_QUERY_PASSWORD = re.compile(r"(password=)[^&#]*")


# --- the records -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class HTTPConfig:
    """The device API's listener and what it tells clients.

    @ivar listen: strports descriptions, one listener each.
    @ivar public_url: where clients reach us, with C{api_prefix} applied.
    @ivar cors_origins: origins allowed cross-origin calls, normalized
        (lowercase, default port dropped): C{"https://app.example"}.
    @ivar max_body: the largest request body accepted, in bytes.
    @ivar trusted_proxies: peers whose C{X-Forwarded-For} is believed.
    @ivar show_version: whether C{/__version__}, C{/} and C{/api-specs} give our
        version, and the API's and admin's answers Twisted's C{Server} header.
    @ivar hawk_require_payload_hash: refuse a Hawk request with a body and no
        payload hash (C{False} only for legacy clients: a warning at start).
    @ivar request_deadline: seconds for a request's head and body to arrive
        (from the connection's start, or the first byte of a later request);
        then 408 and the connection is closed.
    @ivar max_connections: API connections open at once; more are refused.
    @ivar max_connections_per_client: the same per client address (IPv6 by
        /64); C{trusted_proxies} are exempt.
    """

    listen: tuple[str, ...]
    public_url: PublicURL
    cors_origins: tuple[str, ...] = ()
    max_body: int = 25600
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    show_version: bool = True
    hawk_require_payload_hash: bool = True
    request_deadline: float = DEFAULT_REQUEST_DEADLINE
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT


@dataclass(frozen=True, slots=True)
class AdminToken:
    """One bearer token of the admin listener's actions: its name (for the
    audit log) and the SHA-256 of the token (the token itself is not kept)."""

    name: str
    digest: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin listener (metrics, health, and the actions), or C{listen}
    C{None} when disabled.

    @ivar token_file: the file of the actions' bearer tokens, or C{None}:
        then every action is refused.
    @ivar tokens: the tokens it held when read.
    """

    listen: str | None = DEFAULT_ADMIN_LISTEN
    token_file: str | None = None
    tokens: tuple[AdminToken, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Where the state lives.

    With C{url = "redis://..."}, C{host}/C{port} are set and C{unix_socket}
    is C{None}; with C{url = "unix://..."}, C{unix_socket} is set and C{host}
    is C{""}, C{port} 0.  With C{embedded = true}, the daemon starts a
    private C{redis-server} child with its data in C{dir}, listening only on
    C{unix_socket} (C{dir}/redis.sock; C{host} C{""}, C{port} 0, no password).
    With C{sentinels}, the master named C{master_name} is asked of them
    (L{msisdnd.state.connection.SentinelMaster}); C{host} is C{""}, and
    C{username}/C{password}/C{db} are the master's.

    @ivar timeout: seconds to establish a connection (each call has its own
        timeout, C{[verification].store_timeout}); a pooled connection whose
        reply is overdue twice this is made again.
    @ivar pool_size: connections in the pool.  One by default: every command
        on it, pipelined with the others of the same reactor turn; txredisapi
        spreads commands over more at random, one write and one read each.
    @ivar sentinels: (host, port) of each sentinel; empty without Sentinel.
    @ivar sentinel_username: the sentinels' own ACL user, and its password.
    @ivar quorum: the C{sentinel monitor} quorum: a sentinel's word on the
        master is taken only when it knows C{quorum - 1} other sentinels.
    @ivar discovery_timeout: seconds to wait for the sentinels to name the master.
    """

    host: str = ""
    port: int = 0
    db: int = 0
    password: str | None = field(default=None, repr=False)
    username: str | None = None
    unix_socket: str | None = None
    embedded: bool = False
    dir: str = ""
    timeout: float = 1.5
    pool_size: int = 1
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    quorum: int = 0
    discovery_timeout: float = DEFAULT_DISCOVERY_TIMEOUT


@dataclass(frozen=True, slots=True)
class KeysConfig:
    """PEM files of our signing keys, absolute, the current key first.

    Only their presence and readability are checked here; the daemon parses
    them.  The later ones stay published, so certificates they signed still
    verify.
    """

    browserid: tuple[str, ...]
    jwt: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SMSConfig:
    """The texts: the fallback locale (a catalog's directory name), the
    WebOTP host of the origin-bound last line (C{None}: no such line), and
    the Android SMS Retriever app hashes clients may ask for (none: no
    client may put its own text in an SMS to another number)."""

    default_locale: str = "en"
    webotp_host: str | None = None
    app_hashes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The log's format (text or JSON lines), its least level, and which API
    requests write an access line (C{off}, C{errors}: answered 4xx or 5xx, C{all})."""

    format: str = "text"
    level: str = "info"
    access: str = "errors"


@dataclass(frozen=True, slots=True)
class DevConfig:
    """For development only: a fake SMSC inside the daemon, on these endpoints."""

    fake_smsc: bool = False
    fake_smsc_smpp: str = DEFAULT_FAKE_SMSC_SMPP
    fake_smsc_http: str = DEFAULT_FAKE_SMSC_HTTP


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, validated.

    @ivar path: the configuration file, absolute.
    @ivar warnings: problems that do not stop the daemon, one line each
        (C{"<file>: <where>: <problem>"}), for it to log at start-up.
    """

    path: str
    http: HTTPConfig
    admin: AdminConfig
    redis: RedisConfig
    keys: KeysConfig
    secrets: Secrets = field(repr=False)
    verification: VerificationSettings
    sms: SMSConfig
    carriers: tuple[CarrierConfig, ...]
    log: LogConfig
    dev: DevConfig
    limits: LimitSettings = LimitSettings()
    webhooks: tuple[WebhookConfig, ...] = ()
    environment: str = "production"
    warnings: tuple[str, ...] = ()


# --- entry points ------------------------------------------------------------

def load_config(path: str) -> Config:
    """Read and validate the configuration file at C{path}.

    @raise ConfigError: the file cannot be read, is not TOML, or holds a bad
        value; the message is one line naming the file and the key.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as e:
        raise ConfigError("", f"cannot read the configuration: {e.strerror or e}", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"byte {e.start}", "the configuration is not UTF-8 text", path) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = " ".join(str(e).split())
        match = _TOML_POSITION.fullmatch(message)
        if match:
            where, problem = match["where"].removeprefix("at "), match["problem"]
        else:
            where, problem = "", message
        raise ConfigError(where, f"not valid TOML: {problem}", path) from None
    return parse_config(data, path)


def parse_config(data: Mapping[str, Any], path: str) -> Config:
    """Validate parsed TOML, as if read from C{path}.

    Relative file names are resolved against C{path}'s directory (which is
    where the files are looked for).  Errors and warnings name C{path} as
    given.

    @raise ConfigError: the first problem found.
    """
    try:
        return _Reader(path).read(data)
    except ConfigError as e:
        raise e.in_file(path) from None


# --- the reader --------------------------------------------------------------

class _Reader:
    def __init__(self, path: str):
        self.file = path
        self.path = os.path.abspath(path)
        self.base = os.path.dirname(self.path)
        self.warnings: list[str] = []

    def warn(self, where: str, problem: str) -> None:
        self.warnings.append(f"{self.file}: {where}: {problem}")

    def section(self, data: Mapping[str, Any], name: str) -> Table:
        value = data.get(name)
        return Table({} if value is None else value, f"[{name}]", _SECTIONS[name])

    def read(self, data: Mapping[str, Any]) -> Config:
        places: dict[str, list[str]] = {}
        for section, keys in _SECTIONS.items():
            for key in keys:
                places.setdefault(key, []).append(f"[{section}]")
        Table(data, "", _SECTIONS, misplaced={
            key: f"put it under {' or '.join(where)}"
            for key, where in places.items() if key not in _SECTIONS})

        http = self.http(self.section(data, "http"))
        admin = self.admin(self.section(data, "admin"))
        redis = self.redis(self.section(data, "redis"))
        keys = self.keys(self.section(data, "keys"))
        secrets = self.secrets(self.section(data, "secrets"))
        verification = self.verification(self.section(data, "verification"))
        sms = self.sms(self.section(data, "sms"))
        carriers = parse_carriers(self.resolve_carrier_files(data.get("carrier", [])))
        log = self.log(self.section(data, "log"))
        dev = self.dev(self.section(data, "dev"))
        limits = self.limits(self.section(data, "limits"))
        webhooks = parse_webhooks(
            data.get("webhook"),
            lambda t, key, value: self.readable_file(t, key, value, private=True))
        environment = self.service(self.section(data, "service"))

        endpoints = [(f"[http].listen[{i}]" if len(http.listen) > 1 else "[http].listen", s)
                     for i, s in enumerate(http.listen)]
        if admin.listen is not None:
            endpoints.append(("[admin].listen", admin.listen))
        if dev.fake_smsc:
            endpoints += [("[dev].fake_smsc_smpp", dev.fake_smsc_smpp),
                          ("[dev].fake_smsc_http", dev.fake_smsc_http)]
        seen: dict[str, str] = {}
        for where, description in endpoints:
            if description in seen:
                raise ConfigError(where, f"is the same endpoint as {seen[description]}: "
                                         f"{description!r}")
            seen[description] = where

        return Config(
            path=self.path, http=http, admin=admin, redis=redis, keys=keys,
            secrets=secrets, verification=verification, sms=sms, carriers=carriers,
            log=log, dev=dev, limits=limits, webhooks=webhooks, environment=environment,
            warnings=tuple(self.warnings),
        )

    # -- helpers --

    def file_name(self, t: Table, key: str, value: Any) -> str:
        """A file name as written, made absolute against the config's directory."""
        if not isinstance(value, str) or not value:
            t.fail(key, f"must be a file name, not {kind(value)} ({value!r})")
        if "\0" in value:
            t.fail(key, f"must be a file name, not {value!r}")
        return os.path.normpath(os.path.join(self.base, value))

    def readable_file(self, t: Table, key: str, value: Any, *, private: bool) -> str:
        name = self.file_name(t, key, value)
        if os.path.isdir(name):
            t.fail(key, f"{name!r} is a directory, not a file")
        if not os.path.isfile(name):
            t.fail(key, f"no such file: {name!r}")
        if not os.access(name, os.R_OK):
            t.fail(key, f"not readable by this user: {name!r}")
        if private and os.stat(name).st_mode & stat.S_IROTH:
            self.warn(t.at(key), f"{name!r} is readable by every user; "
                                 "chmod o-r it (it holds a secret)")
        return name

    # -- sections --

    def service(self, t: Table) -> str:
        environment = t.string("environment", "production", limit=32)
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", environment):
            t.fail("environment", "must be a lowercase name such as 'development', 'testing' "
                                  f"or 'production', not {environment!r}")
        return environment

    def http(self, t: Table) -> HTTPConfig:
        listen_value = t.raw("listen")
        if listen_value is None:
            listen = (DEFAULT_HTTP_LISTEN,)
        elif isinstance(listen_value, str):
            listen = (_endpoint(t, "listen"),)
        elif is_array(listen_value):
            if not listen_value:
                t.fail("listen", "must list at least one endpoint")
            listen = tuple(_endpoint(t, f"listen[{i}]", item)
                           for i, item in enumerate(listen_value))
            for i, item in enumerate(listen):
                if item in listen[:i]:
                    t.fail(f"listen[{i}]", f"lists {item!r} twice")
        else:
            t.fail("listen", f"must be an endpoint description or an array of them, "
                             f"not {kind(listen_value)}")

        public_url = _public_url(t)
        prefix = t.string("api_prefix", "")
        if prefix:
            if not _PREFIX.fullmatch(prefix):
                t.fail("api_prefix", f"must be a URL path starting with '/', such as "
                                     f"'/v1/msisdn', not {prefix!r}")
            prefix = prefix.rstrip("/")
        if prefix:
            if not public_url.prefix:
                public_url = PublicURL(public_url.base + prefix)
            elif public_url.prefix != prefix:
                t.fail("api_prefix", f"must equal the path of public_url "
                                     f"({public_url.prefix!r}), not {prefix!r}; "
                                     "give the path in one of them only")

        origins: dict[str, None] = {}
        for i, item in enumerate(t.array("cors_origins")):
            origins[_origin(t, f"cors_origins[{i}]", item)] = None

        proxies: dict[Any, None] = {}
        for i, item in enumerate(t.array("trusted_proxies")):
            where = f"trusted_proxies[{i}]"
            if not isinstance(item, str):
                t.fail(where, f"must be an IP address or network as a string, not {kind(item)}")
            try:
                proxies[ipaddress.ip_network(item.strip(), strict=False)] = None
            except ValueError:
                t.fail(where, "must be an IP address or a CIDR network such as "
                              f"'10.0.0.0/8', not {item!r}")

        max_connections = t.integer("max_connections", DEFAULT_MAX_CONNECTIONS, 1, 1000000)
        per_client = t.integer("max_connections_per_client",
                               min(DEFAULT_MAX_CONNECTIONS_PER_CLIENT, max_connections),
                               1, 1000000)
        if per_client > max_connections:
            t.fail("max_connections_per_client",
                   f"must be at most max_connections ({max_connections}), not {per_client}")

        return HTTPConfig(
            listen=listen,
            public_url=public_url,
            cors_origins=tuple(origins),
            max_body=t.integer("max_body", 25600, 1024, 1048576),
            trusted_proxies=tuple(proxies),
            show_version=t.boolean("show_version", True),
            request_deadline=t.number("request_deadline", DEFAULT_REQUEST_DEADLINE,
                                      least=1.0, most=300.0),
            max_connections=max_connections,
            max_connections_per_client=per_client,
            hawk_require_payload_hash=self.payload_hash(t),
        )

    def payload_hash(self, t: Table) -> bool:
        required = t.boolean("hawk_require_payload_hash", True)
        if not required:
            self.warn(t.at("hawk_require_payload_hash"),
                      "false: Hawk request bodies without a payload hash are accepted "
                      "unauthenticated (a captured header can carry another body); "
                      "for legacy clients only")
        return required

    def admin(self, t: Table) -> AdminConfig:
        value = t.raw("listen")
        listen = (DEFAULT_ADMIN_LISTEN if value is None
                  else None if value == "" else _endpoint(t, "listen"))
        if t.raw("token_file") is None:
            return AdminConfig(listen)
        name = self.readable_file(t, "token_file", t.raw("token_file"), private=True)
        return AdminConfig(listen, name, self.admin_tokens(t, name))

    @staticmethod
    def admin_tokens(t: Table, name: str) -> tuple[AdminToken, ...]:
        """The tokens of C{token_file}: one a line, C{TOKEN} or C{NAME TOKEN};
        blank lines and C{#} comments are skipped."""
        content = _small_file(t, "token_file", name, _TOKEN_FILE_MAX, "")
        try:
            lines = content.decode("ascii").splitlines()
        except UnicodeDecodeError:
            t.fail("token_file", f"{name!r} must be ASCII text: one token a line")
        tokens: list[AdminToken] = []
        for number, line in enumerate(lines, 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if len(words) > 2 or not _ADMIN_TOKEN.fullmatch(words[-1]):
                t.fail("token_file", f"{name!r} line {number}: must be TOKEN or NAME TOKEN, "
                                     f"the token {_TOKEN_MIN}+ characters of A-Z a-z 0-9 _ - "
                                     "(msisdnd keygen --admin-token FILE makes one)")
            digest = hashlib.sha256(words[-1].encode()).digest()
            token_name = words[0] if len(words) == 2 else f"token-{digest.hex()[:8]}"
            tokens.append(AdminToken(token_name, digest))
        if not tokens:
            t.fail("token_file", f"{name!r} holds no token")
        return tuple(tokens)

    def redis(self, t: Table) -> RedisConfig:
        embedded = t.boolean("embedded", False)
        url = t.raw("url")
        sentinels = t.raw("sentinels")
        timeout = t.number("timeout", 1.5, above=0.0, most=30.0)
        pool_size = t.integer("pool_size", 1, 1, 64)
        chosen = [key for key, given in (("url", url is not None), ("embedded", embedded),
                                          ("sentinels", sentinels is not None)) if given]
        if len(chosen) > 1:
            t.fail(chosen[1], f"set url, embedded = true or sentinels, not both "
                              f"{chosen[0]} and {chosen[1]}")
        if not chosen:
            t.fail("url", "is required (or sentinels and master_name; or embedded = true, "
                          "for development)")
        if not embedded and t.raw("dir") is not None:
            t.fail("dir", "is only used with embedded = true")
        if sentinels is not None:
            return self.sentinels(t, timeout, pool_size)
        for key in _SENTINEL_ONLY:
            if t.raw(key) is not None:
                t.fail(key, "is only used with sentinels" + (
                    "; give it in url" if key in ("username", "password", "db") else ""))
        if embedded:
            dir_value = t.raw("dir")
            directory = self.file_name(t, "dir", DEFAULT_REDIS_DIR if dir_value is None
                                       else dir_value)
            socket = os.path.join(directory, EMBEDDED_SOCKET_NAME)
            if len(os.fsencode(socket)) > _UNIX_PATH_MAX:
                t.fail("dir", f"the embedded Redis socket {socket!r} would be longer than "
                              f"{_UNIX_PATH_MAX} bytes, more than a Unix socket's name can "
                              "be; choose a shorter dir")
            return RedisConfig(unix_socket=socket, embedded=True, dir=directory,
                               timeout=timeout, pool_size=pool_size)
        return RedisConfig(**_redis_url(t), dir="", timeout=timeout, pool_size=pool_size)

    def sentinels(self, t: Table, timeout: float, pool_size: int) -> RedisConfig:
        """C{[redis]} with C{sentinels}: their addresses, the master's name and credentials."""
        value = t.raw("sentinels")
        if not is_array(value):
            t.fail("sentinels", f'must be an array of "host:port" strings, not {kind(value)}')
        if not value:
            t.fail("sentinels", 'must list at least one sentinel, "host:port"')
        addresses: list[tuple[str, int]] = []
        for i, item in enumerate(value):
            address = _host_port(t, f"sentinels[{i}]", item)
            if address in addresses:
                t.fail(f"sentinels[{i}]", f"lists {item!r} twice")
            addresses.append(address)
        if len(addresses) < 3:
            self.warn(t.at("sentinels"), f"{len(addresses)} sentinel(s): a failover needs a "
                                         "majority of them to agree, so one machine lost can "
                                         "stop it; run three on separate machines")
        name = t.string("master_name", required=True, empty=False, limit=128)
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            t.fail("master_name", f"must be the name given in `sentinel monitor` (letters, "
                                  f"digits, '.', '_', '-'), not {name!r}")
        majority = len(addresses) // 2 + 1
        for user, password in (("username", "password"),
                               ("sentinel_username", "sentinel_password")):
            if t.raw(user) is not None and t.raw(password) is None:
                t.fail(user, f"needs {password} too (without it no AUTH is sent, and the "
                             f"connection is the default user's)")
        return RedisConfig(
            sentinels=tuple(addresses), master_name=name,
            username=t.string("username", empty=False, limit=128),
            password=t.string("password", empty=False, secret=True, limit=512),
            db=t.integer("db", 0, 0, 15),
            sentinel_username=t.string("sentinel_username", empty=False, limit=128),
            sentinel_password=t.string("sentinel_password", empty=False, secret=True,
                                       limit=512),
            quorum=t.integer("quorum", majority, 1, len(addresses)),
            discovery_timeout=t.number("discovery_timeout", DEFAULT_DISCOVERY_TIMEOUT,
                                       above=0.0, most=MAX_DISCOVERY_TIMEOUT),
            dir="", timeout=timeout, pool_size=pool_size)

    def keys(self, t: Table) -> KeysConfig:
        found = {}
        for key in ("browserid", "jwt"):
            value = t.raw(key)
            if value is None:
                t.fail(key, f"is required: PEM files of the {key} signing keys, the "
                            "current one first")
            if not is_array(value):
                t.fail(key, f"must be an array of file names (the current key first), "
                            f"not {kind(value)}")
            if not value:
                t.fail(key, "must list at least one key file")
            names = []
            for i, item in enumerate(value):
                name = self.readable_file(t, f"{key}[{i}]", item, private=True)
                if name in names:
                    t.fail(f"{key}[{i}]", f"lists {name!r} twice")
                self.signing_key(t, key, i, name)
                names.append(name)
            found[key] = tuple(names)
        return KeysConfig(**found)

    @staticmethod
    def signing_key(t: Table, slot: str, i: int, name: str) -> None:
        """Load the key file C{name} the way the daemon will, and check that
        it can sign in C{slot}."""
        from msisdnd.verification import certs

        try:
            key = certs.load_signing_key(name)
        except OSError as e:
            t.fail(f"{slot}[{i}]", f"cannot read {name!r}: {e.strerror or type(e).__name__}")
        except ValueError as e:
            t.fail(f"{slot}[{i}]", str(e))
        problem = certs.key_slot_problem(slot, key)
        if problem:
            t.fail(f"{slot}[{i}]", f"{name!r} {problem} ({key.algorithm} given)")

    def secrets(self, t: Table) -> Secrets:
        hint = (f"at least {MASTER_HEX_MIN} hexadecimal digits (an even number; "
                "`openssl rand -hex 32` makes one)")
        unseen = "; the value is not shown"
        inline = t.raw("master")
        file_value = t.raw("master_file")
        if inline is not None and file_value is not None:
            t.fail("master", "set master or master_file, not both")
        if inline is None and file_value is None:
            t.fail("master_file", "is required (or master): the file holding the master "
                                  f"secret, {hint}")
        if inline is not None:
            if not isinstance(inline, str):
                t.fail("master", f"must be a string of {hint}, not {kind(inline)}")
            master = _master_bytes(inline)
            if master is None:
                t.fail("master", f"must be {hint}{unseen}")
            if os.path.exists(self.path) and os.stat(self.path).st_mode & stat.S_IROTH:
                self.warn(t.at("master"), "the master secret is in a configuration file "
                                          "readable by every user; use master_file, or "
                                          "chmod o-r the configuration")
        else:
            name = self.readable_file(t, "master_file", file_value, private=True)
            content = _small_file(t, "master_file", name, _MASTER_FILE_MAX,
                                  "; it must hold the master secret alone")
            try:
                master = _master_bytes(content.decode("ascii"))
            except UnicodeDecodeError:
                master = None
            if master is None:
                t.fail("master_file", f"{name!r} must hold {hint}{unseen}")
        return Secrets.from_master(master)

    @staticmethod
    def ranged(t: Table, ranges: Mapping[str, tuple[str, float, float]],
               defaults: object) -> dict[str, Any]:
        """Each ranged key of C{t}: an C{int} count or a C{float} of seconds."""
        values: dict[str, Any] = {}
        for name, (which, low, high) in ranges.items():
            default = getattr(defaults, name)
            if which == "int":
                values[name] = t.integer(name, default, int(low), int(high))
            else:
                values[name] = t.number(name, default, least=low, most=high)
        return values

    def verification(self, t: Table) -> VerificationSettings:
        values = self.ranged(t, _VERIFICATION_RANGES, VerificationSettings())
        if values["long_code_hex"] % 2:
            t.fail("long_code_hex", f"must be even (whole bytes), not {values['long_code_hex']}")
        return VerificationSettings(**values)

    def sms(self, t: Table) -> SMSConfig:
        from msisdnd.verification.texts import DOMAIN, LOCALES_DIR

        catalogs = {path.parent.parent.name
                    for path in LOCALES_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.mo")}
        by_tag = {name.replace("_", "-").lower(): name for name in catalogs}
        locale = t.string("default_locale", "en", empty=False)
        found = by_tag.get(locale.replace("_", "-").lower())
        if found is None:
            t.fail("default_locale", f"must be one of the shipped catalogs "
                                     f"({', '.join(map(repr, sorted(catalogs)))}), not {locale!r}")

        host = t.string("webotp_host", empty=False)
        if host is not None:
            host = host.lower()
            if any(c in host for c in ":/@"):
                t.fail("webotp_host", f"must be a host name alone (no scheme, port or path), "
                                      f"not {host!r}")
            if len(host) > 253 or not _DNS_NAME.fullmatch(host):
                t.fail("webotp_host", f"must be an ASCII DNS name (punycode for others), "
                                      f"not {host!r}")
        hashes = []
        for i, item in enumerate(t.array("app_hashes")):
            if not isinstance(item, str) or not _APP_HASH.fullmatch(item):
                t.fail(f"app_hashes[{i}]", f"must be an app's 11-character SMS Retriever hash "
                                           f"([A-Za-z0-9+/]), not {item!r}")
            hashes.append(item)
        return SMSConfig(default_locale=found, webotp_host=host, app_hashes=frozenset(hashes))

    def limits(self, t: Table) -> LimitSettings:
        import phonenumbers

        from msisdnd.numbers import KINDS

        values = self.ranged(t, _LIMIT_RANGES, LimitSettings())
        # Defaults give way to what the operator wrote for the other side.
        if t.raw("number_lock_max") is None:
            values["number_lock_max"] = max(values["number_lock_max"], values["number_lock"])
        if t.raw("client_failures_day") is None:
            values["client_failures_day"] = min(values["client_failures_day"],
                                                values["number_failures_day"])
        if values["number_lock_max"] < values["number_lock"]:
            t.fail("number_lock_max", f"must be at least number_lock "
                                      f"({values['number_lock']:g}), the first lock's length")
        if values["client_failures_day"] > values["number_failures_day"]:
            t.fail("client_failures_day", f"must be at most number_failures_day "
                                          f"({values['number_failures_day']}): one client must "
                                          f"not be able to lock a number for everyone")
        countries = []
        for i, item in enumerate(t.array("countries")):
            region = item.upper() if isinstance(item, str) else item
            if region not in phonenumbers.SUPPORTED_REGIONS:
                t.fail(f"countries[{i}]", f"must be an ISO 3166 region phonenumbers knows "
                                          f"(e.g. \"FR\"), not {item!r}")
            countries.append(region)
        values["countries"] = frozenset(countries)
        values["allow_all_countries"] = t.boolean("allow_all_countries", False)
        if not countries and not values["allow_all_countries"]:
            t.fail("countries", "must list the countries served (ISO codes such as \"FR\"), or "
                                "set allow_all_countries = true: serving every country invites "
                                "SMS pumping to costly destinations")
        prefixes = []
        for i, item in enumerate(t.array("allow_prefixes")):
            if not isinstance(item, str) or not re.fullmatch(r"\+[0-9]{2,15}", item):
                t.fail(f"allow_prefixes[{i}]", f"must be a number prefix with its '+' "
                                               f"(e.g. \"+8817\"), not {item!r}")
            prefixes.append(item)
        values["allow_prefixes"] = frozenset(prefixes)
        if "number_types" in t.data:
            kinds = []
            for i, item in enumerate(t.array("number_types")):
                if item not in KINDS:
                    t.fail(f"number_types[{i}]", f"must be one of {sorted(KINDS)}, not {item!r}")
                kinds.append(item)
            values["number_types"] = frozenset(kinds)
        return LimitSettings(**values)

    def log(self, t: Table) -> LogConfig:
        return LogConfig(format=t.choice("format", "text", LOG_FORMATS),
                         level=t.choice("level", "info", LOG_LEVELS),
                         access=t.choice("access", "errors", LOG_ACCESS))

    def dev(self, t: Table) -> DevConfig:
        return DevConfig(
            fake_smsc=t.boolean("fake_smsc", False),
            fake_smsc_smpp=(_endpoint(t, "fake_smsc_smpp")
                            if t.raw("fake_smsc_smpp") is not None else DEFAULT_FAKE_SMSC_SMPP),
            fake_smsc_http=(_endpoint(t, "fake_smsc_http")
                            if t.raw("fake_smsc_http") is not None else DEFAULT_FAKE_SMSC_HTTP),
        )

    def resolve_carrier_files(self, items: Any) -> Any:
        """The carrier tables with their C{tls} file names made absolute.

        Anything unexpected is passed through for L{parse_carriers} to refuse.
        """
        if not is_array(items):
            return items

        def tls(table: Any) -> Any:
            if not isinstance(table, Mapping) or not isinstance(table.get("tls"), Mapping):
                return table
            files = {key: os.path.normpath(os.path.join(self.base, value))
                     for key in ("ca_file", "cert_file", "key_file")
                     if isinstance(value := table["tls"].get(key), str) and value}
            return {**table, "tls": {**table["tls"], **files}}

        resolved = []
        for item in items:
            item = tls(item)
            if isinstance(item, Mapping) and is_array(item.get("sessions")):
                item = {**item, "sessions": [tls(s) for s in item["sessions"]]}
            resolved.append(item)
        return resolved


# --- values ------------------------------------------------------------------

def _small_file(t: Table, key: str, name: str, limit: int, hint: str) -> bytes:
    """The content of the file C{name} that C{key} names, at most C{limit} bytes."""
    try:
        with open(name, "rb") as handle:
            content = handle.read(limit + 1)
    except OSError as e:
        t.fail(key, f"cannot read {name!r}: {e.strerror or type(e).__name__}")
    if len(content) > limit:
        t.fail(key, f"{name!r} is larger than {limit} bytes{hint}")
    return content


def _endpoint(t: Table, key: str, value: Any = None) -> str:
    """A strports description, parsed to check it (C{systemd:} ones are not).

    @param key: where the value is, in C{t} (C{"listen[1]"} for an item).
    """
    if value is None:
        value = t.raw(key)
    if not isinstance(value, str):
        t.fail(key, f"must be an endpoint description such as {DEFAULT_HTTP_LISTEN!r}, "
                    f"not {kind(value)}")
    if not value.strip():
        t.fail(key, f"must be an endpoint description such as {DEFAULT_HTTP_LISTEN!r}, "
                    "not empty")
    if value.startswith("systemd:"):
        # Resolvable only under socket activation (LISTEN_FDS); taken on trust.
        return value
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    try:
        endpoint = serverFromString(reactor, value)
    except Exception as e:  # noqa: BLE001 (plugins raise anything)
        detail = " ".join(str(e).split()) or type(e).__name__
        t.fail(key, f"not a valid endpoint description ({detail}): {value!r}")
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        t.fail(key, f"the port must be between 0 and 65535, not {port}: {value!r}")
    return value


def _masked(url: str) -> str:
    """A URL fit for a message: its password, if any, replaced by C{***}."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", url))


def _public_url(t: Table) -> PublicURL:
    value = t.raw("public_url")
    if value is None:
        t.fail("public_url", "is required: where clients reach us, such as "
                             "'https://verify.example.com'")
    if not isinstance(value, str):
        t.fail("public_url", f"must be a string, not {kind(value)}")
    bad = f"must be http(s)://host[:port][/prefix], not {_masked(value)!r}"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        t.fail("public_url", bad)
    if (parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc
            or parts.query or parts.fragment or value.endswith(("?", "#"))
            or not value.isascii() or any(c.isspace() for c in value)
            or (parts.path and not _PREFIX.fullmatch(parts.path))):
        t.fail("public_url", bad)
    try:
        return PublicURL(value)
    except ValueError:
        t.fail("public_url", bad)


def _origin(t: Table, key: str, value: Any) -> str:
    """A CORS origin, normalized: lowercase, without its scheme's default port."""
    if not isinstance(value, str):
        t.fail(key, f"must be an origin such as 'https://app.example' as a string, "
                    f"not {kind(value)}")
    bad = f"must be an origin, scheme://host[:port] without a path, such as " \
          f"'https://app.example', not {_masked(value)!r}"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        t.fail(key, bad)
    if (parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc
            or parts.path or parts.query or parts.fragment or value.endswith(("?", "#"))
            or not value.isascii() or any(c.isspace() for c in value)):
        t.fail(key, bad)
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def _redis_url(t: Table) -> dict[str, Any]:
    """C{[redis].url} as RedisConfig's connection fields."""
    value = t.raw("url")
    if not isinstance(value, str):
        t.fail("url", f"must be a string, not {kind(value)}")
    shown = _masked(value)
    bad = ("must be redis://[[user]:password@]host[:port][/db] or "
           f"unix:///path/to/socket[?db=N], not {shown!r}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        t.fail("url", bad)
    if parts.fragment or not value.isascii() or any(c.isspace() for c in value):
        t.fail("url", bad)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None

    if parts.scheme == "rediss":
        t.fail("url", f"TLS to Redis (rediss://) is not supported; use redis:// over a "
                      f"private network or a local TLS tunnel, not {shown!r}")
    if parts.scheme == "redis":
        if not parts.hostname or parts.query:
            t.fail("url", bad)
        if port is None:
            port = DEFAULT_REDIS_PORT
        if port == 0:
            t.fail("url", f"the port must be between 1 and 65535, not 0: {shown!r}")
        db_text = parts.path.removeprefix("/")
        if db_text and not (db_text.isdigit() and db_text.isascii()):
            t.fail("url", f"the database must be a number after the '/', not {shown!r}")
        return {"host": parts.hostname, "port": port, "db": int(db_text or 0),
                    "username": username, "password": password, "unix_socket": None}
    if parts.scheme == "unix":
        if parts.hostname or port is not None or not parts.path.startswith("/") \
                or parts.path.endswith("/"):
            t.fail("url", f"a socket must be unix:///absolute/path[?db=N], not {shown!r}")
        db = 0
        try:
            query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True) \
                if parts.query else []
        except ValueError:
            t.fail("url", bad)
        for name, item in query:
            if name == "db" and item.isdigit() and item.isascii():
                db = int(item)
            elif name == "password" and item:
                password = item
            else:
                t.fail("url", f"the query may give only db=N and password=..., "
                              f"not {shown!r}")
        return {"host": "", "port": 0, "db": db, "username": username, "password": password,
                    "unix_socket": unquote(parts.path)}
    t.fail("url", bad)


def _host_port(t: Table, key: str, value: Any) -> tuple[str, int]:
    """A C{"host:port"} (an IPv6 address in brackets) as (host, port)."""
    bad = f'must be "host:port" (an IPv6 address as "[::1]:26379"), not {value!r}'
    if not isinstance(value, str) or not value.isascii():
        t.fail(key, bad)
    host, colon, port_text = value.rpartition(":")
    if not colon or not port_text.isdigit() or not host:
        t.fail(key, bad)
    port = int(port_text)
    if not 1 <= port <= 65535:
        t.fail(key, f"the port must be between 1 and 65535, not {port}: {value!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1])), port
        except ValueError:
            t.fail(key, bad)
    host = host.lower()
    if ":" in host or len(host) > 253 or not _DNS_NAME.fullmatch(host):
        t.fail(key, bad)
    return host, port


def _master_bytes(text: str) -> bytes | None:
    """The master secret's bytes, or C{None} if C{text} is not enough hex."""
    text = text.strip()
    if len(text) < MASTER_HEX_MIN or len(text) % 2 or not _HEX.fullmatch(text):
        return None
    return bytes.fromhex(text)
