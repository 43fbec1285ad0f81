"""Tool dispatch overhead: `host.call_tool` against calling the tool's function directly.

`await host.call_tool("plugin_p_echo", {"text": "hi", "times": 2})` does: visibility check,
before_tool_call hooks (none registered), JSON Schema validation of the arguments, the
handler in its own task under the tool's timeout (`wait_task`: a waiter future, a timer and
a done-callback), result normalisation, after_tool_call hooks (none) and two event emits
(no subscribers). The baseline is `await echo(text="hi", times=2)`.

A sync tool runs in a worker thread; its baselines are the direct call and
`await asyncio.to_thread(fn, ...)`.

The ladder below adds one part at a time, so the differences between rungs say where the
time goes. The async ladder runs on one thread and never waits idle (every task is ready
at once), so it is timed with the thread's CPU clock; the sync ladder hands work to a
worker thread, so it is timed with the wall clock. No target is set.

Run: `python benchmarks/bench_dispatch.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from _timing import Settings, Timing, Variant, compare, fmt_us, ratio, table
from tether import Caller, Host, Plugin, Policy, ToolCall, ToolResult
from tether.contract.policy import HostSettings
from tether.runtime.dispatch import execute, normalise_result
from tether.services.calls import wait_task

ARGS = {"text": "hi", "times": 2}


async def echo(text: str, times: int = 1) -> str:
    """Repeat the text."""
    return " ".join([text] * times)


def echo_sync(text: str, times: int = 1) -> str:
    """Repeat the text (sync: runs in a worker thread)."""
    return " ".join([text] * times)


def make_plugin() -> Plugin:
    plugin = Plugin(id="p", name="Bench", capabilities=["tools.register"])
    plugin.tool(echo)
    plugin.tool(echo_sync)
    return plugin


async def in_task(fn: Any, **kwargs: Any) -> Any:
    """The handler in its own task, awaited directly (no timeout)."""
    return await asyncio.get_running_loop().create_task(fn(**kwargs))


async def in_bounded_task(fn: Any, timeout: float, **kwargs: Any) -> Any:
    """The handler in its own task, waited for with Tether's `wait_task` (as execute does)."""
    task = asyncio.get_running_loop().create_task(fn(**kwargs))
    await wait_task(task, timeout)
    return task.result()


@dataclass(slots=True)
class DispatchReport:
    async_tool: dict[str, Timing]
    sync_tool: dict[str, Timing]
    markdown: str = ""


def quiet_policy() -> Policy:
    """Default policy, but a watchdog threshold above any benchmark batch: a batch never
    yields to the event loop for its ~0.2 s (longer in wall time on a loaded machine), and
    a report about it would only add noise. The hot path is the same either way."""
    return Policy(host=HostSettings(watchdog_ms=5000))


# (label, description) in ladder order; each rung includes everything above it.
ASYNC_LADDER = [
    ("direct", "`await echo(text=..., times=...)`"),
    ("task", "the same in a new task: `await loop.create_task(echo(...))`"),
    ("bounded", "task + `wait_task` (waiter future, timeout timer, done-callback)"),
    ("execute", "`dispatch.execute`: + validation, kwargs, `_run` wrapper, normalisation"),
    ("call_tool", "`host.call_tool`: + visibility, hooks (none), 2 emits (no subscribers)"),
]
ASYNC_PARTS = [
    ("no_validate", "`dispatch.execute` with the tool's validator replaced by a no-op"),
    ("validate", "compiled JSON Schema validator on the arguments alone (hot loop)"),
    ("hooks", "`before_tool_call` + `after_tool_call` with no hooks registered"),
    ("normalise", "`normalise_result` of a string"),
]
SYNC_LADDER = [
    ("direct", "`echo_sync(text=..., times=...)` (sync call)"),
    ("to_thread", "`await asyncio.to_thread(echo_sync, ...)`"),
    ("call_tool", "`host.call_tool` (task + worker thread + everything above)"),
]


async def measure(settings: Settings) -> DispatchReport:
    with tempfile.TemporaryDirectory() as tmp:
        host = Host(quiet_policy(), base_dir=tmp, plugins=[make_plugin()])
        await host.start()
        try:
            return await _measure(host, settings)
        finally:
            await host.stop()


