"""Agent-loop strategies: what happens between the run-start interceptors and after-run.

A strategy drives the turns with the `Turns` toolkit the loop hands it: `model_turn()` runs
one model call with every per-turn hook, `run_tools()` runs a turn's tool calls, and
`over_budget()` says when to stop. Plugins with `agents.strategy` can register their own
(plan-then-act, reflection, ...); the host's config picks one by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tether.contract.types import RunEndReason

if TYPE_CHECKING:
    from tether.agent.loop import Turns


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a strategy ended: the reason, the reply, and an error text when it failed."""

    reason: RunEndReason
    reply: str = ""
    error: str | None = None


@runtime_checkable
class LoopStrategy(Protocol):
    name: str

    async def run(self, turns: Turns) -> Outcome:
        """Drive the turns of one run to an end."""
        ...


class DefaultStrategy:
    """Call the model; run its tool calls; repeat until it answers without tools."""

    name = "default"

    async def run(self, turns: Turns) -> Outcome:
        for _ in range(turns.max_turns):
            turn = await turns.model_turn()
            if not turn.tool_calls:
                return Outcome(RunEndReason.COMPLETE, turn.content)
            await turns.run_tools(turn)
            if turns.over_budget():
                return Outcome(RunEndReason.BUDGET, turn.content, "the run's budget is spent")
        return Outcome(RunEndReason.MAX_TURNS, "", f"stopped after {turns.max_turns} turns")
