"""A provider for any server speaking the OpenAI chat-completions wire format (OpenAI,
Ollama, vLLM, llama.cpp's server), over httpx with SSE streaming.

Tool-call deltas are assembled by their `index` (several calls per turn, arguments split
across chunks); usage and cached-token counts come from the final chunk. A stream that sends
nothing for `idle_timeout` seconds fails; 429 and 5xx answers are retried with backoff
before any token was streamed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tether.agent.providers import ChatRequest, ProviderError, StreamEvent, TextDelta, TurnDone
from tether.contract.types import Message, ToolCall, TurnResult

INVALID_ARGUMENTS = "__invalid_json__"
"""Key under which a tool call's unparseable argument text is kept, so the loop can tell
the model its arguments were not JSON instead of calling the tool."""

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def to_wire(message: Message) -> dict[str, Any]:
    """A `Message` as the chat-completions API wants it."""
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id or "",
            "content": message.content,
        }
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if message.name:
        out["name"] = message.name
    return out


class OpenAICompatibleProvider:
    """Chat completions over HTTP; `base_url` ends before `/chat/completions` (e.g. `.../v1`)."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        idle_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        sleep: Sleep = asyncio.sleep,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(connect_timeout, read=idle_timeout, write=connect_timeout)
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self.idle_timeout = idle_timeout
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep

    async def aclose(self) -> None:
        await self._client.aclose()

    async def models(self) -> list[str]:
        try:
            response = await self._client.get(f"{self.base_url}/models", headers=self._headers)
        except httpx.HTTPError as exc:
            raise ProviderError(f"listing models failed: {exc!r}", retryable=True) from None
        if response.status_code != 200:
            raise ProviderError(
                f"listing models failed: HTTP {response.status_code}", status=response.status_code
            )
        return [str(m.get("id")) for m in response.json().get("data", []) if isinstance(m, dict)]

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [to_wire(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.input_schema,
                    },
                }
                for t in request.tools
            ]
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        body.update(request.extra)
        return body

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        body = self._body(request)
        url = f"{self.base_url}/chat/completions"
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._client.stream(
                    "POST", url, json=body, headers=self._headers
                ) as resp:
                    if resp.status_code == 429 or resp.status_code >= 500:
                        await resp.aread()
                        if attempt <= self.retries:
                            await self._sleep(self._delay(attempt, resp))
                            continue
                        raise ProviderError(
                            f"the model server answered HTTP {resp.status_code} after "
                            f"{attempt} attempts",
                            status=resp.status_code,
                            retryable=True,
                        )
                    if resp.status_code != 200:
                        text = (await resp.aread()).decode(errors="replace")[:500]
                        raise ProviderError(
                            f"the model server answered HTTP {resp.status_code}: {text}",
                            status=resp.status_code,
                        )
                    async for event in self._parse(resp):
                        yield event
                    return
            except httpx.ReadTimeout:
                raise ProviderError(
                    f"the model stream stalled: nothing for {self.idle_timeout:g}s", retryable=True
                ) from None
            except httpx.TransportError as exc:
                if attempt <= self.retries:
                    await self._sleep(self._delay(attempt, None))
                    continue
                raise ProviderError(
                    f"cannot reach the model server: {exc!r}", retryable=True
                ) from None

    def _delay(self, attempt: int, resp: httpx.Response | None) -> float:
        """Exponential backoff; a numeric Retry-After (capped at 30 s) wins."""
        if resp is not None:
            retry_after = resp.headers.get("retry-after", "")
            try:
                return min(float(retry_after), 30.0)
            except ValueError:
                pass
        return float(self.backoff * (2 ** (attempt - 1)))

    async def _parse(self, resp: httpx.Response) -> AsyncIterator[StreamEvent]:
        text: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, _PartialCall] = {}
        usage: dict[str, Any] = {}
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments, `event:` lines
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError:
                raise ProviderError(
                    f"the model stream sent a line that is not JSON: {data[:200]!r}"
                ) from None
            if "error" in chunk:
                raise ProviderError(f"the model server reported an error: {chunk['error']}")
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                piece = delta.get("content")
                if piece:
                    text.append(piece)
                    yield TextDelta(piece)
                thought = delta.get("reasoning_content") or delta.get("reasoning")
                if thought:
                    reasoning.append(thought)
                for position, part in enumerate(delta.get("tool_calls") or ()):
                    index = part.get("index", position)
                    partial = calls.setdefault(index, _PartialCall())
                    partial.id = part.get("id") or partial.id
                    function = part.get("function") or {}
                    partial.name += function.get("name") or ""
                    if function.get("arguments"):
                        partial.arguments.append(function["arguments"])
        details = usage.get("prompt_tokens_details") or {}
        yield TurnDone(
            TurnResult(
                content="".join(text),
                tool_calls=[_finish(calls[i], i) for i in sorted(calls)],
                reasoning="".join(reasoning),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                cached_prompt_tokens=int(details.get("cached_tokens") or 0),
            )
        )


def _finish(partial: _PartialCall, index: int) -> ToolCall:
    raw = "".join(partial.arguments).strip()
    try:
        arguments = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        arguments = {INVALID_ARGUMENTS: raw}
    if not isinstance(arguments, dict):
        arguments = {INVALID_ARGUMENTS: raw}
    return ToolCall(partial.name, arguments, partial.id or f"call_{index}")
