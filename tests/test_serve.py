"""`tether serve` as a real subprocess: it prints where it listens and the token, answers
requests, and on SIGTERM/SIGINT finishes what is in flight, tears the plugins down and
exits 0 within the shutdown bound."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import write_plugin, write_policy
from fake_llm import FakeLLM, Stall
from tether.services.audit import AuditLog
from tether.services.database import Database

SLOW = """
import asyncio
from tether import Plugin

plugin = Plugin()

@plugin.tool
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds}"
"""


def _start(tmp_path: Path, extra_policy: str = "", *args: str, env: dict[str, str] | None = None):
    write_plugin(tmp_path / "plugins", "sleepy", SLOW)
    policy = write_policy(tmp_path, '[plugins.sleepy]\ngrant = ["tools.register"]\n' + extra_policy)
    cmd = [sys.executable, "-c", "from tether.cli import main; main()", "serve", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--config", str(policy), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=tmp_path,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            assert proc.poll() is None, "".join(seen)
            continue
        seen.append(line)
        if line.startswith("press Ctrl+C"):
            break
    else:
        proc.kill()
        raise AssertionError("serve did not start:\n" + "".join(seen))
    url = next(s for s in seen if s.startswith("Tether is serving on")).split()[4]
    return proc, url.rstrip("/"), seen, lines


def _rest(lines: queue.Queue[str]) -> str:
    out = []
    while not lines.empty():
        out.append(lines.get())
    return "".join(out)


@pytest.mark.timeout(40)
def test_sigterm_finishes_in_flight_calls_and_unloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_TOKEN", raising=False)
    proc, base, seen, lines = _start(tmp_path)
    try:
        token_line = next(s for s in seen if s.startswith("operator token (new"))
        token = token_line.rsplit(": ", 1)[1].strip()
        assert (tmp_path / ".tether" / "api-token").read_text().strip() == token
        assert "no agent" not in "".join(seen)  # the default [agent] builds (used lazily)
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/api/plugins", headers=auth).status_code == 200

        result: dict[str, object] = {}

        def slow_call() -> None:
            r = httpx.post(
                f"{base}/api/tools/plugin_sleepy_slow",
                json={"seconds": 1.5},
                headers=auth,
                timeout=10,
            )
            result["status"], result["body"] = r.status_code, r.json()

        caller = threading.Thread(target=slow_call)
        caller.start()
        time.sleep(0.4)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        caller.join(10)
        assert result == {"status": 200, "body": {"content": "slept 1.5", "is_error": False}}
        code = proc.wait(12)
        assert code == 0, _rest(lines)
        assert time.monotonic() - sent < 10
        assert "Tether stopped" in _rest(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    db = Database(tmp_path / ".tether" / "tether.db")
    try:
        states = [r.message for r in AuditLog(db).read(plugin="sleepy", kind="state")]
    finally:
        db.close()
    assert states[0] == "active -> unloaded"


@pytest.mark.timeout(40)
def test_sigint_aborts_runs_after_the_bound(tmp_path: Path) -> None:
    with FakeLLM() as llm:
        llm.add(Stall("thinking", seconds=30))
        agent = f'\n[agent]\nbase_url = "{llm.base_url}"\nmodel = "fake"\n'
        env = {"TETHER_TOKEN": "from-env-token"}
        proc, base, seen, lines = _start(tmp_path, agent, "--shutdown-timeout", "1", env=env)
        try:
            assert any(s.startswith("operator token: from $TETHER_TOKEN") for s in seen)
            assert "from-env-token" not in "".join(seen)
            auth = {"Authorization": "Bearer from-env-token"}
            r = httpx.post(f"{base}/api/runs", json={"prompt": "hang"}, headers=auth)
            assert r.status_code == 200
            time.sleep(0.3)
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
            assert time.monotonic() - sent < 6
            tail = _rest(lines)
            assert "aborted 1 run(s)" in tail and "Tether stopped" in tail
        finally:
            if proc.poll() is None:
                proc.kill()


def test_serve_reports_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        write_policy(tmp_path, "")
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                "from tether.cli import main; main()",
                "serve",
                "--port",
                str(port),
                "--config",
                str(tmp_path / "tether.toml"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr
