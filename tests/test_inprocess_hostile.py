"""Hostile plugins at the in-process tier: what it can contain gets a clear error within its
limit while a calm plugin keeps answering; what it cannot stop (it shares the host's
interpreter) is declared here and in docs/tiers.md instead of being skipped silently. The
subprocess and wasm tiers run the whole list (test_subprocess_tier.py, test_wasm_hostile.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import write_plugin, write_policy
from tether import Host
from tether.runtime.lifecycle import State

pytestmark = pytest.mark.timeout(60)

HOSTILE = """
import asyncio, time
from tether import Plugin
plugin = Plugin()

@plugin.tool
def nap() -> str:
    time.sleep(3)  # a blocking sleep in a sync tool: it runs in a worker thread
    return "late"

@plugin.tool
async def forever() -> str:
    await asyncio.Event().wait()
    return "never"

@plugin.tool
async def quit_() -> str:
    raise SystemExit(2)

@plugin.tool
async def interrupt() -> str:
    raise KeyboardInterrupt

@plugin.tool
async def recurse() -> int:
    def down(k):
        return down(k + 1) + 1
    return down(0)

@plugin.tool
async def weird() -> object:
    return {1, 2}

@plugin.tool
async def huge() -> str:
    return "x" * 20_000_000
"""

CALM = """
from tether import Plugin
plugin = Plugin()

@plugin.tool
async def hello() -> str:
    return "still here"
"""

HANGS_AT = """
import asyncio
from tether import Plugin
plugin = Plugin()

@plugin.on_{when}
async def hang(ctx=None):
    await asyncio.Event().wait()
"""

CANNOT_CONTAIN = {
    "infinite loop on the event loop": "loops forever on the event loop",
    "memory bomb": "limit memory or CPU",
    "os._exit": "stop a crash in native code",
}
"""Hostile behaviours the in-process tier cannot stop, and the words docs/tiers.md uses for
each under "What the in-process tier cannot stop": run such plugins at a stricter tier."""

POLICY = """
[host]
teardown_timeout_ms = 500
[plugins.bad]
grant = ["tools.register"]
[plugins.bad.limits]
timeout_ms = 500
[plugins.calm]
grant = ["tools.register"]
[plugins.hang]
grant = ["tools.register"]
"""


async def test_contained_misbehaviour_gets_a_clear_error_in_time(tmp_path: Path) -> None:
    write_plugin(tmp_path / "plugins", "bad", HOSTILE)
    write_plugin(tmp_path / "plugins", "calm", CALM)
    async with Host(write_policy(tmp_path, POLICY)) as host:
        for tool, expect, bound in (
            ("nap", "timed out after 0.5s", 2.0),
            ("forever", "timed out after 0.5s", 2.0),
            ("quit_", "SystemExit: 2", 1.0),
            ("interrupt", "KeyboardInterrupt", 1.0),
            ("recurse", "RecursionError", 2.0),
            ("weird", "not JSON", 1.0),
            ("huge", "over the 1048576-byte limit", 2.0),
        ):
            t0 = time.monotonic()
            result = await host.call_tool(f"plugin_bad_{tool}", {})
            took = time.monotonic() - t0
            assert result.is_error and expect in result.content, (tool, result.content)
            assert took < bound, (tool, took)
            calm = await host.call_tool("plugin_calm_hello", {})
            assert (calm.content, calm.is_error) == ("still here", False)
        assert host.records["bad"].state is State.ACTIVE


@pytest.mark.parametrize("when", ["load", "unload"])
async def test_a_hanging_load_or_teardown_is_bounded(tmp_path: Path, when: str) -> None:
    write_plugin(tmp_path / "plugins", "hang", HANGS_AT.format(when=when))
    write_plugin(tmp_path / "plugins", "calm", CALM)
    t0 = time.monotonic()
    async with Host(write_policy(tmp_path, POLICY)) as host:
        if when == "load":
            assert host.records["hang"].state is State.ERROR
            assert "did not finish within 0.5s" in (host.records["hang"].error or "")
        else:
            assert host.records["hang"].state is State.ACTIVE
            await host.unload("hang")
            assert host.audit.read(plugin="hang", kind="teardown_failed")
        calm = await host.call_tool("plugin_calm_hello", {})
        assert calm.content == "still here"
    assert time.monotonic() - t0 < 10


def test_what_the_tier_cannot_stop_is_declared_in_the_docs() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "tiers.md").read_text()
    section = docs.split("## What the in-process tier cannot stop", 1)[1].split("\n## ", 1)[0]
    for behaviour, words in CANNOT_CONTAIN.items():
        assert words in section, behaviour
