"""The capability membrane: the only object through which a plugin reaches the host.

Every surface checks the plugin's effective grant on use; touching an ungranted one raises
`CapabilityViolationError` naming the capability and writes an audit record. In-process
this is hygiene against honest mistakes, not a sandbox (see docs/tiers.md).
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tether.contract.errors import CapabilityViolationError, RegistrationError
from tether.contract.events import (
    HOST_NAMESPACES,
    INTERCEPTOR_EVENTS,
    NOTIFICATION_EVENTS,
    is_known_event,
    plugin_may_emit,
)
from tether.contract.manifest import Manifest
from tether.contract.policy import PluginPolicy, Resolution
from tether.contract.types import Caller, ToolInfo, ToolResult
from tether.contract.validation import did_you_mean
from tether.runtime.agent_port import (
    AgentRegistry,
    PluginProviders,
    PluginSessions,
    PluginStrategies,
    PluginTasks,
)
from tether.runtime.dispatch import RegisteredTool, is_trusted
from tether.runtime.facades_data import (
    DataServices,
    PluginConfigKeys,
    PluginDb,
    PluginMemory,
    PluginUsers,
)
from tether.runtime.facades_jobs import PluginNotifications, PluginScheduler
from tether.runtime.facades_routes import PluginRoutes
from tether.runtime.http_facade import PluginHttp, PluginSecrets
from tether.runtime.mcp_facade import PluginMcp
from tether.runtime.registry import Registry, full_tool_name
from tether.runtime.schema import compile_validator, derive_tool_signature
from tether.runtime.widgets import PluginWidgets, WidgetRegistry
from tether.services.audit import AuditLog
from tether.services.calls import is_async_callable
from tether.services.egress import EgressService
from tether.services.events import EventBus, Subscription
from tether.services.mcp_client import McpClients
from tether.services.notify import NotificationBus
from tether.services.ratelimit import RateLimiter
from tether.services.scheduler import Scheduler
from tether.services.storage import Scope, StorageBackend, StorageUsage

ToolExecutor = Callable[[str, dict[str, Any], Caller], Awaitable[ToolResult]]

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_KEY_CHARS = 512


@dataclass(slots=True)
class HostServices:
    """What the host hands every context; each service knows nothing of plugins but ids."""

    registry: Registry
    events: EventBus
    scheduler: Scheduler
    notifications: NotificationBus
    audit: AuditLog
    storage: StorageBackend
    ratelimit: RateLimiter
    egress: EgressService
    execute_tool: ToolExecutor
    data: DataServices | None = None
    """Config keys, secrets, scoped SQL, memory and users (runtime/facades_data.py)."""
    agents: AgentRegistry = field(default_factory=AgentRegistry)
    """Plugins' providers and strategies, and the attached agent loop (runtime/agent_port.py)."""
    mcp: McpClients = field(default_factory=McpClients)
    """Plugins' MCP server connections and per-run MCP tokens (services/mcp_client.py)."""
    widgets: WidgetRegistry = field(default_factory=WidgetRegistry)
    """Plugins' dashboard widgets (runtime/widgets.py)."""


