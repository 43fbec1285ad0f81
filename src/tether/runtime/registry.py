"""The registry: every tool, hook, command, prompt and skill, each tagged with its plugin.

Hook plans are rebuilt when the plugin set changes (in load order), never per call.
Removing a plugin removes everything it registered in one step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tether.contract.errors import NameClashError, RegistrationError
from tether.contract.names import COMMAND_NAME, HOOK_NAMES
from tether.contract.types import Caller, ToolInfo
from tether.runtime.dispatch import RegisteredTool
from tether.runtime.hooks import HookPlan, Hooks

TOOL_NAME_MAX = 64
_LOCAL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def full_tool_name(plugin_id: str, local: str) -> str:
    """The name the model sees: `plugin_{id}_{name}`."""
    if not _LOCAL_NAME.match(local):
        raise RegistrationError(
            f"plugin {plugin_id!r}: tool name {local!r} must start with a letter and use only "
            "letters, digits, _ and -"
        )
    name = f"plugin_{plugin_id}_{local}"
    if len(name) > TOOL_NAME_MAX:
        raise RegistrationError(
            f"plugin {plugin_id!r}: tool name {name!r} is {len(name)} characters; models accept "
            f"at most {TOOL_NAME_MAX}, so shorten the tool name"
        )
    return name


@dataclass(frozen=True, slots=True)
class Entry:
    plugin_id: str
    rank: int
    seq: int
    kind: str
    value: Any


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    plugin_id: str
    handler: Callable[..., Any]
    description: str


class Registry:
    """Holds what active plugins registered; `hooks` runs the current chains."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks
        self.tools: dict[str, RegisteredTool] = {}
        self.commands: dict[str, Command] = {}
        self._entries: list[Entry] = []  # hooks, prompts, skills
        self._rank: dict[str, int] = {}
        self._seq = 0
        self._batch = 0
        self._dirty = False

    def set_rank(self, plugin_id: str, rank: int) -> None:
        """Load-order position of a plugin; its hooks sort by it, however often it reloads."""
        self._rank[plugin_id] = rank

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Defer plan rebuilding until the block ends (one rebuild per activation)."""
        self._batch += 1
        try:
            yield
        finally:
            self._batch -= 1
            if self._batch == 0 and self._dirty:
                self.rebuild()

    def _changed(self) -> None:
        if self._batch:
            self._dirty = True
        else:
            self.rebuild()

    def rebuild(self) -> None:
        """Recompute every hook plan in load order and swap them in at once."""
        self._dirty = False
        ordered = sorted(
            (e for e in self._entries if e.kind in HOOK_NAMES), key=lambda e: (e.rank, e.seq)
        )
        plans: dict[str, HookPlan] = {}
        for name in HOOK_NAMES:
            chain = [(e.plugin_id, e.value) for e in ordered if e.kind == name]
            if chain:
                plans[name] = HookPlan.build(name, chain)
        self.hooks.plans = plans

    def _add(self, plugin_id: str, kind: str, value: Any) -> None:
        self._seq += 1
        self._entries = [
            *self._entries,
            Entry(plugin_id, self._rank.get(plugin_id, 1 << 30), self._seq, kind, value),
        ]

    # Registration --------------------------------------------------------------------

    def add_tool(self, tool: RegisteredTool) -> None:
        existing = self.tools.get(tool.name)
        if existing is not None:
            raise NameClashError(
                f"plugin {tool.plugin_id!r}: tool {tool.name!r} is already registered by plugin "
                f"{existing.plugin_id!r}; rename one of them"
            )
        # Copy-on-write: readers iterate a dict that no registration mutates under them.
        self.tools = {**self.tools, tool.name: tool}

    def remove_tool(self, name: str) -> bool:
        if name not in self.tools:
            return False
        self.tools = {n: t for n, t in self.tools.items() if n != name}
        return True

    def add_hook(self, plugin_id: str, name: str, fn: Callable[..., Any]) -> None:
        if name not in HOOK_NAMES:
            raise RegistrationError(
                f"plugin {plugin_id!r}: unknown hook {name!r}; use one of {', '.join(HOOK_NAMES)}"
            )
        if not callable(fn):
            raise RegistrationError(f"plugin {plugin_id!r}: hook {name!r} must be a function")
        self._add(plugin_id, name, fn)
        self._changed()

    def add_command(
        self, plugin_id: str, name: str, fn: Callable[..., Any], description: str
    ) -> None:
        if not COMMAND_NAME.match(name):
            raise RegistrationError(
                f"plugin {plugin_id!r}: command {name!r} must be lowercase letters, digits, _ "
                "or -, starting with a letter, at most 32 characters"
            )
        existing = self.commands.get(name)
        if existing is not None:
            raise NameClashError(
                f"plugin {plugin_id!r}: command /{name} is already registered by plugin "
                f"{existing.plugin_id!r}"
            )
        self.commands = {**self.commands, name: Command(name, plugin_id, fn, description.strip())}

    def add_prompt(self, plugin_id: str, text_or_fn: str | Callable[..., Any]) -> None:
        self._add(plugin_id, "prompt", text_or_fn)

    def add_skill(self, plugin_id: str, path: str) -> None:
        self._add(plugin_id, "skill", path)

    def remove_plugin(self, plugin_id: str) -> None:
        """Remove everything `plugin_id` registered; cannot fail."""
        self.tools = {n: t for n, t in self.tools.items() if t.plugin_id != plugin_id}
        self.commands = {n: c for n, c in self.commands.items() if c.plugin_id != plugin_id}
        kept = [e for e in self._entries if e.plugin_id != plugin_id]
        if len(kept) != len(self._entries):
            self._entries = kept
            self._changed()

    # Queries -------------------------------------------------------------------------

    def owned_by(self, plugin_id: str) -> dict[str, list[str]]:
        """What a plugin has registered, by kind (for listings)."""
        out: dict[str, list[str]] = {
            "tools": sorted(t.name for t in self.tools.values() if t.plugin_id == plugin_id),
            "commands": sorted(c.name for c in self.commands.values() if c.plugin_id == plugin_id),
            "hooks": [],
            "skills": [],
        }
        for e in self._entries:
            if e.plugin_id == plugin_id and e.kind in HOOK_NAMES:
                out["hooks"].append(e.kind)
            elif e.plugin_id == plugin_id and e.kind == "skill":
                out["skills"].append(str(e.value))
        return out

    def visible_tools(self, caller: Caller) -> list[ToolInfo]:
        return [t.info for t in self.tools.values() if t.visible_to(caller)]

    def prompt_sources(self) -> list[tuple[str, str | Callable[..., Any]]]:
        ordered = sorted(
            (e for e in self._entries if e.kind == "prompt"), key=lambda e: (e.rank, e.seq)
        )
        return [(e.plugin_id, e.value) for e in ordered]

    def skills(self) -> list[tuple[str, str]]:
        return [(e.plugin_id, str(e.value)) for e in self._entries if e.kind == "skill"]
