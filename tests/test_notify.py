"""The notification bus: channels by kind, retries with back-off, the circuit breaker, and
the plugin surfaces (`ctx.notifications`, `@plugin.channel`, `host.notify`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tether import (
    CapabilityViolationError,
    Host,
    ManualClock,
    NameClashError,
    NotificationRequest,
    NotificationResult,
    Plugin,
    RegistrationError,
)
from tether.services.notify import BreakerPolicy, NotificationBus, RetryPolicy

NO_JITTER = RetryPolicy(attempts=3, base_delay=0.5, factor=2, jitter=False)


class Channel:
    """A channel handler answering from a script of results (or exceptions)."""

    def __init__(self, *script: NotificationResult | BaseException) -> None:
        self.script = list(script)
        self.requests: list[NotificationRequest] = []

    async def __call__(self, req: NotificationRequest) -> NotificationResult:
        self.requests.append(req)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        return step


OK = NotificationResult.success("delivered")
BUSY = NotificationResult.error("503 from upstream", retryable=True)
BAD = NotificationResult.error("no such recipient", retryable=False)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(auto_advance=True)  # back-off sleeps move the clock and are recorded


@pytest.fixture
def errors() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
def make_bus(
    clock: ManualClock, errors: list[tuple[str, str, str]]
) -> Callable[..., NotificationBus]:
    def make(**kw: Any) -> NotificationBus:
        kw.setdefault("retry", NO_JITTER)
        return NotificationBus(clock, on_error=lambda *a: errors.append(a), **kw)

    return make


async def test_send_reaches_the_handler(make_bus: Callable[..., NotificationBus]) -> None:
    bus = make_bus()
    ch = Channel(OK)
    bus.register("alerts", "sms", ch)
    result = await bus.send("sms", "+351900000000", "server down", {"prio": 1}, sender="ops")
    assert (result.ok, result.message, result.attempts) == (True, "delivered", 1)
    assert ch.requests == [
        NotificationRequest("sms", "+351900000000", "server down", {"prio": 1}, "ops")
    ]
    assert result.to_json() == {"ok": True, "message": "delivered", "attempts": 1}


async def test_unknown_kind_names_the_known_ones(make_bus: Callable[..., NotificationBus]) -> None:
    bus = make_bus()
    empty = await bus.send("pager", "me", "hi")
    assert not empty.ok and not empty.retryable
    assert empty.message == "no notification channel of kind 'pager'; known kinds: none"
    bus.register("a", "sms", Channel(OK))
    bus.register("b", "email", Channel(OK))
    result = await bus.send("pager", "me", "hi")
    assert result.message == "no notification channel of kind 'pager'; known kinds: email, sms"


async def test_bad_arguments_are_error_results(make_bus: Callable[..., NotificationBus]) -> None:
    bus = make_bus()
    ch = Channel(OK)
    bus.register("a", "sms", ch)
    r1 = await bus.send("sms", 42, "hi")  # type: ignore[arg-type]
    r2 = await bus.send("sms", "me", "hi", metadata=["x"])  # type: ignore[arg-type]
    assert "recipient must be text" in r1.message and "metadata must be a dict" in r2.message
    assert ch.requests == []


async def test_retryable_failures_back_off_exponentially(
    make_bus: Callable[..., NotificationBus], clock: ManualClock
) -> None:
    bus = make_bus()
    ch = Channel(BUSY, BUSY, OK)
    bus.register("a", "sms", ch)
    result = await bus.send("sms", "me", "hi")
    assert (result.ok, result.attempts) == (True, 3)
    assert clock.slept == [0.5, 1.0]
    assert len(ch.requests) == 3


async def test_exhausted_retries_return_the_last_error(
    make_bus: Callable[..., NotificationBus], clock: ManualClock
) -> None:
    bus = make_bus(retry=RetryPolicy(attempts=4, base_delay=1, factor=3, max_delay=5, jitter=False))
    bus.register("a", "sms", Channel(BUSY))
    result = await bus.send("sms", "me", "hi")
    assert (result.ok, result.retryable, result.attempts) == (False, True, 4)
    assert result.message == "503 from upstream"
    assert clock.slept == [1, 3, 5]  # 1, 3, 9 capped at max_delay


async def test_permanent_errors_are_not_retried(make_bus: Callable[..., NotificationBus]) -> None:
    bus = make_bus()
    ch = Channel(BAD)
    bus.register("a", "sms", ch)
    result = await bus.send("sms", "nobody", "hi")
    assert (result.ok, result.retryable, result.attempts) == (False, False, 1)
    assert len(ch.requests) == 1


async def test_raising_handler_is_a_retryable_failure(
    make_bus: Callable[..., NotificationBus], errors: list[tuple[str, str, str]]
) -> None:
    bus = make_bus()
    bus.register("flaky", "sms", Channel(ConnectionError("refused"), OK))
    result = await bus.send("sms", "me", "hi")
    assert (result.ok, result.attempts) == (True, 2)
    assert errors == [
        ("flaky", "sms", "channel 'sms' (plugin 'flaky') failed: ConnectionError: refused")
    ]
    bus.register("crashy", "fax", Channel(SystemExit(1)))  # not even SystemExit escapes
    crashed = await bus.send("fax", "me", "hi")
    assert not crashed.ok and crashed.retryable and "PluginCrash" in crashed.message


@pytest.mark.timeout(10)
async def test_handler_timeout_is_retryable(make_bus: Callable[..., NotificationBus]) -> None:
    bus = make_bus(retry=RetryPolicy(attempts=2, base_delay=0.01, jitter=False))
    calls = 0

    async def hangs(req: NotificationRequest) -> NotificationResult:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    bus.register("slow", "sms", hangs, timeout=0.05)
    result = await bus.send("sms", "me", "hi")
    assert (result.ok, result.retryable, result.attempts, calls) == (False, True, 2, 2)
    assert result.message == "channel 'sms' (plugin 'slow') timed out after 0.05s"


async def test_wrong_return_type_is_a_permanent_error(
    make_bus: Callable[..., NotificationBus],
) -> None:
    bus = make_bus()

    def sync_handler(req: NotificationRequest) -> str:  # sync handlers run in a thread
        return "sent!"

    bus.register("lazy", "sms", sync_handler)
    result = await bus.send("sms", "me", "hi")
    assert (result.ok, result.retryable, result.attempts) == (False, False, 1)
    assert "returned str, not a NotificationResult" in result.message


async def test_breaker_opens_after_consecutive_failures(
    make_bus: Callable[..., NotificationBus], clock: ManualClock
) -> None:
    bus = make_bus(retry=RetryPolicy(attempts=1), breaker=BreakerPolicy(threshold=5))
    ch = Channel(BUSY)
    bus.register("a", "sms", ch)
    for _ in range(5):
        assert (await bus.send("sms", "me", "hi")).message == "503 from upstream"
    assert bus.channels()[0].state == "open"
    blocked = await bus.send("sms", "me", "hi")
    assert blocked.message.startswith("circuit open: channel 'sms' failed 5 sends in a row")
    assert "next trial in 30.0s" in blocked.message
    assert (blocked.ok, blocked.retryable, blocked.attempts) == (False, True, 0)
    assert len(ch.requests) == 5  # the handler was not called while open

    await clock.advance(29.9)
    assert (await bus.send("sms", "me", "hi")).attempts == 0
    await clock.advance(0.1)
    assert bus.channels()[0].state == "half_open"
    trial = await bus.send("sms", "me", "hi")  # one trial, which fails: open again
    assert (trial.attempts, len(ch.requests), bus.channels()[0].state) == (1, 6, "open")

    await clock.advance(30)
    ch.script = [OK]
    assert (await bus.send("sms", "me", "hi")).ok
    info = bus.channels()[0]
    assert (info.state, info.consecutive_failures, info.sent, info.failed) == ("closed", 0, 1, 6)


async def test_only_one_trial_while_half_open(make_bus: Callable[..., NotificationBus]) -> None:
    clock = ManualClock()
    bus = NotificationBus(clock, retry=RetryPolicy(attempts=1), breaker=BreakerPolicy(2, 10))
    release = asyncio.Event()
    calls = 0

    async def handler(req: NotificationRequest) -> NotificationResult:
        nonlocal calls
        calls += 1
        if calls > 2:
            await release.wait()
            return OK
        return BUSY

    bus.register("a", "sms", handler)
    await bus.send("sms", "me", "1")
    await bus.send("sms", "me", "2")
    await clock.advance(10)
    trial = asyncio.create_task(bus.send("sms", "me", "trial"))
    await clock.settle()
    other = await bus.send("sms", "me", "meanwhile")
    assert other.message.startswith("circuit open") and calls == 3
    release.set()
    assert (await trial).ok
    assert bus.channels()[0].state == "closed"


async def test_permanent_errors_do_not_trip_the_breaker(
    make_bus: Callable[..., NotificationBus],
) -> None:
    bus = make_bus(retry=RetryPolicy(attempts=1), breaker=BreakerPolicy(threshold=2))
    ch = Channel(BUSY, BAD, BUSY, BAD)
    bus.register("a", "sms", ch)
    for _ in range(4):
        await bus.send("sms", "me", "hi")
    assert bus.channels()[0].state == "closed" and len(ch.requests) == 4


async def test_backoff_timing_with_a_stepped_clock() -> None:
    clock = ManualClock()  # no auto-advance: time moves only when the test says so
    bus = NotificationBus(clock, retry=NO_JITTER)
    ch = Channel(BUSY, BUSY, OK)
    bus.register("a", "sms", ch)
    send = asyncio.create_task(bus.send("sms", "me", "hi"))
    await clock.settle()
    assert len(ch.requests) == 1
    await clock.advance(0.49)
    assert len(ch.requests) == 1
    await clock.advance(0.01)
    assert len(ch.requests) == 2
    await clock.advance(1.0)
    assert (await send).attempts == 3


def test_jitter_stays_within_half_to_full_delay() -> None:
    policy = RetryPolicy(base_delay=2, factor=2, jitter=True)
    waits = [policy.delay(2) for _ in range(200)]
    assert all(2.0 <= w <= 4.0 for w in waits) and len(set(waits)) > 1


async def test_one_handler_per_kind(make_bus: Callable[..., NotificationBus]) -> None:
    bus = make_bus()
    bus.register("first", "sms", Channel(OK))
    with pytest.raises(NameClashError, match="'sms' is already claimed by plugin 'first'"):
        bus.register("second", "sms", Channel(OK))
    with pytest.raises(RegistrationError, match="channel kind 'SMS!'"):
        bus.register("second", "SMS!", Channel(OK))
    assert bus.remove_plugin("first") == 1
    bus.register("second", "sms", Channel(OK))
    assert [(c.kind, c.plugin_id) for c in bus.channels()] == [("sms", "second")]


# Through a Host --------------------------------------------------------------------------


def sms_plugin(plugin_id: str = "sms", reply: NotificationResult = OK) -> Plugin:
    p = Plugin(id=plugin_id, capabilities=["notifications.register"])
    p.got = []  # type: ignore[attr-defined]

    @p.channel("sms")
    async def deliver(req: NotificationRequest) -> NotificationResult:
        p.got.append(req)  # type: ignore[attr-defined]
        return reply

    return p


def sender_plugin(caps: list[str]) -> Plugin:
    p = Plugin(id="alerter", capabilities=caps)

    @p.tool
    async def alert(text: str) -> str:
        result = await p.context.notifications.send("sms", "+1555", text, {"via": "tool"})
        return f"{result.ok}:{result.message}"

    return p


async def test_plugins_send_through_a_claimed_channel() -> None:
    sms = sms_plugin()
    alerter = sender_plugin(["tools.register", "notifications.send"])
    async with Host(plugins=[sms, alerter], discover=False) as host:
        result = await host.call_tool("plugin_alerter_alert", {"text": "disk full"})
        assert result.content == "True:delivered"
        direct = await host.notify("sms", "+1666", "from the host")
        assert direct.ok
        got = sms.got  # type: ignore[attr-defined]
        assert [(r.sender, r.recipient, r.text, r.metadata) for r in got] == [
            ("alerter", "+1555", "disk full", {"via": "tool"}),
            ("host", "+1666", "from the host", {}),
        ]
        assert alerter.context.notifications.kinds() == ["sms"]


async def test_second_claim_fails_that_plugin_and_first_keeps_it() -> None:
    first, second = sms_plugin("sms-a"), sms_plugin("sms-b", BAD)
    async with Host(plugins=[first, second], discover=False) as host:
        states = {p["id"]: (p["state"], p["reason"]) for p in host.plugins()}
        assert states == {"sms-a": ("active", None), "sms-b": ("error", "name_clash")}
        error = next(p["error"] for p in host.plugins() if p["id"] == "sms-b")
        assert "'sms' is already claimed by plugin 'sms-a'" in error
        assert (await host.notify("sms", "x", "y")).ok
        assert len(first.got) == 1  # type: ignore[attr-defined]


async def test_channel_goes_away_with_its_plugin() -> None:
    async with Host(plugins=[sms_plugin()], discover=False) as host:
        await host.disable("sms")
        result = await host.notify("sms", "x", "y")
        assert result.message == "no notification channel of kind 'sms'; known kinds: none"
        assert await host.enable("sms")
        assert (await host.notify("sms", "x", "y")).ok


async def test_grants_are_checked() -> None:
    quiet = sms_plugin()
    quiet.manifest = quiet.manifest.model_copy(update={"capabilities": ("tools.register",)})  # type: ignore[union-attr]
    alerter = sender_plugin(["tools.register"])
    async with Host(plugins=[quiet, alerter], discover=False) as host:
        info = next(p for p in host.plugins() if p["id"] == "sms")
        assert info["warnings"] == ["channel sms skipped: notifications.register is not granted"]
        result = await host.call_tool("plugin_alerter_alert", {"text": "x"})
        assert result.is_error and "notifications.send" in result.content
        with pytest.raises(CapabilityViolationError):
            alerter.context.notifications.register("pager", Channel(OK))


async def test_failing_channel_is_noted_on_its_plugin() -> None:
    p = Plugin(id="broken", capabilities=["notifications.register"])

    @p.channel("sms")
    async def deliver(req: NotificationRequest) -> NotificationResult:
        raise RuntimeError("gateway gone")

    async with Host(plugins=[p], discover=False, clock=ManualClock(auto_advance=True)) as host:
        result = await host.notify("sms", "x", "y")
        assert (result.ok, result.attempts) == (False, 3)
        info = host.plugins()[0]
        assert info["state"] == "active" and "RuntimeError: gateway gone" in info["error"]
