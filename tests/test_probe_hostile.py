"""The prober's trust boundary (issue 18): the certificate expiry it reports is the registry's own origin's,
registry text in the CLI table is text (never markup), turning verification off says so loudly, and a
foreign origin's challenge never gets the password. The registries are ``tests/fakes/hostile.py``
servers (TLS from the test's PKI) scripted as distribution-spec v1.1 registries."""

from __future__ import annotations

import base64

from click.testing import CliRunner

from regwatch.cli import cli
from regwatch.credentials import Credentials
from regwatch.images import build_image
from regwatch.probes import Prober, ProbeSpec
from tests.fakes.hostile import Reply
from tests.helpers import PKI

BASIC = "Basic " + base64.b64encode(b"alice:alice-secret").decode()


def registry_routes(image, blob_location=None) -> dict:
    """A registry that serves ``image`` as lib/app:1 (its blobs, or redirects for them)."""
    routes = {
        "/v2/": Reply(200),
        "/v2/lib/app/manifests/1": Reply(200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json",
                                               "Docker-Content-Digest": image.digest}, image.manifest),
    }
    for blob in [image.config, *image.layers]:
        path = f"/v2/lib/app/blobs/{blob.digest}"
        routes[path] = Reply(307, {"Location": blob_location(blob)}) if blob_location else Reply(200, {}, blob.data)
    return routes


def tls_context(pki: PKI, name: str, days: int):
    import ssl

    cert, (cert_path, key_path) = pki.leaf(name, days_valid=(-1, days), via_intermediate=False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return cert, context


def test_the_expiry_is_the_registry_origins_not_a_redirect_targets_on_the_same_host(servers, tmp_path):
    pki = PKI(tmp_path)
    image = build_image([{"f": b"layer bytes"}])
    registry_cert, registry_tls = tls_context(pki, "registry", 60)
    storage_cert, storage_tls = tls_context(pki, "storage", 5)   # expires first, on another port of 127.0.0.1
    storage = servers({f"/b/{b.digest}": Reply(200, {}, b.data) for b in [image.config, *image.layers]},
                      tls=storage_tls)
    registry = servers(registry_routes(image, lambda b: f"{storage.url}/b/{b.digest}"), tls=registry_tls)
    result = Prober(ca_file=str(pki.ca_file)).probe(ProbeSpec(registry.url, "lib/app", "1"))
    assert result.success, result.message
    assert len(storage.seen) == 2  # the blobs really came from the other port
    assert result.cert_expiry == registry_cert.not_valid_after_utc.timestamp()
    assert result.cert_expiry != storage_cert.not_valid_after_utc.timestamp()


def test_a_redirect_targets_challenge_never_gets_the_password(servers):
    image = build_image([{"f": b"x"}])
    realm = servers({"/token": Reply(200, {}, b'{"token": "t"}')})
    storage = servers({"/blob": Reply(401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token"'})})
    routes = registry_routes(image, lambda b: f"{storage.url}/blob")
    routes["/v2/"] = lambda seen: Reply(200) if seen.headers.get("Authorization") == BASIC else \
        Reply(401, {"WWW-Authenticate": 'Basic realm="r"'})
    registry = servers(routes)
    result = Prober().probe(ProbeSpec(registry.url, "lib/app", "1",
                                      credentials=Credentials(username="alice", password="alice-secret")))
    assert (result.success, result.reason, result.failed_phase) == (False, "auth", "config")
    assert storage.authorization_seen() == [] and realm.seen == []
    assert BASIC in registry.authorization_seen()


def test_registry_text_in_the_table_is_text_not_markup(servers):
    markup = "[/] [bold red]no such tag[/bold red] [link=http://evil.example]click[/link] [/nope"
    body = ('{"errors":[{"code":"UNKNOWN","message":"' + markup + '"}]}').encode()
    registry = servers({"/v2/": Reply(200), "/v2/lib/app/manifests/1": Reply(500, {}, body)})
    result = CliRunner().invoke(cli, ["probe", f"{registry.url}/lib/app:1"], env={"REGWATCH_USERNAME": ""})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"GET /v2/lib/app/manifests/1: HTTP 500: {markup}; look at the registry's logs" in \
        " ".join(result.output.split())


def test_insecure_probes_warn_loudly(servers, tmp_path):
    pki = PKI(tmp_path)
    _, context = tls_context(pki, "registry", 30)
    registry = servers({"/v2/": Reply(200)}, tls=context)
    result = CliRunner().invoke(cli, ["probe", "--insecure", "--mode", "manifest", f"{registry.url}/lib/app:1"],
                                env={"REGWATCH_USERNAME": ""})
    warning = [line for line in result.output.splitlines() if 'msg="TLS verification is OFF"' in line]
    host = registry.url.split("//")[1]
    assert len(warning) == 1
    assert f'peer="probe of {host}"' in warning[0]
    assert 'err="anyone on the network path can read the credentials sent to it and forge its answers"' in warning[0]
