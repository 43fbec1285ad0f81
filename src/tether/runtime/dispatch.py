"""Running one tool call: validate, inject, run under a timeout, normalise the result.

The handler runs in its own task so that one which swallows cancellation cannot hang the
caller: after the timeout the task is cancelled, and if it still runs after a grace period
it is abandoned and reported.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from tether.contract.errors import ToolInputError
from tether.contract.types import Caller, ToolInfo, ToolResult
from tether.services.calls import PluginCrash, wait_task

CANCEL_GRACE_S = 1.0

StuckSink = Callable[[str, str, str], None]
"""Called with (plugin id, tool name, what happened) for a call that outlives its timeout."""


@dataclass(slots=True)
class RegisteredTool:
    """A tool in the registry, with everything a call needs resolved at registration."""

    name: str
    local_name: str
    plugin_id: str
    description: str
    input_schema: dict[str, Any]
    validate: Callable[[Any], None]
    handler: Callable[..., Any]
    is_async: bool
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None
    injected: dict[str, Any]
    """Parameter name -> value to inject (the plugin's context), resolved at registration."""
    caller_param: str | None
    timeout_s: float
    roles: frozenset[str] | None
    trusted: bool = False
    """The handler is a tier's own proxy (see `trust`): awaited inline under the timeout."""
    info: ToolInfo = field(init=False)

    def __post_init__(self) -> None:
        self.info = ToolInfo(self.name, self.description, self.input_schema, self.plugin_id)

    def visible_to(self, caller: Caller) -> bool:
        if self.roles is None or "*" in caller.roles or "*" in self.roles:
            return True
        return not self.roles.isdisjoint(caller.roles)


def normalise_result(value: Any, max_bytes: int) -> ToolResult:
    """Turn what a handler returned into a `ToolResult`, refusing non-JSON and oversize."""
    if isinstance(value, ToolResult):
        result = value
        if not isinstance(result.content, str):
            return ToolResult.error("the tool returned a ToolResult whose content is not text")
    elif isinstance(value, str):
        result = ToolResult(value)
    elif value is None:
        result = ToolResult("")
    else:
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        try:
            text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            kind = "a non-finite number" if _has_nonfinite(value) else type(value).__name__
            return ToolResult.error(
                f"the tool returned {kind}, which is not JSON ({exc}); return text, a JSON "
                "value or a ToolResult"
            )
        result = ToolResult(text, data=value)
    size = len(result.content)
    if size * 4 > max_bytes and (size := len(result.content.encode())) > max_bytes:
        return ToolResult.error(
            f"the tool's result is {size} bytes, over the {max_bytes}-byte limit; return less"
        )
    return result


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nonfinite(v) for v in value)
    return False


