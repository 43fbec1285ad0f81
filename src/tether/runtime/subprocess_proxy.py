"""The proxy `Plugin` of a subprocess-tier plugin, and the host services its worker calls.

The proxy declares what the worker reported; each declared callable is an async function
that runs its counterpart in the worker. The host activates the proxy through the normal
membrane, so every capability check is the host's. Config validation (a config model,
config-key validators) is synchronous on the host, so it goes over the worker's sync socket.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from tether.authoring import CommandDecl, ConfigKeyDecl, JobDecl, Plugin, ToolDecl
from tether.contract.types import Caller, NotificationRequest, ToolResult
from tether.runtime.config_model import PluginConfigError, env_prefix
from tether.runtime.context import Context
from tether.runtime.discovery import Candidate
from tether.runtime.dispatch import trust
from tether.worker import protocol as p

if TYPE_CHECKING:
    from tether.runtime.subprocess_tier import Supervisor

CALLER_PARAM = "tether_caller__"


class RemoteError(Exception):
    """An exception raised in the worker; its class is named after the worker's exception."""


_REMOTE: dict[str, type[RemoteError]] = {}


def remote_error(value: list[Any]) -> RemoteError:
    """The host-side exception for a worker's `[type name, message]`."""
    kind, message = str(value[0]), str(value[1])
    cls = _REMOTE.get(kind)
    if cls is None:
        name = kind if kind.isidentifier() else "RemoteError"
        cls = _REMOTE.setdefault(kind, type(name, (RemoteError,), {}))
    return cls(message)


def _tool_proxy(sup: Supervisor, local: str, schema: dict[str, Any]) -> Callable[..., Any]:
    target = f"tool:{local}"
    call = sup.call

    async def tool(**kwargs: Any) -> ToolResult:
        caller: Caller | None = kwargs.pop(CALLER_PARAM, None)
        who = [caller.id, sorted(caller.roles)] if caller is not None else None
        r = await call(target, [kwargs, who])
        return ToolResult(r[0], r[1], r[2])

    kw = inspect.Parameter.KEYWORD_ONLY
    names = [n for n in schema.get("properties", {}) if n.isidentifier() and n != CALLER_PARAM]
    params = [inspect.Parameter(n, kw, default=None, annotation=Any) for n in names]
    params.append(inspect.Parameter(CALLER_PARAM, kw, default=None, annotation=Caller))
    tool.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    tool.__doc__ = None
    tool.__name__ = local
    return trust(tool)


def _remote(sup: Supervisor, target: str, timeout: float | None) -> Callable[..., Any]:
    async def remote(*args: Any) -> Any:
        return p.from_wire(await sup.call(target, p.to_wire(list(args)), timeout))

    remote.__name__ = target.replace(":", "_")
    return remote


def _channel(sup: Supervisor, target: str) -> Callable[..., Any]:
    """A channel handler running in the worker. The bus bounds and cancels it, so the call
    itself has no timeout of its own."""

    async def deliver(req: NotificationRequest) -> Any:
        value = p.from_wire(await sup.call(target, p.to_wire([req]), None))
        if isinstance(value, dict) and "__not_a_result__" in value:
            # The handler returned something else: an object of that type's name lets the
            # bus refuse it with the in-process message.
            return type(str(value["__not_a_result__"]), (), {})()
        return value

    deliver.__name__ = target.replace(":", "_")
    return deliver


def _validator(sup: Supervisor, index: int) -> Callable[[str], Any]:
    """A config key's validator, run in the worker (synchronously, as the host calls it)."""
    target = f"key:validate:{index}"

    def validate(value: str) -> Any:
        return sup.call_sync(target, [value])

    return validate


class RemoteConfig(BaseModel):
    """The host's stand-in for a worker's config model.

    The host builds a plugin's config with `build_config(model, table)`, which ends in
    `model.model_validate(data)`. This class has no fields of its own (so the host reads no
    environment for it); its `model_validate` asks the worker, which builds the real model
    from the same table and the plugin's `TETHER_<ID>_*` variables with the same code, and
    keeps the instance as its `ctx.config`. A refusal comes back as the worker's
    `PluginConfigError` message, word for word; an accepted config gives the host a copy
    of the values (secrets masked) under the model's name.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    _tether_worker: ClassVar[Any] = None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        sup = cls._tether_worker
        prefix = env_prefix(sup.plugin_id)
        environ = {k: v for k, v in os.environ.items() if k.startswith(prefix)}
        request = [dict(obj), environ]
        try:
            _name, values = sup.call_sync("config:validate", request)
        except Exception as exc:
            if type(exc).__name__ == "PluginConfigError":
                raise PluginConfigError(str(exc)) from None
            raise PluginConfigError(
                f"config for plugin {sup.plugin_id!r} could not be validated in its worker: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        sup.config_request = p.to_wire(request)
        return cls(**values)


def _config_model(sup: Supervisor, name: str) -> type[BaseModel]:
    """A `RemoteConfig` subclass named like the worker's model, bound to this worker."""
    name = name if name.isidentifier() else "RemoteConfig"
    return type(name, (RemoteConfig,), {"_tether_worker": sup, "__module__": __name__})


