"""Tether as an MCP client: connections to the MCP servers plugins contribute, and the
per-run bearer tokens the host attaches when it calls a plugin's HTTP MCP server.

Two kinds of server:

- **stdio**: a command the host spawns. One long-lived connection per server, opened at
  registration; its subprocess lives until the plugin is disabled or unloaded.
- **HTTP**: an absolute path on this Tether server (`/plugins/<id>/mcp`). The host talks to
  it in-process through the ASGI app (`attach_app`, done by `server.mcp_gateway.mount`), so
  nothing, tokens included, goes over the network. Every call opens a short session whose
  `Authorization: Bearer` is a per-run token minted for that call's caller and run.

The official SDK is imported lazily, so a host without MCP servers never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.contract.types import Caller, ToolResult

if TYPE_CHECKING:
    from mcp.client.session import ClientSession

log = logging.getLogger("tether.mcp")
TOKEN_TTL_S = 300.0
CONNECT_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
INTERNAL_BASE = "http://tether.internal"
"""The origin used for in-process requests to this server's own ASGI app."""


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """Who a per-run token stands for, and until when (monotonic seconds)."""

    user_id: str
    roles: frozenset[str]
    run_id: str | None
    plugin_id: str
    expires: float

    def to_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "roles": sorted(self.roles), "run_id": self.run_id}


