"""The plugin's context inside a worker: stubs of the host services it was granted.

Every call is an RPC to the host, which performs it through the plugin's real `Context`
(and checks the capability again there). A surface the plugin was not granted raises
`CapabilityViolationError` here, before anything is sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tether.contract.errors import CapabilityViolationError

Rpc = Callable[[str, list[Any], dict[str, Any]], Awaitable[Any]]
Notify = Callable[[str, list[Any], dict[str, Any]], None]

# Surfaces of the in-process Context that have no stub at this tier, by capability surface.
_UNAVAILABLE = {
    "db": "db.sql",
    "memory": "memory.read",
    "users": "users.read",
    "scheduler": "scheduler.write",
    "secrets": "secrets.encrypt",
    "providers": "providers.register",
    "agents": "agents.strategy",
    "sessions": "sessions.read",
    "tasks": "tasks.submit",
    "mcp": "mcp.register",
    "widgets": "widgets.register",
    "routes": "routes.register",
}


class _Surface:
    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx

    def _require(self, capability: str, action: str) -> None:
        self._ctx.require(capability, action)


class WorkerStorage(_Surface):
    """`ctx.storage`: the plugin's key/value storage, kept by the host."""

    async def get(self, key: str, **kw: Any) -> Any:
        self._require("storage.read", "storage.get")
        return await self._ctx._rpc("storage.get", [key], kw)

    async def set(self, key: str, value: Any, **kw: Any) -> None:
        self._require("storage.write", "storage.set")
        await self._ctx._rpc("storage.set", [key, value], kw)

    async def delete(self, key: str, **kw: Any) -> Any:
        self._require("storage.write", "storage.delete")
        return await self._ctx._rpc("storage.delete", [key], kw)

    async def list(self, prefix: str = "", **kw: Any) -> Any:
        self._require("storage.read", "storage.list")
        return await self._ctx._rpc("storage.list", [prefix], kw)

    async def clear(self, **kw: Any) -> Any:
        self._require("storage.write", "storage.clear")
        return await self._ctx._rpc("storage.clear", [], kw)


class WorkerEvents(_Surface):
    """`ctx.events.emit`: events go out through the host's bus (delivery is asynchronous, so
    `emit` returns 0 rather than the number of subscribers)."""

    def emit(self, event: str, data: dict[str, Any] | None = None) -> int:
        self._require("events.emit", f"emit {event}")
        self._ctx._notify("events.emit", [event, data], {})
        return 0


class WorkerTools(_Surface):
    """`ctx.tools.execute`: call another tool through the host, with the host's checks."""

    async def execute(self, name: str, arguments: dict[str, Any], **kw: Any) -> Any:
        self._require("tools.execute", f"execute {name}")
        return await self._ctx._rpc("tools.execute", [name, arguments], kw)


class WorkerNotifications(_Surface):
    """`ctx.notifications.send`: send through any claimed channel kind, via the host's bus.
    Claim a kind with `@plugin.channel` (declared, so the host registers it at activation)."""

    async def send(
        self, kind: str, recipient: str, text: str, metadata: dict[str, Any] | None = None
    ) -> Any:
        self._require("notifications.send", f"send {kind}")
        return await self._ctx._rpc("notifications.send", [kind, recipient, text, metadata], {})

    def register(self, kind: str, handler: Any) -> None:
        raise RuntimeError(
            f"ctx.notifications.register({kind!r}) is not available at the subprocess tier; "
            "declare the channel with @plugin.channel instead"
        )

    def kinds(self) -> list[str]:
        raise RuntimeError(
            "ctx.notifications.kinds() is not available at the subprocess tier; send and "
            "read the result's message, which lists the known kinds"
        )


class WorkerConfigKeys(_Surface):
    """`ctx.config_keys`: the plugin's per-scope keys, kept by the host. Declare keys with
    `@plugin.config_key` (their validators run here, called by the host)."""

    async def get(self, key: str, *, scope: str = "global") -> str | None:
        self._require("config.register", f"config.get {key}")
        value = await self._ctx._rpc("config_keys.get", [key], {"scope": scope})
        return None if value is None else str(value)

    async def set(self, key: str, value: str, *, scope: str = "global") -> None:
        self._require("config.register", f"config.set {key}")
        await self._ctx._rpc("config_keys.set", [key, value], {"scope": scope})

    async def unset(self, key: str, *, scope: str = "global") -> bool:
        self._require("config.register", f"config.unset {key}")
        return bool(await self._ctx._rpc("config_keys.unset", [key], {"scope": scope}))

    async def list(self, *, scope: str | None = None) -> list[Any]:
        from tether.services.config_keys import ConfigEntry

        self._require("config.register", "config.list")
        rows = await self._ctx._rpc("config_keys.list", [], {"scope": scope})
        return [ConfigEntry(**row) for row in rows]

    def register(self, key: str, **kw: Any) -> None:
        raise RuntimeError(
            f"ctx.config_keys.register({key!r}) is not available at the subprocess tier; "
            "declare the key with @plugin.config_key instead"
        )


class WorkerResponse:
    """A response from `ctx.http`: `status`, `headers`, `content`, `url`, `ok`, `text`."""

    def __init__(self, status: int, headers: dict[str, str], content: bytes, url: str) -> None:
        self.status, self.headers, self.content, self.url = status, headers, content, url

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class WorkerHttp(_Surface):
    """`ctx.http`: the worker's only way out — the host's audited, allowlisted egress."""

    async def request(self, method: str, url: str, **kw: Any) -> WorkerResponse:
        self._require("http.outbound", f"http {method.upper()[:16]}")
        r = await self._ctx._rpc("http.request", [method, url], kw)
        return WorkerResponse(r["status"], r["headers"], r["content"], r["url"])

    async def get(self, url: str, **kw: Any) -> WorkerResponse:
        return await self.request("GET", url, **kw)

    async def post(self, url: str, **kw: Any) -> WorkerResponse:
        return await self.request("POST", url, **kw)


class WorkerContext:
    """What a plugin's `ctx` is inside its worker process."""

    def __init__(
        self,
        plugin_id: str,
        granted: frozenset[str],
        config: dict[str, Any],
        rpc: Rpc,
        notify: Notify,
    ) -> None:
        self.plugin_id = plugin_id
        self.granted = granted
        self.config: Any = config  # the validated model instance when it declares one
        self.log = logging.getLogger(f"tether.plugin.{plugin_id}")
        self._rpc = rpc
        self._notify = notify
        self.storage = WorkerStorage(self)
        self.events = WorkerEvents(self)
        self.tools = WorkerTools(self)
        self.http = WorkerHttp(self)
        self.notifications = WorkerNotifications(self)
        self.config_keys = WorkerConfigKeys(self)

    def has(self, capability: str) -> bool:
        """True when the capability is granted."""
        return capability in self.granted

    def require(self, capability: str, action: str = "") -> None:
        """Raise CapabilityViolationError unless the capability is granted; the host audits
        the refusal as it does in-process."""
        if capability not in self.granted:
            self._notify("capability.refused", [capability, action], {})
            raise CapabilityViolationError(self.plugin_id, capability, action)

    def __getattr__(self, name: str) -> Any:
        capability = _UNAVAILABLE.get(name)
        if capability is None:
            raise AttributeError(name)
        self.require(capability, f"ctx.{name}")
        raise RuntimeError(
            f"ctx.{name} is not available at the subprocess tier; run the plugin in-process "
            "or use ctx.storage, ctx.events, ctx.tools, ctx.http, ctx.notifications or "
            "ctx.config_keys"
        )
