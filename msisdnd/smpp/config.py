"""Carrier configuration: the C{[[carrier]]} tables, parsed and validated once.

Operators describe each carrier (one SMSC account, possibly several binds) in
a TOML C{[[carrier]]} table.  The loader parses the TOML and hands the tables
to L{parse_carriers}, which returns frozen L{CarrierConfig} records or raises
L{ConfigError} naming the first thing that is wrong.  Nothing here reads the
configuration again later, and nothing outside reads the raw tables.

The rules are strict on purpose: an unknown key is an error (with the closest
known key suggested), C{true} is not an integer, and a value SMPP cannot carry
(a 16-character C{system_id}, say) is refused here, because smpplib would
silently truncate it on the wire.  A key set to C{None} (which TOML cannot
express) counts as absent, so callers building tables in Python can pass it.

The smallest useful carrier::

    [[carrier]]
    name = "orange"
    bind = "transceiver"
    host = "smsc.example.net"
    port = 2775
    system_id = "msisdnd"
    password = "secret"

A carrier whose SMSC wants a transmitter and a receiver on their own ports
and accounts lists them in C{sessions}; the top-level keys are the defaults
every session starts from::

    [[carrier]]
    name = "sfr"
    host = "smsc.example.org"
    password = "secret"
    binds = 2                     # each session below, twice
    sessions = [
        {bind = "transmitter", port = 2775, system_id = "mt-acct"},
        {bind = "receiver", port = 2776, system_id = "mo-acct"},
    ]
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import phonenumbers

from msisdnd.sms.accounts import Account
from msisdnd.sms.message_ids import DEFAULT_RECEIPT_ID_FORMAT, RECEIPT_ID_FORMATS
from msisdnd.smpp import codec
from msisdnd.smpp.inbound import DEFAULT_MO_CHARSET, MO_CHARSETS
from msisdnd.validation import ConfigError, Table
from msisdnd.validation import is_array as _is_array
from msisdnd.validation import kind as _kind
from msisdnd.validation import show as _show

#: The bind modes of SMPP 3.4, by the name used in C{bind = ...}.
BIND_MODES = ("transmitter", "receiver", "transceiver")
#: What C{alphabet} may name: how a text that fits GSM 03.38 goes out.
ALPHABETS = ("gsm7", "latin1", "ucs2")
#: What C{validity_format} may name: how C{validity_period} is written.
VALIDITY_FORMATS = ("relative", "absolute")
#: The C{data_coding} values GSM 03.38 text may go out with: 0 (the SMSC's
#: default alphabet, as SMPP says) or 1 (IA5, which some SMSCs read as GSM).
GSM_DATA_CODINGS = (0, 1)

# The longest values the bind and submit_sm C-Octet Strings carry (their
# SMPP 3.4 maxima, less the terminating NUL).
SYSTEM_ID_MAX = 15
PASSWORD_MAX = 8
SYSTEM_TYPE_MAX = 12
ADDRESS_RANGE_MAX = 40
SOURCE_ADDR_MAX = 20
SERVICE_TYPE_MAX = 5
#: An alphanumeric sender travels as at most 11 GSM 7-bit characters.
ALPHANUMERIC_SENDER_MAX = 11

#: Statuses after which a submit is tried again later, by default.
DEFAULT_TEMPORARY_STATUSES = frozenset(
    codec.status_code(name)
    for name in ("ESME_RTHROTTLED", "ESME_RMSGQFUL", "ESME_RSYSERR", "ESME_RX_T_APPN")
)
#: Statuses that pause the whole carrier, by default.
DEFAULT_THROTTLE_STATUSES = frozenset(
    codec.status_code(name) for name in ("ESME_RTHROTTLED", "ESME_RMSGQFUL")
)

# Durations above an hour are almost surely milliseconds written as seconds.
_DURATION_MAX = 3600.0
#: The longest C{reconnect_grace}: sends held longer than this would outlive
#: most codes' patience (and a queue that is not draining only fills).
RECONNECT_GRACE_MAX = 300.0

_TON_INTERNATIONAL, _NPI_ISDN = 1, 1
_TON_ALPHANUMERIC, _NPI_UNKNOWN = 5, 0
#: The TONs that say the address is a number (international, national,
#: subscriber, abbreviated): a sender with letters cannot go out as one.
_NUMBER_TONS = {1: "international", 2: "national", 4: "subscriber number", 6: "abbreviated"}

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_NUMERIC_SENDER = re.compile(r"\+?[0-9]+")
# Printable ASCII less the characters GSM 03.38 has only as escape pairs.
_ALPHANUMERIC_SENDER = re.compile(r"[\x20-\x5a\x5f\x61-\x7a]+")
_MCC = re.compile(r"[0-9]{3}")
_MCCMNC = re.compile(r"[0-9]{5,6}")
_PREFIX = re.compile(r"\+?([0-9]{1,15})")

_TLS_KEYS = ("ca_file", "hostname", "verify", "cert_file", "key_file")
_SESSION_KEYS = (
    "bind", "host", "port", "tls", "system_id", "password", "system_type",
    "addr_ton", "addr_npi", "address_range",
)
_CARRIER_KEYS = _SESSION_KEYS + (
    "name", "binds", "window", "throughput", "enquire_link_interval",
    "response_timeout", "bind_timeout", "reconnect_delay_max",
    "reconnect_delay_initial", "already_bound_delay", "reconnect_grace", "alphabet",
    "mt_sender", "mo_verifier", "mo_charset", "receipt_id_format", "mcc", "mccmnc",
    "prefixes", "default", "region",
    "queue_size", "daily_cap", "temporary_statuses", "throttle_statuses", "throttle_pause",
    "throttle_pause_max", "registered_delivery", "source_ton", "source_npi", "dest_ton",
    "dest_npi", "service_type", "priority_flag", "data_coding", "validity_format", "trace",
    "sessions", "max_binds", "bind_lease", "expected_daemons",
)


class _Table(Table):
    """L{Table}, saying why a string over its limit is refused."""

    limit_reason = " (SMPP carries no more)"


def _defaults(cls: type) -> dict[str, Any]:
    """The field defaults of dataclass C{cls}, by field name.

    The dataclasses are where each default is written; the parser reads them
    here, so a record built in Python and one read from TOML agree.
    """
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


# --- TLS ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TLSConfig:
    """How a session speaks TLS to its SMSC.

    @ivar ca_file: PEM file of the authorities to trust; C{None} for the
        system's trust store.
    @ivar hostname: the name the SMSC's certificate must carry; C{None} for
        the session's C{host} (see L{SessionConfig.tls_hostname}).
    @ivar verify: C{False} accepts any certificate: for test SMSCs only.
    @ivar cert_file: PEM file of our client certificate, with C{key_file}.
    @ivar key_file: PEM file of its private key, with C{cert_file}.
    """

    ca_file: str | None = None
    hostname: str | None = None
    verify: bool = True
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def from_value(cls, value: Any, path: str) -> TLSConfig | None:
        """Read C{tls = false | true | {table}}.

        File names are checked as given (relative to the working directory);
        the loader resolves them against the configuration file first.

        @return: C{None} for C{false}, the defaults for C{true}.
        @raise ConfigError: a bad value, an unknown key, a missing file, or
            only one of C{cert_file} and C{key_file}.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"must be true, false or a table, not {_kind(value)}")
        t = _Table(value, path, _TLS_KEYS)
        files = {}
        for key in ("ca_file", "cert_file", "key_file"):
            name = t.raw(key)
            if name is None:
                files[key] = None
                continue
            if not isinstance(name, str) or not name:
                t.fail(key, f"must be a file name, not {_kind(name)} ({_show(name)})")
            if not os.path.isfile(name):
                t.fail(key, f"no such file: {name!r}")
            files[key] = name
        if (files["cert_file"] is None) != (files["key_file"] is None):
            given, missing = (("cert_file", "key_file") if files["key_file"] is None
                              else ("key_file", "cert_file"))
            t.fail(missing, f"is required with {given} (a client certificate needs its key)")
        hostname = t.string("hostname", empty=False)
        return cls(
            ca_file=files["ca_file"],
            hostname=hostname,
            verify=t.boolean("verify", _defaults(cls)["verify"]),
            cert_file=files["cert_file"],
            key_file=files["key_file"],
        )


