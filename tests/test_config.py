"""Tests for L{msisdnd.config}: one TOML file in, one frozen L{Config} out."""

from __future__ import annotations

import copy
import dataclasses
import functools
import ipaddress
import os
import pathlib
import pickle
import re
import shutil
import stat
import tempfile
from typing import Any
from urllib.parse import urlsplit

import pytest

from msisdnd import config as config_module
from msisdnd.config import (
    Config,
    ConfigError,
    RedisConfig,
    load_config,
    parse_config,
)
from msisdnd.verification.settings import Secrets, VerificationSettings
from msisdnd.smpp import config as carrier_config

REPO = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = REPO / "etc" / "msisdnd.toml"
DEV = REPO / "etc" / "msisdnd.dev.toml"
MASTER = "0123456789abcdef" * 4
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def private_file(path: pathlib.Path, text: str = "") -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


@functools.cache
def signing_keys() -> dict[str, str]:
    """The PEM text of a BrowserID key and a JWT key, made once for the run."""
    from msisdnd.cli import keygen

    with tempfile.TemporaryDirectory() as where, open(os.devnull, "w") as quiet:
        keygen(f"{where}/keys", f"{where}/master", quiet)
        return {name: pathlib.Path(f"{where}/keys/{name}.pem").read_text()
                for name in ("browserid", "jwt")}


def key_files(directory: pathlib.Path) -> None:
    """keys/browserid.pem and keys/jwt.pem in C{directory}, as keygen makes them."""
    for name, pem in signing_keys().items():
        private_file(directory / "keys" / f"{name}.pem", pem)


@pytest.fixture
def confdir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A directory with the files a minimal configuration names."""
    key_files(tmp_path)
    private_file(tmp_path / "secrets" / "master", MASTER + "\n")
    return tmp_path


def minimal(**sections: Any) -> dict[str, Any]:
    """The smallest configuration that works, with sections replaced or added."""
    data: dict[str, Any] = {
        "http": {"public_url": "https://verify.example.com"},
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        "keys": {"browserid": ["keys/browserid.pem"], "jwt": ["keys/jwt.pem"]},
        "secrets": {"master_file": "secrets/master"},
        "carrier": [{"name": "fake", "host": "127.0.0.1", "system_id": "msisdnd",
                     "password": "dev", "default": True}],
    }
    data.update(copy.deepcopy(sections))
    limits = data.setdefault("limits", {})
    if "countries" not in limits and "allow_all_countries" not in limits:
        limits["countries"] = ["FR"]  # a configuration must say which countries it serves
    return data


def parse(confdir: pathlib.Path, data: dict[str, Any]) -> Config:
    return parse_config(data, str(confdir / "msisdnd.toml"))


def error(confdir: pathlib.Path, data: dict[str, Any]) -> ConfigError:
    return pytest.raises(ConfigError, parse, confdir, data).value


def with_value(section: str, key: str, value: Any) -> dict[str, Any]:
    data = minimal()
    table = data.setdefault(section, {})
    if value is _DELETE:
        table.pop(key, None)
    else:
        table[key] = value
    return data


_DELETE = object()


# --- the shipped files -------------------------------------------------------

def sample_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    """etc/msisdnd.toml in tmp_path, its /etc/msisdnd/ files made there."""
    text = SAMPLE.read_text().replace("/etc/msisdnd/", f"{tmp_path}/")
    key_files(tmp_path)
    private_file(tmp_path / "secrets" / "master", MASTER)
    private_file(tmp_path / "secrets" / "webhook-rp", "whsec_" + "A" * 44)
    path = tmp_path / "msisdnd.toml"
    path.write_text(text)
    return path


def test_the_sample_parses(tmp_path: pathlib.Path) -> None:
    config = load_config(str(sample_copy(tmp_path)))
    assert config.path == str(tmp_path / "msisdnd.toml")
    assert config.http.public_url.base == "https://verify.example.com"
    assert config.keys.browserid == (str(tmp_path / "keys" / "browserid.pem"),)
    assert config.keys.jwt == (str(tmp_path / "keys" / "jwt.pem"),)
    assert config.secrets == Secrets.from_master(bytes.fromhex(MASTER))
    (carrier,) = config.carriers
    assert carrier.bind == "transceiver" and carrier.default and carrier.tls is not None
    assert config.redis.host == "127.0.0.1" and config.redis.port == 6379
    assert config.warnings == ()


_DEFAULTED = {
    "http": ("listen", "api_prefix", "cors_origins", "max_body", "trusted_proxies",
             "show_version"),
    "admin": ("listen",),
    "redis": ("embedded", "timeout", "pool_size"),
    "verification": tuple(f.name for f in dataclasses.fields(VerificationSettings)),
    "sms": ("default_locale",),
    "log": ("format", "level"),
    "dev": ("fake_smsc", "fake_smsc_smpp", "fake_smsc_http"),
}


def test_the_sample_gives_the_defaults(tmp_path: pathlib.Path) -> None:
    """Every value the sample writes for a key with a default is that default."""
    import tomllib

    path = sample_copy(tmp_path)
    data = tomllib.loads(path.read_text())
    stripped = copy.deepcopy(data)
    for section, keys in _DEFAULTED.items():
        for key in keys:
            stripped[section].pop(key)
    assert parse_config(stripped, str(path)) == load_config(str(path))


def test_the_sample_shows_every_key() -> None:
    text = SAMPLE.read_text()
    sections = re.split(r"^\[+(\w+)\]+\s*$", text, flags=re.MULTILINE)
    bodies: dict[str, str] = {}
    for name, body in zip(sections[1::2], sections[2::2]):
        bodies[name] = bodies.get(name, "") + body
    assert set(bodies) == set(config_module._SECTIONS)
    for section, keys in config_module._SECTIONS.items():
        for key in keys:
            assert re.search(rf"^#?\s*{key} = ", bodies[section], re.MULTILINE), (section, key)
    assert "etc/carriers.example.toml" in text


def dev_layout(tmp_path: pathlib.Path) -> pathlib.Path:
    """The repository's etc/ and var/ in tmp_path, as the run script leaves them."""
    (tmp_path / "etc").mkdir()
    shutil.copy(DEV, tmp_path / "etc" / "msisdnd.dev.toml")
    return tmp_path / "etc" / "msisdnd.dev.toml"


