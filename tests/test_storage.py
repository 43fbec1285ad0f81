"""Plugin storage: isolation against key tricks and quotas (both backends, through
`ctx.storage` in a real host), atomic quotas under concurrent writers (threads and two
processes on one SQLite file), durability across disable, reload, restart and kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import write_plugin
from tether import Context, Host, Plugin, Policy, QuotaExceededError, State
from tether.contract.policy import HostSettings, PluginPolicy, PolicyLimits
from tether.services.database import Database
from tether.services.redis_storage import RedisStorage
from tether.services.storage import SqliteStorage, StorageBackend, StorageQuota, StorageUsage

pytest_plugins = ["redis_server"]  # the redis_server and redis_url fixtures
STORAGE = ["storage.read", "storage.write"]
BIG = StorageQuota(max_bytes=10**9, max_keys=10**6)


def make_policy(
    data: Path,
    backend: str = "sqlite",
    url: str = "",
    limits: dict[str, dict[str, int]] | None = None,
) -> Policy:
    """A policy storing in `data`, on `backend`, with per-plugin limits."""
    settings = HostSettings(
        data_dir=str(data),
        entry_points=False,
        storage_backend=backend,  # type: ignore[arg-type]
        **({"redis_url": url} if url else {}),
    )
    plugins = {
        pid: PluginPolicy(grant=tuple(STORAGE), limits=PolicyLimits(**lim))
        for pid, lim in (limits or {}).items()
    }
    return Policy(host=settings, plugins=plugins)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """("sqlite", "") or ("redis", url of a fresh redis-server)."""
    if request.param == "redis":
        return "redis", str(request.getfixturevalue("redis_url"))
    return "sqlite", ""


@pytest.fixture
def start(tmp_path: Path, backend: tuple[str, str]) -> Iterator[Callable[..., Any]]:
    """`await start(limits={...})` -> (host, alpha ctx, beta ctx) on the chosen backend."""
    hosts: list[Host] = []

    async def run(limits: dict[str, dict[str, int]] | None = None) -> tuple[Host, Context, Context]:
        a = Plugin(id="alpha", name="Alpha", capabilities=STORAGE)
        b = Plugin(id="beta", name="Beta", capabilities=STORAGE)
        limits = {"alpha": {}, "beta": {}, **(limits or {})}
        host = Host(
            make_policy(tmp_path / "data", *backend, limits), plugins=[a, b], discover=False
        )
        await host.start()
        hosts.append(host)
        assert a.context is not None and b.context is not None
        return host, a.context, b.context

    yield run
    # Hosts are stopped by each test (they need the running loop); this is a backstop.
    assert all(not h._started for h in hosts), "a test left its host running"


@pytest.fixture
async def pair(start: Callable[..., Any]) -> AsyncIterator[tuple[Context, Context]]:
    host, alpha, beta = await start()
    try:
        yield alpha, beta
    finally:
        await host.stop()


# --- isolation -------------------------------------------------------------------------------

TRICKY_KEYS = [
    "a/b", "../beta/secret", "..", ".", "/", "secret/..", "a:b", "::",
    "beta:plugin::default:secret", "6:plugin0:7:default", "5:alpha}", "{beta}", "x" * 512,
    "ｓecret", "sеcret", "secret\u200b", "SECRET", "secret ", "\\", "%", "_", "*", "?", "[s]",
    "\t\n", "\x1f", "\x7f", "🔑", "á", "a\u0301", "%s%", "a_c", "a%c",
]  # fmt: skip
TRICKY_USERS = [
    "ann", "Ann", "ａnn", "аnn", "ann\u200b", "ann ", "ann:default", "ann/../bob", "../bob",
    "bob", ":", "0:", "3:ann", "ann\x1f", "u" * 256, "%", "_", "plugin", "default", "*",
]  # fmt: skip
TRICKY_NAMESPACES = ["default", "Default", "default.", ".default", "..", ".", "-", "_", "a.b",
                     "a..b", "n" * 64]  # fmt: skip


async def test_tricky_keys_stay_in_their_plugin(pair: tuple[Context, Context]) -> None:
    alpha, beta = pair
    await beta.storage.set("secret", "beta's")
    for key in TRICKY_KEYS:
        await alpha.storage.set(key, key)
    for key in TRICKY_KEYS:  # every look-alike is its own key
        assert await alpha.storage.get(key) == key
    assert len(set(TRICKY_KEYS)) == len(TRICKY_KEYS)
    assert await alpha.storage.get("secret") is None
    assert await beta.storage.get("secret") == "beta's"
    assert await beta.storage.list() == ["secret"]
    assert await alpha.storage.list() == sorted(TRICKY_KEYS)
    # Prefixes are literal: no wildcard, no case folding, no normalisation.
    for prefix in ("%", "_", "a%", "a_", "*", "?", "[", "\\", "s", "..", "a", "x" * 512):
        expected = sorted(k for k in TRICKY_KEYS if k.startswith(prefix))
        assert await alpha.storage.list(prefix) == expected, prefix
    assert await beta.storage.list("s") == ["secret"]
    assert (await beta.storage.usage()).keys == 1


async def test_tricky_user_ids_and_namespaces_are_separate(pair: tuple[Context, Context]) -> None:
    alpha, beta = pair
    for user in TRICKY_USERS:
        await alpha.storage.set("pref", user, scope="user", user=user)
    for ns in TRICKY_NAMESPACES:
        await alpha.storage.set("pref", f"ns {ns}", namespace=ns)
        await alpha.storage.set("pref", f"ann in {ns}", scope="user", user="ann", namespace=ns)
    for user in TRICKY_USERS:
        assert await alpha.storage.get("pref", scope="user", user=user) == (
            "ann in default" if user == "ann" else user
        )
        assert await alpha.storage.list(scope="user", user=user) == ["pref"]
        assert await beta.storage.get("pref", scope="user", user=user) is None
    for ns in TRICKY_NAMESPACES:
        assert await alpha.storage.get("pref", namespace=ns) == f"ns {ns}"
        assert await alpha.storage.get("pref", scope="user", user="ann", namespace=ns) == (
            f"ann in {ns}"
        )
        assert await beta.storage.list(namespace=ns) == []
    # Clearing one user, or one namespace, clears exactly that.
    assert await alpha.storage.clear(scope="user", user="ann:default") == 1
    assert await alpha.storage.get("pref", scope="user", user="ann") == "ann in default"
    assert await alpha.storage.clear(namespace="..") == 1
    assert await alpha.storage.get("pref", namespace=".") == "ns ."
    assert await alpha.storage.get("pref", scope="user", user="ann", namespace="..") == "ann in .."
    usage = await alpha.storage.usage()
    assert usage.keys == len(TRICKY_USERS) - 1 + 2 * len(TRICKY_NAMESPACES) - 1 - 1
    assert (await beta.storage.usage()).keys == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"key": ""}, "storage keys are 1-512"),
        ({"key": "nul\x00"}, "storage keys are 1-512"),
        ({"key": "x" * 513}, "storage keys are 1-512"),
        ({"key": "\ud800"}, "not valid Unicode"),
        ({"user": ""}, "user="),
        ({"user": "a\x00b"}, "user="),
        ({"user": "u" * 257}, "user="),
        ({"user": "\udfff"}, "not valid Unicode"),
        ({"namespace": "a:b"}, "namespace"),
        ({"namespace": "a/b"}, "namespace"),
        ({"namespace": "../default"}, "namespace"),
        ({"namespace": "ｄefault"}, "namespace"),
        ({"namespace": "n\x00"}, "namespace"),
        ({"namespace": "n" * 65}, "namespace"),
    ],
)
async def test_bad_addresses_are_refused(
    pair: tuple[Context, Context], kwargs: dict[str, str], match: str
) -> None:
    alpha, _ = pair
    key = kwargs.get("key", "k")
    where: dict[str, Any] = {"namespace": kwargs.get("namespace", "default")}
    if "user" in kwargs:
        where.update(scope="user", user=kwargs["user"])
    with pytest.raises(ValueError, match=match):
        await alpha.storage.set(key, 1, **where)
    with pytest.raises(ValueError, match=match):
        await alpha.storage.get(key, **where)
    assert (await alpha.storage.usage()).keys == 0


async def test_values_are_json_and_round_trip(pair: tuple[Context, Context]) -> None:
    alpha, _ = pair
    values: list[Any] = [None, True, 0, -1.5, "", "lone \ud800 surrogate", "€ and 🔑", [1, [2]],
                         {"nested": {"a": None}}, "x" * 100_000]  # fmt: skip
    for i, value in enumerate(values):
        await alpha.storage.set(f"v{i}", value)
    for i, value in enumerate(values):
        assert await alpha.storage.get(f"v{i}") == value
    for bad, error in ((float("nan"), ValueError), ({1, 2}, TypeError), (object(), TypeError)):
        with pytest.raises(error, match="storage values must be JSON"):
            await alpha.storage.set("bad", bad)
    assert await alpha.storage.get("bad") is None
    assert (await alpha.storage.usage()).keys == len(values)


async def _open(
    kind: str, url: str, db: Database, quota: Callable[[str], StorageQuota]
) -> StorageBackend:
    if kind == "redis":
        return await RedisStorage.connect(url, quota)
    return SqliteStorage(db, quota)


async def test_direct_backend_addresses_never_collide(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    """Below the facade (no validation at all), every component is still kept apart."""
    db = Database(tmp_path / "kv.db")
    store = await _open(*backend, db, lambda p: BIG)
    addresses: list[Any] = [
        ("a", "plugin", "", "default"), ("a", "user", "", "default"), ("a", "user", "default", ""),
        ("a:plugin", "", "", "default"), ("a", "plugin:", "", "default"), ("a}", "plugin", "", "x"),
        ("a", "plugin", "", "x}"), ("1:a", "plugin", "", "default"), ("a", "user", "1:x", "1:y"),
        ("a", "user", "1:x1:y", ""), ("a", "user", "", "1:x1:y"), ("a", "user", "x:default", "d"),
        ("a", "user", "x", "default:d"), ("a", "user", "x\x00", "d"), ("a", "user", "x", "\x00d"),
        ("a\x00user", "", "", ""), ("", "a", "user", ""), ("", "", "", ""),
        ("b", "plugin", "", "default"),
    ]  # fmt: skip
    try:  # both faces of the backend: synchronous and coroutine
        for addr in addresses:
            store.set(*addr, "k", list(addr))
            await store.aset(*addr, "k:1", "extra")
        for addr in addresses:
            assert await store.aget(*addr, "k") == list(addr)
            assert store.get(*addr, "k:1") == "extra"
            assert store.list(*addr, "") == await store.alist(*addr, "") == ["k", "k:1"]
        assert store.clear(*addresses[0]) == 2
        assert await store.aclear(*addresses[1]) == 2
        for addr in addresses[2:]:
            assert store.get(*addr, "k") == list(addr)
        per_a = 2 * sum(1 for a in addresses[2:] if a[0] == "a")
        assert store.usage("a").keys == (await store.ausage("a")).keys == per_a
        assert store.usage("a:plugin").keys == 2
    finally:
        await store.aclose()
        db.close()


# --- quotas ------------------------------------------------------------------------------------


async def test_key_quota(start: Callable[..., Any]) -> None:
    host, alpha, beta = await start({"alpha": {"storage_keys": 3}})
    try:
        for key in ("a", "b"):
            await alpha.storage.set(key, 1)
        await alpha.storage.set("c", 1, scope="user", user="ann")  # every scope counts
        with pytest.raises(QuotaExceededError) as caught:
            await alpha.storage.set("d", 1, namespace="other")
        err = caught.value
        assert (err.plugin_id, err.quota, err.limit, err.usage, err.needed) == (
            "alpha",
            "storage_keys",
            3,
            3,
            4,
        )
        assert str(err) == (
            "plugin 'alpha' is over its storage quota storage_keys: the limit is 3 keys, 3 are "
            "in use and this write would make 4; delete data or raise "
            "[plugins.alpha.limits] storage_keys in tether.toml"
        )
        assert await alpha.storage.get("d", namespace="other") is None
        await alpha.storage.set("a", {"overwrite": "is not a new key"})
        await beta.storage.set("d", 1)  # beta's quota is its own
        assert await alpha.storage.delete("a") is True
        await alpha.storage.set("d", 1)  # a delete frees a key
        assert await alpha.storage.clear() == 2  # b, d
        usage = await alpha.storage.usage()
        assert (usage.keys, usage.max_keys, usage.max_bytes) == (1, 3, 10 * 1024 * 1024)
    finally:
        await host.stop()


async def test_byte_quota_counts_utf8_key_and_compact_json(start: Callable[..., Any]) -> None:
    host, alpha, _ = await start({"alpha": {"storage_bytes": 40}})
    try:
        await alpha.storage.set("k", "abc")  # 1 + len('"abc"') = 6
        assert (await alpha.storage.usage()).bytes == 6
        await alpha.storage.set("é", {"a": [1, 2]})  # 2 + len('{"a":[1,2]}') = 13
        assert (await alpha.storage.usage()).bytes == 19
        await alpha.storage.set("€", "€")  # 3 + 5 (quotes and 3 UTF-8 bytes) = 8
        assert (await alpha.storage.usage()).bytes == 27
        await alpha.storage.set("k", "a" * 16)  # overwrite: +13 -> exactly 40, allowed
        assert (await alpha.storage.usage()).bytes == 40
        with pytest.raises(QuotaExceededError) as caught:
            await alpha.storage.set("k", "a" * 17)
        assert (
            caught.value.quota,
            caught.value.limit,
            caught.value.usage,
            caught.value.needed,
        ) == ("storage_bytes", 40, 40, 41)
        assert "limit is 40 bytes, 40 are in use and this write would make 41" in str(caught.value)
        with pytest.raises(QuotaExceededError, match="storage_bytes"):
            await alpha.storage.set("z", 0)  # 1 + 1 bytes, no room
        await alpha.storage.set("k", "")  # shrinking always passes: 1 + 2
        assert (await alpha.storage.usage()).bytes == 24
        assert await alpha.storage.delete("é") is True
        assert (await alpha.storage.usage()).bytes == 11
        assert await alpha.storage.get("k") == ""
    finally:
        await host.stop()


def _in_threads(
    n: int,
    open_store: Callable[[], Awaitable[StorageBackend]],
    body: Callable[[int, StorageBackend], Awaitable[None]],
) -> None:
    """Run `body(t, store)` in `n` threads at once, each on its own event loop with its own
    backend object (for Redis its own connections: like `n` hosts sharing one Redis)."""
    go = threading.Barrier(n)
    errors: list[BaseException] = []

    def thread(t: int) -> None:
        async def main() -> None:
            store = await open_store()
            try:
                go.wait()
                await body(t, store)
            finally:
                await store.aclose()

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=thread, args=(t,)) for t in range(n)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors, errors


@pytest.mark.timeout(30)
async def test_quota_holds_under_concurrent_threads(
    tmp_path: Path, backend: tuple[str, str]
) -> None:
    db = Database(tmp_path / "kv.db")
    quota = [StorageQuota(max_bytes=6000, max_keys=50)]

    def open_store() -> Awaitable[StorageBackend]:
        return _open(*backend, db, lambda p: quota[0])

    accepted = [0] * 8

    async def distinct_keys(t: int, store: StorageBackend, value: Any = 1) -> None:
        for i in range(20):  # even threads use the synchronous face, odd the coroutines
            with contextlib.suppress(QuotaExceededError):
                address = ("alpha", "user", f"u{t % 3}", "default", f"t{t}-{i}")
                if t % 2:
                    await store.aset(*address, value)  # type: ignore[arg-type]
                else:
                    store.set(*address, value)  # type: ignore[arg-type]
                accepted[t] += 1

    async def big_values(t: int, store: StorageBackend) -> None:
        await distinct_keys(t, store, "v" * 98)

    async def overwrites(t: int, store: StorageBackend) -> None:
        rnd = random.Random(t)
        for _ in range(60):
            with contextlib.suppress(QuotaExceededError):
                key, size = f"k{rnd.randrange(4)}", rnd.randrange(2500)
                if t % 2:
                    await store.aset("alpha", "plugin", "", "default", key, "w" * size)
                else:
                    store.set("alpha", "plugin", "", "default", key, "w" * size)

    store = await open_store()
    try:
        await asyncio.to_thread(_in_threads, 8, open_store, distinct_keys)
        assert sum(accepted) == 50  # the key quota binds
        assert store.usage("alpha").keys == 50
        listed = [store.list("alpha", "user", f"u{u}", "default", "") for u in range(3)]
        assert sum(map(len, listed)) == 50
        for u in range(3):
            store.clear("alpha", "user", f"u{u}", "default")
        assert store.usage("alpha") == StorageUsage(0, 0, 50, 6000)

        # The byte quota binds: each entry is len("tN-M") + 100 bytes of JSON.
        quota[0] = StorageQuota(max_bytes=6000, max_keys=1000)
        accepted[:] = [0] * 8
        await asyncio.to_thread(_in_threads, 8, open_store, big_values)
        usage = store.usage("alpha")
        assert usage.bytes <= 6000 and 6000 - usage.bytes < 105
        assert usage.keys == sum(accepted)
        for u in range(3):
            store.clear("alpha", "user", f"u{u}", "default")

        # Concurrent overwrites of a few keys with random sizes never pass the quota.
        await asyncio.to_thread(_in_threads, 6, open_store, overwrites)
        keys = store.list("alpha", "plugin", "", "default", "")
        values = [store.get("alpha", "plugin", "", "default", k) for k in keys]
        total = sum(len(k) + len(json.dumps(v)) for k, v in zip(keys, values, strict=True))
        assert store.usage("alpha").bytes == total <= 6000
    finally:
        await store.aclose()
        db.close()


_CHURN = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    from tether import QuotaExceededError
    from tether.services.database import Database
    from tether.services.storage import SqliteStorage, StorageQuota

    path, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = SqliteStorage(Database(path), lambda p: StorageQuota(10**9, 40))
    held = [0] * 4
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)

    def writer(t):
        mine = []
        for i in range(250):
            try:
                store.set("alpha", "plugin", "", "default", f"{name}-{t}-{i}", i)
                mine.append(f"{name}-{t}-{i}")
            except QuotaExceededError:
                if mine and i % 2 == 0:  # free a key, so writers keep racing for it
                    assert store.delete("alpha", "plugin", "", "default", mine.pop())
        held[t] = len(mine)

    pool = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in pool: th.start()
    for th in pool: th.join()
    print(sum(held), flush=True)
    """
)


