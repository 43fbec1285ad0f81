"""The capability catalogue: every surface a plugin can touch, behind one dotted name.

This table is the single source of truth: the manifest validator, the policy resolver, the
capability membrane and docs/capabilities.md all read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Capability:
    """One named capability.

    `builtin_only` capabilities are granted only to plugins passed in code by the embedding
    program (built-in features); a folder or package plugin that declares one is refused.
    """

    name: str
    surface: str
    grants: str
    builtin_only: bool = False


def _c(name: str, surface: str, grants: str, *, builtin_only: bool = False) -> Capability:
    return Capability(name, surface, grants, builtin_only)


CATALOGUE: tuple[Capability, ...] = (
    _c("tools.register", "tools", "register tools the model can call"),
    _c("tools.execute", "tools", "call another plugin's tool (with the caller's rights)"),
    _c("hooks.model", "hooks", "before/after-model-call, filter-tools, transform-system-prompt"),
    _c("hooks.tools", "hooks", "before-tool-call (may block) and after-tool-call"),
    _c("hooks.input", "hooks", "transform-user-input (pass, transform, intercept)"),
    _c("hooks.run", "hooks", "after-run hooks and run-start/run-end interceptors"),
    _c("commands.register", "commands", "slash commands answered without the model"),
    _c("prompts.contribute", "prompts", "add text to the system prompt"),
    _c("skills.register", "skills", "publish skill folders (SKILL.md) to the agent"),
    _c("agents.strategy", "agents", "register an agent-loop strategy"),
    _c("storage.read", "storage", "read the plugin's own key/value storage"),
    _c("storage.write", "storage", "write the plugin's own key/value storage"),
    _c("db.sql", "db", "own SQL tables in a schema scoped to the plugin, with migrations"),
    _c("http.outbound", "http", "audited outbound HTTP to allowlisted hosts"),
    _c("events.subscribe", "events", "subscribe to notification events"),
    _c("events.emit", "events", "emit events in the plugin's own namespace"),
    _c("scheduler.read", "scheduler", "list the plugin's scheduled jobs"),
    _c("scheduler.write", "scheduler", "schedule and cancel interval and cron jobs"),
    _c("memory.read", "memory", "search users' memories"),
    _c("memory.write", "memory", "create and update users' memories"),
    _c("users.read", "users", "read user profiles and preferences"),
    _c("config.register", "config", "declare per-space config keys with defaults"),
    _c("env.inject", "env", "declared environment variables for permitted callers"),
    _c("secrets.mtls", "secrets", "opaque mTLS client-certificate references"),
    _c("secrets.encrypt", "secrets", "encrypt and decrypt with the host's vault key"),
    _c("routes.register", "routes", "an HTTP router mounted under /plugins/<id>/"),
    _c("routes.absolute", "routes", "mount the router at an absolute prefix (policy-approved)"),
    _c("notifications.register", "notifications", "claim a notification channel kind"),
    _c("notifications.send", "notifications", "send through notification channels"),
    _c("mcp.register", "mcp", "contribute MCP servers whose tools join the registry"),
    _c("mcp.sessions", "mcp", "resolve per-run MCP bearer tokens to the user behind them"),
    _c("providers.register", "providers", "register model providers"),
    _c("channels.register", "channels", "register input channels (chat surfaces)"),
    _c("widgets.register", "widgets", "dashboard widgets (sanitised HTML fragments)"),
    _c("sessions.read", "sessions", "read conversation sessions and their events"),
    _c("sessions.write", "sessions", "create sessions and append to the message bus"),
    _c("tasks.submit", "tasks", "start agent runs on a user's behalf"),
    _c("audit.read", "audit", "read the host's audit log", builtin_only=True),
    _c("plugins.manage", "plugins", "enable, disable, reload other plugins", builtin_only=True),
)

BY_NAME: dict[str, Capability] = {c.name: c for c in CATALOGUE}
ALL_CAPABILITIES: frozenset[str] = frozenset(BY_NAME)
BUILTIN_ONLY: frozenset[str] = frozenset(c.name for c in CATALOGUE if c.builtin_only)

# Grants that together amount to control of the whole host; the operator is warned by
# `tether check` and `tether list` when a plugin holds one of these sets.
ROOT_EQUIVALENT: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"plugins.manage"}), "can enable and reload any plugin, so any code"),
    (frozenset({"mcp.register"}), "a stdio MCP server is a host command of its choosing"),
    (
        frozenset({"hooks.model", "hooks.tools"}),
        "sees and rewrites every prompt, reply, tool call and tool result",
    ),
    (
        frozenset({"providers.register", "tools.execute"}),
        "answers as the model and can drive every tool",
    ),
    (
        frozenset({"routes.register", "routes.absolute"}),
        "can shadow host routes such as the REST API",
    ),
    (
        frozenset({"secrets.encrypt", "db.sql"}),
        "can decrypt every secret stored with the vault key",
    ),
)


def root_equivalent_sets(granted: frozenset[str]) -> list[tuple[frozenset[str], str]]:
    """The root-equivalent combinations fully contained in `granted`."""
    return [(combo, why) for combo, why in ROOT_EQUIVALENT if combo <= granted]


def is_capability(name: str) -> bool:
    """True when `name` is in the catalogue."""
    return name in BY_NAME
