"""Scheduled jobs for plugins: cron expressions (UTC), fixed-gap intervals, one-shot delays.

The scheduler knows plugins only by id. Time comes from an injectable `Clock`, so tests
drive it with a `ManualClock` instead of sleeping. Each job has one driver task; each run is
its own task with the plugin's timeout, and a run never overlaps the previous run of the
same job: a tick that arrives while the job is still running is skipped and counted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from croniter import croniter

from tether.contract.errors import NameClashError, RegistrationError
from tether.contract.manifest import check_cron_expression
from tether.services.calls import PluginCrash, call_plugin, is_async_callable, wait_task
from tether.services.clock import Clock, ManualClock, SystemClock
from tether.services.events import EventBus

__all__ = ["Clock", "JobInfo", "JobKind", "ManualClock", "Scheduler", "SystemClock"]

log = logging.getLogger("tether.scheduler")

JobKind = Literal["cron", "interval", "delay"]
JobErrorSink = Callable[[str, str, str], None]
"""Called with (plugin id, job name, error message) when a run fails or times out."""

_T = TypeVar("_T")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
EXECUTED_EVENT = "scheduler.task_executed"


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A snapshot of one job. Times are UNIX seconds (UTC); `spec` is the cron expression or
    the interval/delay in seconds. `run_count` counts finished runs, failed ones included."""

    plugin_id: str
    name: str
    kind: JobKind
    spec: str | float
    last_run: float | None
    next_run: float | None
    run_count: int
    failure_count: int
    skip_count: int
    last_error: str | None
    running: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin_id,
            "name": self.name,
            "kind": self.kind,
            "spec": self.spec,
            "last_run": _iso(self.last_run),
            "next_run": _iso(self.next_run),
            "run_count": self.run_count,
            "failure_count": self.failure_count,
            "skip_count": self.skip_count,
            "last_error": self.last_error,
            "running": self.running,
        }


@dataclass(eq=False, slots=True)
class _Job:
    plugin_id: str
    name: str
    kind: JobKind
    spec: str | float
    fn: Callable[..., Any]
    timeout: float
    next_run: float | None
    last_run: float | None = None
    run_count: int = 0
    failure_count: int = 0
    skip_count: int = 0
    last_error: str | None = None
    finished: bool = False
    driver: asyncio.Task[None] | None = None
    run: asyncio.Task[None] | None = None  # records the outcome; ends at the deadline
    body: asyncio.Task[Any] | None = None  # the plugin code itself
    thread: concurrent.futures.Future[Any] | None = None  # sync code in a worker thread

    def busy(self) -> bool:
        # A timed-out run may live on (a thread cannot be stopped): still busy until it ends.
        body_running = self.body is not None and not self.body.done()
        return body_running or (self.thread is not None and not self.thread.done())

    def info(self) -> JobInfo:
        return JobInfo(
            self.plugin_id,
            self.name,
            self.kind,
            self.spec,
            self.last_run,
            self.next_run,
            self.run_count,
            self.failure_count,
            self.skip_count,
            self.last_error,
            self.busy(),
        )


def cron_next(expr: str, after: float) -> float:
    """The first tick of the 5-field UTC cron expression strictly after `after`."""
    return float(croniter(expr, datetime.fromtimestamp(after, UTC)).get_next(float))


def check_cron(plugin_id: str, name: str, expr: object) -> str:
    """Validate a 5-field cron expression; the error names the plugin, job and expression."""
    try:
        return check_cron_expression(expr)
    except ValueError as exc:
        raise RegistrationError(f"plugin {plugin_id!r}: job {name!r}: {exc}") from None


def _check_seconds(plugin_id: str, name: str, kind: str, seconds: object) -> float:
    ok = isinstance(seconds, int | float) and not isinstance(seconds, bool)
    if not ok or not math.isfinite(float(seconds)) or float(seconds) <= 0:  # type: ignore[arg-type]
        raise RegistrationError(
            f"plugin {plugin_id!r}: job {name!r}: {kind} must be a positive number of "
            f"seconds, not {seconds!r}"
        )
    return float(seconds)  # type: ignore[arg-type]


