"""The dedicated thread a wasm plugin's calls run in.

A `queue.SimpleQueue` feeds the thread and each result comes back to the event loop with
one `call_soon_threadsafe`; that round trip costs about half of `run_in_executor`'s. Calls
run one at a time in submission order, so a store made in the thread is entered by it
alone. A thread whose call is stuck where the epoch deadline cannot reach it (a blocking
host call such as WASI's clock poll behind `time.sleep`) can be abandoned: it takes no new
work, hands back what was queued, and runs its `on_exit` (which closes its store) once
the stuck call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tether.wasm")

_here = threading.local()  # the GuestThread running in this thread, if any


class Job:
    """One submitted call: what to run, and the future the caller awaits."""

    __slots__ = ("args", "fn", "future", "label", "loop", "started")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
        label: str,
    ) -> None:
        self.fn = fn
        self.args = args
        self.future = future
        self.loop = future.get_loop()
        self.label = label
        self.started = 0.0  # time.monotonic() when it began (or was re-clocked)


class GuestThread:
    """A daemon thread that runs submitted calls in order (one per wasm plugin).

    `submit(fn, *args)` returns a future of `fn(*args)`, run in the thread; `close()`
    ends the thread after the calls already queued. Daemon, so that a thread stuck in a
    blocking host call never holds up the interpreter's exit.
    """

    def __init__(self, name: str, on_exit: Callable[[], None] | None = None) -> None:
        self.name = name
        self._on_exit = on_exit
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._current: Job | None = None
        self._closed = False
        self._abandoned = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        """No new calls are taken (closed or abandoned)."""
        return self._closed

    def alive(self) -> bool:
        return not self._done.is_set()

    def submit(self, fn: Callable[..., Any], *args: Any, label: str = "") -> asyncio.Future[Any]:
        """Queue `fn(*args)`; the returned future resolves on the calling event loop.
        Cancelling the future skips the call if it has not begun (a running call cannot
        be stopped from here). `label` names the call for whoever watches it."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        future = asyncio.get_running_loop().create_future()
        self._queue.put(Job(fn, args, future, label))
        return future

    def current(self) -> Job | None:
        """The call running now, if any."""
        return self._current

    def pending(self) -> bool:
        """Calls are queued and not begun."""
        return not self._queue.empty()

    def abandon(self) -> list[Job]:
        """Take no more work; return the calls still queued (not begun) so the caller can
        run them elsewhere. The running call, if any, finishes in this thread, which then
        runs `on_exit` and ends."""
        self._closed = self._abandoned = True
        jobs: list[Job] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                jobs.append(job)
        self._queue.put(None)
        return jobs

    def adopt(self, job: Job) -> None:
        """Run a call handed back by another thread's `abandon()`."""
        self._queue.put(job)

    def close(self) -> None:
        """End the thread once the queued calls have run."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)

    def join(self, timeout: float) -> bool:
        """Wait (blocking) up to `timeout` s for the thread to end; True when it has."""
        return self._done.wait(timeout)

    def _run(self) -> None:
        _here.thread = self
        try:
            while not self._abandoned:
                job = self._queue.get()
                if job is None:
                    break
                if job.future.cancelled():
                    continue  # the caller gave up before it began
                job.started = time.monotonic()
                self._current = job
                try:
                    value = job.fn(*job.args)
                except BaseException as exc:  # the caller gets every failure
                    self._current = None
                    _resolve(job, None, exc)
                else:
                    self._current = None
                    _resolve(job, value, None)
        finally:
            try:
                if self._on_exit is not None:
                    self._on_exit()
            except Exception:
                log.exception("%s: cleanup failed", self.name)
            self._done.set()


def restart_clock() -> None:
    """Count the running call's time from now (a call that first makes a new instance runs
    two bounded guest calls in a row). A no-op outside a guest thread."""
    thread: GuestThread | None = getattr(_here, "thread", None)
    job = thread._current if thread is not None else None
    if job is not None:
        job.started = time.monotonic()


def _resolve(job: Job, value: Any, exc: BaseException | None) -> None:
    if exc is not None and not isinstance(exc, Exception):
        # SystemExit or KeyboardInterrupt would stop the event loop, not fail one call
        exc = RuntimeError(f"{type(exc).__name__} raised in the guest thread")
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        job.loop.call_soon_threadsafe(_settle, job.future, value, exc)


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():  # cancelled by the caller, or failed when its thread was abandoned
        return
    if exc is None:
        future.set_result(value)
    else:
        future.set_exception(exc)
