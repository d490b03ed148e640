"""Containers of images against the same root as a plain directory.

- image-startup: isolate.run of /bin/true with rootfs= (the busybox root, a
  directory) and with image= (the same root as a 5-layer image in the store:
  its top-level entries split over five layers); and the two paired (each
  round starts both, back to back), for the target.
- image-load: isolate.load of that image's archive into an empty store (each
  layer unpacked), against `umoci unpack` of the same archive's OCI layout.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile

import pytest

import isolate
from tests.images import build_image


def _layers(rootfs: str, n: int = 5) -> list[bytes]:
    names = sorted(os.listdir(rootfs))
    out = []
    for i in range(n):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for name in names[i::n]:
                t.add(os.path.join(rootfs, name), arcname=name)
        out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def image(rootfs, tmp_path_factory):
    base = tmp_path_factory.mktemp("images")
    archive = build_image(str(base / "five.tar"), _layers(rootfs), name="localhost/bench:5")
    old = os.environ.get("ISOLATE_HOME")
    os.environ["ISOLATE_HOME"] = str(base / "store")
    try:
        [img] = isolate.load(archive)
        yield img, archive
    finally:
        if old is None:
            del os.environ["ISOLATE_HOME"]
        else:
            os.environ["ISOLATE_HOME"] = old


def _bench(benchmark, rounds, fn):
    fn()
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=min(20, rounds))


@pytest.mark.benchmark(group="image-startup")
def test_run_rootfs_dir(benchmark, rounds, rootfs, image):
    _bench(benchmark, rounds, lambda: isolate.run(["/bin/true"], rootfs=rootfs, check=True))


@pytest.mark.benchmark(group="image-startup")
def test_run_image_5_layers(benchmark, rounds, image):
    img = image[0]
    _bench(benchmark, rounds, lambda: isolate.run(["/bin/true"], image=img, check=True))


@pytest.mark.benchmark(group="paired")
def test_paired_image_vs_rootfs(benchmark, rounds, rootfs, image):
    """The target, paired: each round starts both, back to back."""
    from test_paired import _paired     # bench/ is on sys.path (no __init__.py)
    img = image[0]
    _paired(benchmark, rounds, lambda: isolate.run(["/bin/true"], image=img, check=True),
            lambda: isolate.run(["/bin/true"], rootfs=rootfs, check=True),
            "image_5_layers", "rootfs_dir")


@pytest.mark.benchmark(group="image-load")
def test_load_isolate(benchmark, rounds, image, tmp_path, monkeypatch):
    archive = image[1]
    n = iter(range(10**9))

    def load():
        monkeypatch.setenv("ISOLATE_HOME", str(tmp_path / f"s{next(n)}"))
        isolate.load(archive)
    benchmark.pedantic(load, rounds=max(rounds // 30, 3), iterations=1)


@pytest.mark.benchmark(group="image-load")
def test_load_umoci(benchmark, rounds, image, tmp_path):
    umoci = shutil.which("umoci") or pytest.skip("umoci is not installed")
    layout = tmp_path / "layout"
    with tarfile.open(image[1]) as t:
        t.extractall(layout, filter="data")
    n = iter(range(10**9))

    def unpack():
        subprocess.run([umoci, "unpack", "--image", f"{layout}:5", str(tmp_path / f"b{next(n)}")],
                       check=True, capture_output=True)
    benchmark.pedantic(unpack, rounds=max(rounds // 30, 3), iterations=1)


@pytest.fixture(scope="module")
def registry_image(rootfs, tmp_path_factory):
    """A ~100 MB image of 5 layers (the busybox root, then 4 of 24 MiB of
    random bytes each, gzipped: about as big compressed) in a docker-registry
    on the loopback; yields its reference."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed")
    from tests.images import entry, layer_tar
    from tests.registry import Registry
    base = tmp_path_factory.mktemp("pull")
    layers = _layers(rootfs, 1) + [layer_tar([entry(f"data/{i}", os.urandom(24 << 20))])
                                   for i in range(4)]
    archive = build_image(str(base / "big.tar"), layers, name="localhost/big:1", gzip_layers=True)
    reg = Registry(str(base / "registry"))
    old = os.environ.get("ISOLATE_HOME")
    os.environ["ISOLATE_HOME"] = str(base / "store")
    try:
        [img] = isolate.load(archive)
        ref = f"{reg.host}/bench/big:1"
        isolate.push(img, ref, insecure=True)
        yield ref, img.size
    finally:
        reg.stop()
        if old is None:
            os.environ.pop("ISOLATE_HOME", None)
        else:
            os.environ["ISOLATE_HOME"] = old


