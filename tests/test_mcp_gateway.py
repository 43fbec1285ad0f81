"""The MCP gateway over streamable HTTP at /mcp, driven by the official MCP Python client
against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tether import Context, Host, Plugin, Policy
from tether.server.app import create_app

pytestmark = pytest.mark.timeout(30)
TOKEN = "test-operator-token"


def make_plugins() -> list[Plugin]:
    calc = Plugin(id="calc", name="Calc", capabilities=["tools.register"])

    @calc.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @calc.tool
    def fail(why: str) -> str:
        """Always raises."""
        raise ValueError(why)

    @calc.tool
    async def peek(ctx: Context) -> str:
        """Reads storage without the storage.read grant."""
        return str(await ctx.storage.get("k"))

    staff = Plugin(id="staff", name="Staff", capabilities=["tools.register"], roles=["staff"])

    @staff.tool
    def secret() -> str:
        """Only for staff."""
        return "s3cret"

    return [calc, staff]


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run `app` with uvicorn on a free 127.0.0.1 port in this loop; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def mcp_session(url: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=10) as http,
        streamable_http_client(url + "/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Host, str]]:
    host = Host(Policy(), plugins=make_plugins(), base_dir=tmp_path, discover=False)
    await host.start()
    try:
        async with serve(create_app(host, None, token=TOKEN)) as url:
            yield host, url
    finally:
        await host.stop()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_list_and_call_tools_over_http(served: tuple[Host, str]) -> None:
    _, url = served
    async with mcp_session(url, AUTH) as session:
        listing = await session.list_tools()
        names = {t.name for t in listing.tools}
        assert {"plugin_calc_add", "plugin_calc_fail", "plugin_staff_secret"} <= names
        add = next(t for t in listing.tools if t.name == "plugin_calc_add")
        assert add.description == "Add two integers."
        assert add.input_schema["properties"]["a"]["type"] == "integer"

        result = await session.call_tool("plugin_calc_add", {"a": 2, "b": 40})
        assert result.is_error is False
        assert result.content[0].text == "42"  # type: ignore[union-attr]
        assert result.structured_content is None  # an int is not an object


async def test_errors_are_results_not_crashes(served: tuple[Host, str]) -> None:
    _, url = served
    async with mcp_session(url, AUTH) as session:
        raised = await session.call_tool("plugin_calc_fail", {"why": "boom"})
        assert raised.is_error is True
        assert "ValueError: boom" in raised.content[0].text  # type: ignore[union-attr]

        unknown = await session.call_tool("plugin_calc_nope", {})
        assert unknown.is_error is True
        assert "no tool named 'plugin_calc_nope'" in unknown.content[0].text  # type: ignore[union-attr]

        bad_args = await session.call_tool("plugin_calc_add", {"a": "x", "b": 1})
        assert bad_args.is_error is True
        assert "invalid arguments" in bad_args.content[0].text  # type: ignore[union-attr]

        refused = await session.call_tool("plugin_calc_peek", {})
        assert refused.is_error is True
        text = refused.content[0].text  # type: ignore[union-attr]
        assert "CapabilityViolationError" in text and "storage.read" in text

        # the session is still usable after all of that
        ok = await session.call_tool("plugin_calc_add", {"a": 1, "b": 1})
        assert ok.content[0].text == "2"  # type: ignore[union-attr]


async def test_callers_and_roles_apply(served: tuple[Host, str]) -> None:
    _, url = served
    guest = {**AUTH, "X-Tether-Caller": "alice", "X-Tether-Roles": "guest"}
    async with mcp_session(url, guest) as session:
        names = {t.name for t in (await session.list_tools()).tools}
        assert "plugin_calc_add" in names and "plugin_staff_secret" not in names
        hidden = await session.call_tool("plugin_staff_secret", {})
        assert hidden.is_error is True
    staff = {**AUTH, "X-Tether-Caller": "bob", "X-Tether-Roles": "staff"}
    async with mcp_session(url, staff) as session:
        shown = await session.call_tool("plugin_staff_secret", {})
        assert (shown.is_error, shown.content[0].text) == (False, "s3cret")  # type: ignore[union-attr]


async def test_disabled_plugin_tools_vanish_at_once(served: tuple[Host, str]) -> None:
    host, url = served
    async with mcp_session(url, AUTH) as session:
        assert "plugin_staff_secret" in {t.name for t in (await session.list_tools()).tools}
        await host.disable("staff")
        names = {t.name for t in (await session.list_tools()).tools}
        assert "plugin_staff_secret" not in names and "plugin_calc_add" in names
        gone = await session.call_tool("plugin_staff_secret", {})
        assert gone.is_error is True
        await host.enable("staff")
        assert "plugin_staff_secret" in {t.name for t in (await session.list_tools()).tools}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
)
async def test_missing_or_wrong_token_is_refused(
    served: tuple[Host, str], headers: dict[str, str]
) -> None:
    _, url = served
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with httpx.AsyncClient() as client:
        r = await client.post(
            url + "/mcp",
            json=body,
            headers={**headers, "Accept": "application/json, text/event-stream"},
        )
    assert r.status_code == 401
    assert "bearer token" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    # and the official client cannot open a session: it sees the 401
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    hooks = {"response": [record]}
    with pytest.raises(Exception) as info:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=10, event_hooks=hooks) as http,
            streamable_http_client(url + "/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
    assert "error response" in repr(info.value)
    assert statuses and set(statuses) == {401}
