"""The agent loop: one user input through the plugins' hooks, the model and the tools.

Order for each input:
1. transform-user-input hooks (an intercept answers without the model), then slash commands;
2. run-start interceptors (a block stops the run; system-prompt and env additions add up);
3. turns until the model answers without tool calls, or max turns, the budget, the timeout
   or an abort: filter-tools, transform-system-prompt, before-model-call, the streamed call
   (each token a session event), after-model-call, then the tool calls, concurrently, with
   results in call order (each through before/after-tool-call and its timeout);
4. after-run hooks once, with the reason;
5. run-end interceptors: replace or suppress the reply.
"""

from __future__ import annotations

__all__ = [
    "Agent",
    "AgentConfig",
    "RunHandle",
    "RunInfo",
    "RunResult",
    "SessionEvent",
    "Turns",
    "current_run",
]

import asyncio
import functools
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from tether.agent.openai import INVALID_ARGUMENTS
from tether.agent.providers import ChatRequest, Provider, ProviderError, TextDelta, TurnDone
from tether.agent.run import (
    _CURRENT,
    RunHandle,
    RunInfo,
    RunResult,
    SessionEvent,
    current_run,
)
from tether.agent.sessions import MessageBus, SessionStore
from tether.agent.strategy import DefaultStrategy, LoopStrategy
from tether.contract.errors import UnknownToolError
from tether.contract.types import (
    Caller,
    Intercept,
    Message,
    RunEnd,
    RunEndReason,
    RunStart,
    ToolCall,
    ToolResult,
    TurnResult,
)
from tether.runtime.host import Host


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """How runs behave; `tether.toml`'s `[agent]` table maps onto it."""

    model: str
    system_prompt: str = ""
    max_turns: int = 20
    max_tokens: int | None = None
    """Per model response."""
    temperature: float | None = None
    token_budget: int | None = None
    """Prompt plus completion tokens for the whole run."""
    cost_budget: float | None = None
    prompt_price: float = 0.0
    """Price per 1,000 prompt tokens, for the cost budget."""
    completion_price: float = 0.0
    timeout_s: float | None = None


@dataclass(slots=True)
class _Usage:
    prompt: int = 0
    completion: int = 0
    cached: int = 0
    turns: int = 0

    def add(self, turn: TurnResult) -> None:
        self.prompt += turn.prompt_tokens
        self.completion += turn.completion_tokens
        self.cached += turn.cached_prompt_tokens
        self.turns += 1


@dataclass(slots=True)
class _Run:
    handle: RunHandle
    prompt: str
    caller: Caller
    usage: _Usage = field(default_factory=_Usage)
    new_messages: list[Message] = field(default_factory=list)


class Turns:
    """What a strategy drives a run with: one model turn at a time, then its tools."""

    def __init__(self, agent: Agent, run: _Run, history: list[Message], system: str) -> None:
        self._agent = agent
        self._run = run
        self.history = history
        self.system = system
        """The run's base system prompt (config plus run-start additions); plugins'
        contributions and transform hooks are applied on each turn."""
        self.max_turns = agent.config.max_turns
        self._tools: set[str] = set()

    @property
    def messages(self) -> list[Message]:
        """This run's new messages so far (the user input, then assistant and tool turns);
        strategies may append to it."""
        return self._run.new_messages

    async def model_turn(self) -> TurnResult:
        """filter-tools, transform-system-prompt, before-model-call, the streamed call,
        after-model-call; the assistant message is appended."""
        agent, hooks, cfg = self._agent, self._agent.host.hooks, self._agent.config
        tools = await hooks.filter_tools(agent.host.tools(self._run.caller))
        self._tools = {t.name for t in tools}
        system = await agent.host.system_prompt(self.system)
        convo = [Message("system", system)] if system else []
        convo = await hooks.before_model_call([*convo, *self.history, *self.messages], cfg)
        request = ChatRequest(cfg.model, convo, tools, cfg.max_tokens, cfg.temperature)
        turn = await hooks.after_model_call(await agent._stream(self._run, request))
        self._run.usage.add(turn)
        self.messages.append(Message("assistant", turn.content, list(turn.tool_calls)))
        return turn

    async def run_tools(self, turn: TurnResult) -> list[ToolResult]:
        """Run the turn's tool calls concurrently; results are appended in call order."""
        results = await asyncio.gather(
            *(self._agent._call(self._run, call, self._tools) for call in turn.tool_calls)
        )
        for call, result in zip(turn.tool_calls, results, strict=True):
            self.messages.append(
                Message("tool", result.content, tool_call_id=call.id, name=call.name)
            )
        return list(results)

    def over_budget(self) -> bool:
        return self._agent._over_budget(self._run.usage)


