"""The conformance plugin: one source for the in-process and subprocess tiers (only the
manifest's `tier` differs). tests/wasm_guests/conformance.py implements the same behaviours
as a component; tests/test_conformance.py runs them against every tier.

Everything observable goes through host services (storage, events) or return values, so
the suite can compare the tiers without looking inside a plugin.
"""

from __future__ import annotations

from typing import Any

from tether import Plugin
from tether.contract.types import (
    Block,
    Event,
    Intercept,
    Message,
    RunEnd,
    RunEndReason,
    RunEndResult,
    RunStart,
    RunStartResult,
    ToolCall,
    ToolInfo,
    ToolResult,
    TurnResult,
)

plugin = Plugin()


# Tools ---------------------------------------------------------------------------------


@plugin.tool
async def echo(text: str, times: int = 1) -> str:
    """Repeat the text."""
    return " ".join([text] * times)


@plugin.tool
async def put(key: str, value: str, user: str = "") -> str:
    """Store a value (per user when `user` is given)."""
    if user:
        await plugin.context.storage.set(key, value, scope="user", user=user)
    else:
        await plugin.context.storage.set(key, value)
    return "stored"


@plugin.tool
async def get(key: str, user: str = "") -> dict[str, Any]:
    """Read a value stored by put."""
    if user:
        value = await plugin.context.storage.get(key, scope="user", user=user)
    else:
        value = await plugin.context.storage.get(key)
    return {"value": value}


@plugin.tool
async def fetch(url: str) -> dict[str, Any]:
    """GET a URL through the host's egress checks."""
    response = await plugin.context.http.get(url)
    return {"status": response.status, "body": response.text}


@plugin.tool
async def settings() -> dict[str, Any]:
    """The plugin's config."""
    return dict(plugin.context.config)


# Hooks: each kind changes its value in a way the suite can see ---------------------------


@plugin.before_tool_call
async def guard(call: ToolCall) -> ToolCall | Block | None:
    if call.arguments.get("text") == "forbidden":
        return Block("blocked by conformance")
    if call.arguments.get("text") == "rewrite":
        return ToolCall(call.name, {**call.arguments, "text": "rewritten"}, call.id)
    return None


@plugin.after_tool_call
async def decorate(call: ToolCall, result: ToolResult) -> ToolResult | None:
    if call.arguments.get("text") == "decorate":
        return ToolResult(result.content + " (after)", result.is_error, result.data)
    return None


@plugin.transform_user_input
async def intake(text: str) -> str | Intercept:
    if text == "intercept me":
        return Intercept("intercepted by conformance")
    return text.replace("colour", "color")


@plugin.before_model_call
async def before_model(messages: list[Message], config: Any) -> list[Message]:
    return [*messages, Message("system", f"conformance saw {len(messages)}")]


@plugin.after_model_call
async def after_model(turn: TurnResult) -> TurnResult:
    return TurnResult(turn.content.upper(), turn.tool_calls, turn.reasoning)


@plugin.transform_system_prompt
async def system_prompt(prompt: str) -> str:
    return prompt + " | conformance"


@plugin.filter_tools
async def narrow(tools: list[ToolInfo]) -> list[ToolInfo]:
    return [t for t in tools if not t.name.endswith("_hidden")]


@plugin.after_run
async def finished(reason: RunEndReason) -> None:
    # an enum at every Python tier (the worker hands the wire value back as RunEndReason)
    await plugin.context.storage.set("after_run", reason.value)


# Events ----------------------------------------------------------------------------------


@plugin.on("message.received")
async def received(event: Event) -> None:
    seen = {"name": event.name, "data": event.data, "source": event.source}
    await plugin.context.storage.set("last_event", seen)
    plugin.context.events.emit(f"{plugin.context.plugin_id}.noticed", {"text": event.data["text"]})


@plugin.on("run.start")
async def run_start(event: RunStart) -> RunStartResult:
    if "forbidden" in event.prompt:
        return RunStartResult(block="conformance blocks this run")
    return RunStartResult(system_prompt=f"conformance rules for {event.caller.id}")


@plugin.on("run.end")
async def run_end(event: RunEnd) -> RunEndResult:
    if event.reply == "secret":
        return RunEndResult(suppress=True)
    return RunEndResult(reply=event.reply + " -- conformance")


# Commands and prompt contributions ------------------------------------------------------


@plugin.command("confping", description="Answer without the model.")
async def confping(args: str) -> str:
    return f"pong {args}"


plugin.system_prompt("The conformance plugin is loaded.")


# Jobs ------------------------------------------------------------------------------------


@plugin.job("tick", interval=60)
async def tick() -> None:
    count = await plugin.context.storage.get("ticks") or 0
    await plugin.context.storage.set("ticks", count + 1)
