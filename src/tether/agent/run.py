"""A run's public shapes: its events, its result, its handle, and what tools see of it."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from tether.contract.types import Caller, RunEndReason


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """What a run reports as it goes: `token`, `tool_use`, `tool_result`, `ask_user`,
    `done`, `failed`."""

    kind: str
    run_id: str
    session_id: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The run a tool call belongs to; read it with `current_run()` inside a tool."""

    run_id: str
    session_id: str | None
    caller: Caller
    env: dict[str, str]
    _emit: Callable[..., None] = field(repr=False, compare=False, default=lambda *a, **k: None)

    def ask_user(self, question: str, options: list[str] | None = None) -> None:
        """Put a question to the user: an `ask_user` session event (and `task.ask_user` for
        plugins), which chat surfaces show; the answer comes back as the next user turn."""
        self._emit("ask_user", question=question, options=list(options or []))


_CURRENT: contextvars.ContextVar[RunInfo | None] = contextvars.ContextVar(
    "tether_run", default=None
)


def current_run() -> RunInfo | None:
    """The run the calling code is part of (tools called by the agent loop), else None."""
    return _CURRENT.get()


@dataclass(slots=True)
class RunResult:
    run_id: str
    session_id: str | None
    reason: RunEndReason
    reply: str | None
    """None when a run-end interceptor suppressed it."""
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    error: str | None = None
    intercepted: bool = False
    command: bool = False
    blocked_by: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is RunEndReason.COMPLETE

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "session_id": self.session_id,
            "reason": self.reason.value,
            "reply": self.reply,
            "turns": self.turns,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cached_prompt_tokens": self.cached_prompt_tokens,
            },
            "error": self.error,
            "intercepted": self.intercepted,
            "command": self.command,
            "blocked_by": self.blocked_by,
        }


class RunHandle:
    """A run in progress: subscribe to its events, abort it, await its result."""

    def __init__(self, run_id: str, session_id: str | None) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self.task: asyncio.Task[RunResult] | None = None
        self._queues: list[asyncio.Queue[SessionEvent | None]] = []
        self._callbacks: list[Callable[[SessionEvent], None]] = []
        self.history: list[SessionEvent] = []

    def on_event(self, callback: Callable[[SessionEvent], None]) -> None:
        self._callbacks.append(callback)

    async def events(self) -> AsyncIterator[SessionEvent]:
        """Every event of the run from now on (and those already sent), until it ends."""
        queue: asyncio.Queue[SessionEvent | None] = asyncio.Queue()
        for past in self.history:
            queue.put_nowait(past)
        if self.task is not None and self.task.done():
            queue.put_nowait(None)
        self._queues.append(queue)
        while (item := await queue.get()) is not None:
            yield item

    def _publish(self, event: SessionEvent) -> None:
        # Never awaited: a slow subscriber cannot slow the run.
        self.history.append(event)
        for queue in self._queues:
            queue.put_nowait(event)
        for callback in self._callbacks:
            with contextlib.suppress(Exception):  # a broken subscriber is its own problem
                callback(event)

    def _close(self) -> None:
        for queue in self._queues:
            queue.put_nowait(None)

    def abort(self) -> None:
        """Stop the run promptly: the stream and running tools are cancelled."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def wait(self) -> RunResult:
        assert self.task is not None
        return await self.task
