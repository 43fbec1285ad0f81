"""Plugin-facing facades for the scheduler and the notification bus: `ctx.scheduler` and
`ctx.notifications`. Each operation checks the plugin's grant first, then calls the host
service with the plugin's id and timeout."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether.contract.types import NotificationResult
from tether.services.scheduler import JobInfo

if TYPE_CHECKING:
    from tether.runtime.context import Context


class PluginScheduler:
    """Named jobs of this plugin. `fn` takes no arguments and may be sync (it runs in a
    worker thread) or async; each run is bounded by the plugin's timeout. Times are UTC."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    @property
    def _timeout(self) -> float:
        return self._ctx._timeout_ms / 1000

    def cron(self, name: str, expr: str, fn: Callable[..., Any]) -> JobInfo:
        """Run `fn` on a 5-field cron schedule in UTC, e.g. `"*/5 * * * *"`. A tick that comes
        while the previous run is still going is skipped (and counted)."""
        self._ctx.require("scheduler.write", f"cron job {name}")
        sched = self._ctx._services.scheduler
        return sched.add_cron(self._ctx.plugin_id, name, expr, fn, timeout=self._timeout)

    def interval(self, name: str, seconds: float, fn: Callable[..., Any]) -> JobInfo:
        """Run `fn` `seconds` from now, then `seconds` after each run ends (never overlapping)."""
        self._ctx.require("scheduler.write", f"interval job {name}")
        sched = self._ctx._services.scheduler
        return sched.add_interval(self._ctx.plugin_id, name, seconds, fn, timeout=self._timeout)

    def delay(self, name: str, seconds: float, fn: Callable[..., Any]) -> JobInfo:
        """Run `fn` once, `seconds` from now."""
        self._ctx.require("scheduler.write", f"delay job {name}")
        sched = self._ctx._services.scheduler
        return sched.add_delay(self._ctx.plugin_id, name, seconds, fn, timeout=self._timeout)

    def cancel(self, name: str) -> bool:
        """Stop a job's future runs; True when the plugin had a job of that name."""
        self._ctx.require("scheduler.write", f"cancel job {name}")
        return self._ctx._services.scheduler.cancel(self._ctx.plugin_id, name)

    def list(self) -> list[JobInfo]:
        """This plugin's jobs: kind, spec, last and next run, run/failure/skip counts."""
        self._ctx.require("scheduler.read", "list jobs")
        return self._ctx._services.scheduler.jobs(self._ctx.plugin_id)


class PluginNotifications:
    """Claim a notification channel kind, and send through any claimed kind."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def register(self, kind: str, handler: Callable[..., Any]) -> None:
        """Claim `kind` with `async def handler(req: NotificationRequest) ->
        NotificationResult`. A kind has one handler: a second claim raises `NameClashError`."""
        self._ctx.require("notifications.register", f"channel {kind}")
        bus = self._ctx._services.notifications
        bus.register(self._ctx.plugin_id, kind, handler, timeout=self._ctx._timeout_ms / 1000)

    async def send(
        self, kind: str, recipient: str, text: str, metadata: dict[str, Any] | None = None
    ) -> NotificationResult:
        """Send through the channel of `kind`, with retries; failures come back as an error
        result (never raised)."""
        self._ctx.require("notifications.send", f"send {kind}")
        bus = self._ctx._services.notifications
        return await bus.send(kind, recipient, text, metadata, sender=self._ctx.plugin_id)

    def kinds(self) -> list[str]:
        """The channel kinds claimed right now."""
        self._ctx.require("notifications.send", "list channel kinds")
        return self._ctx._services.notifications.kinds()
