"""Applying a plugin's declarations through its context, and running its lifecycle handlers.

A declaration that needs an ungranted capability is skipped (the membrane audits it) and
kept as a warning on the plugin, so an operator who withheld a capability still gets the
rest of the plugin. Anything else that fails makes the activation fail.
"""

from __future__ import annotations

from tether.authoring import Plugin
from tether.contract.errors import CapabilityViolationError
from tether.runtime.context import Context
from tether.services.calls import call_bounded


def apply_declarations(plugin: Plugin, ctx: Context) -> list[str]:
    """Register everything `plugin` declared with decorators; returns the warnings."""
    warnings: list[str] = []
    d = plugin.declared

    def attempt(what: str, action: object) -> None:
        try:
            action() if callable(action) else None
        except CapabilityViolationError as exc:
            warnings.append(f"{what} skipped: {exc.capability} is not granted")

    for tool in d.tools:
        attempt(
            f"tool {tool.name or tool.fn.__name__}",
            lambda t=tool: ctx.tools.register(
                t.fn,
                name=t.name,
                description=t.description,
                input_schema=t.input_schema,
                timeout_ms=t.timeout_ms,
            ),
        )
    for name, fn in d.hooks:
        attempt(f"hook {name}", lambda n=name, f=fn: ctx.register_hook(n, f))
    for event, fn in d.events:
        attempt(f"event {event}", lambda e=event, f=fn: ctx.events.on(e, f))
    for cmd in d.commands:
        attempt(
            f"command /{cmd.name}",
            lambda c=cmd: ctx.register_command(c.name, c.fn, c.description),
        )
    for prompt in d.prompts:
        attempt("system prompt", lambda p=prompt: ctx.add_system_prompt(p))
    for skill in (*ctx.manifest.skills, *d.skills):
        attempt(f"skill {skill}", lambda s=skill: ctx.add_skill(s))
    return warnings


async def run_lifecycle(
    plugin: Plugin, name: str, timeout: float, *args: object
) -> BaseException | None:
    """Run every handler declared for `name` ("load", "unload", ...); first failure wins."""
    for fn in plugin.declared.lifecycle.get(name, ()):
        failure = await call_bounded(fn, *args, timeout=timeout)
        if failure is not None:
            return failure
    return None
