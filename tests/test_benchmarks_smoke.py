"""Smoke test for the benchmarks: `benchmarks/run.py --quick` runs every benchmark end to end.

No timing is asserted (the figures of a quick run are meaningless); the test checks that the
run succeeds and reports every benchmark with its tables.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(55)
def test_quick_run_exits_zero_and_reports_every_benchmark(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_CONFIG"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # the benchmarks must not depend on, or write into, the working folder
        env=env,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for heading in ("## Summary", "## Hook chains", "## Tool dispatch", "## Activation"):
        assert heading in out, f"missing section {heading!r} in:\n{out[:2000]}"
    # Each section carries its concrete rows, not just a heading.
    for size in (1, 10, 100):
        assert f"\n| {size} | " in out, f"no hook-chain row for {size} plugins"
    assert "before_tool_call, pass-through hooks returning None" in out
    assert "| call_tool |" in out and "| to_thread |" in out
    assert "importlib alone, cold" in out
    assert "└ import" in out and "└ validator" in out
    summary = out.split("## Summary", 1)[1].split("\n## ", 1)[0]
    for prefix in ("| hooks: ", "| dispatch: ", "| activation: "):
        assert prefix in summary, f"summary has no {prefix.strip('| ')} row:\n{summary}"
    assert "not judged" in summary  # a quick run does not pretend to meet or miss targets
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(55)
def test_agent_benchmark_quick_run_reports_both_providers(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_agent.py"), "--quick"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in (
        "| scripted server, HTTP | no plugins |",
        "| scripted server, HTTP | 10 plugins, every hook |",
        "| in-process | 10 plugins, every hook |",
    ):
        assert row in proc.stdout, proc.stdout


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("script", "lines"),
    [
        ("bench_tiers.py", ["raw framed round trip", "MCP SDK stdio call_tool", "tier / raw = "]),
        ("bench_wasm.py", ["bare export call", "thread hop (no-op)", "host.call_tool"]),
    ],
)
def test_tier_benchmarks_quick_run(tmp_path: Path, script: str, lines: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in lines:
        assert line in proc.stdout, f"{script}: no {line!r} in:\n{proc.stdout[-2000:]}"
    assert list(tmp_path.iterdir()) == []
