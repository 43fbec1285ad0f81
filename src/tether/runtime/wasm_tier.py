"""The WebAssembly component tier (`tier = "wasm"`).

A plugin is a component of the `tether:plugin` world (wit/tether-plugin.wit). Its tools,
ingress names and everything else it offers come from the manifest; the host validates
tool input against the manifest's schema before calling `handle-tool`. Every call runs in
the plugin's own worker thread, under an epoch deadline re-armed before the call (the CPU
bound) and a store memory limit (`memory_max_pages`). A trap fails that call with a clear
message and poisons the store; the next call gets a new store and instance (`start` runs
again), so durable state belongs in host storage. See docs/wasm.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasmtime import Store
from wasmtime.component import Component, Instance, Variant

from tether.authoring import CommandDecl, JobDecl, Plugin, ToolDecl
from tether.contract.manifest import Manifest
from tether.contract.policy import Resolution
from tether.contract.types import NotificationRequest
from tether.runtime.dispatch import trust
from tether.runtime.inprocess import PluginImportError
from tether.runtime.tiers import granted_env
from tether.runtime.wasm_engine import describe_trap, load_component, sandbox_store, ticks_for
from tether.runtime.wasm_export import ExportCall
from tether.runtime.wasm_host import HostImports, build_linker
from tether.runtime.wasm_ingress import Delivery, Reply, envelope, execute_commands, parse_output
from tether.runtime.wasm_thread import GuestThread, restart_clock
from tether.worker.protocol import from_wire, to_wire

if TYPE_CHECKING:
    from tether.runtime.context import Context
    from tether.runtime.discovery import Candidate
    from tether.runtime.host import Host

log = logging.getLogger("tether.wasm")
EXPORTS = (
    "start",
    "handle-tool",
    "handle-ingress",
    "handle-hook",
    "handle-event",
    "run-job",
    "handle-command",
    "deliver-notification",
    "status",
    "stop",
)


STUCK_GRACE_S = 0.2
"""How long past its time limit a call may run before its thread is taken as stuck (the
epoch deadline stops guest code within a tick or two of the limit)."""
MAX_STUCK = 3
"""Abandoned threads (each keeping a store) a plugin may have before calls are refused."""


class WasmCallError(Exception):
    """A call into a component failed: the guest's `err`, a trap, or a bound."""


