"""Operator policy (`tether.toml`) and the resolution of what each plugin actually gets.

Effective grant = what the manifest declares ∩ what the policy grants. A plugin with no
policy entry gets nothing: it is not imported, and the refusal carries the lines to add.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tether.contract.capabilities import BUILTIN_ONLY
from tether.contract.errors import PolicyError, Problem, RefusalReason
from tether.contract.hosts import HostAllowlist, HostPatternError, normalize_host_pattern
from tether.contract.manifest import (
    TIER_STRICTNESS,
    Manifest,
    Tier,
    check_capability_name,
    check_plugin_id,
    check_route_prefix,
)
from tether.contract.validation import parse_document, problems_from_validation
from tether.contract.versions import API_VERSION, api_compatible, host_satisfies, parse_semver

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
DEFAULT_TIMEOUT_MS = 30_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class HostSettings(_Strict):
    """The `[host]` table."""

    plugin_dirs: tuple[str, ...] = ("plugins",)
    data_dir: str = ".tether"
    storage_backend: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    master_key_file: str | None = None
    """AES-256-GCM master key for plugin secrets; `$TETHER_MASTER_KEY` wins when set."""
    entry_points: bool = True
    watchdog_ms: int = Field(default=500, ge=20, le=60_000)
    max_result_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    teardown_timeout_ms: int = Field(default=5_000, ge=10, le=120_000)

    @field_validator("plugin_dirs", mode="before")
    @classmethod
    def _tuple(cls, v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v


class PolicyLimits(_Strict):
    """`[plugins.<id>.limits]`: caps on what a plugin may ask for."""

    timeout_ms: int = Field(default=DEFAULT_TIMEOUT_MS, ge=1, le=600_000)
    memory_max_pages: int = Field(default=1024, ge=1, le=65_536)
    memory_mb: int = Field(default=512, ge=16, le=65_536)
    cpu_seconds: int | None = Field(default=None, ge=1)
    open_files: int | None = Field(default=None, ge=16)
    storage_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    storage_keys: int = Field(default=1000, ge=0)
    http_timeout_ms: int = Field(default=10_000, ge=1, le=30_000)
    http_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1, le=5 * 1024 * 1024)
    ops_per_minute: int = Field(default=6000, ge=1)
    """Token-bucket rate of service operations (storage, http, ...); bursts up to this many."""


class MtlsFiles(_Strict):
    """Operator-provisioned client certificate files (paths relative to tether.toml)."""

    cert: str
    key: str


class PluginPolicy(_Strict):
    """`[plugins.<id>]`: what the operator approves for one plugin."""

    enabled: bool = True
    grant: tuple[str, ...] = ()
    outbound_hosts: tuple[str, ...] = ()
    tier: Tier | None = None
    strict: bool = False
    roles: tuple[str, ...] | None = None
    route_prefix: str | None = None
    version: str | None = None
    digest: str | None = None
    config: dict[str, Any] = {}
    limits: PolicyLimits = PolicyLimits()
    private_hosts: tuple[str, ...] = ()
    """Private addresses or CIDRs this plugin may reach (an intranet API); none by default."""
    mtls: dict[str, MtlsFiles] = {}
    """Client certificates by the logical names the manifest's `mtls_secrets` declared."""

    @field_validator("private_hosts")
    @classmethod
    def _private(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=True)
            except ValueError:
                raise ValueError(
                    f"{item!r} must be an IP address or a CIDR like 10.0.0.0/24"
                ) from None
        return v

    @field_validator("grant", "outbound_hosts", "roles", "private_hosts", mode="before")
    @classmethod
    def _tuple(cls, v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v

    @field_validator("grant")
    @classmethod
    def _grant(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            check_capability_name(name)
        return v

    @field_validator("outbound_hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return tuple(normalize_host_pattern(p) for p in v)
        except HostPatternError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("route_prefix")
    @classmethod
    def _route(cls, v: str | None) -> str | None:
        return None if v is None else check_route_prefix(v)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and parse_semver(v) is None:
            raise ValueError(f"{v!r} is not a semantic version; pin an exact version like 1.0.0")
        return v

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        if v is not None and not _DIGEST.fullmatch(v):
            raise ValueError(
                f"{v!r} must be 'sha256:' and 64 lowercase hex digits; copy it from `tether check`"
            )
        return v


class AgentSettings(_Strict):
    """`[agent]`: the provider, model and limits of agent runs.

    `$TETHER_BASE_URL`, `$TETHER_MODEL` and `$TETHER_API_KEY` override the file; the API key
    is otherwise read from the variable named by `api_key_env`, never from the file.
    """

    provider: str = "openai"
    base_url: str = "http://127.0.0.1:11434/v1"
    model: str = "llama3.2"
    api_key_env: str = "OPENAI_API_KEY"
    system_prompt: str = ""
    strategy: str = "default"
    max_turns: int = Field(default=20, ge=1, le=1000)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    token_budget: int | None = Field(default=None, ge=1)
    cost_budget: float | None = Field(default=None, gt=0)
    prompt_price: float = Field(default=0.0, ge=0)
    completion_price: float = Field(default=0.0, ge=0)
    timeout_s: float | None = Field(default=None, gt=0)
    idle_timeout_s: float = Field(default=60.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} must be an http(s) URL like http://127.0.0.1:11434/v1")
        return v


class Policy(_Strict):
    """The whole of `tether.toml`."""

    host: HostSettings = HostSettings()
    agent: AgentSettings = AgentSettings()
    plugins: dict[str, PluginPolicy] = {}

    @field_validator("plugins")
    @classmethod
    def _ids(cls, v: dict[str, PluginPolicy]) -> dict[str, PluginPolicy]:
        for pid in v:
            check_plugin_id(pid)
        return v


POLICY_KEYS: dict[str, tuple[str, ...]] = {
    "": tuple(Policy.model_fields),
    "host": tuple(HostSettings.model_fields),
    "agent": tuple(AgentSettings.model_fields),
}


def policy_from_dict(doc: dict[str, Any], where: str = "tether.toml") -> Policy:
    """Validate a parsed `tether.toml`; raises `PolicyError` listing every problem."""
    try:
        return Policy.model_validate(doc)
    except ValidationError as exc:
        allowed = dict(POLICY_KEYS)
        for pid in doc.get("plugins", {}) if isinstance(doc.get("plugins"), dict) else ():
            allowed[f"plugins.{pid}"] = tuple(PluginPolicy.model_fields)
            allowed[f"plugins.{pid}.limits"] = tuple(PolicyLimits.model_fields)
        raise PolicyError(problems_from_validation(exc, where, allowed, {})) from None


def parse_policy(data: bytes, where: str = "tether.toml") -> Policy:
    """Parse and validate the bytes of a `tether.toml`."""
    try:
        doc = parse_document(data, "toml", "tether.toml")
    except ValueError as exc:
        raise PolicyError([Problem(where, "(file)", str(exc))]) from None
    return policy_from_dict(doc, where)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one plugin gets: its grant, tier, limits and allowlist, or why it is refused."""

    granted: frozenset[str]
    denied: frozenset[str]
    tier: Tier
    timeout_ms: int
    memory_max_pages: int
    memory_mb: int
    outbound_hosts: tuple[str, ...]
    roles: tuple[str, ...] | None
    route_prefix: str | None
    refusal: tuple[RefusalReason, str] | None = None


def approval_lines(manifest: Manifest, digest: str | None = None) -> str:
    """The `tether.toml` lines that would approve this plugin exactly as it is."""
    lines = [f"[plugins.{manifest.id}]"]
    grant = ", ".join(f'"{c}"' for c in manifest.capabilities)
    lines.append(f"grant = [{grant}]")
    if manifest.outbound_hosts:
        lines.append(
            "outbound_hosts = [" + ", ".join(f'"{h}"' for h in manifest.outbound_hosts) + "]"
        )
    if manifest.route_prefix:
        lines.append(f'route_prefix = "{manifest.route_prefix}"')
    if digest:
        lines.append(f'version = "{manifest.version}"')
        lines.append(f'digest = "{digest}"')
    return "\n".join(lines)


def resolve(
    manifest: Manifest,
    entry: PluginPolicy | None,
    *,
    builtin: bool = False,
    digest: str | None = None,
) -> Resolution:
    """Decide what a plugin gets. Pure: every check that needs no plugin code runs here.

    `builtin` is true for plugins the embedding program passed in code: that act is the
    operator's approval, so with no policy entry they get what they declare.
    """
    policy = (
        entry if entry is not None else PluginPolicy(grant=manifest.capabilities if builtin else ())
    )
    declared = frozenset(manifest.capabilities)
    granted = declared & frozenset(policy.grant)
    tier = _stricter(manifest.tier, policy.tier)
    ask = manifest.limits
    caps = policy.limits
    outbound = HostAllowlist.intersection(
        HostAllowlist(manifest.outbound_hosts), HostAllowlist(policy.outbound_hosts)
    ).patterns
    if builtin and entry is None:
        outbound = manifest.outbound_hosts
    route_prefix = policy.route_prefix or (manifest.route_prefix if builtin else None)
    res = Resolution(
        granted=granted,
        denied=declared - granted,
        tier=tier,
        timeout_ms=min(ask.timeout_ms or caps.timeout_ms, caps.timeout_ms),
        memory_max_pages=min(ask.memory_max_pages or caps.memory_max_pages, caps.memory_max_pages),
        memory_mb=min(ask.memory_mb or caps.memory_mb, caps.memory_mb),
        outbound_hosts=outbound,
        roles=policy.roles if policy.roles is not None else manifest.roles,
        route_prefix=route_prefix,
    )
    refusal = _refusal(manifest, entry, policy, res, builtin=builtin, digest=digest)
    if refusal is None:
        return res
    return dataclasses.replace(res, refusal=refusal)


def _refusal(
    manifest: Manifest,
    entry: PluginPolicy | None,
    policy: PluginPolicy,
    res: Resolution,
    *,
    builtin: bool,
    digest: str | None,
) -> tuple[RefusalReason, str] | None:
    mid = manifest.id
    if not api_compatible(manifest.api_version):
        return (
            RefusalReason.INCOMPATIBLE_API_VERSION,
            f"built for plugin API {manifest.api_version}, this host speaks {API_VERSION} "
            "(same major, minor not ahead); update the plugin or the host",
        )
    if manifest.min_host_version and not host_satisfies(manifest.min_host_version):
        return (
            RefusalReason.HOST_TOO_OLD,
            f"needs Tether {manifest.min_host_version} or newer; upgrade Tether",
        )
    if entry is None and not builtin:
        return (
            RefusalReason.NOT_APPROVED,
            "no policy entry, so it gets nothing and is not loaded; to approve it, add to "
            "tether.toml:\n" + approval_lines(manifest, digest),
        )
    if not policy.enabled:
        return (
            RefusalReason.DISABLED,
            f"disabled in tether.toml ([plugins.{mid}] enabled = false)",
        )
    forbidden = sorted(frozenset(manifest.capabilities) & BUILTIN_ONLY)
    if forbidden and not builtin:
        return (
            RefusalReason.BUILTIN_ONLY,
            f"declares {', '.join(forbidden)}, which only built-in plugins may hold; remove it",
        )
    if policy.version is not None and policy.version != manifest.version:
        return (
            RefusalReason.VERSION_DRIFT,
            f"version {manifest.version} differs from the pinned {policy.version}; review the "
            f"change, then update [plugins.{mid}] version",
        )
    if policy.digest is not None and digest is None:
        return (
            RefusalReason.DIGEST_DRIFT,
            "a digest is pinned but the plugin has no folder to digest; remove "
            f"[plugins.{mid}] digest",
        )
    if policy.digest is not None and policy.digest != digest:
        return (
            RefusalReason.DIGEST_DRIFT,
            f"folder digest {digest} differs from the pinned {policy.digest}; review the change, "
            f"then update [plugins.{mid}] digest (`tether check` prints it)",
        )
    pinned = policy.strict or policy.version is not None or policy.digest is not None
    if pinned and res.denied:
        return (
            RefusalReason.CAPABILITY_DRIFT,
            f"declares {', '.join(sorted(res.denied))} beyond what was approved; review, then "
            f"add to [plugins.{mid}] grant",
        )
    approved = HostAllowlist(policy.outbound_hosts)
    extra_hosts = [h for h in manifest.outbound_hosts if not approved.covers_pattern(h)]
    if pinned and extra_hosts:
        return (
            RefusalReason.OUTBOUND_DRIFT,
            f"declares outbound hosts {', '.join(extra_hosts)} beyond what was approved; review, "
            f"then add to [plugins.{mid}] outbound_hosts",
        )
    if policy.route_prefix and policy.route_prefix != manifest.route_prefix:
        return (
            RefusalReason.POLICY_VIOLATION,
            f"policy approves route_prefix {policy.route_prefix!r} but the manifest asks for "
            f"{manifest.route_prefix!r}; make them match",
        )
    return None


def _stricter(a: Tier, b: Tier | None) -> Tier:
    """The manifest may ask for a stricter tier than the policy's, never a looser one."""
    if b is None:
        return a
    return a if TIER_STRICTNESS[a] > TIER_STRICTNESS[b] else b
