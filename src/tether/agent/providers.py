"""The provider interface: streaming chat with tool calls, and model listing.

A provider turns a `ChatRequest` into a stream of `TextDelta`s followed by one `TurnDone`
carrying the assembled turn (text, tool calls, usage). Plugins with `providers.register`
can add providers; the host's config picks one by name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tether.contract.errors import TetherError
from tether.contract.types import Message, ToolInfo, TurnResult


class ProviderError(TetherError):
    """The model provider failed (HTTP error, bad stream, stalled stream)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        self.status = status
        self.retryable = retryable
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One model call."""

    model: str
    messages: list[Message]
    tools: list[ToolInfo] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer as it streams."""

    text: str


@dataclass(frozen=True, slots=True)
class TurnDone:
    """The end of the stream: the whole turn, assembled."""

    turn: TurnResult


StreamEvent = TextDelta | TurnDone


@runtime_checkable
class Provider(Protocol):
    """What the agent loop needs from a model provider."""

    name: str

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream one turn: `TextDelta`s, then exactly one `TurnDone`."""
        ...

    async def models(self) -> list[str]:
        """The model names this provider offers."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