class Scheduler:
    """Named jobs per plugin id. `clock` defaults to the wall clock on the event loop;
    `events` receives `scheduler.task_executed` after every run."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        events: EventBus | None = None,
        on_error: JobErrorSink | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.events = events
        self._on_error = on_error or (lambda pid, job, msg: None)
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        """The host's loop, for jobs registered from worker threads; set when the host starts."""

    # Registration ----------------------------------------------------------------------

    def add_cron(
        self, plugin_id: str, name: str, expr: str, fn: Callable[..., Any], *, timeout: float
    ) -> JobInfo:
        """Run `fn` at every tick of the 5-field UTC cron expression `expr`."""
        self._check(plugin_id, name, fn)
        expr = check_cron(plugin_id, name, expr)
        nxt = cron_next(expr, self.clock.now())
        return self._add(_Job(plugin_id, name, "cron", expr, fn, timeout, nxt))

    def add_interval(
        self, plugin_id: str, name: str, seconds: float, fn: Callable[..., Any], *, timeout: float
    ) -> JobInfo:
        """Run `fn` `seconds` after registration, then `seconds` after each run ENDS."""
        self._check(plugin_id, name, fn)
        gap = _check_seconds(plugin_id, name, "interval", seconds)
        job = _Job(plugin_id, name, "interval", gap, fn, timeout, self.clock.now() + gap)
        return self._add(job)

    def add_delay(
        self, plugin_id: str, name: str, seconds: float, fn: Callable[..., Any], *, timeout: float
    ) -> JobInfo:
        """Run `fn` once, `seconds` from now. The finished job stays listed (next_run None)
        until cancelled or replaced by a new job of the same name."""
        self._check(plugin_id, name, fn)
        wait = _check_seconds(plugin_id, name, "delay", seconds)
        return self._add(_Job(plugin_id, name, "delay", wait, fn, timeout, self.clock.now() + wait))

    def _check(self, plugin_id: str, name: object, fn: object) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistrationError(
                f"plugin {plugin_id!r}: job name {name!r} must be 1-64 of A-Z a-z 0-9 _ . : -"
            )
        if not callable(fn):
            raise RegistrationError(f"plugin {plugin_id!r}: job {name!r}: {fn!r} is not callable")

    def _add(self, job: _Job) -> JobInfo:
        return self._on_loop(functools.partial(self._add_now, job))

    def _add_now(self, job: _Job) -> JobInfo:
        key = (job.plugin_id, job.name)
        old = self._jobs.get(key)
        if old is not None and not old.finished:
            raise NameClashError(
                f"plugin {job.plugin_id!r}: a job named {job.name!r} is already scheduled; "
                "cancel it first or pick another name"
            )
        self._jobs[key] = job
        job.driver = asyncio.get_running_loop().create_task(
            self._drive(job), name=f"job {job.plugin_id}/{job.name}"
        )
        return job.info()

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        """Call `fn` on the event loop; from a worker thread (sync plugin code), hand it to
        the host's loop and wait for the answer, so the job table has a single writer."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            loop = self.loop
            if loop is None or not loop.is_running():
                raise RuntimeError("the scheduler needs a running event loop") from None
            answer: concurrent.futures.Future[_T] = concurrent.futures.Future()

            def call() -> None:
                try:
                    answer.set_result(fn())
                except BaseException as exc:
                    answer.set_exception(exc)

            loop.call_soon_threadsafe(call)
            return answer.result()
        return fn()

    # Cancelling and listing ------------------------------------------------------------

    def cancel(self, plugin_id: str, name: str) -> bool:
        """Stop future runs of a job (a run in progress finishes); True when it existed."""
        return self._on_loop(functools.partial(self._cancel_now, plugin_id, name))

    def _cancel_now(self, plugin_id: str, name: str) -> bool:
        job = self._jobs.pop((plugin_id, name), None)
        if job is None:
            return False
        if job.driver is not None:
            job.driver.cancel()
        return True

    def cancel_plugin(self, plugin_id: str) -> int:
        """Cancel every job of a plugin, in-progress async runs included; never fails."""
        mine = [job for key, job in self._jobs.items() if key[0] == plugin_id]
        for job in mine:
            del self._jobs[(plugin_id, job.name)]
            for task in (job.driver, job.run, job.body):
                if task is not None:
                    task.cancel()
        return len(mine)

    def jobs(self, plugin_id: str | None = None) -> list[JobInfo]:
        """Every job (or one plugin's jobs), in registration order."""
        jobs = list(self._jobs.values())  # one C-level copy: safe to call from a worker thread
        return [j.info() for j in jobs if plugin_id in (None, j.plugin_id)]

    def get(self, plugin_id: str, name: str) -> JobInfo | None:
        job = self._jobs.get((plugin_id, name))
        return None if job is None else job.info()

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait (in real time) until no job is running, then let the drivers catch up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [j for j in self._jobs.values() if j.busy() or (j.run and not j.run.done())]
            if not busy:
                break
            await asyncio.sleep(0.002)
        for _ in range(20):
            await asyncio.sleep(0)

    async def close(self) -> None:
        """Cancel every job and wait briefly for the drivers to end."""
        tasks = [t for j in self._jobs.values() for t in (j.driver, j.run, j.body) if t]
        for pid in {key[0] for key in self._jobs}:
            self.cancel_plugin(pid)
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # Running ---------------------------------------------------------------------------

    async def _drive(self, job: _Job) -> None:
        """One job's loop: sleep until the next run time, fire, compute the next time."""
        while job.next_run is not None:
            await self.clock.sleep_until(job.next_run)
            tick = job.next_run
            run = self._fire(job)
            if job.kind == "cron":
                # Missed ticks (a blocked loop, a suspended machine) are not replayed.
                job.next_run = cron_next(str(job.spec), max(tick, self.clock.now()))
                continue
            if job.kind == "delay":
                job.next_run = None
            if run is not None:
                # Shielded: cancelling the job stops future runs, not the one in progress.
                await asyncio.shield(run)
            if job.kind == "interval":
                job.next_run = self.clock.now() + float(job.spec)
        job.finished = True

    def _fire(self, job: _Job) -> asyncio.Task[None] | None:
        if job.busy():
            job.skip_count += 1
            log.info("job %s/%s: previous run still running; tick skipped", job.plugin_id, job.name)
            return None
        job.run = asyncio.get_running_loop().create_task(self._run(job))
        return job.run

    async def _run(self, job: _Job) -> None:
        job.last_run = self.clock.now()
        started = time.perf_counter()
        body = asyncio.get_running_loop().create_task(self._invoke(job))
        job.body = body
        body.add_done_callback(_retrieve)
        error: str | None = None
        if not await wait_task(body, job.timeout):
            body.cancel()
            error = f"timed out after {job.timeout:g}s"
        elif body.cancelled():
            error = "cancelled"
        elif (exc := body.exception()) is not None:
            error = f"{type(exc).__name__}: {exc}"
        duration = time.perf_counter() - started
        job.run_count += 1
        if error is not None:
            job.failure_count += 1
            job.last_error = error
            log.warning("job %s/%s failed: %s", job.plugin_id, job.name, error)
            self._on_error(job.plugin_id, job.name, error)
        if self.events is not None:
            data = {"plugin": job.plugin_id, "job": job.name, "ok": error is None}
            data |= {"duration": duration, "error": error}
            self.events.emit(EXECUTED_EVENT, data)

    async def _invoke(self, job: _Job) -> Any:
        if is_async_callable(job.fn):
            return await call_plugin(job.fn)
        # Sync code runs in the scheduler's worker threads; the job stays busy until the
        # thread returns, even after its run was abandoned at the deadline.
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="tether-job")
        job.thread = self._pool.submit(contextvars.copy_context().run, _sync_call, job.fn)
        result = await asyncio.wrap_future(job.thread)
        if asyncio.iscoroutine(result):
            result = await result
        return result


def _sync_call(fn: Callable[..., Any]) -> Any:
    try:
        return fn()
    except Exception:
        raise
    except BaseException as exc:  # SystemExit and friends fail this run only
        raise PluginCrash(exc) from None


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
