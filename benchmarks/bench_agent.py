"""The agent loop's own overhead per turn: a run with 10 plugins hooking every point against
the same run with no plugins, both against the same local scripted model server.

Each run is two turns: the model calls a tool, then answers. Variants are interleaved and
the minimum per-run wall time over the repeats is reported; the difference is what the
plugins' hooks (and the loop's handling of them) cost per run, and per turn.

    .venv/bin/python benchmarks/bench_agent.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_llm import FakeLLM, Reply
from tether import (
    Host,
    Message,
    Plugin,
    Policy,
    RunEndReason,
    RunStartResult,
    ToolCall,
    ToolResult,
    TurnResult,
)
from tether.agent.loop import Agent, AgentConfig
from tether.agent.openai import OpenAICompatibleProvider
from tether.agent.providers import ChatRequest, StreamEvent, TextDelta, TurnDone
from tether.agent.sessions import SessionStore
from tether.contract.policy import HostSettings

HOOK_CAPS = ["hooks.model", "hooks.tools", "hooks.input", "hooks.run"]


def hooking_plugin(i: int) -> Plugin:
    """A plugin with a pass-through handler at every hook and interceptor point."""
    p = Plugin(id=f"hook{i}", name=f"Hook {i}", capabilities=HOOK_CAPS)

    @p.transform_user_input
    def tui(text: str) -> None:
        return None

    @p.on("run.start")
    def rs(event: Any) -> RunStartResult | None:
        return None

    @p.filter_tools
    def ft(tools: list[Any]) -> list[Any]:
        return tools

    @p.transform_system_prompt
    def tsp(prompt: str) -> str:
        return prompt

    @p.before_model_call
    def bmc(messages: list[Message], config: Any) -> None:
        return None

    @p.after_model_call
    def amc(turn: TurnResult) -> None:
        return None

    @p.before_tool_call
    def btc(call: ToolCall) -> None:
        return None

    @p.after_tool_call
    def atc(call: ToolCall, result: ToolResult) -> None:
        return None

    @p.after_run
    def ar(reason: RunEndReason) -> None:
        return None

    @p.on("run.end")
    def re_(event: Any) -> None:
        return None

    return p


def tool_plugin() -> Plugin:
    p = Plugin(id="kit", name="Kit", capabilities=["tools.register"])

    @p.tool
    async def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return p


class InProcessProvider:
    """The same two turns without HTTP, so the loop's own cost is not lost in the noise of
    a socket round trip."""

    name = "in-process"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        if request.messages[-1].role == "tool":
            yield TextDelta("three")
            yield TurnDone(TurnResult("three"))
        else:
            yield TurnDone(TurnResult("", [ToolCall("plugin_kit_add", {"a": 1, "b": 2}, "c1")]))

    async def models(self) -> list[str]:
        return ["in-process"]

    async def aclose(self) -> None:
        pass


async def measure(runs: int, repeats: int, *, over_http: bool = True) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"none": [], "ten": []}
    with FakeLLM() as llm, tempfile.TemporaryDirectory() as tmp:
        settings = Policy(host=HostSettings(watchdog_ms=5000))
        variants = {}
        hosts = []
        for name, plugins in (("none", []), ("ten", [hooking_plugin(i) for i in range(10)])):
            host = Host(
                settings,
                base_dir=Path(tmp) / name,
                plugins=[tool_plugin(), *plugins],
                discover=False,
            )
            await host.start()
            hosts.append(host)
            assert host.db is not None
            provider: Any = (
                OpenAICompatibleProvider(llm.base_url) if over_http else InProcessProvider()
            )
            variants[name] = Agent(host, provider, AgentConfig("scripted"), SessionStore(host.db))
        turn = [Reply(tool_calls=[("plugin_kit_add", '{"a": 1, "b": 2}')]), Reply("three")]
        for _ in range(repeats):
            for name, agent in variants.items():
                if over_http:
                    llm.add(*turn * runs)
                start = time.perf_counter()
                for _ in range(runs):
                    result = await agent.run("add")
                    assert result.reply == "three", result
                times[name].append((time.perf_counter() - start) / runs)
        for agent in variants.values():
            await agent.provider.aclose()
        for host in hosts:
            await host.stop()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few runs (smoke test)")
    args = parser.parse_args(argv)
    runs, repeats = (3, 2) if args.quick else (100, 9)
    print("## Agent loop overhead\n")
    print(f"Two-turn runs (tool call, then answer), {runs} runs x {repeats} interleaved repeats;")
    print("minimum wall time per run.\n")
    print("| provider | variant | per run | per turn | vs no plugins | added per turn |")
    print("|---|---|---|---|---|---|")
    for label, over_http in (("scripted server, HTTP", True), ("in-process", False)):
        times = asyncio.run(measure(runs, repeats, over_http=over_http))
        none = min(times["none"])
        for variant, t in (("no plugins", none), ("10 plugins, every hook", min(times["ten"]))):
            added = (t - none) / 2 * 1e6
            print(
                f"| {label} | {variant} | {t * 1e3:.3f} ms | {t * 1e3 / 2:.3f} ms "
                f"| {t / none:.3f}x | {added:.0f} µs |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
