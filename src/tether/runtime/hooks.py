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

Performance notes (see docs/benchmarks.md): every chain is written out in its method, with
no helper coroutine and no `*args` call in between, and has two loops: one for a plan whose
hooks are all sync (a bare `fn(value)` per hook) and one that awaits the async ones, over
precomputed `(fn, is_async)` pairs. A hook that hands back the value that last passed the
type check skips the repeated `isinstance`. A kind with no hooks costs one dict lookup.
The repetition between the chains is deliberate: it is what keeps them within ~1.2x of a
bare loop over the same functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from inspect import CO_COROUTINE
from types import FunctionType
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

# In the loops below, `same` is the last value that passed the type check (this sentinel,
# which no hook can return, until one has): a hook handing that value back unchanged is
# skipped without another `isinstance` call, with the same outcome as the check and
# assignment it skips.
_UNSET: Any = object()

HookErrorSink = Callable[[str, str, BaseException], None]
"""Called with (plugin id, hook name, exception) when a hook raises or returns garbage."""


def _is_async(fn: Callable[..., Any]) -> bool:
    """`is_async_callable(fn)`, without its `inspect` calls for a plain function that carries
    no attributes. Plans are rebuilt on every activation, for every hook of every plugin, so
    at 100 plugins this check runs thousands of times during start-up.

    For such a function the answer is its code's coroutine flag: nothing in an empty
    `__dict__` can make it count otherwise (no coroutine marker, no `__call__` override).
    Anything else (methods, partials, callable objects, decorated functions) takes the
    general path.
    """
    if type(fn) is FunctionType and not fn.__dict__:
        return bool(fn.__code__.co_flags & CO_COROUTINE)
    return is_async_callable(fn)


@dataclass(frozen=True, slots=True)
class _StrictPairs:
    fns: tuple[Callable[..., Any], ...]
    flags: tuple[bool, ...]

    def __iter__(self) -> Iterator[tuple[Callable[..., Any], bool]]:
        return iter(zip(self.fns, self.flags, strict=True))


@dataclass(frozen=True, slots=True)
class HookPlan:
    """The resolved chain for one hook kind: functions in load order, with their owners."""

    name: str
    fns: tuple[Callable[..., Any], ...]
    is_async: tuple[bool, ...]
    owners: dict[Callable[..., Any], str]
    any_async: bool
    # Derived once here, so that running a chain does no per-call setup.
    steps: Iterable[tuple[Callable[..., Any], bool]] = field(init=False, repr=False, compare=False)
    """`(fn, is_async)` pairs for the loop that awaits (no `zip` per call)."""
    all_sync: bool = field(init=False, repr=False, compare=False)
    """No hook is async: the chain can call each one inline, with no `await` in the loop."""

    def __post_init__(self) -> None:
        if len(self.fns) == len(self.is_async):
            steps: Iterable[tuple[Callable[..., Any], bool]] = tuple(
                zip(self.fns, self.is_async, strict=True)
            )
            all_sync = not any(self.is_async)
        else:  # a malformed plan built by hand fails when it runs, as zip(strict=True) does
            steps, all_sync = _StrictPairs(self.fns, self.is_async), False
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "all_sync", all_sync)

    @classmethod
    def build(cls, name: str, entries: list[tuple[str, Callable[..., Any]]]) -> HookPlan:
        # Failures are attributed by function object, so a function that two plugins both
        # registered gets a distinct wrapper for each later registration (rare; no cost
        # to the usual case).
        seen: set[Callable[..., Any]] = set()
        distinct: list[tuple[str, Callable[..., Any]]] = []
        for pid, fn in entries:
            distinct.append((pid, _wrap(fn) if fn in seen else fn))
            seen.add(fn)
        fns = tuple(fn for _, fn in distinct)
        flags = tuple(_is_async(fn) for fn in fns)
        return cls(name, fns, flags, {fn: pid for pid, fn in distinct}, any(flags))

    def __bool__(self) -> bool:
        return bool(self.fns)


