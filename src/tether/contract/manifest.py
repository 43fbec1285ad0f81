"""The plugin manifest: what a plugin is, what it asks for, strictly validated.

`parse_manifest` turns the bytes of `plugin.toml` or `plugin.json` into a `Manifest`, or
raises `ManifestError` listing every problem as `<folder>: <field>: <message>`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tether.contract.capabilities import BY_NAME
from tether.contract.errors import ManifestError, Problem
from tether.contract.events import (
    HOST_NAMESPACES,
    INTERCEPTOR_EVENTS,
    NOTIFICATION_EVENTS,
    is_known_event,
)
from tether.contract.hosts import HostPatternError, normalize_host_pattern
from tether.contract.names import CHANNEL_KIND, COMMAND_NAME, HOOK_NAMES
from tether.contract.validation import (
    PLUGIN_ID,
    PLUGIN_ID_MAX,
    check_display_string,
    check_relative_path,
    did_you_mean,
    parse_document,
    problems_from_validation,
)
from tether.contract.versions import parse_api_version, parse_semver

Tier = Literal["inprocess", "subprocess", "wasm"]
TIER_STRICTNESS: dict[str, int] = {"inprocess": 0, "subprocess": 1, "wasm": 2}

# Names other plugin ecosystems use for our keys, so their authors get pointed home.
KEY_ALIASES: dict[str, str] = {
    "permissions": "capabilities",
    "main": "entry",
    "apiversion": "api_version",
    "minhostversion": "min_host_version",
    "outboundhosts": "outbound_hosts",
    "routeprefix": "route_prefix",
    "configschema": "config_schema",
    "mtlssecrets": "mtls_secrets",
    "requires": "dependencies",
    "system_prompt": "prompt",
}

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SECRET_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_ROLE = re.compile(r"^(\*|[a-z][a-z0-9_-]{0,62})$")
_ROUTE = re.compile(r"^(/[a-z0-9][a-z0-9._-]*)+$")
_RESERVED_ROUTES = ("/api", "/mcp", "/plugins", "/static", "/docs", "/openapi.json")


def check_plugin_id(value: str) -> str:
    """Validate a plugin id (also used for dependency ids)."""
    if len(value) > PLUGIN_ID_MAX:
        raise ValueError(
            f"{value[:20]!r}... is {len(value)} characters; use at most {PLUGIN_ID_MAX}"
        )
    if not PLUGIN_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} must match ^[a-z][a-z0-9-]*$ (a lowercase letter, then lowercase "
            "letters, digits and hyphens), e.g. 'my-plugin'"
        )
    return value


def check_capability_name(value: str) -> str:
    """Validate one capability name against the catalogue, with a did-you-mean."""
    if value in BY_NAME:
        return value
    dotted = value.replace(":", ".")
    if dotted in BY_NAME:
        raise ValueError(f'"{value}" is written with a colon; write "{dotted}"')
    hint = did_you_mean(value, BY_NAME)
    raise ValueError(f'"{value}" is not a known capability{hint}; see docs/capabilities.md')


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class EnvVar(_Strict):
    """An environment variable the plugin needs: read from the host's `from`, seen as `as`."""

    from_: str = Field(alias="from")
    as_: str | None = Field(default=None, alias="as")

    @field_validator("from_", "as_")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.fullmatch(v):
            raise ValueError(f"{v!r} must be an upper-case environment variable name like API_KEY")
        return v

    @property
    def target(self) -> str:
        return self.as_ or self.from_


class ManifestLimits(_Strict):
    """What the plugin asks for; the operator's policy caps each value."""

    timeout_ms: int | None = Field(default=None, ge=1, le=600_000)
    memory_max_pages: int | None = Field(default=None, ge=1, le=65_536)
    memory_mb: int | None = Field(default=None, ge=16, le=65_536)