def _on_load(sup: Supervisor, target: str) -> Callable[..., Any]:
    async def on_load(_ctx: Any = None) -> None:
        await sup.call(target, [])
        sup.loaded = True

    return on_load


def build_proxy(sup: Supervisor, cand: Candidate) -> Plugin:
    """A `Plugin` declaring what the worker reported, with RPC callables."""
    h = sup.hello
    plugin = Plugin(cand.manifest)
    plugin._tether_worker = sup  # type: ignore[attr-defined]
    d = plugin.declared
    timeout = sup.res.timeout_ms / 1000
    for local, desc, schema, t_ms in h["tools"]:
        d.tools.append(ToolDecl(_tool_proxy(sup, local, schema), local, desc, schema, t_ms))
    d.hooks = [(k, _remote(sup, f"hook:{i}", timeout)) for i, k in enumerate(h["hooks"])]
    d.events = [(e, _remote(sup, f"event:{i}", timeout)) for i, e in enumerate(h["events"])]
    d.commands = [
        CommandDecl(name, _remote(sup, f"command:{i}", timeout), desc)
        for i, (name, desc) in enumerate(h["commands"])
    ]
    d.prompts = [
        text if text is not None else _remote(sup, f"prompt:{i}", timeout)
        for i, text in enumerate(h["prompts"])
    ]
    d.skills = list(h["skills"])
    d.jobs = [
        JobDecl(name, _remote(sup, f"job:{i}", None), cron, interval, delay)
        for i, (name, cron, interval, delay) in enumerate(h["jobs"])
    ]
    d.migrations = [(name, sql) for name, sql in h["migrations"]]
    d.config_keys = [
        ConfigKeyDecl(k, desc, default, _validator(sup, i) if checked else None)
        for i, (k, desc, default, checked) in enumerate(h["config_keys"])
    ]
    d.channels = [(kind, _channel(sup, f"channel:{i}")) for i, kind in enumerate(h["channels"])]
    if h["config_model"] is not None:
        d.config_model = _config_model(sup, str(h["config_model"]))
    for name, count in h["lifecycle"].items():
        d.lifecycle[name] = [
            _on_load(sup, f"life:load:{i}")
            if name == "load"
            else _remote(sup, f"life:{name}:{i}", None)
            for i in range(count)
        ]
    return plugin


# Host services the worker may call -----------------------------------------------------

_STORAGE = frozenset({"get", "set", "delete", "list", "clear"})
_CONFIG_KEYS = frozenset({"get", "set", "unset", "list"})
_HTTP_KW = frozenset({"headers", "content", "json", "timeout_ms", "max_bytes"})


async def serve(ctx: Context, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Perform one service call for the worker through the plugin's real context."""
    surface, _, name = method.partition(".")
    if surface == "storage" and name in _STORAGE:
        return p.to_wire(await getattr(ctx.storage, name)(*args, **kwargs))
    if method == "events.emit":
        return ctx.events.emit(str(args[0]), args[1])
    if surface == "config_keys" and name in _CONFIG_KEYS:
        value = await getattr(ctx.config_keys, name)(*args, **kwargs)
        if name == "list":
            return [dataclasses.asdict(entry) for entry in value]
        return value
    if method == "capability.refused":  # refused in the worker: audit it here, as in-process
        ctx.require(str(args[0]), str(args[1]))
        return None
    if method == "notifications.send":
        kind, recipient, text, metadata = args
        return p.to_wire(await ctx.notifications.send(kind, recipient, text, metadata))
    if method == "tools.execute":
        caller = p.from_wire(kwargs.get("caller"))
        result = await ctx.tools.execute(str(args[0]), args[1], caller=caller)
        return p.to_wire(result)
    if method == "http.request":
        unknown = set(kwargs) - _HTTP_KW
        if unknown:
            raise ValueError(f"ctx.http at the subprocess tier does not take {sorted(unknown)}")
        r = await ctx.http.request(str(args[0]), str(args[1]), **kwargs)
        return {"status": r.status, "headers": dict(r.headers), "content": r.content, "url": r.url}
    raise LookupError(f"no host service {method!r} at the subprocess tier")
