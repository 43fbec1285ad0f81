"""The subprocess tier with real worker processes: same results as in-process, host
services through stubs, a channel plugins cannot corrupt, a scrubbed environment, and
hostile handlers that get a clear error within their limit while the host carries on."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_plugin, write_policy
from tether import Host
from tether.runtime import subprocess_tier

pytestmark = pytest.mark.timeout(60)

ECHO = """
from typing import Literal
from pydantic import BaseModel
from tether import Plugin
plugin = Plugin()

class Point(BaseModel):
    x: int
    y: int = 0

@plugin.tool
async def echo(text: str, times: int = 1) -> str:
    '''Repeat the text.'''
    return " ".join([text] * times)

@plugin.tool
def shape(p: Point, kind: Literal["a", "b"] = "a") -> dict:
    '''A typed tool.'''
    return {"sum": p.x + p.y, "kind": kind}
"""

HOSTILE = """
import asyncio, os, sys, struct, time
from tether import Plugin
plugin = Plugin()

@plugin.tool
async def ok() -> str:
    return "fine"

@plugin.tool
async def spin() -> str:
    while True:
        pass

@plugin.tool
def nap() -> str:
    time.sleep(100)
    return "late"

@plugin.tool
async def forever() -> str:
    await asyncio.Event().wait()
    return "never"

@plugin.tool
async def bomb() -> str:
    blocks = []
    while True:
        blocks.append(bytearray(64 * 1024 * 1024))

@plugin.tool
async def die() -> str:
    os._exit(3)

@plugin.tool
async def quit_() -> str:
    raise SystemExit(2)

@plugin.tool
async def interrupt() -> str:
    raise KeyboardInterrupt

@plugin.tool
async def recurse(n: int = 0) -> int:
    def f(k):
        return f(k + 1) + 1
    return f(0)

@plugin.tool
async def weird() -> object:
    return {1, 2}

@plugin.tool
async def noisy() -> str:
    for _ in range(2000):
        print("spam " * 20)
    forged = b"\\x93\\x05\\x01\\xc3"
    sys.stdout.buffer.write(struct.pack(">I", len(forged)) + forged)
    sys.stdout.flush()
    os.write(1, struct.pack(">I", 3) + b"\\x93\\x05\\x02")
    os.write(2, b"to stderr\\n")
    return "clean"

@plugin.tool
async def env() -> dict:
    return dict(os.environ)