_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ManifestTool(_Strict):
    """A tool a wasm component implements, listed in the manifest (it cannot register)."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})

    @field_validator("name")
    @classmethod
    def _tool_name(cls, v: str) -> str:
        if not _TOOL_NAME.fullmatch(v):
            raise ValueError(f"tool name {v!r} must be lowercase letters, digits and _")
        return v

    @field_validator("input_schema")
    @classmethod
    def _tool_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("type", "object") != "object":
            raise ValueError('must be a JSON Schema with "type" = "object"')
        return v


def check_cron_expression(expr: object) -> str:
    """A 5-field UTC cron expression (the scheduler and manifests check it here)."""
    if not isinstance(expr, str) or len(expr.split()) != 5:
        raise ValueError(
            f"invalid cron expression {expr!r}: it needs exactly 5 fields "
            "'minute hour day-of-month month day-of-week' (UTC), e.g. '*/5 * * * *'"
        )
    try:
        croniter(expr)
    except (ValueError, KeyError) as exc:
        raise ValueError(
            f"invalid cron expression {expr!r}: {exc}; use 5 fields "
            "'minute hour day-of-month month day-of-week' (UTC), e.g. '0 9 * * *'"
        ) from None
    return expr


class ManifestJob(_Strict):
    """A scheduled job a wasm component runs (`run-job`): exactly one of `cron`,
    `every_s` (seconds from the end of one run to the next) or `delay_s` (once)."""

    name: str
    cron: str | None = None
    every_s: float | None = None
    delay_s: float | None = None

    @field_validator("name")
    @classmethod
    def _job_name(cls, v: str) -> str:
        if not _TOOL_NAME.fullmatch(v):
            raise ValueError(f"job name {v!r} must be lowercase letters, digits and _")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return None if v is None else check_cron_expression(v)

    @field_validator("every_s", "delay_s")
    @classmethod
    def _seconds(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise ValueError(f"must be a positive number of seconds, not {v!r}")
        return v

    @model_validator(mode="after")
    def _one_schedule(self) -> ManifestJob:
        given = [k for k in ("cron", "every_s", "delay_s") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"job {self.name!r} needs exactly one of cron, every_s, delay_s; "
                f"got {', '.join(given) or 'none'}"
            )
        return self


PROMPT_MAX = 4000
"""Longest `prompt` a component's manifest may contribute to the system prompt."""


def check_command_name(name: str) -> str:
    """A slash command name, by the rule the host's registry applies at registration."""
    if not COMMAND_NAME.fullmatch(name):
        raise ValueError(
            f"command name {name!r} must be lowercase letters, digits, _ or -, starting with a "
            "letter, at most 32 characters, e.g. 'weather'"
        )
    return name


def check_channel_kind(kind: str) -> str:
    """A notification channel kind, by the rule the notification bus applies."""
    if not CHANNEL_KIND.fullmatch(kind):
        raise ValueError(
            f"channel kind {kind!r} must be 1-64 of a-z 0-9 _ . - starting with a letter, "
            "e.g. 'webhook'"
        )
    return kind


class ManifestCommand(_Strict):
    """A slash command a wasm component answers (`handle-command`)."""

    name: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _command_name(cls, v: str) -> str:
        return check_command_name(v)

    @field_validator("description")
    @classmethod
    def _command_description(cls, v: str) -> str:
        return v if v == "" else check_display_string(v, max_len=500, multiline=True)


def check_hook_kind(kind: str) -> str:
    """A hook kind a component may list: one of `Plugin.hook`'s names."""
    if kind not in HOOK_NAMES:
        hint = did_you_mean(kind, HOOK_NAMES)
        raise ValueError(f"unknown hook kind {kind!r}{hint}; use one of {', '.join(HOOK_NAMES)}")
    return kind


def check_subscription(event: str) -> str:
    """An event a component may subscribe to, by the rule `ctx.events.on` applies: a host
    event (notification or interceptor) or another plugin's `<plugin-id>.<name>`."""
    host = (*NOTIFICATION_EVENTS, *INTERCEPTOR_EVENTS)
    if event in host:
        return event
    if event.split(".", 1)[0] in HOST_NAMESPACES or not is_known_event(event):
        hint = did_you_mean(event, host)
        raise ValueError(
            f"unknown event {event!r}{hint}; see docs/events.md, or name a plugin's event "
            "as '<plugin-id>.<name>'"
        )
    return event


