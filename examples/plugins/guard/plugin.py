"""A guard plugin: a before-tool-call hook that blocks calls by the operator's rules
(set in tether.toml under [plugins.guard.config])."""

from __future__ import annotations

import json

from tether import Block, Plugin, ToolCall

plugin = Plugin()


@plugin.before_tool_call
def guard(call: ToolCall) -> Block | None:
    config = plugin.context.config
    if call.name in config.get("blocked_tools", []):
        return Block(f"{call.name} is blocked by the operator's policy")
    text = json.dumps(call.arguments).lower()
    for word in config.get("blocked_words", []):
        if word.lower() in text:
            return Block(f"the arguments mention {word!r}, which the operator's policy blocks")
    return None
