"""The agent loop over the wire, against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from fake_llm import FakeLLM, Reply, Stall, Status
from tether import (
    Block,
    Caller,
    Host,
    Intercept,
    Message,
    Plugin,
    Policy,
    RunEnd,
    RunEndReason,
    RunEndResult,
    RunStart,
    RunStartResult,
    ToolCall,
    ToolResult,
    TurnResult,
)
from tether.agent.loop import Agent, AgentConfig, Turns, current_run
from tether.agent.openai import OpenAICompatibleProvider
from tether.agent.sessions import SessionStore
from tether.agent.strategy import Outcome

pytestmark = pytest.mark.timeout(20)

ALL_HOOKS = ["hooks.model", "hooks.tools", "hooks.input", "hooks.run", "tools.register"]


@pytest.fixture
def llm() -> Any:
    with FakeLLM() as server:
        yield server


@asynccontextmanager
async def agent_for(
    tmp_path: Path, llm: FakeLLM, *plugins: Plugin, **config: Any
) -> AsyncIterator[Agent]:
    async with Host(Policy(), base_dir=tmp_path, plugins=list(plugins), discover=False) as host:
        assert host.db is not None
        provider = OpenAICompatibleProvider(
            llm.base_url, "test-key", backoff=0.01, idle_timeout=config.pop("idle", 5.0)
        )
        agent = Agent(
            host, provider, AgentConfig("scripted-model", **config), SessionStore(host.db)
        )
        try:
            yield agent
        finally:
            await provider.aclose()


def tools_plugin(log: list[str] | None = None) -> Plugin:
    p = Plugin(id="kit", name="Kit", capabilities=["tools.register"])

    @p.tool
    async def add(a: int, b: int) -> int:
        """Add two integers."""
        if log is not None:
            log.append(f"add {a} {b}")
        return a + b

    @p.tool
    def shout(text: str) -> str:
        """Upper-case text."""
        return text.upper()

    return p


# Providers and streaming --------------------------------------------------------------------


async def test_text_answer_streams_tokens_and_persists_the_session(
    tmp_path: Path, llm: FakeLLM
) -> None:
    llm.add(
        Reply(
            "Hello there, friend.",
            chunk=3,
            usage={
                "prompt_tokens": 12,
                "completion_tokens": 4,
                "prompt_tokens_details": {"cached_tokens": 8},
            },
        )
    )
    async with agent_for(tmp_path, llm, system_prompt="Be kind.") as agent:
        handle = agent.start("hi")
        tokens: list[str] = []
        handle.on_event(lambda e: tokens.append(e.data["text"]) if e.kind == "token" else None)
        result = await handle.wait()
        assert result.reason is RunEndReason.COMPLETE
        assert result.reply == "Hello there, friend."
        assert tokens == ["Hel", "lo ", "the", "re,", " fr", "ien", "d."]
        assert (result.prompt_tokens, result.completion_tokens, result.cached_prompt_tokens) == (
            12,
            4,
            8,
        )
        sent = llm.requests[0]
        assert sent["stream"] is True and sent["model"] == "scripted-model"
        assert sent["messages"] == [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "hi"},
        ]
        assert result.session_id is not None
        history = agent.sessions.load(result.session_id)  # type: ignore[union-attr]
        assert [(m.role, m.content) for m in history] == [
            ("user", "hi"),
            ("assistant", "Hello there, friend."),
        ]


async def test_session_resumes_after_a_host_restart(tmp_path: Path, llm: FakeLLM) -> None:
    llm.add(Reply("first answer"), Reply("second answer"))
    async with agent_for(tmp_path, llm) as agent:
        first = await agent.run("question one")
    async with agent_for(tmp_path, llm) as agent:
        assert [s.id for s in agent.sessions.list()] == [first.session_id]  # type: ignore[union-attr]
        second = await agent.run("question two", session_id=first.session_id)
        assert second.reply == "second answer"
    assert [m["content"] for m in llm.requests[1]["messages"]] == [
        "question one",
        "first answer",
        "question two",
    ]
    async with agent_for(tmp_path, llm) as agent:
        assert agent.sessions.delete(first.session_id)  # type: ignore[union-attr, arg-type]
        assert agent.sessions.list() == []  # type: ignore[union-attr]
        with pytest.raises(KeyError):
            agent.start("again", session_id=first.session_id)


async def test_several_tool_calls_with_split_arguments_run_concurrently_in_order(
    tmp_path: Path, llm: FakeLLM
) -> None:
    p = Plugin(id="pair", name="Pair", capabilities=["tools.register"])
    a_started, b_started = asyncio.Event(), asyncio.Event()

    @p.tool
    async def first(x: int) -> str:
        """Waits until `second` is running too: only true concurrency lets both finish."""
        a_started.set()
        await asyncio.wait_for(b_started.wait(), 5)
        return f"first {x}"

    @p.tool
    async def second(y: int) -> str:
        """The other half."""
        b_started.set()
        await asyncio.wait_for(a_started.wait(), 5)
        return f"second {y}"

    llm.add(
        Reply(
            tool_calls=[
                ("plugin_pair_first", '{"x": 1234}'),
                ("plugin_pair_second", '{"y": 56789}'),
            ],
            chunk=2,
        ),
        Reply("both done"),
    )
    async with agent_for(tmp_path, llm, p) as agent:
        result = await agent.run("go")
    assert result.reply == "both done" and result.turns == 2
    tool_messages = [m for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [
        ("call_0", "first 1234"),
        ("call_1", "second 56789"),
    ]
    assistant = next(m for m in llm.requests[1]["messages"] if m["role"] == "assistant")
    assert [json.loads(c["function"]["arguments"]) for c in assistant["tool_calls"]] == [
        {"x": 1234},
        {"y": 56789},
    ]
    assert {t["function"]["name"] for t in llm.requests[0]["tools"]} == {
        "plugin_pair_first",
        "plugin_pair_second",
    }


async def test_http_error_fails_the_run_and_after_run_sees_error(
    tmp_path: Path, llm: FakeLLM
) -> None:
    reasons: list[RunEndReason] = []
    p = Plugin(id="obs", name="Obs", capabilities=["hooks.run"])
    p.after_run(reasons.append)
    llm.add(Status(400, '{"error": {"message": "bad model"}}'))
    async with agent_for(tmp_path, llm, p) as agent:
        result = await agent.run("hi")
    assert result.reason is RunEndReason.ERROR
    assert "HTTP 400" in (result.error or "") and "bad model" in (result.error or "")
    assert reasons == [RunEndReason.ERROR]


async def test_429_then_success_is_retried(tmp_path: Path, llm: FakeLLM) -> None:
    llm.add(Status(429, retry_after="0"), Status(503), Reply("made it"))
    async with agent_for(tmp_path, llm) as agent:
        result = await agent.run("hi")
    assert result.reply == "made it"
    assert len(llm.requests) == 3


async def test_a_stalled_stream_fails_after_the_idle_timeout(tmp_path: Path, llm: FakeLLM) -> None:
    llm.add(Stall("partial ", seconds=10))
    async with agent_for(tmp_path, llm, idle=0.3) as agent:
        result = await agent.run("hi")
    assert result.reason is RunEndReason.ERROR
    assert "stalled" in (result.error or "")


async def test_invalid_tool_arguments_reach_the_model_as_an_error(
    tmp_path: Path, llm: FakeLLM
) -> None:
    log: list[str] = []
    llm.add(Reply(tool_calls=[("plugin_kit_add", '{"a": 1, "b": ')]), Reply("sorry"))
    async with agent_for(tmp_path, llm, tools_plugin(log)) as agent:
        await agent.run("add")
    tool_msg = next(m for m in llm.requests[1]["messages"] if m["role"] == "tool")
    assert "not valid JSON" in tool_msg["content"]
    assert log == []


# Hooks, interceptors, events -----------------------------------------------------------------


def recorder(order: list[str]) -> Plugin:
    p = Plugin(id="rec", name="Rec", capabilities=[*ALL_HOOKS, "events.subscribe"])

    @p.transform_user_input
    def tui(text: str) -> str:
        order.append("transform_user_input")
        return text + "!"

    @p.on("run.start")
    def rs(event: RunStart) -> RunStartResult:
        order.append(f"run.start:{event.prompt}")
        return RunStartResult(system_prompt="Added by run.start.")

    @p.filter_tools
    def ft(tools: list[Any]) -> list[Any]:
        order.append("filter_tools")
        return tools

    @p.transform_system_prompt
    def tsp(prompt: str) -> str:
        order.append("transform_system_prompt")
        return prompt + " [tsp]"

    @p.before_model_call
    def bmc(messages: list[Message], config: Any) -> None:
        order.append("before_model_call")

    @p.after_model_call
    def amc(turn: TurnResult) -> None:
        order.append("after_model_call")

    @p.before_tool_call
    def btc(call: ToolCall) -> None:
        order.append(f"before_tool_call:{call.name}")

    @p.after_tool_call
    def atc(call: ToolCall, result: ToolResult) -> None:
        order.append(f"after_tool_call:{result.content}")

    @p.after_run
    def ar(reason: RunEndReason) -> None:
        order.append(f"after_run:{reason.value}")

    @p.on("run.end")
    def re_(event: RunEnd) -> None:
        order.append(f"run.end:{event.reply}")

    return p


async def test_every_hook_runs_once_in_the_documented_order(tmp_path: Path, llm: FakeLLM) -> None:
    order: list[str] = []
    llm.add(Reply(tool_calls=[("plugin_kit_add", '{"a": 2, "b": 3}')]), Reply("five"))
    async with agent_for(
        tmp_path, llm, recorder(order), tools_plugin(), system_prompt="Base."
    ) as agent:
        result = await agent.run("sum")
    assert result.reply == "five"
    per_turn = ["filter_tools", "transform_system_prompt", "before_model_call", "after_model_call"]
    assert order == [
        "transform_user_input",
        "run.start:sum!",
        *per_turn,
        "before_tool_call:plugin_kit_add",
        "after_tool_call:5",
        *per_turn,
        "after_run:complete",
        "run.end:five",
    ]
    system = llm.requests[0]["messages"][0]
    assert system == {"role": "system", "content": "Base.\n\nAdded by run.start. [tsp]"}
    assert llm.requests[0]["messages"][1]["content"] == "sum!"


async def test_intercepted_input_and_slash_commands_never_call_the_model(
    tmp_path: Path, llm: FakeLLM
) -> None:
    p = Plugin(id="gate", name="Gate", capabilities=["hooks.input", "commands.register"])

    @p.transform_user_input
    def ping(text: str) -> Intercept | None:
        return Intercept("pong") if text == "ping" else None

    @p.command("time")
    def cmd(args: str) -> str:
        return f"it is {args}"

    async with agent_for(tmp_path, llm, p) as agent:
        intercepted = await agent.run("ping")
        command = await agent.run("/time noon")
    assert (intercepted.reply, intercepted.intercepted) == ("pong", True)
    assert (command.reply, command.command) == ("it is noon", True)
    assert llm.requests == []


async def test_run_start_block_stops_the_run_before_the_model(tmp_path: Path, llm: FakeLLM) -> None:
    seen: list[RunEndReason] = []
    p = Plugin(id="bouncer", name="Bouncer", capabilities=["hooks.run"])

    @p.on("run.start")
    def block(event: RunStart) -> RunStartResult:
        return RunStartResult(block="not today")

    p.after_run(seen.append)
    async with agent_for(tmp_path, llm, p) as agent:
        result = await agent.run("hello")
    assert (result.reason, result.error, result.blocked_by) == (
        RunEndReason.BLOCKED,
        "not today",
        "bouncer",
    )
    assert seen == [RunEndReason.BLOCKED]
    assert llm.requests == []


async def test_before_tool_call_block_becomes_the_tool_result(tmp_path: Path, llm: FakeLLM) -> None:
    log: list[str] = []
    guard = Plugin(id="guard", name="Guard", capabilities=["hooks.tools"])
    guard.before_tool_call(lambda call: Block("adding is forbidden"))
    llm.add(Reply(tool_calls=[("plugin_kit_add", '{"a": 1, "b": 1}')]), Reply("ok"))
    async with agent_for(tmp_path, llm, guard, tools_plugin(log)) as agent:
        await agent.run("add")
    tool_msg = next(m for m in llm.requests[1]["messages"] if m["role"] == "tool")
    assert tool_msg["content"] == "adding is forbidden"
    assert log == []


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [(RunEndResult(reply="replaced"), "replaced"), (RunEndResult(suppress=True), None)],
    ids=["replace", "suppress"],
)
async def test_run_end_replaces_or_suppresses_the_reply(
    tmp_path: Path, llm: FakeLLM, verdict: RunEndResult, expected: str | None
) -> None:
    p = Plugin(id="editor", name="Editor", capabilities=["hooks.run"])
    p.on("run.end")(lambda event: verdict)
    llm.add(Reply("original"))
    async with agent_for(tmp_path, llm, p) as agent:
        handle = agent.start("hi")
        result = await handle.wait()
    assert result.reply == expected
    done = [e for e in handle.history if e.kind == "done"][-1]
    assert done.data["suppressed"] is (expected is None)


async def test_filter_tools_narrows_what_the_model_sees_and_may_call(
    tmp_path: Path, llm: FakeLLM
) -> None:
    log: list[str] = []
    narrow = Plugin(id="narrow", name="Narrow", capabilities=["hooks.model"])
    narrow.filter_tools(lambda tools: [t for t in tools if t.name.endswith("shout")])
    llm.add(Reply(tool_calls=[("plugin_kit_add", '{"a": 1, "b": 2}')]), Reply("fine"))
    async with agent_for(tmp_path, llm, narrow, tools_plugin(log)) as agent:
        await agent.run("go")
    assert [t["function"]["name"] for t in llm.requests[0]["tools"]] == ["plugin_kit_shout"]
    tool_msg = next(m for m in llm.requests[1]["messages"] if m["role"] == "tool")
    assert "is not available in this run" in tool_msg["content"]
    assert log == []


async def test_session_events_reach_plugin_subscribers(tmp_path: Path, llm: FakeLLM) -> None:
    got: list[tuple[str, Any]] = []
    watcher = Plugin(id="watcher", name="Watcher", capabilities=["events.subscribe"])
    for name in ("task.token", "task.tool_use", "task.done"):
        watcher.on(name)(
            lambda e, n=name: got.append((n, e.data.get("text") or e.data.get("tool")))
        )
    llm.add(Reply(tool_calls=[("plugin_kit_shout", '{"text": "a"}')]), Reply("done!", chunk=10))
    async with agent_for(tmp_path, llm, watcher, tools_plugin()) as agent:
        await agent.run("go")
        await agent.host.events.drain()
    assert sorted(got) == sorted(
        [("task.tool_use", "plugin_kit_shout"), ("task.token", "done!"), ("task.done", "done!")]
    )


async def test_message_bus_injects_into_the_next_turn_and_keeps_display_messages_local(
    tmp_path: Path, llm: FakeLLM
) -> None:
    llm.add(Reply("one"), Reply("two"))
    async with agent_for(tmp_path, llm) as agent:
        first = await agent.run("start")
        assert first.session_id is not None
        bus = agent.bus(first.session_id)
        bus.append(Message("assistant", "banner: only for people"))
        bus.inject_next(Message("user", "reminder: be brief"))
        await agent.run("next", session_id=first.session_id)
    contents = [m["content"] for m in llm.requests[1]["messages"]]
    assert contents == ["start", "one", "reminder: be brief", "next"]
    assert [m.content for m in bus.display] == ["banner: only for people"]


# Limits, aborts, callers ---------------------------------------------------------------------


async def test_abort_mid_stream_stops_promptly_and_fires_after_run(
    tmp_path: Path, llm: FakeLLM
) -> None:
    reasons: list[RunEndReason] = []
    p = Plugin(id="obs", name="Obs", capabilities=["hooks.run"])
    p.after_run(reasons.append)
    llm.add(Stall("thinking ", seconds=10))
    async with agent_for(tmp_path, llm, p) as agent:
        handle = agent.start("hi")
        first_token = asyncio.Event()
        handle.on_event(lambda e: first_token.set() if e.kind == "token" else None)
        await asyncio.wait_for(first_token.wait(), 5)
        handle.abort()
        result = await asyncio.wait_for(handle.wait(), 3)
    assert result.reason is RunEndReason.ABORTED
    assert reasons == [RunEndReason.ABORTED]


async def test_abort_mid_tool_cancels_the_running_tool(tmp_path: Path, llm: FakeLLM) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()
    p = Plugin(id="slow", name="Slow", capabilities=["tools.register", "hooks.run"])

    @p.tool
    async def wait_forever() -> str:
        """Never returns on its own."""
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "impossible"

    reasons: list[RunEndReason] = []
    p.after_run(reasons.append)
    llm.add(Reply(tool_calls=[("plugin_slow_wait_forever", "{}")]))
    async with agent_for(tmp_path, llm, p) as agent:
        handle = agent.start("go")
        await asyncio.wait_for(started.wait(), 5)
        handle.abort()
        result = await asyncio.wait_for(handle.wait(), 3)
        await asyncio.wait_for(cancelled.wait(), 3)
    assert result.reason is RunEndReason.ABORTED and reasons == [RunEndReason.ABORTED]


async def test_max_turns_and_token_budget_end_the_run(tmp_path: Path, llm: FakeLLM) -> None:
    loop_call = Reply(
        tool_calls=[("plugin_kit_add", '{"a": 1, "b": 1}')],
        usage={"prompt_tokens": 60, "completion_tokens": 10},
    )
    llm.add(*[loop_call] * 5)
    async with agent_for(tmp_path, llm, tools_plugin(), max_turns=2) as agent:
        capped = await agent.run("loop")
    assert (capped.reason, capped.turns) == (RunEndReason.MAX_TURNS, 2)
    async with agent_for(tmp_path, llm, tools_plugin(), token_budget=100) as agent:
        budget = await agent.run("loop")
    assert (budget.reason, budget.turns) == (RunEndReason.BUDGET, 2)


async def test_run_timeout(tmp_path: Path, llm: FakeLLM) -> None:
    llm.add(Reply("slow " * 20, chunk=5, delay=0.1))
    async with agent_for(tmp_path, llm, timeout_s=0.4) as agent:
        result = await agent.run("hi")
    assert result.reason is RunEndReason.TIMEOUT


async def test_tools_are_visible_only_to_permitted_roles_and_env_follows(
    tmp_path: Path, llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST_SECRET_TOKEN", "s3cret")
    seen_env: list[dict[str, str]] = []
    admin_only = Plugin(
        id="vault",
        name="Vault",
        capabilities=["tools.register"],
        roles=["admin"],
        env=[{"from": "HOST_SECRET_TOKEN", "as": "TOKEN"}],
    )
    public = Plugin(id="pub", name="Pub", capabilities=["tools.register"])

    @admin_only.tool
    async def open_vault() -> str:
        """Admins only."""
        return "opened"

    @public.tool
    async def env_seen() -> str:
        """Reports the run's env."""
        info = current_run()
        seen_env.append(dict(info.env) if info else {})
        return "ok"

    llm.add(Reply(tool_calls=[("plugin_pub_env_seen", "{}")]), Reply("a"))
    llm.add(Reply(tool_calls=[("plugin_pub_env_seen", "{}")]), Reply("b"))
    async with agent_for(tmp_path, llm, admin_only, public) as agent:
        await agent.run("x", caller=Caller("bob", frozenset({"member"})))
        await agent.run("y", caller=Caller("ann", frozenset({"admin"})))
    member_tools = {t["function"]["name"] for t in llm.requests[0]["tools"]}
    admin_tools = {t["function"]["name"] for t in llm.requests[2]["tools"]}
    assert member_tools == {"plugin_pub_env_seen"}
    assert admin_tools == {"plugin_pub_env_seen", "plugin_vault_open_vault"}
    assert seen_env == [{}, {"TOKEN": "s3cret"}]


