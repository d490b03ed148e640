"""The cost of each ingredient of a container: isolate.run(["/bin/true"]) with
one thing added at a time, side by side in one run.

The first rows start from nothing (no namespace: clone, the init, exec) and
add one namespace each; the rest start from the default container and
change one option. Subtract `none` (or `default`) to get an ingredient's cost.
"""
from __future__ import annotations

import pytest

import isolate

BARE = dict(privileged=True, seccomp=None)


def _bench(benchmark, rounds, **options):
    isolate.run(["/bin/true"], **options)      # warm: caches and the init's memfd
    benchmark.pedantic(lambda: isolate.run(["/bin/true"], **options), rounds=rounds,
                       iterations=1, warmup_rounds=min(20, rounds))


@pytest.mark.benchmark(group="ingredients")
@pytest.mark.parametrize("ns", ["none", "mount", "pid", "uts", "ipc", "net", "cgroup", "user",
                                "time"])
def test_namespace_alone(benchmark, rounds, ns):
    _bench(benchmark, rounds, namespaces=[] if ns == "none" else [ns], **BARE)


@pytest.mark.benchmark(group="ingredients")
@pytest.mark.parametrize("change", ["default", "pivot_root_readonly_root", "overlay_root",
                                    "no_seccomp", "privileged", "userns", "cgroup_pids"])
def test_default_container_with(benchmark, rounds, rootfs, change):
    options = {
        "default": {},
        "pivot_root_readonly_root": dict(rootfs=rootfs, readonly=True),   # bind + pivot_root
        "overlay_root": dict(rootfs=rootfs),                              # copy-on-write
        "no_seccomp": dict(seccomp=None),
        "privileged": dict(privileged=True),         # no masks, caps, seccomp
        "userns": dict(userns=True),
        "cgroup_pids": dict(pids=100),               # a cgroup made, joined, removed
    }[change]
    _bench(benchmark, rounds, **options)
