"""Plugins contributing MCP servers: a real stdio subprocess written with the SDK's MCPServer,
an HTTP MCP server on a path of this server reached with per-run tokens, and URL refusals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tether import Block, Caller, Host, Plugin, Policy, RegistrationError, ToolCall
from tether.runtime.mcp_facade import check_server_path, sanitise_tool_name
from tether.server.app import create_app

pytestmark = pytest.mark.timeout(30)

SERVER = textwrap.dedent(
    """
    import os
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("adder")

    @server.tool()
    def add(a: int, b: int) -> int:
        \"\"\"Add two integers.\"\"\"
        return a + b

    @server.tool()
    def pid() -> int:
        \"\"\"The server's process id.\"\"\"
        return os.getpid()

    @server.tool(name="weird.name!")
    def weird() -> str:
        return "w"

    @server.tool()
    def explode() -> str:
        raise RuntimeError("kaboom")

    server.run()
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie not yet reaped counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def stdio_plugin(script: Path, caps: list[str] | None = None) -> Plugin:
    p = Plugin(id="adder", name="Adder", capabilities=caps or ["mcp.register"])

    @p.on_load
    async def load(ctx: Any) -> None:
        await ctx.mcp.register_server("adder", command=[sys.executable, str(script)])

    return p


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "adder_server.py"
    path.write_text(SERVER)
    return path


async def test_stdio_server_tools_join_the_registry(tmp_path: Path, script: Path) -> None:
    guard = Plugin(id="guard", name="Guard", capabilities=["hooks.tools"])

    @guard.before_tool_call
    def block_big(call: ToolCall) -> ToolCall | Block:
        a = call.arguments.get("a")
        if call.name == "plugin_adder_add" and isinstance(a, int) and a > 100:
            return Block("too big for policy")
        return call

    host = Host(Policy(), plugins=[stdio_plugin(script), guard], base_dir=tmp_path, discover=False)
    async with host:
        names = {t.name for t in host.tools()}
        assert {"plugin_adder_add", "plugin_adder_pid", "plugin_adder_weird_name_"} <= names
        info = next(t for t in host.tools() if t.name == "plugin_adder_add")
        assert info.input_schema["required"] == ["a", "b"]
        assert info.description == "Add two integers."

        ok = await host.call_tool("plugin_adder_add", {"a": 2, "b": 3})
        assert (ok.content, ok.is_error) == ("5", False)
        blocked = await host.call_tool("plugin_adder_add", {"a": 101, "b": 3})
        assert (blocked.content, blocked.is_error) == ("too big for policy", True)
        bad = await host.call_tool("plugin_adder_add", {"a": "x", "b": 3})
        assert bad.is_error and "invalid arguments" in bad.content
        boom = await host.call_tool("plugin_adder_explode", {})
        assert boom.is_error and "Error executing tool explode" in boom.content
        # the agent-facing path: a plugin's ctx.tools.execute with a user's rights
        pid = int((await host.call_tool("plugin_adder_pid", {}, caller=Caller("u1"))).content)
        assert pid != os.getpid() and alive(pid)

        await host.disable("adder")
        assert "plugin_adder_add" not in {t.name for t in host.tools()}
        await host.services.mcp.wait_closed()
        for _ in range(100):
            if not alive(pid):
                break
            await asyncio.sleep(0.05)
        assert not alive(pid), "the MCP server subprocess outlived its plugin"

        assert await host.enable("adder")
        again = await host.call_tool("plugin_adder_add", {"a": 1, "b": 1})
        assert again.content == "2"
        new_pid = int((await host.call_tool("plugin_adder_pid", {})).content)
    assert new_pid != pid
    for _ in range(100):
        if not alive(new_pid):
            break
        await asyncio.sleep(0.05)
    assert not alive(new_pid), "host.stop() left the MCP server running"


