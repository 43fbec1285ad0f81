"""Per-plugin rate limits: a token bucket (burst = rate, refilled per minute) with an
injectable clock, and its use by `ctx.storage` in a real host."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tether import CapabilityViolationError, Context, Host, Plugin, Policy, RateLimitedError
from tether.contract.policy import HostSettings, PluginPolicy, PolicyLimits
from tether.services.ratelimit import RateLimiter, rates_from_policy


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_equals_the_rate_then_refills_per_minute() -> None:
    clock = FakeClock()
    limiter = RateLimiter(lambda plugin: 60, clock)
    for _ in range(60):
        limiter.spend("alpha", "storage.get")
    with pytest.raises(RateLimitedError) as caught:
        limiter.spend("alpha", "storage.get")
    err = caught.value
    assert (err.plugin_id, err.limit, err.operation) == ("alpha", 60, "storage.get")
    assert err.retry_after == pytest.approx(1.0)  # 60 a minute: one token a second
    assert str(err) == (
        "plugin 'alpha' is over its rate limit of 60 service operations per minute "
        "(storage.get); retry in 1 s, or raise [plugins.alpha.limits] ops_per_minute in "
        "tether.toml"
    )
    clock.now += 0.5
    assert limiter.try_spend("alpha") == pytest.approx(0.5)  # refused: nothing taken
    clock.now += 0.5
    assert limiter.try_spend("alpha") == 0.0
    assert limiter.try_spend("alpha") == pytest.approx(1.0)
    clock.now += 3600  # an idle hour refills to the burst, not beyond
    assert limiter.available("alpha") == pytest.approx(60)
    for _ in range(60):
        limiter.spend("alpha")
    assert limiter.try_spend("alpha") > 0
    assert limiter.try_spend("alpha", cost=61) == float("inf")  # more than a burst: never


def test_each_plugin_has_its_own_bucket_and_rate_from_policy() -> None:
    policy = Policy(
        plugins={
            "slow": PluginPolicy(limits=PolicyLimits(ops_per_minute=2)),
            "plain": PluginPolicy(),
        }
    )
    clock = FakeClock()
    limiter = RateLimiter(rates_from_policy(policy), clock)
    limiter.spend("slow")
    limiter.spend("slow")
    with pytest.raises(RateLimitedError) as caught:
        limiter.spend("slow")
    assert caught.value.limit == 2 and caught.value.retry_after == pytest.approx(30.0)
    for _ in range(6000):  # the default rate, for an entry without limits and for no entry
        limiter.spend("plain")
        limiter.spend("unlisted")
    assert limiter.limit("plain") == limiter.limit("unlisted") == 6000
    with pytest.raises(RateLimitedError):
        limiter.spend("plain")
    clock.now -= 10  # a clock that steps back never adds tokens
    assert limiter.try_spend("slow") > 0


def test_concurrent_spenders_never_get_more_than_the_burst() -> None:
    limiter = RateLimiter(lambda plugin: 500, FakeClock())
    granted = [0] * 8
    go = threading.Barrier(8)

    def spender(t: int) -> None:
        go.wait()
        for _ in range(200):
            if limiter.try_spend("alpha") == 0.0:
                granted[t] += 1

    pool = [threading.Thread(target=spender, args=(t,)) for t in range(8)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert sum(granted) == 500


def _tools(n: int, plugin: Plugin) -> None:
    for i in range(n):

        def tool(x: int) -> int:
            return x

        plugin.tool(name=f"t{i}")(tool)


async def test_storage_operations_are_rate_limited_but_activation_is_not(tmp_path: Path) -> None:
    caps = ("storage.read", "storage.write", "tools.register", "events.subscribe")
    alpha = Plugin(id="alpha", name="Alpha", capabilities=list(caps))
    _tools(20, alpha)  # twenty registrations, none of them an operation
    for _ in range(5):
        alpha.on("plugin.loaded")(lambda event: None)

    @alpha.tool
    async def remember(ctx: Context, text: str) -> str:
        """Store text."""
        await ctx.storage.set("last", text)
        return "ok"

    beta = Plugin(id="beta", name="Beta", capabilities=["storage.read"])
    slow = PolicyLimits(ops_per_minute=3)
    policy = Policy(
        host=HostSettings(data_dir=str(tmp_path / "data"), entry_points=False),
        plugins={
            "alpha": PluginPolicy(grant=caps, limits=slow),
            "beta": PluginPolicy(grant=("storage.read",)),
        },
    )
    clock = FakeClock()
    async with Host(policy, plugins=[alpha, beta]) as host:
        limiter = host.services.ratelimit
        limiter.clock = clock
        assert limiter.available("alpha") == 3  # activation spent nothing
        ctx, other = alpha.context, beta.context
        assert ctx is not None and other is not None
        with pytest.raises(CapabilityViolationError):
            await other.storage.set("k", 1)  # refused before it is charged
        await ctx.storage.set("k", 1)
        assert await ctx.storage.get("k") == 1
        assert await ctx.storage.list() == ["k"]
        with pytest.raises(RateLimitedError) as caught:
            await ctx.storage.get("k")
        err = caught.value
        assert (err.plugin_id, err.limit, err.operation) == ("alpha", 3, "storage.get")
        assert err.retry_after == pytest.approx(20.0)
        # Through a tool call, the limit is an error result naming the plugin.
        result = await host.call_tool("plugin_alpha_remember", {"text": "hi"})
        assert result.is_error and "over its rate limit of 3" in str(result.content)
        assert await other.storage.get("k") is None  # beta's bucket is its own
        clock.now += 20
        assert await ctx.storage.get("k") == 1
        with pytest.raises(RateLimitedError):
            await ctx.storage.usage()
        clock.now += 40
        assert (await host.call_tool("plugin_alpha_remember", {"text": "hi"})).content == "ok"
        assert await ctx.storage.get("last") == "hi"
        # Disable and enable do not refill the bucket.
        await host.disable("alpha")
        assert await host.enable("alpha")
        assert limiter.available("alpha") == pytest.approx(0)
