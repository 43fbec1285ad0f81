"""`tether mcp`: the installed script as a subprocess, driven by the official stdio client."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from conftest import write_plugin, write_policy

pytestmark = pytest.mark.timeout(40)
TETHER = Path(sys.executable).parent / "tether"

PLUGIN = """
from tether import Context, Plugin

plugin = Plugin()
print("noise on stdout from plugin import")  # must not corrupt the protocol stream

@plugin.tool
def add(a: int, b: int) -> int:
    \"\"\"Add two integers.\"\"\"
    print("noise on stdout from a tool")
    return a + b

@plugin.tool
def fail() -> str:
    \"\"\"Always raises.\"\"\"
    raise RuntimeError("broken on purpose")

@plugin.tool
async def peek(ctx: Context) -> str:
    \"\"\"Uses storage without a grant.\"\"\"
    return str(await ctx.storage.get("k"))
"""


@contextlib.asynccontextmanager
async def tether_mcp(tmp_path: Path, *extra: str) -> AsyncIterator[ClientSession]:
    write_plugin(tmp_path / "plugins", "calc", PLUGIN, capabilities=["tools.register"])
    config = write_policy(tmp_path, '[plugins.calc]\ngrant = ["tools.register"]\n')
    params = StdioServerParameters(
        command=str(TETHER), args=["mcp", "--config", str(config), *extra], cwd=str(tmp_path)
    )
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


async def test_stdio_lists_and_calls_tools(tmp_path: Path) -> None:
    async with tether_mcp(tmp_path) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == {"plugin_calc_add", "plugin_calc_fail", "plugin_calc_peek"}
        assert tools["plugin_calc_add"].input_schema["required"] == ["a", "b"]
        result = await session.call_tool("plugin_calc_add", {"a": 20, "b": 22})
        assert (result.is_error, result.content[0].text) == (False, "42")  # type: ignore[union-attr]
        # the stray prints did not break the stream: the next call works too
        again = await session.call_tool("plugin_calc_add", {"a": 1, "b": 2})
        assert again.content[0].text == "3"  # type: ignore[union-attr]
    assert "noise on stdout" in (tmp_path / "stderr.log").read_text()


async def test_stdio_error_results(tmp_path: Path) -> None:
    async with tether_mcp(tmp_path) as session:
        failed = await session.call_tool("plugin_calc_fail", {})
        assert failed.is_error is True
        assert "RuntimeError: broken on purpose" in failed.content[0].text  # type: ignore[union-attr]
        refused = await session.call_tool("plugin_calc_peek", {})
        assert refused.is_error is True
        assert "storage.read" in refused.content[0].text  # type: ignore[union-attr]
        unknown = await session.call_tool("plugin_calc_ad", {"a": 1, "b": 2})
        assert unknown.is_error is True
        assert "no tool named 'plugin_calc_ad'" in unknown.content[0].text  # type: ignore[union-attr]


async def test_stdio_caller_roles(tmp_path: Path) -> None:
    async with tether_mcp(tmp_path, "--caller", "alice", "--roles", "guest") as session:
        # calc has no roles restriction, so a guest still sees its tools
        names = {t.name for t in (await session.list_tools()).tools}
        assert "plugin_calc_add" in names