async def _measure(host: Host, settings: Settings) -> DispatchReport:
    assert [p["state"] for p in host.plugins()] == ["active"], host.plugins()
    tool = host.registry.tools["plugin_p_echo"]
    assert tool.is_async and tool.convert is None and not tool.injected
    sync_tool = host.registry.tools["plugin_p_echo_sync"]
    assert not sync_tool.is_async
    operator = Caller.operator()
    call = ToolCall("plugin_p_echo", ARGS)
    expected = "hi hi"
    assert (await host.call_tool("plugin_p_echo", ARGS)).content == expected
    assert (await host.call_tool("plugin_p_echo_sync", ARGS)).content == expected
    assert await echo(**ARGS) == echo_sync(**ARGS) == expected  # type: ignore[arg-type]

    def sink(*_: object) -> None:
        raise AssertionError("the benchmark call failed")

    limits = {"max_result_bytes": host.config.policy.host.max_result_bytes}
    env: dict[str, Any] = {
        "host": host,
        "hooks": host.hooks,
        "tool": tool,
        "tool_nv": dataclasses.replace(tool, validate=lambda _: None),
        "validate": tool.validate,
        "echo": echo,
        "echo_sync": echo_sync,
        "in_task": in_task,
        "in_bounded_task": in_bounded_task,
        "timeout": tool.timeout_s,
        "execute": execute,
        "normalise": normalise_result,
        "operator": operator,
        "call": call,
        "result": ToolResult(expected),
        "args": ARGS,
        "limits": limits,
        "sink": sink,
        "to_thread": asyncio.to_thread,
    }
    r = await execute(tool, ARGS, operator, on_error=sink, on_stuck=sink, **limits)
    assert r.content == expected and not r.is_error
    stmts = {
        "direct": "await echo(text='hi', times=2)",
        "task": "await in_task(echo, text='hi', times=2)",
        "bounded": "await in_bounded_task(echo, timeout, text='hi', times=2)",
        "execute": "await execute(tool, args, operator, on_error=sink, on_stuck=sink, **limits)",
        "call_tool": "await host.call_tool('plugin_p_echo', args)",
        "no_validate": "await execute(tool_nv, args, operator, on_error=sink, on_stuck=sink, "
        "**limits)",
        "validate": "validate(args)",
        "hooks": "await hooks.after_tool_call(call, await hooks.before_tool_call(call))",
        "normalise": "normalise('hi hi', 1048576)",
    }
    async_t = await compare(
        [Variant(k, stmts[k], env, is_async=True) for k, _ in ASYNC_LADDER + ASYNC_PARTS],
        settings.with_timer(time.thread_time),
    )
    sync_stmts = {
        "direct": "echo_sync(text='hi', times=2)",
        "to_thread": "await to_thread(echo_sync, text='hi', times=2)",
        "call_tool": "await host.call_tool('plugin_p_echo_sync', args)",
    }
    sync_t = await compare(
        [Variant(k, sync_stmts[k], env, is_async=True) for k, _ in SYNC_LADDER],
        settings.with_timer(time.perf_counter),
    )
    report = DispatchReport(async_t, sync_t)
    report.markdown = render(report, settings)
    return report


def _ladder(t: dict[str, Timing], ladder: list[tuple[str, str]]) -> str:
    rows = []
    prev: float | None = None
    base = t[ladder[0][0]].best_us
    for key, what in ladder:
        us = t[key].best_us
        step = "" if prev is None else f"+{fmt_us(us - prev)}" if us >= prev else fmt_us(us - prev)
        rows.append([key, what, fmt_us(us), step, ratio(us, base), fmt_us(t[key].median_us)])
        prev = us
    return table(["rung", "what runs", "min", "step", "vs direct", "median"], rows)


def _dominant(t: dict[str, Timing]) -> str:
    total = t["call_tool"].best_us - t["direct"].best_us
    validation = t["execute"].best_us - t["no_validate"].best_us
    parts = {
        "task creation and one event-loop round trip (`create_task` + await)": t["task"].best_us
        - t["direct"].best_us,
        "bounding the wait (`wait_task`: future, timer, callbacks; one more loop round trip)": t[
            "bounded"
        ].best_us
        - t["task"].best_us,
        "argument validation (JSON Schema), in context": validation,
        "kwargs, `functools.partial`, `_run` wrapper, normalisation": t["execute"].best_us
        - t["bounded"].best_us
        - validation,
        "host layer (visibility, empty hook chains, emits)": t["call_tool"].best_us
        - t["execute"].best_us,
    }
    lines = [
        f"- {name}: {fmt_us(us)} ({us / total:.0%} of the {fmt_us(total)} overhead)"
        for name, us in parts.items()
    ]
    top = max(parts, key=lambda k: parts[k])
    lines.append(f"\nLargest part: {top}.")
    return "\n".join(lines)


def render(report: DispatchReport, settings: Settings) -> str:
    a, s = report.async_tool, report.sync_tool
    return "\n\n".join(
        [
            "## Tool dispatch",
            f"Per-call minimum over {settings.repeats} interleaved repeats (each batch about "
            f"{settings.target_s:g} s). Async tool: `thread_time` (CPU of the loop thread); "
            "sync tool: `perf_counter` (wall clock, since a worker thread runs the tool).",
            "### Async tool (`plugin_p_echo`)",
            _ladder(a, ASYNC_LADDER),
            f"call_tool / direct await: {ratio(a['call_tool'].best_us, a['direct'].best_us)}; "
            f"call_tool / direct in a task: {ratio(a['call_tool'].best_us, a['task'].best_us)}.",
            "Parts measured on their own:",
            table(
                ["part", "what runs", "min"],
                [[k, what, fmt_us(a[k].best_us)] for k, what in ASYNC_PARTS],
            ),
            "Where the overhead of call_tool over a direct await goes:",
            _dominant(a),
            "### Sync tool (`plugin_p_echo_sync`, worker thread)",
            _ladder(s, SYNC_LADDER),
            f"call_tool / direct call: {ratio(s['call_tool'].best_us, s['direct'].best_us)}; "
            f"call_tool / to_thread: {ratio(s['call_tool'].best_us, s['to_thread'].best_us)}.",
        ]
    )


def run(settings: Settings) -> DispatchReport:
    return asyncio.run(measure(settings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny loops (smoke test)")
    args = parser.parse_args(argv)
    print(run(Settings.for_mode(args.quick)).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
