"""The event-loop watchdog: plugin code that blocks the loop is reported by plugin and
function; well-behaved code (awaiting, or sync code in a worker thread) is not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tether import Host, Plugin, Policy
from tether.contract.policy import HostSettings, PluginPolicy
from tether.runtime.watchdog import BlockReport, Watchdog, plugin_of_frame

PLUGIN_CODE = """
import asyncio
import time

from tether import Plugin

plugin = Plugin()


@plugin.tool
async def hog() -> str:
    time.sleep(0.6)  # blocks the event loop
    return "done"


@plugin.tool
async def nap() -> str:
    await asyncio.sleep(0.3)
    return "rested"


@plugin.tool
def snooze() -> str:
    time.sleep(0.6)  # sync: runs in a worker thread
    return "snoozed"


@plugin.transform_system_prompt
def slow_prompt(prompt: str) -> str:
    if prompt == "block":
        time.sleep(0.6)  # a sync hook runs inline on the loop
    return prompt
"""


def policy() -> Policy:
    grant = ("tools.register", "hooks.model")
    return Policy(
        host=HostSettings(watchdog_ms=100), plugins={"blocker": PluginPolicy(grant=grant)}
    )


@pytest.fixture
def blocker(make_plugin: Callable[..., Path]) -> Path:
    return make_plugin("blocker", PLUGIN_CODE, capabilities=["tools.register", "hooks.model"])


async def wait_for_reports(reports: list[BlockReport], timeout: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not reports and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def run_ticker(stop: asyncio.Event) -> int:
    ticks = 0
    while not stop.is_set():
        await asyncio.sleep(0.01)
        ticks += 1
    return ticks


# --- through a host --------------------------------------------------------------------


@pytest.mark.timeout(20)
async def test_async_tool_that_blocks_the_loop_is_reported(tmp_path: Path, blocker: Path) -> None:
    async with Host(policy(), base_dir=tmp_path) as host:
        assert host.plugins()[0]["state"] == "active"
        result = await host.call_tool("plugin_blocker_hog", {})
        assert (result.content, result.is_error) == ("done", False)
        await wait_for_reports(host.watchdog.reports)
        reports = host.watchdog.reports
        assert len(reports) == 1
        assert (reports[0].plugin_id, reports[0].function) == ("blocker", "hog")
        assert reports[0].seconds >= 0.5
        audit = host.audit.read(plugin="blocker", kind="loop_blocked")
        assert audit and "hog" in audit[0].message and audit[0].detail["seconds"] >= 0.5
        assert "blocked the event loop" in (host.plugins()[0]["error"] or "")


@pytest.mark.timeout(20)
async def test_sync_hook_that_blocks_the_loop_is_reported(tmp_path: Path, blocker: Path) -> None:
    async with Host(policy(), base_dir=tmp_path) as host:
        assert await host.hooks.transform_system_prompt("block") == "block"
        await wait_for_reports(host.watchdog.reports)
        assert [(r.plugin_id, r.function) for r in host.watchdog.reports] == [
            ("blocker", "slow_prompt")
        ]


@pytest.mark.timeout(20)
async def test_awaiting_async_tool_is_not_reported(tmp_path: Path, blocker: Path) -> None:
    async with Host(policy(), base_dir=tmp_path) as host:
        stop = asyncio.Event()
        ticker = asyncio.create_task(run_ticker(stop))
        result = await host.call_tool("plugin_blocker_nap", {})
        stop.set()
        assert result.content == "rested"
        assert await ticker >= 5  # the loop kept running during the call
        await asyncio.sleep(0.3)
        assert host.watchdog.reports == []
        assert host.audit.read(kind="loop_blocked") == []


@pytest.mark.timeout(20)
async def test_sleeping_sync_tool_runs_in_a_thread_and_is_not_reported(
    tmp_path: Path, blocker: Path
) -> None:
    async with Host(policy(), base_dir=tmp_path) as host:
        stop = asyncio.Event()
        ticker = asyncio.create_task(run_ticker(stop))
        result = await host.call_tool("plugin_blocker_snooze", {})
        stop.set()
        assert result.content == "snoozed"
        assert await ticker >= 10  # ~60 ticks fit in 0.6 s; a blocked loop gives one or two
        await asyncio.sleep(0.3)
        assert host.watchdog.reports == []
        assert host.audit.read(kind="loop_blocked") == []


# --- the watchdog itself, with a resolver that claims this test module ------------------


def _resolve_this_module(module: str) -> str | None:
    return "tester" if module == __name__ else None


def block_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)


def sleep_in_thread(seconds: float) -> None:
    time.sleep(seconds)


@pytest.mark.timeout(20)
async def test_watchdog_names_innermost_plugin_function_and_duration() -> None:
    seen: list[BlockReport] = []
    dog = Watchdog(0.1, seen.append, _resolve_this_module)
    dog.start(asyncio.get_running_loop())
    try:
        await asyncio.sleep(0.05)
        block_the_loop_for(0.5)
        await wait_for_reports(dog.reports)
        await asyncio.sleep(0.1)
    finally:
        dog.stop()
    assert len(dog.reports) == 1
    report = dog.reports[0]
    assert (report.plugin_id, report.function) == ("tester", "block_the_loop_for")
    assert report.seconds >= 0.4
    assert seen == dog.reports  # the sink got the same report
    text = str(report)
    assert "'tester'" in text and "block_the_loop_for()" in text and "make it async" in text


@pytest.mark.timeout(20)
async def test_watchdog_quiet_for_awaits_threads_and_unattributed_blocks() -> None:
    dog = Watchdog(0.1, lambda r: None, _resolve_this_module)
    nobody = Watchdog(0.1, lambda r: None, lambda m: None)
    dog.start(asyncio.get_running_loop())
    nobody.start(asyncio.get_running_loop())
    try:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(sleep_in_thread, 0.4)
        block_the_loop_for(0.4)  # blocked, but no frame belongs to a plugin for `nobody`
        await asyncio.sleep(0.3)
    finally:
        dog.stop()
        nobody.stop()
    assert [(r.plugin_id, r.function) for r in dog.reports] == [("tester", "block_the_loop_for")]
    assert nobody.reports == []


@pytest.mark.timeout(20)
async def test_a_failing_report_sink_does_not_kill_the_watchdog() -> None:
    def sink(report: BlockReport) -> None:
        raise RuntimeError("sink broke")

    dog = Watchdog(0.1, sink, _resolve_this_module)
    dog.start(asyncio.get_running_loop())
    try:
        block_the_loop_for(0.3)
        await asyncio.sleep(0.3)
        block_the_loop_for(0.3)
        await asyncio.sleep(0.3)
    finally:
        dog.stop()
    assert len(dog.reports) == 2


def test_plugin_of_frame_walks_outward_to_the_first_plugin_frame() -> None:
    import sys

    def inner() -> tuple[str, str] | None:
        frame = sys._getframe()
        return plugin_of_frame(frame, lambda m: "p" if m == __name__ else None)

    assert plugin_of_frame(None, lambda m: "p") is None
    assert inner() == ("p", "inner")
    assert plugin_of_frame(sys._getframe(), lambda m: None) is None


async def test_block_in_a_plugin_passed_in_code_is_named(tmp_path: Path) -> None:
    # Code plugins live in the embedding program's modules; the watchdog finds them by the
    # code objects of their declared functions.
    coded = Plugin(id="coded", name="Coded", capabilities=["hooks.model"])

    @coded.transform_system_prompt
    def stall(prompt: str) -> str:
        time.sleep(0.6)
        return prompt

    policy = Policy(host=HostSettings(watchdog_ms=100))
    async with Host(policy, base_dir=tmp_path, plugins=[coded], discover=False) as host:
        await host.hooks.transform_system_prompt("x")
        await asyncio.sleep(0.3)
        reports = list(host.watchdog.reports)
    assert [(r.plugin_id, r.function) for r in reports] == [("coded", "stall")]
    assert reports[0].seconds >= 0.5