# --- sessions ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SessionConfig:
    """One SMPP session to keep bound: where, how, and as whom.

    @ivar bind: C{"transmitter"}, C{"receiver"} or C{"transceiver"}.
    @ivar tls: C{None} for plain TCP.
    @ivar addr_ton: the bind's C{addr_ton}.
    @ivar addr_npi: the bind's C{addr_npi}.
    @ivar address_range: the bind's C{address_range} (the MOs we want).
    """

    bind: str
    host: str
    port: int = 2775
    tls: TLSConfig | None = None
    system_id: str = ""
    password: str = field(default="", repr=False)
    system_type: str = ""
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    @property
    def can_transmit(self) -> bool:
        """Whether this session may send C{submit_sm}."""
        return self.bind in ("transmitter", "transceiver")

    @property
    def can_receive(self) -> bool:
        """Whether the SMSC delivers MOs and receipts on this session."""
        return self.bind in ("receiver", "transceiver")

    @property
    def bind_command(self) -> str:
        """The SMPP command that binds it (C{"bind_transceiver"}...)."""
        return f"bind_{self.bind}"

    @property
    def account_key(self) -> str:
        """The SMSC account this session logs in to: C{"host:port:system_id"}."""
        return f"{self.host}:{self.port}:{self.system_id}"

    @property
    def tls_hostname(self) -> str | None:
        """The name to check the SMSC's certificate against; C{None} without TLS."""
        if self.tls is None:
            return None
        return self.tls.hostname or self.host


