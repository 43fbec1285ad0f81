"""Value types that cross the plugin boundary: tool calls and results, hook verdicts, events.

Plain dataclasses, JSON-shaped, so every tier (in-process, subprocess, wasm) can carry them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(slots=True)
class ToolCall:
    """A request to run one tool: `name` is the full `plugin_{id}_{tool}` name."""

    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass(slots=True)
class ToolResult:
    """What a tool call produced: text for the model, an explicit error flag, optional data.

    `content` is what the model sees. `data` carries the structured value when the handler
    returned one. Nothing is inferred from the text: an error is an error only when flagged.
    """

    content: str
    is_error: bool = False
    data: Any = None

    @classmethod
    def error(cls, message: str) -> ToolResult:
        return cls(content=message, is_error=True)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"content": self.content, "is_error": self.is_error}
        if self.data is not None:
            out["data"] = self.data
        return out


@dataclass(frozen=True, slots=True)
class Block:
    """Returned by a before-tool-call hook to stop the call; `content` becomes its result."""

    content: str
    is_error: bool = True


@dataclass(frozen=True, slots=True)
class Intercept:
    """Returned by a transform-user-input hook: the input is handled, the model is not called."""

    reply: str | None = None


@dataclass(slots=True)
class Message:
    """One chat message in provider-neutral form."""

    role: str
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(slots=True)
class TurnResult:
    """One model turn, as after-model-call hooks see it."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """A tool as listed to callers, hooks and the model."""

    name: str
    description: str
    input_schema: dict[str, Any]
    plugin_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "plugin": self.plugin_id,
        }


class RunEndReason(StrEnum):
    """Why an agent run ended, as after-run hooks receive it."""

    COMPLETE = "complete"
    ABORTED = "aborted"
    MAX_TURNS = "max_turns"
    BUDGET = "budget"
    TIMEOUT = "timeout"
    BLOCKED = "blocked"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is behind a run or tool call. A role of "*" means every role (the operator)."""

    id: str
    roles: frozenset[str] = frozenset()

    @classmethod
    def operator(cls) -> Caller:
        return cls("operator", frozenset({"*"}))


@dataclass(frozen=True, slots=True)
class RunStart:
    """Event data for the `run.start` interceptor."""

    run_id: str
    session_id: str | None
    prompt: str
    caller: Caller


@dataclass(frozen=True, slots=True)
class RunStartResult:
    """A `run.start` interceptor's verdict: block the run, add to the system prompt or env."""

    block: str | None = None
    system_prompt: str | None = None
    env: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class RunEnd:
    """Event data for the `run.end` interceptor."""

    run_id: str
    session_id: str | None
    prompt: str
    reply: str
    reason: RunEndReason
    caller: Caller


@dataclass(frozen=True, slots=True)
class RunEndResult:
    """A `run.end` interceptor's verdict: replace or suppress the reply."""

    reply: str | None = None
    suppress: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    """A notification event as subscribers receive it."""

    name: str
    data: dict[str, Any]
    source: str = "host"


@dataclass(frozen=True, slots=True)
class NotificationRequest:
    """One notification as a channel handler receives it. `sender` is the sending plugin's
    id, or "host"; `metadata` carries channel-specific extras (a subject, a thread id...)."""

    kind: str
    recipient: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    sender: str = "host"


@dataclass(frozen=True, slots=True)
class NotificationResult:
    """What a send produced: `ok`, or an error `message` that says whether a retry may help.

    Channel handlers return `NotificationResult.success()` or
    `NotificationResult.error("...", retryable=True)`; the bus fills in `attempts`.
    """

    ok: bool
    message: str = ""
    retryable: bool = False
    attempts: int = 1
    data: Any = None

    @classmethod
    def success(cls, message: str = "", data: Any = None) -> NotificationResult:
        return cls(ok=True, message=message, data=data)

    @classmethod
    def error(cls, message: str, *, retryable: bool = False) -> NotificationResult:
        return cls(ok=False, message=message, retryable=retryable)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "message": self.message, "attempts": self.attempts}
        if not self.ok:
            out["retryable"] = self.retryable
        if self.data is not None:
            out["data"] = self.data
        return out
