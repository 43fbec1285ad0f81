"""The notification bus: plugins claim channel kinds ("webhook", "email"...) with one handler
each, and anyone with the capability sends through them by kind.

A send never raises. Retryable failures are retried with exponential back-off; a kind whose
sends keep failing gets its circuit opened, so a dead channel costs nothing for a while
instead of every caller waiting through every retry. The bus knows plugins only by id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from tether.contract.errors import NameClashError, RegistrationError
from tether.contract.names import CHANNEL_KIND
from tether.contract.types import NotificationRequest, NotificationResult
from tether.services.calls import call_plugin, wait_task
from tether.services.clock import Clock, SystemClock

__all__ = [
    "BreakerPolicy",
    "ChannelInfo",
    "NotificationBus",
    "NotificationRequest",
    "NotificationResult",
    "RetryPolicy",
]

log = logging.getLogger("tether.notify")

ChannelErrorSink = Callable[[str, str, str], None]
"""Called with (plugin id, channel kind, message) when a handler raises or times out."""

CircuitState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per send and the back-off between them: `base_delay * factor**(n-1)` after
    the n-th failed attempt, capped at `max_delay`; jitter scales each wait by 0.5-1.0."""

    attempts: int = 3
    base_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    jitter: bool = True

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after the `failed_attempt`-th failed attempt (1-based)."""
        wait = min(self.base_delay * self.factor ** (failed_attempt - 1), self.max_delay)
        return wait * (0.5 + random.random() / 2) if self.jitter else wait


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """After `threshold` consecutive failed sends the kind's circuit opens for `open_seconds`;
    then one trial send (one attempt) decides whether it closes or opens again."""

    threshold: int = 5
    open_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A claimed channel kind and its circuit, for listings and dashboards."""

    kind: str
    plugin_id: str
    state: CircuitState
    consecutive_failures: int
    sent: int
    failed: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(eq=False, slots=True)
class _Channel:
    kind: str
    plugin_id: str
    handler: Callable[..., Any]
    timeout: float
    failures: int = 0  # consecutive failed sends
    opened_at: float | None = None
    trial: bool = False  # a half-open trial send is in flight
    sent: int = 0
    failed: int = 0


