"""One wasm component instance behind the membrane: `WasmPlugin`.

Every call runs in the plugin's own guest thread (runtime/wasm_thread.py), under an epoch
deadline re-armed before the call (the CPU bound) and a store memory limit
(`memory_max_pages`). A trap fails that call with a clear message and poisons the store;
the next call gets a new store and instance (`start` runs again), so durable state belongs
in host storage. A call stuck where the epoch cannot reach (a blocking host call) is
abandoned with its thread and store. See docs/wasm.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wasmtime import Store
from wasmtime.component import Component, Instance, Variant

from tether.contract.manifest import Manifest
from tether.contract.policy import Resolution
from tether.runtime.wasm_engine import describe_trap, sandbox_store, ticks_for
from tether.runtime.wasm_export import ExportCall
from tether.runtime.wasm_host import HostImports, build_linker
from tether.runtime.wasm_ingress import Delivery, Reply, envelope, execute_commands, parse_output
from tether.runtime.wasm_thread import GuestThread, restart_clock

if TYPE_CHECKING:
    from tether.runtime.context import Context

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
        return result_value(result, f"tool {name!r}")

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
            text = result_value(result, f"ingress {ingress_name!r}", parse=False)
            accepted, commands = parse_output(text)
        except (WasmCallError, ValueError) as exc:
            return Delivery(accepted=False, error=str(exc))
        out = await execute_commands(self._ctx, event, commands, reply)
        out.accepted = accepted
        return out


def result_value(result: Any, what: str, *, parse: bool = True) -> Any:
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
