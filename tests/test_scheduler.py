"""The scheduler service, driven by a ManualClock: cron ticks, end-to-start intervals,
one-shot delays, overlap skipping, failures, timeouts, cancelling; then through a Host."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import write_plugin, write_policy
from tether import (
    CapabilityViolationError,
    Event,
    Host,
    ManualClock,
    NameClashError,
    Plugin,
    RefusalReason,
    RegistrationError,
)
from tether.services.events import EventBus
from tether.services.scheduler import Scheduler, SystemClock

T0 = ManualClock().now()  # 2024-01-01T00:00:00Z


class Recorder:
    """Collects `scheduler.task_executed` events from a real EventBus."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[dict[str, Any]] = []
        bus.subscribe("scheduler.task_executed", "test", self.on_event)

    async def on_event(self, event: Event) -> None:
        self.events.append(event.data)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
async def sched(clock: ManualClock, bus: EventBus) -> Any:
    errors: list[tuple[str, str, str]] = []
    s = Scheduler(clock, events=bus, on_error=lambda *a: errors.append(a))
    s.errors = errors  # type: ignore[attr-defined]
    yield s
    await s.close()


async def test_cron_runs_at_every_tick_in_utc(sched: Scheduler, clock: ManualClock) -> None:
    ran: list[float] = []

    async def tick() -> None:
        ran.append(clock.now())

    info = sched.add_cron("p", "every5", "*/5 * * * *", tick, timeout=5)
    assert (info.kind, info.spec, info.next_run, info.run_count) == (
        "cron",
        "*/5 * * * *",
        T0 + 300,
        0,
    )
    await clock.advance(299)
    assert ran == []
    await clock.advance(15 * 60 - 299)
    assert ran == [T0 + 300, T0 + 600, T0 + 900]
    job = sched.jobs("p")[0]
    assert (job.run_count, job.failure_count, job.last_run, job.next_run) == (
        3,
        0,
        T0 + 900,
        T0 + 1200,
    )
    assert job.to_json()["next_run"] == "2024-01-01T00:20:00+00:00"


async def test_daily_cron_fires_at_nine_utc(sched: Scheduler, clock: ManualClock) -> None:
    ran: list[float] = []
    sched.add_cron("p", "morning", "0 9 * * *", lambda: ran.append(clock.now()), timeout=5)
    await clock.advance(9 * 3600 - 1)
    assert ran == []
    await clock.advance(1)
    await sched.idle()  # a sync job runs in a worker thread
    assert ran == [T0 + 9 * 3600]


async def test_interval_gap_is_from_end_to_next_start(sched: Scheduler, clock: ManualClock) -> None:
    starts: list[float] = []

    async def slow() -> None:
        starts.append(clock.now())
        await clock.sleep_until(clock.now() + 2)  # the run takes 2 s of clock time

    sched.add_interval("p", "poll", 10, slow, timeout=5)
    await clock.advance(40)
    # first run 10 s after registration; each next start 10 s after the previous END
    assert starts == [T0 + 10, T0 + 22, T0 + 34]
    assert sched.get("p", "poll") is not None
    assert sched.get("p", "poll").next_run == T0 + 46  # type: ignore[union-attr]


async def test_delay_runs_once_then_stays_listed(sched: Scheduler, clock: ManualClock) -> None:
    ran: list[float] = []

    async def once() -> None:
        ran.append(clock.now())

    sched.add_delay("p", "later", 5, once, timeout=5)
    await clock.advance(60)
    assert ran == [T0 + 5]
    (job,) = sched.jobs("p")
    assert (job.kind, job.run_count, job.next_run, job.last_run) == ("delay", 1, None, T0 + 5)
    # A finished one-shot may be scheduled again under the same name.
    sched.add_delay("p", "later", 1, once, timeout=5)
    await clock.advance(1)
    assert ran == [T0 + 5, T0 + 61]