class Context:
    """A plugin's view of the host. Attributes: `plugin_id`, `manifest`, `config`, `log`,
    `storage`, `events`, `tools`; methods to register hooks, commands and prompts."""

    def __init__(
        self,
        manifest: Manifest,
        granted: frozenset[str],
        services: HostServices,
        *,
        config: dict[str, Any] | None = None,
        timeout_ms: int = 30_000,
        roles: tuple[str, ...] | None = None,
        policy_entry: PluginPolicy | None = None,
        resolution: Resolution | None = None,
    ) -> None:
        self.plugin_id = manifest.id
        self.manifest = manifest
        self.granted = granted
        # A dict, or the plugin's config model instance when it declared one.
        self.config: Any = dict(config or {})
        self.log = logging.getLogger(f"tether.plugin.{manifest.id}")
        self._services = services
        self._timeout_ms = timeout_ms
        self._roles = frozenset(roles) if roles is not None else None
        self.storage = PluginStorage(self)
        self.events = PluginEvents(self)
        self.tools = PluginTools(self)
        self.scheduler = PluginScheduler(self)
        self.notifications = PluginNotifications(self)
        self.config_keys = PluginConfigKeys(self)
        self.db = PluginDb(self)
        self.memory = PluginMemory(self)
        self.users = PluginUsers(self)
        self.secrets = PluginSecrets(self)
        # The operator's entry and the resolved grant, for services with per-plugin settings.
        self.policy_entry = policy_entry
        self.resolution = resolution
        self.http = PluginHttp(self)
        self.providers = PluginProviders(self, services.agents)
        self.agents = PluginStrategies(self, services.agents)
        self.sessions = PluginSessions(self, services.agents)
        self.tasks = PluginTasks(self, services.agents)
        self.mcp = PluginMcp(self, services.mcp)
        self.widgets = PluginWidgets(self)
        self.routes = PluginRoutes(self)

    def require(self, capability: str, action: str = "") -> None:
        """Raise (and audit) unless `capability` is granted."""
        if capability not in self.granted:
            self._services.audit.record(
                self.plugin_id,
                "capability_violation",
                f"used {capability} without a grant",
                capability=capability,
                action=action,
            )
            raise CapabilityViolationError(self.plugin_id, capability, action)

    def has(self, capability: str) -> bool:
        """True when `capability` is granted (for plugins that degrade gracefully)."""
        return capability in self.granted

    def _spend(self, operation: str) -> None:
        """Charge one service operation (storage, http, ...) to the plugin's rate limit;
        raises RateLimitedError. Facades call it per operation, never for registrations."""
        self._services.ratelimit.spend(self.plugin_id, operation)

    # Registration surfaces -----------------------------------------------------------

    def register_hook(self, name: str, fn: Callable[..., Any]) -> None:
        """Add a model-loop hook (`before_tool_call`, `filter_tools`, ...)."""
        self.require(HOOK_CAPABILITY.get(name, "hooks.model"), f"hook {name}")
        self._services.registry.add_hook(self.plugin_id, name, fn)

    def register_command(self, name: str, fn: Callable[..., Any], description: str = "") -> None:
        """Add a slash command `/name`; the handler gets the text after the name."""
        self.require("commands.register", f"command /{name}")
        self._services.registry.add_command(self.plugin_id, name, fn, description)

    def add_system_prompt(self, text_or_fn: str | Callable[..., Any]) -> None:
        """Contribute system-prompt text (or a function returning it, called per run)."""
        self.require("prompts.contribute", "system prompt")
        self._services.registry.add_prompt(self.plugin_id, text_or_fn)

    def add_skill(self, path: str) -> None:
        """Publish a skill folder, relative to the plugin folder."""
        self.require("skills.register", f"skill {path}")
        self._services.registry.add_skill(self.plugin_id, path)


HOOK_CAPABILITY: dict[str, str] = {
    "before_model_call": "hooks.model",
    "after_model_call": "hooks.model",
    "filter_tools": "hooks.model",
    "transform_system_prompt": "hooks.model",
    "before_tool_call": "hooks.tools",
    "after_tool_call": "hooks.tools",
    "transform_user_input": "hooks.input",
    "after_run": "hooks.run",
}


class PluginStorage:
    """The plugin's key/value store: `scope="plugin"` (shared) or `"user"` (per user id)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def _address(self, scope: Scope, user: str | None, namespace: str) -> tuple[Scope, str, str]:
        if scope not in ("plugin", "user"):
            raise ValueError(f'storage scope must be "plugin" or "user", not {scope!r}')
        if scope == "user":
            if not isinstance(user, str) or not user or "\x00" in user or len(user) > 256:
                raise ValueError(
                    "user-scoped storage needs user=<the user id> (1-256 chars, no NUL)"
                )
        elif user is not None:
            raise ValueError('user= applies only to scope="user"')
        if not _NAMESPACE.match(namespace):
            raise ValueError(f"storage namespace {namespace!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        return scope, user or "", namespace

    @staticmethod
    def _key(key: str) -> str:
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS or "\x00" in key:
            raise ValueError(f"storage keys are 1-{MAX_KEY_CHARS} characters of text without NUL")
        return key

    async def get(
        self,
        key: str,
        *,
        scope: Scope = "plugin",
        user: str | None = None,
        namespace: str = "default",
    ) -> Any | None:
        self._ctx.require("storage.read", "storage.get")
        self._ctx._spend("storage.get")
        s, u, ns = self._address(scope, user, namespace)
        st = self._ctx._services.storage
        return await st.aget(self._ctx.plugin_id, s, u, ns, self._key(key))

    async def set(
        self,
        key: str,
        value: Any,
        *,
        scope: Scope = "plugin",
        user: str | None = None,
        namespace: str = "default",
    ) -> None:
        self._ctx.require("storage.write", "storage.set")
        self._ctx._spend("storage.set")
        s, u, ns = self._address(scope, user, namespace)
        st = self._ctx._services.storage
        await st.aset(self._ctx.plugin_id, s, u, ns, self._key(key), value)

    async def delete(
        self,
        key: str,
        *,
        scope: Scope = "plugin",
        user: str | None = None,
        namespace: str = "default",
    ) -> bool:
        self._ctx.require("storage.write", "storage.delete")
        self._ctx._spend("storage.delete")
        s, u, ns = self._address(scope, user, namespace)
        st = self._ctx._services.storage
        return await st.adelete(self._ctx.plugin_id, s, u, ns, self._key(key))

    async def list(
        self,
        prefix: str = "",
        *,
        scope: Scope = "plugin",
        user: str | None = None,
        namespace: str = "default",
    ) -> list[str]:
        self._ctx.require("storage.read", "storage.list")
        self._ctx._spend("storage.list")
        s, u, ns = self._address(scope, user, namespace)
        st = self._ctx._services.storage
        return await st.alist(self._ctx.plugin_id, s, u, ns, prefix)

    async def clear(
        self, *, scope: Scope = "plugin", user: str | None = None, namespace: str = "default"
    ) -> int:
        self._ctx.require("storage.write", "storage.clear")
        self._ctx._spend("storage.clear")
        s, u, ns = self._address(scope, user, namespace)
        st = self._ctx._services.storage
        return await st.aclear(self._ctx.plugin_id, s, u, ns)

    async def usage(self) -> StorageUsage:
        """Keys and bytes the plugin holds (all scopes, users, namespaces) and its quotas."""
        self._ctx.require("storage.read", "storage.usage")
        self._ctx._spend("storage.usage")
        return await self._ctx._services.storage.ausage(self._ctx.plugin_id)


class PluginEvents:
    """Subscribe to host and plugin events; emit into the plugin's own namespace."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def on(self, event: str, handler: Callable[..., Any]) -> Subscription:
        """Subscribe `handler` (sync or async) to `event`."""
        if event in INTERCEPTOR_EVENTS:
            self._ctx.require("hooks.run", f"interceptor {event}")
        else:
            self._ctx.require("events.subscribe", f"subscribe {event}")
            if event not in NOTIFICATION_EVENTS and (
                event.split(".", 1)[0] in HOST_NAMESPACES or not is_known_event(event)
            ):
                hint = did_you_mean(event, [*NOTIFICATION_EVENTS, *INTERCEPTOR_EVENTS])
                raise RegistrationError(
                    f"plugin {self._ctx.plugin_id!r}: unknown event {event!r}{hint}; see "
                    "docs/events.md, or name another plugin's event as '<plugin-id>.<name>'"
                )
        if not callable(handler):
            raise RegistrationError(
                f"plugin {self._ctx.plugin_id!r}: handler for {event!r} is not callable"
            )
        return self._ctx._services.events.subscribe(event, self._ctx.plugin_id, handler)

    def off(self, subscription: Subscription) -> None:
        self._ctx._services.events.unsubscribe(subscription)

    def emit(self, event: str, data: dict[str, Any] | None = None) -> int:
        """Emit `<plugin-id>.<name>` to subscribers without waiting for them."""
        self._ctx.require("events.emit", f"emit {event}")
        if not plugin_may_emit(self._ctx.plugin_id, event):
            raise CapabilityViolationError(
                self._ctx.plugin_id,
                "events.emit",
                f"{event!r} is outside '{self._ctx.plugin_id}.*'",
            )
        return self._ctx._services.events.emit(event, data, source=self._ctx.plugin_id)


