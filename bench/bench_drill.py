"""Benchmark: `regwatch drill` backup vs `skopeo sync --src yaml --dest dir`, an unchanged rerun, and
verify (sha256 + gzip diff_id) vs `openssl dgst -sha256` over the same blobs, side by side in one run.

    .venv/bin/python bench/bench_drill.py                   # 50 images, ~150 MB (about a minute)
    .venv/bin/python bench/bench_drill.py --size-mb 1024    # the issue's ~1 GB run

Content: a real docker-registry on loopback; ``--images`` repositories of one image each, all sharing a
base layer (10% of the size), each with its own random (incompressible) layer.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from regwatch.client import MEDIA_OCI_MANIFEST, RegistryClient
from regwatch.digest import sha256_digest
from regwatch.drill.backup import backup
from regwatch.drill.common import Progress, open_registry
from regwatch.drill.store import Store
from regwatch.drill.verify import LayerCheck, check_layer, verify
from regwatch.images import MEDIA_CONFIG, MEDIA_LAYER_GZIP
from regwatch.localregistry import LocalRegistry


def layer(size: int) -> tuple[bytes, str]:
    """A gzip (level 1: random data does not compress anyway) tar layer of ``size`` random bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("data")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    raw = buf.getvalue()
    return gzip.compress(raw, compresslevel=1, mtime=0), sha256_digest(raw)


def populate(client: RegistryClient, images: int, total: int) -> int:
    base, base_diff = layer(total // 10)
    unique = (total - len(base)) // images
    pushed = len(base)
    for i in range(images):
        own, own_diff = layer(unique)
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [base_diff, own_diff]}}).encode()
        blobs = [(config, MEDIA_CONFIG), (base, MEDIA_LAYER_GZIP), (own, MEDIA_LAYER_GZIP)]
        repo = f"bench/r{i:03d}"
        for data, _ in blobs:
            if not client.blob_exists(repo, sha256_digest(data), scope=f"repository:{repo}:pull,push"):
                client.push_blob(repo, sha256_digest(data), data, len(data))
        manifest = {"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
                    "config": {"mediaType": MEDIA_CONFIG, "digest": sha256_digest(config), "size": len(config)},
                    "layers": [{"mediaType": mt, "digest": sha256_digest(d), "size": len(d)} for d, mt in blobs[1:]]}
        client.put_manifest(repo, "v1", json.dumps(manifest).encode(), MEDIA_OCI_MANIFEST)
        pushed += len(own) + len(config)
    return pushed


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--size-mb", type=int, default=150, help="total unique content (default 150; the issue: 1024)")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--big-mb", type=int, default=200, help="size of the one-big-layer verify case (MiB)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-drill-"))
    try:
        with LocalRegistry(work / "registry") as reg, RegistryClient(reg.url, pool_size=16, timeout=120) as client:
            unique_bytes, t = timed(lambda: populate(client, args.images, args.size_mb << 20))
            print(f"content: {args.images} images, {unique_bytes / 1e6:.0f} MB unique (pushed in {t:.1f}s)")
            host = reg.url.split("://")[1]
            quiet = Progress("bench", enabled=False)

            # skopeo sync: every repository, all tags, into dir: (its only local destination for sync)
            spec = work / "sync.yaml"
            spec.write_text(json.dumps({host: {"tls-verify": False,
                                               "images": {f"bench/r{i:03d}": [] for i in range(args.images)}}}))
            _, t_skopeo = timed(lambda: subprocess.run(
                ["skopeo", "sync", "--src", "yaml", "--dest", "dir", str(spec), str(work / "skopeo")],
                check=True, capture_output=True))
            skopeo_bytes = sum(p.stat().st_size for p in (work / "skopeo").rglob("*") if p.is_file())

            store = Store(work / "store", create=True)
            source = open_registry(reg.url, None, pool_size=args.parallel * 2)
            res, t_backup = timed(lambda: backup(source, store, ["bench/*"], parallel=args.parallel, progress=quiet))
            assert res.ok, res.failures[:3]
            again, t_again = timed(lambda: backup(source, store, ["bench/*"], parallel=args.parallel,
                                                  progress=Progress("bench", enabled=False)))
            assert again.ok

            ver, t_verify = timed(lambda: verify(store, progress=Progress("bench", enabled=False)))
            assert ver.ok, ver.failures[:3]
            files = sorted(str(p) for p in store.blob_dir.iterdir() if not p.name.startswith("."))
            store_bytes = sum(os.path.getsize(f) for f in files)
            _, t_openssl = timed(lambda: subprocess.run(["openssl", "dgst", "-sha256", *files], check=True,
                                                        capture_output=True))

            # one big layer: the case where only hashing inside a blob on two threads uses both cores
            big = Store(work / "big", create=True)
            data, diff = layer(args.big_mb << 20)
            big_digest = sha256_digest(data)
            big.write_bytes(big_digest, data)
            big_check = LayerCheck(big_digest, len(data), MEDIA_LAYER_GZIP, diff)
            problem, t_big = timed(lambda: check_layer(big, big_check))
            assert problem is None, problem
            big_openssl = ["openssl", "dgst", "-sha256", str(big.blob_path(big_digest))]
            _, t_big_openssl = timed(lambda: subprocess.run(big_openssl, check=True, capture_output=True))

        mb = 1e6
        b, a = res.totals(), again.totals()
        rows = [
            ("backup regwatch", b["moved_bytes"] / mb, t_backup, b["moved_bytes"] / t_backup / mb),
            ("backup skopeo sync (dir)", skopeo_bytes / mb, t_skopeo, skopeo_bytes / t_skopeo / mb),
            ("backup regwatch, unchanged rerun", a["moved_bytes"] / mb, t_again, 0.0),
            ("verify regwatch (sha256+gunzip diff_id)", store_bytes / mb, t_verify, store_bytes / t_verify / mb),
            ("openssl dgst -sha256 (one process)", store_bytes / mb, t_openssl, store_bytes / t_openssl / mb),
            (f"verify regwatch, one {args.big_mb} MiB layer", len(data) / mb, t_big, len(data) / t_big / mb),
            ("openssl dgst -sha256, that layer", len(data) / mb, t_big_openssl, len(data) / t_big_openssl / mb),
        ]
        print(f"{'what':42} {'MB':>9} {'seconds':>9} {'MB/s':>9}")
        for name, size, secs, rate in rows:
            print(f"{name:42} {size:9.1f} {secs:9.2f} {rate:9.1f}")
        print(f"backup wall-clock speed-up vs skopeo (same images): {t_skopeo / t_backup:.2f}x "
              f"(skopeo writes {skopeo_bytes / mb:.0f} MB: no dedupe in dir:, regwatch {b['moved_bytes'] / mb:.0f} MB)")
        print(f"unchanged rerun: {a['moved_objects']} objects downloaded, {a['present_objects']} already stored")
        print(f"verify rate vs one openssl dgst process: {t_openssl / t_verify:.2f}x (store), "
              f"{t_big_openssl / t_big:.2f}x (one big layer); regwatch hashes every byte twice (compressed "
              "digest and uncompressed diff_id) and inflates it, openssl hashes it once")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
