"""Images: loading archives into the store, containers of their layers, and
layers as hostile input. What is checked is what the contained process sees
(files, whiteouts, environment, user) and what the host's store holds after."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading

import pytest

import isolate
from isolate import Container, ImageError
from tests.images import build_image, entry, layer_tar, rootfs_layer, store_snapshot

D, S, H, C, F = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE


@pytest.fixture()
def store(tmp_path, monkeypatch):
    path = tmp_path / "store"
    monkeypatch.setenv("ISOLATE_HOME", str(path))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory, rootfs):
    """The busybox root as a layer (bytes)."""
    return rootfs_layer(rootfs)




def _tree_digest(path: str) -> str:
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files + dirs):
            p = os.path.join(root, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, path)} {st.st_mode} {st.st_size} {st.st_mtime_ns}"
                     .encode())
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def _sh(script: str, **options) -> str:
    r = isolate.run(["sh", "-c", script], capture_output=True, text=True, **options)
    assert r.returncode == 0, r.stderr
    return r.stdout


# -- loading, and what the container sees -----------------------------------------

@pytest.mark.parametrize("fmt", ["oci", "oci-dir", "docker"])
def test_a_loaded_image_is_the_containers_root(store, base, tmp_path, fmt):
    archive = build_image(str(tmp_path / "img"), [base, layer_tar([
        entry("etc/motd", b"from the second layer\n")])], name="localhost/test:1", fmt=fmt)
    [img] = isolate.load(archive)
    assert img.ref == "localhost/test:1" and len(img.layers) == 2
    assert [i.digest for i in isolate.images()] == [img.digest]
    out = _sh("cat /etc/motd; echo $$; cat /proc/self/cgroup | wc -l; ls /bin/busybox",
              image="localhost/test:1")
    motd, pid, _, busybox = out.splitlines()
    assert motd == "from the second layer" and pid in ("1", "2") and busybox == "/bin/busybox"
    assert isolate.get_image(img.id[7:19]) == img       # an id prefix, as docker takes
    assert isolate.get_image(img.digest).digest == img.digest


def test_whiteouts_and_opaque_directories_hide_the_lower_layers(store, base, tmp_path):
    upper = layer_tar([
        entry("etc/.wh.group", b""),                         # a file deleted
        entry("home/.wh.user", b""),                          # a directory deleted
        entry("data", kind=D),
        entry("data/.wh..wh..opq", b""),                     # everything below replaced
        entry("data/new", b"new\n"),
    ])
    lower_extra = layer_tar([entry("data", kind=D), entry("data/old", b"old\n"),
                             entry("data/sub", kind=D), entry("data/sub/deep", b"x")])
    for gz in (False, True):
        archive = build_image(str(tmp_path / f"img{gz}"), [base, lower_extra, upper],
                              name=f"localhost/wh:{int(gz)}", gzip_layers=gz)
        [img] = isolate.load(archive)
        out = _sh("ls /etc/group /home/user 2>&1; ls -A /data; cat /etc/passwd | head -1",
                  image=img)
        assert "/etc/group: No such file" in out and "/home/user: No such file" in out
        lines = out.splitlines()
        assert lines[2:] == ["new", "root:x:0:0:root:/root:/bin/sh"], out
        with Container(image=img, readonly=True) as c:    # no upper layer: the same view
            r = c.run(["sh", "-c", "ls -A /data; touch /x"], capture_output=True, text=True)
            assert r.stdout.split() == ["new"] and "Read-only file system" in r.stderr


def test_the_images_config_applies_and_the_callers_wins(store, base, tmp_path):
    extra = layer_tar([entry("srv", kind=D), entry("srv/app", kind=D),
                       entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                             b"app:x:4242:4343::/srv/app:/bin/sh\n")])
    archive = build_image(str(tmp_path / "img"), [base, extra], name="localhost/cfg:1", config={
        "Env": ["PATH=/bin", "GREETING=hello", "MODE=image"], "WorkingDir": "/srv/app",
        "User": "app", "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo cmd $GREETING"],
        "Labels": {"a": "b"}, "ExposedPorts": {"80/tcp": {}}})
    [img] = isolate.load(archive)
    assert img.labels == (("a", "b"),) and img.exposed_ports == ("80/tcp",)
    # as docker run: Entrypoint + Cmd, then Entrypoint + args
    r = isolate.run(None, image=img, capture_output=True, text=True)
    assert r.stdout == "cmd hello\n", r
    r = isolate.run(["id -u; id -g; pwd; echo $MODE $GREETING $HOME"], image=img,
                    capture_output=True, text=True)
    assert r.stdout.split() == ["4242", "4343", "/srv/app", "image", "hello", "/"], r
    r = isolate.run(["id -u; pwd; echo $MODE $GREETING"], image=img, user="root", cwd="/",
                    env={"MODE": "caller"}, capture_output=True, text=True)
    assert r.stdout.split() == ["0", "/", "caller", "hello"], r
    # Container.run is docker exec: the args as given
    with Container(image=img) as c:
        r = c.run(["pwd"], capture_output=True, text=True)
        assert r.stdout == "/srv/app\n"
    # the CLI: isolate run --image, without and with a command
    cli = [sys.executable, "-m", "isolate", "run", "--image", "localhost/cfg:1"]
    r = subprocess.run(cli, capture_output=True, text=True)
    assert r.stdout == "cmd hello\n", r.stderr
    r = subprocess.run([*cli, "--", "echo args $MODE"], capture_output=True, text=True)
    assert r.stdout == "args image\n", r.stderr


def test_writes_stay_in_the_container_and_the_store_is_not_touched(store, base, tmp_path):
    [img] = isolate.load(build_image(str(tmp_path / "img"), [base], name="localhost/w:1"))
    layer = img.layer_dirs()[0]
    before = _tree_digest(layer)
    script = ("echo x >> /etc/passwd; rm -f /bin/ls; mkdir -p /new/dir; chmod 777 /etc; "
              "ln -sf / /etc/loop; rm -rf /home; echo done")
    assert _sh(script, image=img) == "done\n"
    with open(f"{layer}/etc/passwd") as f:
        lines = len(f.readlines())
    out = _sh("test -e /bin/ls && test -d /home/user && ! test -e /new && ! test -e /etc/loop "
              "&& echo fresh; wc -l < /etc/passwd", image=img)
    assert out.split() == ["fresh", str(lines)]
    assert _tree_digest(layer) == before
    with isolate.Pool(size=1, image=img) as pool:
        assert pool.run(["ls", "/bin/busybox"], capture_output=True, text=True).stdout \
            == "/bin/busybox\n"
    assert _tree_digest(layer) == before


def test_save_writes_archives_that_other_tools_read(store, base, tmp_path):
    [img] = isolate.load(build_image(str(tmp_path / "img"), [base, layer_tar([
        entry("etc/.wh.group", b"")])], name="localhost/save:1", gzip_layers=True))
    oci = img.save(str(tmp_path / "out-oci.tar"))
    docker = img.save(str(tmp_path / "out-docker.tar"), format="docker")
    if shutil.which("skopeo"):
        for transport, path in (("oci-archive", oci), ("docker-archive", docker)):
            r = subprocess.run(["skopeo", "inspect", "--raw", f"{transport}:{path}"],
                               capture_output=True, timeout=60)
            assert r.returncode == 0, r.stderr
            if transport == "oci-archive":      # the very manifest of the store
                assert "sha256:" + hashlib.sha256(r.stdout).hexdigest() == img.digest
            layers = [x["digest"] for x in json.loads(r.stdout)["layers"]]
            assert len(layers) == 2
    # and back: the same image, by its digest, from both
    isolate.rmi(img)
    assert isolate.images() == []
    [again] = isolate.load(oci)
    assert again.digest == img.digest and again.ref == img.ref
    [dock] = isolate.load(docker)
    assert dock.id == img.id and dock.ref == img.ref
    assert _sh("ls /etc/group 2>&1 || true", image=dock).strip().endswith("No such file or directory")


def test_cli_load_images_save_rmi_prune(store, base, tmp_path):
    archive = build_image(str(tmp_path / "img"), [base], name="localhost/cli:1")
    cli = [sys.executable, "-m", "isolate"]

    def run(*args):
        r = subprocess.run([*cli, *args], capture_output=True, text=True)
        return r.returncode, r.stdout, r.stderr

    assert run("load", "-i", archive)[1] == "Loaded image: localhost/cli:1\n"
    rc, out, _ = run("images")
    row = out.split("\n")[1].split()        # REPOSITORY TAG IMAGE-ID LAYERS SIZE
    assert rc == 0 and row[:2] == ["localhost/cli", "1"] and row[3] == "1", out
    rc, _, _ = run("save", "-o", str(tmp_path / "saved.tar"), "localhost/cli:1")
    assert rc == 0 and tarfile.is_tarfile(tmp_path / "saved.tar")
    assert run("rmi", "localhost/cli:1")[0] == 0
    assert run("images", "-q")[1] == ""
    rc, out, _ = run("prune")
    assert rc == 0 and "reclaimed" in out
    assert os.listdir(store / "layers") == [] and os.listdir(store / "blobs/sha256") == []
    rc, _, err = run("rmi", "localhost/cli:1")
    assert rc == 1 and "no such image" in err
    rc, _, err = run("run", "--image", "nosuch:1", "--", "true")
    assert rc == 125 and "no such image" in err


def test_prune_keeps_what_images_and_running_containers_use(store, base, tmp_path):
    [a] = isolate.load(build_image(str(tmp_path / "a"), [base, layer_tar([
        entry("a", b"a")])], name="localhost/a:1"))
    [b] = isolate.load(build_image(str(tmp_path / "b"), [base, layer_tar([
        entry("b", b"b")])], name="localhost/b:1"))
    with Container(image=b) as c:
        isolate.rmi(a)
        isolate.rmi(b)
        isolate.prune()
        left = set(os.listdir(store / "layers"))
        # b's layers are mounted by the running container: kept; a's own went
        assert left == {d[7:] for d in b.layers}
        assert c.run(["cat", "/b"], capture_output=True).stdout == b"b"
    isolate.prune()
    assert os.listdir(store / "layers") == []
    with pytest.raises(ImageError, match="no such image"):
        isolate.run(["true"], image="localhost/b:1")


def test_loads_of_one_archive_at_once_all_succeed(store, base, tmp_path):
    archive = build_image(str(tmp_path / "img"), [base, layer_tar([entry("x", b"1")])],
                          name="localhost/race:1")
    errors = []

    def load():
        try:
            isolate.load(archive)
        except BaseException as e:      # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=load) for _ in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", f"import isolate; isolate.load({archive!r})"])
             for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait() for p in procs] == [0, 0] and not errors
    assert len(isolate.images()) == 1 and len(os.listdir(store / "layers")) == 2
    assert os.listdir(store / "tmp") == []


def test_image_and_rootfs_together_is_refused(store, base, tmp_path, rootfs):
    [img] = isolate.load(build_image(str(tmp_path / "img"), [base]))
    with pytest.raises(ValueError, match="rootfs or image"):
        Container(rootfs=rootfs, image=img)


@pytest.mark.parametrize("ref,full", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("me/tool", "docker.io/me/tool:latest"),
    ("localhost/tool", "localhost/tool:latest"),
    ("localhost:5000/me/tool:1", "localhost:5000/me/tool:1"),
    ("ghcr.io/a/b/c@sha256:" + "a" * 64, "ghcr.io/a/b/c@sha256:" + "a" * 64),
])
def test_references_are_normalised_as_docker_does(ref, full):
    from isolate._images import parse_ref
    assert parse_ref(ref) == full


@pytest.mark.parametrize("ref", ["", "UPPER", "a b", "busybox:", "x@sha256:12", "-lead", "a//b",
                                 "busybox:" + "t" * 200])
def test_bad_references_are_refused(store, ref):
    with pytest.raises(ImageError, match="parse reference|no such image"):
        isolate.run(["true"], image=ref)


# -- hostile layers ---------------------------------------------------------------

HOST_TARGET = "/tmp/isolate-test-escaped"

HOSTILE = {
    "dotdot": [entry("../../../../../../tmp/isolate-test-escaped", b"x")],
    "dotdot-inside": [entry("etc/../../isolate-test-escaped", b"x")],
    "symlink-then-file": [entry("esc", kind=S, link="/tmp"),
                          entry("esc/isolate-test-escaped", b"x")],
    "relative-symlink-then-file": [entry("esc", kind=S, link="../../../../../../tmp"),
                                   entry("esc/isolate-test-escaped", b"x")],
    "symlink-then-dir": [entry("esc", kind=S, link="/tmp"),
                         entry("esc/isolate-test-escaped", kind=D)],
    "hardlink-out": [entry("pw", kind=H, link="../../../../../../etc/passwd")],
    "hardlink-absolute": [entry("pw", kind=H, link="/etc/passwd")],
    "hardlink-through-symlink": [entry("esc", kind=S, link="/etc"),
                                 entry("pw", kind=H, link="esc/passwd")],
    "symlink-then-whiteout": [entry("esc", kind=S, link="/tmp"),
                              entry("esc/.wh.isolate-test-escaped", b"")],
    "nul": [entry("a\0b", b"x")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_layer_is_refused_and_changes_nothing(store, base, tmp_path, case):
    [good] = isolate.load(build_image(str(tmp_path / "good"), [base], name="localhost/good:1"))
    before = store_snapshot(store)
    layer = layer_tar(HOSTILE[case]) if case != "nul" else _nul_layer()
    archive = build_image(str(tmp_path / "bad"), [base, layer], name="localhost/bad:1")
    with pytest.raises(ImageError) as info:
        isolate.load(archive)
    assert info.value.step == "unpack layer" and info.value.ref == "localhost/bad:1"
    assert not os.path.lexists(HOST_TARGET)
    assert store_snapshot(store) == before
    assert os.stat("/etc/passwd").st_nlink == 1
    assert [i.ref for i in isolate.images()] == [good.ref]


def _nul_layer() -> bytes:
    # tarfile refuses to write a NUL in a name; a PAX path header carries one
    info, data = entry("placeholder", b"x")
    raw = layer_tar([(info, data)])
    return raw.replace(b"placeholder", b"place\0older")


def test_what_a_layer_may_not_bring_is_neutralised(store, base, tmp_path):
    """Absolute names land in the layer; overlay's own attributes and
    trusted.* ones are dropped (a layer cannot redirect a directory)."""
    layer = layer_tar([
        entry("/abs", b"absolute name\n"),
        entry("redir", kind=D, xattrs={"trusted.overlay.redirect": "/etc",
                                       "user.overlay.redirect": "/etc",
                                       "trusted.overlay.opaque": "y",
                                       "user.note": "kept"}),
        entry("redir/file", b"in redir\n"),
        entry("suid", b"#!/bin/sh\n", mode=0o4755),
    ])
    [img] = isolate.load(build_image(str(tmp_path / "img"), [base, layer]))
    top = img.layer_dirs()[0]
    with open(f"{top}/abs") as f:
        assert f.read() == "absolute name\n"
    assert os.listxattr(f"{top}/redir") == ["user.note"]
    assert os.stat(f"{top}/suid").st_mode & 0o7777 == 0o4755       # root keeps it, as Docker
    assert _sh("cat /abs; ls /redir", image=img).split() == ["absolute", "name", "file"]


def test_a_layer_replaced_entries_and_links_within_it(store, base, tmp_path):
    layer = layer_tar([
        entry("d", kind=D), entry("d/f", b"first"),
        entry("d", b"now a file"),                   # a directory replaced by a file
        entry("x", b"x"),
        entry("y", kind=H, link="x"),                 # a hard link within the layer
        entry("fifo", kind=F), entry("null2", kind=C, link="1:3"),
    ])
    [img] = isolate.load(build_image(str(tmp_path / "img"), [base, layer]))
    top = img.layer_dirs()[0]
    with open(f"{top}/d") as f:
        assert f.read() == "now a file"
    assert os.stat(f"{top}/x").st_ino == os.stat(f"{top}/y").st_ino
    # nodes of the image are there, but the root is nodev: not a way to a device
    r = isolate.run(["sh", "-c", "test -p /fifo && echo fifo; echo hi > /null2"],
                    image=img, capture_output=True, text=True)
    assert r.stdout == "fifo\n" and "Permission denied" in r.stderr


# -- bad input ----------------------------------------------------------------------

def _corrupt_blob(files):
    name = next(n for n, d in files.items() if n.startswith("blobs/") and len(d) > 100000)
    files[name] = files[name][:-10] + b"0123456789"


def _truncate_blob(files):
    name = next(n for n, d in files.items() if n.startswith("blobs/") and len(d) > 100000)
    files[name] = files[name][:1000]


def _drop_blob(files):
    name = next(n for n, d in files.items() if n.startswith("blobs/") and len(d) > 100000)
    del files[name]


def _media_type(files):
    files["index.json"] = files["index.json"].replace(b"image.manifest.v1+json",
                                                      b"image.manifest.v9+json")


def _not_json(files):
    files["index.json"] = b"{not json"


BAD = {
    "corrupt blob": (_corrupt_blob, "verify blob"),
    "truncated blob": (_truncate_blob, "verify blob"),
    "missing blob": (_drop_blob, "read archive"),
    "unsupported media type": (_media_type, "read archive"),
    "garbage index": (_not_json, "read archive"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_archive_is_refused_and_changes_nothing(store, base, tmp_path, case):
    isolate.load(build_image(str(tmp_path / "good"), [layer_tar([entry("a", b"a")])]))
    before = store_snapshot(store)
    tamper, step = BAD[case]
    archive = build_image(str(tmp_path / "bad"), [base], name="localhost/bad:1", tamper=tamper)
    with pytest.raises(ImageError) as info:
        isolate.load(archive)
    assert info.value.step == step, info.value
    assert store_snapshot(store) == before


def test_a_diff_id_that_does_not_match_is_refused(store, base, tmp_path):
    archive = build_image(str(tmp_path / "bad"), [base], fmt="docker")
    with tarfile.open(archive) as t:
        files = {m.name: t.extractfile(m).read() for m in t}
    name = next(n for n in files if n.endswith(".json") and n != "manifest.json")
    cfg = json.loads(files[name])
    cfg["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    files[name] = json.dumps(cfg).encode()
    with tarfile.open(archive, "w") as t:
        for n, data in files.items():
            info = tarfile.TarInfo(n)
            info.size = len(data)
            t.addfile(info, __import__("io").BytesIO(data))
    before = store_snapshot(store)
    with pytest.raises(ImageError, match="verify layer"):
        isolate.load(archive)
    assert store_snapshot(store) == before


@pytest.mark.parametrize("what", ["missing", "not an archive", "empty dir"])
def test_what_is_not_an_archive_is_refused(store, tmp_path, what):
    path = tmp_path / "x"
    if what == "not an archive":
        path.write_bytes(b"hello")
    elif what == "empty dir":
        path.mkdir()
    with pytest.raises(ImageError, match="read archive"):
        isolate.load(path)
    assert store_snapshot(store)[:3] == ([], [], [])


def test_a_full_disk_during_unpack_leaves_the_store_as_it_was(tmp_path, monkeypatch, base):
    """The store on a small tmpfs: the layer does not fit."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        monkeypatch.setenv("ISOLATE_HOME", str(mnt / "store"))
        archive = build_image(str(tmp_path / "img"), [layer_tar([entry("small", b"s")])],
                              name="localhost/small:1")
        isolate.load(archive)
        before = store_snapshot(mnt / "store")
        big = build_image(str(tmp_path / "big"), [layer_tar([entry("big", os.urandom(3 << 20))])],
                          name="localhost/big:1")
        with pytest.raises(ImageError, match="No space left"):
            isolate.load(big)
        assert store_snapshot(mnt / "store") == before
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("index", [b'{"manifests": 3}', b'{"manifests": [{"digest": 1}]}',
                                   b'[]', b'{"manifests": [{"mediaType": '
                                   b'"application/vnd.oci.image.manifest.v1+json"}]}'])
