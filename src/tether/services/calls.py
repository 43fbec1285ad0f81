"""Calling plugin code safely: sync code off the event loop, and no exception from a plugin
(not even `SystemExit` or `KeyboardInterrupt`) escaping into the host."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any


class PluginCrash(Exception):
    """A plugin raised `SystemExit`, `KeyboardInterrupt` or another `BaseException`."""

    def __init__(self, exc: BaseException) -> None:
        self.original = exc
        super().__init__(f"the plugin raised {type(exc).__name__}({exc}); the host ignored it")


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """True for `async def` functions and objects whose `__call__` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object's async __call__ counts too
    )


async def call_plugin(fn: Callable[..., Any], *args: Any, in_thread: bool | None = None) -> Any:
    """Await `fn(*args)`; sync functions run in a worker thread unless `in_thread` is False.

    Base exceptions other than cancellation become `PluginCrash`, so a plugin that calls
    `sys.exit()` fails its own call and nothing else.
    """
    try:
        if is_async_callable(fn):
            return await fn(*args)
        if in_thread is False:
            result = fn(*args)
        else:
            result = await asyncio.to_thread(fn, *args)
        if inspect.isawaitable(result):
            return await result
        return result
    except asyncio.CancelledError:
        raise
    except Exception:
        raise
    except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit...
        raise PluginCrash(exc) from None


def _wake(waiter: asyncio.Future[None], *_: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def wait_task(task: asyncio.Future[Any], timeout: float) -> bool:
    """Wait for `task` up to `timeout` seconds without cancelling it; True when it is done.

    Unlike `asyncio.wait_for`, this returns at the deadline even when the task ignores
    cancellation, so plugin code can never hang its caller.
    """
    if task.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wake = functools.partial(_wake, waiter)
    task.add_done_callback(wake)
    timer = loop.call_later(timeout, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)
    return task.done()


async def call_bounded(fn: Callable[..., Any], *args: Any, timeout: float) -> BaseException | None:
    """Run plugin code (teardown, on_load...) with a hard deadline; returns its failure.

    A call that outlives the deadline is cancelled and left behind; a `TimeoutError` is
    returned either way.
    """
    task = asyncio.get_running_loop().create_task(call_plugin(fn, *args))
    if not await wait_task(task, timeout):
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return TimeoutError(f"did not finish within {timeout:g}s")
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()
