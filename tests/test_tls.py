"""SMPP over TLS: the SMSC's certificate is checked against the configured CA
and hostname, and a client certificate can be presented."""

from __future__ import annotations

import datetime

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.defer import DeferredList

from msisdnd.fakesmsc.smsc import FakeSMSC
from msisdnd.smpp.bind import BindState
from msisdnd.smpp.config import CarrierConfig
from msisdnd.smpp.service import CarriersService
from msisdnd.sms.interfaces import OutboundSMS

from conftest import wait_until


def _certificate(name: str, issuer_key=None, issuer_name=None):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer_key is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert, key, cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture
def pki(tmp_path):
    """A CA, a server certificate for smsc.test, and a client certificate."""
    ca, ca_key, ca_pem, _ = _certificate("msisdnd test CA")
    _, _, server_pem, server_key = _certificate("smsc.test", ca_key, ca.subject)
    _, _, client_pem, client_key = _certificate("msisdnd.device.client", ca_key, ca.subject)
    paths = {}
    for name, data in [("ca.pem", ca_pem), ("client.pem", client_pem), ("client.key", client_key)]:
        (tmp_path / name).write_bytes(data)
        paths[name] = str(tmp_path / name)
    return {"paths": paths, "ca_pem": ca_pem, "server": server_pem + server_key}


def _listen_tls(pki, smsc: FakeSMSC, require_client_cert: bool):
    server = ssl.PrivateCertificate.loadPEM(pki["server"])
    ca = ssl.Certificate.loadPEM(pki["ca_pem"])
    options = server.options(ca) if require_client_cert else server.options()
    return reactor.listenSSL(0, smsc.buildFactory(), options, interface="127.0.0.1")


def _config(port: int, tls: dict) -> CarrierConfig:
    return CarrierConfig.from_mapping({
        "name": "tls", "host": "127.0.0.1", "port": port, "system_id": "msisdnd",
        "password": "pw", "default": True, "tls": tls,
        "reconnect_delay_initial": 0.05, "reconnect_delay_max": 0.2,
    }, "carrier[tls]")


@pytest_twisted.inlineCallbacks
def test_binds_over_tls_with_client_certificate(pki):
    """With the right CA, hostname and client certificate the bind succeeds."""
    smsc = FakeSMSC(reactor)
    port = _listen_tls(pki, smsc, require_client_cert=True)
    paths = pki["paths"]
    service = CarriersService([_config(port.getHost().port, {
        "ca_file": paths["ca.pem"], "hostname": "smsc.test",
        "cert_file": paths["client.pem"], "key_file": paths["client.key"],
    })], reactor)
    service.startService()
    try:
        yield wait_until(lambda: service.binds[0].state is BindState.BOUND)
        assert [s.mode for s in smsc.bound] == ["transceiver"]
        # Submits go over TLS on a connection that sends at the turn's end:
        # many in one turn, and a long text's parts, all arrive and are answered.
        sent = [service.router.send(OutboundSMS(destination=f"+3361234{i:04d}",
                                                text="x" * (30 if i else 500), validity=600))
                for i in range(40)]
        results = yield DeferredList(sent, consumeErrors=True)
        assert all(ok for ok, _ in results), results
        assert len(smsc.messages) == 40
    finally:
        yield service.stopService()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_wrong_hostname_never_binds(pki):
    """A certificate that does not name the configured hostname is refused,
    and the bind's last error says it was TLS."""
    smsc = FakeSMSC(reactor)
    port = _listen_tls(pki, smsc, require_client_cert=False)
    service = CarriersService([_config(port.getHost().port, {
        "ca_file": pki["paths"]["ca.pem"], "hostname": "other.test",
    })], reactor)
    service.startService()
    try:
        yield wait_until(lambda: service.binds[0].bind_failures >= 2)
        assert smsc.bind_count == 0
        assert service.binds[0].state is not BindState.BOUND
        # The bind, the carrier and the admin listener say why: TLS, not "connection lost".
        (why,) = {service.binds[0].last_error, service.carriers[0].link.last_error}
        assert why.startswith("TLS: ") and "certificate" in why, why
        assert service.snapshot()["carriers"][0]["state"] == "down"
    finally:
        yield service.stopService()
        yield port.stopListening()