async def test_names_are_unique_per_plugin(sched: Scheduler) -> None:
    sched.add_interval("p", "sync", 60, lambda: None, timeout=5)
    with pytest.raises(NameClashError, match=r"'p'.*job named 'sync' is already scheduled"):
        sched.add_cron("p", "sync", "* * * * *", lambda: None, timeout=5)
    sched.add_interval("q", "sync", 60, lambda: None, timeout=5)  # another plugin: fine
    assert [(j.plugin_id, j.name) for j in sched.jobs()] == [("p", "sync"), ("q", "sync")]


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("61 * * * *", "out of range"),
        ("* * * *", "exactly 5 fields"),
        ("0 * * * * *", "exactly 5 fields"),
        ("every day", "exactly 5 fields"),
    ],
)
async def test_invalid_cron_names_job_and_expression(sched: Scheduler, expr: str, why: str) -> None:
    with pytest.raises(RegistrationError) as err:
        sched.add_cron("p", "report", expr, lambda: None, timeout=5)
    assert "job 'report'" in str(err.value)
    assert repr(expr) in str(err.value) and why in str(err.value)
    assert sched.jobs() == []


async def test_bad_seconds_and_names(sched: Scheduler) -> None:
    for bad in (0, -1, float("inf"), "5", True):
        with pytest.raises(RegistrationError, match="interval must be a positive number"):
            sched.add_interval("p", "x", bad, lambda: None, timeout=5)  # type: ignore[arg-type]
    with pytest.raises(RegistrationError, match="job name"):
        sched.add_delay("p", "has space", 1, lambda: None, timeout=5)
    with pytest.raises(RegistrationError, match="not callable"):
        sched.add_delay("p", "x", 1, "nope", timeout=5)  # type: ignore[arg-type]


async def test_cancel_stops_future_runs(sched: Scheduler, clock: ManualClock) -> None:
    ran: list[float] = []

    async def tick() -> None:
        ran.append(clock.now())

    sched.add_cron("p", "m", "* * * * *", tick, timeout=5)
    await clock.advance(120)
    assert sched.cancel("p", "m") is True
    assert sched.cancel("p", "m") is False
    await clock.advance(600)
    assert ran == [T0 + 60, T0 + 120]
    assert sched.jobs() == [] and clock.sleepers == 0


async def test_tick_during_a_run_is_skipped_and_counted(
    sched: Scheduler, clock: ManualClock, bus: EventBus
) -> None:
    release = asyncio.Event()
    starts: list[float] = []

    async def long_run() -> None:
        starts.append(clock.now())
        await release.wait()

    sched.add_cron("p", "busy", "* * * * *", long_run, timeout=30)
    await clock.advance(60)
    assert starts == [T0 + 60] and sched.jobs()[0].running
    await clock.advance(120)  # ticks at +120 and +180 arrive while the first run goes on
    job = sched.jobs()[0]
    assert (job.skip_count, job.run_count, len(starts)) == (2, 0, 1)
    release.set()
    await clock.settle()
    assert sched.jobs()[0].run_count == 1 and not sched.jobs()[0].running
    await clock.advance(60)
    assert starts == [T0 + 60, T0 + 240]


async def test_failing_job_is_counted_reported_and_runs_again(
    sched: Scheduler, clock: ManualClock, bus: EventBus
) -> None:
    seen = Recorder(bus)
    calls: list[int] = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database down")

    sched.add_interval("p", "flaky", 30, flaky, timeout=5)
    await clock.advance(30)
    job = sched.jobs()[0]
    assert (job.run_count, job.failure_count) == (1, 1)
    assert job.last_error == "RuntimeError: database down"
    assert sched.errors == [("p", "flaky", "RuntimeError: database down")]  # type: ignore[attr-defined]
    await clock.advance(30)
    assert sched.jobs()[0].run_count == 2 and sched.jobs()[0].failure_count == 1
    await bus.drain()
    assert [(e["plugin"], e["job"], e["ok"], e["error"]) for e in seen.events] == [
        ("p", "flaky", False, "RuntimeError: database down"),
        ("p", "flaky", True, None),
    ]
    assert all(isinstance(e["duration"], float) and e["duration"] >= 0 for e in seen.events)


async def test_system_exit_in_a_sync_job_fails_that_run_only(
    sched: Scheduler, clock: ManualClock
) -> None:
    def quits() -> None:
        raise SystemExit(3)

    sched.add_delay("p", "quit", 1, quits, timeout=5)
    await clock.advance(1)
    await sched.idle()
    assert "PluginCrash" in str(sched.jobs()[0].last_error)


@pytest.mark.timeout(10)
async def test_async_timeout(sched: Scheduler, clock: ManualClock) -> None:
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    sched.add_delay("p", "hang", 1, hangs, timeout=0.05)
    await clock.advance(1)
    await sched.idle()
    job = sched.jobs()[0]
    assert (job.failure_count, job.last_error) == (1, "timed out after 0.05s")
    assert cancelled.is_set()


