"""Per-plugin rate limits on host-service operations: one token bucket per plugin.

A bucket holds up to `ops_per_minute` tokens (the burst) and refills continuously at
`ops_per_minute / 60` tokens a second. Each service operation (a storage get, an HTTP
request, ...) spends one token; with none left the operation is refused with
`RateLimitedError`, which says when a token will be there. Registrations at activation are
not operations and spend nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tether.contract.errors import RateLimitedError

if TYPE_CHECKING:
    from tether.contract.policy import Policy

DEFAULT_OPS_PER_MINUTE = 6000
RateLookup = Callable[[str], int]


def rates_from_policy(policy: Policy) -> RateLookup:
    """Per-plugin rates from `[plugins.<id>.limits] ops_per_minute` (default 6000)."""

    def lookup(plugin: str) -> int:
        entry = policy.plugins.get(plugin)
        return entry.limits.ops_per_minute if entry is not None else DEFAULT_OPS_PER_MINUTE

    return lookup


class _Bucket:
    __slots__ = ("capacity", "per_second", "stamp", "tokens")

    def __init__(self, rate_per_minute: int, now: float) -> None:
        self.capacity = float(rate_per_minute)
        self.per_second = rate_per_minute / 60.0
        self.tokens = self.capacity  # a fresh plugin may burst straight away
        self.stamp = now


class RateLimiter:
    """Token buckets by plugin id; thread-safe (facades may run in worker threads).

    `rates` gives a plugin's ops per minute (read once, at its first operation); `clock`
    is a monotonic clock in seconds, injectable for tests.
    """

    def __init__(
        self,
        rates: RateLookup = lambda plugin: DEFAULT_OPS_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rates = rates
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def spend(self, plugin: str, operation: str = "", cost: float = 1.0) -> None:
        """Take `cost` tokens from `plugin`'s bucket, or raise RateLimitedError."""
        wait = self.try_spend(plugin, cost)
        if wait > 0.0:
            raise RateLimitedError(plugin, self.limit(plugin), wait, operation)

    def try_spend(self, plugin: str, cost: float = 1.0) -> float:
        """Take `cost` tokens and return 0.0, or take nothing and return the seconds until
        `cost` tokens will be available (a caller may sleep that long and retry)."""
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(plugin)
            if bucket is None:
                bucket = self._buckets[plugin] = _Bucket(self._rates(plugin), now)
            elif now > bucket.stamp:
                bucket.tokens = min(
                    bucket.capacity, bucket.tokens + (now - bucket.stamp) * bucket.per_second
                )
                bucket.stamp = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return 0.0
            if cost > bucket.capacity:
                return float("inf")  # can never be paid; say so instead of a false promise
            return (cost - bucket.tokens) / bucket.per_second

    def limit(self, plugin: str) -> int:
        """The plugin's rate in operations per minute."""
        with self._lock:
            bucket = self._buckets.get(plugin)
        return int(bucket.capacity) if bucket is not None else self._rates(plugin)

    def available(self, plugin: str) -> float:
        """Tokens the plugin could spend right now (refilled to the current time)."""
        with self._lock:
            bucket = self._buckets.get(plugin)
            if bucket is None:
                return float(self._rates(plugin))
            elapsed = max(0.0, self.clock() - bucket.stamp)
            return min(bucket.capacity, bucket.tokens + elapsed * bucket.per_second)
