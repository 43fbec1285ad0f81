"""The WebAssembly component tier (`tier = "wasm"`): the proxy `Plugin` of a component.

A plugin is a component of the `tether:plugin` world (wit/tether-plugin.wit). It cannot
register anything while it runs, so its tools, ingress names, hooks, subscriptions, jobs,
commands, prompt and channels come from the manifest; each declared callable calls an
export of the plugin's `WasmPlugin` (runtime/wasm_plugin.py). The host validates tool input
against the manifest's schema before calling `handle-tool`, and activates the proxy through
the normal membrane, so every capability check is the host's. See docs/wasm.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasmtime.component import Variant

from tether.authoring import CommandDecl, JobDecl, Plugin, ToolDecl
from tether.contract.types import NotificationRequest
from tether.runtime.dispatch import trust
from tether.runtime.inprocess import PluginImportError
from tether.runtime.tiers import granted_env
from tether.runtime.wasm_engine import load_component
from tether.runtime.wasm_plugin import (
    EXPORTS,
    MAX_STUCK,
    STUCK_GRACE_S,
    WasmCallError,
    WasmPlugin,
    result_value,
)
from tether.worker.protocol import from_wire, to_wire

if TYPE_CHECKING:
    from tether.contract.policy import Resolution
    from tether.runtime.context import Context
    from tether.runtime.discovery import Candidate
    from tether.runtime.host import Host

__all__ = ["EXPORTS", "MAX_STUCK", "STUCK_GRACE_S", "WasmCallError", "WasmPlugin", "load", "unload"]
log = logging.getLogger("tether.wasm")


def _to_json(value: Any) -> str:
    """`value` as JSON in the tagged form of the subprocess tier's wire (`__tether_type__`);
    anything else that is not JSON (a host dataclass such as the agent's config) goes as its
    fields, or as text."""

    def fallback(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: to_wire(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return str(obj)

    return json.dumps(to_wire(value), default=fallback)


def _from_json(result: Any, what: str) -> Any:
    """The guest's `ok` JSON as Tether's types; an `err`, a trap or an unreadable value
    raises `WasmCallError`."""
    value = result_value(result, what)
    try:
        return from_wire(value)
    except (TypeError, ValueError) as exc:
        raise WasmCallError(f"{what}: the host cannot read the component's result: {exc}") from None


def _hook_callable(wasm: WasmPlugin, kind: str) -> Callable[..., Any]:
    """The hook as the chain calls it, running `handle-hook`. A failure raises, so the chain
    skips the hook and reports it, as for a raising in-process hook."""

    async def hook(*args: Any) -> Any:
        result = await wasm._call("handle-hook", kind, _to_json(list(args)))
        return _from_json(result, f"hook {kind!r}")

    hook.__name__ = hook.__qualname__ = f"wasm_hook_{kind}"
    return hook


def _event_callable(wasm: WasmPlugin, event: str) -> Callable[..., Any]:
    """A subscriber running `handle-event` with what an in-process handler would get (an
    `Event`, or `RunStart`/`RunEnd` for the interceptors); returns the guest's verdict."""

    async def handler(arg: Any) -> Any:
        result = await wasm._call("handle-event", event, _to_json(arg))
        return _from_json(result, f"event {event!r}")

    handler.__name__ = handler.__qualname__ = "wasm_event_" + event.replace(".", "_")
    return handler


def _job_callable(wasm: WasmPlugin, name: str) -> Callable[..., Any]:
    """A scheduled job running `run-job`; the guest's `err` fails the run."""

    async def job() -> None:
        result = await wasm._call("run-job", name)
        # result<_, string> comes back untagged: None, or the error message
        if isinstance(result, Variant):
            result = result.payload if result.tag == "err" else None
        if result is not None:
            raise WasmCallError(f"job {name!r}: {result}")

    job.__name__ = job.__qualname__ = f"wasm_job_{name}"
    return job


def _command_callable(wasm: WasmPlugin, name: str) -> Callable[..., Any]:
    """A slash command running `handle-command`; its `ok` is the reply text (not JSON) and
    its `err` fails the command, as a raising in-process command does."""

    async def command(args: str) -> str:
        result = await wasm._call("handle-command", name, args)
        return str(result_value(result, f"command /{name}", parse=False))

    command.__name__ = command.__qualname__ = "wasm_command_" + name.replace("-", "_")
    return command


def _channel_callable(wasm: WasmPlugin, kind: str) -> Callable[..., Any]:
    """A notification channel running `deliver-notification` with the tagged request. The
    bus bounds the call and retries failures; an `err`, a trap or an unreadable result
    fails the attempt, and anything but a NotificationResult is refused by the bus with
    the in-process message."""

    async def deliver(request: NotificationRequest) -> Any:
        result = await wasm._call("deliver-notification", kind, _to_json(request))
        return _from_json(result, f"channel {kind!r}")

    name = "wasm_channel_" + kind.replace(".", "_").replace("-", "_")
    deliver.__name__ = deliver.__qualname__ = name
    return deliver


def _tool_callable(wasm: WasmPlugin, name: str, schema: dict[str, Any]) -> Callable[..., Any]:
    """An async function named `name` whose keyword parameters are the schema's properties
    (dispatch calls it with the validated arguments)."""

    async def call(**arguments: Any) -> Any:
        return await wasm.call_tool(name, arguments)

    props = schema.get("properties", {})
    bad = [p for p in props if not str(p).isidentifier()]
    if bad:
        raise PluginImportError(
            f"tool {name!r}: property names {bad} are not identifiers; rename them"
        )
    params = [
        inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Any)
        for p in props
    ]
    call.__name__ = call.__qualname__ = name
    call.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    # The component's epoch deadline bounds the call on its side; no extra task needed.
    return trust(call)


