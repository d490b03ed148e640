"""What `pytest --isolate` costs per test: a suite of trivial tests run plainly,
with --isolate, and with --isolate -n 2, each in a pytest process of its own."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest


def _suite(path, n: int) -> None:
    (path / "test_trivial.py").write_text(
        "".join(f"def test_{i}():\n    assert {i} >= 0\n" for i in range(n)))


def _run(path, *args: str) -> float:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-p", "no:benchmark", *args], cwd=path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return time.perf_counter() - start


@pytest.mark.benchmark(group="pytest-isolate")
def test_pytest_isolate_per_test_overhead(benchmark, tmp_path, quick):
    """2,000 trivial tests (200 with --quick): the session's time plainly and
    isolated, and the difference per test."""
    n = 200 if quick else 2000
    _suite(tmp_path, n)
    times: dict[str, float] = {}

    def once() -> None:
        times["plain"] = _run(tmp_path)
        times["isolate"] = _run(tmp_path, "--isolate")
        times["isolate -n 2"] = _run(tmp_path, "--isolate", "-n", "2")
        times["isolate --isolate-scope module"] = _run(tmp_path, "--isolate", "--isolate-scope", "module")

    benchmark.pedantic(once, rounds=1, iterations=1)
    rows = [f"| {kind} | {t:.2f} | {(t - times['plain']) / n * 1e3:.2f} |"
            for kind, t in times.items()]
    benchmark.extra_info["table"] = "\n".join([
        f"### pytest --isolate: {n} trivial tests, one session each", "",
        "| run | session, s | over plain, ms per test |", "|---|---:|---:|", *rows, ""])


def _summary(out: str) -> str:
    """pytest's last line, without its time: the outcome counts."""
    last = out.strip().splitlines()[-1]
    return last.rsplit(" in ", 1)[0].strip("= ")


@pytest.mark.benchmark(group="pytest-isolate")
def test_pytest_isolate_on_a_real_suite(benchmark, tmp_path, request):
    """attrs' own test suite, from its PyPI source distribution, installed here
    in a venv of its own: plain, --isolate, --isolate -n 2, --isolate-scope
    module (with --quick, one of its files; --no-install: skipped)."""
    import glob
    import tarfile
    if request.config.getoption("--no-install"):
        pytest.skip("--no-install: attrs and its test dependencies are not installed")
    quick = request.config.getoption("--quick")
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    # the package index is reached from the host's network namespace (the
    # benchmark session has one of its own, with no way out: conftest)
    host_net = ["nsenter", f"--net={os.environ['ISOLATE_HOST_NETNS']}"] \
        if os.environ.get("ISOLATE_HOST_NETNS") else []
    r = subprocess.run([*host_net, python, "-m", "pip", "download", "-q", "--no-deps",
                        "--no-binary", ":all:", "-d", str(tmp_path), "attrs"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"attrs' sdist cannot be downloaded here: {r.stderr[-300:]}")
    sdist = glob.glob(str(tmp_path / "attrs-*.tar.gz"))[0]
    with tarfile.open(sdist) as t:
        t.extractall(tmp_path, filter="data")
    project = sdist[: -len(".tar.gz")]
    subprocess.run([*host_net, python, "-m", "pip", "install", "-q", project, "hypothesis",
                    "pympler", "cloudpickle", "pytest-xdist", "psutil"], check=True,
                   capture_output=True)
    which = ["tests/test_funcs.py"] if quick else []
    runs = {"plain": [], "--isolate": ["--isolate"], "--isolate -n 2": ["--isolate", "-n", "2"],
            "--isolate --isolate-scope module": ["--isolate", "--isolate-scope", "module"]}
    results: dict[str, tuple[float, str]] = {}

    subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *which], cwd=project,
                   capture_output=True)       # warm: bytecode written, files cached

    def once() -> None:
        for name, args in runs.items():
            start = time.perf_counter()
            out = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args,
                                  *which], cwd=project, capture_output=True, text=True).stdout
            results[name] = (time.perf_counter() - start, _summary(out))

    benchmark.pedantic(once, rounds=1, iterations=1)
    plain_s, plain_outcome = results["plain"]
    tests = sum(int(n) for n, _ in (part.split()[:2] for part in plain_outcome.split(", ")))
    rows = [f"| {name} | {t:.2f} | {(t - plain_s) / tests * 1e3:.2f} | "
            f"{'same' if outcome == plain_outcome else outcome} |"
            for name, (t, outcome) in results.items()]
    benchmark.extra_info["table"] = "\n".join([
        f"### pytest --isolate on a real suite: {os.path.basename(project)} from PyPI, "
        f"{tests} tests ({plain_outcome})", "",
        "| run | session, s | over plain, ms per test | outcomes |", "|---|---:|---:|---|",
        *rows, ""])
