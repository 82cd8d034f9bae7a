"""The full drill against two real docker-registry instances, read back by skopeo and umoci."""

from __future__ import annotations

import json
import re
import subprocess

from regwatch.client import RegistryClient
from tests.drill_helpers import blob_gets, open_url, populate, report_of, rows, run_drill, served


def test_full_drill_two_registries_all_digests_equal(registry, make_registry, tmp_path):
    dest = make_registry()
    with RegistryClient(registry.url, username="alice", password="alice-secret") as src:
        expected = populate(src)
    store, textfiles = tmp_path / "store", tmp_path / "textfile"
    creds = {"REGWATCH_USERNAME": "alice", "REGWATCH_PASSWORD": "alice-secret"}
    proc = run_drill("--source", registry.url, "--dest", dest.url, "--store", store,
                     "--textfile-dir", textfiles, env=creds)
    assert proc.returncode == 0, proc.stderr
    with RegistryClient(dest.url) as dst:
        assert served(dst, expected) == expected  # every tag (signature included) has the same digest
        # every platform of the index arrived too
        index = json.loads(dst.get_manifest("multi", "latest").body)
        assert len(index["manifests"]) == 2
        for child in index["manifests"]:
            assert dst.head_manifest("multi", child["digest"]) == child["digest"]

    report = json.loads((store / "report.json").read_text())
    assert report["success"] is True
    assert set(rows(report)) == set(expected)
    assert {name: r["digest"] for name, r in rows(report).items()} == expected
    assert all(r["status"] == {"backup": "copied", "restore": "pushed", "verify": "verified"}
               for r in report["images"])
    assert rows(report)["multi:latest"]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert rows(report)["app:1.0"]["platforms"] == ["linux/amd64"]
    assert (store / "report.html").read_text().count("PASSED") >= 1
    prom = (textfiles / "regwatch_drill.prom").read_text()
    assert f'regwatch_drill_success{{store="{store.resolve()}"}} 1.0' in prom
    assert f'regwatch_drill_images{{result="ok",store="{store.resolve()}"}} {float(len(expected))}' in prom
    assert f'regwatch_drill_coverage_ratio{{store="{store.resolve()}"}} 1.0' in prom

    # skopeo reads the store through its own OCI layout transport and pushes the same manifest
    third = make_registry()
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--preserve-digests",
                    f"oci:{store}:app:1.0", f"docker://{third.url.split('://')[1]}/copied:1"],
                   check=True, capture_output=True, timeout=60)
    with RegistryClient(third.url) as client:
        assert client.head_manifest("copied", "1") == expected["app:1.0"]
    umoci = subprocess.run(["umoci", "ls", "--layout", str(store)], capture_output=True, text=True, check=True)
    assert set(umoci.stdout.split()) == set(expected)

    # unchanged registry: the rerun downloads no blob (the registry's own access log says so)
    before = len(blob_gets(registry.log_path))
    assert before > 0
    proc = run_drill("--backup", "--source", registry.url, "--store", store, env=creds)
    assert proc.returncode == 0, proc.stderr
    assert len(blob_gets(registry.log_path)) == before
    report = json.loads((store / "report.json").read_text())
    assert {r["status"]["backup"] for r in report["images"]} == {"unchanged"}
    assert report["summary"]["bytes"]["transferred"] == 0
    # backup and verify count the same objects of the same store
    verify = run_drill("--verify", "--store", store, "--report-dir", tmp_path / "v")
    assert verify.returncode == 0, verify.stderr
    backup_phase, verify_phase = report["phases"]["backup"], report_of(tmp_path / "v")["phases"]["verify"]
    assert (backup_phase["objects"], backup_phase["bytes"]) == (verify_phase["objects"], verify_phase["bytes"])
    on_disk = [p for p in (store / "blobs" / "sha256").iterdir()]
    assert verify_phase["objects"] == len(on_disk)
    assert verify_phase["bytes"] == sum(p.stat().st_size for p in on_disk)