class PluginTools:
    """Register the plugin's tools and call other plugins' tools."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def register(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        input_schema: dict[str, Any] | None = None,
        timeout_ms: int | None = None,
    ) -> ToolInfo:
        """Register `fn` as the tool `plugin_{id}_{name}`; returns how the model sees it."""
        ctx = self._ctx
        ctx.require("tools.register", f"tool {name or getattr(fn, '__name__', '?')}")
        pid = ctx.plugin_id
        local: str = name or str(getattr(fn, "__name__", ""))
        full = full_tool_name(pid, local)
        sig = derive_tool_signature(
            fn, name=local, description=description, injectable=(Context, Caller)
        )
        schema = input_schema if input_schema is not None else sig.input_schema
        validate = compile_validator(schema, where=f"plugin {pid!r} tool {local!r}")
        injected = {p: ctx for p, t in sig.injected.items() if issubclass(t, Context)}
        caller_param = next((p for p, t in sig.injected.items() if issubclass(t, Caller)), None)
        limit = ctx._timeout_ms if timeout_ms is None else min(timeout_ms, ctx._timeout_ms)
        desc = sig.description or (inspect.getdoc(fn) or "").strip()
        tool = RegisteredTool(
            name=full,
            local_name=local,
            plugin_id=pid,
            description=desc,
            input_schema=schema,
            validate=validate,
            handler=fn,
            is_async=is_async_callable(fn),
            trusted=is_trusted(fn),
            convert=sig.convert if input_schema is None else None,
            injected=injected,
            caller_param=caller_param,
            timeout_s=limit / 1000,
            roles=ctx._roles,
        )
        ctx._services.registry.add_tool(tool)
        return tool.info

    def unregister(self, name: str) -> bool:
        """Remove one of this plugin's own tools by its short name."""
        self._ctx.require("tools.register", f"unregister {name}")
        full = full_tool_name(self._ctx.plugin_id, name)
        return self._ctx._services.registry.remove_tool(full)

    async def execute(
        self, name: str, arguments: dict[str, Any], *, caller: Caller | None = None
    ) -> ToolResult:
        """Call any visible tool by its full name, with the given caller's rights."""
        self._ctx.require("tools.execute", f"execute {name}")
        who = caller or Caller(f"plugin:{self._ctx.plugin_id}")
        return await self._ctx._services.execute_tool(name, arguments, who)
