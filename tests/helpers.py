"""What several test modules share: a test PKI, TLS contexts for fake servers, exposition sample
readers, and the dashboards' variable substitution.

Test modules import from here (and from tests/conftest.py fixtures, and the domain kits beside it:
harbor_support, probe_support, proxycache_model, logsamples, dockerfile), never from each other.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


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


def server_context(pki: PKI, name: str = "server") -> ssl.SSLContext:
    """A server-side TLS context with a leaf for 127.0.0.1 signed by ``pki`` (for a fake the test starts)."""
    _, (cert, key) = pki.leaf(name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


# --------------------------------------------------------------------------- exposition readers

def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition text: (name, sorted label pairs) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample ``name`` with exactly ``labels`` in an exposition text; None if it is absent."""
    return samples(text).get((name, tuple(sorted(labels.items()))))


# --------------------------------------------------------------------------- dashboards

# The dashboard variables a query may use, with values that select everything.
SUBSTITUTE = {"$job": ".+", "$target": ".+", "$__rate_interval": "1m"}


def substitute(expr: str) -> str:
    """A panel query as Prometheus runs it with every variable on "All"."""
    for var, fill in SUBSTITUTE.items():
        expr = expr.replace(var, fill)
    assert "$" not in re.sub(r"\{\{.*?\}\}", "", expr), f"unsubstituted variable in {expr!r}"
    return expr