def test_restore_refuses_to_move_a_tag_unless_forced(make_registry, tmp_path):
    source, dest = make_registry(), make_registry()
    with RegistryClient(source.url) as src:
        expected = populate(src)
    store = tmp_path / "store"
    assert run_drill("--backup", "--source", source.url, "--store", store).returncode == 0
    with RegistryClient(dest.url) as dst:
        populate(dst)  # same tags, other content
        before = served(dst, expected)
        proc = run_drill("--restore", "--dest", dest.url, "--store", store, "--dry-run")
        assert proc.returncode == 1 and "pass --force" in proc.stderr and "app:1.0" in proc.stderr
        assert served(dst, expected) == before  # nothing moved
        proc = run_drill("--restore", "--dest", dest.url, "--store", store, "--force", "--dry-run")
        assert proc.returncode == 0, proc.stderr
        assert "multi:latest: would push" in proc.stdout
        assert proc.stderr.splitlines()[-1] == (f"dry run: nothing was pushed to {dest.url}, and no report or "
                                                "metrics were written")
        assert not (store / "report.json").exists() or report_of(store)["phases_run"] == ["backup"]
        assert served(dst, expected) == before
        proc = run_drill("--restore", "--dest", dest.url, "--store", store, "--force")
        assert proc.returncode == 0, proc.stderr
        assert served(dst, expected) == expected


def test_bad_usage_exits_2(tmp_path):
    proc = run_drill("--store", tmp_path / "s", "--source", "http://127.0.0.1:1")
    assert proc.returncode == 2 and "--dest" in proc.stderr
    proc = run_drill("--verify", "--store", tmp_path / "missing")
    assert proc.returncode == 2 and "not an OCI image layout" in proc.stderr
    proc = run_drill("--backup", "--source", "nosuchtarget", "--store", tmp_path / "s")
    assert proc.returncode == 2 and "neither a registry URL" in proc.stderr


def test_docker_config_credentials_and_verify_against(registry, tmp_path):
    import base64

    from regwatch.images import build_image, push_image

    with RegistryClient(registry.url, username="alice", password="alice-secret") as src:
        expected = populate(src)
    docker = tmp_path / "docker"
    docker.mkdir()
    host = registry.url.split("://")[1]
    (docker / "config.json").write_text(json.dumps(
        {"auths": {host: {"auth": base64.b64encode(b"alice:alice-secret").decode()}}}))
    env = {"DOCKER_CONFIG": str(docker), "REGWATCH_USERNAME": "", "REGWATCH_PASSWORD": ""}
    store = tmp_path / "store"
    proc = run_drill("--backup", "--source", registry.url, "--store", store, env=env)
    assert proc.returncode == 0, proc.stderr
    proc = run_drill("--verify", "--store", store, "--against", registry.url, env=env)
    assert proc.returncode == 0, proc.stderr
    # the registry moves a tag: verify --against names exactly that image
    with RegistryClient(registry.url, username="alice", password="alice-secret") as src:
        moved = push_image(src, "multi", "latest", build_image([{"new": b"content"}]))
    assert moved != expected["multi:latest"]
    proc = run_drill("--verify", "--store", store, "--against", registry.url, env=env)
    assert proc.returncode == 1
    assert report_of(store)["failed_images"] == ["multi:latest"]
    # without credentials the registry refuses, and the error says so per image
    proc = run_drill("--verify", "--store", store, "--against", registry.url,
                     env={"DOCKER_CONFIG": str(tmp_path), "REGWATCH_USERNAME": ""})
    assert proc.returncode == 1 and "alice-secret" not in proc.stderr + proc.stdout


def test_progress_bar_on_a_tty_plain_lines_otherwise(make_registry, tmp_path):
    import shlex
    import sys

    source = make_registry()
    with RegistryClient(source.url) as src:
        expected = populate(src)
        # an image whose layer is gone: its error line is logged while the bar is on the screen
        from regwatch.images import build_image, push_image

        broken = build_image([{"x": b"y"}])
        push_image(src, "broken", "1", broken)
    (source.root / "docker" / "registry" / "v2" / "blobs" / "sha256" / broken.layers[0].digest[7:9] /
     broken.layers[0].digest[7:] / "data").unlink()
    cmd = shlex.join([sys.executable, "-m", "regwatch", "drill", "--backup", "--source", source.url,
                      "--store", str(tmp_path / "tty"), "--parallel", "1"])
    tty = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=60)
    assert tty.returncode == 1, tty.stdout
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", tty.stdout)
    assert f"{len(expected) + 1}/{len(expected) + 1} images" in screen and "MB/s" in screen
    # every log line starts on a line of its own: the bar's console prints it above the bar
    segments = [seg for line in screen.splitlines() for seg in line.split("\r") if "ts=" in seg]
    assert any("level=error" in seg and "broken:1" in seg for seg in segments), screen
    assert all(seg.startswith("ts=") for seg in segments), [seg for seg in segments if not seg.startswith("ts=")]
    plain = run_drill("--backup", "--source", source.url, "--store", tmp_path / "plain")
    assert plain.returncode == 1 and "\x1b[" not in plain.stderr + plain.stdout
    assert f'msg="drill backup done: {len(expected) + 1} images' in plain.stderr


