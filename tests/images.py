"""An image archive of a root filesystem, for the engines the tests drive.

One tar that `ctr image import` reads as an OCI image layout and
`docker load` reads as a `docker save` archive (its manifest.json names the
same blobs), made from the busybox root the tests already use.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile


def _blob(tar: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def _layer(rootfs: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(os.listdir(rootfs)):
            t.add(os.path.join(rootfs, name), arcname=name, filter=_owned_by_root)
    return buf.getvalue()


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    if info.name.startswith("home/user"):
        info.uid = info.gid = 1000
    else:
        info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def make_image(rootfs: str, path: str, name: str = "docker.io/library/busybox:latest",
               cmd: tuple[str, ...] = ("sh",)) -> str:
    """Write the archive of rootfs as image `name` to path; returns path."""
    layer = _layer(rootfs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": list(cmd), "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "isolate tests"}],
    }
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        layer_digest, layer_size = _blob(tar, layer)
        config_digest, config_size = _blob(tar, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = _blob(tar, json.dumps(manifest).encode())
        repo, _, tag = name.rpartition(":")
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": tag}}]}
        short = repo.removeprefix("docker.io/").removeprefix("library/")
        files = {
            "oci-layout": {"imageLayoutVersion": "1.0.0"},
            "index.json": index,
            "manifest.json": [{"Config": f"blobs/sha256/{config_digest[7:]}",
                               "RepoTags": [f"{short}:{tag}"],
                               "Layers": [f"blobs/sha256/{layer_digest[7:]}"]}],
        }
        for fname, content in files.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path