async def test_run_start_env_additions_reach_only_permitted_callers(
    tmp_path: Path, llm: FakeLLM
) -> None:
    seen: list[dict[str, str]] = []
    staff = Plugin(id="staff", name="Staff", capabilities=["hooks.run"], roles=["staff"])
    staff.on("run.start")(lambda e: RunStartResult(env={"STAFF_MODE": "1"}))
    probe = Plugin(id="probe", name="Probe", capabilities=["tools.register"])

    @probe.tool
    async def look() -> str:
        """Record env."""
        info = current_run()
        seen.append(dict(info.env) if info else {})
        return "ok"

    llm.add(Reply(tool_calls=[("plugin_probe_look", "{}")]), Reply("1"))
    llm.add(Reply(tool_calls=[("plugin_probe_look", "{}")]), Reply("2"))
    async with agent_for(tmp_path, llm, staff, probe) as agent:
        await agent.run("a", caller=Caller("guest", frozenset({"guest"})))
        await agent.run("b", caller=Caller("sam", frozenset({"staff"})))
    assert seen == [{}, {"STAFF_MODE": "1"}]


async def test_models_are_listed(tmp_path: Path, llm: FakeLLM) -> None:
    provider = OpenAICompatibleProvider(llm.base_url)
    try:
        assert await provider.models() == ["scripted-model", "other"]
    finally:
        await provider.aclose()


