"""The event bus: notification fan-out that never waits on subscribers, and ordered
interceptors for `run.start` and `run.end`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tether.contract.types import Event, RunEnd, RunEndResult, RunStart, RunStartResult
from tether.services.calls import PluginCrash, is_async_callable

log = logging.getLogger("tether.events")

ErrorSink = Callable[[str, str, BaseException], None]
"""Called with (plugin id, event name, exception) when a handler fails or times out."""


@dataclass(frozen=True, slots=True)
class Subscription:
    event: str
    plugin_id: str
    handler: Callable[..., Any]
    is_async: bool
    """Resolved once at subscription: inspecting a callable costs more than most calls."""

    async def call(self, event: Any, *, inline: bool) -> Any:
        """Await the handler; a sync one runs inline or in a worker thread. A plugin's
        `SystemExit` or `KeyboardInterrupt` becomes `PluginCrash`, never the host's exit."""
        try:
            if self.is_async:
                return await self.handler(event)
            if inline:
                return self.handler(event)
            return await asyncio.to_thread(self.handler, event)
        except (asyncio.CancelledError, Exception):
            raise
        except BaseException as exc:
            raise PluginCrash(exc) from None


@dataclass(slots=True)
class RunStartOutcome:
    """Interceptors' combined verdict for a run start."""

    blocked_by: str | None = None
    block_reason: str | None = None
    system_prompt: list[str] = field(default_factory=list)
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Env additions per plugin id, so the caller can keep only permitted plugins' env."""


@dataclass(slots=True)
class RunEndOutcome:
    reply: str
    suppressed: bool = False


class EventBus:
    """Notification handlers run as independent tasks; interceptors run in order."""

    def __init__(self, on_error: ErrorSink | None = None, handler_timeout: float = 30.0) -> None:
        self._subs: dict[str, tuple[Subscription, ...]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._on_error = on_error or (lambda pid, ev, exc: None)
        self.handler_timeout = handler_timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        """The host's loop, for emits from worker threads; set when the host starts."""

    def subscribe(self, event: str, plugin_id: str, handler: Callable[..., Any]) -> Subscription:
        sub = Subscription(event, plugin_id, handler, is_async_callable(handler))
        self._subs[event] = (*self._subs.get(event, ()), sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs[sub.event] = tuple(s for s in self._subs.get(sub.event, ()) if s is not sub)

    def unsubscribe_plugin(self, plugin_id: str) -> int:
        """Drop every subscription of a plugin; returns how many there were."""
        removed = 0
        for name, subs in list(self._subs.items()):
            kept = tuple(s for s in subs if s.plugin_id != plugin_id)
            removed += len(subs) - len(kept)
            self._subs[name] = kept
        return removed

    def subscribers(self, event: str) -> tuple[Subscription, ...]:
        return self._subs.get(event, ())

    def emit(self, name: str, data: dict[str, Any] | None = None, *, source: str = "host") -> int:
        """Fan out to every subscriber without waiting; returns how many were started.

        Needs a running event loop. Each handler is its own task with its own timeout, so a
        failing or hanging handler affects no other.
        """
        subs = self._subs.get(name)
        if not subs:
            return 0
        event = Event(name, data or {}, source)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Called from a worker thread (sync plugin code): hand over to the loop.
            if self.loop is None:
                raise
            self.loop.call_soon_threadsafe(self._fan_out, subs, event, self.loop)
            return len(subs)
        self._fan_out(subs, event, loop)
        return len(subs)

    def _fan_out(
        self, subs: tuple[Subscription, ...], event: Event, loop: asyncio.AbstractEventLoop
    ) -> None:
        for sub in subs:
            task = loop.create_task(self._deliver(sub, event))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _deliver(self, sub: Subscription, event: Event) -> None:
        try:
            async with asyncio.timeout(self.handler_timeout):
                await sub.call(event, inline=False)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.warning("event %s: handler of plugin %s failed: %r", event.name, sub.plugin_id, exc)
            self._on_error(sub.plugin_id, event.name, exc)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for in-flight notification handlers (used at shutdown and in tests)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)

    def cancel_pending(self) -> None:
        for task in list(self._pending):
            task.cancel()

    async def run_start(self, event: RunStart) -> RunStartOutcome:
        """Run `run.start` interceptors in order: the first block stops the run; system
        prompt and env additions accumulate."""
        out = RunStartOutcome()
        for sub in self._subs.get("run.start", ()):
            verdict = await self._intercept(sub, event)
            if not isinstance(verdict, RunStartResult):
                continue
            if verdict.block is not None:
                out.blocked_by, out.block_reason = sub.plugin_id, verdict.block
                return out
            if verdict.system_prompt:
                out.system_prompt.append(verdict.system_prompt)
            if verdict.env:
                out.env.setdefault(sub.plugin_id, {}).update(verdict.env)
        return out

    async def run_end(self, event: RunEnd) -> RunEndOutcome:
        """Run `run.end` interceptors in order: each sees the reply as replaced so far; a
        suppression is final."""
        out = RunEndOutcome(event.reply)
        for sub in self._subs.get("run.end", ()):
            current = RunEnd(
                event.run_id, event.session_id, event.prompt, out.reply, event.reason, event.caller
            )
            verdict = await self._intercept(sub, current)
            if not isinstance(verdict, RunEndResult):
                continue
            if verdict.suppress:
                out.suppressed = True
                return out
            if verdict.reply is not None:
                out.reply = verdict.reply
        return out

    async def _intercept(self, sub: Subscription, event: Any) -> Any:
        # Interceptors are on every run's path, like hooks: sync ones run inline (a thread
        # hop per handler would cost more than most handlers do), async ones under a timeout.
        try:
            if not sub.is_async:
                return await sub.call(event, inline=True)
            async with asyncio.timeout(self.handler_timeout):
                return await sub.call(event, inline=True)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.warning("interceptor %s of plugin %s failed: %r", sub.event, sub.plugin_id, exc)
            self._on_error(sub.plugin_id, sub.event, exc)
            return None