class NotificationBus:
    """Channels by kind, with retries and a circuit breaker per kind.

    `clock` times back-offs and the breaker (a `ManualClock` in tests); `retry` and `breaker`
    may be replaced at any time and apply to the next send.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        on_error: ChannelErrorSink | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or BreakerPolicy()
        self._on_error = on_error or (lambda pid, kind, msg: None)
        self._channels: dict[str, _Channel] = {}

    # Channels --------------------------------------------------------------------------

    def register(
        self, plugin_id: str, kind: str, handler: Callable[..., Any], *, timeout: float = 30.0
    ) -> None:
        """Claim `kind` for `plugin_id`; a kind already claimed raises `NameClashError`."""
        if not isinstance(kind, str) or not CHANNEL_KIND.match(kind):
            raise RegistrationError(
                f"plugin {plugin_id!r}: channel kind {kind!r} must be 1-64 of a-z 0-9 _ . - "
                "starting with a letter"
            )
        if not callable(handler):
            raise RegistrationError(
                f"plugin {plugin_id!r}: handler for channel {kind!r} is not callable"
            )
        owner = self._channels.get(kind)
        if owner is not None:
            mine = "this plugin" if owner.plugin_id == plugin_id else f"plugin {owner.plugin_id!r}"
            raise NameClashError(
                f"plugin {plugin_id!r}: notification channel {kind!r} is already claimed by "
                f"{mine}; a kind has one handler, so pick another kind or disable that plugin"
            )
        self._channels[kind] = _Channel(kind, plugin_id, handler, timeout)

    def remove_plugin(self, plugin_id: str) -> int:
        """Drop every channel a plugin claimed; returns how many."""
        gone = [k for k, ch in self._channels.items() if ch.plugin_id == plugin_id]
        for kind in gone:
            del self._channels[kind]
        return len(gone)

    def kinds(self) -> list[str]:
        """The claimed kinds, sorted."""
        return sorted(self._channels)

    def channels(self) -> list[ChannelInfo]:
        """Every claimed kind with its owner and circuit state."""
        return [
            ChannelInfo(ch.kind, ch.plugin_id, self._state(ch), ch.failures, ch.sent, ch.failed)
            for ch in sorted(self._channels.values(), key=lambda c: c.kind)
        ]

    def _state(self, ch: _Channel) -> CircuitState:
        if ch.opened_at is None:
            return "closed"
        if self.clock.now() < ch.opened_at + self.breaker.open_seconds:
            return "open"
        return "half_open"

    # Sending ---------------------------------------------------------------------------

    async def send(
        self,
        kind: str,
        recipient: str,
        text: str,
        metadata: dict[str, Any] | None = None,
        *,
        sender: str = "host",
    ) -> NotificationResult:
        """Deliver through the channel claimed for `kind`; never raises."""
        ch = self._channels.get(kind)
        if ch is None:
            known = ", ".join(self.kinds()) or "none"
            return NotificationResult.error(
                f"no notification channel of kind {kind!r}; known kinds: {known}", retryable=False
            )
        problem = _check_request(recipient, text, metadata)
        if problem:
            return NotificationResult.error(f"channel {kind!r}: {problem}", retryable=False)
        request = NotificationRequest(kind, recipient, text, dict(metadata or {}), sender)
        state = self._state(ch)
        if state == "open" or (state == "half_open" and ch.trial):
            assert ch.opened_at is not None
            left = max(0.0, ch.opened_at + self.breaker.open_seconds - self.clock.now())
            return dataclasses.replace(
                NotificationResult.error(
                    f"circuit open: channel {kind!r} failed {ch.failures} sends in a row; "
                    f"next trial in {left:.1f}s",
                    retryable=True,
                ),
                attempts=0,
            )
        trial = state == "half_open"
        ch.trial = ch.trial or trial
        try:
            result = await self._deliver(ch, request, attempts=1 if trial else self.retry.attempts)
        finally:
            if trial:
                ch.trial = False
        self._settle_breaker(ch, result, trial)
        return result

    async def _deliver(
        self, ch: _Channel, request: NotificationRequest, *, attempts: int
    ) -> NotificationResult:
        attempt = 1
        while True:
            result = await self._attempt(ch, request)
            if result.ok or not result.retryable or attempt >= attempts:
                return dataclasses.replace(result, attempts=attempt)
            if self._channels.get(ch.kind) is not ch:  # the channel went away meanwhile
                return dataclasses.replace(result, attempts=attempt)
            await self.clock.sleep_until(self.clock.now() + self.retry.delay(attempt))
            attempt += 1

    def _settle_breaker(self, ch: _Channel, result: NotificationResult, trial: bool) -> None:
        # A non-retryable error means the channel answered (a bad recipient, say): healthy.
        if result.ok or not result.retryable:
            ch.sent += result.ok
            ch.failed += not result.ok
            ch.failures, ch.opened_at = 0, None
            return
        ch.failed += 1
        ch.failures += 1
        if trial or ch.failures >= self.breaker.threshold:
            ch.opened_at = self.clock.now()
            log.warning(
                "notification channel %s (plugin %s): circuit open for %gs after %d failures",
                ch.kind,
                ch.plugin_id,
                self.breaker.open_seconds,
                ch.failures,
            )

    async def _attempt(self, ch: _Channel, request: NotificationRequest) -> NotificationResult:
        """One call of the handler, bounded by its timeout; failures become results."""
        where = f"channel {ch.kind!r} (plugin {ch.plugin_id!r})"
        task = asyncio.get_running_loop().create_task(call_plugin(ch.handler, request))
        if not await wait_task(task, ch.timeout):
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            return self._failed(ch, f"{where} timed out after {ch.timeout:g}s")
        if task.cancelled():
            return self._failed(ch, f"{where} was cancelled")
        exc = task.exception()
        if exc is not None:
            return self._failed(ch, f"{where} failed: {type(exc).__name__}: {exc}")
        result = task.result()
        if not isinstance(result, NotificationResult):
            message = (
                f"{where} returned {type(result).__name__}, not a NotificationResult; return "
                "NotificationResult.success() or NotificationResult.error(...)"
            )
            self._on_error(ch.plugin_id, ch.kind, message)
            return NotificationResult.error(message, retryable=False)
        return result

    def _failed(self, ch: _Channel, message: str) -> NotificationResult:
        log.warning("%s", message)
        self._on_error(ch.plugin_id, ch.kind, message)
        return NotificationResult.error(message, retryable=True)


def _check_request(recipient: object, text: object, metadata: object) -> str | None:
    if not isinstance(recipient, str):
        return f"recipient must be text, not {type(recipient).__name__}"
    if not isinstance(text, str):
        return f"text must be text, not {type(text).__name__}"
    if metadata is not None and not isinstance(metadata, dict):
        return f"metadata must be a dict or None, not {type(metadata).__name__}"
    return None