async def load(cand: Candidate, res: Resolution, host: Host) -> Plugin:
    """The proxy `Plugin` for a wasm candidate: compile (or load from the host's cache),
    declare the manifest's tools, hooks, subscriptions, jobs, commands, prompt and channels,
    and start/stop the instance with the plugin's lifecycle."""
    manifest, folder = cand.manifest, cand.folder
    if manifest is None or folder is None:
        raise PluginImportError("the wasm tier runs folder plugins only")
    path = folder / manifest.entry
    if path.suffix != ".wasm":
        raise PluginImportError(
            f"entry {manifest.entry!r} is not a .wasm component; build one (docs/wasm.md)"
        )
    cache_dir = Path(host.config.data_dir) / "wasm-cache"
    try:
        component, cached = await asyncio.to_thread(load_component, path, cache_dir)
    except Exception as exc:
        raise PluginImportError(f"{manifest.entry}: cannot load the component: {exc}") from None
    wasm = WasmPlugin(manifest, component, res)
    wasm.env = granted_env(cand, res)
    wasm.from_cache = cached
    plugin = Plugin(manifest)
    plugin.wasm = wasm  # type: ignore[attr-defined]
    d = plugin.declared
    for tool in manifest.tools:
        fn = _tool_callable(wasm, tool.name, tool.input_schema)
        d.tools.append(ToolDecl(fn, tool.name, tool.description, tool.input_schema, None))
    # Declared like any plugin's: activation checks the grants (hooks.*, events.subscribe,
    # scheduler.write, commands.register, prompts.contribute, notifications.register) and
    # skips what is not granted, with a warning.
    d.hooks = [(kind, _hook_callable(wasm, kind)) for kind in manifest.hooks]
    d.events = [(event, _event_callable(wasm, event)) for event in manifest.subscribe]
    d.jobs = [
        JobDecl(j.name, _job_callable(wasm, j.name), j.cron, j.every_s, j.delay_s)
        for j in manifest.jobs
    ]
    d.commands = [
        CommandDecl(c.name, _command_callable(wasm, c.name), c.description)
        for c in manifest.commands
    ]
    d.prompts = [manifest.prompt] if manifest.prompt is not None else []
    d.channels = [(kind, _channel_callable(wasm, kind)) for kind in manifest.channels]

    async def on_load(ctx: Context) -> None:
        await wasm.start(ctx)

    plugin.on_load(on_load)
    plugin.on_disable(wasm.stop)
    plugin.on_unload(wasm.stop)
    return plugin


async def unload(plugin: Plugin | None) -> None:
    """Close the plugin's instance and guest thread; never fails."""
    wasm = getattr(plugin, "wasm", None)
    if isinstance(wasm, WasmPlugin):
        try:
            await wasm.close()
        except Exception as exc:
            log.warning("closing wasm plugin: %s", exc)
