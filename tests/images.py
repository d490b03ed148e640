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


# -- layered images, entry by entry (hostile ones included) ---------------------

def entry(name: str, data: bytes | None = None, *, kind: bytes = tarfile.REGTYPE,
          link: str = "", mode: int = 0o644, uid: int = 0, gid: int = 0,
          xattrs: dict[str, str] | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    """One tar entry: a file (data), or kind=DIRTYPE, SYMTYPE (link), LNKTYPE
    (link), CHRTYPE (link 'MAJOR:MINOR'), FIFOTYPE."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode if kind != tarfile.DIRTYPE or mode != 0o644 else 0o755
    info.uid, info.gid = uid, gid
    info.mtime = 1_700_000_000
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = link
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        major, _, minor = link.partition(":")
        info.devmajor, info.devminor = int(major), int(minor)
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    if data is not None:
        info.size = len(data)
    return info, data


def layer_tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def build_image(path: str, layers: list[bytes], *, name: str | None = "localhost/test:1",
                config: dict | None = None, fmt: str = "oci", gzip_layers: bool = False,
                tamper=None) -> str:
    """An archive of an image whose layers are the given tars (bottom first):
    fmt "oci" (an OCI layout tar), "oci-dir" (the layout as a directory) or
    "docker" (a `docker save` archive of the classic layout: ID/layer.tar).
    tamper(files) may change the files (name -> bytes) before they are written."""
    import gzip as _gzip
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]
    blobs = [_gzip.compress(t, mtime=0) if gzip_layers else t for t in layers]
    cfg = {"architecture": "amd64", "os": "linux",
           "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                      "Cmd": ["sh"], **(config or {})},
           "rootfs": {"type": "layers", "diff_ids": diff_ids},
           "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}
    cfg_data = json.dumps(cfg).encode()
    files: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        d = hashlib.sha256(data).hexdigest()
        files[f"blobs/sha256/{d}"] = data
        return "sha256:" + d

    if fmt == "docker":
        layer_names = []
        for i, b in enumerate(blobs):
            files[f"{i:064x}/layer.tar"] = b
            layer_names.append(f"{i:064x}/layer.tar")
        cid = hashlib.sha256(cfg_data).hexdigest()
        files[f"{cid}.json"] = cfg_data
        short = name.removeprefix("docker.io/").removeprefix("library/") if name else None
        files["manifest.json"] = json.dumps([{"Config": f"{cid}.json",
                                              "RepoTags": [short] if short else None,
                                              "Layers": layer_names}]).encode()
    else:
        mt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzip_layers else "")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": blob(cfg_data), "size": len(cfg_data)},
                    "layers": [{"mediaType": mt, "digest": blob(b), "size": len(b)}
                               for b in blobs]}
        mdata = json.dumps(manifest).encode()
        desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": blob(mdata), "size": len(mdata)}
        if name:
            desc["annotations"] = {"io.containerd.image.name": name,
                                   "org.opencontainers.image.ref.name": name.rpartition(":")[2]}
        files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
        files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode()
    if tamper is not None:
        tamper(files)
    if fmt == "oci-dir":
        for fname, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(path, fname)) or path, exist_ok=True)
            with open(os.path.join(path, fname), "wb") as f:
                f.write(data)
        return path
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for fname, data in files.items():
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def rootfs_layer(rootfs: str) -> bytes:
    """The busybox root as one layer tar (see make_image)."""
    return _layer(rootfs)


def store_snapshot(store) -> tuple:
    """What an image store holds: blobs, layers, work in progress, refs.json."""
    out: list = []
    for sub in ("blobs/sha256", "layers", "tmp"):
        p = os.path.join(store, sub)
        out.append(sorted(os.listdir(p)) if os.path.exists(p) else [])
    refs = os.path.join(store, "refs.json")
    if os.path.exists(refs):
        with open(refs) as f:
            out.append(f.read())
    else:
        out.append("")
    return tuple(out)
