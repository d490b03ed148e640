"""What `pytest --isolate` costs per test: a suite of trivial tests run plainly,
with --isolate, and with --isolate -n 2, each in a pytest process of its own."""
from __future__ import annotations

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
