"""The proxy `Plugin` of a subprocess-tier plugin, and the host services its worker calls.

The proxy declares what the worker reported; each declared callable is an async function
that runs its counterpart in the worker. The host activates the proxy through the normal
membrane, so every capability check is the host's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether.authoring import CommandDecl, ConfigKeyDecl, JobDecl, Plugin, ToolDecl
from tether.contract.types import Caller, ToolResult
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
    d.config_keys = [ConfigKeyDecl(k, desc, default) for k, desc, default in h["config_keys"]]
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
_HTTP_KW = frozenset({"headers", "content", "json", "timeout_ms", "max_bytes"})


async def serve(ctx: Context, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Perform one service call for the worker through the plugin's real context."""
    surface, _, name = method.partition(".")
    if surface == "storage" and name in _STORAGE:
        return p.to_wire(await getattr(ctx.storage, name)(*args, **kwargs))
    if method == "events.emit":
        return ctx.events.emit(str(args[0]), args[1])
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
