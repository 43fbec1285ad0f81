"""Clocks for the scheduler and the notification bus: the wall clock on the event loop, and
a manual clock that tests (and docs) move forward by hand, so nothing really sleeps."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

START = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
"""Where a `ManualClock` starts by default: 2024-01-01T00:00:00Z."""


@runtime_checkable
class Clock(Protocol):
    """Time in UNIX seconds (UTC), and a way to sleep until a given time."""

    def now(self) -> float:
        """The current time in UNIX seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once `now() >= deadline` (at once when it already is)."""
        ...


class SystemClock:
    """The wall clock, sleeping on the running event loop."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        # Bounded steps, so a wall clock that was set forward is noticed within a minute.
        while (left := deadline - time.time()) > 0:
            await asyncio.sleep(min(left, 60.0))


class ManualClock:
    """A clock that moves only when told: `await clock.advance(seconds)`.

    `advance` steps through every pending deadline in order, setting the time to it, waking
    its sleepers and letting the loop run (`settle`) before going on, so a job due five
    times in the span runs five times, deterministically. With `auto_advance=True` a sleep
    moves the clock to its deadline at once (for retry back-offs); the requested sleeps are
    recorded in `slept`.
    """

    def __init__(
        self,
        start: float | datetime = START,
        *,
        auto_advance: bool = False,
        settle_rounds: int = 50,
    ) -> None:
        self._now = start.timestamp() if isinstance(start, datetime) else float(start)
        self.auto_advance = auto_advance
        self.settle_rounds = settle_rounds
        self.slept: list[float] = []
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def datetime(self) -> datetime:
        """The current time as an aware UTC datetime."""
        return datetime.fromtimestamp(self._now, UTC)

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        if self.auto_advance:
            self.slept.append(deadline - self._now)
            self._now = deadline
            self._wake()
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (deadline, next(self._seq), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock."""
        return sum(1 for _, _, f in self._waiters if not f.done())

    def next_deadline(self) -> float | None:
        """The earliest time someone is waiting for, if anyone is."""
        self._drop_done()
        return self._waiters[0][0] if self._waiters else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking every sleeper due on the way, in order."""
        if seconds < 0:
            raise ValueError("a ManualClock cannot go backwards")
        target = self._now + seconds
        await self.settle()
        while (due := self.next_deadline()) is not None and due <= target:
            self._now = max(self._now, due)
            self._wake()
            await self.settle()
        self._now = target
        await self.settle()

    async def settle(self) -> None:
        """Let the event loop run woken tasks until they wait again (a fixed number of turns)."""
        for _ in range(self.settle_rounds):
            await asyncio.sleep(0)

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._now:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    def _drop_done(self) -> None:
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