def test_a_malformed_index_is_an_image_error(store, tmp_path, index):
    archive = build_image(str(tmp_path / "bad"), [layer_tar([entry("a", b"a")])],
                          tamper=lambda files: files.update({"index.json": index}))
    with pytest.raises(ImageError, match="read archive"):
        isolate.load(archive)
    assert store_snapshot(store)[:3] == ([], [], [])


def test_a_layout_directory_is_read_through_no_symlink_and_only_files(store, tmp_path):
    """An OCI layout directory (extracted from a download, say) whose blobs
    are symlinks to host files, or a FIFO: refused, nothing opened there."""
    layout = build_image(str(tmp_path / "dir"), [layer_tar([entry("a", b"a")])], fmt="oci-dir")
    blobs = sorted((tmp_path / "dir/blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    big = blobs[-1]
    big.unlink()
    os.mkfifo(big)          # a read of it would wait for ever
    with pytest.raises(ImageError, match="not a regular file"):
        isolate.load(layout)
    big.unlink()
    big.symlink_to("/etc/passwd")
    with pytest.raises(ImageError, match="symlink"):
        isolate.load(layout)
    assert store_snapshot(store)[:3] == ([], [], [])


def test_odd_numbers_in_a_layer_are_an_image_error(store, tmp_path):
    info, data = entry("f", b"x")
    info.mtime = 10**30
    layer = layer_tar([(info, data)])
    [img] = isolate.load(build_image(str(tmp_path / "img"), [layer]))
    assert os.path.isfile(img.layer_dirs()[0] + "/f")
    info, data = entry("g", b"x", uid=2**40)
    with pytest.raises(ImageError, match="unpack layer"):
        isolate.load(build_image(str(tmp_path / "img2"), [layer_tar([(info, data)])]))


# -- from an attack review: each was possible before --------------------------------

def test_a_name_pinned_to_a_digest_serves_only_that_digest(store, base, tmp_path):
    [good] = isolate.load(build_image(str(tmp_path / "good"), [base], name="localhost/good:1"))
    evil = layer_tar([entry("evil", b"x")])
    for fmt in ("oci", "docker"):
        archive = build_image(str(tmp_path / f"evil-{fmt}"), [evil], fmt=fmt,
                              name=f"localhost/good@{good.digest}")
        with pytest.raises(ImageError, match="pins"):
            isolate.load(archive)
    assert isolate.get_image(f"localhost/good@{good.digest}") == good
    with pytest.raises(ImageError, match="no such image"):
        isolate.get_image("localhost/good@sha256:" + "0" * 64)


@pytest.mark.parametrize("target", ["fifo", "file"])
def test_an_images_passwd_is_never_a_host_file(store, tmp_path, target):
    """The image's /etc/passwd is looked up on the host to resolve User: a
    symlink there to a host FIFO (a read would hang) or file is not followed."""
    host = tmp_path / "host"
    host.mkdir()
    victim = host / "passwd"
    if target == "fifo":
        os.mkfifo(victim)
    else:
        victim.write_text("nobody:x:0:0::/:/bin/sh\n")
    watch = _watch(str(victim))
    layer = layer_tar([entry("etc", kind=D), entry("etc/passwd", kind=S, link=str(victim)),
                       entry("bin", kind=D)])
    [img] = isolate.load(build_image(str(tmp_path / "img"), [layer],
                                     config={"User": "nobody"}))
    try:
        with pytest.raises(ValueError, match="not in the container's /etc/passwd"):
            Container(image=img)
        with pytest.raises(BlockingIOError):
            os.read(watch, 4096)
    finally:
        os.close(watch)


def _watch(path: str) -> int:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(path), 0x20) >= 0   # IN_OPEN
    return fd


def test_a_sparse_entry_and_a_huge_header_are_refused(store, tmp_path):
    info, data = entry("big", b"x" * 10)
    info.sparse = [(1 << 30, 10)]           # a pax sparse map: 1 GiB of holes
    info.pax_headers = {"GNU.sparse.map": f"{1 << 30},10", "GNU.sparse.size": str(1 << 30)}
    raw = layer_tar([(info, data)])
    before = store_snapshot(store)
    with pytest.raises(ImageError, match="sparse"):
        isolate.load(build_image(str(tmp_path / "sparse"), [raw]))
    header = tarfile.TarInfo("x")
    header.pax_headers = {"comment": "a" * (4 << 20)}
    with pytest.raises(ImageError, match="extended header"):
        isolate.load(build_image(str(tmp_path / "pax"), [layer_tar([(header, b"")])]))
    assert store_snapshot(store) == before


@pytest.mark.parametrize("config", [{"Labels": "x"}, {"Entrypoint": 5}, {"Env": [1]},
                                    {"Cmd": "sh"}, {"User": 0}])
def test_a_config_of_the_wrong_types_is_refused(store, tmp_path, config):
    before = store_snapshot(store)
    with pytest.raises(ImageError, match="wrong type"):
        isolate.load(build_image(str(tmp_path / "img"), [layer_tar([entry("a", b"a")])],
                                 config=config))
    assert store_snapshot(store) == before
    assert isolate.images() == []


def test_json_nested_too_deep_is_an_image_error(store, tmp_path):
    deep = b"[" * 100000 + b"]" * 100000
    archive = build_image(str(tmp_path / "img"), [layer_tar([entry("a", b"a")])],
                          tamper=lambda files: files.update({"index.json": deep}))
    with pytest.raises(ImageError, match="read archive"):
        isolate.load(archive)


def test_a_prune_during_a_load_does_not_list_a_broken_image(store, base, tmp_path,
                                                           monkeypatch):
    archive = build_image(str(tmp_path / "img"), [base], name="localhost/p:1")
    [img] = isolate.load(archive)
    isolate.rmi(img)            # its blobs and layer stay, unlisted, until prune
    from isolate import _images
    real = _images._Load.commit
    with monkeypatch.context() as m:
        m.setattr(_images._Load, "commit",
                  lambda self, names: (isolate.prune(), real(self, names)))
        with pytest.raises(ImageError, match="pruned from the store meanwhile"):
            isolate.load(archive)
    assert isolate.images() == []
    assert isolate.load(archive)[0].digest == img.digest


def test_a_layer_in_the_store_does_not_vouch_for_another_blob(store, tmp_path):
    """An image whose blob is not the layer its config names is refused,
    even when the named layer is in the store already (from another image)."""
    a = layer_tar([entry("a", b"a")])
    b = layer_tar([entry("b", b"b")])
    [first] = isolate.load(build_image(str(tmp_path / "a"), [a], name="localhost/a:1"))
    lie = build_image(str(tmp_path / "lie"), [b], name="localhost/b:1",
                      tamper=lambda f: _rewrite_diff_ids(f, list(first.layers)))
    with pytest.raises(ImageError, match="verify layer"):
        isolate.load(lie)


def _rewrite_diff_ids(files, diff_ids):
    config_name = next(n for n, d in files.items() if b'"diff_ids"' in d)
    cfg = json.loads(files[config_name])
    cfg["rootfs"]["diff_ids"] = diff_ids
    data = json.dumps(cfg).encode()
    new = f"blobs/sha256/{hashlib.sha256(data).hexdigest()}"
    del files[config_name]
    files[new] = data
    old_digest, new_digest = config_name.rpartition("/")[2], new.rpartition("/")[2]
    manifest_name = next(n for n, d in files.items() if b'"layers"' in d)
    m = files.pop(manifest_name).replace(old_digest.encode(), new_digest.encode())
    mj = json.loads(m)
    mj["config"]["size"] = len(data)
    m = json.dumps(mj).encode()
    mname = f"blobs/sha256/{hashlib.sha256(m).hexdigest()}"
    files[mname] = m
    index = json.loads(files["index.json"])
    index["manifests"][0]["digest"] = "sha256:" + mname.rpartition("/")[2]
    index["manifests"][0]["size"] = len(m)
    files["index.json"] = json.dumps(index).encode()


def test_a_compressed_archive_loads(store, base, tmp_path):
    import gzip
    archive = build_image(str(tmp_path / "img"), [base], name="localhost/gz:1", fmt="docker")
    with open(archive, "rb") as f, gzip.open(tmp_path / "img.tar.gz", "wb") as g:
        shutil.copyfileobj(f, g)
    [img] = isolate.load(tmp_path / "img.tar.gz")
    assert img.ref == "localhost/gz:1" and os.listdir(store / "tmp") == []


# -- commit ---------------------------------------------------------------------------

def test_commit_makes_an_image_of_what_the_container_changed(store, base, tmp_path):
    [img] = isolate.load(build_image(str(tmp_path / "img"), [base], name="localhost/c:1",
                                     config={"Env": ["A=1"], "Cmd": ["sh"]}))
    with Container(image=img, memory="64M") as c:
        c.run(["sh", "-c", "echo tuned > /etc/marker; rm /etc/group; chmod 600 /etc/passwd; "
               "mkdir -p /srv/new && echo n > /srv/new/f && ln /srv/new/f /srv/new/hard; "
               "ln -s /etc/marker /srv/link; rm -rf /home/user; mkfifo /srv/fifo; "
               "dd if=/dev/zero of=/srv/zeros bs=1k count=64 2>/dev/null"], check=True)
        new = c.commit("localhost/c:2", message="tuned")
    assert new.ref == "localhost/c:2" and new.layers[:-1] == img.layers
    assert len(new.layers) == 2 and new.env == img.env
    r = isolate.run(["sh", "-c", "cat /etc/marker; ls /etc/group 2>&1; stat -c %a /etc/passwd; "
                     "cat /srv/new/hard; readlink /srv/link; ls -A /home | wc -l; test -p /srv/fifo && "
                     "echo fifo; wc -c < /srv/zeros; ls -i /srv/new | awk '{print $1}' | uniq | "
                     "wc -l"], image=new, capture_output=True, text=True)
    lines = r.stdout.split("\n")
    assert lines[0] == "tuned" and "No such file" in lines[1] and lines[2] == "600", r
    assert lines[3:9] == ["n", "/etc/marker", "0", "fifo", "65536", "1"], r
    # only the changes: the new layer is small
    top = new.layer_dirs()[0]
    assert sorted(os.listdir(top)) == ["etc", "home", "srv"]
    assert sorted(os.listdir(f"{top}/etc")) == ["group", "marker", "passwd"]   # group: a whiteout
    # the original image is unchanged
    r = isolate.run(["sh", "-c", "ls /etc/marker 2>&1; ls /etc/group"], image=img,
                    capture_output=True, text=True)
    assert "No such file" in r.stdout and r.stdout.endswith("/etc/group\n")


def test_commit_follows_nothing_the_container_made(store, base, tmp_path):
    """Symlinks to host paths are committed as symlinks; a FIFO is not
    opened; a mount inside (here /proc, /dev and a volume) is left out."""
    host = tmp_path / "host"
    host.mkdir()
    secret = host / "secret"
    secret.write_text("host secret\n")
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "in-volume").write_text("v")
    watch = _watch(str(secret))
    [img] = isolate.load(build_image(str(tmp_path / "img"), [base], name="localhost/f:1"))
    try:
        with Container(image=img, mounts=[isolate.Mount.bind(str(vol), "/vol")]) as c:
            c.run(["sh", "-c", f"ln -s {secret} /evil; mkdir -p {host} && "
                   f"ln -s {secret} {host}/link; mkfifo /pipe"], check=True)
            new = c.commit()
        assert new.ref == ""
        top = new.layer_dirs()[0]
        assert os.readlink(f"{top}/evil") == str(secret)
        assert sorted(os.listdir(top)) == ["evil", "pipe", "tmp"]   # tmp: the mkdir -p
        assert not os.path.exists(f"{top}/vol/in-volume")
        assert not os.path.exists(f"{top}/proc/self")
        with pytest.raises(BlockingIOError):
            os.read(watch, 4096)
    finally:
        os.close(watch)