@pytest.mark.benchmark(group="image-pull")
def test_pull_isolate(benchmark, rounds, registry_image, tmp_path, monkeypatch):
    ref, size = registry_image
    n = iter(range(10**9))

    def pull():
        monkeypatch.setenv("ISOLATE_HOME", str(tmp_path / f"s{next(n)}"))
        isolate.pull(ref, insecure=True)
        shutil.rmtree(os.environ["ISOLATE_HOME"])
    benchmark.extra_info["MB"] = round(size / 1e6, 1)
    benchmark.pedantic(pull, rounds=max(rounds // 60, 3), iterations=1)


@pytest.mark.benchmark(group="image-pull")
def test_pull_skopeo_umoci(benchmark, rounds, registry_image, tmp_path):
    skopeo, umoci = shutil.which("skopeo"), shutil.which("umoci")
    if not (skopeo and umoci):
        pytest.skip("skopeo and umoci are not installed")
    ref, size = registry_image
    n = iter(range(10**9))

    def pull():
        d = tmp_path / f"p{next(n)}"
        d.mkdir()
        subprocess.run([skopeo, "copy", "--src-tls-verify=false", f"docker://{ref}",
                        f"oci:{d}/layout:1"], check=True, capture_output=True)
        subprocess.run([umoci, "unpack", "--image", f"{d}/layout:1", f"{d}/bundle"],
                       check=True, capture_output=True)
        shutil.rmtree(d)
    benchmark.extra_info["MB"] = round(size / 1e6, 1)
    benchmark.pedantic(pull, rounds=max(rounds // 60, 3), iterations=1)


@pytest.mark.benchmark(group="image-commit")
def test_commit_10mb(benchmark, rounds, image):
    """Container.commit of a container that wrote 10 MB (random bytes, so
    the gzipped layer stays about that big); the container is made and
    filled outside the timing."""
    img = image[0]
    made: list = []

    def setup():
        c = isolate.Container(image=img)
        c.start()
        c.run(["sh", "-c", "head -c 10485760 /dev/urandom > /data.bin"], check=True)
        made.append(c)
        return (c,), {}

    sizes: list[int] = []

    def commit(c):
        new = c.commit()
        sizes.append(new.size - img.size)
        c.close()
    try:
        benchmark.pedantic(commit, setup=setup, rounds=max(rounds // 30, 3), iterations=1)
    finally:
        for c in made:
            c.close()
    benchmark.extra_info["table"] = "\n".join([
        "### image-commit: the new layer of a container that wrote 10 MiB", "",
        "| new layer (gzip), bytes |", "|---:|", f"| {sizes[-1]} |", ""])


@pytest.mark.benchmark(group="image-pull")
def test_pull_docker(benchmark, rounds, registry_image):
    """docker pull of the same image from the same registry (Docker takes
    127.0.0.0/8 registries as plain HTTP), then docker rmi: a dockerd of the
    bench's own, its data root under a temporary directory."""
    if shutil.which("dockerd") is None:
        pytest.skip("dockerd is not installed")
    import tempfile
    from tests.test_engines import Dockerd, _umount_below
    ref, size = registry_image
    base = tempfile.mkdtemp(prefix="dkp-", dir="/tmp")     # short: dockerd's socket path
    d = Dockerd(base)
    try:
        def pull():
            d.docker("pull", "-q", ref, timeout=300)
            d.docker("rmi", ref)
            d.docker("image", "prune", "-f")
        benchmark.extra_info["MB"] = round(size / 1e6, 1)
        benchmark.pedantic(pull, rounds=max(rounds // 60, 3), iterations=1)
    finally:
        d.stop()
        _umount_below(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.benchmark(group="image-disk")
def test_disk_of_containers_of_one_image(benchmark, image, tmp_path):
    """10 containers of the 5-layer image, each writing 1 MiB: the store's
    size on disk before and while they run (their writes are their own
    layers, in RAM), in extra_info; the time is starting all ten."""
    import subprocess as sp
    img = image[0]

    def du() -> int:
        out = sp.run(["du", "-sb", img.store], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[0])
    before = du()
    made: list = []

    def start():
        for _ in range(10):
            c = isolate.Container(image=img)
            c.start()
            made.append(c)
            c.run(["sh", "-c", "head -c 1048576 /dev/urandom > /mine"], check=True)
    try:
        benchmark.pedantic(start, rounds=1, iterations=1)
        during = du()
    finally:
        for c in made:
            c.close()
    benchmark.extra_info["table"] = "\n".join([
        "### image-disk: 10 containers of one 5-layer image, each writing 1 MiB", "",
        "| store on disk before | with the 10 running | image size (compressed) |",
        "|---:|---:|---:|",
        f"| {before} B | {during} B | {img.size} B |", ""])
    assert during == before