def test_restore_uploads_a_shared_layer_once_and_mounts_it(make_registry, tmp_path):
    from regwatch.images import build_image, gzip_layer, push_image, tar_layer
    from tests.drill_helpers import BASE

    source, dest = make_registry(), make_registry()
    with RegistryClient(source.url) as src:
        expected = populate(src)
        for repo in ("third", "fourth"):  # two more repositories on the shared base layer
            expected[f"{repo}:1"] = push_image(src, repo, "1", build_image([BASE, {repo: repo.encode()}]))
    store = tmp_path / "store"
    assert run_drill("--backup", "--source", source.url, "--store", store).returncode == 0
    proc = run_drill("--restore", "--dest", dest.url, "--store", store)  # in parallel (4), as by default
    assert proc.returncode == 0, proc.stderr
    with RegistryClient(dest.url) as dst:
        assert served(dst, expected) == expected
    log = dest.log_path.read_text(errors="replace")
    # the destination's own access log: every blob arrives exactly once, whichever repository needs it
    uploads = re.findall(r'"PUT /v2/[^ ]+/blobs/uploads/[^ "]*digest=sha256%3A([0-9a-f]{64})[^ "]* HTTP/1.1" 201', log)
    on_disk = {p.name for p in (store / "blobs" / "sha256").iterdir()}
    assert sorted(uploads) == sorted(set(uploads)) and set(uploads) <= on_disk
    hexd = gzip_layer(tar_layer(BASE)).digest.split(":")[1]  # app, multi (both platforms), third, fourth share it
    mounts = re.findall(rf'"POST /v2/[^ ]+/blobs/uploads/\?[^ "]*mount=sha256%3A{hexd}[^ "]* HTTP/1.1" 201', log)
    assert uploads.count(hexd) == 1 and len(mounts) == 3, (uploads, mounts)
    report = report_of(store)["phases"]["restore"]
    assert report["moved_objects"] - report["manifests"] == len(uploads)  # uploaded blobs, as the registry saw them
    assert report["mounted_objects"] == len(re.findall(r'"POST /v2/[^ ]+/blobs/uploads/\?[^ "]*mount=[^ "]* '
                                                       r'HTTP/1.1" 201', log))


def test_big_blobs_are_restored_in_chunks(make_registry, tmp_path, monkeypatch):
    from regwatch.drill import restore as restore_mod
    from regwatch.drill.backup import backup
    from regwatch.drill.store import Store

    source, dest = make_registry(), make_registry()
    with RegistryClient(source.url) as src:
        expected = populate(src)
    store = Store(tmp_path / "store", create=True)
    assert backup(open_url(source.url), store, []).ok
    monkeypatch.setattr(restore_mod, "CHUNKED_ABOVE", 3000)
    monkeypatch.setattr(restore_mod, "CHUNK_SIZE", 1024)
    assert restore_mod.restore(open_url(dest.url), store, parallel=1).ok
    with RegistryClient(dest.url) as dst:
        assert served(dst, expected) == expected
    big = [p.stat().st_size for p in store.blob_dir.iterdir() if p.stat().st_size > 3000]
    patches = re.findall(r'"PATCH /v2/[^ ]+/blobs/uploads/[^ ]* HTTP/1.1" 202', dest.log_path.read_text())
    # each distinct big blob is uploaded once (a second repository mounts it): one PATCH per started KiB
    assert big and len(patches) == sum(-(-size // 1024) for size in big)
