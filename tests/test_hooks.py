"""Hook chains through a real Host: composition, short-circuits, isolation, plan rebuilds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tether import (
    Block,
    Host,
    Intercept,
    Message,
    Plugin,
    Policy,
    RunEndReason,
    ToolCall,
    ToolInfo,
    ToolResult,
    TurnResult,
)
from tether.runtime.hooks import Hooks

ALL_HOOKS = ["hooks.model", "hooks.tools", "hooks.input", "hooks.run"]


def mk(pid: str, *extra: str) -> Plugin:
    return Plugin(id=pid, name=pid.upper(), capabilities=[*ALL_HOOKS, *extra])


def host_with(tmp_path: Path, *plugins: Plugin) -> Host:
    return Host(Policy(), base_dir=tmp_path, plugins=list(plugins))


def info(host: Host, pid: str) -> dict[str, Any]:
    return next(p for p in host.plugins() if p["id"] == pid)


def plugin_errors(host: Host, pid: str) -> list[str]:
    return [r.message for r in host.audit.read(plugin=pid, kind="plugin_error")]


# --- threading hooks -------------------------------------------------------------------


async def test_before_model_call_threads_messages_in_load_order(tmp_path: Path) -> None:
    plugins = [mk(pid) for pid in ("a", "b", "c")]
    seen: dict[str, list[str]] = {}
    for p in plugins:
        pid = p.manifest.id  # type: ignore[union-attr]

        @p.before_model_call
        def add(messages: list[Message], config: Any, pid: str = pid) -> list[Message]:
            seen[pid] = [m.content for m in messages]
            return [*messages, Message("system", f"marker-{pid}")]

    async with host_with(tmp_path, *plugins) as host:
        out = await host.hooks.before_model_call([Message("user", "hi")], {"model": "m"})
    assert [m.content for m in out] == ["hi", "marker-a", "marker-b", "marker-c"]
    # each hook saw what the previous one produced
    assert seen == {"a": ["hi"], "b": ["hi", "marker-a"], "c": ["hi", "marker-a", "marker-b"]}


async def test_before_model_call_receives_config_and_none_leaves_messages(tmp_path: Path) -> None:
    a, b = mk("a"), mk("b")
    configs: list[Any] = []

    @a.before_model_call
    def observe(messages: list[Message], config: Any) -> None:
        configs.append(config)

    @b.before_model_call
    async def drop_system(messages: list[Message], config: Any) -> list[Message]:
        return [m for m in messages if m.role != "system"]

    async with host_with(tmp_path, a, b) as host:
        out = await host.hooks.before_model_call(
            [Message("system", "s"), Message("user", "u")], {"temperature": 0}
        )
    assert configs == [{"temperature": 0}]
    assert [(m.role, m.content) for m in out] == [("user", "u")]


async def test_after_model_call_threads_turn_result(tmp_path: Path) -> None:
    a, b = mk("a"), mk("b")

    @a.after_model_call
    def upper(turn: TurnResult) -> TurnResult:
        return TurnResult(turn.content.upper(), turn.tool_calls, prompt_tokens=turn.prompt_tokens)

    @b.after_model_call
    async def suffix(turn: TurnResult) -> TurnResult:
        return TurnResult(turn.content + "!", turn.tool_calls, prompt_tokens=turn.prompt_tokens + 1)

    async with host_with(tmp_path, a, b) as host:
        out = await host.hooks.after_model_call(TurnResult("hello", prompt_tokens=10))
    assert out.content == "HELLO!"
    assert out.prompt_tokens == 11


async def test_transform_system_prompt_threads_text_mixed_sync_async(tmp_path: Path) -> None:
    a, b, c = mk("a"), mk("b"), mk("c")

    @a.transform_system_prompt
    def one(prompt: str) -> str:
        return prompt + "|a"

    @b.transform_system_prompt
    async def two(prompt: str) -> str:
        await asyncio.sleep(0)
        return prompt + "|b"

    @c.transform_system_prompt
    def three(prompt: str) -> str | None:
        return prompt + "|c" if prompt.endswith("|b") else None

    async with host_with(tmp_path, a, b, c) as host:
        assert await host.hooks.transform_system_prompt("base") == "base|a|b|c"


async def test_after_tool_call_threads_result_and_receives_call(tmp_path: Path) -> None:
    t = mk("t", "tools.register")
    a, b = mk("a"), mk("b")
    calls: list[tuple[str, dict[str, Any]]] = []

    @t.tool
    async def echo(text: str) -> str:
        return text

    @a.after_tool_call
    def wrap(call: ToolCall, result: ToolResult) -> ToolResult:
        calls.append((call.name, dict(call.arguments)))
        return ToolResult(f"[{result.content}]")

    @b.after_tool_call
    async def flag(call: ToolCall, result: ToolResult) -> ToolResult:
        calls.append((call.name, dict(call.arguments)))
        return ToolResult(result.content + call.name, is_error=True)

    async with host_with(tmp_path, t, a, b) as host:
        result = await host.call_tool("plugin_t_echo", {"text": "x"})
    assert result.content == "[x]plugin_t_echo"
    assert result.is_error is True
    assert calls == [("plugin_t_echo", {"text": "x"})] * 2


# --- before_tool_call ------------------------------------------------------------------


async def test_before_tool_call_threads_call_to_next_hook_and_handler(tmp_path: Path) -> None:
    t = mk("t", "tools.register")
    a, b = mk("a"), mk("b")
    b_saw: list[dict[str, Any]] = []

    @t.tool
    def add(x: int, y: int) -> int:
        return x + y

    @a.before_tool_call
    async def bump(call: ToolCall) -> ToolCall:
        return ToolCall(call.name, {**call.arguments, "x": call.arguments["x"] + 100}, call.id)

    @b.before_tool_call
    def watch(call: ToolCall) -> None:
        b_saw.append(dict(call.arguments))

    async with host_with(tmp_path, t, a, b) as host:
        result = await host.call_tool("plugin_t_add", {"x": 1, "y": 2})
    assert b_saw == [{"x": 101, "y": 2}]
    assert result.content == "103"
    assert result.data == 103


@pytest.mark.parametrize("is_error", [True, False])
async def test_before_tool_call_first_block_short_circuits(tmp_path: Path, is_error: bool) -> None:
    t = mk("t", "tools.register")
    a, b, c = mk("a"), mk("b"), mk("c")
    ran: list[str] = []

    @t.tool
    def act() -> str:
        ran.append("handler")
        return "did it"

    @a.before_tool_call
    def first(call: ToolCall) -> None:
        ran.append("a")

    @b.before_tool_call
    async def blocker(call: ToolCall) -> Block:
        ran.append("b")
        return Block(f"blocked {call.name}", is_error=is_error)

    @c.before_tool_call
    def later(call: ToolCall) -> Block:
        ran.append("c")
        return Block("c should never win")

    async with host_with(tmp_path, t, a, b, c) as host:
        result = await host.call_tool("plugin_t_act", {})
    assert ran == ["a", "b"]
    assert result.content == "blocked plugin_t_act"
    assert result.is_error is is_error


async def test_blocked_call_still_passes_through_after_tool_call(tmp_path: Path) -> None:
    t, a = mk("t", "tools.register"), mk("a")

    @t.tool
    def act() -> str:
        return "did it"

    @a.before_tool_call
    def block(call: ToolCall) -> Block:
        return Block("no")

    @a.after_tool_call
    def note(call: ToolCall, result: ToolResult) -> ToolResult:
        return ToolResult(result.content + " (audited)", result.is_error)

    async with host_with(tmp_path, t, a) as host:
        result = await host.call_tool("plugin_t_act", {})
    assert (result.content, result.is_error) == ("no (audited)", True)


# --- transform_user_input --------------------------------------------------------------


async def test_transform_user_input_pass_transform_and_intercept(tmp_path: Path) -> None:
    a, b, c, d = mk("a"), mk("b"), mk("c"), mk("d")
    seen: dict[str, str] = {}

    @a.transform_user_input
    def passes(text: str) -> None:
        seen["a"] = text

    @b.transform_user_input
    async def rewrites(text: str) -> str:
        seen["b"] = text
        return text.replace("colour", "color")

    @c.transform_user_input
    def intercepts(text: str) -> Intercept | None:
        seen["c"] = text
        return Intercept(reply=f"handled: {text}") if text.startswith("/") else None

    @d.transform_user_input
    def last(text: str) -> str:
        seen["d"] = text
        return text + " [d]"

    async with host_with(tmp_path, a, b, c, d) as host:
        out = await host.hooks.transform_user_input("my colour")
        assert out == "my color [d]"
        assert seen == {"a": "my colour", "b": "my colour", "c": "my color", "d": "my color"}

        seen.clear()
        out2 = await host.hooks.transform_user_input("/colour")
    assert out2 == Intercept(reply="handled: /color")
    assert "d" not in seen  # the first Intercept stops the chain


# --- filter_tools ----------------------------------------------------------------------


def _tool(name: str) -> ToolInfo:
    return ToolInfo(name, "", {"type": "object"}, "x")


async def test_filter_tools_narrows_by_intersection_and_cannot_add(tmp_path: Path) -> None:
    a, b = mk("a"), mk("b")
    b_saw: list[list[str]] = []

    @a.filter_tools
    def drop_one(tools: list[ToolInfo]) -> list[ToolInfo]:
        return [t for t in tools if t.name != "one"] + [_tool("smuggled")]

    @b.filter_tools
    async def drop_two(tools: list[ToolInfo]) -> list[ToolInfo]:
        b_saw.append([t.name for t in tools])
        return [_tool("also-smuggled"), *reversed([t for t in tools if t.name != "two"])]

    offered = [_tool("one"), _tool("two"), _tool("three"), _tool("four")]
    async with host_with(tmp_path, a, b) as host:
        out = await host.hooks.filter_tools(offered)
    assert [t.name for t in out] == ["three", "four"]  # offered order kept, nothing added
    assert b_saw == [["two", "three", "four"]]  # b never saw the tool a tried to add


async def test_filter_tools_none_keeps_everything(tmp_path: Path) -> None:
    a = mk("a")

    @a.filter_tools
    def nothing(tools: list[ToolInfo]) -> None:
        return None

    async with host_with(tmp_path, a) as host:
        out = await host.hooks.filter_tools([_tool("one"), _tool("two")])
    assert [t.name for t in out] == ["one", "two"]


# --- after_run -------------------------------------------------------------------------


async def test_after_run_runs_every_hook_once_with_reason(tmp_path: Path) -> None:
    a, b, c = mk("a"), mk("b"), mk("c")
    got: list[tuple[str, RunEndReason]] = []

    @a.after_run
    def ra(reason: RunEndReason) -> None:
        got.append(("a", reason))

    @b.after_run
    async def rb(reason: RunEndReason) -> str:  # a return value is ignored
        got.append(("b", reason))
        return "ignored"

    @c.after_run
    def rc(reason: RunEndReason) -> None:
        got.append(("c", reason))
        raise RuntimeError("after-run boom")

    async with host_with(tmp_path, a, b, c) as host:
        assert await host.hooks.after_run(RunEndReason.MAX_TURNS) is None
        assert got == [("a", "max_turns"), ("b", "max_turns"), ("c", "max_turns")]
        assert "after-run boom" in (info(host, "c")["error"] or "")


# --- isolation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc", [ValueError("bad value"), SystemExit(3), KeyboardInterrupt("ctrl-c")], ids=repr
)
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_raising_hook_is_skipped_chain_continues_and_error_recorded(
    tmp_path: Path, exc: BaseException, sync: bool
) -> None:
    a, bad, c = mk("a"), mk("bad"), mk("c")

    @a.transform_system_prompt
    def first(prompt: str) -> str:
        return prompt + "|a"

    if sync:

        @bad.transform_system_prompt
        def broken(prompt: str) -> str:
            raise exc

    else:

        @bad.transform_system_prompt
        async def broken(prompt: str) -> str:
            raise exc

    @c.transform_system_prompt
    def last(prompt: str) -> str:
        return prompt + "|c"

    async with host_with(tmp_path, a, bad, c) as host:
        assert await host.hooks.transform_system_prompt("p") == "p|a|c"
        name = type(exc).__name__
        error = info(host, "bad")["error"] or ""
        assert "transform_system_prompt" in error and name in error
        assert info(host, "bad")["state"] == "active"
        assert info(host, "a")["error"] is None and info(host, "c")["error"] is None
        assert any(name in m for m in plugin_errors(host, "bad"))
        # the host keeps working: the chain runs again
        assert await host.hooks.transform_system_prompt("q") == "q|a|c"


@pytest.mark.parametrize(
    ("hook", "garbage", "run"),
    [
        ("transform_system_prompt", 42, lambda h: h.transform_system_prompt("p")),
        ("before_model_call", "not a list", lambda h: h.before_model_call([], None)),
        ("after_model_call", {"content": "x"}, lambda h: h.after_model_call(TurnResult("t"))),
        ("transform_user_input", 3.5, lambda h: h.transform_user_input("u")),
        ("filter_tools", "all", lambda h: h.filter_tools([_tool("one")])),
        ("before_tool_call", ["x"], lambda h: h.before_tool_call(ToolCall("n", {}))),
    ],
)
async def test_garbage_return_is_skipped_and_reported(
    tmp_path: Path, hook: str, garbage: Any, run: Any
) -> None:
    bad = mk("bad")
    bad.hook(hook)(lambda *args: garbage)  # type: ignore[arg-type]
    async with host_with(tmp_path, bad) as host:
        before = await run(Hooks(on_error=lambda *a: None))  # the value with no hooks at all
        assert await run(host.hooks) == before
        error = info(host, "bad")["error"] or ""
        assert hook in error
        assert f"returned {type(garbage).__name__}" in error
        assert plugin_errors(host, "bad")


async def test_after_tool_call_garbage_keeps_real_result(tmp_path: Path) -> None:
    t, bad = mk("t", "tools.register"), mk("bad")

    @t.tool
    def echo(text: str) -> str:
        return text

    @bad.after_tool_call
    def garbage(call: ToolCall, result: ToolResult) -> str:
        return "not a ToolResult"

    async with host_with(tmp_path, t, bad) as host:
        result = await host.call_tool("plugin_t_echo", {"text": "kept"})
        assert (result.content, result.is_error) == ("kept", False)
        assert "after_tool_call" in (info(host, "bad")["error"] or "")


async def test_raising_before_tool_call_hook_does_not_block_the_call(tmp_path: Path) -> None:
    t, bad = mk("t", "tools.register"), mk("bad")

    @t.tool
    def echo(text: str) -> str:
        return text

    @bad.before_tool_call
    def boom(call: ToolCall) -> Block:
        raise RuntimeError("guard crashed")

    async with host_with(tmp_path, t, bad) as host:
        result = await host.call_tool("plugin_t_echo", {"text": "ran"})
        assert (result.content, result.is_error) == ("ran", False)
        assert "guard crashed" in (info(host, "bad")["error"] or "")


# --- plans follow the plugin set -------------------------------------------------------


async def test_disable_removes_hook_and_enable_restores_load_order_position(
    tmp_path: Path,
) -> None:
    plugins = [mk(pid) for pid in ("a", "b", "c")]
    for p in plugins:
        pid = p.manifest.id  # type: ignore[union-attr]

        @p.transform_system_prompt
        def mark(prompt: str, pid: str = pid) -> str:
            return prompt + pid

    async with host_with(tmp_path, *plugins) as host:
        assert await host.hooks.transform_system_prompt(">") == ">abc"
        await host.disable("b")
        assert info(host, "b")["state"] == "disabled"
        assert await host.hooks.transform_system_prompt(">") == ">ac"
        await host.disable("a")
        assert await host.hooks.transform_system_prompt(">") == ">c"
        assert await host.enable("b") is True
        assert await host.hooks.transform_system_prompt(">") == ">bc"
        assert await host.enable("a") is True
        assert await host.hooks.transform_system_prompt(">") == ">abc"
        await host.unload("c")
        assert await host.hooks.transform_system_prompt(">") == ">ab"


async def test_hooks_of_a_plugin_that_failed_activation_are_not_in_the_chain(
    tmp_path: Path,
) -> None:
    a, broken = mk("a"), mk("broken")

    @a.transform_system_prompt
    def ok(prompt: str) -> str:
        return prompt + "|a"

    @broken.transform_system_prompt
    def never(prompt: str) -> str:
        return prompt + "|broken"

    @broken.on_load
    def fail(ctx: Any) -> None:
        raise RuntimeError("cannot start")

    async with host_with(tmp_path, a, broken) as host:
        assert info(host, "broken")["state"] == "error"
        assert info(host, "broken")["reason"] == "activation_failed"
        assert await host.hooks.transform_system_prompt("p") == "p|a"


async def test_hook_without_capability_is_skipped_with_warning(tmp_path: Path) -> None:
    p = Plugin(id="nocap", name="NoCap", capabilities=["hooks.model"])

    @p.before_tool_call
    def guard(call: ToolCall) -> Block:
        return Block("should not be registered")

    @p.transform_system_prompt
    def ok(prompt: str) -> str:
        return prompt + "|ok"

    async with host_with(tmp_path, p) as host:
        assert await host.hooks.before_tool_call(ToolCall("x", {})) == ToolCall("x", {})
        assert await host.hooks.transform_system_prompt("p") == "p|ok"
        warnings = info(host, "nocap")["warnings"]
        assert any("before_tool_call" in w and "hooks.tools" in w for w in warnings)
        violations = host.audit.read(plugin="nocap", kind="capability_violation")
        assert violations and violations[0].detail["capability"] == "hooks.tools"


async def test_a_function_shared_by_two_plugins_is_blamed_on_the_right_one(tmp_path: Path) -> None:
    calls: list[str] = []

    def shared(prompt: str) -> str:
        calls.append(prompt)
        if len(calls) == 2:
            raise RuntimeError("second registration fails")
        return prompt

    first = Plugin(id="first", name="First", capabilities=["hooks.model"])
    second = Plugin(id="second", name="Second", capabilities=["hooks.model"])
    first.transform_system_prompt(shared)
    second.transform_system_prompt(shared)
    async with Host(Policy(), base_dir=tmp_path, plugins=[first, second], discover=False) as host:
        assert await host.hooks.transform_system_prompt("p") == "p"
        errors = {p["id"]: p["error"] for p in host.plugins()}
    assert errors["first"] is None
    assert "second registration fails" in (errors["second"] or "")