class Manifest(_Strict):
    """A validated plugin manifest."""

    id: str
    name: str
    version: str
    api_version: str
    entry: str = "plugin.py"
    capabilities: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    description: str | None = None
    author: str | None = None
    homepage: str | None = None
    min_host_version: str | None = None
    tier: Tier = "inprocess"
    outbound_hosts: tuple[str, ...] = ()
    route_prefix: str | None = None
    roles: tuple[str, ...] | None = None
    env: tuple[EnvVar, ...] = ()
    skills: tuple[str, ...] = ()
    config_schema: dict[str, Any] | None = None
    mtls_secrets: tuple[str, ...] = ()
    limits: ManifestLimits = ManifestLimits()
    tools: tuple[ManifestTool, ...] = ()
    """wasm tier only: the component's tools (name, description, input_schema)."""
    ingress: tuple[str, ...] = ()
    """wasm tier only: the ingress names the component handles."""
    hooks: tuple[str, ...] = ()
    """wasm tier only: the hook kinds the component handles (`handle-hook`)."""
    subscribe: tuple[str, ...] = ()
    """wasm tier only: the events the component handles (`handle-event`)."""
    jobs: tuple[ManifestJob, ...] = ()
    """wasm tier only: the component's scheduled jobs (`run-job`)."""
    commands: tuple[ManifestCommand, ...] = ()
    """wasm tier only: the slash commands the component answers (`handle-command`)."""
    channels: tuple[str, ...] = ()
    """wasm tier only: the notification channel kinds it claims (`deliver-notification`)."""
    prompt: str | None = None
    """wasm tier only: static text the component contributes to the system prompt."""

    @field_validator(
        "capabilities",
        "dependencies",
        "outbound_hosts",
        "skills",
        "env",
        "roles",
        "mtls_secrets",
        "tools",
        "ingress",
        "hooks",
        "subscribe",
        "jobs",
        "commands",
        "channels",
        mode="before",
    )
    @classmethod
    def _lists_to_tuples(cls, v: Any, info: ValidationInfo) -> Any:
        # TOML and JSON give lists; the model is frozen, so it stores tuples. An env entry
        # may be a bare name, short for {from = NAME}.
        if not isinstance(v, list):
            return v
        if info.field_name == "env":
            return tuple({"from": x} if isinstance(x, str) else x for x in v)
        return tuple(v)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_plugin_id(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_display_string(v, max_len=80)

    @field_validator("description")
    @classmethod
    def _description(cls, v: str | None) -> str | None:
        return None if v is None else check_display_string(v, max_len=2000, multiline=True)

    @field_validator("author")
    @classmethod
    def _author(cls, v: str | None) -> str | None:
        return None if v is None else check_display_string(v, max_len=200)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if parse_semver(v) is None:
            raise ValueError(f"{v!r} is not a semantic version; write MAJOR.MINOR.PATCH like 1.0.0")
        return v

    @field_validator("min_host_version")
    @classmethod
    def _min_host(cls, v: str | None) -> str | None:
        if v is not None and parse_semver(v) is None:
            raise ValueError(f"{v!r} is not a semantic version; write MAJOR.MINOR.PATCH like 0.1.0")
        return v

    @field_validator("api_version")
    @classmethod
    def _api(cls, v: str) -> str:
        if parse_api_version(v) is None:
            raise ValueError(f'{v!r} must be "MAJOR.MINOR", e.g. "1.0"')
        return v

    @field_validator("entry")
    @classmethod
    def _entry(cls, v: str) -> str:
        return check_relative_path(v)

    @field_validator("skills")
    @classmethod
    def _skills(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_relative_path(s) for s in v)

    @field_validator("homepage")
    @classmethod
    def _homepage(cls, v: str | None) -> str | None:
        if v is None:
            return None
        check_display_string(v, max_len=500)
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} must be an http(s) URL like https://example.com/plugin")
        return v

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = []
        for name in v:
            try:
                check_capability_name(name)
            except ValueError as exc:
                bad.append(str(exc))
        if bad:
            raise ValueError("; ".join(bad))
        _no_duplicates(v)
        return v

    @field_validator("dependencies")
    @classmethod
    def _dependencies(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for dep in v:
            check_plugin_id(dep)
        _no_duplicates(v)
        return v

    @field_validator("outbound_hosts")
    @classmethod
    def _outbound(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for pattern in v:
            try:
                out.append(normalize_host_pattern(pattern))
            except HostPatternError as exc:
                raise ValueError(str(exc)) from None
        _no_duplicates(tuple(out))
        return tuple(out)

    @field_validator("route_prefix")
    @classmethod
    def _route_prefix(cls, v: str | None) -> str | None:
        return None if v is None else check_route_prefix(v)

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for role in v or ():
            if not _ROLE.fullmatch(role):
                raise ValueError(
                    f"role {role!r} must be lowercase like 'admin', or '*' for everyone"
                )
        return v

    @field_validator("mtls_secrets")
    @classmethod
    def _mtls(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not _SECRET_NAME.fullmatch(name):
                raise ValueError(f"secret name {name!r} must be lowercase letters, digits, - and _")
        _no_duplicates(v)
        return v

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: tuple[ManifestTool, ...]) -> tuple[ManifestTool, ...]:
        _no_duplicates(tuple(t.name for t in v))
        return v

    @field_validator("ingress")
    @classmethod
    def _ingress(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not _TOOL_NAME.fullmatch(name):
                raise ValueError(f"ingress name {name!r} must be lowercase letters, digits and _")
        _no_duplicates(v)
        return v

    @field_validator("hooks")
    @classmethod
    def _hooks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for kind in v:
            check_hook_kind(kind)
        _no_duplicates(v)
        return v

    @field_validator("subscribe")
    @classmethod
    def _subscribe(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for event in v:
            check_subscription(event)
        _no_duplicates(v)
        return v

    @field_validator("jobs")
    @classmethod
    def _jobs(cls, v: tuple[ManifestJob, ...]) -> tuple[ManifestJob, ...]:
        _no_duplicates(tuple(j.name for j in v))
        return v

    @field_validator("commands")
    @classmethod
    def _commands(cls, v: tuple[ManifestCommand, ...]) -> tuple[ManifestCommand, ...]:
        _no_duplicates(tuple(c.name for c in v))
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for kind in v:
            check_channel_kind(kind)
        _no_duplicates(v)
        return v

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | None) -> str | None:
        return None if v is None else check_display_string(v, max_len=PROMPT_MAX, multiline=True)

    @field_validator("config_schema")
    @classmethod
    def _config_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and v.get("type", "object") != "object":
            raise ValueError('must be a JSON Schema with "type" = "object"')
        return v


def check_route_prefix(v: str) -> str:
    """An absolute URL prefix a plugin may ask for: lowercase path, not a host route."""
    if not _ROUTE.fullmatch(v) or ".." in v:
        raise ValueError(f"{v!r} must be an absolute lowercase path like /hooks/slack")
    for reserved in _RESERVED_ROUTES:
        if v == reserved or v.startswith(reserved + "/"):
            raise ValueError(f"{v!r} is under the host's own {reserved}; choose another prefix")
    return v


def _no_duplicates(values: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{v!r} is listed twice; list it once")
        seen.add(v)


MANIFEST_KEYS: dict[str, tuple[str, ...]] = {
    "": tuple(f.alias or name for name, f in Manifest.model_fields.items()),
    "limits": tuple(ManifestLimits.model_fields),
    "env": ("from", "as"),
    "tools": tuple(ManifestTool.model_fields),
    "jobs": tuple(ManifestJob.model_fields),
    "commands": tuple(ManifestCommand.model_fields),
}


WASM_ONLY_KEYS = (
    "tools",
    "ingress",
    "hooks",
    "subscribe",
    "jobs",
    "commands",
    "channels",
    "prompt",
)
"""Keys only a wasm component's manifest may have: it cannot declare anything in code."""

_ALIASES_BY_PARENT: dict[str, dict[str, str]] = {
    "": KEY_ALIASES,
    "env": {"to": "as", "target": "as", "name": "from", "source": "from"},
}


def _cross_problems(doc: dict[str, Any], where: str) -> list[Problem]:
    """Checks between fields, run on the raw document so they are reported together with
    every other problem (pydantic's after-validators run only when all fields are valid)."""

    def listed(key: str) -> list[Any]:
        value = doc.get(key)
        return value if isinstance(value, list) else []

    caps = listed("capabilities")
    out: list[Problem] = []
    if isinstance(doc.get("id"), str) and doc["id"] in listed("dependencies"):
        out.append(
            Problem(
                where, "dependencies", f"the plugin depends on itself ({doc['id']!r}); remove it"
            )
        )
    if listed("outbound_hosts") and "http.outbound" not in caps:
        msg = (
            'declared without the "http.outbound" capability; add it to capabilities or '
            "remove outbound_hosts"
        )
        out.append(Problem(where, "outbound_hosts", msg))
    if doc.get("route_prefix") and "routes.absolute" not in caps:
        msg = (
            'an absolute prefix needs the "routes.absolute" capability; add it to capabilities '
            "or remove route_prefix"
        )
        out.append(Problem(where, "route_prefix", msg))
    for key in WASM_ONLY_KEYS:
        given = listed(key) or (key == "prompt" and isinstance(doc.get(key), str))
        if given and doc.get("tier") != "wasm":
            them = "it" if key == "prompt" else "them"
            msg = (
                f"only a wasm component lists its {key} in the manifest (other tiers "
                f'declare {them} in code); set tier = "wasm" or remove the key'
            )
            out.append(Problem(where, key, msg))
    if listed("mtls_secrets") and "secrets.mtls" not in caps:
        msg = (
            'declared without the "secrets.mtls" capability; add it to capabilities or '
            "remove mtls_secrets"
        )
        out.append(Problem(where, "mtls_secrets", msg))
    return out


def manifest_from_dict(doc: dict[str, Any], where: str) -> Manifest:
    """Validate a parsed document; raises `ManifestError` with every problem."""
    cross = _cross_problems(doc, where)
    try:
        manifest = Manifest.model_validate(doc)
    except ValidationError as exc:
        problems = problems_from_validation(exc, where, MANIFEST_KEYS, _ALIASES_BY_PARENT)
        raise ManifestError(problems + cross) from None
    if cross:
        raise ManifestError(cross)
    return manifest


def parse_manifest(data: bytes, fmt: Literal["toml", "json"], where: str) -> Manifest:
    """Parse and validate the bytes of `plugin.toml` (fmt="toml") or `plugin.json`."""
    filename = "plugin.toml" if fmt == "toml" else "plugin.json"
    try:
        doc = parse_document(data, fmt)
    except ValueError as exc:
        raise ManifestError([Problem(where, filename, str(exc))]) from None
    return manifest_from_dict(doc, where)