def test_commit_of_a_container_without_an_image_is_refused(rootfs):
    with Container(rootfs=rootfs) as c:
        with pytest.raises(ImageError, match="only a container of an image"):
            c.commit("localhost/x:1")


# -- commit, attacked from inside (found by a review; each was possible before) ---------

def _busybox_image(tmp_path, base, name="localhost/atk:1"):
    [img] = isolate.load(build_image(str(tmp_path / "atk.tar"), [base], name=name))
    return img


def test_commit_of_a_sparse_giant_is_refused_quickly(store, base, tmp_path):
    img = _busybox_image(tmp_path, base)
    with Container(image=img, memory="64M", storage_size="16M") as c:
        c.run(["truncate", "-s", "8000000000000", "/huge"], check=True)
        with pytest.raises(ImageError, match="storage_size"):
            c.commit("localhost/atk:2")
    assert os.listdir(store / "tmp") == []
    assert [i.ref for i in isolate.images()] == ["localhost/atk:1"]


def test_commit_refuses_what_would_become_a_whiteout(store, base, tmp_path):
    img = _busybox_image(tmp_path, base)
    with Container(image=img) as c:
        c.run(["touch", "/etc/.wh..wh..opq"], check=True)
        with pytest.raises(ImageError, match="whiteout"):
            c.commit("localhost/atk:2")


