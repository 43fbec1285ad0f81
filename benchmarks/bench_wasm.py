"""The WebAssembly tier: a trivial tool call's round trip against a bare export call.

The component is the example plugin (examples/wasm/hello, built by tests/wasm_build.py and
cached). Variants, each timed as the minimum over interleaved repeats of a batch:

- `bare export call`: `handle_tool(store, "ping", "{}")` through wasmtime-py's public
  `Func.__call__` on the plugin's own store, in the plugin's guest thread.
- `export call, cached type`: the same call through `ExportCall` (the function's type
  looked up once per instance), as the tier makes it.
- `tier, same thread`: the tier's call path without the thread hop (epoch deadline
  re-armed, trap handling), i.e. `WasmPlugin._call_sync`, in the guest thread.
- `thread hop (no-op)` and `executor hop (no-op)`: an empty function run in the plugin's
  `GuestThread`, and for comparison through `loop.run_in_executor` on a 1-thread pool.
- `WasmPlugin.call_tool`: the async API: JSON in and out, and the hop to the plugin's
  guest thread (which keeps the event loop free while the guest runs).
- `host.call_tool`: the whole tool round trip: visibility, hooks, input validated against
  the manifest schema, timeout task, result normalisation, events.

Target: `host.call_tool` within 1.5x of the bare call. Run: `python benchmarks/bench_wasm.py`.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tether.runtime.host import Host
from tether.runtime.wasm_tier import WasmPlugin
from wasm_build import HELLO, build_all

TARGET = 1.5
GRANT = ["tools.register", "storage.read", "storage.write", "events.emit", "http.outbound"]


def _noop() -> None:
    pass


def func_result(call: Any, store: Any) -> Any:
    """The public `Func.__call__` result, to check the cached-type call against."""
    return call.func(store, "ping", "{}")


def _best_sync(fn: Callable[[], object], n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


async def _best_async(fn: Callable[[], Awaitable[object]], n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


async def run(n: int = 2000, repeats: int = 7) -> dict[str, float]:
    """Seconds per call of each variant."""
    wasm_file = build_all()["hello"]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        folder = base / "plugins" / "hello"
        folder.mkdir(parents=True)
        shutil.copyfile(HELLO / "plugin.toml", folder / "plugin.toml")
        shutil.copyfile(wasm_file, folder / "hello.wasm")
        grants = ", ".join(f'"{g}"' for g in GRANT)
        (base / "tether.toml").write_text(f"[plugins.hello]\ngrant = [{grants}]\n")
        async with Host(base / "tether.toml") as host:
            wasm = getattr(host.records["hello"].plugin, "wasm", None)
            assert isinstance(wasm, WasmPlugin), host.records["hello"].error
            assert (await host.call_tool("plugin_hello_ping", {})).content == "pong"
            thread = wasm._thread
            assert thread is not None
            # the store is entered only in its own thread, so the same-thread variants run there
            store, call = await thread.submit(lambda: (wasm._store, wasm._funcs["handle-tool"]))
            assert store is not None and call(store, "ping", "{}") == func_result(call, store)

            def in_thread(fn: Callable[[], object]) -> Awaitable[float]:
                return thread.submit(_best_sync, fn, n, repeats)

            out: dict[str, float] = {}
            out["bare export call"] = await in_thread(lambda: call.func(store, "ping", "{}"))
            out["export call, cached type"] = await in_thread(lambda: call(store, "ping", "{}"))
            out["tier, same thread"] = await in_thread(
                lambda: wasm._call_sync("handle-tool", "ping", "{}")
            )
            out["thread hop (no-op)"] = await _best_async(lambda: thread.submit(_noop), n, repeats)
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(1) as pool:
                hop = functools.partial(loop.run_in_executor, pool, _noop)
                out["executor hop (no-op)"] = await _best_async(hop, n, repeats)
            out["WasmPlugin.call_tool"] = await _best_async(
                lambda: wasm.call_tool("ping", {}), n, repeats
            )
            out["host.call_tool"] = await _best_async(
                lambda: host.call_tool("plugin_hello_ping", {}), n, repeats
            )
            return out


def main() -> None:
    quick = "--quick" in sys.argv
    figures = asyncio.run(run(n=300 if quick else 2000, repeats=3 if quick else 7))
    bare = figures["bare export call"]
    for name, secs in figures.items():
        print(f"{name:24} {secs * 1e6:8.1f} µs  {secs / bare:5.2f}x")
    ratio = figures["host.call_tool"] / bare
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"target host.call_tool ≤ {TARGET}x bare: {verdict} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
