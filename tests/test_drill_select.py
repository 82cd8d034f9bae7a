"""What a backup selects: literal --repo without _catalog, Harbor's project/repository API when _catalog
is refused, --tag/--exclude-tag (referrer tags follow their subject). The source is a real docker-registry;
the front (tests/fakes/registry_front.py) refuses _catalog and answers Harbor's listing API as the
Harbor v2.0 swagger describes it."""

from __future__ import annotations

import os

from regwatch.client import RegistryClient
from regwatch.images import build_image, push_image
from tests.drill_helpers import push_signature, report_of, rows, run_drill
from tests.fakes.registry_front import RegistryFront


def _push(client: RegistryClient, repo: str, tag: str) -> str:
    return push_image(client, repo, tag, build_image([{"f": os.urandom(300)}]))


def test_literal_repo_needs_no_catalog_and_harbor_api_lists_the_rest(make_registry, tmp_path):
    reg = make_registry()
    with RegistryClient(reg.url) as client:
        for repo in ("team/app", "team/web", "ops/tool"):
            _push(client, repo, "1")
    with RegistryFront(reg.url, catalog_status=401, referrers=False) as front:
        # a literal --repo: backed up without ever asking _catalog
        proc = run_drill("--backup", "--source", front.url, "--store", tmp_path / "a", "--repo", "team/app")
        assert proc.returncode == 0, proc.stderr
        assert not [r for r in front.requests if r["path"] == "/v2/_catalog"]
        report = report_of(tmp_path / "a")
        assert set(rows(report)) == {"team/app:1"}
        assert report["repositories_found_by"] == "--repo names as given (no listing needed)"
        # a glob needs a listing: _catalog is refused and the source is no Harbor, so it says what to do
        proc = run_drill("--backup", "--source", front.url, "--store", tmp_path / "b", "--repo", "team/*")
        assert proc.returncode == 1
        assert "_catalog was refused" in proc.stderr and "name the repositories with --repo NAME" in proc.stderr
    with RegistryFront(reg.url, catalog_status=401, referrers=False, harbor=True) as harbor:
        proc = run_drill("--backup", "--source", harbor.url, "--store", tmp_path / "c", "--repo", "team/*")
        assert proc.returncode == 0, proc.stderr
        report = report_of(tmp_path / "c")
        assert set(rows(report)) == {"team/app:1", "team/web:1"}
        assert report["repositories_found_by"] == ("Harbor's project and repository API (_catalog was refused: "
                                                   "HTTP 401)")
        listed = [r["path"] for r in harbor.requests if r["path"].startswith("/api/v2.0/")]
        assert listed == ["/api/v2.0/projects", "/api/v2.0/projects/ops/repositories",
                          "/api/v2.0/projects/team/repositories"]


def test_tag_filters_select_exactly_and_signatures_follow(make_registry, tmp_path):
    reg = make_registry()
    with RegistryClient(reg.url) as client:
        digests = {tag: _push(client, "app", tag) for tag in ("1.0", "1.1", "1.1-debug", "2.0", "latest")}
        push_signature(client, "app", digests["1.1"])
        push_signature(client, "app", digests["2.0"])
        all_tags = set(client.tags("app"))
    proc = run_drill("--backup", "--source", reg.url, "--store", tmp_path / "s", "--tag", r"1\..*", "--tag", "latest",
                     "--exclude-tag", ".*-debug")
    assert proc.returncode == 0, proc.stderr
    report = report_of(tmp_path / "s")
    sig_11 = f"sha256-{digests['1.1'][7:]}.sig"
    assert set(rows(report)) == {"app:1.0", "app:1.1", "app:latest", f"app:{sig_11}"}
    assert len(all_tags) == 7  # the 2.0 signature and the debug tag were offered, and left out
    assert rows(report)[f"app:{sig_11}"]["referrer_of"] == digests["1.1"]
    assert [r["tag"] for r in rows(report)["app:1.1"]["referrers"]] == [sig_11]
    assert "1 signature/referrer tag(s) left out: the manifest they name is not selected" in report["notes"]
    proc = run_drill("--backup", "--source", reg.url, "--store", tmp_path / "t", "--tag", "(")
    assert proc.returncode == 2
    assert "Error: --tag '(' is not a valid regular expression: missing ), unterminated subpattern at position 0" \
        in proc.stderr