def _wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A new function object that behaves exactly like `fn` (sync or async)."""
    if _is_async(fn):

        async def async_twin(*args: Any) -> Any:
            return await fn(*args)

        return async_twin

    def twin(*args: Any) -> Any:
        return fn(*args)

    return twin


class Hooks:
    """Runs the hook chains of the current plugin set. Plans are swapped, never mutated.

    A missing plan and an empty one behave alike: the value comes back unchanged.
    """

    def __init__(self, on_error: HookErrorSink) -> None:
        self._on_error = on_error
        self.plans: dict[str, HookPlan] = {}

    def _fail(self, plan: HookPlan, fn: Callable[..., Any], exc: BaseException) -> None:
        self._on_error(plan.owners.get(fn, "?"), plan.name, exc)

    def _garbage(self, plan: HookPlan, fn: Callable[..., Any], got: Any, want: str) -> None:
        self._fail(plan, fn, TypeError(f"returned {type(got).__name__}, expected {want} or None"))

    # Threading chains: a hook's non-None result of the right type replaces the value. ------

    async def before_model_call(self, messages: list[Message], config: Any = None) -> list[Message]:
        plan = self.plans.get("before_model_call")
        if plan is None:
            return messages
        value = messages
        same = _UNSET
        if plan.all_sync:
            for fn in plan.fns:
                try:
                    r = fn(value, config)
                except _PLUGIN_ERRORS as exc:
                    self._fail(plan, fn, exc)
                    continue
                if r is same or r is None:
                    continue
                if isinstance(r, list):
                    same = value = r
                else:
                    self._garbage(plan, fn, r, "list")
            return value
        for fn, is_async in plan.steps:
            try:
                r = await fn(value, config) if is_async else fn(value, config)
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
                continue
            if r is same or r is None:
                continue
            if isinstance(r, list):
                same = value = r
            else:
                self._garbage(plan, fn, r, "list")
        return value

    async def after_model_call(self, turn: TurnResult) -> TurnResult:
        plan = self.plans.get("after_model_call")
        if plan is None:
            return turn
        value = turn
        same = _UNSET
        if not plan.any_async:
            for fn in plan.fns:
                try:
                    r = fn(value)
                except _PLUGIN_ERRORS as exc:
                    self._fail(plan, fn, exc)
                    continue
                if r is same or r is None:
                    continue
                if isinstance(r, TurnResult):
                    same = value = r
                else:
                    self._garbage(plan, fn, r, "TurnResult")
            return value
        for fn, is_async in plan.steps:
            try:
                r = await fn(value) if is_async else fn(value)
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
                continue
            if r is same or r is None:
                continue
            if isinstance(r, TurnResult):
                same = value = r
            else:
                self._garbage(plan, fn, r, "TurnResult")
        return value

    async def transform_system_prompt(self, prompt: str) -> str:
        plan = self.plans.get("transform_system_prompt")
        if plan is None:
            return prompt
        value = prompt
        same = _UNSET
        if not plan.any_async:
            for fn in plan.fns:
                try:
                    r = fn(value)
                except _PLUGIN_ERRORS as exc:
                    self._fail(plan, fn, exc)
                    continue
                if r is same or r is None:
                    continue
                if isinstance(r, str):
                    same = value = r
                else:
                    self._garbage(plan, fn, r, "str")
            return value
        for fn, is_async in plan.steps:
            try:
                r = await fn(value) if is_async else fn(value)
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
                continue
            if r is same or r is None:
                continue
            if isinstance(r, str):
                same = value = r
            else:
                self._garbage(plan, fn, r, "str")
        return value

    async def after_tool_call(self, call: ToolCall, result: ToolResult) -> ToolResult:
        plan = self.plans.get("after_tool_call")
        if plan is None:
            return result
        value = result
        same = _UNSET
        if not plan.any_async:
            for fn in plan.fns:
                try:
                    r = fn(call, value)
                except _PLUGIN_ERRORS as exc:
                    self._fail(plan, fn, exc)
                    continue
                if r is same or r is None:
                    continue
                if isinstance(r, ToolResult):
                    same = value = r
                else:
                    self._garbage(plan, fn, r, "ToolResult")
            return value
        for fn, is_async in plan.steps:
            try:
                r = await fn(call, value) if is_async else fn(call, value)
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
                continue
            if r is same or r is None:
                continue
            if isinstance(r, ToolResult):
                same = value = r
            else:
                self._garbage(plan, fn, r, "ToolResult")
        return value

    # Short-circuiting chains ----------------------------------------------------------------

    async def before_tool_call(self, call: ToolCall) -> ToolCall | Block:
        plan = self.plans.get("before_tool_call")
        if plan is None:
            return call
        value: ToolCall | Block = call
        same = _UNSET
        if plan.all_sync:
            for fn in plan.fns:
                try:
                    r = fn(value)
                except _PLUGIN_ERRORS as exc:
                    self._fail(plan, fn, exc)
                    continue
                if r is same or r is None:
                    continue
                if isinstance(r, Block):
                    return r
                if isinstance(r, ToolCall):
                    same = value = r
                else:
                    self._garbage(plan, fn, r, "ToolCall or Block")
            return value
        for fn, is_async in plan.steps:
            try:
                r = await fn(value) if is_async else fn(value)
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
                continue
            if r is same or r is None:
                continue
            if isinstance(r, Block):
                return r
            if isinstance(r, ToolCall):
                same = value = r
            else:
                self._garbage(plan, fn, r, "ToolCall or Block")
        return value

    async def transform_user_input(self, text: str) -> str | Intercept:
        plan = self.plans.get("transform_user_input")
        if plan is None:
            return text
        value = text
        same = _UNSET
        if plan.all_sync:
            for fn in plan.fns:
                try:
                    r = fn(value)
                except _PLUGIN_ERRORS as exc:
                    self._fail(plan, fn, exc)
                    continue
                if r is same or r is None:
                    continue
                if isinstance(r, Intercept):
                    return r
                if isinstance(r, str):
                    same = value = r
                else:
                    self._garbage(plan, fn, r, "str or Intercept")
            return value
        for fn, is_async in plan.steps:
            try:
                r = await fn(value) if is_async else fn(value)
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
                continue
            if r is same or r is None:
                continue
            if isinstance(r, Intercept):
                return r
            if isinstance(r, str):
                same = value = r
            else:
                self._garbage(plan, fn, r, "str or Intercept")
        return value

    # Other chains (not per-token hot; one loop each) ------------------------------------------

    async def filter_tools(self, tools: list[ToolInfo]) -> list[ToolInfo]:
        plan = self.plans.get("filter_tools")
        if plan is None:
            return tools
        current = tools
        for fn, is_async in plan.steps:
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
        plan = self.plans.get("after_run")
        if plan is None:
            return
        for fn, is_async in plan.steps:
            try:
                if is_async:
                    await fn(reason)
                else:
                    fn(reason)
            except _PLUGIN_ERRORS as exc:
                self._fail(plan, fn, exc)
