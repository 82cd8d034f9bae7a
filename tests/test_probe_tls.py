"""TLS as the probe sees it, against a real registry serving certificates this test makes (``http.tls``).

The chain is leaf + intermediate, and the intermediate expires first, so "the earliest notAfter of
the presented chain" is checked against a certificate other than the leaf.
"""

from __future__ import annotations

import os

import pytest
from cryptography import x509

from regwatch.client import RegistryClient
from regwatch.images import build_image, push_image
from regwatch.probes import Prober, ProbeSpec
from tests.helpers import PKI
from tests.probe_support import make_collector, run, value

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