def test_the_dev_config_parses(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = dev_layout(tmp_path)
    key_files(tmp_path / "var")
    private_file(tmp_path / "var" / "secrets" / "master", MASTER + "\n")
    private_file(tmp_path / "var" / "secrets" / "admin.token", "admin " + "a" * 43 + "\n")
    monkeypatch.chdir(tmp_path / "var")       # not where the files are looked for
    config = load_config(str(path))
    var = tmp_path / "var"
    assert config.redis.embedded
    assert config.redis.dir == str(var / "redis")
    assert config.redis.unix_socket == str(var / "redis" / "redis.sock")
    assert config.keys.browserid == (str(var / "keys" / "browserid.pem"),)
    assert config.keys.jwt == (str(var / "keys" / "jwt.pem"),)
    assert config.dev.fake_smsc
    assert config.http.public_url.base == "http://127.0.0.1:8000"
    assert config.admin.listen == "tcp:8001:interface=127.0.0.1"
    assert [t.name for t in config.admin.tokens] == ["admin"]
    (fake,) = config.carriers
    assert (fake.name, fake.host, fake.port, fake.system_id, fake.password) == (
        "fake", "127.0.0.1", 2775, "msisdnd", "dev")
    assert (fake.mt_sender, fake.mo_verifier, fake.default, fake.region) == (
        "msisdnd", "33700000000", True, "FR")
    assert fake.reconnect_delay_initial < 1
    assert config.warnings == ()


def test_the_dev_config_before_the_first_run(tmp_path: pathlib.Path) -> None:
    """Without var/, the error names the first missing file, absolute."""
    path = dev_layout(tmp_path)
    e = pytest.raises(ConfigError, load_config, str(path)).value
    assert e.path == "[admin].token_file"
    assert str(tmp_path / "var" / "secrets" / "admin.token") in e.problem


# --- errors name the file and the key ----------------------------------------

BAD_VALUES = [
    # section, key, value, where, in the problem
    ("http", "public_url", "ftp://x", "[http].public_url",
     "must be http(s)://host[:port][/prefix], not 'ftp://x'"),
    ("http", "public_url", _DELETE, "[http].public_url", "is required"),
    ("http", "public_url", "https://verify.example.com/?a=1", "[http].public_url", "must be"),
    ("http", "public_url", "https://verify.example.com:99999", "[http].public_url", "must be"),
    ("http", "public_url", "https://", "[http].public_url", "must be"),
    ("http", "public_url", 8000, "[http].public_url", "must be a string"),
    ("http", "listen", "tcp:abc", "[http].listen", "not a valid endpoint description"),
    ("http", "listen", "tcp:8000:bogus=1", "[http].listen", "not a valid endpoint description"),
    ("http", "listen", "nosuchtype:1", "[http].listen", "not a valid endpoint description"),
    ("http", "listen", "tcp:99999", "[http].listen", "between 0 and 65535"),
    ("http", "listen", "", "[http].listen", "not empty"),
    ("http", "listen", ["tcp:8000", "tcp:x"], "[http].listen[1]", "not a valid endpoint"),
    ("http", "listen", ["tcp:8000", "tcp:8000"], "[http].listen[1]", "twice"),
    ("http", "listen", [], "[http].listen", "at least one"),
    ("http", "listen", 8000, "[http].listen", "an array of them"),
    ("http", "api_prefix", "v1", "[http].api_prefix", "starting with '/'"),
    ("http", "api_prefix", 1, "[http].api_prefix", "must be a string"),
    ("http", "cors_origins", ["https://app.example/"], "[http].cors_origins[0]",
     "without a path"),
    ("http", "cors_origins", ["*"], "[http].cors_origins[0]", "must be an origin"),
    ("http", "cors_origins", ["ftp://app.example"], "[http].cors_origins[0]", "must be an origin"),
    ("http", "cors_origins", [1], "[http].cors_origins[0]", "as a string"),
    ("http", "cors_origins", "https://app.example", "[http].cors_origins", "must be an array"),
    ("http", "max_body", 1023, "[http].max_body", "between 1024 and 1048576, not 1023"),
    ("http", "max_body", 1048577, "[http].max_body", "between 1024 and 1048576"),
    ("http", "max_body", "25k", "[http].max_body", "must be an integer"),
    ("http", "trusted_proxies", ["10.0.0.300"], "[http].trusted_proxies[0]", "CIDR"),
    ("http", "trusted_proxies", ["10.0.0.0/33"], "[http].trusted_proxies[0]", "CIDR"),
    ("http", "trusted_proxies", [10], "[http].trusted_proxies[0]", "as a string"),
    ("http", "show_version", "yes", "[http].show_version", "must be true or false"),
    ("admin", "listen", "tcp:x", "[admin].listen", "not a valid endpoint description"),
    ("admin", "listen", 8001, "[admin].listen", "endpoint description"),
    ("admin", "listen", "tcp:8000:interface=127.0.0.1", "[admin].listen",
     "same endpoint as [http].listen"),
    ("redis", "url", _DELETE, "[redis].url", "is required"),
    ("redis", "url", "http://127.0.0.1", "[redis].url", "must be redis://"),
    ("redis", "url", "redis://", "[redis].url", "must be redis://"),
    ("redis", "url", "redis://h:port/0", "[redis].url", "must be redis://"),
    ("redis", "url", "redis://h:0", "[redis].url", "between 1 and 65535"),
    ("redis", "url", "redis://h/zero", "[redis].url", "the database must be a number"),
    ("redis", "url", "redis://h/0?timeout=1", "[redis].url", "must be redis://"),
    ("redis", "url", "rediss://h", "[redis].url", "TLS"),
    ("redis", "url", "unix://relative/redis.sock", "[redis].url", "absolute"),
    ("redis", "url", "unix:///run/redis.sock?db=one", "[redis].url", "only db=N"),
    ("redis", "url", 6379, "[redis].url", "must be a string"),
    ("redis", "embedded", True, "[redis].embedded", "not both"),
    ("redis", "embedded", "yes", "[redis].embedded", "must be true or false"),
    ("redis", "dir", "var/redis", "[redis].dir", "only used with embedded = true"),
    ("redis", "timeout", 0, "[redis].timeout", "greater than 0"),
    ("redis", "timeout", 31, "[redis].timeout", "at most 30"),
    ("redis", "pool_size", 0, "[redis].pool_size", "between 1 and 64, not 0"),
    ("redis", "pool_size", 65, "[redis].pool_size", "between 1 and 64"),
    ("redis", "sentinels", ["127.0.0.1:26379"], "[redis].sentinels", "not both url and sentinels"),
    ("redis", "password", "pw", "[redis].password", "only used with sentinels; give it in url"),
    ("redis", "master_name", "mymaster", "[redis].master_name", "only used with sentinels"),
    ("redis", "quorum", 2, "[redis].quorum", "only used with sentinels"),
    ("keys", "browserid", _DELETE, "[keys].browserid", "is required"),
    ("keys", "jwt", [], "[keys].jwt", "at least one"),
    ("keys", "jwt", "keys/jwt.pem", "[keys].jwt", "must be an array"),
    ("keys", "jwt", ["keys/jwt.pem", "keys/../keys/jwt.pem"], "[keys].jwt[1]", "twice"),
    ("keys", "browserid", ["keys/nope.pem"], "[keys].browserid[0]", "no such file"),
    ("keys", "browserid", ["keys"], "[keys].browserid[0]", "is a directory, not a file"),
    ("keys", "jwt", [1], "[keys].jwt[0]", "must be a file name"),
    ("keys", "jwt", [""], "[keys].jwt[0]", "must be a file name"),
    ("secrets", "master_file", _DELETE, "[secrets].master_file", "is required (or master)"),
    ("secrets", "master", MASTER, "[secrets].master", "not both"),
    ("secrets", "master_file", "secrets/nope", "[secrets].master_file", "no such file"),
    ("secrets", "master_file", 1, "[secrets].master_file", "must be a file name"),
    ("verification", "long_code_hex", 33, "[verification].long_code_hex", "must be even"),
    ("verification", "max_tries", "3", "[verification].max_tries", "must be an integer"),
    ("verification", "code_ttl", "10m", "[verification].code_ttl", "must be a number"),
    ("verification", "max_tries", True, "[verification].max_tries", "must be an integer"),
    ("sms", "default_locale", "de", "[sms].default_locale", "shipped catalogs"),
    ("sms", "default_locale", "", "[sms].default_locale", "must not be empty"),
    ("sms", "webotp_host", "https://app.example", "[sms].webotp_host", "host name alone"),
    ("sms", "webotp_host", "app.example:443", "[sms].webotp_host", "host name alone"),
    ("sms", "webotp_host", "-app.example", "[sms].webotp_host", "ASCII DNS name"),
    ("sms", "webotp_host", "ex\u00e4mple.com", "[sms].webotp_host", "printable ASCII"),
    ("log", "format", "xml", "[log].format", "must be one of 'text', 'json', not 'xml'"),
    ("log", "level", "warning", "[log].level", "must be one of"),
    ("log", "access", "errors-only", "[log].access",
     "must be one of 'off', 'errors', 'all', not 'errors-only'"),
    ("log", "access", True, "[log].access", "must be one of"),
    ("dev", "fake_smsc", "yes", "[dev].fake_smsc", "must be true or false"),
    ("dev", "fake_smsc_smpp", "tcp:nope", "[dev].fake_smsc_smpp", "not a valid endpoint"),
    ("dev", "fake_smsc_http", "", "[dev].fake_smsc_http", "not empty"),
]


@pytest.mark.parametrize(("section", "key", "value", "where", "problem"), BAD_VALUES,
                         ids=[f"{c[3]}={c[2]!r}" for c in BAD_VALUES])
def test_bad_values(confdir: pathlib.Path, section: str, key: str, value: Any,
                    where: str, problem: str) -> None:
    e = error(confdir, with_value(section, key, value))
    assert e.path == where
    assert problem in e.problem
    assert e.file == str(confdir / "msisdnd.toml")
    assert str(e) == f"{confdir / 'msisdnd.toml'}: {where}: {e.problem}"
    assert "\n" not in str(e)


def test_the_example_messages(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is named as the operator gave it; carrier errors keep their form."""
    monkeypatch.chdir(tmp_path)
    key_files(tmp_path / "etc")
    private_file(tmp_path / "etc" / "secrets" / "master", MASTER)
    data = with_value("http", "public_url", "ftp://x")
    e = pytest.raises(ConfigError, parse_config, data, "etc/msisdnd.toml").value
    assert str(e) == ("etc/msisdnd.toml: [http].public_url: must be "
                      "http(s)://host[:port][/prefix], not 'ftp://x'")
    data = minimal()
    data["carrier"][0]["window"] = 0
    e = pytest.raises(ConfigError, parse_config, data, "etc/msisdnd.toml").value
    assert str(e) == ('etc/msisdnd.toml: carrier[0] "fake".window: '
                      "must be between 1 and 1000, not 0")


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(VerificationSettings)])
def test_verification_ranges(confdir: pathlib.Path, name: str) -> None:
    which, low, high = config_module._VERIFICATION_RANGES[name]
    step = 1 if which == "int" else 0.01
    for value, problem in ((low - step, str(low)), (high + step, str(high))):
        value = int(value) if which == "int" else value
        e = error(confdir, with_value("verification", name, value))
        assert e.path == f"[verification].{name}"
        assert f"{high:g}" in e.problem or f"{low:g}" in e.problem
    ok = parse(confdir, with_value("verification", name, int(high)))
    assert getattr(ok.verification, name) == high


def test_verification_defaults(confdir: pathlib.Path) -> None:
    """Every VerificationSettings field is configurable, and defaults to its default."""
    assert set(config_module._VERIFICATION_RANGES) == {
        f.name for f in dataclasses.fields(VerificationSettings)}
    assert parse(confdir, minimal()).verification == VerificationSettings()
    for f in dataclasses.fields(VerificationSettings):
        _, low, high = config_module._VERIFICATION_RANGES[f.name]
        assert low <= f.default <= high, f.name


def test_verification_values(confdir: pathlib.Path) -> None:
    config = parse(confdir, minimal(verification={
        "short_code_digits": 8, "code_ttl": 300, "store_timeout": 0.5}))
    assert config.verification == VerificationSettings(
        short_code_digits=8, code_ttl=300.0, store_timeout=0.5)
    assert isinstance(config.verification.code_ttl, float)


@pytest.mark.parametrize(("data", "where"), [
    (minimal(http="https://x"), "[http]"),
    (minimal(redis=[{"url": "redis://h"}]), "[redis]"),
    (minimal(carrier={"name": "fake"}), "carrier"),
    (minimal(carrier=[]), "carrier"),
])
def test_bad_sections(confdir: pathlib.Path, data: dict[str, Any], where: str) -> None:
    e = error(confdir, data)
    assert e.path == where


def test_no_carrier(confdir: pathlib.Path) -> None:
    data = minimal()
    del data["carrier"]
    e = error(confdir, data)
    assert e.path == "carrier" and "at least one [[carrier]]" in e.problem


# --- unknown keys --------------------------------------------------------------

@pytest.mark.parametrize(("data", "where", "problem"), [
    (minimal(htp={}), "htp", "unknown key; did you mean 'http'?"),
    (minimal(carriers=[]), "carriers", "did you mean 'carrier'?"),
    (minimal(public_url="https://x"), "public_url", "put it under [http]"),
    (minimal(listen="tcp:1"), "listen", "put it under [http] or [admin]"),
    (minimal(zzz=1), "zzz", "known keys are admin, carrier, dev"),
    (with_value("http", "publc_url", "x"), "[http].publc_url", "did you mean 'public_url'?"),
    (with_value("redis", "poolsize", 1), "[redis].poolsize", "did you mean 'pool_size'?"),
    (with_value("verification", "code_tll", 1), "[verification].code_tll",
     "did you mean 'code_ttl'?"),
    (with_value("secrets", "mastr", "x"), "[secrets].mastr", "did you mean 'master'?"),
    (with_value("log", "lvl", "x"), "[log].lvl", "did you mean 'level'?"),
    (with_value("dev", "fake_smsc_smp", "x"), "[dev].fake_smsc_smp",
     "did you mean 'fake_smsc_smpp'?"),
])
def test_unknown_keys(confdir: pathlib.Path, data: dict[str, Any], where: str,
                      problem: str) -> None:
    e = error(confdir, data)
    assert e.path == where and problem in e.problem


def test_unknown_carrier_key(confdir: pathlib.Path) -> None:
    data = minimal()
    data["carrier"][0]["windw"] = 1
    e = error(confdir, data)
    assert e.path == 'carrier[0] "fake".windw' and "did you mean 'window'?" in e.problem


# --- secrets -------------------------------------------------------------------

BAD_SECRETS = [
    "deadbeef" * 7 + "c0ffee",                 # 62 digits: too short
    "deadbeef" * 8 + "c",                      # odd
    "deadbeef" * 7 + "zzsecretzz" + "dead",    # not hex
    "deadbeef" * 8 + "\u00e9",                 # not ASCII
    "deadbeef" * 4 + " " + "deadbeef" * 4,     # a space inside
]


@pytest.mark.parametrize("secret", BAD_SECRETS)
def test_bad_secret_inline_never_shown(confdir: pathlib.Path, secret: str) -> None:
    e = error(confdir, minimal(secrets={"master": secret}))
    assert e.path == "[secrets].master"
    assert "openssl rand -hex 32" in e.problem
    for text in (str(e), repr(e), repr(e.args)):
        assert secret not in text and "deadbeef" not in text


@pytest.mark.parametrize("secret", BAD_SECRETS + ["", "\0\0\0" * 30, "deadbeef" * 1000])
def test_bad_secret_file_never_shown(confdir: pathlib.Path, secret: str) -> None:
    private_file(confdir / "secrets" / "master").write_bytes(secret.encode("latin-1"))
    e = error(confdir, minimal())
    assert e.path == "[secrets].master_file"
    assert str(confdir / "secrets" / "master") in e.problem
    for text in (str(e), repr(e)):
        assert "deadbeef" not in text


def test_secret_of_the_wrong_type(confdir: pathlib.Path) -> None:
    e = error(confdir, minimal(secrets={"master": 0x0123456789ABCDEF}))
    assert e.path == "[secrets].master" and "not an integer" in e.problem
    assert str(0x0123456789ABCDEF) not in str(e)


def test_secret_inline_and_from_file(confdir: pathlib.Path) -> None:
    expected = Secrets.from_master(bytes.fromhex(MASTER))
    assert parse(confdir, minimal()).secrets == expected
    upper = parse(confdir, minimal(secrets={"master": MASTER.upper()}))
    assert upper.secrets == expected
    longer = parse(confdir, minimal(secrets={"master": MASTER * 2}))
    assert longer.secrets == Secrets.from_master(bytes.fromhex(MASTER * 2))


def test_the_config_repr_hides_secrets(confdir: pathlib.Path) -> None:
    config = parse(confdir, minimal(redis={"url": "redis://:hunter2pw@h:6379/1"}))
    assert config.redis.password == "hunter2pw"
    text = repr(config)
    assert "hunter2pw" not in text and MASTER not in text
    assert config.secrets.session.hex() not in text


def test_redis_password_masked_in_errors(confdir: pathlib.Path) -> None:
    for url in ("redis://:hunter2pw@h:port/0", "redis://:hunter2pw@h/x",
                "unix:///run/r.sock?password=hunter2pw&db=x",
                "rediss://u:hunter2pw@h"):
        e = error(confdir, with_value("redis", "url", url))
        assert e.path == "[redis].url"
        assert "hunter2pw" not in str(e) and "***" in str(e)


def test_public_url_credentials_masked(confdir: pathlib.Path) -> None:
    e = error(confdir, with_value("http", "public_url", "https://u:hunter2pw@h"))
    assert "hunter2pw" not in str(e)


# --- values --------------------------------------------------------------------

@pytest.mark.parametrize(("url", "fields"), [
    ("redis://localhost", {"host": "localhost", "port": 6379, "db": 0, "password": None,
                           "username": None, "unix_socket": None}),
    ("redis://:pw@redis.example:6380/3", {"host": "redis.example", "port": 6380, "db": 3,
                                          "password": "pw", "username": None}),
    ("redis://msisdnd:p%40ss@h/1", {"host": "h", "db": 1, "username": "msisdnd",
                                    "password": "p@ss"}),
    ("redis://[::1]:6379/", {"host": "::1", "port": 6379, "db": 0}),
    ("unix:///run/redis/redis.sock", {"host": "", "port": 0, "db": 0,
                                      "unix_socket": "/run/redis/redis.sock"}),
    ("unix:///run/redis.sock?db=2&password=pw", {"unix_socket": "/run/redis.sock", "db": 2,
                                                 "password": "pw"}),
])
def test_redis_urls(confdir: pathlib.Path, url: str, fields: dict[str, Any]) -> None:
    redis = parse(confdir, with_value("redis", "url", url)).redis
    for name, value in fields.items():
        assert getattr(redis, name) == value, name
    assert not redis.embedded and (redis.timeout, redis.pool_size) == (1.5, 1)


def test_redis_embedded(confdir: pathlib.Path) -> None:
    redis = parse(confdir, minimal(redis={"embedded": True, "timeout": 3, "pool_size": 2})).redis
    assert redis == RedisConfig(unix_socket=str(confdir / "var" / "redis" / "redis.sock"),
                                embedded=True, dir=str(confdir / "var" / "redis"),
                                timeout=3.0, pool_size=2)
    redis = parse(confdir, minimal(redis={"embedded": True, "dir": "/srv/r"})).redis
    assert redis.dir == "/srv/r" and redis.unix_socket == "/srv/r/redis.sock"


SENTINELS = ["10.0.0.1:26379", "sentinel-b.example:26380", "[::1]:26379"]


def sentinel_config(**more: Any) -> dict[str, Any]:
    return minimal(redis={"sentinels": SENTINELS, "master_name": "msisdnd", **more})


def test_redis_sentinels(confdir: pathlib.Path) -> None:
    config = parse(confdir, sentinel_config(
        username="msisdnd", password="hunter2pw", db=2, sentinel_password="s3ntinel-pw",
        pool_size=8))
    redis = config.redis
    assert redis.sentinels == (("10.0.0.1", 26379), ("sentinel-b.example", 26380),
                               ("::1", 26379))
    assert (redis.master_name, redis.username, redis.password, redis.db) == (
        "msisdnd", "msisdnd", "hunter2pw", 2)
    assert (redis.sentinel_username, redis.sentinel_password) == (None, "s3ntinel-pw")
    # Three sentinels: a majority of two, so each must know one other.
    assert (redis.quorum, redis.discovery_timeout, redis.pool_size) == (2, 1.0, 8)
    assert not redis.embedded and redis.host == "" and redis.unix_socket is None
    assert "hunter2pw" not in repr(config) and "s3ntinel-pw" not in repr(config)
    assert config.warnings == ()
    one = parse(confdir, minimal(redis={"sentinels": ["h:26379"], "master_name": "m",
                                        "quorum": 1, "discovery_timeout": 0.5})).redis
    assert (one.quorum, one.discovery_timeout) == (1, 0.5)


def test_fewer_than_three_sentinels_is_a_warning(confdir: pathlib.Path) -> None:
    config = parse(confdir, minimal(redis={"sentinels": SENTINELS[:2], "master_name": "m"}))
    (warning,) = config.warnings
    assert "[redis].sentinels: 2 sentinel(s)" in warning and "majority" in warning


@pytest.mark.parametrize(("more", "where", "problem"), [
    ({"sentinels": "10.0.0.1:26379"}, "[redis].sentinels", "must be an array"),
    ({"sentinels": []}, "[redis].sentinels", "at least one"),
    ({"sentinels": ["10.0.0.1"]}, "[redis].sentinels[0]", 'must be "host:port"'),
    ({"sentinels": ["::1:26379"]}, "[redis].sentinels[0]",
     'must be "host:port"'),
    ({"sentinels": ["h:0"]}, "[redis].sentinels[0]", "between 1 and 65535"),
    ({"sentinels": ["h:26379", "h:26379"]}, "[redis].sentinels[1]", "twice"),
    ({"sentinels": [26379]}, "[redis].sentinels[0]", 'must be "host:port"'),
    ({"master_name": None}, "[redis].master_name", "is required"),
    ({"master_name": "my master"}, "[redis].master_name", "sentinel monitor"),
    ({"quorum": 4}, "[redis].quorum", "between 1 and 3, not 4"),
    ({"quorum": 0}, "[redis].quorum", "between 1 and 3, not 0"),
    ({"discovery_timeout": 10}, "[redis].discovery_timeout", "at most 2"),
    ({"discovery_timeout": 0}, "[redis].discovery_timeout", "greater than 0"),
    ({"db": 16}, "[redis].db", "between 0 and 15"),
    ({"password": ""}, "[redis].password", "must not be empty"),
    ({"username": "msisdnd"}, "[redis].username", "needs password too"),
    ({"sentinel_username": "watcher"}, "[redis].sentinel_username",
     "needs sentinel_password too"),
    ({"sentinel_password": 1}, "[redis].sentinel_password", "must be a string"),
    ({"embedded": True}, "[redis].sentinels", "not both embedded and sentinels"),
    ({"dir": "var/redis"}, "[redis].dir", "only used with embedded"),
])
def test_bad_sentinel_values(confdir: pathlib.Path, more: dict[str, Any], where: str,
                             problem: str) -> None:
    data = sentinel_config(**more)
    if more.get("master_name", "") is None:
        del data["redis"]["master_name"]
    e = error(confdir, data)
    assert (e.path, problem in e.problem) == (where, True), str(e)


def test_a_sentinel_password_is_not_in_errors(confdir: pathlib.Path) -> None:
    e = error(confdir, sentinel_config(sentinel_password="hunter2\tpw"))
    assert e.path == "[redis].sentinel_password" and "hunter2" not in str(e)


def test_redis_embedded_long_socket_path(confdir: pathlib.Path) -> None:
    e = error(confdir, minimal(redis={"embedded": True, "dir": "/" + "d" * 100}))
    assert e.path == "[redis].dir" and "shorter dir" in e.problem
    ok = "/" + "d" * (100 - len("//redis.sock"))
    assert parse(confdir, minimal(redis={"embedded": True, "dir": ok})).redis.dir == ok


def test_http_defaults(confdir: pathlib.Path) -> None:
    config = parse(confdir, minimal())
    http = config.http
    assert http.listen == ("tcp:8000:interface=127.0.0.1",)
    assert (http.cors_origins, http.max_body, http.trusted_proxies, http.show_version) == (
        (), 25600, (), True)
    assert config.admin.listen == "tcp:8001:interface=127.0.0.1"
    assert (config.log.format, config.log.level, config.log.access) == ("text", "info", "errors")
    assert (config.dev.fake_smsc, config.dev.fake_smsc_smpp, config.dev.fake_smsc_http) == (
        False, "tcp:2775:interface=127.0.0.1", "tcp:8025:interface=127.0.0.1")
    assert (config.sms.default_locale, config.sms.webotp_host) == ("en", None)


def test_http_values(confdir: pathlib.Path) -> None:
    http = parse(confdir, minimal(http={
        "public_url": "https://verify.example.com/",
        "listen": ["tcp:8000:interface=127.0.0.1", "unix:/run/msisdnd.sock:mode=660"],
        "cors_origins": ["HTTPS://App.Example:443", "http://localhost:3000",
                         "https://app.example", "http://[::1]:80"],
        "trusted_proxies": ["127.0.0.1", "10.1.2.3/8", "::1"],
        "max_body": 1024,
        "show_version": False,
    })).http
    assert http.public_url.base == "https://verify.example.com"
    assert http.listen == ("tcp:8000:interface=127.0.0.1", "unix:/run/msisdnd.sock:mode=660")
    assert http.cors_origins == ("https://app.example", "http://localhost:3000", "http://[::1]")
    assert http.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),
                                    ipaddress.ip_network("10.0.0.0/8"),
                                    ipaddress.ip_network("::1/128"))
    assert (http.max_body, http.show_version) == (1024, False)


def test_admin_disabled(confdir: pathlib.Path) -> None:
    assert parse(confdir, minimal(admin={"listen": ""})).admin.listen is None


@pytest.mark.parametrize("description", [
    "systemd:domain=INET:index=0",
    "systemd:domain=INET:name=http",
    "systemd:anything at all",
])
def test_systemd_endpoints_accepted_unparsed(confdir: pathlib.Path, description: str) -> None:
    config = parse(confdir, minimal(http={"public_url": "https://h", "listen": description},
                                    admin={"listen": ""}))
    assert config.http.listen == (description,)


def test_fake_smsc_endpoints_must_not_clash(confdir: pathlib.Path) -> None:
    data = minimal(dev={"fake_smsc_http": "tcp:8001:interface=127.0.0.1"})
    assert parse(confdir, data).dev.fake_smsc is False     # unused: not checked
    data["dev"]["fake_smsc"] = True
    e = error(confdir, data)
    assert e.path == "[dev].fake_smsc_http" and "[admin].listen" in e.problem


@pytest.mark.parametrize(("public_url", "api_prefix", "base"), [
    ("https://h", "/v1/msisdn", "https://h/v1/msisdn"),
    ("https://h/", "/v1/msisdn/", "https://h/v1/msisdn"),
    ("https://h/v1/msisdn", "/v1/msisdn", "https://h/v1/msisdn"),
    ("https://h/v1/msisdn/", "/v1/msisdn", "https://h/v1/msisdn"),
    ("https://h/v1/msisdn", "", "https://h/v1/msisdn"),
    ("https://h/v1/msisdn", None, "https://h/v1/msisdn"),
    ("https://h:8443", "/", "https://h:8443"),
    ("http://h", "", "http://h"),
])
def test_api_prefix(confdir: pathlib.Path, public_url: str, api_prefix: str | None,
                    base: str) -> None:
    http = {"public_url": public_url, "api_prefix": api_prefix}
    url = parse(confdir, minimal(http=http)).http.public_url
    assert url.base == base
    assert url.prefix == urlsplit(base).path


def test_api_prefix_must_match_the_public_path(confdir: pathlib.Path) -> None:
    e = error(confdir, minimal(http={"public_url": "https://h/v1", "api_prefix": "/v2"}))
    assert e.path == "[http].api_prefix"
    assert "'/v1'" in e.problem and "'/v2'" in e.problem


def test_relative_paths_resolve_against_the_config(
        confdir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    private_file(confdir / "tls" / "ca.pem")
    data = minimal()
    data["carrier"][0]["tls"] = {"ca_file": "tls/ca.pem"}
    data["carrier"].append({"name": "two", "host": "h", "password": "p", "sessions": [
        {"bind": "transmitter", "system_id": "a", "tls": {"ca_file": "tls/../tls/ca.pem"}}]})
    config = parse(confdir, data)
    assert config.keys.browserid == (str(confdir / "keys" / "browserid.pem"),)
    assert config.carriers[0].tls is not None
    assert config.carriers[0].tls.ca_file == str(confdir / "tls" / "ca.pem")
    tls = config.carriers[1].sessions[0].tls
    assert tls is not None and tls.ca_file == str(confdir / "tls" / "ca.pem")
    assert data["carrier"][0]["tls"] == {"ca_file": "tls/ca.pem"}    # not modified

    del data["carrier"][1]
    data["carrier"][0]["tls"] = {"ca_file": "tls/nope.pem"}
    e = error(confdir, data)
    assert e.path == 'carrier[0] "fake".tls.ca_file'
    assert str(confdir / "tls" / "nope.pem") in e.problem


def test_absolute_paths_kept(confdir: pathlib.Path) -> None:
    absolute = str(confdir / "keys" / "jwt.pem")
    private_file(confdir / "keys" / "jwt-old.pem", signing_keys()["jwt"])
    config = parse(confdir, with_value("keys", "jwt", [absolute, "keys/jwt-old.pem"]))
    assert config.keys.jwt == (absolute, str(confdir / "keys" / "jwt-old.pem"))


def test_world_readable_secrets_warn(confdir: pathlib.Path) -> None:
    (confdir / "keys" / "jwt.pem").chmod(0o644)
    (confdir / "secrets" / "master").chmod(0o644)
    config = parse(confdir, minimal())
    assert len(config.warnings) == 2
    jwt, master = config.warnings
    assert jwt.startswith(f"{confdir / 'msisdnd.toml'}: [keys].jwt[0]: ")
    assert master.startswith(f"{confdir / 'msisdnd.toml'}: [secrets].master_file: ")
    assert all("readable by every user" in w and "\n" not in w for w in config.warnings)
    assert all(MASTER not in w for w in config.warnings)


def test_inline_secret_in_a_world_readable_file_warns(confdir: pathlib.Path) -> None:
    path = confdir / "msisdnd.toml"
    path.write_text("")
    path.chmod(0o644)
    config = parse(confdir, minimal(secrets={"master": MASTER}))
    (warning,) = config.warnings
    assert "[secrets].master:" in warning and MASTER not in warning


def test_unreadable_key(confdir: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jwt = str(confdir / "keys" / "jwt.pem")
    if AS_ROOT:     # root reads every file: pretend
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: p != jwt and real(p, m))
    (confdir / "keys" / "jwt.pem").chmod(0)
    e = error(confdir, minimal())
    assert e.path == "[keys].jwt[0]" and "not readable" in e.problem


def test_locales(confdir: pathlib.Path) -> None:
    for written, expected in (("fr", "fr"), ("ES", "es"), ("en", "en")):
        sms = parse(confdir, minimal(sms={"default_locale": written,
                                          "webotp_host": "App.Example"})).sms
        assert (sms.default_locale, sms.webotp_host) == (expected, "app.example")


# --- the file ----------------------------------------------------------------

def write(confdir: pathlib.Path, text: str) -> str:
    path = confdir / "msisdnd.toml"
    path.write_text(text)
    return str(path)


def test_load_reads_toml(confdir: pathlib.Path) -> None:
    path = write(confdir, """
[http]
public_url = "https://verify.example.com"
[redis]
url = "redis://127.0.0.1"
[keys]
browserid = ["keys/browserid.pem"]
jwt = ["keys/jwt.pem"]
[secrets]
master_file = "secrets/master"
[limits]
countries = ["FR"]
[[carrier]]
name = "fake"
host = "127.0.0.1"
system_id = "msisdnd"
""")
    assert load_config(path) == parse(confdir, minimal(carrier=[
        {"name": "fake", "host": "127.0.0.1", "system_id": "msisdnd"}]))


@pytest.mark.parametrize(("text", "where"), [
    ("[http]\npublic_url = https://x\n", "line 2, column 14"),
    ("[http]\n[http]\n", "line 2, column 6"),
    ('[http]\npublic_url = "x', "end of document"),
    ("[http\n", "line 1, column 6"),
])
def test_toml_errors(confdir: pathlib.Path, text: str, where: str) -> None:
    path = write(confdir, text)
    e = pytest.raises(ConfigError, load_config, path).value
    assert e.path == where and e.problem.startswith("not valid TOML: ")
    assert str(e).startswith(f"{path}: {where}: not valid TOML: ")
    assert "\n" not in str(e)


def test_unreadable_files(confdir: pathlib.Path) -> None:
    missing = str(confdir / "nope.toml")
    e = pytest.raises(ConfigError, load_config, missing).value
    assert str(e) == f"{missing}: cannot read the configuration: No such file or directory"
    e = pytest.raises(ConfigError, load_config, str(confdir)).value
    assert str(e).startswith(f"{confdir}: cannot read the configuration: ")
    (confdir / "latin1.toml").write_bytes(b"# caf\xe9\n")
    e = pytest.raises(ConfigError, load_config, str(confdir / "latin1.toml")).value
    assert "not UTF-8" in str(e) and "\n" not in str(e)


def test_config_error_is_shared_and_pickles() -> None:
    assert ConfigError is carrier_config.ConfigError
    e = ConfigError("[http].max_body", "must be between 1024 and 1048576, not 1", "x.toml")
    again = pickle.loads(pickle.dumps(e))
    assert (again.path, again.problem, again.file, str(again)) == (
        e.path, e.problem, e.file, ("x.toml: [http].max_body: must be between 1024 and 1048576, "
                                   "not 1"))
    assert e.in_file("y.toml") is e
    bare = ConfigError("carrier", "at least one [[carrier]] is required")
    assert str(bare) == "carrier: at least one [[carrier]] is required"
    assert str(bare.in_file("z.toml")) == "z.toml: carrier: at least one [[carrier]] is required"


def test_config_is_frozen(confdir: pathlib.Path) -> None:
    config = parse(confdir, minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.path = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.http.max_body = 1  # type: ignore[misc]
    assert stat.S_ISREG(os.stat(config.keys.jwt[0]).st_mode)


# --- [http] connection limits -------------------------------------------------

def test_http_connection_limit_defaults(confdir: pathlib.Path) -> None:
    http = parse(confdir, minimal()).http
    assert (http.request_deadline, http.max_connections, http.max_connections_per_client) == (
        10.0, 4096, 64)


def test_http_connection_limit_values(confdir: pathlib.Path) -> None:
    http = parse(confdir, minimal(http={
        "public_url": "https://verify.example.com",
        "request_deadline": 2.5, "max_connections": 100, "max_connections_per_client": 100,
    })).http
    assert (http.request_deadline, http.max_connections, http.max_connections_per_client) == (
        2.5, 100, 100)


def test_http_per_client_default_follows_a_small_total(confdir: pathlib.Path) -> None:
    http = parse(confdir, minimal(http={"public_url": "https://verify.example.com",
                                        "max_connections": 10})).http
    assert (http.max_connections, http.max_connections_per_client) == (10, 10)


BAD_CONNECTION_LIMITS = [
    ("request_deadline", 0.5, "at least 1, not 0.5"),
    ("request_deadline", 301, "at most 300, not 301"),
    ("request_deadline", "10s", "must be a number"),
    ("max_connections", 0, "between 1 and 1000000, not 0"),
    ("max_connections", 4096.0, "must be an integer"),
    ("max_connections_per_client", 0, "between 1 and 1000000, not 0"),
    ("max_connections_per_client", 5000, "must be at most max_connections (4096), not 5000"),
    ("max_connection", 10, "max_connections"),        # a misspelling: the closest key named
]


@pytest.mark.parametrize(("key", "value", "problem"), BAD_CONNECTION_LIMITS,
                         ids=[f"{c[0]}={c[1]!r}" for c in BAD_CONNECTION_LIMITS])
def test_http_connection_limit_bad_values(confdir: pathlib.Path, key: str, value: Any,
                                          problem: str) -> None:
    e = error(confdir, with_value("http", key, value))
    assert e.path == f"[http].{key}"
    assert problem in e.problem


def test_countries_must_be_listed_or_all_allowed_in_writing(confdir: pathlib.Path) -> None:
    """An empty country list served every region, satellite numbers included:
    the configuration now has to say which, or that it means all."""
    problem = error(confdir, minimal(limits={"allow_all_countries": False}))
    assert problem.path == "[limits].countries" and "allow_all_countries" in str(problem)
    everything = parse(confdir, minimal(limits={"allow_all_countries": True}))
    assert everything.limits.allow_all_countries and not everything.limits.countries
    listed = parse(confdir, minimal(limits={"countries": ["FR"], "allow_prefixes": ["+8817"],
                                            "daily_sms_budget": 1000}))
    assert listed.limits.allow_prefixes == frozenset({"+8817"})
    assert listed.limits.daily_sms_budget == 1000
    bad = error(confdir, minimal(limits={"countries": ["FR"], "allow_prefixes": ["8817"]}))
    assert bad.path == "[limits].allow_prefixes[0]"


def test_app_hashes_and_the_payload_hash_switch(confdir: pathlib.Path) -> None:
    config = parse(confdir, minimal(sms={"app_hashes": ["FA+9qCX9VSu"]}))
    assert config.sms.app_hashes == frozenset({"FA+9qCX9VSu"})
    assert error(confdir, minimal(sms={"app_hashes": ["CallMe+9000!"]})).path \
        == "[sms].app_hashes[0]"
    assert config.http.hawk_require_payload_hash and not config.warnings
    legacy = parse(confdir, minimal(http={"public_url": "https://verify.example.com",
                                          "hawk_require_payload_hash": False}))
    assert not legacy.http.hawk_require_payload_hash
    assert any("hawk_require_payload_hash" in w for w in legacy.warnings)


@pytest.mark.parametrize("limits, path, problem", [
    ({"number_lock": 3600, "number_lock_max": 600}, "number_lock_max", "at least number_lock"),
    ({"number_failures_day": 10, "client_failures_day": 20}, "client_failures_day",
     "lock a number for everyone"),
    ({"client_lock": 10}, "client_lock", "60"),
])
def test_lockout_settings_that_contradict_each_other_are_refused(
        confdir: pathlib.Path, limits: dict[str, Any], path: str, problem: str) -> None:
    e = error(confdir, minimal(limits=limits))
    assert e.path == f"[limits].{path}"
    assert problem in e.problem


def test_lockout_defaults_follow_nist_and_lock_a_client_before_the_number(
        confdir: pathlib.Path) -> None:
    limits = parse(confdir, minimal()).limits
    assert (limits.client_failures_day, limits.client_lock) == (5, 3600.0)
    assert (limits.number_failures_day, limits.number_lock, limits.number_lock_max) == (
        100, 900.0, 86400.0)


def test_lockout_defaults_give_way_to_stricter_settings_written_before_them(
        confdir: pathlib.Path) -> None:
    """A configuration written before the per-client lockout still loads: the
    client's default follows a lower number_failures_day, and the longest lock
    a longer number_lock."""
    limits = parse(confdir, minimal(limits={"countries": ["FR"], "number_failures_day": 3,
                                            "number_lock": 172800})).limits
    assert (limits.client_failures_day, limits.number_lock_max) == (3, 172800.0)


@pytest.mark.parametrize("slot, content, problem", [
    ("jwt", "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
     "not a PEM private key"),
    ("jwt", "browserid", "must be an Ed25519 key (RS256 given)"),
    ("browserid", "jwt", "must be a 2048-bit RSA key (EdDSA given)"),
])
def test_signing_keys_are_loaded_and_checked_for_their_slot(
        confdir: pathlib.Path, slot: str, content: str, problem: str) -> None:
    """What the daemon would refuse at start, the configuration check refuses:
    a garbage PEM, an RSA key in the JWT slot, an Ed25519 key for BrowserID."""
    pem = signing_keys().get(content, content)
    private_file(confdir / "keys" / f"{slot}.pem", pem)
    e = error(confdir, minimal())
    assert e.path == f"[keys].{slot}[0]"
    assert problem in e.problem


# --- [admin] token_file ---------------------------------------------------------

def test_admin_token_file_names_its_tokens_and_keeps_only_digests(confdir: pathlib.Path) -> None:
    import hashlib

    token = "t" * 43
    private_file(confdir / "secrets" / "admin.token",
                 f"# operators\nalice {token}\n\n{'u' * 32}\n")
    admin = parse(confdir, minimal(admin={"token_file": "secrets/admin.token"})).admin
    assert [t.name for t in admin.tokens] == [
        "alice", f"token-{hashlib.sha256(b'u' * 32).hexdigest()[:8]}"]
    assert admin.tokens[0].digest == hashlib.sha256(token.encode()).digest()
    assert token not in repr(admin)
    assert parse(confdir, minimal()).admin.tokens == ()  # no file: every action refused


@pytest.mark.parametrize(("content", "problem"), [
    ("short\n", "line 1: must be TOKEN or NAME TOKEN"),
    (f"a b {'t' * 40}\n", "line 1: must be TOKEN or NAME TOKEN"),
    ("# nothing but a comment\n", "holds no token"),
])
def test_bad_admin_token_file_names_the_line_never_the_token(confdir: pathlib.Path,
                                                             content: str, problem: str) -> None:
    private_file(confdir / "secrets" / "admin.token", content)
    e = error(confdir, minimal(admin={"token_file": "secrets/admin.token"}))
    assert e.path == "[admin].token_file" and problem in e.problem
    assert "short" not in str(e) and "t" * 40 not in str(e)


def test_missing_admin_token_file(confdir: pathlib.Path) -> None:
    e = error(confdir, minimal(admin={"token_file": "secrets/nope"}))
    assert e.path == "[admin].token_file" and "no such file" in e.problem