class WasmPlugin:
    """One component instance behind the membrane. `await start(ctx)`, then `call_tool`,
    `deliver` and `status`; `await close()` at the end (closes the store)."""

    def __init__(self, manifest: Manifest, component: Component, res: Resolution) -> None:
        self.manifest = manifest
        self.component = component
        self.timeout_ms = res.timeout_ms
        self.env: dict[str, str] = {}  # the guest's environment (granted `env` only)
        self._started = False  # between start() and stop(): calls may (re)instantiate
        self.instances = 0  # instances made so far (the first, and one after each trap)
        self.memory_max_pages = res.memory_max_pages
        self.from_cache = False
        self.traps = 0
        self.stuck = 0
        """Calls abandoned because they blocked where the epoch deadline cannot reach."""
        # The instance (store and exports) lives in the guest thread's locals, so
        # a store is only ever entered by the thread that made it; see the properties below.
        self._local = threading.local()
        self._thread: GuestThread | None = None  # made by the first call
        self._watch: asyncio.TimerHandle | None = None
        self._stuck_threads: list[GuestThread] = []
        self._bound_s = self.timeout_ms / 1000 + STUCK_GRACE_S
        self._ctx: Context | None = None
        self._imports: HostImports | None = None
        self._config_json = "{}"
        # The tail of the guest's stderr, for error messages. Shared: wasmtime calls the
        # stderr callback from its own I/O threads, not from the guest thread.
        self._stderr = bytearray()

    # Per-thread instance state -------------------------------------------------------------

    @property
    def _store(self) -> Store | None:
        return getattr(self._local, "store", None)

    @_store.setter
    def _store(self, store: Store | None) -> None:
        self._local.store = store

    @property
    def _funcs(self) -> dict[str, ExportCall]:
        return getattr(self._local, "funcs", {})

    @_funcs.setter
    def _funcs(self, funcs: dict[str, ExportCall]) -> None:
        self._local.funcs = funcs

    # Instance management (worker thread) ------------------------------------------------

    def _instantiate(self) -> None:
        assert self._imports is not None
        self._drop_store()
        store = sandbox_store(self.memory_max_pages, self._on_stderr, self.env)
        try:
            store.set_epoch_deadline(ticks_for(self.timeout_ms))
            instance: Instance = build_linker(self._imports).instantiate(store, self.component)
            funcs = {}
            for name in EXPORTS:
                func = instance.get_func(store, name)
                if func is None:
                    raise WasmCallError(f"the component does not export {name!r}")
                funcs[name] = ExportCall(func, store)  # its type looked up once
        except Exception:
            store.close()
            raise
        self._store, self._funcs = store, funcs
        self.instances += 1
        status = self._enter("start", self._config_json)
        log.debug("wasm plugin %s started: %s", self.manifest.id, status)

    def _on_stderr(self, data: bytes) -> None:
        self._stderr += data
        del self._stderr[:-4096]

    def _settle_stderr(self) -> None:
        """Wait (at most 50 ms) until the guest's stderr stops growing. A guest abort (out
        of memory, an uncaught exception) traps with `unreachable`, and its traceback,
        which names the cause, reaches `_on_stderr` from wasmtime's I/O thread, sometimes
        after the trap itself."""
        size = -1
        for _ in range(10):
            if size == len(self._stderr) and size > 0:
                return
            size = len(self._stderr)
            time.sleep(0.005)

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
            if "unreachable" in str(exc):
                self._settle_stderr()
            stderr = self._stderr.decode(errors="replace")
            message = describe_trap(exc, self.timeout_ms, self.memory_max_pages, stderr)
            if self._ctx is not None:
                self._ctx._services.audit.record(
                    self.manifest.id, "wasm_trap", message, export=export
                )
            raise WasmCallError(f"{export}: {message}") from None

    def _call_sync(self, export: str, *args: str) -> Any:
        if self._store is None:
            self._instantiate()
            restart_clock()  # the export gets its own full bound after `start`
        return self._enter(export, *args)

    async def _call(self, export: str, *args: str) -> Any:
        if not self._started:  # never bring back an instance the host has stopped
            raise WasmCallError(
                f"{export}: plugin {self.manifest.id!r} is stopped; enable it to call it again"
            )
        return await self._run(export, self._call_sync, export, *args)

    # The guest thread, and calls stuck where the epoch cannot reach ------------------------

    def _new_thread(self) -> GuestThread:
        return GuestThread(f"tether-wasm-{self.manifest.id}", on_exit=self._drop_store)

    async def _run(self, export: str, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in the guest thread, watched by `_watchdog`."""
        if self._stuck_threads:
            self._refuse_if_stuck(export)
        thread = self._thread
        if thread is None:
            thread = self._thread = self._new_thread()
        try:
            future = thread.submit(fn, *args, label=export)
        except RuntimeError:
            raise WasmCallError(f"{export}: plugin {self.manifest.id!r} is closed") from None
        if self._watch is None:  # one timer per busy period, not one per call
            self._watch = future.get_loop().call_later(self._bound_s, self._watchdog)
        return await future

    def _watchdog(self) -> None:
        """Runs while calls are in flight. A call still running `_bound_s` after it began is
        stuck in a blocking host call (the epoch deadline would have stopped guest code):
        its thread is abandoned and the call fails now."""
        self._watch = None
        thread, now, wake = self._thread, time.monotonic(), None
        for t in [thread, *self._stuck_threads] if thread is not None else []:
            job = t.current()
            if job is None:
                continue
            left = job.started + self._bound_s - now
            if left > 0:  # began late (queued), or re-clocked after a new instance's start
                wake = left if wake is None else min(wake, left)
                continue
            if t is thread:
                self._abandon(t, job.label)
            if not job.future.done():
                job.future.set_exception(WasmCallError(f"{job.label}: {self._stuck_message()}"))
        if wake is None and self._thread is not None and self._thread.pending():
            wake = self._bound_s
        if wake is not None:
            self._watch = asyncio.get_running_loop().call_later(wake, self._watchdog)

    def _stuck_message(self) -> str:
        return (
            f"the component did not return within its time limit of {self.timeout_ms} ms: "
            "it is blocked in a host call that the CPU limit cannot interrupt (for example "
            "time.sleep); its instance was abandoned and the next call starts a fresh one"
        )

    def _abandon(self, old: GuestThread, export: str) -> None:
        """Leave the thread (and its store) to its stuck call; queued calls move to a fresh
        thread, which makes a fresh instance. The old thread closes its store when the call
        finally returns."""
        new = self._thread = self._new_thread()
        for job in old.abandon():
            new.adopt(job)
        self.stuck += 1
        self._stuck_threads.append(old)
        message = self._stuck_message()
        log.warning("wasm plugin %s: %s: %s", self.manifest.id, export, message)
        if self._ctx is not None:
            self._ctx._services.audit.record(self.manifest.id, "wasm_stuck", message, export=export)

    def _refuse_if_stuck(self, export: str) -> None:
        """Each stuck call holds a thread and a store: past MAX_STUCK, refuse new calls."""
        self._stuck_threads = [t for t in self._stuck_threads if t.alive()]
        if len(self._stuck_threads) >= MAX_STUCK:
            raise WasmCallError(
                f"{export}: plugin {self.manifest.id!r} has {len(self._stuck_threads)} calls "
                "still blocked in host calls; new calls are refused until they return "
                "(disable or unload the plugin, and fix the blocking call)"
            )

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self, ctx: Context) -> None:
        """Bind the imports to `ctx` and instantiate; runs the component's `start`."""
        self._ctx = ctx
        self._imports = HostImports(
            ctx, asyncio.get_running_loop(), timeout_s=self.timeout_ms / 1000
        )
        config = ctx.config if isinstance(ctx.config, dict) else ctx.config.model_dump()
        self._config_json = json.dumps(config)
        self._started = True
        await self._run("start", self._start_sync)

    def _start_sync(self) -> None:
        self._instantiate()

    async def stop(self) -> None:
        """Run the component's `stop` and drop the store. A trap or a hang in `stop` raises
        `WasmCallError` (within the plugin's time limit); the store is dropped either way."""
        self._started = False
        if self._imports is None:
            return
        await self._run("stop", self._stop_sync)

    def _stop_sync(self) -> None:
        try:
            if self._store is not None:
                self._enter("stop")
        finally:
            self._drop_store()

    async def close(self) -> None:
        """Stop, close the store and end the guest thread (a thread left to a stuck call
        ends, closing its store, when that call returns)."""
        try:
            await self.stop()
        finally:
            thread = self._thread
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None
            if thread is not None:
                thread.close()
                await asyncio.to_thread(thread.join, self._bound_s)

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
        raise WasmCallError(
            f"{what}: the component returned a result that is not JSON ({text[:80]!r}); "
            "return JSON text, e.g. json.dumps(value)"
        ) from None


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
    value = _result_value(result, what)
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
        return str(_result_value(result, f"command /{name}", parse=False))

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