@pytest.mark.timeout(10)
async def test_timed_out_thread_keeps_the_job_busy(sched: Scheduler, clock: ManualClock) -> None:
    gate = threading.Event()
    threads: list[str] = []

    def blocks() -> None:
        threads.append(threading.current_thread().name)
        gate.wait(5)

    sched.add_interval("p", "sync", 10, blocks, timeout=0.05)
    await clock.advance(10)
    deadline = time.monotonic() + 2
    while sched.jobs()[0].run_count == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    job = sched.jobs()[0]
    assert job.last_error == "timed out after 0.05s" and job.running  # thread still going
    await clock.advance(10)  # the next start finds the thread still running: skipped
    assert sched.jobs()[0].skip_count == 1 and len(threads) == 1
    gate.set()
    await sched.idle()
    await clock.advance(10)
    await sched.idle()
    assert len(threads) == 2 and threads[0].startswith("tether-job")
    assert threads[0] != threading.main_thread().name


async def test_cancel_plugin_cancels_in_flight_runs(sched: Scheduler, clock: ManualClock) -> None:
    stopped = asyncio.Event()

    async def runs() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise

    sched.add_delay("p", "a", 1, runs, timeout=30)
    sched.add_interval("p", "b", 60, runs, timeout=30)
    sched.add_interval("q", "c", 60, runs, timeout=30)
    await clock.advance(1)
    assert sched.cancel_plugin("p") == 2
    await clock.settle()
    assert stopped.is_set()
    assert [j.name for j in sched.jobs()] == ["c"]


@pytest.mark.timeout(10)
async def test_real_clock_smoke() -> None:
    s = Scheduler(SystemClock())
    ends: list[float] = []
    starts: list[float] = []

    async def job() -> None:
        starts.append(time.monotonic())
        await asyncio.sleep(0.02)
        ends.append(time.monotonic())

    s.add_interval("p", "fast", 0.05, job, timeout=1)
    await asyncio.sleep(0.4)
    await s.close()
    assert len(starts) >= 3
    gaps = [b - a for a, b in zip(ends, starts[1:], strict=False)]
    assert min(gaps) >= 0.045  # measured from the end of one run to the start of the next


# Through a Host --------------------------------------------------------------------------


def reporter() -> Plugin:
    """Records every scheduler.task_executed event it hears."""
    p = Plugin(id="reporter", capabilities=["events.subscribe"])
    p.heard = []  # type: ignore[attr-defined]

    @p.on("scheduler.task_executed")
    async def heard(event: Event) -> None:
        p.heard.append(event.data)  # type: ignore[attr-defined]

    return p


async def test_declared_jobs_run_through_the_host() -> None:
    clock = ManualClock()
    p = Plugin(id="digest", capabilities=["scheduler.read", "scheduler.write"])
    ran: list[str] = []

    @p.job("morning", cron="0 9 * * *")
    async def morning() -> None:
        ran.append("morning")

    @p.job("poll", interval=3600)
    def poll() -> None:
        ran.append("poll")

    rep = reporter()
    async with Host(plugins=[p, rep], discover=False, clock=clock) as host:
        assert [(j.plugin_id, j.name, j.kind) for j in host.scheduler.jobs()] == [
            ("digest", "morning", "cron"),
            ("digest", "poll", "interval"),
        ]
        for _ in range(9):  # the sync job runs in a thread: let each run end before the next
            await clock.advance(3600)
            await host.scheduler.idle()
        await host.events.drain()
        assert sorted(ran) == ["morning"] + ["poll"] * 9
        assert p.context.scheduler.list()[0].run_count == 1
        events = rep.heard  # type: ignore[attr-defined]
        assert {(e["plugin"], e["job"], e["ok"]) for e in events} == {
            ("digest", "poll", True),
            ("digest", "morning", True),
        }
        assert len(events) == 10
    assert clock.sleepers == 0  # stopping the host cancelled every job


async def test_grants_are_checked() -> None:
    clock = ManualClock()
    p = Plugin(id="nosched", capabilities=["tools.register"])

    @p.job("tick", interval=60)
    async def tick() -> None: ...

    async with Host(plugins=[p], discover=False, clock=clock) as host:
        info = host.plugins()[0]
        assert info["state"] == "active"
        assert info["warnings"] == ["job tick skipped: scheduler.write is not granted"]
        assert host.scheduler.jobs() == []
        with pytest.raises(CapabilityViolationError, match=r"scheduler\.read"):
            p.context.scheduler.list()
        with pytest.raises(CapabilityViolationError, match=r"scheduler\.write"):
            p.context.scheduler.delay("x", 1, tick)


