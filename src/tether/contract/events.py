"""The event names a plugin can subscribe to, and which of them are interceptors.

Notification events fan out concurrently and are not awaited by the emitter. Interceptor
events (`run.start`, `run.end`) run their handlers in order and may change the run.
Plugins emit their own events as `<plugin-id>.<name>`; they cannot forge host events.
"""

from __future__ import annotations

import re

NOTIFICATION_EVENTS: dict[str, str] = {
    "message.received": "a message arrived from an input channel",
    "message.sent": "a message was sent to a user",
    "tool.before_execute": "a tool is about to run",
    "tool.after_execute": "a tool finished",
    "memory.created": "a memory was created",
    "memory.updated": "a memory was updated",
    "conversation.started": "a conversation began",
    "conversation.ended": "a conversation ended",
    "user.active": "a user became active",
    "scheduler.task_executed": "a scheduled job ran",
    "plugin.loaded": "a plugin became active",
    "plugin.unloaded": "a plugin was unloaded or disabled",
    "system.startup": "the host finished starting",
    "system.shutdown": "the host is stopping",
    "workspace.init": "a workspace directory was created or ensured",
    "task.token": "a run streamed a token",
    "task.tool_use": "a run called a tool",
    "task.ask_user": "a run asked the user a question",
    "task.done": "a run finished",
    "task.failed": "a run failed",
}

INTERCEPTOR_EVENTS: dict[str, str] = {
    "run.start": "before a run: block it, add to the system prompt, add env",
    "run.end": "after a run: replace or suppress the reply",
}

HOST_NAMESPACES: frozenset[str] = frozenset(
    name.split(".", 1)[0] for name in (*NOTIFICATION_EVENTS, *INTERCEPTOR_EVENTS)
)
"""Namespaces of host events; a plugin event named in one of them would be a forgery."""

_PLUGIN_EVENT = re.compile(r"^[a-z][a-z0-9-]*\.[a-z][a-z0-9_.]*$")


def is_known_event(name: str) -> bool:
    """True for host events and well-formed plugin events (`<plugin-id>.<name>`)."""
    return (
        name in NOTIFICATION_EVENTS
        or name in INTERCEPTOR_EVENTS
        or bool(_PLUGIN_EVENT.fullmatch(name))
    )


def plugin_may_emit(plugin_id: str, name: str) -> bool:
    """A plugin emits only into its own namespace, so it cannot forge host events."""
    return (
        name.startswith(plugin_id + ".")
        and plugin_id not in HOST_NAMESPACES
        and bool(_PLUGIN_EVENT.fullmatch(name))
    )