@pytest.mark.timeout(40)
def test_quota_holds_across_two_processes_sharing_the_file(tmp_path: Path) -> None:
    path, go = tmp_path / "kv.db", tmp_path / "go"
    SqliteStorage(Database(path))  # create the schema once, before the race
    script = tmp_path / "churn.py"
    script.write_text(_CHURN)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), name, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    go.touch()
    held = []
    for p in procs:
        out, err = p.communicate(timeout=35)
        assert p.returncode == 0, err
        held.append(int(out.strip()))
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT count(*) FROM kv WHERE plugin='alpha'").fetchone()[0]
    usage = conn.execute("SELECT keys FROM kv_usage WHERE plugin='alpha'").fetchone()[0]
    conn.close()
    # What the writers believe they hold is exactly what is stored, and never above 40.
    assert rows == usage == sum(held) == 40


def test_nested_in_an_open_transaction_uses_a_savepoint(tmp_path: Path) -> None:
    db = Database(tmp_path / "kv.db")
    store = SqliteStorage(db, lambda p: StorageQuota(100, 1))
    with db.lock:
        db.conn.execute("BEGIN")
        store.set("alpha", "plugin", "", "default", "a", 1)
        with pytest.raises(QuotaExceededError):
            store.set("alpha", "plugin", "", "default", "b", 2)
        db.conn.execute("COMMIT")
    assert store.list("alpha", "plugin", "", "default", "") == ["a"]
    db.close()