def test_commit_of_a_deep_tree_or_an_ended_container_is_an_image_error(store, base, tmp_path):
    img = _busybox_image(tmp_path, base)
    with Container(image=img) as c:
        c.run(["sh", "-c", "i=0; while [ $i -lt 600 ]; do mkdir d; cd d; i=$((i+1)); done"],
              check=True)
        with pytest.raises(ImageError, match="deeper than"):
            c.commit()
    with Container(image=img) as c:
        c.run(["sh", "-c", "kill -TERM 1"])       # the init ends on TERM
        for _ in range(100):
            if not os.path.exists(f"/proc/{c.pid}/root/bin"):
                break
            import time
            time.sleep(0.01)
        with pytest.raises(ImageError):
            c.commit()


LEASE = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
int main(void) {
    signal(SIGIO, SIG_IGN);
    int fd = open("/leased", O_RDONLY | O_CREAT, 0644);
    if (fd < 0 || fcntl(fd, F_SETLEASE, F_WRLCK) < 0) return 1;
    write(1, "held\n", 5);
    pause();
    return 0;
}
"""


def test_commit_does_not_wait_on_a_lease(store, base, tmp_path):
    """A file the container holds a write lease on would make the host's
    open wait the lease break time (45 s) per file."""
    cc = shutil.which("cc") or pytest.skip("no C compiler")
    src = tmp_path / "lease.c"
    src.write_text(LEASE)
    exe = tmp_path / "lease"
    r = subprocess.run([cc, "-static", "-O1", "-o", str(exe), str(src)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"no static libc: {r.stderr[-200:]!r}")
    img = _busybox_image(tmp_path, base)
    with Container(image=img, mounts=[isolate.Mount.bind(str(exe), "/lease", readonly=True)],
                   cap_add=["LEASE"]) as c:
        p = c.spawn(["/lease"], stdout=subprocess.PIPE)
        assert p.stdout.readline() == b"held\n"
        import time
        t = time.monotonic()
        with pytest.raises(ImageError, match="lease"):
            c.commit()
        assert time.monotonic() - t < 20
        p.kill()
        p.wait()
        p.stdout.close()


def test_an_image_deeper_than_one_mounts_options_hold(base, tmp_path, monkeypatch):
    """60 layers: their directories' names do not fit in the page of one
    overlay mount's options; short names for them do (as Docker's l/ links),
    in a store whose path is as short as /var/lib/isolate."""
    import pathlib
    import tempfile
    store = pathlib.Path(tempfile.mkdtemp(prefix="is", dir="/tmp"))
    monkeypatch.setenv("ISOLATE_HOME", str(store))
    try:
        _deep(store, base, tmp_path)
    finally:
        shutil.rmtree(store)


def _deep(store, base, tmp_path):
    layers = [base] + [layer_tar([entry(f"l{i:02}", str(i).encode())]) for i in range(59)]
    [img] = isolate.load(build_image(str(tmp_path / "deep.tar"), layers, name="localhost/deep:1"))
    r = isolate.run(["sh", "-c", "echo $(cat /l00) $(cat /l58); ls / | grep -c '^l'"], image=img,
                    capture_output=True, text=True)
    assert r.stdout.split() == ["0", "58", "59"], r
    with Container(image=img):
        isolate.rmi(img)
        isolate.prune()             # mounted: kept, links included
        assert len(os.listdir(store / "layers")) == 60
    isolate.prune()
    assert os.listdir(store / "layers") == [] and os.listdir(store / "l") == []


# -- a realistic image ------------------------------------------------------------------

@pytest.fixture(scope="module")
def debian_root(tmp_path_factory):
    """A minimal Debian root with python3, made by mmdebstrap from the
    machine's own Debian mirror, as a tar (module-scoped: about 20 s)."""
    mmdebstrap = shutil.which("mmdebstrap") or pytest.skip("mmdebstrap is not installed")
    codename = "bookworm"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("VERSION_CODENAME="):
                    codename = line.split("=", 1)[1].strip().strip('"') or codename
    except OSError:
        pass
    out = tmp_path_factory.mktemp("debian") / "root.tar"
    r = subprocess.run([mmdebstrap, "--variant=minbase", "--include=python3-minimal",
                        "--quiet", codename, str(out)], capture_output=True, text=True,
                       timeout=900)
    if r.returncode != 0:
        pytest.skip(f"mmdebstrap could not reach a Debian mirror: {r.stderr[-300:]}")
    return str(out)