async def test_stdio_server_through_the_agent_loop(tmp_path: Path, script: Path) -> None:
    from fake_llm import FakeLLM, Reply  # type: ignore[import-not-found]
    from tether.agent.loop import Agent, AgentConfig
    from tether.agent.openai import OpenAICompatibleProvider
    from tether.agent.sessions import SessionStore

    with FakeLLM() as llm:
        llm.add(Reply(tool_calls=[("plugin_adder_add", '{"a": 4, "b": 5}')]), Reply("done"))
        host = Host(Policy(), plugins=[stdio_plugin(script)], base_dir=tmp_path, discover=False)
        async with host:
            assert host.db is not None
            provider = OpenAICompatibleProvider(llm.base_url, "k", backoff=0.01)
            agent = Agent(host, provider, AgentConfig("m"), SessionStore(host.db))
            try:
                await agent.run("add 4 and 5")
            finally:
                await provider.aclose()
        sent = [t["function"]["name"] for t in llm.requests[0]["tools"]]
        tool_msg = next(m for m in llm.requests[1]["messages"] if m["role"] == "tool")
    assert "plugin_adder_add" in sent
    assert tool_msg["content"] == "9"


async def test_register_needs_the_capability_and_a_good_command(tmp_path: Path) -> None:
    p = Plugin(id="nocap", name="NoCap", capabilities=["tools.register"])
    outcome: list[str] = []

    @p.on_load
    async def load(ctx: Any) -> None:
        for kwargs in (
            {"command": [sys.executable, "-c", "pass"]},
            {"command": []},
        ):
            try:
                await ctx.mcp.register_server("x", **kwargs)
            except Exception as exc:
                outcome.append(type(exc).__name__)

    async with Host(Policy(), plugins=[p], base_dir=tmp_path, discover=False) as host:
        assert host.records["nocap"].state.value == "active"
    assert outcome == ["CapabilityViolationError", "CapabilityViolationError"]

    broken = Plugin(id="broken", name="Broken", capabilities=["mcp.register"])

    @broken.on_load
    async def load2(ctx: Any) -> None:
        await ctx.mcp.register_server("x", command=[sys.executable, "-c", "import sys"])

    async with Host(Policy(), plugins=[broken], base_dir=tmp_path, discover=False) as host:
        rec = host.records["broken"]
        assert rec.state.value == "error"
        assert "could not connect to MCP server 'x'" in (rec.error or "")


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/mcp",
        "//evil.example/mcp",
        "http://127.0.0.1:8080/mcp",
        "/plugins/web/../../api/mcp",
        "/plugins/./web",
        "plugins/web/mcp",
        "/plugins/web\\mcp",
        "/plugins/web /mcp",
    ],
)
def test_http_urls_other_than_local_paths_are_refused(url: str) -> None:
    with pytest.raises(RegistrationError, match="only name a path on this Tether server"):
        check_server_path(url)


def test_local_paths_and_name_sanitising() -> None:
    assert check_server_path("/plugins/web/mcp") == "/plugins/web/mcp"
    assert sanitise_tool_name("get.weather!") == "get_weather_"
    assert sanitise_tool_name("9lives") == "t_9lives"


async def test_remote_url_refused_at_registration(tmp_path: Path) -> None:
    p = Plugin(id="ext", name="Ext", capabilities=["mcp.register"])

    @p.on_load
    async def load(ctx: Any) -> None:
        await ctx.mcp.register_server("x", url="https://evil.example/mcp")

    async with Host(Policy(), plugins=[p], base_dir=tmp_path, discover=False) as host:
        assert host.records["ext"].state.value == "error"
        assert "only name a path on this Tether server" in (host.records["ext"].error or "")


