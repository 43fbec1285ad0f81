"""The event bus: fire-and-forget notifications, isolation, threads, interceptors, and the
event surface a plugin sees through its context."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tether import (
    Caller,
    CapabilityViolationError,
    Context,
    Event,
    Host,
    Plugin,
    Policy,
    RegistrationError,
    RunEnd,
    RunEndReason,
    RunEndResult,
    RunStart,
    RunStartResult,
)
from tether.services.events import EventBus

Failure = tuple[str, str, BaseException]


def bus_with_sink() -> tuple[EventBus, list[Failure]]:
    failures: list[Failure] = []
    bus = EventBus(on_error=lambda pid, ev, exc: failures.append((pid, ev, exc)))
    return bus, failures


def info(host: Host, pid: str) -> dict[str, Any]:
    return next(p for p in host.plugins() if p["id"] == pid)


# --- notifications ---------------------------------------------------------------------


async def test_emit_returns_without_awaiting_handlers() -> None:
    bus, failures = bus_with_sink()
    release = asyncio.Event()
    progress: list[str] = []

    async def handler(event: Event) -> None:
        progress.append(f"started {event.data['n']}")
        await release.wait()
        progress.append("finished")

    bus.subscribe("x.ping", "p", handler)
    assert bus.emit("x.ping", {"n": 1}) == 1
    assert progress == []  # emit did not run the handler inline
    await asyncio.sleep(0.05)
    assert progress == ["started 1"]  # it runs on its own, and is still pending
    release.set()
    await bus.drain(timeout=2)
    assert progress == ["started 1", "finished"]
    assert failures == []


async def test_emit_with_no_subscribers_returns_zero() -> None:
    bus, _ = bus_with_sink()
    assert bus.emit("nobody.listens", {}) == 0


@pytest.mark.timeout(10)
async def test_handlers_of_one_event_run_concurrently() -> None:
    bus, failures = bus_with_sink()
    bus.handler_timeout = 3
    first_in, second_in = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def one(event: Event) -> None:
        first_in.set()
        await second_in.wait()  # would deadlock if handlers ran one after the other
        done.append("one")

    async def two(event: Event) -> None:
        second_in.set()
        await first_in.wait()
        done.append("two")

    bus.subscribe("x.go", "p1", one)
    bus.subscribe("x.go", "p2", two)
    bus.emit("x.go")
    await bus.drain(timeout=5)
    assert sorted(done) == ["one", "two"]
    assert failures == []


@pytest.mark.timeout(10)
async def test_failing_and_hanging_handlers_do_not_affect_another() -> None:
    bus, failures = bus_with_sink()
    bus.handler_timeout = 0.2
    got: list[dict[str, Any]] = []

    async def fails(event: Event) -> None:
        raise ValueError("handler exploded")

    async def hangs(event: Event) -> None:
        await asyncio.Event().wait()

    def sync_fails(event: Event) -> None:
        raise SystemExit(1)

    async def good(event: Event) -> None:
        await asyncio.sleep(0.05)
        got.append(event.data)

    bus.subscribe("x.ev", "bad", fails)
    bus.subscribe("x.ev", "slow", hangs)
    bus.subscribe("x.ev", "exiter", sync_fails)
    bus.subscribe("x.ev", "good", good)
    started = time.monotonic()
    assert bus.emit("x.ev", {"k": "v"}, source="src") == 4
    await bus.drain(timeout=5)
    assert time.monotonic() - started < 3
    assert got == [{"k": "v"}]
    by_plugin = {pid: (ev, exc) for pid, ev, exc in failures}
    assert set(by_plugin) == {"bad", "slow", "exiter"}
    assert isinstance(by_plugin["bad"][1], ValueError)
    assert isinstance(by_plugin["slow"][1], TimeoutError)
    assert "SystemExit" in str(by_plugin["exiter"][1])
    assert all(ev == "x.ev" for ev, _ in by_plugin.values())


@pytest.mark.timeout(10)
async def test_sync_handler_runs_off_the_loop() -> None:
    bus, failures = bus_with_sink()
    loop_thread = threading.get_ident()
    handler_thread: list[int] = []
    finished = threading.Event()

    def slow(event: Event) -> None:
        handler_thread.append(threading.get_ident())
        time.sleep(0.3)
        finished.set()

    bus.subscribe("x.slow", "p", slow)
    bus.emit("x.slow")
    ticks = 0
    deadline = time.monotonic() + 5
    while not finished.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        ticks += 1
    await bus.drain(timeout=2)
    assert finished.is_set()
    assert handler_thread and handler_thread[0] != loop_thread
    # ~30 ticks fit in 0.3 s; had the handler blocked the loop there would be one or two
    assert ticks >= 5, ticks
    assert failures == []


async def test_event_carries_name_data_and_source() -> None:
    bus, _ = bus_with_sink()
    got: list[Event] = []
    bus.subscribe("x.a", "p", lambda e: got.append(e))
    bus.emit("x.a", {"n": 1}, source="x")
    await bus.drain(timeout=2)
    assert got == [Event("x.a", {"n": 1}, "x")]


async def test_unsubscribe_and_unsubscribe_plugin() -> None:
    bus, _ = bus_with_sink()
    got: list[str] = []
    s1 = bus.subscribe("x.a", "p", lambda e: got.append("p-a"))
    bus.subscribe("x.b", "p", lambda e: got.append("p-b"))
    bus.subscribe("x.a", "q", lambda e: got.append("q-a"))
    bus.unsubscribe(s1)
    bus.emit("x.a")
    await bus.drain(timeout=2)
    assert got == ["q-a"]
    assert bus.unsubscribe_plugin("p") == 1
    assert bus.emit("x.b") == 0


# --- through a host: errors, threads, capabilities -------------------------------------


@pytest.mark.timeout(15)
async def test_emit_from_worker_thread_is_delivered(tmp_path: Path) -> None:
    a = Plugin(id="a", name="A", capabilities=["tools.register", "events.emit"])
    b = Plugin(id="b", name="B", capabilities=["events.subscribe"])
    got: list[Event] = []
    arrived = asyncio.Event()
    emitter_thread: list[int] = []

    @a.tool
    def fire(n: int, ctx: Context) -> str:
        emitter_thread.append(threading.get_ident())
        return f"started {ctx.events.emit('a.fired', {'n': n})}"

    @b.on("a.fired")
    async def on_fired(event: Event) -> None:
        got.append(event)
        arrived.set()

    async with Host(Policy(), base_dir=tmp_path, plugins=[a, b]) as host:
        result = await host.call_tool("plugin_a_fire", {"n": 7})
        assert (result.content, result.is_error) == ("started 1", False)
        await asyncio.wait_for(arrived.wait(), 5)
    assert emitter_thread[0] != threading.get_ident()
    assert got == [Event("a.fired", {"n": 7}, "a")]


@pytest.mark.timeout(15)
async def test_handler_failure_is_recorded_on_plugin_and_audited(tmp_path: Path) -> None:
    a = Plugin(id="a", name="A", capabilities=["events.emit"])
    bad = Plugin(id="bad", name="Bad", capabilities=["events.subscribe"])
    good = Plugin(id="good", name="Good", capabilities=["events.subscribe"])
    got: list[int] = []

    @bad.on("a.tick")
    def explode(event: Event) -> None:
        raise ValueError("tick handler broke")

    @good.on("a.tick")
    async def count(event: Event) -> None:
        got.append(event.data["i"])

    async with Host(Policy(), base_dir=tmp_path, plugins=[a, bad, good]) as host:
        a.context.events.emit("a.tick", {"i": 1})
        a.context.events.emit("a.tick", {"i": 2})
        await host.events.drain(timeout=5)
        assert sorted(got) == [1, 2]
        error = info(host, "bad")["error"] or ""
        assert "a.tick" in error and "ValueError" in error and "tick handler broke" in error
        assert info(host, "bad")["state"] == "active"
        assert info(host, "good")["error"] is None
        records = host.audit.read(plugin="bad", kind="plugin_error")
        assert records and "tick handler broke" in records[0].message


@pytest.mark.timeout(15)
async def test_handler_timeout_is_recorded_as_timed_out(tmp_path: Path) -> None:
    a = Plugin(id="a", name="A", capabilities=["events.emit"])
    slow = Plugin(id="slow", name="Slow", capabilities=["events.subscribe"])

    @slow.on("a.tick")
    async def hang(event: Event) -> None:
        await asyncio.sleep(30)

    async with Host(Policy(), base_dir=tmp_path, plugins=[a, slow]) as host:
        host.events.handler_timeout = 0.2
        a.context.events.emit("a.tick", {})
        await host.events.drain(timeout=5)
        assert "handler for a.tick timed out" in (info(host, "slow")["error"] or "")


async def test_unknown_host_event_is_refused_with_did_you_mean(tmp_path: Path) -> None:
    p = Plugin(id="p", name="P", capabilities=["events.subscribe"])
    async with Host(Policy(), base_dir=tmp_path, plugins=[p]) as host:
        with pytest.raises(RegistrationError) as err:
            p.context.events.on("message.recieved", lambda e: None)
        msg = str(err.value)
        assert "'message.recieved'" in msg and '"message.received"' in msg and "'p'" in msg
        # a made-up event in a host namespace is refused too
        with pytest.raises(RegistrationError, match=r"unknown event 'tool\.exploded'"):
            p.context.events.on("tool.exploded", lambda e: None)
        assert host.events.subscribers("message.recieved") == ()


async def test_declared_misspelt_event_fails_activation_naming_it(tmp_path: Path) -> None:
    p = Plugin(id="p", name="P", capabilities=["events.subscribe"])
    p.on("message.recieved")(lambda e: None)
    async with Host(Policy(), base_dir=tmp_path, plugins=[p]) as host:
        rec = info(host, "p")
        assert rec["state"] == "error"
        assert rec["reason"] == "activation_failed"
        assert "message.received" in rec["error"]


@pytest.mark.timeout(15)
async def test_plugin_events_are_namespaced_by_owner(tmp_path: Path) -> None:
    caps = ["events.subscribe", "events.emit"]
    a = Plugin(id="a", name="A", capabilities=caps)
    b = Plugin(id="b", name="B", capabilities=caps)
    seen: list[tuple[str, str]] = []
    a.on("a.changed")(lambda e: seen.append(("a", e.source)))
    b.on("a.changed")(lambda e: seen.append(("b", e.source)))

    async with Host(Policy(), base_dir=tmp_path, plugins=[a, b]) as host:
        assert a.context.events.emit("a.changed", {"v": 1}) == 2
        await host.events.drain(timeout=5)
        assert sorted(seen) == [("a", "a"), ("b", "a")]

        for forged in ("a.changed", "other.x", "message.received", "run.start"):
            with pytest.raises(CapabilityViolationError) as err:
                b.context.events.emit(forged, {})
            assert err.value.plugin_id == "b"
            assert forged in str(err.value)
        with pytest.raises(CapabilityViolationError):
            a.context.events.emit("message.received", {})
        with pytest.raises(CapabilityViolationError):
            a.context.events.emit("ab.x", {})  # prefix of another id is not the namespace
        await host.events.drain(timeout=5)
        assert len(seen) == 2  # nothing forged was delivered


async def test_subscribe_without_capability_raises_and_is_audited(tmp_path: Path) -> None:
    p = Plugin(id="p", name="P", capabilities=["events.emit"])
    async with Host(Policy(), base_dir=tmp_path, plugins=[p]) as host:
        with pytest.raises(CapabilityViolationError) as err:
            p.context.events.on("message.received", lambda e: None)
        assert err.value.capability == "events.subscribe"
        assert "events.subscribe" in str(err.value) and "[plugins.p]" in str(err.value)
        records = host.audit.read(plugin="p", kind="capability_violation")
        assert records
        assert records[0].detail["capability"] == "events.subscribe"
        assert "message.received" in records[0].detail["action"]
        assert host.events.subscribers("message.received") == ()


async def test_emit_without_capability_raises(tmp_path: Path) -> None:
    p = Plugin(id="p", name="P", capabilities=["events.subscribe"])
    async with Host(Policy(), base_dir=tmp_path, plugins=[p]) as host:
        with pytest.raises(CapabilityViolationError) as err:
            p.context.events.emit("p.thing", {})
        assert err.value.capability == "events.emit"
        assert host.audit.read(plugin="p", kind="capability_violation")


async def test_interceptor_needs_hooks_run(tmp_path: Path) -> None:
    p = Plugin(id="p", name="P", capabilities=["events.subscribe"])
    p.on("run.start")(lambda e: None)
    async with Host(Policy(), base_dir=tmp_path, plugins=[p]) as host:
        rec = info(host, "p")
        assert rec["state"] == "active"
        assert any("run.start" in w and "hooks.run" in w for w in rec["warnings"])
        assert host.events.subscribers("run.start") == ()


# --- interceptors ----------------------------------------------------------------------

START = RunStart("r1", "s1", "do the thing", Caller("u", frozenset({"member"})))


def end(reply: str) -> RunEnd:
    return RunEnd("r1", "s1", "do the thing", reply, RunEndReason.COMPLETE, START.caller)


async def test_run_start_in_order_first_block_stops(tmp_path: Path) -> None:
    plugins = [Plugin(id=pid, name=pid, capabilities=["hooks.run"]) for pid in "abcd"]
    order: list[str] = []

    def record(pid: str, verdict: RunStartResult | None) -> Any:
        def handler(event: RunStart) -> RunStartResult | None:
            assert event == START
            order.append(pid)
            return verdict

        return handler

    plugins[0].on("run.start")(record("a", RunStartResult(system_prompt="from a")))
    plugins[1].on("run.start")(record("b", None))
    plugins[2].on("run.start")(record("c", RunStartResult(block="quota exceeded")))
    plugins[3].on("run.start")(record("d", RunStartResult(block="d would block too")))

    async with Host(Policy(), base_dir=tmp_path, plugins=plugins) as host:
        out = await host.events.run_start(START)
    assert order == ["a", "b", "c"]
    assert (out.blocked_by, out.block_reason) == ("c", "quota exceeded")


async def test_run_start_prompt_and_env_accumulate_per_plugin() -> None:
    bus, failures = bus_with_sink()

    async def a1(event: RunStart) -> RunStartResult:
        return RunStartResult(system_prompt="A one", env={"A_KEY": "1", "A_KEEP": "k"})

    def a2(event: RunStart) -> RunStartResult:
        return RunStartResult(env={"A_OTHER": "2", "A_KEY": "override"})

    def b1(event: RunStart) -> RunStartResult:
        return RunStartResult(system_prompt="B one", env={"B_KEY": "3"})

    def crash(event: RunStart) -> RunStartResult:
        raise RuntimeError("interceptor crashed")

    def garbage(event: RunStart) -> str:
        return "not a RunStartResult"

    bus.subscribe("run.start", "a", a1)
    bus.subscribe("run.start", "x", crash)
    bus.subscribe("run.start", "b", b1)
    bus.subscribe("run.start", "y", garbage)
    bus.subscribe("run.start", "a", a2)
    out = await bus.run_start(START)
    assert out.blocked_by is None and out.block_reason is None
    assert out.system_prompt == ["A one", "B one"]
    assert out.env == {
        "a": {"A_KEY": "override", "A_KEEP": "k", "A_OTHER": "2"},
        "b": {"B_KEY": "3"},
    }
    assert [(pid, ev) for pid, ev, _ in failures] == [("x", "run.start")]


async def test_run_start_block_keeps_nothing_after_it() -> None:
    bus, _ = bus_with_sink()
    bus.subscribe("run.start", "a", lambda e: RunStartResult(system_prompt="kept", env={"K": "v"}))
    bus.subscribe("run.start", "b", lambda e: RunStartResult(block="no", system_prompt="dropped"))
    out = await bus.run_start(START)
    assert (out.blocked_by, out.block_reason) == ("b", "no")
    assert out.system_prompt == ["kept"]  # what came before the block is reported as it was
    assert out.env == {"a": {"K": "v"}}


async def test_run_end_reply_threads_and_suppression_is_final(tmp_path: Path) -> None:
    plugins = [Plugin(id=pid, name=pid, capabilities=["hooks.run"]) for pid in "abcd"]
    seen: list[tuple[str, str]] = []

    @plugins[0].on("run.end")
    def a(event: RunEnd) -> RunEndResult:
        seen.append(("a", event.reply))
        return RunEndResult(reply=event.reply.upper())

    @plugins[1].on("run.end")
    async def b(event: RunEnd) -> RunEndResult:
        seen.append(("b", event.reply))
        assert event.reason is RunEndReason.COMPLETE and event.run_id == "r1"
        return RunEndResult(reply=event.reply + " [signed]")

    @plugins[2].on("run.end")
    def c(event: RunEnd) -> RunEndResult:
        seen.append(("c", event.reply))
        return RunEndResult(suppress=True)

    @plugins[3].on("run.end")
    def d(event: RunEnd) -> RunEndResult:
        seen.append(("d", event.reply))
        return RunEndResult(reply="resurrected")

    async with Host(Policy(), base_dir=tmp_path, plugins=plugins) as host:
        out = await host.events.run_end(end("hello"))
        assert seen == [("a", "hello"), ("b", "HELLO"), ("c", "HELLO [signed]")]
        assert out.suppressed is True

        await host.disable("c")
        seen.clear()
        out = await host.events.run_end(end("bye"))
        assert out.suppressed is False
        assert out.reply == "resurrected"
        assert seen == [("a", "bye"), ("b", "BYE"), ("d", "BYE [signed]")]


async def test_run_end_failing_interceptor_is_skipped() -> None:
    bus, failures = bus_with_sink()

    def boom(event: RunEnd) -> RunEndResult:
        raise KeyboardInterrupt

    bus.subscribe("run.end", "a", lambda e: RunEndResult(reply=e.reply + "1"))
    bus.subscribe("run.end", "bad", boom)
    bus.subscribe("run.end", "b", lambda e: None)
    bus.subscribe("run.end", "c", lambda e: RunEndResult(reply=e.reply + "2"))
    out = await bus.run_end(end("r"))
    assert (out.reply, out.suppressed) == ("r12", False)
    assert [(pid, ev) for pid, ev, _ in failures] == [("bad", "run.end")]