async def execute(
    tool: RegisteredTool,
    arguments: Any,
    caller: Caller,
    *,
    max_result_bytes: int,
    on_error: Callable[[str, str, BaseException], None],
    on_stuck: StuckSink,
) -> ToolResult:
    """Run one call of `tool`; every failure becomes an error result, never an exception
    (except cancellation of the caller, which cancels the call and propagates)."""
    if not isinstance(arguments, dict):
        return ToolResult.error(f"{tool.name}: arguments must be a JSON object")
    try:
        tool.validate(arguments)
    except ToolInputError as exc:
        return ToolResult.error(f"{tool.name}: invalid arguments: {exc}")
    kwargs = tool.convert(arguments) if tool.convert is not None else dict(arguments)
    if tool.injected:
        kwargs.update(tool.injected)
    if tool.caller_param is not None:
        kwargs[tool.caller_param] = caller
    fn = functools.partial(tool.handler, **kwargs)
    if tool.trusted:
        return await _execute_trusted(tool, fn, max_result_bytes, on_error)
    if not tool.is_async:
        return await _execute_sync(tool, fn, max_result_bytes, on_error, on_stuck)
    task = asyncio.get_running_loop().create_task(_run(fn))
    try:
        finished = await wait_task(task, tool.timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not finished:
        task.cancel()
        if not await wait_task(task, CANCEL_GRACE_S):
            task.add_done_callback(_consume)
            on_stuck(
                tool.plugin_id,
                tool.name,
                f"timed out after {tool.timeout_s:g}s and ignored cancellation",
            )
        return _timed_out(tool)
    failure = task.exception() if not task.cancelled() else asyncio.CancelledError()
    return _outcome(tool, failure, task, max_result_bytes, on_error)


_TRUSTED: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


def trust(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a tier's proxy handler (subprocess RPC, wasm call) as cooperative: it honours
    cancellation and enforces the plugin's limits on its side of the boundary, so it needs
    no task of its own to be abandoned; that saves two event-loop wake-ups per call."""
    _TRUSTED.add(handler)
    return handler


def is_trusted(handler: Callable[..., Any]) -> bool:
    try:
        return handler in _TRUSTED
    except TypeError:  # unhashable callables are never trusted
        return False


async def _execute_trusted(
    tool: RegisteredTool,
    fn: Callable[[], Any],
    max_result_bytes: int,
    on_error: Callable[[str, str, BaseException], None],
) -> ToolResult:
    try:
        async with asyncio.timeout(tool.timeout_s):
            value = await fn()
    except TimeoutError:
        return _timed_out(tool)
    except Exception as exc:
        on_error(tool.plugin_id, tool.name, exc)
        return ToolResult.error(f"{tool.name} failed: {type(exc).__name__}: {exc}")
    return normalise_result(value, max_result_bytes)


async def _execute_sync(
    tool: RegisteredTool,
    fn: Callable[[], Any],
    max_result_bytes: int,
    on_error: Callable[[str, str, BaseException], None],
    on_stuck: StuckSink,
) -> ToolResult:
    """A sync handler runs in a worker thread; a thread cannot be cancelled, so one that
    outlives its timeout is reported as still running."""
    work = _executor().submit(_call_sync, fn)
    future = asyncio.wrap_future(work)
    try:
        finished = await wait_task(future, tool.timeout_s)
    except asyncio.CancelledError:
        future.cancel()
        raise
    if not finished:
        future.cancel()
        if not work.done():
            on_stuck(
                tool.plugin_id,
                tool.name,
                f"timed out after {tool.timeout_s:g}s and keeps running in its thread",
            )
        return _timed_out(tool)
    return _outcome(tool, future.exception(), future, max_result_bytes, on_error)


def _outcome(
    tool: RegisteredTool,
    failure: BaseException | None,
    done: asyncio.Future[Any],
    max_result_bytes: int,
    on_error: Callable[[str, str, BaseException], None],
) -> ToolResult:
    if failure is not None:
        return _failed(tool, failure, on_error)
    return normalise_result(done.result(), max_result_bytes)


def _failed(
    tool: RegisteredTool,
    failure: BaseException,
    on_error: Callable[[str, str, BaseException], None],
) -> ToolResult:
    """Report a handler's failure and turn it into the call's error result."""
    on_error(tool.plugin_id, tool.name, failure)
    original = failure.original if isinstance(failure, PluginCrash) else failure
    return ToolResult.error(f"{tool.name} failed: {type(original).__name__}: {original}")


def _timed_out(tool: RegisteredTool) -> ToolResult:
    return ToolResult.error(f"{tool.name}: timed out after {tool.timeout_s:g}s")


async def _run(fn: Callable[[], Any]) -> Any:
    try:
        return await fn()
    except (asyncio.CancelledError, Exception):
        raise
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: the plugin's, not ours
        raise PluginCrash(exc) from None


def _call_sync(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        raise
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: the plugin's, not ours
        raise PluginCrash(exc) from None


@functools.cache
def _executor() -> ThreadPoolExecutor:
    # Sync tools get their own pool, so stuck ones cannot starve asyncio's default executor.
    return ThreadPoolExecutor(max_workers=32, thread_name_prefix="tether-tool")


def _consume(task: asyncio.Task[Any]) -> None:
    # Retrieve the abandoned task's outcome so asyncio does not log it as never retrieved.
    if not task.cancelled():
        task.exception()