def test_decorator_needs_exactly_one_schedule() -> None:
    p = Plugin(id="x")
    with pytest.raises(ValueError, match="exactly one of cron=, interval=, delay=; got none"):
        p.job("a")
    with pytest.raises(ValueError, match="got cron, interval"):
        p.job("a", cron="* * * * *", interval=5)


async def test_invalid_declared_cron_fails_activation(tmp_path: Path) -> None:
    p = Plugin(id="badcron", capabilities=["scheduler.write"])

    @p.job("report", cron="0 25 * * *")
    async def report() -> None: ...

    async with Host(plugins=[p], discover=False, base_dir=tmp_path, clock=ManualClock()) as host:
        info = host.plugins()[0]
        assert (info["state"], info["reason"]) == ("error", RefusalReason.ACTIVATION_FAILED)
        assert "job 'report'" in info["error"] and "'0 25 * * *'" in info["error"]


async def test_teardown_cancels_jobs_even_when_it_raises(plugin_dir: Path) -> None:
    code = """
        from tether import Plugin

        plugin = Plugin()
        runs = []

        @plugin.job("tick", cron="* * * * *")
        async def tick():
            runs.append(1)

        @plugin.on_load
        def load(ctx):
            ctx.scheduler.interval("dynamic", 30, tick)

        @plugin.on_disable
        def broken():
            raise RuntimeError("teardown bug")
    """
    write_plugin(plugin_dir, "ticker", code, capabilities=["scheduler.write"])
    write_policy(plugin_dir.parent, '[plugins.ticker]\ngrant = ["scheduler.write"]\n')
    clock = ManualClock()
    async with Host(base_dir=plugin_dir.parent, clock=clock) as host:
        assert [j.name for j in host.scheduler.jobs()] == ["tick", "dynamic"]
        await clock.advance(60)
        await host.disable("ticker")
        info = host.plugins()[0]
        assert info["state"] == "disabled"
        assert any("teardown bug" in w for w in info["warnings"])
        assert host.scheduler.jobs() == [] and clock.sleepers == 0
        # Enabling again re-applies the declarations: a fresh schedule, no duplicates.
        assert await host.enable("ticker")
        assert [j.run_count for j in host.scheduler.jobs()] == [0, 0]


async def test_job_timeout_comes_from_policy(plugin_dir: Path) -> None:
    code = """
        import asyncio
        from tether import Plugin

        plugin = Plugin()

        @plugin.job("slow", delay=1)
        async def slow():
            await asyncio.sleep(10)
    """
    write_plugin(plugin_dir, "slowpoke", code, capabilities=["scheduler.write"])
    write_policy(
        plugin_dir.parent,
        '[plugins.slowpoke]\ngrant = ["scheduler.write"]\nlimits = { timeout_ms = 50 }\n',
    )
    clock = ManualClock()
    async with Host(base_dir=plugin_dir.parent, clock=clock) as host:
        await clock.advance(1)
        await host.scheduler.idle()
        (job,) = host.scheduler.jobs()
        assert job.last_error == "timed out after 0.05s"
        info = host.plugins()[0]
        assert info["state"] == "active" and "job slow failed: timed out" in info["error"]


async def test_duplicate_dynamic_job_fails_that_plugin_only() -> None:
    clock = ManualClock()
    p = Plugin(id="twice", capabilities=["scheduler.write"])
    ok = Plugin(id="fine", capabilities=["scheduler.write"])

    @p.on_load
    def load(ctx: Any) -> None:
        ctx.scheduler.interval("same", 5, lambda: None)
        ctx.scheduler.delay("same", 5, lambda: None)

    @ok.job("same", interval=5)
    def same() -> None: ...

    async with Host(plugins=[p, ok], discover=False, clock=clock) as host:
        states = {i["id"]: (i["state"], i["reason"]) for i in host.plugins()}
        assert states == {"twice": ("error", "name_clash"), "fine": ("active", None)}
        assert "'same' is already scheduled" in host.plugins()[0]["error"]
        assert [(j.plugin_id, j.name) for j in host.scheduler.jobs()] == [("fine", "same")]