def test_usage_is_counted_for_a_database_from_before_quotas(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE kv (plugin TEXT NOT NULL, scope TEXT NOT NULL, user_id TEXT NOT NULL,"
        " namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
        " PRIMARY KEY (plugin, scope, user_id, namespace, key)) WITHOUT ROWID"
    )
    conn.execute("INSERT INTO kv VALUES ('alpha', 'plugin', '', 'default', 'é', '{\"a\": 1}')")
    conn.execute("INSERT INTO kv VALUES ('alpha', 'user', 'ann', 'default', 'k', '2')")
    conn.commit()
    conn.close()
    db = Database(path)
    store = SqliteStorage(db)
    assert store.usage("alpha") == StorageUsage(2, 2 + 8 + 1 + 1, 1000, 10 * 1024 * 1024)
    assert store.get("alpha", "plugin", "", "default", "é") == {"a": 1}
    db.close()


# --- durability --------------------------------------------------------------------------------


async def test_data_survives_disable_reload_and_restart(tmp_path: Path) -> None:
    code = """
    from tether import Plugin

    plugin = Plugin()
    """
    write_plugin(tmp_path / "plugins", "keeper", code, capabilities=STORAGE)
    policy = make_policy(tmp_path / "data", limits={"keeper": {}})

    def host() -> Host:
        return Host(policy, base_dir=tmp_path)

    first = host()
    await first.start()
    ctx = first.records["keeper"].context
    assert ctx is not None
    await ctx.storage.set("k", {"v": 1})
    await ctx.storage.set("k", "ann's", scope="user", user="ann", namespace="prefs")
    await first.disable("keeper")
    assert await first.enable("keeper") is True
    ctx = first.records["keeper"].context
    assert ctx is not None and await ctx.storage.get("k") == {"v": 1}
    await first.unload("keeper")  # forget the code; enable imports it again
    assert first.records["keeper"].state is State.UNLOADED
    assert await first.enable("keeper") is True
    ctx = first.records["keeper"].context
    assert ctx is not None and await ctx.storage.get("k") == {"v": 1}
    await first.stop()

    second = host()
    await second.start()
    try:
        ctx = second.records["keeper"].context
        assert ctx is not None
        assert await ctx.storage.get("k") == {"v": 1}
        assert await ctx.storage.get("k", scope="user", user="ann", namespace="prefs") == "ann's"
        assert (await ctx.storage.usage()).keys == 2
    finally:
        await second.stop()


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from tether import Host, Plugin, Policy
    from tether.contract.policy import HostSettings, PluginPolicy, PolicyLimits

    data, first = sys.argv[1], int(sys.argv[2])
    writer = Plugin(id="writer", name="Writer", capabilities=["storage.read", "storage.write"])
    limits = PolicyLimits(storage_keys=1_000_000, storage_bytes=10**9, ops_per_minute=10**9)
    policy = Policy(
        host=HostSettings(data_dir=data, entry_points=False),
        plugins={"writer": PluginPolicy(grant=("storage.read", "storage.write"), limits=limits)},
    )

    async def main():
        async with Host(policy, plugins=[writer], discover=False):
            i = first
            while True:
                await writer.context.storage.set(f"k{i}", {"i": i, "pad": "x" * (i * 37 % 6000)})
                print(i, flush=True)  # acknowledged: set() has returned
                i += 1

    asyncio.run(main())
    """
)


@pytest.mark.timeout(40)
def test_kill_9_mid_write_loses_no_acknowledged_write(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    data = tmp_path / "data"
    acked: list[int] = []
    rnd = random.Random()
    first = 0
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(data), str(first)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        target = rnd.randrange(50, 400)
        seen = 0
        while seen < target:
            line = proc.stdout.readline()
            assert line, proc.stderr.read().decode() if proc.stderr else "writer died"
            seen += 1
        time.sleep(rnd.uniform(0, 0.02))  # a random moment, most likely mid-write
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        lines = out.decode().split("\n")
        # Everything printed was acknowledged; a torn last line was not.
        done = [first + i for i in range(seen)] + [int(x) for x in lines[:-1]]
        acked += done
        first = done[-1] + 1 if done else first
        conn = sqlite3.connect(data / "tether.db")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = dict(conn.execute("SELECT key, value FROM kv WHERE plugin='writer'").fetchall())
        for i in acked:
            assert json.loads(stored[f"k{i}"]) == {"i": i, "pad": "x" * (i * 37 % 6000)}
        for key, text in stored.items():  # the write in flight is all there or not at all
            i = int(key[1:])
            assert json.loads(text) == {"i": i, "pad": "x" * (i * 37 % 6000)}
        # The usage counters moved in the same transactions as the rows.
        keys, used = conn.execute(
            "SELECT keys, bytes FROM kv_usage WHERE plugin='writer'"
        ).fetchone()
        assert keys == len(stored)
        assert used == sum(len(k.encode()) + len(v.encode()) for k, v in stored.items())
        conn.close()
        first = max(first, max(int(k[1:]) for k in stored) + 1)
    assert len(acked) >= 150


@pytest.mark.timeout(40)
def test_storage_benchmark_quick_run_reports_both_backends(tmp_path: Path) -> None:
    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_storage.py"
    env = {k: v for k, v in os.environ.items() if k != "TETHER_CONFIG"}
    proc = subprocess.run(
        [sys.executable, str(bench), "--quick"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=35,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sqlite_part, redis_part = proc.stdout.split("### Redis")
    for row in ("set: ctx.storage.set", "set: bare, same statements", "get: ctx.storage.get"):
        assert f"| {row} | " in sqlite_part
    assert "Single `ctx.storage.set` latency" in sqlite_part
    if shutil.which("redis-server") is None:
        assert "redis-server is not installed: skipped." in redis_part
    else:
        assert "| set: bare, same script | " in redis_part and "| get: bare HGET | " in redis_part
    assert list(tmp_path.iterdir()) == []  # it writes only into its own temporary folder
