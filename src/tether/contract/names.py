"""Names the contract shares between manifests, decorators and the runtime: hook kinds,
slash command names and notification channel kinds. One definition each, so a name a
manifest accepts is one the runtime accepts too."""

from __future__ import annotations

import re
from typing import Literal, get_args

HookName = Literal[
    "before_model_call",
    "after_model_call",
    "before_tool_call",
    "after_tool_call",
    "filter_tools",
    "transform_system_prompt",
    "transform_user_input",
    "after_run",
]
HOOK_NAMES: tuple[str, ...] = get_args(HookName)

COMMAND_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
"""A slash command: lowercase letters, digits, _ or -, starting with a letter, at most 32."""

CHANNEL_KIND = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
"""A notification channel kind: 1-64 of a-z 0-9 _ . -, starting with a letter."""
