"""`ctx.mcp`: a plugin contributes MCP servers whose tools join the registry, and resolves the
per-run bearer tokens the host sends to its own HTTP MCP server.

Each remote tool becomes `plugin_<id>_<tool>` (the name sanitised), registered like any other
tool, so before/after-tool-call hooks, timeouts, roles and audit apply to it unchanged.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tether.contract.errors import RegistrationError, SchemaError
from tether.contract.types import Caller, ToolInfo, ToolResult
from tether.runtime.dispatch import RegisteredTool
from tether.runtime.registry import full_tool_name
from tether.runtime.schema import compile_validator
from tether.services.mcp_client import McpClients, McpServerHandle, RemoteTool, StdioSpec

if TYPE_CHECKING:
    from tether.runtime.context import Context

_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_CALLER_KEY = "__tether_caller__"  # cannot clash with a JSON argument the remote tool takes


def sanitise_tool_name(name: str) -> str:
    """A remote tool name as a Tether local name: letters, digits, `_`, `-`, leading letter."""
    clean = _UNSAFE.sub("_", name)
    if not clean or not clean[0].isalpha():
        clean = "t_" + clean
    return clean


def check_server_path(url: str) -> str:
    """Accept only an absolute path on this server (`/plugins/<id>/mcp`); refuse the rest."""
    problem = None
    if not isinstance(url, str) or not url.startswith("/"):
        problem = "is not an absolute path starting with /"
    elif url.startswith("//"):
        problem = "is protocol-relative (//host), which would leave this server"
    elif "://" in url or "\\" in url:
        problem = "names another origin"
    elif any(seg in ("..", ".") for seg in url.split("?", 1)[0].split("/")):
        problem = "contains . or .. segments"
    elif any(ch.isspace() or ord(ch) < 32 for ch in url):
        problem = "contains whitespace or control characters"
    if problem is not None:
        raise RegistrationError(
            f"MCP server url {url!r} {problem}; plugins may only name a path on this Tether "
            "server, such as '/plugins/<id>/mcp' (per-run tokens never leave the host)"
        )
    return url


def _permissive(_: Any) -> None:
    return None


class PluginMcp:
    """The plugin's MCP surface (`mcp.register` to add servers, `mcp.sessions` to resolve)."""

    def __init__(self, ctx: Context, clients: McpClients) -> None:
        self._ctx = ctx
        self._clients = clients

    async def register_server(
        self,
        name: str,
        *,
        command: list[str] | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        url: str | None = None,
        timeout_ms: int | None = None,
    ) -> list[ToolInfo]:
        """Connect to an MCP server and register each of its tools as `plugin_<id>_<tool>`.

        stdio: `command=["python", "server.py"]` (plus `args`, `env`, `cwd`); the process is
        spawned now and ended when the plugin is disabled or unloaded. HTTP: `url=` an
        absolute path on this server; the tools are listed now (or, while the server is
        not yet serving, when it starts), and every call opens a session carrying a
        per-run bearer token. Returns the registered tools ([] when deferred).
        """
        ctx = self._ctx
        ctx.require("mcp.register", f"MCP server {name}")
        pid = ctx.plugin_id
        if not isinstance(name, str) or not _SERVER_NAME.match(name):
            raise RegistrationError(
                f"plugin {pid!r}: MCP server name {name!r} must be 1-64 of A-Z a-z 0-9 _ . -"
            )
        if (pid, name) in self._clients.servers:
            raise RegistrationError(f"plugin {pid!r}: MCP server {name!r} is already registered")
        if (command is None) == (url is None):
            raise RegistrationError(
                f"plugin {pid!r}: MCP server {name!r} needs exactly one of command=[...] (stdio) "
                "or url='/plugins/<id>/mcp' (HTTP on this server)"
            )
        handle = McpServerHandle(pid, name)
        if command is not None:
            if not command or not all(isinstance(c, str) and c for c in command):
                raise RegistrationError(
                    f"plugin {pid!r}: MCP server {name!r}: command must be a non-empty list "
                    "of strings, e.g. ['python', 'server.py']"
                )
            handle.stdio = StdioSpec(command[0], [*command[1:], *(args or [])], env, cwd)
        else:
            assert url is not None
            handle.path = check_server_path(url)
        if handle.path is not None and not self._clients.app_attached:
            self._clients.defer(pid, lambda: self._connect(handle, timeout_ms))
            return []
        return await self._connect(handle, timeout_ms)

    async def _connect(self, handle: McpServerHandle, timeout_ms: int | None) -> list[ToolInfo]:
        pid, name = self._ctx.plugin_id, handle.name
        try:
            remote = await (
                self._clients.connect_stdio(handle)
                if handle.stdio is not None
                else self._clients.list_http(handle)
            )
        except RegistrationError:
            raise
        except Exception as exc:
            leaf = _leaf(exc)
            raise RegistrationError(
                f"plugin {pid!r}: could not connect to MCP server {name!r}: "
                f"{type(leaf).__name__}: {leaf}"
            ) from exc
        try:
            return self._register_tools(handle, remote, timeout_ms)
        except BaseException:
            self._forget(handle)
            raise

    def _register_tools(
        self, handle: McpServerHandle, remote: list[RemoteTool], timeout_ms: int | None
    ) -> list[ToolInfo]:
        ctx, pid = self._ctx, self._ctx.plugin_id
        registry = ctx._services.registry
        planned: dict[str, RemoteTool] = {}
        for rt in remote:
            local = sanitise_tool_name(rt.name)
            if local in planned:
                raise RegistrationError(
                    f"plugin {pid!r}: MCP server {handle.name!r} tools {planned[local].name!r} "
                    f"and {rt.name!r} both become {full_tool_name(pid, local)!r}; rename one"
                )
            planned[local] = rt
        limit = ctx._timeout_ms if timeout_ms is None else min(timeout_ms, ctx._timeout_ms)
        added: list[RegisteredTool] = []
        try:
            for local, rt in planned.items():
                tool = self._tool(handle, local, rt, limit / 1000)
                registry.add_tool(tool)
                added.append(tool)
        except BaseException:
            for tool in added:
                registry.remove_tool(tool.name)
            raise
        return [t.info for t in added]

    def _tool(
        self, handle: McpServerHandle, local: str, rt: RemoteTool, timeout_s: float
    ) -> RegisteredTool:
        ctx = self._ctx
        full = full_tool_name(ctx.plugin_id, local)
        try:
            validate = compile_validator(rt.input_schema, where=f"MCP tool {rt.name!r}")
        except SchemaError as exc:
            ctx.log.warning("MCP tool %s: schema not checked here (%s)", rt.name, exc)
            validate = _permissive
        clients, remote_name = self._clients, rt.name

        async def forward(**arguments: Any) -> ToolResult:
            caller: Caller = arguments.pop(_CALLER_KEY)
            return await clients.call(handle, remote_name, arguments, caller, _run_id())

        return RegisteredTool(
            name=full,
            local_name=local,
            plugin_id=ctx.plugin_id,
            description=rt.description or f"{rt.name} (MCP server {handle.name})",
            input_schema=rt.input_schema,
            validate=validate,
            handler=forward,
            is_async=True,
            convert=None,
            injected={},
            caller_param=_CALLER_KEY,
            timeout_s=timeout_s,
            roles=ctx._roles,
        )

    def _forget(self, handle: McpServerHandle) -> None:
        self._clients.discard(handle)

    def servers(self) -> list[str]:
        """Names of this plugin's registered MCP servers."""
        return sorted(n for p, n in self._clients.servers if p == self._ctx.plugin_id)

    def resolve(self, token: str) -> dict[str, Any] | None:
        """`{user_id, roles, run_id}` for a per-run token the host sent this plugin's HTTP MCP
        server (the `Authorization: Bearer` value), else None (unknown, expired, or minted
        for another plugin)."""
        self._ctx.require("mcp.sessions", "resolve MCP token")
        if not isinstance(token, str):
            return None
        token = token.removeprefix("Bearer ").strip()
        return self._clients.tokens.resolve(self._ctx.plugin_id, token)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, for a readable message."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _run_id() -> str | None:
    """The agent run the current tool call belongs to, when the agent loop made it."""
    try:
        from tether.agent.loop import current_run
    except ImportError:  # pragma: no cover - the agent package is part of tether
        return None
    run = current_run()
    return run.run_id if run is not None else None