class McpTokens:
    """Random short-lived bearer tokens mapped to a caller and run, for one plugin's server."""

    def __init__(self, ttl_s: float = TOKEN_TTL_S, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl_s
        self._clock = clock
        self._grants: dict[str, TokenGrant] = {}

    def mint(self, plugin_id: str, caller: Caller, run_id: str | None) -> str:
        """A new token for `caller` (and `run_id`), resolvable only by `plugin_id`."""
        self._sweep()
        token = "tmcp_" + secrets.token_urlsafe(32)
        expires = self._clock() + self._ttl
        self._grants[token] = TokenGrant(caller.id, caller.roles, run_id, plugin_id, expires)
        return token

    def resolve(self, plugin_id: str, token: str) -> dict[str, Any] | None:
        """`{user_id, roles, run_id}` for a live token minted for `plugin_id`, else None."""
        grant = self._grants.get(token)
        if grant is None or grant.plugin_id != plugin_id:
            return None
        if grant.expires <= self._clock():
            self._grants.pop(token, None)
            return None
        return grant.to_json()

    def revoke(self, token: str) -> None:
        self._grants.pop(token, None)

    def forget_plugin(self, plugin_id: str) -> None:
        for token in [t for t, g in self._grants.items() if g.plugin_id == plugin_id]:
            del self._grants[token]

    def _sweep(self) -> None:
        now = self._clock()
        for token in [t for t, g in self._grants.items() if g.expires <= now]:
            del self._grants[token]

    def __len__(self) -> int:
        return len(self._grants)


@dataclass(slots=True)
class RemoteTool:
    """One tool an MCP server listed."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(slots=True)
class StdioSpec:
    command: str
    args: list[str]
    env: dict[str, str] | None
    cwd: str | None


@dataclass(slots=True)
class McpServerHandle:
    """A registered server: where it is, its tools, and (stdio) the task owning its session."""

    plugin_id: str
    name: str
    stdio: StdioSpec | None = None
    path: str | None = None
    tools: list[RemoteTool] = field(default_factory=list)
    session: ClientSession | None = None
    _owner: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)


def to_tool_result(result: Any) -> ToolResult:
    """An MCP `CallToolResult` as a Tether `ToolResult` (text blocks joined; others noted)."""
    parts: list[str] = []
    for block in result.content:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', '?')} content]")
    data = result.structured_content
    return ToolResult("\n".join(parts), is_error=bool(result.is_error), data=data)


class McpClients:
    """Every plugin's MCP server connections and the per-run token table."""

    def __init__(self) -> None:
        self.tokens = McpTokens()
        self.servers: dict[tuple[str, str], McpServerHandle] = {}
        self._app: Any = None
        self._closing: set[asyncio.Task[None]] = set()
        self._pending: list[tuple[str, Callable[[], Awaitable[object]]]] = []

    # The in-process app for HTTP servers ------------------------------------------

    def attach_app(self, app: Any) -> None:
        """Give the ASGI app that HTTP servers (absolute paths) are served by."""
        self._app = app

    def defer(self, plugin_id: str, connect: Callable[[], Awaitable[object]]) -> None:
        """Connect an HTTP server once the app is serving (see `connect_pending`)."""
        self._pending.append((plugin_id, connect))

    async def connect_pending(self) -> None:
        """Run deferred HTTP registrations (the gateway calls this when the app starts);
        each failure is logged against its plugin and does not stop the others."""
        pending, self._pending = self._pending, []
        for plugin_id, connect in pending:
            try:
                await connect()
            except Exception as exc:
                log.warning("plugin %s: MCP server not connected: %s", plugin_id, exc)

    @property
    def app_attached(self) -> bool:
        return self._app is not None

    @contextlib.asynccontextmanager
    async def _http_session(self, path: str, token: str) -> AsyncIterator[ClientSession]:
        import httpx2
        from mcp.client.session import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        if self._app is None:
            raise RuntimeError(
                f"MCP server at {path} is served over HTTP by this Tether server, but no server "
                "is attached: run `tether serve` (or mount the app with create_app)"
            )
        transport = httpx2.ASGITransport(app=self._app)
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(transport=transport, base_url=INTERNAL_BASE, headers=headers) as hc,
            streamable_http_client(INTERNAL_BASE + path, http_client=hc) as streams,
            ClientSession(streams[0], streams[1]) as session,
        ):
            await session.initialize()
            yield session

    # Connecting --------------------------------------------------------------------

    async def connect_stdio(self, handle: McpServerHandle) -> list[RemoteTool]:
        """Spawn the server, open a session owned by a background task, list its tools."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle._owner = asyncio.create_task(
            self._own_stdio(handle, ready), name=f"mcp:{handle.plugin_id}:{handle.name}"
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await asyncio.shield(ready)
        except BaseException:
            await self._stop(handle)
            raise
        self.servers[(handle.plugin_id, handle.name)] = handle
        return handle.tools

    async def _own_stdio(self, handle: McpServerHandle, ready: asyncio.Future[None]) -> None:
        from mcp.client.session import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        assert handle.stdio is not None
        spec = handle.stdio
        params = StdioServerParameters(command=spec.command, args=spec.args, env=spec.env)
        if spec.cwd:
            params.cwd = spec.cwd
        try:
            async with (
                stdio_client(params, errlog=sys.stderr) as streams,
                ClientSession(streams[0], streams[1]) as session,
            ):
                await session.initialize()
                handle.tools = _remote_tools(await session.list_tools())
                handle.session = session
                ready.set_result(None)
                await handle._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(
                    exc if isinstance(exc, Exception) else RuntimeError(f"cancelled: {exc!r}")
                )
            if not isinstance(exc, Exception | asyncio.CancelledError):
                raise
        finally:
            handle.session = None

    async def list_http(self, handle: McpServerHandle) -> list[RemoteTool]:
        """List an HTTP server's tools with a token for the plugin itself (no user)."""
        assert handle.path is not None
        token = self.tokens.mint(handle.plugin_id, Caller(f"host:{handle.plugin_id}"), None)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                async with self._http_session(handle.path, token) as session:
                    handle.tools = _remote_tools(await session.list_tools())
        finally:
            self.tokens.revoke(token)
        self.servers[(handle.plugin_id, handle.name)] = handle
        return handle.tools

    # Calling -----------------------------------------------------------------------

    async def call(
        self,
        handle: McpServerHandle,
        tool: str,
        arguments: dict[str, Any],
        caller: Caller,
        run_id: str | None,
    ) -> ToolResult:
        """Forward one call; the dispatcher's timeout bounds it from outside."""
        if handle.stdio is not None:
            session = handle.session
            if session is None:
                return ToolResult.error(f"MCP server {handle.name!r} is not connected")
            return to_tool_result(await session.call_tool(tool, arguments))
        assert handle.path is not None
        token = self.tokens.mint(handle.plugin_id, caller, run_id)
        try:
            async with self._http_session(handle.path, token) as session:
                return to_tool_result(await session.call_tool(tool, arguments))
        finally:
            self.tokens.revoke(token)

    # Tearing down ------------------------------------------------------------------

    def remove_plugin(self, plugin_id: str) -> None:
        """Close a plugin's connections (their subprocesses end); never raises, never waits."""
        self.tokens.forget_plugin(plugin_id)
        self._pending = [p for p in self._pending if p[0] != plugin_id]
        for key in [k for k in self.servers if k[0] == plugin_id]:
            self.discard(self.servers[key])

    def discard(self, handle: McpServerHandle) -> None:
        """Forget one server and close its connection in the background."""
        key = (handle.plugin_id, handle.name)
        if self.servers.get(key) is handle:
            del self.servers[key]
        handle._stop.set()
        if handle._owner is not None and not handle._owner.done():
            task = asyncio.get_running_loop().create_task(self._stop(handle))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _stop(self, handle: McpServerHandle) -> None:
        handle._stop.set()
        owner = handle._owner
        if owner is None:
            return
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.shield(owner)
        except BaseException:
            owner.cancel()
            with contextlib.suppress(BaseException):
                await owner

    async def wait_closed(self) -> None:
        """Wait for connections being closed (e.g. after a disable) to finish."""
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def aclose(self) -> None:
        """Close every connection (host stop)."""
        for plugin_id in {k[0] for k in self.servers}:
            self.remove_plugin(plugin_id)
        await self.wait_closed()


def _remote_tools(listing: Any) -> list[RemoteTool]:
    return [
        RemoteTool(t.name, t.description or "", dict(t.input_schema or {"type": "object"}))
        for t in listing.tools
    ]