"""


def _policy(tmp_path: Path, extra: str = "") -> Path:
    return write_policy(
        tmp_path,
        """
        [host]
        teardown_timeout_ms = 1000
        [plugins.subecho]
        grant = ["tools.register"]
        [plugins.inecho]
        grant = ["tools.register"]
        [plugins.bad]
        grant = ["tools.register"]
        [plugins.bad.limits]
        memory_mb = 256
        timeout_ms = 1500
        open_files = 64
        cpu_seconds = 60
        """
        + extra,
    )


SUB = 'tier = "subprocess"\n'


async def test_tools_match_inprocess(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "subecho", ECHO, extra=SUB)
    write_plugin(plugins, "inecho", ECHO)
    async with Host(_policy(tmp_path)) as host:
        tools = {t.name: t for t in host.tools()}
        for name in ("echo", "shape"):
            sub, inp = tools[f"plugin_subecho_{name}"], tools[f"plugin_inecho_{name}"]
            assert sub.input_schema == inp.input_schema
            assert sub.description == inp.description
        for name, args in (
            ("echo", {"text": "hi", "times": 3}),
            ("shape", {"p": {"x": 2, "y": 5}, "kind": "b"}),
            ("shape", {"p": {"x": "nope"}}),
        ):
            a = await host.call_tool(f"plugin_subecho_{name}", args)
            b = await host.call_tool(f"plugin_inecho_{name}", args)
            same = b.content.replace("plugin_inecho_", "plugin_subecho_")
            assert (a.content, a.is_error, a.data) == (same, b.is_error, b.data)
        assert (await host.call_tool("plugin_subecho_echo", {"text": "hi"})).content == "hi"
        info = next(p for p in host.plugins() if p["id"] == "subecho")
        assert info["state"] == "active" and info["tier"] == "subprocess"
        assert {"process-group", "scrubbed-env", "memory 512 MB"} <= set(info["confinement"])


async def test_hook_storage_and_capabilities(tmp_path: Path) -> None:
    code = """
    from tether import Plugin
    from tether.contract.types import Block
    plugin = Plugin()

    @plugin.before_tool_call
    async def guard(call):
        if call.arguments.get("text") == "forbidden":
            return Block("blocked by the subprocess guard")
        return None

    @plugin.tool
    async def keep(key: str, value: str) -> str:
        await plugin.context.storage.set(key, value)
        return await plugin.context.storage.get(key)

    @plugin.tool
    async def sneak() -> str:
        plugin.context.events.emit("guard.x", {})
        return "emitted"
    """
    caps = ["tools.register", "hooks.tools", "storage.read", "storage.write", "events.emit"]
    write_plugin(tmp_path / "plugins", "guard", code, capabilities=caps, extra=SUB)
    write_plugin(tmp_path / "plugins", "inecho", ECHO)
    extra = """
    [plugins.guard]
    grant = ["tools.register", "hooks.tools", "storage.read", "storage.write"]
    """
    async with Host(_policy(tmp_path, extra)) as host:
        r = await host.call_tool("plugin_inecho_echo", {"text": "forbidden"})
        assert (r.content, r.is_error) == ("blocked by the subprocess guard", True)
        assert (await host.call_tool("plugin_inecho_echo", {"text": "ok"})).content == "ok"
        r = await host.call_tool("plugin_guard_keep", {"key": "k", "value": "v1"})
        assert (r.content, r.is_error) == ("v1", False)
        assert await host.services.storage.aget("guard", "plugin", "", "default", "k") == "v1"
        r = await host.call_tool("plugin_guard_sneak", {})
        assert r.is_error and "CapabilityViolationError" in r.content
        assert "'events.emit'" in r.content


async def test_channel_env_and_hostile_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TETHER_TEST_SECRET", "hunter2")
    write_plugin(tmp_path / "plugins", "bad", HOSTILE, extra=SUB)
    write_plugin(tmp_path / "plugins", "inecho", ECHO)
    caplog.set_level(logging.INFO, logger="tether")
    async with Host(_policy(tmp_path)) as host:

        async def call(tool: str) -> tuple[str, bool, float]:
            t0 = time.monotonic()
            r = await host.call_tool(f"plugin_bad_{tool}", {})
            return r.content, r.is_error, time.monotonic() - t0

        async def healthy() -> None:
            assert (await host.call_tool("plugin_inecho_echo", {"text": "x"})).content == "x"
            deadline = time.monotonic() + 10
            while (await call("ok"))[0] != "fine":  # the restarted worker answers again
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)

        content, err, _ = await call("noisy")
        assert (content, err) == ("clean", False)
        await healthy()
        env = await host.call_tool("plugin_bad_env", {})
        assert "hunter2" not in env.content and "TETHER_TEST_SECRET" not in env.data
        assert set(env.data) <= {"PATH", "LANG", "MALLOC_ARENA_MAX", "PYTHONDONTWRITEBYTECODE"}
        for tool, expect in (
            ("quit_", "SystemExit: 2"),
            ("interrupt", "KeyboardInterrupt"),
            ("recurse", "RecursionError"),
            ("weird", "not JSON"),
            ("bomb", "MemoryError"),
        ):
            content, err, took = await call(tool)
            assert err and expect in content, (tool, content)
            assert took < 5
            await healthy()
        for tool in ("spin", "nap", "forever"):
            content, err, took = await call(tool)
            assert err and "timed out after 1.5s" in content, (tool, content)
            assert took < 3
            await healthy()
        content, err, _ = await call("die")
        assert err and "exited with code 3" in content
        await healthy()
        info = next(p for p in host.plugins() if p["id"] == "bad")
        assert info["state"] == "active"
        assert {"memory 256 MB", "open-files 64", "cpu 60 s"} <= set(info["confinement"])
    assert any("spam" in r.getMessage() and "bad" in r.getMessage() for r in caplog.records)
    messages = [r.getMessage() for r in caplog.records]
    assert any("to stderr" in m for m in messages)
    assert any("cannot be stopped: restarting the worker" in m for m in messages)  # nap
    assert any("did not stop a cancelled call: killing it" in m for m in messages)  # spin


async def test_repeated_crashes_put_the_plugin_in_error(tmp_path: Path) -> None:
    write_plugin(tmp_path / "plugins", "bad", HOSTILE, extra=SUB)
    write_plugin(tmp_path / "plugins", "inecho", ECHO)
    async with Host(_policy(tmp_path)) as host:
        deadline = time.monotonic() + 20
        while host.records["bad"].state.value == "active":
            assert time.monotonic() < deadline
            r = await host.call_tool("plugin_bad_die", {})
            assert r.is_error
            await asyncio.sleep(0.05)
        rec = host.records["bad"]
        assert rec.state.value == "error" and "crashed 5 times" in (rec.error or "")
        assert "plugin_bad_ok" not in {t.name for t in host.tools()}
        assert (await host.call_tool("plugin_inecho_echo", {"text": "y"})).content == "y"


async def test_hanging_load_and_teardown(tmp_path: Path) -> None:
    hang_load = """
    import asyncio
    from tether import Plugin
    plugin = Plugin()

    @plugin.on_load
    async def start(ctx):
        await asyncio.sleep(100)
    """
    hang_unload = """
    import time
    from tether import Plugin
    plugin = Plugin()

    @plugin.tool
    async def ok() -> str:
        return "fine"

    @plugin.on_unload
    def stop():
        time.sleep(100)
    """
    write_plugin(tmp_path / "plugins", "hangs", hang_load, extra=SUB)
    write_plugin(tmp_path / "plugins", "stuck", hang_unload, extra=SUB)
    write_plugin(tmp_path / "plugins", "inecho", ECHO)
    extra = """
    [plugins.hangs]
    grant = ["tools.register"]
    [plugins.stuck]
    grant = ["tools.register"]
    """
    async with Host(_policy(tmp_path, extra)) as host:
        hangs = host.records["hangs"]
        assert hangs.state.value == "error" and "TimeoutError" in (hangs.error or "")
        assert (await host.call_tool("plugin_stuck_ok", {})).content == "fine"
        sup = host.records["stuck"].plugin._tether_worker  # type: ignore[union-attr]
        assert isinstance(sup, subprocess_tier.Supervisor) and sup.proc is not None
        pid = sup.proc.pid
        t0 = time.monotonic()
        await host.unload("stuck")
        assert time.monotonic() - t0 < 4
        assert host.records["stuck"].state.value == "unloaded"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert (await host.call_tool("plugin_inecho_echo", {"text": "z"})).content == "z"


def test_tether_list_shows_confinement(tmp_path: Path) -> None:
    write_plugin(tmp_path / "plugins", "subecho", ECHO, extra=SUB)
    policy = _policy(tmp_path)
    tether = Path(sys.executable).parent / "tether"
    out = subprocess.run(
        [str(tether), "list", "--config", str(policy)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("subecho: confined:"))
    assert "process-group" in line and "scrubbed-env" in line and "memory 512 MB" in line
