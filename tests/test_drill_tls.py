"""--ca-file and --insecure for registries given by URL: a real docker-registry serving TLS with a
certificate from a private CA (the test PKI of tests/helpers.py)."""

from __future__ import annotations

import os

from regwatch.client import RegistryClient
from regwatch.images import build_image, push_image
from tests.drill_helpers import run_drill
from tests.helpers import PKI


def test_private_ca_registry_by_url(tmp_path, make_registry, write_config):
    pki = PKI(tmp_path)
    _, tls = pki.leaf("registry")
    reg = make_registry(tls=tls)
    with RegistryClient(reg.url, ca_file=str(pki.ca_file)) as client:
        push_image(client, "app", "1", build_image([{"a": os.urandom(100)}]))
    proc = run_drill("--backup", "--source", reg.url, "--store", tmp_path / "a")
    host = reg.url.split("://")[1]
    assert proc.returncode == 1
    assert (f"FAILED backup *: cannot list the repositories of {reg.url}: target {host}: GET /v2/_catalog: TLS to "
            f"{host}: unable to get local issuer certificate; the certificate is not signed by a CA regwatch trusts; "
            "set tls.ca_file (or --ca-file) to the CA that signed it") in proc.stderr.splitlines()
    proc = run_drill("--backup", "--source", reg.url, "--store", tmp_path / "b", "--ca-file", pki.ca_file)
    assert proc.returncode == 0, proc.stderr
    proc = run_drill("--backup", "--source", reg.url, "--store", tmp_path / "c", "--insecure")
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if 'msg="TLS verification is OFF"' in line]
    assert len(warning) == 1 and f'peer="target {host}"' in warning[0]
    config = write_config({"targets": [{"name": "hub", "kind": "distribution", "url": reg.url}]})
    proc = run_drill("--backup", "--source", "hub", "--config", config, "--store", tmp_path / "d", "--insecure")
    assert proc.returncode == 2
    assert ("Error: --ca-file and --insecure apply to registries given by URL; source 'hub' is a target of the "
            "config: set its tls.ca_file or tls.insecure_skip_verify instead") in proc.stderr
    proc = run_drill("--backup", "--source", reg.url, "--store", tmp_path / "e", "--ca-file", tmp_path / "nope.pem")
    assert proc.returncode == 2 and f"Error: --ca-file {tmp_path / 'nope.pem'}: no such file" in proc.stderr
