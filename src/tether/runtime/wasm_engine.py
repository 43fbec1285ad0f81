"""The WebAssembly tier's engine: one shared wasmtime `Engine` with epoch interruption, a
ticker thread that advances the epoch, the on-disk cache of compiled components, the only
place a `Store` is made (WASI linked but empty: no files, network, environment or args),
and the classification of traps into clear errors.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from wasmtime import Config, Engine, ExitTrap, Store, WasiConfig, WasmtimeError
from wasmtime.component import Component

EPOCH_TICK_S = 0.005
"""How often the epoch advances; CPU bounds are whole ticks of this length."""
ENGINE_CONFIG = "epoch_interruption=1"
"""Part of the cache key: artifacts compiled under another engine config are not reused."""
WASMTIME_VERSION = version("wasmtime")
PAGE_BYTES = 65_536

_engine: Engine | None = None
_engine_lock = threading.Lock()


def engine() -> Engine:
    """The process-wide engine (a component compiled by one engine runs only on it)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            cfg = Config()
            cfg.epoch_interruption = True
            _engine = Engine(cfg)
            threading.Thread(
                target=_tick, args=(_engine,), name="tether-wasm-epoch", daemon=True
            ).start()
        return _engine


def _tick(eng: Engine) -> None:
    while True:
        time.sleep(EPOCH_TICK_S)
        eng.increment_epoch()


def ticks_for(timeout_ms: int) -> int:
    """Epoch ticks for a CPU bound of `timeout_ms` (at least one, plus one for the partial
    tick in progress when the deadline is armed)."""
    return max(1, round(timeout_ms / 1000 / EPOCH_TICK_S)) + 1


def sandbox_store(
    memory_max_pages: int,
    stderr: Callable[[bytes], None] | None = None,
    env: dict[str, str] | None = None,
) -> Store:
    """A new store, ready to instantiate into: WASI set to an empty configuration (the
    linker has WASI linked, and a store without it would abort the process on the first
    call) and linear memory capped at `memory_max_pages` pages of 64 KiB.

    `stderr` receives what the guest writes to stderr (its tracebacks), for error messages.
    `env` is the guest's whole environment: only what the operator granted (`env.inject`
    with the manifest's `env` list), never the host's own.
    Every store of the tier comes from here; close it with `store.close()` when done.
    """
    store = Store(engine())
    wasi = WasiConfig()  # nothing preopened, no args, no inherited stdio
    if env:
        wasi.env = sorted(env.items())
    if stderr is not None:
        wasi.stderr_custom = stderr
    store.set_wasi(wasi)
    store.set_limits(memory_size=memory_max_pages * PAGE_BYTES)
    return store


def cache_key(wasm: bytes) -> str:
    """sha256 of the component, the wasmtime version and the engine config."""
    h = hashlib.sha256(wasm)
    h.update(f"\0wasmtime={WASMTIME_VERSION}\0{ENGINE_CONFIG}".encode())
    return h.hexdigest()


def load_component(path: Path, cache_dir: Path) -> tuple[Component, bool]:
    """Compile the component at `path`, or deserialize it from `cache_dir` (a directory
    only the host writes: artifacts are native code, never loaded from elsewhere).
    Returns the component and True when it came from the cache. Blocking: run it in a
    worker thread."""
    wasm = path.read_bytes()
    cached = cache_dir / f"{cache_key(wasm)}.cwasm"
    if cached.is_file():
        try:
            return Component.deserialize_file(engine(), str(cached)), True
        except WasmtimeError:
            cached.unlink(missing_ok=True)  # stale or damaged: compile again
    component = Component(engine(), wasm)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(bytes(component.serialize()))
    os.replace(tmp, cached)
    return component, False


def describe_trap(
    exc: BaseException, timeout_ms: int, memory_max_pages: int, stderr: str = ""
) -> str:
    """A clear message for a failed call into a component; `stderr` is the tail of what
    the guest wrote there (a Python guest's traceback names its exception)."""
    text = str(exc)
    if "wasm trap: interrupt" in text:
        return f"the component exceeded its CPU time limit of {timeout_ms} ms and was stopped"
    if isinstance(exc, ExitTrap):  # os._exit or sys.exit; WASI 0.2 keeps only 0 or 1
        return f"the component exited (status {exc.code}, e.g. sys.exit or os._exit)"
    mib = memory_max_pages * PAGE_BYTES / (1 << 20)
    if "MemoryError" in stderr or "out of memory" in text.lower():
        return f"the component ran out of memory (limit {mib:g} MiB) and was stopped"
    if "call stack exhausted" in text:
        return "the component exhausted its call stack (runaway recursion) and was stopped"
    if "cannot enter component instance" in text:
        return "the component instance was poisoned by an earlier trap"
    # the guest's traceback ends with its exception; componentize-py's panic lines follow it
    lines = [ln.strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(_RUNTIME_NOISE)]
    cause = lines[-1] if lines else (text.strip().splitlines() or [type(exc).__name__])[-1]
    return f"the component crashed: {cause[:300]}"


_RUNTIME_NOISE = ("thread '", "Python function threw", "note: run with", "lost sys.std")