@pytest.mark.slow
def test_a_debian_image_runs_its_own_python(store, tmp_path, debian_root):
    """A Debian root from mmdebstrap as a three-layer image (the system, its
    Python, and a layer that deletes and adds): python3 runs from the image,
    not from the host."""
    import io
    bufs = [io.BytesIO(), io.BytesIO()]
    with tarfile.open(debian_root) as src:
        outs = [tarfile.open(fileobj=b, mode="w", format=tarfile.PAX_FORMAT) for b in bufs]
        for m in src:
            python = "python3" in m.name and not m.isdir()
            outs[python].addfile(m, src.extractfile(m) if m.isreg() else None)
        for t in outs:
            t.close()
    top = layer_tar([entry("etc/.wh.motd", b""), entry("etc/isolate-marker", b"layer 3\n")])
    [img] = isolate.load(build_image(str(tmp_path / "debian.tar"),
                                     [bufs[0].getvalue(), bufs[1].getvalue(), top],
                                     name="localhost/debian:python"))
    r = isolate.run(["python3", "-c", "import sys, os; print(sys.executable); "
                     "print('.'.join(map(str, sys.version_info[:3]))); "
                     "print(open('/etc/debian_version').read().strip() != ''); "
                     "print(os.path.exists('/etc/motd'), open('/etc/isolate-marker').read())"],
                    image=img, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    exe, version, debian, rest = r.stdout.split("\n", 3)
    assert exe == "/usr/bin/python3" and debian == "True"
    assert rest == "False layer 3\n\n"
    # the image's interpreter, not the host's (pyenv's 3.11.7 runs these tests here)
    r2 = isolate.run(["python3", "-c", "import sys; print(sys.version)"], image=img,
                     capture_output=True, text=True)
    assert r2.stdout != f"{sys.version}\n"
    assert version.count(".") == 2
