"""Applying a plugin's declarations through its context, and running its lifecycle handlers.

A declaration that needs an ungranted capability is skipped (the membrane audits it) and
kept as a warning on the plugin, so an operator who withheld a capability still gets the
rest of the plugin. Anything else that fails makes the activation fail.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from tether.authoring import JobDecl, Plugin
from tether.contract.errors import CapabilityViolationError
from tether.runtime.context import Context
from tether.services.calls import call_bounded


def apply_declarations(plugin: Plugin, ctx: Context) -> list[str]:
    """Register everything `plugin` declared with decorators; returns the warnings."""
    d = plugin.declared
    steps: list[tuple[str, Callable[[], object]]] = []
    for t in d.tools:
        register = functools.partial(
            ctx.tools.register,
            t.fn,
            name=t.name,
            description=t.description,
            input_schema=t.input_schema,
            timeout_ms=t.timeout_ms,
        )
        steps.append((f"tool {t.name or getattr(t.fn, '__name__', '?')}", register))
    steps += [(f"hook {n}", functools.partial(ctx.register_hook, n, f)) for n, f in d.hooks]
    steps += [(f"event {e}", functools.partial(ctx.events.on, e, f)) for e, f in d.events]
    steps += [
        (f"command /{c.name}", functools.partial(ctx.register_command, c.name, c.fn, c.description))
        for c in d.commands
    ]
    steps += [("system prompt", functools.partial(ctx.add_system_prompt, p)) for p in d.prompts]
    steps += [
        (f"skill {s}", functools.partial(ctx.add_skill, s))
        for s in (*ctx.manifest.skills, *d.skills)
    ]
    steps += [(f"job {j.name}", functools.partial(_schedule, ctx, j)) for j in d.jobs]
    steps += [
        (f"channel {k}", functools.partial(ctx.notifications.register, k, f)) for k, f in d.channels
    ]
    steps += [
        (
            f"config key {k.key}",
            functools.partial(
                ctx.config_keys.register,
                k.key,
                description=k.description,
                default=k.default,
                validate=k.validate,
            ),
        )
        for k in d.config_keys
    ]
    warnings: list[str] = []
    for label, step in steps:
        try:
            step()
        except CapabilityViolationError as exc:
            warnings.append(f"{label} skipped: {exc.capability} is not granted")
    return warnings


def _schedule(ctx: Context, job: JobDecl) -> object:
    """One `@plugin.job` declaration, through ctx.scheduler so the grant is checked."""
    if job.cron is not None:
        return ctx.scheduler.cron(job.name, job.cron, job.fn)
    if job.interval is not None:
        return ctx.scheduler.interval(job.name, job.interval, job.fn)
    assert job.delay is not None
    return ctx.scheduler.delay(job.name, job.delay, job.fn)


async def run_lifecycle(
    plugin: Plugin, name: str, timeout: float, *args: object
) -> BaseException | None:
    """Run every handler declared for `name` ("load", "unload", ...); first failure wins."""
    for fn in plugin.declared.lifecycle.get(name, ()):
        failure = await call_bounded(fn, *args, timeout=timeout)
        if failure is not None:
            return failure
    return None
