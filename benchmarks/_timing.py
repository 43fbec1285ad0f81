"""Shared timing helpers for the benchmarks: timeit-style loops, interleaved, minimum wins.

Every comparison runs its variants in the same process and interleaves them: repeat 1 of
every variant, then repeat 2 of every variant, and so on. On a shared, noisy machine a
burst of load then hits all variants alike, and the minimum over the repeats (the run with
the least interference) is the figure reported. Ratios are taken between minimums.

The statement under test is compiled into a loop, as `timeit` does, so the only overhead
common to every variant is one iteration of `for _ in repeat(None, n)`.

Clock: CPU-bound, single-threaded comparisons (the hook chains) use `time.thread_time`, the
CPU time of the measuring thread, so time spent descheduled while other processes hold the
two shared cores is not counted; anything that hands work to another thread or waits on
I/O (tool dispatch, activation) uses the wall clock, `time.perf_counter`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import statistics
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

_SYNC_TEMPLATE = """
def _batch(_n, _timer, _repeat):
    _t0 = _timer()
    for _ in _repeat(None, _n):
        {stmt}
    return _timer() - _t0
"""

_ASYNC_TEMPLATE = """
async def _batch(_n, _timer, _repeat):
    _t0 = _timer()
    for _ in _repeat(None, _n):
        {stmt}
    return _timer() - _t0
"""


@dataclass(frozen=True, slots=True)
class Settings:
    """How long each batch runs and how many batches each variant gets."""

    target_s: float = 0.2
    repeats: int = 7
    timer: Callable[[], float] = time.perf_counter
    quick: bool = False
    """A smoke run: figures are meaningless and targets are not judged."""

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        return cls(target_s=0.002, repeats=2, quick=True) if quick else cls()

    def with_timer(self, timer: Callable[[], float]) -> Settings:
        return dataclasses.replace(self, timer=timer)

    @property
    def timer_name(self) -> str:
        return getattr(self.timer, "__name__", "timer")


@dataclass(slots=True)
class Timing:
    """Per-call times of one variant, in microseconds."""

    label: str
    loops: int = 0
    samples: list[float] = field(default_factory=list)

    @property
    def best_us(self) -> float:
        return min(self.samples)

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples)


@dataclass(frozen=True, slots=True)
class Variant:
    """One thing to time: `stmt` (Python source, may use `await` when `is_async`) run with
    `env` as its globals."""

    label: str
    stmt: str
    env: dict[str, Any]
    is_async: bool = False

    def compile(self) -> Callable[..., Any]:
        template = _ASYNC_TEMPLATE if self.is_async else _SYNC_TEMPLATE
        namespace = dict(self.env)
        exec(template.format(stmt=self.stmt), namespace)
        return namespace["_batch"]  # type: ignore[no-any-return]


async def _run_batch(
    batch: Callable[..., Any], is_async: bool, n: int, timer: Callable[[], float]
) -> float:
    if is_async:
        coro: Coroutine[Any, Any, float] = batch(n, timer, repeat)
        return await coro
    return float(batch(n, timer, repeat))


async def _calibrate(batch: Callable[..., Any], is_async: bool, settings: Settings) -> int:
    """Loops per batch so that one batch takes about `target_s`.

    Grows the loop count tenfold until a batch takes a tenth of the target, then scales
    it, so a batch never runs much longer than the target (a batch that never yields
    blocks the event loop, and a long one would trip the host's watchdog).
    """
    n = 1
    while True:
        elapsed = await _run_batch(batch, is_async, n, settings.timer)
        await asyncio.sleep(0)
        if elapsed >= settings.target_s / 10:
            return max(1, round(n * settings.target_s / elapsed))
        n *= 10


async def compare(variants: list[Variant], settings: Settings) -> dict[str, Timing]:
    """Time every variant (interleaved, `settings.repeats` batches each); needs a loop.

    The garbage collector is off during each batch, as in `timeit`. Between batches the
    event loop gets a turn, so timers (e.g. the host's watchdog heartbeat) stay on time.
    """
    batches = [(v, v.compile()) for v in variants]
    timings = {v.label: Timing(v.label) for v in variants}
    for v, batch in batches:
        timings[v.label].loops = await _calibrate(batch, v.is_async, settings)
    for _ in range(settings.repeats):
        for v, batch in batches:
            t = timings[v.label]
            gc_was_on = gc.isenabled()
            gc.disable()
            try:
                elapsed = await _run_batch(batch, v.is_async, t.loops, settings.timer)
            finally:
                if gc_was_on:
                    gc.enable()
            t.samples.append(elapsed / t.loops * 1e6)
            await asyncio.sleep(0)
    return timings


def fmt_us(us: float) -> str:
    if us >= 1000:
        return f"{us / 1000:,.2f} ms"
    if us >= 100:
        return f"{us:,.0f} µs"
    if us >= 10:
        return f"{us:.1f} µs"
    return f"{us:.2f} µs"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over repeats of a/b, each from the same round of interleaved batches."""
    return statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))