async def test_a_custom_strategy_drives_the_turns(tmp_path: Path, llm: FakeLLM) -> None:
    class PlanThenAnswer:
        """Asks for a plan first (one model turn, no tools run), then answers."""

        name = "plan-then-answer"

        async def run(self, turns: Turns) -> Outcome:
            plan = await turns.model_turn()
            turns.messages.append(Message("user", f"Now carry out: {plan.content}"))
            answer = await turns.model_turn()
            return Outcome(RunEndReason.COMPLETE, answer.content.upper())

    llm.add(Reply("1. look 2. answer"), Reply("done"))
    async with agent_for(tmp_path, llm) as agent:
        agent.strategy = PlanThenAnswer()
        result = await agent.run("task")
    assert (result.reply, result.turns) == ("DONE", 2)
    assert llm.requests[1]["messages"][-1] == {
        "role": "user",
        "content": "Now carry out: 1. look 2. answer",
    }


async def test_a_tool_can_ask_the_user_and_the_question_fans_out(
    tmp_path: Path, llm: FakeLLM
) -> None:
    asked: list[Any] = []
    p = Plugin(id="asker", name="Asker", capabilities=["tools.register", "events.subscribe"])

    @p.tool
    async def clarify(question: str) -> str:
        """Ask the user something."""
        info = current_run()
        assert info is not None
        info.ask_user(question, ["yes", "no"])
        return "asked; the answer arrives as the next user message"

    p.on("task.ask_user")(lambda event: asked.append(event.data))
    llm.add(
        Reply(tool_calls=[("plugin_asker_clarify", '{"question": "Proceed?"}')]), Reply("Waiting.")
    )
    async with agent_for(tmp_path, llm, p) as agent:
        handle = agent.start("do it")
        result = await handle.wait()
        await agent.host.events.drain()
    events = [e.data for e in handle.history if e.kind == "ask_user"]
    assert events == [{"question": "Proceed?", "options": ["yes", "no"]}]
    assert asked and asked[0]["question"] == "Proceed?" and asked[0]["run_id"] == result.run_id
