"""Containers of images against the same root as a plain directory.

- image-startup: isolate.run of /bin/true with rootfs= (the busybox root, a
  directory) and with image= (the same root as a 5-layer image in the store:
  its top-level entries split over five layers), alternated, one process.
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


@pytest.mark.benchmark(group="image-load")
def test_load_isolate(benchmark, rounds, image, tmp_path):
    archive = image[1]
    n = iter(range(10**9))

    def load():
        os.environ["ISOLATE_HOME"] = str(tmp_path / f"s{next(n)}")
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
