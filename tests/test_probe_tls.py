"""TLS as the probe sees it, against a real registry serving certificates this test makes (``http.tls``).

The chain is leaf + intermediate, and the intermediate expires first, so "the earliest notAfter of
the presented chain" is checked against a certificate other than the leaf.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from regwatch.client import RegistryClient
from regwatch.images import build_image, push_image
from regwatch.probes import Prober, ProbeSpec
from tests.test_probe import make_collector, run, value

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _cert(subject: str, key, issuer_name: x509.Name, issuer_key, *, days_valid: tuple[int, int], ca: bool,
          san: x509.GeneralName | None = None) -> x509.Certificate:
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW + dt.timedelta(days=days_valid[0]))
               .not_valid_after(NOW + dt.timedelta(days=days_valid[1]))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class PKI:
    """A root CA, an intermediate that expires in 20 days, and leaves it signs."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _cert("regwatch test root", self.root_key, x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, "regwatch test root")]), self.root_key, days_valid=(-10, 3650),
            ca=True)
        self.mid_key = ec.generate_private_key(ec.SECP256R1())
        self.mid = _cert("regwatch test intermediate", self.mid_key, self.root.subject, self.root_key,
                         days_valid=(-10, 20), ca=True)
        self.ca_file = workdir / "root.pem"
        self.ca_file.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))

    def leaf(self, name: str, *, days_valid=(-1, 60), san=None, via_intermediate=True):
        key = ec.generate_private_key(ec.SECP256R1())
        issuer, issuer_key = (self.mid, self.mid_key) if via_intermediate else (self.root, self.root_key)
        cert = _cert("registry", key, issuer.subject, issuer_key, days_valid=days_valid, ca=False,
                     san=san or x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        chain = [cert, self.mid] if via_intermediate else [cert]
        cert_path, key_path = self.workdir / f"{name}.crt", self.workdir / f"{name}.key"
        cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert, (str(cert_path), str(key_path))


@pytest.fixture
def pki(tmp_path):
    return PKI(tmp_path)


def test_expiry_is_the_chains_earliest_not_after_whether_or_not_the_ca_is_trusted(tmp_path, pki, make_registry):
    leaf, tls = pki.leaf("good")
    reg = make_registry(tls=tls, users={"alice": "alice-secret"})
    client = RegistryClient(reg.url, username="alice", password="alice-secret", ca_file=str(pki.ca_file))
    push_image(client, "lib/app", "1", build_image([{"f": os.urandom(5000)}]))
    earliest = pki.mid.not_valid_after_utc.timestamp()
    assert earliest < leaf.not_valid_after_utc.timestamp()

    trusted = make_collector(tmp_path, reg.url, "lib/app:1", tls={"ca_file": str(pki.ca_file)})
    exposed = run(trusted)
    assert value(exposed, "regwatch_probe_success", image="lib/app:1") == 1, trusted.last.message
    assert value(exposed, "regwatch_tls_cert_expiry_timestamp_seconds") == earliest
    assert value(exposed, "regwatch_probe_phase_duration_seconds", image="lib/app:1", phase="tls") > 0

    untrusted = make_collector(tmp_path, reg.url, "lib/app:1")
    exposed = run(untrusted)
    assert value(exposed, "regwatch_probe_success", image="lib/app:1") == 0
    assert value(exposed, "regwatch_probe_failures_total", image="lib/app:1", reason="tls_unknown_ca") == 1
    assert value(exposed, "regwatch_probe_failed_phase", image="lib/app:1", phase="ping") == 1
    assert value(exposed, "regwatch_tls_cert_expiry_timestamp_seconds") == earliest
    assert "tls.ca_file" in untrusted.last.message


def test_an_expired_certificate_and_a_wrong_name_are_their_own_reasons(pki, make_registry):
    expired, expired_tls = pki.leaf("expired", days_valid=(-30, -2), via_intermediate=False)
    wrong_name, wrong_tls = pki.leaf("wrong-name", san=x509.DNSName("registry.example.com"), via_intermediate=False)
    prober = Prober(ca_file=str(pki.ca_file))
    for tls, reason, cert in ((expired_tls, "tls_expired", expired), (wrong_tls, "tls_hostname", wrong_name)):
        reg = make_registry(tls=tls)
        result = prober.probe(ProbeSpec(reg.url, "lib/app", "1"))
        assert (result.success, result.reason, result.failed_phase) == (False, reason, "ping"), result.message
        assert result.cert_expiry == cert.not_valid_after_utc.timestamp()
        reg.stop()
