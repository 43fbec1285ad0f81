"""What plugins contribute to and reach in the agent loop, kept below the agent layer.

The runtime cannot import the agent (layers import downward), so the agent attaches itself
to the host through `AgentPort`, and plugins' providers and strategies wait in
`AgentRegistry` until an agent is built. The facades check capabilities as every other
surface does: `providers.register`, `agents.strategy`, `sessions.read`, `sessions.write`,
`tasks.submit`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from tether.contract.errors import NameClashError, RegistrationError, TetherError
from tether.contract.types import Caller, Message

if TYPE_CHECKING:
    from tether.runtime.context import Context

BUILTIN_PROVIDERS = frozenset({"openai"})
BUILTIN_STRATEGIES = frozenset({"default"})


class NoAgentError(TetherError):
    """The host has no agent loop attached (embedding without an `Agent`)."""


class AgentPort(Protocol):
    """The agent loop as plugins may reach it."""

    def submit(
        self, prompt: str, *, session_id: str | None, caller: Caller
    ) -> tuple[str, str | None]:
        """Start a run; returns (run id, session id)."""
        ...

    def append_display(self, session_id: str, message: Message) -> None: ...

    def inject_next(self, session_id: str, message: Message) -> None: ...

    def history(self, session_id: str) -> list[Message]: ...

    def session_ids(self) -> list[str]: ...


class AgentRegistry:
    """Providers and strategies registered by plugins, and the attached agent."""

    def __init__(self) -> None:
        self.providers: dict[str, tuple[str, Any]] = {}
        self.strategies: dict[str, tuple[str, Any]] = {}
        self.port: AgentPort | None = None

    def add_provider(self, plugin_id: str, name: str, provider: Any) -> None:
        _check_name(plugin_id, "provider", name, self.providers, BUILTIN_PROVIDERS)
        for method in ("stream", "models", "aclose"):
            if not callable(getattr(provider, method, None)):
                raise RegistrationError(
                    f"plugin {plugin_id!r}: provider {name!r} has no {method}() method; see "
                    "tether.agent.providers.Provider"
                )
        self.providers[name] = (plugin_id, provider)

    def add_strategy(self, plugin_id: str, strategy: Any) -> None:
        name = getattr(strategy, "name", None)
        if not isinstance(name, str) or not callable(getattr(strategy, "run", None)):
            raise RegistrationError(
                f"plugin {plugin_id!r}: a strategy needs a `name` and an async `run(turns)`"
            )
        _check_name(plugin_id, "strategy", name, self.strategies, BUILTIN_STRATEGIES)
        self.strategies[name] = (plugin_id, strategy)

    def remove_plugin(self, plugin_id: str) -> None:
        self.providers = {n: v for n, v in self.providers.items() if v[0] != plugin_id}
        self.strategies = {n: v for n, v in self.strategies.items() if v[0] != plugin_id}

    def require_port(self) -> AgentPort:
        if self.port is None:
            raise NoAgentError(
                "no agent loop runs on this host; start one with `tether serve` or Agent(...)"
            )
        return self.port


def _check_name(
    plugin_id: str, what: str, name: str, taken: dict[str, tuple[str, Any]], builtin: frozenset[str]
) -> None:
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise RegistrationError(
            f"plugin {plugin_id!r}: {what} name {name!r} must be letters, digits, - or _"
        )
    if name in builtin:
        raise NameClashError(
            f"plugin {plugin_id!r}: {what} {name!r} is built in; choose another name"
        )
    if name in taken:
        raise NameClashError(
            f"plugin {plugin_id!r}: {what} {name!r} is already registered by plugin "
            f"{taken[name][0]!r}"
        )


class PluginProviders:
    """`ctx.providers`: register model providers (`providers.register`)."""

    def __init__(self, ctx: Context, registry: AgentRegistry) -> None:
        self._ctx, self._registry = ctx, registry

    def register(self, name: str, provider: Any) -> None:
        self._ctx.require("providers.register", f"provider {name}")
        self._registry.add_provider(self._ctx.plugin_id, name, provider)


class PluginStrategies:
    """`ctx.agents`: register agent-loop strategies (`agents.strategy`)."""

    def __init__(self, ctx: Context, registry: AgentRegistry) -> None:
        self._ctx, self._registry = ctx, registry

    def register_strategy(self, strategy: Any) -> None:
        self._ctx.require("agents.strategy", f"strategy {getattr(strategy, 'name', '?')}")
        self._registry.add_strategy(self._ctx.plugin_id, strategy)


class PluginSessions:
    """`ctx.sessions`: read sessions (`sessions.read`), add to their message bus
    (`sessions.write`)."""

    def __init__(self, ctx: Context, registry: AgentRegistry) -> None:
        self._ctx, self._registry = ctx, registry

    def ids(self) -> list[str]:
        """Ids of every stored session."""
        self._ctx.require("sessions.read", "list sessions")
        return self._registry.require_port().session_ids()

    def history(self, session_id: str) -> list[Message]:
        self._ctx.require("sessions.read", f"read session {session_id}")
        return self._registry.require_port().history(session_id)

    def append(self, session_id: str, message: Message) -> None:
        """A display-only message: shown to people, never sent to the model."""
        self._ctx.require("sessions.write", f"append to session {session_id}")
        self._registry.require_port().append_display(session_id, message)

    def inject_next(self, session_id: str, message: Message) -> None:
        """A message that travels with the session's next user turn."""
        self._ctx.require("sessions.write", f"inject into session {session_id}")
        self._registry.require_port().inject_next(session_id, message)


class PluginTasks:
    """`ctx.tasks`: start agent runs on a user's behalf (`tasks.submit`)."""

    def __init__(self, ctx: Context, registry: AgentRegistry) -> None:
        self._ctx, self._registry = ctx, registry

    def submit(
        self, prompt: str, *, caller: Caller, session_id: str | None = None
    ) -> tuple[str, str | None]:
        """Start a run as `caller` (whose roles decide the tools); returns (run id, session id)."""
        self._ctx.require("tasks.submit", "submit a run")
        return self._registry.require_port().submit(prompt, session_id=session_id, caller=caller)
