"""Errors Tether raises, each with a machine-readable reason where a plugin is refused.

Every error message names what went wrong, where (plugin, field) and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RefusalReason(StrEnum):
    """Why a plugin was not loaded; stable strings for tools and dashboards to key on."""

    INVALID_MANIFEST = "invalid_manifest"
    NOT_APPROVED = "not_approved"
    DISABLED = "disabled"
    CAPABILITY_NOT_GRANTED = "capability_not_granted"
    BUILTIN_ONLY = "builtin_only"
    POLICY_VIOLATION = "policy_violation"
    DIGEST_DRIFT = "digest_drift"
    VERSION_DRIFT = "version_drift"
    CAPABILITY_DRIFT = "capability_drift"
    OUTBOUND_DRIFT = "outbound_drift"
    SYMLINK = "symlink"
    INCOMPATIBLE_API_VERSION = "incompatible_api_version"
    HOST_TOO_OLD = "host_too_old"
    DEPENDENCY_MISSING = "dependency_missing"
    DEPENDENCY_FAILED = "dependency_failed"
    DEPENDENCY_CYCLE = "dependency_cycle"
    DUPLICATE_ID = "duplicate_id"
    IMPORT_FAILED = "import_failed"
    ACTIVATION_FAILED = "activation_failed"
    NAME_CLASH = "name_clash"
    INVALID_CONFIG = "invalid_config"


class TetherError(Exception):
    """Base class of every error Tether raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem with a plugin folder or the policy: `<where>: <field>: <message>`."""

    where: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.message}"


class ManifestError(TetherError):
    """A manifest (or policy) failed validation; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PolicyError(ManifestError):
    """The operator's `tether.toml` is malformed."""


class PluginRefusedError(TetherError):
    """A plugin was refused before or while loading; `reason` is machine-readable."""

    def __init__(self, plugin_id: str, reason: RefusalReason, message: str) -> None:
        self.plugin_id = plugin_id
        self.reason = reason
        self.message = message
        super().__init__(f"plugin {plugin_id!r} refused ({reason.value}): {message}")


class PolicyViolationError(PluginRefusedError):
    """A plugin asked for something the operator's policy forbids."""

    def __init__(self, plugin_id: str, message: str) -> None:
        super().__init__(plugin_id, RefusalReason.POLICY_VIOLATION, message)


class CapabilityViolationError(TetherError):
    """A plugin touched a surface outside its effective grant."""

    def __init__(self, plugin_id: str, capability: str, action: str = "") -> None:
        self.plugin_id = plugin_id
        self.capability = capability
        self.action = action
        what = f" ({action})" if action else ""
        super().__init__(
            f"plugin {plugin_id!r} used {capability!r}{what} without that capability; "
            f"declare it in the manifest's capabilities and grant it in tether.toml "
            f"under [plugins.{plugin_id}] grant"
        )


class OutboundHostViolationError(CapabilityViolationError):
    """A plugin tried to reach a host outside its outbound allowlist."""

    def __init__(self, plugin_id: str, host: str) -> None:
        self.host = host
        TetherError.__init__(
            self,
            f"plugin {plugin_id!r} may not reach host {host!r}: it is not in both the "
            f"manifest's outbound_hosts and [plugins.{plugin_id}] outbound_hosts",
        )
        self.plugin_id = plugin_id
        self.capability = "http.outbound"
        self.action = host


class DbScopeViolationError(CapabilityViolationError):
    """SQL through a plugin's `ctx.db` touched something outside the plugin's own tables."""

    def __init__(self, plugin_id: str, detail: str) -> None:
        prefix = plugin_id.replace("-", "_") + "_"
        TetherError.__init__(
            self,
            f"plugin {plugin_id!r}: SQL refused ({detail}): a plugin's SQL may only use its own "
            f"tables, named '{prefix}...', without ATTACH, writing PRAGMAs or transaction "
            "control; rename the table or use ctx.storage for shared data",
        )
        self.plugin_id = plugin_id
        self.capability = "db.sql"
        self.action = detail


class SchemaError(TetherError):
    """A tool's JSON Schema is unusable (remote $ref, too large, dangerous pattern...)."""


class ToolError(TetherError):
    """Base for errors while dispatching a tool call."""


class UnknownToolError(ToolError):
    """No tool by that name is registered (or visible to the caller)."""


class ToolInputError(ToolError):
    """The arguments did not match the tool's input schema."""


class RegistrationError(TetherError):
    """A plugin registered something invalid (tool name, command, hook)."""


class NameClashError(RegistrationError):
    """A plugin registered a name another registration already holds; the later one fails."""


class EgressBlockedError(TetherError):
    """Outbound HTTP refused by the egress rules (scheme, allowlist, address, redirects,
    size); `reason` says which rule and what to change."""

    def __init__(self, plugin_id: str, url: str, reason: str) -> None:
        self.plugin_id = plugin_id
        self.url = url
        self.reason = reason
        super().__init__(f"plugin {plugin_id!r}: request to {url} blocked: {reason}")


class QuotaExceededError(TetherError):
    """A storage write would take a plugin past `storage_bytes` or `storage_keys`."""

    def __init__(self, plugin_id: str, quota: str, limit: int, usage: int, needed: int) -> None:
        self.plugin_id = plugin_id
        self.quota = quota  # "storage_bytes" or "storage_keys"
        self.limit = limit
        self.usage = usage
        self.needed = needed  # what usage would be after the write
        unit = "bytes" if quota == "storage_bytes" else "keys"
        super().__init__(
            f"plugin {plugin_id!r} is over its storage quota {quota}: the limit is {limit:,} "
            f"{unit}, {usage:,} are in use and this write would make {needed:,}; delete data "
            f"or raise [plugins.{plugin_id}.limits] {quota} in tether.toml"
        )


class RateLimitedError(TetherError):
    """A plugin used host services (storage, http, ...) faster than `ops_per_minute`."""

    def __init__(self, plugin_id: str, limit: int, retry_after: float, operation: str = "") -> None:
        self.plugin_id = plugin_id
        self.limit = limit
        self.retry_after = retry_after  # seconds until the operation would be allowed
        self.operation = operation
        what = f" ({operation})" if operation else ""
        super().__init__(
            f"plugin {plugin_id!r} is over its rate limit of {limit:,} service operations per "
            f"minute{what}; retry in {retry_after:.3g} s, or raise "
            f"[plugins.{plugin_id}.limits] ops_per_minute in tether.toml"
        )
