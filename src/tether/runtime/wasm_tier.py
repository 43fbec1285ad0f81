"""The WebAssembly component tier (`tier = "wasm"`).

A plugin is a component of the `tether:plugin` world (wit/tether-plugin.wit). Its tools
and ingress names come from the manifest; the host validates tool input against the
manifest's schema before calling `handle-tool`. Every call runs in the plugin's own worker
thread, under an epoch deadline re-armed before the call (the CPU bound) and a store
memory limit (`memory_max_pages`). A trap fails that call with a clear message and poisons
the store; the next call gets a new store and instance (`start` runs again), so durable
state belongs in host storage. See docs/wasm.md.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasmtime import Store
from wasmtime.component import Component, Func, Instance, Variant

from tether.authoring import Plugin, ToolDecl
from tether.contract.manifest import Manifest
from tether.contract.policy import Resolution
from tether.runtime.dispatch import trust
from tether.runtime.inprocess import PluginImportError
from tether.runtime.wasm_engine import describe_trap, load_component, sandbox_store, ticks_for
from tether.runtime.wasm_host import HostImports, build_linker
from tether.runtime.wasm_ingress import Delivery, Reply, envelope, execute_commands, parse_output

if TYPE_CHECKING:
    from tether.runtime.context import Context
    from tether.runtime.discovery import Candidate
    from tether.runtime.host import Host

log = logging.getLogger("tether.wasm")
EXPORTS = ("start", "handle-tool", "handle-ingress", "status", "stop")


class WasmCallError(Exception):
    """A call into a component failed: the guest's `err`, a trap, or a bound."""