class Asgi:
    """A raw-ASGI endpoint (an object, not a function, so Starlette does not wrap it)."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.manager.handle_request(scope, receive, send)


def web_plugin() -> tuple[Plugin, dict[str, Any]]:
    """A plugin that serves an MCP server on its own route (/plugins/web/mcp), registers it
    with the host, and resolves the per-run tokens the host sends it."""
    caps = ["mcp.register", "mcp.sessions", "routes.register"]
    p = Plugin(id="web", name="Web", capabilities=caps)
    box: dict[str, Any] = {}

    @p.on_load
    async def load(ctx: Any) -> None:
        from fastapi import APIRouter

        box["ctx"] = ctx
        manager = web_mcp_manager(box)
        stop, ready = asyncio.Event(), asyncio.Event()

        async def run_manager() -> None:
            async with manager.run():
                ready.set()
                await stop.wait()

        box["task"], box["stop"] = asyncio.create_task(run_manager()), stop
        await ready.wait()
        router = APIRouter()
        router.add_route("/mcp", Asgi(manager), methods=["POST"])
        ctx.routes.register(router)
        box["registered"] = await ctx.mcp.register_server("web", url="/plugins/web/mcp")

    @p.on_unload
    async def unload() -> None:
        box["stop"].set()
        await box["task"]

    return p, box


def web_mcp_manager(box: dict[str, Any]) -> Any:
    """The plugin's MCP server: `whoami` answers with the caller the token stands for."""
    import mcp_types as types
    from mcp.server.lowlevel.server import Server
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        who = box["ctx"].mcp.resolve(ctx.request.headers.get("authorization", ""))
        box.setdefault("list_seen", []).append(who)
        schema = {"type": "object", "properties": {}}
        return types.ListToolsResult(
            tools=[types.Tool(name="whoami", description="Who calls.", input_schema=schema)]
        )

    async def call_tool(ctx: Any, params: Any) -> types.CallToolResult:
        header = ctx.request.headers.get("authorization", "")
        box.setdefault("tokens", []).append(header)
        who = box["ctx"].mcp.resolve(header)
        if who is None:
            return types.CallToolResult(
                content=[types.TextContent(type="text", text="unknown token")], is_error=True
            )
        text = f"{who['user_id']}|{','.join(who['roles'])}|{who['run_id']}"
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    server = Server("web", on_list_tools=list_tools, on_call_tool=call_tool)
    return StreamableHTTPSessionManager(server, json_response=True, stateless=True)


@contextlib.asynccontextmanager
async def web_host(tmp_path: Path) -> AsyncIterator[tuple[Host, dict[str, Any]]]:
    from test_mcp_gateway import serve  # type: ignore[import-not-found]

    plugin, box = web_plugin()
    host = Host(Policy(), plugins=[plugin], base_dir=tmp_path, discover=False)
    async with host:
        assert box["registered"] == []  # deferred: no server is serving yet
        async with serve(create_app(host, None, token="t")):
            yield host, box


async def test_http_server_gets_per_run_tokens(tmp_path: Path) -> None:
    async with web_host(tmp_path) as (host, box):
        assert "plugin_web_whoami" in {t.name for t in host.tools()}
        listing_who = box["list_seen"][0]
        assert listing_who["user_id"] == "host:web" and listing_who["run_id"] is None

        alice = Caller("alice", frozenset({"staff"}))
        r1 = await host.call_tool("plugin_web_whoami", {}, caller=alice)
        assert (r1.is_error, r1.content) == (False, "alice|staff|None")
        r2 = await host.call_tool("plugin_web_whoami", {}, caller=Caller("bob"))
        assert r2.content == "bob||None"
        t1, t2 = box["tokens"][-2], box["tokens"][-1]
        assert t1.startswith("Bearer tmcp_") and t1 != t2
        # tokens are short-lived: revoked once the call is over
        ctx = box["ctx"]
        assert ctx.mcp.resolve(t1) is None and ctx.mcp.resolve("Bearer nonsense") is None
        assert len(host.services.mcp.tokens) == 0


async def test_tokens_are_per_plugin_and_expire(tmp_path: Path) -> None:
    from tether.services.mcp_client import McpTokens

    now = [100.0]
    tokens = McpTokens(ttl_s=10, clock=lambda: now[0])
    tok = tokens.mint("web", Caller("alice", frozenset({"a"})), "run-1")
    assert tokens.resolve("web", tok) == {"user_id": "alice", "roles": ["a"], "run_id": "run-1"}
    assert tokens.resolve("other", tok) is None
    now[0] += 11
    assert tokens.resolve("web", tok) is None


async def test_resolve_needs_mcp_sessions(tmp_path: Path) -> None:
    p = Plugin(id="nos", name="NoS", capabilities=["mcp.register"])
    seen: list[str] = []

    @p.on_load
    def load(ctx: Any) -> None:
        try:
            ctx.mcp.resolve("Bearer x")
        except Exception as exc:
            seen.append(type(exc).__name__)

    async with Host(Policy(), plugins=[p], base_dir=tmp_path, discover=False):
        pass
    assert seen == ["CapabilityViolationError"]
