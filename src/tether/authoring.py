"""The plugin author's API: a `Plugin` object whose decorators declare what the plugin offers.

Decorators only record; nothing is registered until the host activates the plugin through
its capability membrane, so importing a plugin module has no effect on any host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from pydantic import BaseModel

from tether.contract.manifest import Manifest
from tether.contract.names import HOOK_NAMES, HookName

if TYPE_CHECKING:
    from tether.runtime.context import Context

F = TypeVar("F", bound=Callable[..., Any])
ModelT = TypeVar("ModelT", bound=BaseModel)

LifecycleName = Literal["load", "unload", "enable", "disable"]


@dataclass(slots=True)
class ToolDecl:
    fn: Callable[..., Any]
    name: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    timeout_ms: int | None = None


@dataclass(slots=True)
class CommandDecl:
    name: str
    fn: Callable[..., Any]
    description: str = ""


@dataclass(slots=True)
class JobDecl:
    name: str
    fn: Callable[..., Any]
    cron: str | None = None
    interval: float | None = None
    delay: float | None = None


@dataclass(slots=True)
class ConfigKeyDecl:
    key: str
    description: str = ""
    default: str | None = None
    validate: Callable[[str], Any] | None = None


@dataclass(slots=True)
class Declarations:
    """Everything a plugin declared with decorators, in declaration order."""

    tools: list[ToolDecl] = field(default_factory=list)
    hooks: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)
    events: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)
    commands: list[CommandDecl] = field(default_factory=list)
    prompts: list[str | Callable[..., Any]] = field(default_factory=list)
    skills: list[str] = field(default_factory=list)
    lifecycle: dict[str, list[Callable[..., Any]]] = field(default_factory=dict)
    jobs: list[JobDecl] = field(default_factory=list)
    channels: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)
    config_model: type[BaseModel] | None = None
    config_keys: list[ConfigKeyDecl] = field(default_factory=list)
    migrations: list[tuple[str, str]] = field(default_factory=list)


class Plugin:
    """A plugin. Create one at module level and decorate functions with it.

    >>> plugin = Plugin()
    >>> @plugin.tool
    ... async def echo(text: str, times: int = 1) -> str:
    ...     '''Repeat the text.'''
    ...     return " ".join([text] * times)

    A folder plugin takes its manifest from `plugin.toml`; a plugin passed to `Host` in code
    gives its manifest fields as keyword arguments: `Plugin(id="x", name="X", ...)`.
    """

    def __init__(self, manifest: Manifest | dict[str, Any] | None = None, **fields: Any) -> None:
        if isinstance(manifest, dict) or fields:
            data = {"name": fields.get("id", ""), "version": "0.0.0", "api_version": "1.0"}
            data.update(manifest or {})
            data.update(fields)
            data.setdefault("entry", "plugin.py")
            manifest = Manifest.model_validate(data)
        self.manifest: Manifest | None = manifest
        self.declared = Declarations()
        self._context: Context | None = None

    @property
    def context(self) -> Context:
        """The plugin's context while it is active (storage, events, tools, config, log)."""
        if self._context is None:
            raise RuntimeError("the plugin is not active: its context exists only while it runs")
        return self._context

    # Tools -------------------------------------------------------------------------------

    @overload
    def tool(self, fn: F, /) -> F: ...

    @overload
    def tool(self, fn: None = None, /) -> Callable[[F], F]: ...

    @overload
    def tool(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        input_schema: dict[str, Any] | None = None,
        timeout_ms: int | None = None,
    ) -> Callable[[F], F]: ...

    def tool(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        input_schema: dict[str, Any] | None = None,
        timeout_ms: int | None = None,
    ) -> F | Callable[[F], F]:
        """Declare a tool. The JSON Schema comes from the signature unless `input_schema` is
        given; the description from the docstring. Sync functions run in a worker thread."""

        def register(f: F) -> F:
            self.declared.tools.append(ToolDecl(f, name, description, input_schema, timeout_ms))
            return f

        return register(fn) if fn is not None else register

    # Hooks -------------------------------------------------------------------------------

    def hook(self, name: HookName) -> Callable[[F], F]:
        """Declare a model-loop hook by name; the named decorators below are shorthands."""
        if name not in HOOK_NAMES:
            raise ValueError(f"unknown hook {name!r}; use one of {', '.join(HOOK_NAMES)}")

        def register(f: F) -> F:
            self.declared.hooks.append((name, f))
            return f

        return register

    def before_model_call(self, f: F) -> F:
        """`(messages, config) -> messages | None`: rewrite the messages sent to the model."""
        return self.hook("before_model_call")(f)

    def after_model_call(self, f: F) -> F:
        """`(turn) -> turn | None`: rewrite the model's turn before it is acted on."""
        return self.hook("after_model_call")(f)

    def before_tool_call(self, f: F) -> F:
        """`(call) -> call | Block | None`: rewrite a tool call, or block it."""
        return self.hook("before_tool_call")(f)

    def after_tool_call(self, f: F) -> F:
        """`(call, result) -> result | None`: rewrite a tool's result."""
        return self.hook("after_tool_call")(f)

    def filter_tools(self, f: F) -> F:
        """`(tools) -> tools`: narrow the tools the model sees (plugins compose by intersection)."""
        return self.hook("filter_tools")(f)

    def transform_system_prompt(self, f: F) -> F:
        """`(prompt) -> prompt | None`: rewrite the system prompt."""
        return self.hook("transform_system_prompt")(f)

    def transform_user_input(self, f: F) -> F:
        """`(text) -> text | Intercept | None`: rewrite the user's input, or handle it."""
        return self.hook("transform_user_input")(f)

    def after_run(self, f: F) -> F:
        """`(reason) -> None`: runs once when a run ends, with the reason."""
        return self.hook("after_run")(f)

    # Events, commands, prompts, skills ---------------------------------------------------

    def on(self, event: str) -> Callable[[F], F]:
        """Subscribe to an event: a notification (`message.received`) or an interceptor
        (`run.start`, `run.end`) whose return value can change the run."""

        def register(f: F) -> F:
            self.declared.events.append((event, f))
            return f

        return register

    def command(self, name: str, *, description: str = "") -> Callable[[F], F]:
        """Declare a slash command `/name args`, answered without the model."""

        def register(f: F) -> F:
            self.declared.commands.append(CommandDecl(name, f, description or (f.__doc__ or "")))
            return f

        return register

    def system_prompt(self, text_or_fn: str | F) -> str | F:
        """Contribute to the system prompt: a string, or a function returning one."""
        self.declared.prompts.append(text_or_fn)
        return text_or_fn

    def skill(self, path: str) -> None:
        """Publish a skill folder (containing SKILL.md), relative to the plugin folder."""
        self.declared.skills.append(path)

    # Scheduled jobs and notification channels ------------------------------------------

    def job(
        self,
        name: str,
        *,
        cron: str | None = None,
        interval: float | None = None,
        delay: float | None = None,
    ) -> Callable[[F], F]:
        """Schedule the function (no arguments, sync or async): `cron="0 9 * * *"` (UTC),
        `interval=60` (seconds between the end of a run and the next start) or `delay=5`
        (once); exactly one of them. Needs the scheduler.write capability."""
        kinds = {"cron": cron, "interval": interval, "delay": delay}
        given = [k for k, v in kinds.items() if v is not None]
        if len(given) != 1:
            raise ValueError(
                f"@plugin.job({name!r}) needs exactly one of cron=, interval=, delay=; "
                f"got {', '.join(given) or 'none'}"
            )

        def register(f: F) -> F:
            self.declared.jobs.append(JobDecl(name, f, cron, interval, delay))
            return f

        return register

    def channel(self, kind: str) -> Callable[[F], F]:
        """Claim the notification channel `kind` with `async def handler(req:
        NotificationRequest) -> NotificationResult`. Needs notifications.register."""

        def register(f: F) -> F:
            self.declared.channels.append((kind, f))
            return f

        return register

    # Config and data ---------------------------------------------------------------------

    def config_model(self, model: type[ModelT]) -> type[ModelT]:
        """Declare the plugin's typed config, a pydantic model (use as a call or a class
        decorator). At activation it is built from `[plugins.<id>.config]` in tether.toml,
        overridden by `TETHER_<ID>_<FIELD>` environment variables, and `ctx.config` is the
        instance; a bad value fails the plugin's load naming the variable (docs/config.md)."""
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"config_model takes a pydantic model class, not {model!r}")
        self.declared.config_model = model
        return model

    def config_key(
        self,
        key: str,
        *,
        default: str | None = None,
        description: str = "",
        validate: Callable[[str], Any] | None = None,
    ) -> Callable[[F], F]:
        """Declare a per-scope config key `<plugin-id>.<key>` (needs config.register). Call
        it, or use it to decorate the validator `(value: str) -> bool`."""
        decl = ConfigKeyDecl(key, description, default, validate)
        self.declared.config_keys.append(decl)

        def set_validator(f: F) -> F:
            decl.validate = f
            return f

        return set_validator

    def migration(self, name: str, sql: str) -> None:
        """Declare an SQL migration (`"0001_init"`, SQL) applied once, in name order, before
        on_load (needs db.sql); files `migrations/NNNN_name.sql` in the plugin folder count
        too. Tables must be named `<plugin id with - as _>_...` (docs/data.md)."""
        self.declared.migrations.append((name, sql))

    # Lifecycle ---------------------------------------------------------------------------

    def _lifecycle(self, name: LifecycleName, f: F) -> F:
        self.declared.lifecycle.setdefault(name, []).append(f)
        return f

    def on_load(self, f: F) -> F:
        """`(ctx) -> None`: runs at activation; register things dynamically through `ctx`."""
        return self._lifecycle("load", f)

    def on_unload(self, f: F) -> F:
        """`() -> None`: runs at unload; Tether removes the registrations whatever happens."""
        return self._lifecycle("unload", f)

    def on_enable(self, f: F) -> F:
        """`() -> None`: runs when the plugin is enabled again after being disabled."""
        return self._lifecycle("enable", f)

    def on_disable(self, f: F) -> F:
        """`() -> None`: runs when the plugin is disabled."""
        return self._lifecycle("disable", f)