class WasmPlugin:
    """One component instance behind the membrane. `await start(ctx)`, then `call_tool`,
    `deliver` and `status`; `await close()` at the end (closes the store)."""

    def __init__(self, manifest: Manifest, component: Component, res: Resolution) -> None:
        self.manifest = manifest
        self.component = component
        self.timeout_ms = res.timeout_ms
        self.memory_max_pages = res.memory_max_pages
        self.from_cache = False
        self.traps = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"tether-wasm-{manifest.id}")
        self._lock = threading.Lock()  # the store is entered by one call at a time
        self._ctx: Context | None = None
        self._imports: HostImports | None = None
        self._store: Store | None = None
        self._funcs: dict[str, Func] = {}
        self._config_json = "{}"
        self._stderr = bytearray()  # the tail of the guest's stderr, for error messages

    # Instance management (worker thread) ------------------------------------------------

    def _instantiate(self) -> None:
        assert self._imports is not None
        self._drop_store()
        store = sandbox_store(self.memory_max_pages, self._on_stderr)
        try:
            store.set_epoch_deadline(ticks_for(self.timeout_ms))
            instance: Instance = build_linker(self._imports).instantiate(store, self.component)
            funcs = {}
            for name in EXPORTS:
                func = instance.get_func(store, name)
                if func is None:
                    raise WasmCallError(f"the component does not export {name!r}")
                funcs[name] = func
        except Exception:
            store.close()
            raise
        self._store, self._funcs = store, funcs
        status = self._enter("start", self._config_json)
        log.debug("wasm plugin %s started: %s", self.manifest.id, status)

    def _on_stderr(self, data: bytes) -> None:
        self._stderr += data
        del self._stderr[:-4096]

    def _drop_store(self) -> None:
        store, self._store, self._funcs = self._store, None, {}
        if store is not None:
            store.close()

    def _enter(self, export: str, *args: str) -> Any:
        """Call an export with the CPU bound re-armed; a trap poisons (and drops) the store."""
        assert self._store is not None
        self._store.set_epoch_deadline(ticks_for(self.timeout_ms))
        self._stderr.clear()
        try:
            return self._funcs[export](self._store, *args)
        except Exception as exc:
            self.traps += 1
            self._drop_store()
            stderr = self._stderr.decode(errors="replace")
            message = describe_trap(exc, self.timeout_ms, self.memory_max_pages, stderr)
            if self._ctx is not None:
                self._ctx._services.audit.record(
                    self.manifest.id, "wasm_trap", message, export=export
                )
            raise WasmCallError(f"{export}: {message}") from None

    def _call_sync(self, export: str, *args: str) -> Any:
        with self._lock:
            if self._store is None:
                self._instantiate()
            return self._enter(export, *args)

    async def _call(self, export: str, *args: str) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call_sync, export, *args)

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self, ctx: Context) -> None:
        """Bind the imports to `ctx` and instantiate; runs the component's `start`."""
        self._ctx = ctx
        self._imports = HostImports(
            ctx, asyncio.get_running_loop(), timeout_s=self.timeout_ms / 1000
        )
        config = ctx.config if isinstance(ctx.config, dict) else ctx.config.model_dump()
        self._config_json = json.dumps(config)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._start_sync)

    def _start_sync(self) -> None:
        with self._lock:
            self._instantiate()

    async def stop(self) -> None:
        """Run the component's `stop` (errors are logged) and drop the store."""
        if self._imports is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._stop_sync)

    def _stop_sync(self) -> None:
        with self._lock:
            if self._store is not None:
                try:
                    self._enter("stop")
                except WasmCallError as exc:
                    log.warning("wasm plugin %s: %s", self.manifest.id, exc)
            self._drop_store()

    async def close(self) -> None:
        """Stop, close the store and end the worker thread."""
        await self.stop()
        self._executor.shutdown(wait=True)

    # Calls ---------------------------------------------------------------------------------

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        """Call `handle-tool`; returns the tool's JSON result, raises `WasmCallError`."""
        result = await self._call("handle-tool", name, json.dumps(arguments))
        return _result_value(result, f"tool {name!r}")

    async def status(self) -> Any:
        """The component's status JSON, parsed."""
        return json.loads(await self._call("status"))

    async def deliver(
        self,
        ingress_name: str,
        payload: dict[str, Any],
        *,
        source: str,
        kind: str = "websocket_text",
        reply: Reply | None = None,
        attempt: int = 1,
        correlation_id: str | None = None,
    ) -> Delivery:
        """Deliver one ingress event; runs the output commands the host accepts.

        `reply` sends text back to the event's source (a websocket); without it
        `websocket_send` commands are refused.
        """
        if ingress_name not in self.manifest.ingress:
            known = ", ".join(self.manifest.ingress) or "none"
            raise ValueError(
                f"plugin {self.manifest.id!r} declares no ingress {ingress_name!r} "
                f"(declared: {known}); add it to the manifest's ingress list"
            )
        assert self._ctx is not None, "the plugin is not started"
        event = envelope(
            ingress_name,
            payload,
            kind=kind,
            source=source,
            attempt=attempt,
            correlation_id=correlation_id,
        )
        try:
            result = await self._call("handle-ingress", ingress_name, json.dumps(event))
            text = _result_value(result, f"ingress {ingress_name!r}", parse=False)
            accepted, commands = parse_output(text)
        except (WasmCallError, ValueError) as exc:
            return Delivery(accepted=False, error=str(exc))
        out = await execute_commands(self._ctx, event, commands, reply)
        out.accepted = accepted
        return out


def _result_value(result: Any, what: str, *, parse: bool = True) -> Any:
    if not isinstance(result, Variant):
        raise WasmCallError(f"{what}: the component returned {type(result).__name__}")
    if result.tag == "err":
        raise WasmCallError(f"{what}: {result.payload}")
    text = str(result.payload)
    if not parse:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # plain text is a fine result too


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
    declare the manifest's tools, and start/stop the instance with the plugin's lifecycle."""
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
    wasm.from_cache = cached
    plugin = Plugin(manifest)
    plugin.wasm = wasm  # type: ignore[attr-defined]
    for tool in manifest.tools:
        fn = _tool_callable(wasm, tool.name, tool.input_schema)
        plugin.declared.tools.append(
            ToolDecl(fn, tool.name, tool.description, tool.input_schema, None)
        )

    async def on_load(ctx: Context) -> None:
        await wasm.start(ctx)

    plugin.on_load(on_load)
    plugin.on_disable(wasm.stop)
    plugin.on_unload(wasm.stop)
    return plugin


async def unload(plugin: Plugin | None) -> None:
    """Close the plugin's instance and worker thread; never fails."""
    wasm = getattr(plugin, "wasm", None)
    if isinstance(wasm, WasmPlugin):
        try:
            await wasm.close()
        except Exception as exc:
            log.warning("closing wasm plugin: %s", exc)
