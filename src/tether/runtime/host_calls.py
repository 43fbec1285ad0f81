"""The calling side of a `Host`: tools, notifications, prompts, commands and skills.

A mixin, so `host.py` keeps the lifecycle and this module what callers ask of active
plugins; it relies on the attributes `Host` sets up in `start()`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.contract.errors import UnknownToolError
from tether.contract.types import Caller, NotificationResult, ToolCall, ToolInfo, ToolResult
from tether.contract.validation import did_you_mean
from tether.runtime.dispatch import execute
from tether.services.calls import call_plugin

if TYPE_CHECKING:
    from tether.runtime.config import HostConfig
    from tether.runtime.hooks import Hooks
    from tether.runtime.lifecycle import PluginRecord
    from tether.runtime.registry import Registry
    from tether.services.events import EventBus
    from tether.services.notify import NotificationBus


class HostCalls:
    """Tools, notifications, prompts, commands and skills of the active plugins."""

    if TYPE_CHECKING:
        config: HostConfig
        registry: Registry
        hooks: Hooks
        events: EventBus
        notifications: NotificationBus
        records: dict[str, PluginRecord]

        def _note_error(
            self, plugin_id: str, message: str, kind: str = ..., **detail: Any
        ) -> None: ...

        def _tool_failed(self, plugin_id: str, tool: str, exc: BaseException) -> None: ...

        def _tool_stuck(self, plugin_id: str, tool: str, what: str) -> None: ...

    # Tools ---------------------------------------------------------------------------

    def tools(self, caller: Caller | None = None) -> list[ToolInfo]:
        """Tools visible to `caller` (default: the operator, who sees all)."""
        return self.registry.visible_tools(caller or Caller.operator())

    async def call_tool(
        self,
        name: str,
        arguments: Any,
        *,
        caller: Caller | None = None,
        call_id: str = "",
    ) -> ToolResult:
        """Call a tool through the before/after-tool-call hooks, with its timeout.

        Raises `UnknownToolError` when no such tool is visible to the caller; every other
        failure comes back as a `ToolResult` with `is_error` set.
        """
        who = caller or Caller.operator()
        if not self._visible(name, who):
            raise UnknownToolError(self._unknown_message(name, who))
        if not isinstance(arguments, dict):
            return ToolResult.error(f"{name}: arguments must be a JSON object")
        call = ToolCall(name, arguments, call_id)
        verdict = await self.hooks.before_tool_call(call)
        if not isinstance(verdict, ToolCall):
            result = ToolResult(verdict.content, is_error=verdict.is_error)
            return await self.hooks.after_tool_call(call, result)
        call = verdict
        tool = self.registry.tools.get(call.name)
        if tool is None or not tool.visible_to(who):
            raise UnknownToolError(self._unknown_message(call.name, who))
        self.events.emit("tool.before_execute", {"tool": call.name, "caller": who.id})
        result = await execute(
            tool,
            call.arguments,
            who,
            max_result_bytes=self.config.policy.host.max_result_bytes,
            on_error=self._tool_failed,
            on_stuck=self._tool_stuck,
        )
        result = await self.hooks.after_tool_call(call, result)
        self.events.emit(
            "tool.after_execute", {"tool": call.name, "caller": who.id, "is_error": result.is_error}
        )
        return result

    def _visible(self, name: str, caller: Caller) -> bool:
        tool = self.registry.tools.get(name)
        return tool is not None and tool.visible_to(caller)

    def _unknown_message(self, name: str, caller: Caller) -> str:
        # Suggest only names the caller may see: a hint must not reveal hidden tools.
        visible = [t.name for t in self.registry.tools.values() if t.visible_to(caller)]
        hint = did_you_mean(name, visible)
        return f"no tool named {name!r}{hint}; `tether tools` lists them"

    async def _execute_for_plugin(
        self, name: str, arguments: dict[str, Any], caller: Caller
    ) -> ToolResult:
        return await self.call_tool(name, arguments, caller=caller)

    async def notify(
        self, kind: str, recipient: str, text: str, metadata: dict[str, Any] | None = None
    ) -> NotificationResult:
        """Send through the notification channel of `kind` (retries, circuit breaker); a
        failure comes back as an error result, never raised."""
        return await self.notifications.send(kind, recipient, text, metadata, sender="host")

    # Prompts, commands, skills ----------------------------------------------------------

    async def system_prompt(self, base: str = "") -> str:
        """`base` plus every plugin's contribution (in load order), then the
        transform-system-prompt hooks. A contribution function that fails is skipped."""
        parts = [base] if base else []
        for plugin_id, source in self.registry.prompt_sources():
            if isinstance(source, str):
                parts.append(source)
                continue
            try:
                text = await call_plugin(source, in_thread=False)
            except Exception as exc:
                self._note_error(plugin_id, f"system prompt contribution failed: {exc!r}")
                continue
            if isinstance(text, str) and text:
                parts.append(text)
        return await self.hooks.transform_system_prompt("\n\n".join(parts))

    async def run_command(self, text: str) -> str | None:
        """Answer `/name args` with the plugin command of that name, without the model.

        Returns None when `text` is not a registered command; a failing command answers
        with its error.
        """
        if not text.startswith("/"):
            return None
        name, _, args = text[1:].partition(" ")
        command = self.registry.commands.get(name)
        if command is None:
            return None
        timeout = self.config.policy.host.teardown_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout):
                reply = await call_plugin(command.handler, args.strip())
        except TimeoutError:
            return f"/{name} timed out"
        except Exception as exc:
            self._note_error(command.plugin_id, f"command /{name} failed: {exc!r}")
            return f"/{name} failed: {type(exc).__name__}: {exc}"
        return "" if reply is None else str(reply)

    def skills(self) -> list[tuple[str, Path]]:
        """(plugin id, skill folder) for every published skill of an active plugin."""
        out = []
        for plugin_id, rel in self.registry.skills():
            folder = self.records[plugin_id].candidate.folder if plugin_id in self.records else None
            if folder is not None:
                out.append((plugin_id, folder / rel))
        return out