_SESSION_DEFAULTS: Mapping[str, Any] = _defaults(SessionConfig)


def _session_values(t: _Table, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Read the session keys of C{t}, falling back on C{defaults}.

    @param defaults: the carrier's field defaults for its top level, the
        top level's values for an entry of C{sessions}.
    """
    host = t.string("host", defaults["host"], empty=False)
    if host is not None and (not host or any(c.isspace() for c in host)):
        t.fail("host", f"must be a host name or address, not {host!r}")
    tls = defaults["tls"]
    if t.raw("tls") is not None:
        tls = TLSConfig.from_value(t.raw("tls"), t.at("tls"))
    return {
        "bind": t.choice("bind", defaults["bind"], BIND_MODES),
        "host": host,
        "port": t.integer("port", defaults["port"], 1, 65535),
        "tls": tls,
        "system_id": t.string("system_id", defaults["system_id"],
                              limit=SYSTEM_ID_MAX, empty=False),
        "password": t.string("password", defaults["password"], limit=PASSWORD_MAX,
                             secret=True),
        "system_type": t.string("system_type", defaults["system_type"],
                                limit=SYSTEM_TYPE_MAX),
        "addr_ton": t.integer("addr_ton", defaults["addr_ton"], 0, 255),
        "addr_npi": t.integer("addr_npi", defaults["addr_npi"], 0, 255),
        "address_range": t.string("address_range", defaults["address_range"],
                                  limit=ADDRESS_RANGE_MAX),
    }


def _session(values: Mapping[str, Any], t: _Table, nowhere: str) -> SessionConfig:
    """Build one spec; C{host} and C{system_id} must have come from somewhere."""
    for key in ("host", "system_id"):
        if values[key] is None:
            t.fail(key, f"is required{nowhere}")
    return SessionConfig(**values)


# --- carriers ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CarrierConfig:
    """One carrier: its SMPP sessions, its traffic policy and its routes.

    Build it with L{from_mapping} (or L{parse_carriers}), which validates.
    The session keys at the top level (C{bind}, C{host}, C{port}, C{tls},
    C{system_id}, C{password}, C{system_type}, C{addr_ton}, C{addr_npi},
    C{address_range}) are the defaults of every entry of C{sessions}; when
    C{sessions} is absent they make the only one.  C{host} and C{system_id}
    are C{None} when every session gives its own.

    @ivar name: unique; letters, digits, C{_ . -}; used in logs and metrics.
    @ivar binds: how many times each session is opened in parallel.
    @ivar window: outstanding requests allowed per session.
    @ivar throughput: C{submit_sm} per second for the whole carrier (parts,
        not messages); 0 for no cap.
    @ivar enquire_link_interval: seconds between keep-alives.
    @ivar response_timeout: seconds to wait for a response to one request.
    @ivar bind_timeout: seconds to wait for the bind response.
    @ivar reconnect_delay_initial: first wait before reconnecting, seconds.
    @ivar reconnect_delay_max: the cap of the growing reconnect wait.
    @ivar already_bound_delay: wait after a bind refused with C{ESME_RALYBND}
        (the SMSC still holds our old session).
    @ivar reconnect_grace: seconds a carrier whose binds all dropped keeps
        accepting sends into its queue while it reconnects (0: refuses them
        at once); from 0 to L{RECONNECT_GRACE_MAX}.
    @ivar alphabet: how a text that fits GSM 03.38 is sent: C{"gsm7"}
        (C{data_coding} 0), C{"latin1"} (3, for SMSCs that read 0 as
        latin-1), or C{"ucs2"} (always 8).  Other texts always go as UCS-2.
    @ivar mt_sender: C{source_addr} of our MTs as written: digits (with an
        optional leading C{+}) or an alphanumeric name; C{""} to let the
        SMSC choose.  See L{mt_source_addr} and L{source_ton_npi}.
    @ivar mo_verifier: our number devices send their MO to, or C{None}.
    @ivar mo_charset: how MO text sent with C{data_coding} 0 is read:
        C{"gsm7"} (GSM 03.38, as SMPP 3.4 says), C{"ascii"} or C{"latin1"}
        (for SMSCs that pass text on in those, where GSM would turn C{@}
        into C{¡}).  See L{msisdnd.smpp.inbound.decode_mo_text}.
    @ivar receipt_id_format: how the carrier's receipts quote the id its
        C{submit_sm_resp} gave, in the C{receipted_message_id} TLV and in the
        text's C{id:} alike: C{"as-is"}, C{"hex-to-decimal"} (hex ids,
        quoted in decimal in receipts) or C{"decimal-to-hex"} (the
        reverse).  A receipt is matched to the one submit this names; see
        L{msisdnd.sms.message_ids.receipt_message_id}.
    @ivar mcc: mobile country codes routed here (3-digit strings).
    @ivar mccmnc: MCC+MNC pairs routed here (5-6 digit strings).
    @ivar prefixes: E.164 prefixes routed here, normalized to C{"+336"}.
    @ivar default: whether this carrier takes what no route claims.
    @ivar region: ISO 3166 alpha-2 region in which national-form MO source
        numbers are read, or C{None}.
    @ivar queue_size: message parts queued for this carrier at most.
    @ivar daily_cap: submit_sm per day (UTC) for this account, across every
        daemon; past it the carrier is not chosen until midnight (0: no cap).
    @ivar temporary_statuses: C{command_status} values after which a submit
        is tried again later rather than failed.
    @ivar throttle_statuses: those that also pause the whole carrier, from
        C{throttle_pause} seconds, growing up to C{throttle_pause_max}.
    @ivar registered_delivery: the C{submit_sm} field (1: a receipt).
    @ivar source_ton: C{source_addr_ton} of every MT, or C{None} for the one
        the sender implies (see L{source_ton_npi}): 3 (network specific)
        for some SMSCs' short codes, say.
    @ivar source_npi: C{source_addr_npi} likewise, or C{None}.
    @ivar dest_ton: C{dest_addr_ton} of every MT (1: international).
    @ivar dest_npi: C{dest_addr_npi} of every MT (1: ISDN/E.164).
    @ivar service_type: the C{submit_sm} C{service_type} (at most
        L{SERVICE_TYPE_MAX} characters; C{""} for the SMSC's default).
    @ivar priority_flag: the C{submit_sm} C{priority_flag}, 0 to 3.
    @ivar data_coding: the C{data_coding} of GSM 03.38 text (alphabet
        C{"gsm7"}): 0, or 1 for SMSCs that want it for their default
        alphabet.  UCS-2 (8) and latin-1 (3) text keep theirs.
    @ivar validity_format: C{"relative"} (C{YYMMDDhhmmss000R}) or
        C{"absolute"} (the carrier's clock plus the validity, in UTC:
        C{YYMMDDhhmmsst00+}), for SMSCs that refuse relative times.
    @ivar trace: log every PDU of the carrier's sessions at debug level, one
        masked line each (numbers masked, never a message's text).
    @ivar sessions: the distinct session specs, before C{binds}.
    @ivar max_binds: simultaneous binds to each of the carrier's accounts
        (host, port, system_id), across every daemon (0: no limit); see
        L{msisdnd.sms.accounts}.
    @ivar bind_lease: seconds a bind's permit lasts unless its daemon
        renews it (a dead daemon's binds are free again after it).
    @ivar expected_daemons: how many daemons share the carrier's accounts:
        while Redis is away each keeps to this share of C{throughput} and
        C{max_binds}.
    """

    name: str
    # The session keys default as SessionConfig's do, except three: host and
    # system_id, which the entries of sessions may give instead, and bind.
    host: str | None = None
    port: int = _SESSION_DEFAULTS["port"]
    tls: TLSConfig | None = _SESSION_DEFAULTS["tls"]
    system_id: str | None = None
    password: str = field(default=_SESSION_DEFAULTS["password"], repr=False)
    system_type: str = _SESSION_DEFAULTS["system_type"]
    bind: str = "transceiver"
    binds: int = 1
    window: int = 10
    throughput: float = 0.0
    enquire_link_interval: float = 30.0
    response_timeout: float = 10.0
    bind_timeout: float = 10.0
    reconnect_delay_max: float = 60.0
    reconnect_delay_initial: float = 1.0
    already_bound_delay: float = 30.0
    reconnect_grace: float = 10.0
    alphabet: str = "gsm7"
    mt_sender: str = ""
    mo_verifier: str | None = None
    mo_charset: str = DEFAULT_MO_CHARSET
    receipt_id_format: str = DEFAULT_RECEIPT_ID_FORMAT
    mcc: tuple[str, ...] = ()
    mccmnc: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    default: bool = False
    region: str | None = None
    queue_size: int = 1000
    daily_cap: int = 0
    temporary_statuses: frozenset[int] = DEFAULT_TEMPORARY_STATUSES
    throttle_statuses: frozenset[int] = DEFAULT_THROTTLE_STATUSES
    throttle_pause: float = 1.0
    throttle_pause_max: float = 30.0
    registered_delivery: int = 1
    source_ton: int | None = None
    source_npi: int | None = None
    dest_ton: int = 1
    dest_npi: int = 1
    service_type: str = ""
    priority_flag: int = 0
    data_coding: int = 0
    validity_format: str = "relative"
    trace: bool = False
    addr_ton: int = _SESSION_DEFAULTS["addr_ton"]
    addr_npi: int = _SESSION_DEFAULTS["addr_npi"]
    address_range: str = _SESSION_DEFAULTS["address_range"]
    sessions: tuple[SessionConfig, ...] = ()
    max_binds: int = 0
    bind_lease: float = 15.0
    expected_daemons: int = 1

    def __post_init__(self) -> None:
        # Built by hand rather than by from_mapping: the top-level keys
        # make the one session, as they would in a table.
        if not self.sessions:
            if self.host is None or self.system_id is None:
                raise ConfigError(self.name, "needs host and system_id, or sessions")
            object.__setattr__(self, "sessions", (SessionConfig(
                bind=self.bind, host=self.host, port=self.port, tls=self.tls,
                system_id=self.system_id, password=self.password,
                system_type=self.system_type, addr_ton=self.addr_ton,
                addr_npi=self.addr_npi, address_range=self.address_range),))

    @property
    def session_specs(self) -> tuple[SessionConfig, ...]:
        """Every session to open: each of L{sessions}, C{binds} times in a row."""
        return tuple(spec for spec in self.sessions for _ in range(self.binds))

    def account(self, key: str | None = None) -> Account:
        """The account C{key} of one of the carrier's sessions with the
        carrier's shared limits; by default the account its C{throughput}
        is counted on: that of its transmitting sessions (their keys joined
        by C{"+"} when they log in to more than one)."""
        if key is None:
            key = "+".join(sorted(_sending_accounts(self)))
        return Account(key, throughput=self.throughput, max_binds=self.max_binds,
                       bind_lease=self.bind_lease, daemons=self.expected_daemons)

    @property
    def can_transmit(self) -> bool:
        """Whether any session may send MTs (else the carrier is receive-only)."""
        return any(spec.can_transmit for spec in self.sessions)

    @property
    def can_receive(self) -> bool:
        """Whether any session receives MOs and receipts."""
        return any(spec.can_receive for spec in self.sessions)

    @property
    def mt_source_addr(self) -> str:
        """C{source_addr} for our MTs: the digits without C{+}, or the name."""
        if _NUMERIC_SENDER.fullmatch(self.mt_sender):
            return self.mt_sender.lstrip("+")
        return self.mt_sender

    @property
    def source_ton_npi(self) -> tuple[int, int]:
        """(C{source_addr_ton}, C{source_addr_npi}) for L{mt_source_addr}.

        L{source_ton} and L{source_npi} where set; else what the sender
        implies: (1, 1) international/ISDN for digits, (5, 0) for an
        alphanumeric name, (0, 0) when C{mt_sender} is empty.
        """
        ton, npi = self._implied_ton_npi
        return (ton if self.source_ton is None else self.source_ton,
                npi if self.source_npi is None else self.source_npi)

    @property
    def _implied_ton_npi(self) -> tuple[int, int]:
        if not self.mt_sender:
            return (0, 0)
        if _NUMERIC_SENDER.fullmatch(self.mt_sender):
            return (_TON_INTERNATIONAL, _NPI_ISDN)
        return (_TON_ALPHANUMERIC, _NPI_UNKNOWN)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "carrier") -> CarrierConfig:
        """Validate one C{[[carrier]]} table.

        @param where: how errors name this table, e.g. C{carrier[1] "sfr"}.
        @raise ConfigError: the first problem found, naming its key.
        """
        t = _Table(data, where, _CARRIER_KEYS)
        name = t.string("name", required=True, empty=False)
        if not _NAME.fullmatch(name):
            t.fail("name", "must be 1 to 64 letters, digits, '_', '.' or '-', "
                           f"not {name!r}")

        defaults = _defaults(cls)
        top = _session_values(t, defaults)
        sessions = _sessions(t, top)

        reconnect_max = t.number("reconnect_delay_max", defaults["reconnect_delay_max"],
                                 above=0.0, most=_DURATION_MAX)
        reconnect_initial = t.number("reconnect_delay_initial",
                                     defaults["reconnect_delay_initial"], above=0.0)
        if reconnect_initial > reconnect_max:
            t.fail("reconnect_delay_initial", f"must be at most reconnect_delay_max "
                                              f"({reconnect_max:g}), not {reconnect_initial:g}")
        throttle_pause = t.number("throttle_pause", defaults["throttle_pause"],
                                  above=0.0, most=_DURATION_MAX)
        throttle_pause_max = t.number("throttle_pause_max", defaults["throttle_pause_max"],
                                      above=0.0, most=_DURATION_MAX)
        if throttle_pause > throttle_pause_max:
            t.fail("throttle_pause", f"must be at most throttle_pause_max "
                                     f"({throttle_pause_max:g}), not {throttle_pause:g}")
        temporary = _statuses(t, "temporary_statuses", defaults["temporary_statuses"])
        throttle = _statuses(t, "throttle_statuses", defaults["throttle_statuses"])
        loose = throttle - temporary
        if loose:
            t.fail("throttle_statuses",
                   f"{', '.join(sorted(map(codec.status_name, loose)))} must also be in "
                   "temporary_statuses (a throttled submit is tried again)")
        alphabet = t.choice("alphabet", defaults["alphabet"], ALPHABETS)
        mt_sender = _mt_sender(t, defaults["mt_sender"])
        source_ton = _source_ton(t, defaults["source_ton"], mt_sender)

        carrier = cls(
            name=name,
            host=top["host"],
            port=top["port"],
            tls=top["tls"],
            system_id=top["system_id"],
            password=top["password"],
            system_type=top["system_type"],
            bind=top["bind"],
            binds=t.integer("binds", defaults["binds"], 1, 32),
            window=t.integer("window", defaults["window"], 1, 1000),
            throughput=t.number("throughput", defaults["throughput"], least=0.0),
            enquire_link_interval=t.number("enquire_link_interval",
                                           defaults["enquire_link_interval"],
                                           above=0.0, most=_DURATION_MAX),
            response_timeout=t.number("response_timeout", defaults["response_timeout"],
                                      above=0.0, most=_DURATION_MAX),
            bind_timeout=t.number("bind_timeout", defaults["bind_timeout"],
                                  above=0.0, most=_DURATION_MAX),
            reconnect_delay_max=reconnect_max,
            reconnect_delay_initial=reconnect_initial,
            already_bound_delay=t.number("already_bound_delay", defaults["already_bound_delay"],
                                         above=0.0, most=_DURATION_MAX),
            reconnect_grace=t.number("reconnect_grace", defaults["reconnect_grace"],
                                     least=0.0, most=RECONNECT_GRACE_MAX),
            alphabet=alphabet,
            mt_sender=mt_sender,
            mo_verifier=_mo_verifier(t),
            mo_charset=t.choice("mo_charset", defaults["mo_charset"], MO_CHARSETS),
            receipt_id_format=t.choice("receipt_id_format", defaults["receipt_id_format"],
                                       RECEIPT_ID_FORMATS),
            mcc=t.codes("mcc", _MCC, "3 digits"),
            mccmnc=t.codes("mccmnc", _MCCMNC, "5 or 6 digits (MCC and MNC)"),
            prefixes=_prefixes(t),
            default=t.boolean("default", defaults["default"]),
            region=_region(t),
            queue_size=t.integer("queue_size", defaults["queue_size"], 1, 1_000_000),
            daily_cap=t.integer("daily_cap", defaults["daily_cap"], 0, 100_000_000),
            temporary_statuses=temporary,
            throttle_statuses=throttle,
            throttle_pause=throttle_pause,
            throttle_pause_max=throttle_pause_max,
            registered_delivery=t.integer("registered_delivery",
                                          defaults["registered_delivery"], 0, 255),
            source_ton=source_ton,
            source_npi=t.integer("source_npi", defaults["source_npi"], 0, 255),
            dest_ton=t.integer("dest_ton", defaults["dest_ton"], 0, 255),
            dest_npi=t.integer("dest_npi", defaults["dest_npi"], 0, 255),
            service_type=t.string("service_type", defaults["service_type"],
                                  limit=SERVICE_TYPE_MAX),
            priority_flag=t.integer("priority_flag", defaults["priority_flag"], 0, 3),
            data_coding=_data_coding(t, defaults["data_coding"], alphabet),
            validity_format=t.choice("validity_format", defaults["validity_format"],
                                     VALIDITY_FORMATS),
            trace=t.boolean("trace", defaults["trace"]),
            addr_ton=top["addr_ton"],
            addr_npi=top["addr_npi"],
            address_range=top["address_range"],
            sessions=sessions,
            max_binds=t.integer("max_binds", defaults["max_binds"], 0, 1000),
            bind_lease=t.number("bind_lease", defaults["bind_lease"], least=0.2,
                                most=_DURATION_MAX),
            expected_daemons=t.integer("expected_daemons", defaults["expected_daemons"],
                                       1, 1000),
        )
        if carrier.default and not carrier.can_transmit:
            t.fail("default", "a receive-only carrier cannot be the default "
                              "(no session binds as transmitter or transceiver)")
        return carrier


def _sessions(t: _Table, top: Mapping[str, Any]) -> tuple[SessionConfig, ...]:
    items = t.raw("sessions")
    if items is None:
        return (_session(top, t, ""),)
    if not _is_array(items):
        t.fail("sessions", f"must be an array of tables, not {_kind(items)}")
    if not items:
        t.fail("sessions", "must list at least one session, or be left out")
    misplaced = {key: "set it at the carrier's top level"
                 for key in _CARRIER_KEYS if key not in _SESSION_KEYS}
    specs = []
    for i, item in enumerate(items):
        st = _Table(item, t.at(f"sessions[{i}]"), _SESSION_KEYS, misplaced)
        specs.append(_session(_session_values(st, top), st,
                              " (neither this session nor the carrier gives one)"))
    return tuple(specs)


def _statuses(t: _Table, key: str, default: frozenset[int]) -> frozenset[int]:
    """An array of SMPP status names (or vendor-specific integer codes)."""
    if t.raw(key) is None:
        return default
    codes = set()
    for i, item in enumerate(t.array(key)):
        where = f"{key}[{i}]"
        if isinstance(item, int) and not isinstance(item, bool):
            if not 1 <= item <= 0xFFFFFFFF:
                t.fail(where, f"must be a non-zero 32-bit command_status, not {item}")
            codes.add(item)
            continue
        if not isinstance(item, str):
            t.fail(where, f"must be an SMPP status name such as 'ESME_RTHROTTLED', "
                          f"not {_kind(item)}")
        try:
            code = codec.status_code(item)
        except KeyError:
            close = difflib.get_close_matches(item.upper(), list(codec.STATUSES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            t.fail(where, f"unknown SMPP status {item!r}{hint}")
        if code == codec.ESME_ROK:
            t.fail(where, "ESME_ROK is success, not an error status")
        codes.add(code)
    return frozenset(codes)


def _mt_sender(t: _Table, default: str) -> str:
    sender = t.string("mt_sender", default)
    if not sender:
        return sender
    if _NUMERIC_SENDER.fullmatch(sender):
        digits = len(sender.lstrip("+"))
        if digits > SOURCE_ADDR_MAX:
            t.fail("mt_sender", f"must be at most {SOURCE_ADDR_MAX} digits "
                                f"(SMPP carries no more), not {digits}")
        return sender
    if not _ALPHANUMERIC_SENDER.fullmatch(sender) or sender != sender.strip():
        t.fail("mt_sender", "must be digits (with an optional leading '+') or an "
                            "alphanumeric name of ASCII letters, digits, spaces and "
                            f"punctuation without []\\^`{{|}}~, not {sender!r}")
    if not any(c.isalpha() for c in sender):
        t.fail("mt_sender", f"an alphanumeric sender needs a letter; write a number as "
                            f"digits with an optional leading '+', not {sender!r}")
    if len(sender) > ALPHANUMERIC_SENDER_MAX:
        t.fail("mt_sender", f"an alphanumeric sender must be at most "
                            f"{ALPHANUMERIC_SENDER_MAX} characters (the GSM limit), "
                            f"not {len(sender)} ({sender!r})")
    return sender


def _source_ton(t: _Table, default: int | None, sender: str) -> int | None:
    """C{source_ton}, checked against the sender it will carry."""
    ton = t.integer("source_ton", default, 0, 255)
    if ton is None or not sender:
        return ton
    numeric = _NUMERIC_SENDER.fullmatch(sender) is not None
    if not numeric and ton in _NUMBER_TONS:
        t.fail("source_ton", f"{ton} ({_NUMBER_TONS[ton]}) is a number's TON, and mt_sender "
                             f"{sender!r} is a name; use 5 (alphanumeric) or 0 (unknown)")
    length = len(sender.lstrip("+")) if numeric else len(sender)
    if ton == _TON_ALPHANUMERIC and length > ALPHANUMERIC_SENDER_MAX:
        t.fail("source_ton", f"5 (alphanumeric) carries at most {ALPHANUMERIC_SENDER_MAX} "
                             f"characters (the GSM limit), and mt_sender {sender!r} has "
                             f"{length}")
    return ton


def _data_coding(t: _Table, default: int, alphabet: str) -> int:
    value = t.integer("data_coding", default, 0, 255)
    if value not in GSM_DATA_CODINGS:
        t.fail("data_coding", f"must be 0 or 1 (the data_coding of GSM 03.38 text; UCS-2 "
                              f"and latin-1 keep 8 and 3), not {value}")
    if value != default and alphabet != "gsm7":
        t.fail("data_coding", f"applies to GSM 03.38 text, which alphabet = {alphabet!r} "
                              "never sends; leave it out or use alphabet = 'gsm7'")
    return value


def _mo_verifier(t: _Table) -> str | None:
    number = t.string("mo_verifier")
    if number is None:
        return None
    if not _NUMERIC_SENDER.fullmatch(number) or len(number.lstrip("+")) > SOURCE_ADDR_MAX:
        t.fail("mo_verifier", f"must be a number of 1 to {SOURCE_ADDR_MAX} digits "
                              f"(with an optional leading '+'), not {number!r}")
    return number


def _prefixes(t: _Table) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for i, item in enumerate(t.array("prefixes")):
        match = _PREFIX.fullmatch(item) if isinstance(item, str) else None
        if match is None:
            t.fail(f"prefixes[{i}]", "must be an E.164 prefix such as '+336' "
                                     f"(a string of 1 to 15 digits), not {item!r}")
        found["+" + match.group(1)] = None
    return tuple(found)


def _region(t: _Table) -> str | None:
    region = t.string("region")
    if region is None:
        return None
    if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        t.fail("region", f"must be an ISO 3166 alpha-2 region phonenumbers knows, "
                         f"such as 'FR', not {region!r}")
    return region.upper()


def _carrier_where(index: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, Mapping) else None
    if isinstance(name, str) and _NAME.fullmatch(name):
        return f'carrier[{index}] "{name}"'
    return f"carrier[{index}]"


#: The keys every carrier logging in to one account must agree on.
_ACCOUNT_KEYS = ("max_binds", "bind_lease", "expected_daemons")


def _sending_accounts(carrier: CarrierConfig) -> set[str]:
    return {spec.account_key for spec in carrier.sessions if spec.can_transmit}


def _shared_limits_agree(carrier: CarrierConfig, where: str,
                         accounts: dict[str, tuple[str, CarrierConfig]]) -> None:
    """Carriers that log in to one account (host, port, system_id) share its
    limits, so they must give the same ones (C{throughput} where both send
    through it)."""
    for spec in carrier.sessions:
        first = accounts.setdefault(spec.account_key, (where, carrier))
        other_where, other = first
        if other is carrier:
            continue
        keys = _ACCOUNT_KEYS
        if spec.can_transmit and spec.account_key in _sending_accounts(other) \
                and (carrier.throughput or other.throughput):
            ours, theirs = carrier.account().key, other.account().key
            if ours != theirs:
                raise ConfigError(f"{where}.throughput", f"both this carrier and {other_where} "
                                  f"send through the account {spec.account_key}, but count "
                                  f"its throughput over {ours!r} and {theirs!r}: give them "
                                  "the same transmitting sessions, or separate accounts")
            keys = ("throughput",) + keys
        for key in keys:
            if getattr(carrier, key) != getattr(other, key):
                raise ConfigError(f"{where}.{key}", f"must equal {other_where}'s "
                                  f"({getattr(other, key)!r}): both log in to the account "
                                  f"{spec.account_key}, whose limits they share")


def parse_carriers(items: Sequence[Mapping[str, Any]]) -> tuple[CarrierConfig, ...]:
    """Validate every C{[[carrier]]} table, and the set of them.

    Besides each table's own rules: there is at least one carrier, names are
    unique, at most one is the C{default}, at least one carrier can
    transmit, and carriers logging in to one account agree on its shared
    limits (C{throughput}, C{max_binds}, C{bind_lease}, C{expected_daemons}).
    A receive-only carrier (all sessions C{bind = "receiver"}) is
    allowed, but is never the default.

    @raise ConfigError: the first problem found; carriers are named as
        C{carrier[1] "sfr"}.
    """
    if not _is_array(items):
        raise ConfigError("carrier", f"must be an array of tables ([[carrier]]), "
                                     f"not {_kind(items)}")
    if not items:
        raise ConfigError("carrier", "at least one [[carrier]] is required")
    carriers: list[CarrierConfig] = []
    named: dict[str, str] = {}
    default_at: str | None = None
    accounts: dict[str, tuple[str, CarrierConfig]] = {}
    for index, item in enumerate(items):
        where = _carrier_where(index, item)
        carrier = CarrierConfig.from_mapping(item, where)
        if carrier.name in named:
            raise ConfigError(f"{where}.name", f"duplicates {named[carrier.name]}")
        named[carrier.name] = where
        if carrier.default:
            if default_at is not None:
                raise ConfigError(f"{where}.default",
                                  f"only one carrier may be the default, and {default_at} is")
            default_at = where
        _shared_limits_agree(carrier, where, accounts)
        carriers.append(carrier)
    if not any(carrier.can_transmit for carrier in carriers):
        raise ConfigError("carrier", "no carrier can send: every session binds as receiver")
    return tuple(carriers)
