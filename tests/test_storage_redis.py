"""The Redis storage backend: its key layout, host wiring, restart, connection errors, and
that a slow Redis does not stall the event loop. Isolation and quota tests for both backends
are in test_storage.py."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import redis

from conftest import write_plugin, write_policy
from tether import Host, Plugin, Policy, QuotaExceededError
from tether.contract.policy import HostSettings, PluginPolicy, PolicyLimits
from tether.services.redis_storage import RedisStorage, data_key, redact, usage_key
from tether.services.storage import StorageQuota

pytest_plugins = ["redis_server"]  # the redis_server and redis_url fixtures
STORAGE = ["storage.read", "storage.write"]
PART = re.compile(rb"(\d+):")


def _read_part(raw: bytes, at: int) -> tuple[bytes, int]:
    m = PART.match(raw, at)
    assert m is not None, (raw, at)
    end = m.end() + int(m.group(1))
    assert end <= len(raw)
    return raw[m.end() : end], end


def parse(raw: bytes) -> tuple[str, ...]:
    """Read an address back from a Redis key: the layout is a parseable encoding."""
    assert raw.startswith(b"tether:{")
    plugin, at = _read_part(raw, len(b"tether:{"))
    if raw[at:] == b"}:usage":
        return ("usage", plugin.decode())
    assert raw[at : at + 5] == b"}:kv:", raw
    parts, at = [plugin], at + 5
    for _ in range(3):
        part, at = _read_part(raw, at)
        parts.append(part)
    assert at == len(raw), "nothing may follow the namespace"
    return ("kv", *(p.decode() for p in parts))


def test_key_layout_is_injective() -> None:
    pieces = ["", "a", ":", "1:", "1:a", "}", "{", "}:kv:", "}:usage", "default", "ａ", "\x00", "é"]
    seen: dict[bytes, tuple[str, ...]] = {}
    for plugin, scope, user, ns in itertools.product(
        pieces, ["plugin", "user", ""], pieces, pieces
    ):
        raw = data_key(b"tether", plugin, scope, user, ns)
        assert parse(raw) == ("kv", plugin, scope, user, ns)
        assert seen.setdefault(raw, (plugin, scope, user, ns)) == (plugin, scope, user, ns)
    for plugin in pieces:
        raw = usage_key(b"tether", plugin)
        assert parse(raw) == ("usage", plugin)
        assert raw not in seen
    assert data_key(b"tether", "alpha", "user", "ann:x", "default") == (
        b"tether:{5:alpha}:kv:4:user5:ann:x7:default"
    )
    assert data_key(b"tether", "a", "user", "é", "d") == b"tether:{1:a}:kv:4:user2:\xc3\xa91:d"


async def test_host_uses_redis_when_configured(tmp_path: Path, redis_url: str) -> None:
    write_plugin(tmp_path / "plugins", "alpha", capabilities=STORAGE)
    write_policy(
        tmp_path,
        f"""
        [host]
        entry_points = false
        storage_backend = "redis"
        redis_url = "{redis_url}"

        [plugins.alpha]
        grant = ["storage.read", "storage.write"]
        """,
    )
    host = Host(tmp_path / "tether.toml")
    await host.start()
    try:
        ctx = host.records["alpha"].context
        assert ctx is not None
        assert isinstance(host.services.storage, RedisStorage)
        await ctx.storage.set("k", {"v": "é"}, scope="user", user="ann:x")
        assert await ctx.storage.get("k", scope="user", user="ann:x") == {"v": "é"}
    finally:
        await host.stop()
    raw = redis.Redis.from_url(redis_url)
    try:
        assert sorted(raw.keys("*")) == [
            b"tether:{5:alpha}:kv:4:user5:ann:x7:default",
            b"tether:{5:alpha}:usage",
        ]
        stored = raw.hget(b"tether:{5:alpha}:kv:4:user5:ann:x7:default", "k")
        assert stored == '{"v":"é"}'.encode()
        assert raw.hgetall(b"tether:{5:alpha}:usage") == {b"keys": b"1", b"bytes": b"11"}
    finally:
        raw.close()
    # Nothing went to the SQLite file: the kv table was never even created.
    conn = sqlite3.connect(tmp_path / ".tether" / "tether.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert "audit" in tables and "kv" not in tables


def _policy(tmp_path: Path, url: str, **limits: int) -> Policy:
    return Policy(
        host=HostSettings(data_dir=str(tmp_path / "data"), storage_backend="redis", redis_url=url),
        plugins={"alpha": PluginPolicy(grant=tuple(STORAGE), limits=PolicyLimits(**limits))},
    )


async def test_redis_data_survives_restart_and_quota_comes_from_policy(
    tmp_path: Path, redis_url: str
) -> None:
    for round_ in range(2):
        alpha = Plugin(id="alpha", name="Alpha", capabilities=STORAGE)
        async with Host(_policy(tmp_path, redis_url, storage_keys=2), plugins=[alpha]) as host:
            ctx = alpha.context
            assert ctx is not None
            if round_ == 0:
                await ctx.storage.set("a", 1)
                await ctx.storage.set("b", [2])
                await host.disable("alpha")
                assert await host.enable("alpha")
                ctx = alpha.context
                assert ctx is not None
            assert await ctx.storage.get("b") == [2]
            with pytest.raises(QuotaExceededError, match=r"\[plugins.alpha.limits\] storage_keys"):
                await ctx.storage.set("c", 3)
            usage = await ctx.storage.usage()
            assert (usage.keys, usage.bytes, usage.max_keys) == (2, 1 + 1 + 1 + 3, 2)


async def test_unreachable_redis_stops_the_host_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    host = Host(_policy(tmp_path, url), plugins=[])
    with pytest.raises(ConnectionError) as caught:
        await host.start()
    message = str(caught.value)
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in message
    assert "[host] redis_url" in message and "hunter2" not in message
    assert redact("redis://127.0.0.1:1/0") == "redis://127.0.0.1:1/0"


@pytest.mark.timeout(20)
async def test_a_slow_redis_does_not_block_the_event_loop(tmp_path: Path, redis_url: str) -> None:
    alpha = Plugin(id="alpha", name="Alpha", capabilities=STORAGE)
    async with Host(_policy(tmp_path, redis_url), plugins=[alpha]):
        ctx = alpha.context
        assert ctx is not None
        await ctx.storage.set("k", "v")
        admin = redis.Redis.from_url(redis_url)
        admin.execute_command("CLIENT", "PAUSE", 400, "ALL")  # every other client waits 0.4 s
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        value = await ctx.storage.get("k")
        waited = time.perf_counter() - started
        task.cancel()
        admin.close()
        assert value == "v"
        assert waited >= 0.3  # the call really waited on Redis...
        assert ticks >= 15  # ...while the loop kept running other tasks


@pytest.mark.timeout(20)
def test_two_hosts_sharing_redis_cannot_pass_the_quota_together(redis_url: str) -> None:
    """Two event loops in two threads, each with its own backend and connections (as two
    hosts would have), four writers each, racing for 30 keys while freeing some."""
    quota = StorageQuota(max_bytes=10**9, max_keys=30)
    held = [0] * 8
    go = threading.Barrier(2)

    async def writer(store: RedisStorage, t: int) -> None:
        mine: list[str] = []
        for i in range(60):
            try:
                await store.aset("alpha", "plugin", "", "default", f"{t}-{i}", i)
                mine.append(f"{t}-{i}")
            except QuotaExceededError:
                if mine and i % 3 == 0:  # free one of ours, so the writers race for it
                    assert await store.adelete("alpha", "plugin", "", "default", mine.pop())
        held[t] = len(mine)

    async def host(h: int) -> None:
        store = await RedisStorage.connect(redis_url, lambda p: quota)
        go.wait()
        await asyncio.gather(*(writer(store, t) for t in range(h, 8, 2)))
        await store.aclose()

    pool = [threading.Thread(target=asyncio.run, args=(host(h),)) for h in range(2)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    store = RedisStorage(redis_url, lambda p: quota)  # the synchronous face, from here
    try:
        stored, counted = store.list("alpha", "plugin", "", "default", ""), store.usage("alpha")
    finally:
        store.close()
    # What the writers believe they hold is exactly what is stored, never above 30.
    assert len(stored) == counted.keys == sum(held) == 30
