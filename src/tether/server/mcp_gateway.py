"""Tether's tools as an MCP server: streamable HTTP at `/mcp` (and stdio via `tether mcp`).

Built on the official SDK's low-level `Server` (mcp 2.x): `tools/list` asks the host for the
tools the caller may use on every request, so a disabled plugin's tools vanish at once, and
`tools/call` goes through `host.call_tool` (hooks, timeouts, roles, audit). Failures come
back as `CallToolResult(is_error=True)`, never as a crash or protocol error.

HTTP runs the SDK's `StreamableHTTPSessionManager` in stateless JSON mode. Its task group is
started by the app's lifespan (or, when the app is served without one, on the first
request). Every request needs the operator bearer token; `X-Tether-Caller` and
`X-Tether-Roles` name the caller it acts for, exactly as for the REST API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tether.contract.errors import UnknownToolError
from tether.contract.types import Caller
from tether.contract.versions import HOST_VERSION
from tether.server.auth import caller_of, check_bearer

if TYPE_CHECKING:
    from mcp.server.lowlevel.server import Server
    from mcp_types import CallToolResult

    from tether.runtime.host import Host

log = logging.getLogger("tether.mcp")
MCP_PATH = "/mcp"


def build_server(host: Callable[[], Host], caller_for: Callable[[Any], Caller]) -> Server[Any]:
    """An MCP low-level server over a host. `caller_for(request)` names the caller from the
    HTTP request the message came with (None on stdio)."""
    import mcp_types as types
    from mcp.server.context import ServerRequestContext
    from mcp.server.lowlevel.server import Server

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = caller_for(ctx.request)
        return types.ListToolsResult(
            tools=[
                types.Tool(name=t.name, description=t.description, input_schema=t.input_schema)
                for t in host().tools(caller)
            ]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = caller_for(ctx.request)
        try:
            result = await host().call_tool(params.name, params.arguments or {}, caller=caller)
        except UnknownToolError as exc:
            return _error(str(exc))
        except Exception as exc:  # the host reports failures as results; this is a backstop
            log.exception("MCP tools/call %s failed", params.name)
            return _error(f"{params.name} failed: {type(exc).__name__}: {exc}")
        structured = result.data if isinstance(result.data, dict) else None
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=result.content)],
            structured_content=structured,
            is_error=result.is_error,
        )

    return Server(
        "tether",
        version=HOST_VERSION,
        instructions="Tools of the plugins active in this Tether host.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _error(message: str) -> CallToolResult:
    import mcp_types as types

    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)], is_error=True
    )


def _http_caller(request: Any) -> Caller:
    return caller_of(request) if isinstance(request, Request) else Caller.operator()


class McpHttpGateway:
    """The ASGI endpoint at /mcp: bearer check, then the SDK's session manager."""

    def __init__(self, app: FastAPI) -> None:
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        self._app = app
        server = build_server(lambda: app.state.tether.host, _http_caller)
        self.manager = StreamableHTTPSessionManager(server, json_response=True, stateless=True)
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None

    async def start(self) -> None:
        """Run the session manager's task group in a task of its own (idempotent)."""
        if self._task is not None:
            assert self._ready is not None
            await self._ready.wait()
            return
        self._ready, self._stop = asyncio.Event(), asyncio.Event()
        self._task = asyncio.create_task(self._run(self._ready, self._stop), name="mcp-gateway")
        await self._ready.wait()
        # Plugins' HTTP MCP servers registered before the app served can be reached now.
        await self._app.state.tether.host.services.mcp.connect_pending()

    async def _run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        try:
            async with self.manager.run():
                ready.set()
                await stop.wait()
        finally:
            ready.set()

    async def stop(self) -> None:
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        with contextlib.suppress(Exception):
            await self._task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            check_bearer(request, self._app.state.tether.token)
        except HTTPException as exc:
            await _json(send, exc.status_code, {"detail": exc.detail}, exc.headers)
            return
        if self._task is None or self._task.done():
            if self._task is not None:  # the manager ended (app shut down): refuse cleanly
                await _json(send, 503, {"detail": "the MCP gateway is shut down"}, None)
                return
            await self.start()
        await self.manager.handle_request(scope, receive, send)


async def _json(send: Send, status: int, body: dict[str, Any], headers: Any) -> None:
    raw = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


def mount(app: FastAPI) -> None:
    """Serve MCP at /mcp (GET, POST, DELETE) and give the host's MCP client the app, so
    plugins' HTTP MCP servers (paths on this server) are reached in-process."""
    gateway = McpHttpGateway(app)
    app.state.mcp_gateway = gateway
    app.router.routes.append(
        Route(
            MCP_PATH, endpoint=gateway, methods=["GET", "POST", "DELETE"], include_in_schema=False
        )
    )
    app.state.tether.host.services.mcp.attach_app(app)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            await gateway.start()
            try:
                yield state
            finally:
                await gateway.stop()

    app.router.lifespan_context = lifespan
