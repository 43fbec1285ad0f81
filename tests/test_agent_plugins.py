"""What plugins contribute to the agent loop: providers, strategies, sessions and tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tether import (
    Caller,
    CapabilityViolationError,
    Context,
    Host,
    Message,
    Plugin,
    Policy,
    RunEndReason,
    TurnResult,
)
from tether.agent.factory import AgentConfigError, build_agent
from tether.agent.loop import Turns
from tether.agent.providers import ChatRequest, StreamEvent, TextDelta, TurnDone
from tether.agent.strategy import Outcome
from tether.contract.policy import AgentSettings
from tether.runtime.agent_port import NoAgentError

pytestmark = pytest.mark.timeout(20)


class EchoProvider:
    """Answers with the last user message, reversed."""

    name = "echo-provider"

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        text = next(m.content for m in reversed(request.messages) if m.role == "user")[::-1]
        yield TextDelta(text)
        yield TurnDone(TurnResult(text))

    async def models(self) -> list[str]:
        return ["reverse"]

    async def aclose(self) -> None:
        pass


class Shouting:
    name = "shouting"

    async def run(self, turns: Turns) -> Outcome:
        turn = await turns.model_turn()
        return Outcome(RunEndReason.COMPLETE, turn.content.upper() + "!")


def contributor(provider: Any) -> Plugin:
    p = Plugin(
        id="contrib",
        name="Contrib",
        capabilities=[
            "providers.register",
            "agents.strategy",
            "sessions.read",
            "sessions.write",
            "tasks.submit",
        ],
    )

    @p.on_load
    def setup(ctx: Context) -> None:
        ctx.providers.register("mine", provider)
        ctx.agents.register_strategy(Shouting())

    return p


def policy(**agent: Any) -> Policy:
    return Policy(agent=AgentSettings(**agent))


async def test_plugin_provider_and_strategy_are_picked_by_config(tmp_path: Path) -> None:
    provider = EchoProvider()
    p = contributor(provider)
    cfg = policy(provider="mine", strategy="shouting", model="reverse")
    async with Host(cfg, base_dir=tmp_path, plugins=[p], discover=False) as host:
        agent = build_agent(host)
        result = await agent.run("olleh")
    assert result.reply == "HELLO!"
    assert provider.requests[0].model == "reverse"


async def test_unknown_provider_or_strategy_is_a_clear_error(tmp_path: Path) -> None:
    async with Host(policy(provider="missing"), base_dir=tmp_path, discover=False) as host:
        with pytest.raises(
            AgentConfigError, match=r"'missing' is not registered.*known providers: openai"
        ):
            build_agent(host)
    async with Host(policy(strategy="nope"), base_dir=tmp_path, discover=False) as host:
        with pytest.raises(AgentConfigError, match="known strategies: default"):
            build_agent(host)


async def test_contributions_leave_with_their_plugin_and_names_do_not_clash(tmp_path: Path) -> None:
    first, second = (
        contributor(EchoProvider()),
        Plugin(id="second", name="Second", capabilities=["providers.register"]),
    )
    second.on_load(lambda ctx: ctx.providers.register("mine", EchoProvider()))
    builtin = Plugin(id="builtin", name="Builtin", capabilities=["providers.register"])
    builtin.on_load(lambda ctx: ctx.providers.register("openai", EchoProvider()))
    async with Host(
        Policy(), base_dir=tmp_path, plugins=[first, second, builtin], discover=False
    ) as host:
        states = {p["id"]: (p["state"], p["reason"]) for p in host.plugins()}
        assert states["second"] == ("error", "name_clash")
        assert states["builtin"] == ("error", "name_clash")
        assert "already registered by plugin 'contrib'" in next(
            p["error"] for p in host.plugins() if p["id"] == "second"
        )
        assert "built in" in next(p["error"] for p in host.plugins() if p["id"] == "builtin")
        assert set(host.services.agents.providers) == {"mine"}
        await host.disable("contrib")
        assert host.services.agents.providers == {} and host.services.agents.strategies == {}


async def test_sessions_and_tasks_facades(tmp_path: Path) -> None:
    provider = EchoProvider()
    p = contributor(provider)
    other = Plugin(id="nosy", name="Nosy", capabilities=[])
    cfg = policy(provider="mine")
    async with Host(cfg, base_dir=tmp_path, plugins=[p, other], discover=False) as host:
        ctx = p.context
        with pytest.raises(NoAgentError):
            ctx.sessions.ids()
        agent = build_agent(host)
        run_id, sid = ctx.tasks.submit("cba", caller=Caller("u1", frozenset({"member"})))
        assert sid is not None and run_id
        result = await agent.runs[run_id].wait()
        assert result.reply == "abc"
        assert ctx.sessions.ids() == [sid]
        assert [m.content for m in ctx.sessions.history(sid)] == ["cba", "abc"]
        ctx.sessions.inject_next(sid, Message("user", "remember the reversal"))
        ctx.sessions.append(sid, Message("assistant", "only on screen"))
        await agent.run("fed", session_id=sid)
        sent = [m.content for m in provider.requests[-1].messages if m.role != "system"]
        assert sent == ["cba", "abc", "remember the reversal", "fed"]
        nosy = other.context
        for call in (
            lambda: nosy.sessions.ids(),
            lambda: nosy.sessions.append(sid, Message("assistant", "x")),
            lambda: nosy.tasks.submit("x", caller=Caller("u")),
            lambda: nosy.providers.register("x", provider),
        ):
            with pytest.raises(CapabilityViolationError):
                call()
