"""Hook chains: the hot path around every model call and tool call.

A `HookPlan` is computed once when the plugin set changes; running a chain is then a plain
loop over a tuple of functions. `try` costs nothing in CPython 3.11+ until something raises,
so per-hook error isolation is free on the fast path. Sync hooks run inline (they must be
quick: the watchdog reports one that blocks the loop); async hooks are awaited in order.

Composition (one plugin's output is the next one's input, in load order):
- before_model_call, after_model_call, transform_system_prompt, after_tool_call thread
  their value; a hook returning None leaves it unchanged;
- before_tool_call threads the call and the first `Block` short-circuits;
- transform_user_input threads the text and the first `Intercept` stops the chain;
- filter_tools narrows by intersection: a hook can remove tools, never add one;
- after_run runs every hook once with the end reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether.contract.types import (
    Block,
    Intercept,
    Message,
    RunEndReason,
    ToolCall,
    ToolInfo,
    ToolResult,
    TurnResult,
)
from tether.services.calls import is_async_callable

# A plugin's SystemExit or KeyboardInterrupt is its own failure, never the host's exit;
# cancellation still propagates.
_PLUGIN_ERRORS = (Exception, SystemExit, KeyboardInterrupt)

HookErrorSink = Callable[[str, str, BaseException], None]
"""Called with (plugin id, hook name, exception) when a hook raises or returns garbage."""


@dataclass(frozen=True, slots=True)
class HookPlan:
    """The resolved chain for one hook kind: functions in load order, with their owners."""

    name: str
    fns: tuple[Callable[..., Any], ...]
    is_async: tuple[bool, ...]
    owners: dict[Callable[..., Any], str]
    any_async: bool

    @classmethod
    def build(cls, name: str, entries: list[tuple[str, Callable[..., Any]]]) -> HookPlan:
        fns = tuple(fn for _, fn in entries)
        flags = tuple(is_async_callable(fn) for fn in fns)
        return cls(name, fns, flags, {fn: pid for pid, fn in entries}, any(flags))

    def __bool__(self) -> bool:
        return bool(self.fns)


class Hooks:
    """Runs the hook chains of the current plugin set. Plans are swapped, never mutated."""

    def __init__(self, on_error: HookErrorSink) -> None:
        self._on_error = on_error
        self.plans: dict[str, HookPlan] = {}

    def _plan(self, name: str) -> HookPlan:
        return self.plans.get(name) or HookPlan(name, (), (), {}, False)

    def _fail(self, plan: HookPlan, fn: Callable[..., Any], exc: BaseException) -> None:
        self._on_error(plan.owners.get(fn, "?"), plan.name, exc)

    def _garbage(self, plan: HookPlan, fn: Callable[..., Any], got: Any, want: str) -> None:
        self._fail(plan, fn, TypeError(f"returned {type(got).__name__}, expected {want} or None"))

    async def _thread(self, plan: HookPlan, value: Any, kind: type, *extra: Any) -> Any:
        """Thread `value` through the chain; `extra` arguments come first (e.g. the call)."""
        if not plan.any_async:
            for fn in plan.fns:
                try:
                    r = fn(*extra, value)
                except _PLUGIN_ERRORS as exc:
                    self._fail(plan, fn, exc)
                    continue
                if r is not None:
                    if isinstance(r, kind):
                        value = r
                    else:
                        self._garbage(plan, fn, r, kind.__name__)
            return value
        for fn, is_async in zip(plan.fns, plan.is_async, strict=True):
            try:
                r = await fn(*extra, value) if is_async else fn(*extra, value)
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
                continue
            if r is not None:
                if isinstance(r, kind):
                    value = r
                else:
                    self._garbage(plan, fn, r, kind.__name__)
        return value

    async def before_model_call(self, messages: list[Message], config: Any = None) -> list[Message]:
        plan = self._plan("before_model_call")
        if not plan:
            return messages
        value = messages
        for fn, is_async in zip(plan.fns, plan.is_async, strict=True):
            try:
                r = await fn(value, config) if is_async else fn(value, config)
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
                continue
            if r is not None:
                if isinstance(r, list):
                    value = r
                else:
                    self._garbage(plan, fn, r, "list")
        return value

    async def after_model_call(self, turn: TurnResult) -> TurnResult:
        plan = self._plan("after_model_call")
        return await self._thread(plan, turn, TurnResult) if plan else turn

    async def transform_system_prompt(self, prompt: str) -> str:
        plan = self._plan("transform_system_prompt")
        return await self._thread(plan, prompt, str) if plan else prompt

    async def after_tool_call(self, call: ToolCall, result: ToolResult) -> ToolResult:
        plan = self._plan("after_tool_call")
        return await self._thread(plan, result, ToolResult, call) if plan else result

    async def before_tool_call(self, call: ToolCall) -> ToolCall | Block:
        plan = self._plan("before_tool_call")
        value: ToolCall | Block = call
        for fn, is_async in zip(plan.fns, plan.is_async, strict=True):
            try:
                r = await fn(value) if is_async else fn(value)
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
                continue
            if r is None:
                continue
            if isinstance(r, Block):
                return r
            if isinstance(r, ToolCall):
                value = r
            else:
                self._garbage(plan, fn, r, "ToolCall or Block")
        return value

    async def transform_user_input(self, text: str) -> str | Intercept:
        plan = self._plan("transform_user_input")
        value = text
        for fn, is_async in zip(plan.fns, plan.is_async, strict=True):
            try:
                r = await fn(value) if is_async else fn(value)
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
                continue
            if r is None:
                continue
            if isinstance(r, Intercept):
                return r
            if isinstance(r, str):
                value = r
            else:
                self._garbage(plan, fn, r, "str or Intercept")
        return value

    async def filter_tools(self, tools: list[ToolInfo]) -> list[ToolInfo]:
        plan = self._plan("filter_tools")
        current = tools
        for fn, is_async in zip(plan.fns, plan.is_async, strict=True):
            try:
                r = await fn(list(current)) if is_async else fn(list(current))
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
                continue
            if r is None:
                continue
            if not isinstance(r, list | tuple):
                self._garbage(plan, fn, r, "list of tools")
                continue
            # Intersection: keep the previous order, and only tools that were offered.
            keep = {t.name for t in r if isinstance(t, ToolInfo)}
            current = [t for t in current if t.name in keep]
        return current

    async def after_run(self, reason: RunEndReason) -> None:
        plan = self._plan("after_run")
        for fn, is_async in zip(plan.fns, plan.is_async, strict=True):
            try:
                if is_async:
                    await fn(reason)
                else:
                    fn(reason)
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
