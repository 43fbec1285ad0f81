"""Ingress for WebAssembly plugins: the event envelope the host delivers, and the output
commands a component returns, which the host parses, bounds, checks and executes.

A command the host will not run is refused with an audit record (kind
`wasm_command_refused`) and listed in the delivery's `refused`; the others still run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether.runtime.context import Context

MAX_COMMANDS = 16
"""Output commands the host runs per event; the rest are refused."""
MAX_COMMAND_BYTES = 64 * 1024
"""The largest single command (as JSON)."""
MAX_OUTPUT_BYTES = 256 * 1024
"""The largest service output a component may return for one event."""

Reply = Callable[[str], Awaitable[None]]


def envelope(
    ingress_name: str,
    payload: dict[str, Any],
    *,
    kind: str,
    source: str,
    attempt: int = 1,
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """The event as the component sees it in `handle-ingress`."""
    return {
        "kind": kind,
        "source": source,
        "ingress_name": ingress_name,
        "payload": payload,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "attempt": attempt,
        "correlation_id": correlation_id or uuid.uuid4().hex,
    }


@dataclass
class Delivery:
    """What became of one delivered event."""

    accepted: bool
    executed: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    error: str | None = None


def parse_output(text: str) -> tuple[bool, list[Any]]:
    """(accepted, raw commands) from service output JSON; raises ValueError when malformed."""
    if len(text.encode()) > MAX_OUTPUT_BYTES:
        raise ValueError(f"service output is larger than {MAX_OUTPUT_BYTES} bytes")
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("service output must be a JSON object")
    commands = doc.get("output_commands", [])
    if not isinstance(commands, list):
        raise ValueError("output_commands must be a list")
    return bool(doc.get("accepted", True)), commands


async def execute_commands(
    ctx: Context,
    event: dict[str, Any],
    commands: list[Any],
    reply: Reply | None,
) -> Delivery:
    """Bound, check and run the commands; refusals are audited and listed."""
    out = Delivery(accepted=True)

    def refuse(cmd: Any, why: str) -> None:
        shown = cmd if isinstance(cmd, dict) else {"value": repr(cmd)[:200]}
        out.refused.append((shown, why))
        ctx._services.audit.record(
            ctx.plugin_id,
            "wasm_command_refused",
            why,
            ingress=event["ingress_name"],
            correlation_id=event["correlation_id"],
            command_type=shown.get("type") if isinstance(shown.get("type"), str) else None,
        )

    for i, cmd in enumerate(commands):
        if i >= MAX_COMMANDS:
            refuse(cmd, f"more than {MAX_COMMANDS} output commands for one event")
            continue
        if not isinstance(cmd, dict) or not isinstance(cmd.get("type"), str):
            refuse(cmd, 'an output command must be an object with a string "type"')
            continue
        if len(json.dumps(cmd)) > MAX_COMMAND_BYTES:
            refuse(cmd, f"the command is larger than {MAX_COMMAND_BYTES} bytes")
            continue
        why = await _run_one(ctx, cmd, reply)
        if why is None:
            out.executed.append(cmd)
        else:
            refuse(cmd, why)
    return out


async def _run_one(ctx: Context, cmd: dict[str, Any], reply: Reply | None) -> str | None:
    """Run one command; None when done, else why it was refused."""
    kind = cmd["type"]
    if kind == "websocket_send":
        text = cmd.get("text")
        if not isinstance(text, str):
            return 'websocket_send needs "text" (a string)'
        if reply is None:
            return "websocket_send: this event's source takes no replies"
        await reply(text)
        return None
    if kind == "emit":
        event, data = cmd.get("event"), cmd.get("data", {})
        if not isinstance(event, str) or not isinstance(data, dict):
            return 'emit needs "event" (a string) and "data" (an object)'
        try:
            ctx.events.emit(event, data)  # the grant and the plugin's namespace
        except Exception as exc:
            return f"emit: {exc}"
        return None
    return f"unknown output command type {kind!r}; use websocket_send or emit"