class Agent:
    """Runs agent loops on a started `Host` with a provider."""

    def __init__(
        self,
        host: Host,
        provider: Provider,
        config: AgentConfig,
        sessions: SessionStore | None = None,
        strategy: LoopStrategy | None = None,
    ) -> None:
        self.host = host
        self.provider = provider
        self.config = config
        self.sessions = sessions
        self.strategy: LoopStrategy = strategy or DefaultStrategy()
        self.buses: dict[str, MessageBus] = {}
        self.runs: dict[str, RunHandle] = {}
        # Plugins reach this agent (sessions, tasks) through the host's agent port.
        host.services.agents.port = self

    # The agent port (what plugins may reach, behind their capabilities) ----------------

    def submit(
        self, prompt: str, *, session_id: str | None, caller: Caller
    ) -> tuple[str, str | None]:
        handle = self.start(prompt, session_id=session_id, caller=caller)
        return handle.run_id, handle.session_id

    def append_display(self, session_id: str, message: Message) -> None:
        self.bus(session_id).append(message)

    def inject_next(self, session_id: str, message: Message) -> None:
        self.bus(session_id).inject_next(message)

    def history(self, session_id: str) -> list[Message]:
        return self.sessions.load(session_id) if self.sessions else []

    def session_ids(self) -> list[str]:
        return [s.id for s in self.sessions.list()] if self.sessions else []

    def bus(self, session_id: str) -> MessageBus:
        """The message bus of a session (created on first use)."""
        return self.buses.setdefault(session_id, MessageBus())

    def start(
        self, prompt: str, *, session_id: str | None = None, caller: Caller | None = None
    ) -> RunHandle:
        """Start a run in the background; returns its handle at once."""
        who = caller or Caller.operator()
        if self.sessions is not None:
            if session_id is None:
                session_id = self.sessions.create(who.id, prompt[:80])
            elif not self.sessions.exists(session_id):
                raise KeyError(f"no session {session_id!r}")
        handle = RunHandle(uuid.uuid4().hex, session_id)
        state = _Run(handle, prompt, who)
        handle.task = asyncio.get_running_loop().create_task(self._run(state))
        self.runs[handle.run_id] = handle
        handle.task.add_done_callback(lambda _: self.runs.pop(handle.run_id, None))
        return handle

    async def run(
        self, prompt: str, *, session_id: str | None = None, caller: Caller | None = None
    ) -> RunResult:
        """Run to the end and return the result."""
        return await self.start(prompt, session_id=session_id, caller=caller).wait()

    # The run -----------------------------------------------------------------------

    def _emit(self, run: _Run, kind: str, **data: Any) -> None:
        h = run.handle
        event = SessionEvent(kind, h.run_id, h.session_id, data)
        h._publish(event)
        self.host.events.emit(
            f"task.{kind}", {"run_id": h.run_id, "session_id": h.session_id, **data}
        )

    async def _run(self, run: _Run) -> RunResult:
        h, hooks = run.handle, self.host.hooks
        try:
            verdict = await hooks.transform_user_input(run.prompt)
            if isinstance(verdict, Intercept):
                return self._finish_early(run, verdict.reply or "", intercepted=True)
            text = verdict
            if text.startswith("/"):
                answer = await self.host.run_command(text)
                if answer is not None:
                    return self._finish_early(run, answer, command=True)
            start = await self.host.events.run_start(
                RunStart(h.run_id, h.session_id, text, run.caller)
            )
            if start.blocked_by is not None:
                return await self._end(
                    run, RunEndReason.BLOCKED, "", start.block_reason, blocked_by=start.blocked_by
                )
            env = self._env(run.caller, start.env)
            ask = functools.partial(self._emit, run)
            token = _CURRENT.set(RunInfo(h.run_id, h.session_id, run.caller, env, ask))
            try:
                reason, reply, error = await self._turns(run, text, start.system_prompt)
            finally:
                _CURRENT.reset(token)
        except asyncio.CancelledError:
            reason, reply, error = RunEndReason.ABORTED, "", "the run was aborted"
        except ProviderError as exc:
            reason, reply, error = RunEndReason.ERROR, "", str(exc)
        return await self._end(run, reason, reply, error)

    async def _turns(
        self, run: _Run, text: str, additions: list[str]
    ) -> tuple[RunEndReason, str, str | None]:
        cfg, h = self.config, run.handle
        history = self.sessions.load(h.session_id) if self.sessions and h.session_id else []
        injected = self.bus(h.session_id).drain_next() if h.session_id else []
        run.new_messages = [*injected, Message("user", text)]
        base = "\n\n".join(p for p in (cfg.system_prompt, *additions) if p)
        turns = Turns(self, run, history, base)
        try:
            async with asyncio.timeout(cfg.timeout_s):
                outcome = await self.strategy.run(turns)
        except TimeoutError:
            return RunEndReason.TIMEOUT, "", f"the run timed out after {cfg.timeout_s:g}s"
        return outcome.reason, outcome.reply, outcome.error

    async def _stream(self, run: _Run, request: ChatRequest) -> TurnResult:
        done: TurnResult | None = None
        async for event in self.provider.stream(request):
            if isinstance(event, TextDelta):
                self._emit(run, "token", text=event.text)
            elif isinstance(event, TurnDone):
                done = event.turn
        if done is None:
            raise ProviderError("the model stream ended without a result")
        return done

    async def _call(self, run: _Run, call: ToolCall, allowed: set[str]) -> ToolResult:
        self._emit(run, "tool_use", tool=call.name, input=call.arguments, call_id=call.id)
        if INVALID_ARGUMENTS in call.arguments:
            result = ToolResult.error(
                f"{call.name}: the arguments were not valid JSON; send a JSON object"
            )
        elif call.name not in allowed:
            result = ToolResult.error(f"the tool {call.name!r} is not available in this run")
        else:
            try:
                result = await self.host.call_tool(
                    call.name, call.arguments, caller=run.caller, call_id=call.id
                )
            except UnknownToolError as exc:
                result = ToolResult.error(str(exc))
        self._emit(run, "tool_result", tool=call.name, call_id=call.id, is_error=result.is_error)
        return result

    def _over_budget(self, usage: _Usage) -> bool:
        cfg = self.config
        if cfg.token_budget is not None and usage.prompt + usage.completion >= cfg.token_budget:
            return True
        cost = (
            usage.prompt / 1000 * cfg.prompt_price + usage.completion / 1000 * cfg.completion_price
        )
        return cfg.cost_budget is not None and cost >= cfg.cost_budget

    def _env(self, caller: Caller, additions: dict[str, dict[str, str]]) -> dict[str, str]:
        """Declared env of every plugin the caller may use, plus interceptor additions from
        those same plugins; nothing from plugins the caller's roles do not permit."""
        env: dict[str, str] = {}
        for pid, rec in self.host.records.items():
            if rec.state.value != "active" or not self._permits(pid, caller):
                continue
            manifest = rec.candidate.manifest
            for var in manifest.env if manifest else ():
                if var.from_ in os.environ:
                    env[var.target] = os.environ[var.from_]
            env.update(additions.get(pid, {}))
        return env

    def _permits(self, plugin_id: str, caller: Caller) -> bool:
        rec = self.host.records.get(plugin_id)
        roles = rec.resolution.roles if rec and rec.resolution else None
        if roles is None or "*" in roles or "*" in caller.roles:
            return True
        return not set(roles).isdisjoint(caller.roles)

    def _finish_early(
        self, run: _Run, reply: str, *, intercepted: bool = False, command: bool = False
    ) -> RunResult:
        """An intercepted input or a slash command: answered, no model call, no run hooks."""
        h = run.handle
        self._emit(run, "done", text=reply)
        h._close()
        return RunResult(
            h.run_id,
            h.session_id,
            RunEndReason.COMPLETE,
            reply,
            intercepted=intercepted,
            command=command,
        )

    async def _end(
        self,
        run: _Run,
        reason: RunEndReason,
        reply: str,
        error: str | None,
        *,
        blocked_by: str | None = None,
    ) -> RunResult:
        """Persist, after-run hooks, run-end interceptors, the final event. Shielded, so an
        abort that lands here still finishes the bookkeeping."""
        return await asyncio.shield(self._finalise(run, reason, reply, error, blocked_by))

    async def _finalise(
        self, run: _Run, reason: RunEndReason, reply: str, error: str | None, blocked_by: str | None
    ) -> RunResult:
        h = run.handle
        if self.sessions is not None and h.session_id and run.new_messages:
            self.sessions.append(h.session_id, run.new_messages)
        await self.host.hooks.after_run(reason)
        final: str | None = reply
        if reason is not RunEndReason.BLOCKED:
            outcome = await self.host.events.run_end(
                RunEnd(h.run_id, h.session_id, run.prompt, reply, reason, run.caller)
            )
            final = None if outcome.suppressed else outcome.reply
        result = RunResult(
            h.run_id,
            h.session_id,
            reason,
            final,
            turns=run.usage.turns,
            prompt_tokens=run.usage.prompt,
            completion_tokens=run.usage.completion,
            cached_prompt_tokens=run.usage.cached,
            error=error,
            blocked_by=blocked_by,
        )
        if reason is RunEndReason.COMPLETE:
            self._emit(run, "done", text=final, suppressed=final is None)
        else:
            self._emit(run, "failed", error=error, reason=reason.value)
        h._close()
        return result
