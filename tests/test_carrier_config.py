"""Tests for L{msisdnd.smpp.config}: carrier tables in, frozen records out."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from msisdnd.smpp import codec
from msisdnd.smpp.config import (
    CarrierConfig,
    ConfigError,
    SessionConfig,
    TLSConfig,
    parse_carriers,
)

WHERE = 'carrier[0] "orange"'


def minimal(**overrides: Any) -> dict[str, Any]:
    """The smallest carrier an operator may write, with overrides."""
    table = {
        "name": "orange",
        "bind": "transceiver",
        "host": "smsc.example.net",
        "port": 2775,
        "system_id": "msisdnd",
        "password": "secret",
    }
    table.update(overrides)
    return table


def carrier(**overrides: Any) -> CarrierConfig:
    return CarrierConfig.from_mapping(minimal(**overrides), WHERE)


def config_error(**overrides: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        carrier(**overrides)
    return info.value


def status(name: str) -> int:
    return codec.status_code(name)


# --- what works ----------------------------------------------------------------

def test_minimal_transceiver() -> None:
    c = carrier()
    assert c.name == "orange"
    (spec,) = c.session_specs
    assert spec == SessionConfig(bind="transceiver", host="smsc.example.net", port=2775,
                                 tls=None, system_id="msisdnd", password="secret")
    assert spec.can_transmit and spec.can_receive
    assert spec.bind_command == "bind_transceiver"
    assert c.can_transmit and c.can_receive


def test_minimal_through_parse_carriers() -> None:
    (c,) = parse_carriers([minimal()])
    assert c == carrier()


def test_defaults() -> None:
    c = CarrierConfig.from_mapping({"name": "o", "host": "h", "system_id": "s"}, "c")
    assert (c.port, c.tls, c.password, c.system_type) == (2775, None, "", "")
    assert c.bind == "transceiver"
    assert (c.binds, c.window, c.throughput) == (1, 10, 0.0)
    assert (c.enquire_link_interval, c.response_timeout, c.bind_timeout) == (30.0, 10.0, 10.0)
    assert (c.reconnect_delay_max, c.reconnect_delay_initial, c.already_bound_delay) == (
        60.0, 1.0, 30.0)
    assert c.reconnect_grace == 10.0
    assert (c.alphabet, c.mt_sender, c.mo_verifier) == ("gsm7", "", None)
    assert (c.receipt_id_format, c.mo_charset) == ("as-is", "gsm7")
    assert (c.mcc, c.mccmnc, c.prefixes, c.default, c.region) == ((), (), (), False, None)
    assert c.queue_size == 1000
    assert c.temporary_statuses == {status("ESME_RTHROTTLED"), status("ESME_RMSGQFUL"),
                                    status("ESME_RSYSERR"), status("ESME_RX_T_APPN")}
    assert c.throttle_statuses == {status("ESME_RTHROTTLED"), status("ESME_RMSGQFUL")}
    assert isinstance(c.temporary_statuses, frozenset)
    assert (c.throttle_pause, c.throttle_pause_max, c.registered_delivery) == (1.0, 30.0, 1)
    assert (c.addr_ton, c.addr_npi, c.address_range) == (0, 0, "")
    assert c.source_ton_npi == (0, 0) and c.mt_source_addr == ""
    assert (c.source_ton, c.source_npi, c.dest_ton, c.dest_npi) == (None, None, 1, 1)
    assert (c.service_type, c.priority_flag, c.data_coding) == ("", 0, 0)
    assert (c.validity_format, c.trace) == ("relative", False)
    assert [s.bind for s in c.session_specs] == ["transceiver"]


def test_defaults_are_the_dataclass_defaults() -> None:
    """Each default is written once, on its field: a key left out of a table
    takes the default a record built in Python takes, of the same type."""

    def assert_field_defaults(record: Any, given: Any) -> None:
        for f in dataclasses.fields(record):
            if f.default is not dataclasses.MISSING and f.name not in given:
                value = getattr(record, f.name)
                assert (type(value), value) == (type(f.default), f.default), f.name

    table = {"name": "o", "host": "h", "system_id": "s"}
    c = CarrierConfig.from_mapping(table, "c")
    # sessions is not left at its default: the top-level keys make the one session.
    assert_field_defaults(c, {*table, "sessions"})
    (spec,) = c.sessions
    assert_field_defaults(spec, table)
    assert_field_defaults(TLSConfig.from_value({}, "tls"), {})
    assert c == CarrierConfig(**table)


def test_error_pickles() -> None:
    e = config_error(window=0)
    again = pickle.loads(pickle.dumps(e))
    assert (again.path, again.problem, str(again)) == (e.path, e.problem, str(e))


def test_frozen() -> None:
    c = carrier()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.window = 3  # type: ignore[misc]


def test_password_not_in_repr() -> None:
    c = carrier(password="hunter2")
    assert "hunter2" not in repr(c)
    assert "hunter2" not in repr(c.session_specs)


def test_password_not_in_errors() -> None:
    e = config_error(password="p\u00e4ss")
    assert e.path == f"{WHERE}.password"
    assert "p\u00e4ss" not in str(e)


def test_integers_accepted_for_floats() -> None:
    c = carrier(throughput=50, response_timeout=5)
    assert c.throughput == 50.0 and isinstance(c.throughput, float)
    assert c.response_timeout == 5.0


@pytest.mark.parametrize("value", ["as-is", "hex-to-decimal", "decimal-to-hex"])
def test_receipt_id_formats(value: str) -> None:
    assert carrier(receipt_id_format=value).receipt_id_format == value


@pytest.mark.parametrize("value", ["gsm7", "ascii", "latin1"])
def test_mo_charsets(value: str) -> None:
    assert carrier(mo_charset=value).mo_charset == value


@pytest.mark.parametrize("value, seconds", [(0, 0.0), (2.5, 2.5), (300, 300.0)])
def test_reconnect_grace(value: float, seconds: float) -> None:
    c = carrier(reconnect_grace=value)
    assert c.reconnect_grace == seconds and isinstance(c.reconnect_grace, float)


def test_separate_transmitter_and_receiver_sessions() -> None:
    c = carrier(
        bind="transceiver",
        host="smsc.example.org",
        port=None,
        system_id=None,
        binds=2,
        sessions=[
            {"bind": "transmitter", "port": 2775, "system_id": "mt-acct", "password": "pw-mt"},
            {"bind": "receiver", "host": "mo.example.org", "port": 2776,
             "system_id": "mo-acct", "address_range": "^3361"},
        ],
    )
    assert c.system_id is None
    specs = c.session_specs
    assert len(specs) == 4
    assert [(s.bind, s.host, s.port, s.system_id) for s in specs] == [
        ("transmitter", "smsc.example.org", 2775, "mt-acct"),
        ("transmitter", "smsc.example.org", 2775, "mt-acct"),
        ("receiver", "mo.example.org", 2776, "mo-acct"),
        ("receiver", "mo.example.org", 2776, "mo-acct"),
    ]
    # Unset keys fall back on the carrier's top level.
    assert [s.password for s in specs] == ["pw-mt", "pw-mt", "secret", "secret"]
    assert specs[2].address_range == "^3361"
    assert [s.can_transmit for s in specs] == [True, True, False, False]
    assert [s.can_receive for s in specs] == [False, False, True, True]
    assert c.sessions == (specs[0], specs[2])


def test_sessions_may_give_every_host() -> None:
    table = minimal(sessions=[{"host": "a", "bind": "transmitter"},
                              {"host": "b", "bind": "receiver"}])
    del table["host"]
    c = CarrierConfig.from_mapping(table, WHERE)
    assert c.host is None
    assert [s.host for s in c.session_specs] == ["a", "b"]


def test_session_tls_overrides_carrier_tls() -> None:
    c = carrier(tls=True, sessions=[{"bind": "transmitter"},
                                    {"bind": "receiver", "tls": False}])
    assert [s.tls for s in c.session_specs] == [TLSConfig(), None]


def test_tls_true() -> None:
    (spec,) = carrier(tls=True).session_specs
    assert spec.tls == TLSConfig(ca_file=None, hostname=None, verify=True)
    assert spec.tls_hostname == "smsc.example.net"


def test_tls_false() -> None:
    (spec,) = carrier(tls=False).session_specs
    assert spec.tls is None and spec.tls_hostname is None


def test_tls_table_with_files(tmp_path) -> None:
    ca, cert, key = (tmp_path / "ca.pem", tmp_path / "me.pem", tmp_path / "me.key")
    for path in (ca, cert, key):
        path.write_text("-----BEGIN NOTHING-----\n")
    c = carrier(tls={"ca_file": str(ca), "hostname": "smsc.internal", "verify": True,
                     "cert_file": str(cert), "key_file": str(key)})
    assert c.tls == TLSConfig(ca_file=str(ca), hostname="smsc.internal", verify=True,
                              cert_file=str(cert), key_file=str(key))
    assert c.session_specs[0].tls_hostname == "smsc.internal"


def test_tls_without_verification() -> None:
    assert carrier(tls={"verify": False}).tls == TLSConfig(verify=False)


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_tls_missing_file(tmp_path, key: str) -> None:
    present = tmp_path / "present.pem"
    present.write_text("x")
    tls = {"cert_file": str(present), "key_file": str(present)}
    tls[key] = str(tmp_path / "absent.pem")
    e = config_error(tls=tls)
    assert e.path == f"{WHERE}.tls.{key}"
    assert "no such file" in e.problem and "absent.pem" in e.problem


@pytest.mark.parametrize("given, missing", [("cert_file", "key_file"), ("key_file", "cert_file")])
def test_tls_cert_and_key_go_together(tmp_path, given: str, missing: str) -> None:
    path = tmp_path / "f.pem"
    path.write_text("x")
    e = config_error(tls={given: str(path)})
    assert e.path == f"{WHERE}.tls.{missing}"
    assert given in e.problem


def test_sender_alphanumeric() -> None:
    c = carrier(mt_sender="Mozilla")
    assert c.source_ton_npi == (5, 0)
    assert c.mt_source_addr == "Mozilla"


def test_sender_alphanumeric_eleven_characters() -> None:
    assert carrier(mt_sender="Hello World").mt_source_addr == "Hello World"


@pytest.mark.parametrize("sender", ["+33612345678", "33612345678"])
def test_sender_digits(sender: str) -> None:
    c = carrier(mt_sender=sender)
    assert c.source_ton_npi == (1, 1)
    assert c.mt_source_addr == "33612345678"
    assert c.mt_sender == sender


@pytest.mark.parametrize("sender, overrides, ton_npi", [
    ("12345", {"source_ton": 3, "source_npi": 0}, (3, 0)),     # a short code, network specific
    ("12345", {}, (1, 1)),                                      # unset: as the sender implies
    ("12345", {"source_npi": 9}, (1, 9)),                       # one set, the other implied
    ("+33700000001", {"source_ton": 2}, (2, 1)),
    ("Mozilla", {}, (5, 0)),
    ("Mozilla", {"source_ton": 0}, (0, 0)),
    ("Mozilla", {"source_ton": 5, "source_npi": 0}, (5, 0)),
    ("Mozilla", {"source_ton": 3}, (3, 0)),
    ("Hello World", {"source_ton": 5}, (5, 0)),                 # 11 characters: the limit
    ("12345678901", {"source_ton": 5}, (5, 1)),                 # digits as a name; npi implied
    ("", {"source_ton": 3, "source_npi": 255}, (3, 255)),
])
def test_source_ton_npi_overrides(sender: str, overrides: dict[str, Any],
                                  ton_npi: tuple[int, int]) -> None:
    c = carrier(mt_sender=sender, **overrides)
    assert c.source_ton_npi == ton_npi
    assert (c.source_ton, c.source_npi) == (overrides.get("source_ton"),
                                            overrides.get("source_npi"))


def test_destination_ton_npi() -> None:
    c = carrier(dest_ton=0, dest_npi=0)
    assert (c.dest_ton, c.dest_npi) == (0, 0)
    assert (carrier(dest_ton=255).dest_ton, carrier(dest_npi=18).dest_npi) == (255, 18)


@pytest.mark.parametrize("overrides", [
    {"service_type": "CMT"},
    {"service_type": "VMA12"},
    {"service_type": ""},
    {"priority_flag": 0},
    {"priority_flag": 3},
    {"data_coding": 0},
    {"data_coding": 1},
    {"data_coding": 0, "alphabet": "ucs2"},
    {"validity_format": "relative"},
    {"validity_format": "absolute"},
    {"trace": True},
    {"trace": False},
])
def test_submit_options_accepted(overrides: dict[str, Any]) -> None:
    c = carrier(**overrides)
    for key, value in overrides.items():
        assert (type(getattr(c, key)), getattr(c, key)) == (type(value), value)


def test_status_names_resolved() -> None:
    c = carrier(temporary_statuses=["ESME_RTHROTTLED", "esme_rsyserr", "ESME_RINVSCHED"],
                throttle_statuses=["ESME_RTHROTTLED"])
    assert c.temporary_statuses == frozenset({0x58, 0x08, 0x61})
    assert c.throttle_statuses == frozenset({0x58})


def test_vendor_specific_status_codes() -> None:
    c = carrier(temporary_statuses=["ESME_RTHROTTLED", 0x401], throttle_statuses=[0x401])
    assert c.temporary_statuses == {0x58, 0x401}
    assert c.throttle_statuses == {0x401}


def test_routes_normalized() -> None:
    c = carrier(mcc=["208", "208"], mccmnc=["20801", "310150"], prefixes=["336", "+337"],
                region="fr", default=True, mo_verifier="+33612345678")
    assert c.mcc == ("208",)
    assert c.mccmnc == ("20801", "310150")
    assert c.prefixes == ("+336", "+337")
    assert c.region == "FR"
    assert c.default is True
    assert c.mo_verifier == "+33612345678"


def test_built_by_hand() -> None:
    c = CarrierConfig(name="x", host="h", system_id="s", bind="transmitter", binds=3)
    assert [s.bind for s in c.session_specs] == ["transmitter"] * 3


# --- what is refused ------------------------------------------------------------

@pytest.mark.parametrize("overrides, key, words", [
    ({"name": ""}, "name", "empty"),
    ({"name": "or ange"}, "name", "letters"),
    ({"name": 7}, "name", "string"),
    ({"bind": "tranceiver"}, "bind", "one of"),
    ({"host": ""}, "host", "empty"),
    ({"host": "smsc example"}, "host", "host name"),
    ({"port": 0}, "port", "between 1 and 65535"),
    ({"port": 70000}, "port", "between 1 and 65535"),
    ({"port": "2775"}, "port", "integer"),
    ({"tls": "yes"}, "tls", "true, false or a table"),
    ({"tls": {"hostname": 3}}, "tls.hostname", "string"),
    ({"tls": {"verify": "no"}}, "tls.verify", "true or false"),
    ({"system_id": "a" * 16}, "system_id", "at most 15"),
    ({"system_id": ""}, "system_id", "empty"),
    ({"system_id": "caf\u00e9"}, "system_id", "ASCII"),
    ({"password": "123456789"}, "password", "at most 8"),
    ({"password": "p\u00e4ss"}, "password", "ASCII"),
    ({"system_type": "x" * 13}, "system_type", "at most 12"),
    ({"address_range": "1" * 41}, "address_range", "at most 40"),
    ({"addr_ton": 256}, "addr_ton", "between 0 and 255"),
    ({"addr_npi": -1}, "addr_npi", "between 0 and 255"),
    ({"binds": 0}, "binds", "between 1 and 32"),
    ({"binds": 33}, "binds", "between 1 and 32"),
    ({"window": 0}, "window", "between 1 and 1000"),
    ({"window": 1001}, "window", "between 1 and 1000"),
    ({"window": 2.5}, "window", "integer"),
    ({"throughput": -1}, "throughput", "at least 0"),
    ({"throughput": float("nan")}, "throughput", "finite"),
    ({"throughput": "fast"}, "throughput", "number"),
    ({"enquire_link_interval": 0}, "enquire_link_interval", "greater than 0"),
    ({"enquire_link_interval": 30000}, "enquire_link_interval", "at most 3600"),
    ({"response_timeout": 0}, "response_timeout", "greater than 0"),
    ({"response_timeout": float("inf")}, "response_timeout", "finite"),
    ({"bind_timeout": -1}, "bind_timeout", "greater than 0"),
    ({"reconnect_delay_max": 0}, "reconnect_delay_max", "greater than 0"),
    ({"reconnect_delay_initial": 0}, "reconnect_delay_initial", "greater than 0"),
    ({"reconnect_delay_initial": 90}, "reconnect_delay_initial", "reconnect_delay_max"),
    ({"already_bound_delay": 0}, "already_bound_delay", "greater than 0"),
    ({"reconnect_grace": -1}, "reconnect_grace", "at least 0"),
    ({"reconnect_grace": 301}, "reconnect_grace", "at most 300"),
    ({"reconnect_grace": float("nan")}, "reconnect_grace", "finite"),
    ({"reconnect_grace": "10s"}, "reconnect_grace", "number"),
    ({"reconnect_grace": True}, "reconnect_grace", "number"),
    ({"receipt_id_format": "hex"}, "receipt_id_format",
     "one of 'as-is', 'hex-to-decimal', 'decimal-to-hex', not 'hex'"),
    ({"receipt_id_format": 16}, "receipt_id_format", "one of"),
    ({"mo_charset": "utf8"}, "mo_charset", "one of 'gsm7', 'ascii', 'latin1', not 'utf8'"),
    ({"mo_charset": "GSM7"}, "mo_charset", "one of"),
    ({"alphabet": "utf8"}, "alphabet", "'gsm7', 'latin1', 'ucs2'"),
    ({"mt_sender": "HelloWorld12"}, "mt_sender", "11 characters"),
    ({"mt_sender": "+" + "1" * 21}, "mt_sender", "at most 20 digits"),
    ({"mt_sender": "Caf\u00e9"}, "mt_sender", "ASCII"),
    ({"mt_sender": "a{b}"}, "mt_sender", "alphanumeric"),
    ({"mt_sender": " Mozilla"}, "mt_sender", "alphanumeric"),
    ({"mt_sender": 3361}, "mt_sender", "string"),
    ({"mt_sender": "+"}, "mt_sender", "needs a letter"),
    ({"mt_sender": "+33 6 12"}, "mt_sender", "needs a letter"),
    ({"mo_verifier": "Mozilla"}, "mo_verifier", "digits"),
    ({"mo_verifier": 33612345678}, "mo_verifier", "string"),
    ({"mcc": "208"}, "mcc", "array"),
    ({"mcc": ["20"]}, "mcc[0]", "3 digits"),
    ({"mcc": [208]}, "mcc[0]", "3 digits"),
    ({"mccmnc": ["208", "20801"]}, "mccmnc[0]", "5 or 6 digits"),
    ({"prefixes": ["+33", "+33-6"]}, "prefixes[1]", "E.164 prefix"),
    ({"prefixes": ["+"]}, "prefixes[0]", "E.164 prefix"),
    ({"default": 1}, "default", "true or false"),
    ({"region": "XX"}, "region", "ISO 3166"),
    ({"region": "FRA"}, "region", "ISO 3166"),
    ({"queue_size": 0}, "queue_size", "between 1 and 1000000"),
    ({"temporary_statuses": ["ESME_RTHROTLED"]}, "temporary_statuses[0]",
     "did you mean 'ESME_RTHROTTLED'"),
    ({"temporary_statuses": ["ESME_RTHROTTLED", "ESME_ROK"]}, "temporary_statuses[1]",
     "ESME_ROK"),
    ({"temporary_statuses": [True]}, "temporary_statuses[0]", "status name"),
    ({"temporary_statuses": [0x1_0000_0000]}, "temporary_statuses[0]", "32-bit"),
    ({"throttle_statuses": ["NOPE"]}, "throttle_statuses[0]", "unknown SMPP status"),
    ({"temporary_statuses": ["ESME_RSYSERR"]}, "throttle_statuses",
     "ESME_RMSGQFUL, ESME_RTHROTTLED must also be in temporary_statuses"),
    ({"throttle_pause": 0}, "throttle_pause", "greater than 0"),
    ({"throttle_pause": 40}, "throttle_pause", "throttle_pause_max"),
    ({"throttle_pause_max": 0}, "throttle_pause_max", "greater than 0"),
    ({"registered_delivery": 256}, "registered_delivery", "between 0 and 255"),
    ({"registered_delivery": True}, "registered_delivery", "integer"),
    ({"source_ton": 256}, "source_ton", "between 0 and 255"),
    ({"source_ton": -1}, "source_ton", "between 0 and 255"),
    ({"source_ton": "3"}, "source_ton", "integer"),
    ({"source_npi": 256}, "source_npi", "between 0 and 255"),
    ({"dest_ton": 300}, "dest_ton", "between 0 and 255"),
    ({"dest_npi": -1}, "dest_npi", "between 0 and 255"),
    ({"dest_npi": 1.0}, "dest_npi", "integer"),
    ({"mt_sender": "Mozilla", "source_ton": 1}, "source_ton",
     "1 (international) is a number's TON, and mt_sender 'Mozilla' is a name"),
    ({"mt_sender": "Mozilla", "source_ton": 2}, "source_ton", "national"),
    ({"mt_sender": "+123456789012", "source_ton": 5}, "source_ton",
     "5 (alphanumeric) carries at most 11 characters (the GSM limit), and mt_sender "
     "'+123456789012' has 12"),
    ({"service_type": "CMTXYZ"}, "service_type", "at most 5 characters (SMPP carries no more)"),
    ({"service_type": "C\u00e9"}, "service_type", "ASCII"),
    ({"service_type": "C\tM"}, "service_type", "ASCII"),
    ({"service_type": 1}, "service_type", "string"),
    ({"priority_flag": 4}, "priority_flag", "between 0 and 3"),
    ({"priority_flag": -1}, "priority_flag", "between 0 and 3"),
    ({"data_coding": 2}, "data_coding", "must be 0 or 1"),
    ({"data_coding": 8}, "data_coding", "must be 0 or 1"),
    ({"data_coding": 256}, "data_coding", "between 0 and 255"),
    ({"data_coding": "1"}, "data_coding", "integer"),
    ({"data_coding": 1, "alphabet": "latin1"}, "data_coding",
     "applies to GSM 03.38 text, which alphabet = 'latin1' never sends"),
    ({"data_coding": 1, "alphabet": "ucs2"}, "data_coding", "alphabet = 'ucs2'"),
    ({"validity_format": "Absolute"}, "validity_format",
     "must be one of 'relative', 'absolute', not 'Absolute'"),
    ({"validity_format": 1}, "validity_format", "one of"),
    ({"trace": "yes"}, "trace", "true or false"),
    ({"trace": 1}, "trace", "true or false"),
    ({"sessions": [{"trace": True}]}, "sessions[0].trace", "carrier's top level"),
    ({"sessions": [{"source_ton": 3}]}, "sessions[0].source_ton", "carrier's top level"),
    ({"sessions": {"bind": "receiver"}}, "sessions", "array"),
    ({"sessions": []}, "sessions", "at least one session"),
    ({"sessions": ["receiver"]}, "sessions[0]", "table"),
    ({"sessions": [{"bind": "receiver", "port": 99999}]}, "sessions[0].port", "65535"),
    ({"sessions": [{"bind": "sender"}]}, "sessions[0].bind", "one of"),
    ({"sessions": [{"password": "far too long"}]}, "sessions[0].password", "at most 8"),
    ({"sessions": [{"tls": {"ca_file": "/no/such/ca.pem"}}]}, "sessions[0].tls.ca_file",
     "no such file"),
    ({"sessions": [{"window": 5}]}, "sessions[0].window", "carrier's top level"),
    ({"sessions": [{"receipt_id_format": "as-is"}]}, "sessions[0].receipt_id_format",
     "carrier's top level"),
    ({"sessions": [{"prot": 5}]}, "sessions[0].prot", "did you mean 'port'"),
    ({"bind": "receiver", "default": True}, "default", "receive-only"),
])
def test_rejected(overrides: dict[str, Any], key: str, words: str) -> None:
    e = config_error(**overrides)
    assert e.path == f"{WHERE}.{key}"
    assert words in e.problem
    assert str(e) == f"{e.path}: {e.problem}"
    assert "\n" not in str(e)
    assert isinstance(e, ValueError)


@pytest.mark.parametrize("key", ["host", "system_id"])
def test_required(key: str) -> None:
    e = config_error(**{key: None})
    assert (e.path, e.problem) == (f"{WHERE}.{key}", "is required")


@pytest.mark.parametrize("key", ["host", "system_id"])
def test_required_in_every_session(key: str) -> None:
    e = config_error(**{key: None}, sessions=[{key: "given"}, {"bind": "receiver"}])
    assert e.path == f"{WHERE}.sessions[1].{key}"
    assert "neither this session nor the carrier" in e.problem


def test_name_required() -> None:
    table = minimal()
    del table["name"]
    e = pytest.raises(ConfigError, parse_carriers, [table]).value
    assert (e.path, e.problem) == ("carrier[0].name", "is required")


@pytest.mark.parametrize("typo, suggestion", [
    ("windw", "window"),
    ("sytem_id", "system_id"),
    ("enquire_link_intervall", "enquire_link_interval"),
    ("temporary_status", "temporary_statuses"),
])
def test_unknown_key_suggests_the_closest(typo: str, suggestion: str) -> None:
    e = config_error(**{typo: 1})
    assert e.path == f"{WHERE}.{typo}"
    assert e.problem == f"unknown key; did you mean {suggestion!r}?"


def test_unknown_key_without_a_close_one() -> None:
    e = config_error(colour="blue")
    assert e.path == f"{WHERE}.colour"
    assert e.problem.startswith("unknown key; known keys are ")
    assert "window" in e.problem


def test_unknown_tls_key() -> None:
    e = config_error(tls={"ca": "x"})
    assert e.path == f"{WHERE}.tls.ca"
    assert "unknown key" in e.problem


def test_typo_reported_before_the_missing_key() -> None:
    table = minimal(sytem_id="msisdnd")
    del table["system_id"]
    e = pytest.raises(ConfigError, CarrierConfig.from_mapping, table, WHERE).value
    assert e.path == f"{WHERE}.sytem_id"


@pytest.mark.parametrize("key", ["window", "binds", "port", "queue_size", "addr_ton",
                                 "source_ton", "source_npi", "dest_ton", "dest_npi",
                                 "priority_flag", "data_coding"])
def test_bool_is_not_an_integer(key: str) -> None:
    e = config_error(**{key: True})
    assert e.path == f"{WHERE}.{key}"
    assert e.problem == "must be an integer, not a boolean (true)"


def test_bool_is_not_a_number() -> None:
    e = config_error(throughput=False)
    assert e.problem == "must be a number, not a boolean (false)"


def test_system_id_of_16_characters() -> None:
    assert carrier(system_id="a" * 15).system_id == "a" * 15
    e = config_error(system_id="a" * 16)
    assert e.path == f"{WHERE}.system_id"
    assert e.problem == "must be at most 15 characters (SMPP carries no more), not 16"


def test_table_not_a_mapping() -> None:
    e = pytest.raises(ConfigError, CarrierConfig.from_mapping, ["x"], WHERE).value
    assert e.path == WHERE and "table" in e.problem


# --- the set of carriers ----------------------------------------------------------

def test_several_carriers() -> None:
    carriers = parse_carriers([
        minimal(default=True),
        minimal(name="sfr", mcc=["208"], mccmnc=["20810"]),
    ])
    assert [c.name for c in carriers] == ["orange", "sfr"]
    assert [c.default for c in carriers] == [True, False]


def test_no_carriers() -> None:
    e = pytest.raises(ConfigError, parse_carriers, []).value
    assert e.path == "carrier" and "at least one" in e.problem


def test_carriers_not_an_array() -> None:
    e = pytest.raises(ConfigError, parse_carriers, minimal()).value
    assert e.path == "carrier" and "array of tables" in e.problem


def test_errors_name_the_carrier() -> None:
    tables = [minimal(), minimal(name="sfr", window=0)]
    e = pytest.raises(ConfigError, parse_carriers, tables).value
    assert e.path == 'carrier[1] "sfr".window'
    assert str(e) == 'carrier[1] "sfr".window: must be between 1 and 1000, not 0'


def test_duplicate_names() -> None:
    e = pytest.raises(ConfigError, parse_carriers,
                      [minimal(), minimal(name="sfr"), minimal()]).value
    assert e.path == 'carrier[2] "orange".name'
    assert e.problem == 'duplicates carrier[0] "orange"'


def test_two_defaults() -> None:
    e = pytest.raises(ConfigError, parse_carriers, [
        minimal(default=True), minimal(name="sfr"), minimal(name="free", default=True),
    ]).value
    assert e.path == 'carrier[2] "free".default'
    assert 'carrier[0] "orange"' in e.problem


def test_receive_only_carrier_allowed() -> None:
    carriers = parse_carriers([minimal(), minimal(name="mo", bind="receiver")])
    assert not carriers[1].can_transmit and carriers[1].can_receive


def test_some_carrier_must_transmit() -> None:
    e = pytest.raises(ConfigError, parse_carriers, [minimal(bind="receiver")]).value
    assert e.path == "carrier" and "no carrier can send" in e.problem


def test_the_shipped_example_parses():
    """etc/carriers.example.toml stays true: it parses, and says what its comments say."""
    import pathlib
    import tomllib

    path = pathlib.Path(__file__).parent.parent / "etc" / "carriers.example.toml"
    fake, orange, shortcode = parse_carriers(tomllib.loads(path.read_text())["carrier"])
    assert fake.source_ton_npi == (5, 0) and fake.default
    assert [s.bind for s in orange.session_specs] == ["transmitter"] * 2 + ["receiver"] * 2
    assert {s.port for s in orange.session_specs if s.bind == "receiver"} == {2776}
    assert orange.source_ton_npi == (1, 1) and orange.tls is not None
    assert (orange.receipt_id_format, orange.mo_charset, orange.reconnect_grace) == (
        "hex-to-decimal", "gsm7", 10.0)
    assert fake.receipt_id_format == "as-is"
    assert (fake.trace, fake.validity_format, fake.data_coding) == (False, "relative", 0)
    assert (orange.dest_ton, orange.dest_npi, orange.service_type, orange.priority_flag) == (
        1, 1, "", 0)
    assert (shortcode.source_ton_npi, shortcode.mt_source_addr) == ((3, 0), "12345")
    assert (shortcode.service_type, shortcode.priority_flag) == ("CMT", 1)
    assert (shortcode.data_coding, shortcode.validity_format, shortcode.trace) == (
        1, "absolute", True)


# --- carrier accounts shared by every daemon ---------------------------------------


def test_account_limits_default_to_none_shared() -> None:
    c = carrier()
    assert (c.max_binds, c.bind_lease, c.expected_daemons) == (0, 15.0, 1)
    assert c.account().key == "smsc.example.net:2775:msisdnd"


def test_account_limits() -> None:
    c = carrier(throughput=40, max_binds=3, bind_lease=5, expected_daemons=4)
    account = c.account()
    assert (account.throughput, account.max_binds, account.bind_lease, account.daemons) == \
        (40.0, 3, 5.0, 4)
    assert (account.local_throughput, account.local_binds) == (10.0, 1)


def test_the_throughput_account_joins_every_transmitting_login() -> None:
    c = carrier(sessions=[{"bind": "transmitter", "system_id": "mt"},
                          {"bind": "receiver", "system_id": "mo"},
                          {"bind": "transmitter", "port": 2776}])
    assert c.account().key == "smsc.example.net:2775:mt+smsc.example.net:2776:msisdnd"


@pytest.mark.parametrize("key, value, problem", [
    ("max_binds", -1, "must be between 0 and 1000, not -1"),
    ("max_binds", 2.0, "must be an integer, not a float (2.0)"),
    ("bind_lease", 0.1, "must be at least 0.2, not 0.1"),
    ("bind_lease", "10s", "must be a number"),
    ("expected_daemons", 0, "must be between 1 and 1000, not 0"),
])
def test_bad_account_limits(key: str, value: Any, problem: str) -> None:
    e = config_error(**{key: value})
    assert e.path == f"{WHERE}.{key}"
    assert problem in e.problem


@pytest.mark.parametrize("key, first, second", [
    ("throughput", 50, 40), ("max_binds", 2, 3), ("bind_lease", 10, 20),
    ("expected_daemons", 2, 3),
])
def test_carriers_on_one_account_agree_on_its_limits(key: str, first: Any, second: Any) -> None:
    e = pytest.raises(ConfigError, parse_carriers, [
        minimal(**{key: first}), minimal(name="sfr", **{key: second})]).value
    assert e.path == f'carrier[1] "sfr".{key}'
    assert "smsc.example.net:2775:msisdnd" in e.problem and WHERE in e.problem


def test_carriers_on_other_accounts_may_differ() -> None:
    a, b = parse_carriers([minimal(max_binds=2, throughput=5),
                           minimal(name="sfr", system_id="other", max_binds=1)])
    assert a.account().key != b.account().key
    # A receive-only login of the same account need not agree on throughput.
    parse_carriers([minimal(throughput=5), minimal(name="mo", bind="receiver")])


def test_carriers_sending_through_one_account_count_its_throughput_together() -> None:
    """A carrier sending through accounts X and Y counts its throughput over
    both; another sending through X alone would count on a bucket of its
    own, and X would see both rates: refused."""
    e = pytest.raises(ConfigError, parse_carriers, [
        minimal(throughput=5, sessions=[{"bind": "transmitter"},
                                        {"bind": "transmitter", "port": 2776}]),
        minimal(name="sfr", throughput=5)]).value
    assert e.path == 'carrier[1] "sfr".throughput'
    assert "smsc.example.net:2775:msisdnd" in e.problem and "2776" in e.problem
    # One receiving on X while it sends through Z need not agree.
    parse_carriers([minimal(throughput=5, sessions=[{"bind": "receiver"},
                                                    {"bind": "transmitter", "port": 2777}]),
                    minimal(name="sfr", throughput=3)])
