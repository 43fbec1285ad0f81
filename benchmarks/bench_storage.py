"""Storage throughput: `ctx.storage.set/get` against bare client loops doing the same work.

SQLite: `await ctx.storage.set(key, value)` (capability check, rate-limit token, address
validation, JSON encoding, quota check and upsert in one `BEGIN IMMEDIATE` transaction)
against a bare `sqlite3` loop running the same statements on a database of the same kind
(same schema and triggers, WAL, synchronous=NORMAL, busy_timeout), in the same process. A
second baseline is a single autocommit upsert with no quota check (what storage did before
quotas), and a third row runs the bare statements in a worker thread, which is what running
SQLite off the event loop would cost. `get` is compared with a bare SELECT + `json.loads`.

Redis (when `redis-server` is installed; the benchmark starts its own): the same through
the Redis backend (the asyncio client and a Lua script) against a bare redis-py asyncio loop
sending the same script with EVALSHA, plain HSET/HGET, and the synchronous client's HGET.

Keys cycle through 100 names, so sets overwrite. Wall clock (`time.perf_counter`), since
every variant does I/O; interleaved repeats, minimum wins. Also reported: the latency
distribution of single SQLite sets, whose tail is the WAL checkpoint.

Run: `python benchmarks/bench_storage.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _timing import Settings, Timing, Variant, compare, fmt_us, table
from tether import Host, Plugin, Policy
from tether.contract.policy import HostSettings, PluginPolicy, PolicyLimits
from tether.services.redis_storage import _SET, data_key, usage_key
from tether.services.storage import _SCHEMA, _STATE, _UPSERT

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_server import BINARY as REDIS_BINARY
from redis_server import RedisServer

VALUE = {"n": 1, "text": "hello world"}
KEYS = [f"key-{i}" for i in range(100)]
PLUGIN = "bench"
ADDR = "P, 'plugin', '', 'default'"  # the backend address, in the timed statements


@dataclass(slots=True)
class StorageReport:
    sqlite: dict[str, Timing]
    redis: dict[str, Timing] | None
    latency: dict[str, float] = field(default_factory=dict)
    markdown: str = ""


def _policy(data: Path, backend: str = "sqlite", url: str = "") -> Policy:
    limits = PolicyLimits(storage_keys=10**6, storage_bytes=10**10, ops_per_minute=10**12)
    return Policy(
        host=HostSettings(
            data_dir=str(data),
            entry_points=False,
            watchdog_ms=5000,  # a batch never yields for ~0.2 s; not on the measured path
            storage_backend=backend,  # type: ignore[arg-type]
            **({"redis_url": url} if url else {}),
        ),
        plugins={PLUGIN: PluginPolicy(grant=("storage.read", "storage.write"), limits=limits)},
    )


def _bare_sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
        conn.execute(f"PRAGMA {pragma}")
    for statement in _SCHEMA:
        conn.execute(statement)
    return conn


def bare_set(conn: sqlite3.Connection, key: str, value: Any) -> None:
    """The statements SqliteStorage.set runs, with no Tether code around them."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(_STATE, (PLUGIN, "plugin", "", "default", key)).fetchone()
    conn.execute(_UPSERT, (PLUGIN, "plugin", "", "default", key, text))
    conn.execute("COMMIT")


def bare_upsert(conn: sqlite3.Connection, key: str, value: Any) -> None:
    conn.execute(_UPSERT, (PLUGIN, "plugin", "", "default", key, json.dumps(value)))


def bare_get(conn: sqlite3.Connection, key: str) -> Any:
    row = conn.execute(
        "SELECT value FROM kv WHERE plugin=? AND scope=? AND user_id=? AND namespace=? AND key=?",
        (PLUGIN, "plugin", "", "default", key),
    ).fetchone()
    return json.loads(row[0])


async def _sqlite(settings: Settings, tmp: Path) -> tuple[dict[str, Timing], dict[str, float]]:
    plugin = Plugin(id=PLUGIN, name="Bench", capabilities=["storage.read", "storage.write"])
    async with Host(_policy(tmp / "data"), plugins=[plugin]) as host:
        ctx, backend = plugin.context, host.services.storage
        assert ctx is not None
        conn = _bare_sqlite(tmp / "bare.db")
        for key in KEYS:
            await ctx.storage.set(key, VALUE)
            bare_set(conn, key, VALUE)
        env = {
            "ctx": ctx,
            "st": backend,
            "conn": conn,
            "keys": itertools.cycle(KEYS),
            "v": VALUE,
            "bare_set": bare_set,
            "bare_upsert": bare_upsert,
            "bare_get": bare_get,
            "to_thread": asyncio.to_thread,
            "P": PLUGIN,
        }
        variants = [
            Variant("set: ctx.storage.set", "await ctx.storage.set(next(keys), v)", env, True),
            Variant("set: backend.aset", f"await st.aset({ADDR}, next(keys), v)", env, True),
            Variant("set: bare, same statements", "bare_set(conn, next(keys), v)", env),
            Variant("set: bare, one upsert, no quota", "bare_upsert(conn, next(keys), v)", env),
            Variant(
                "set: bare, same statements, in a worker thread",
                "await to_thread(bare_set, conn, next(keys), v)",
                env,
                True,
            ),
            Variant("get: ctx.storage.get", "await ctx.storage.get(next(keys))", env, True),
            Variant("get: backend.aget", f"await st.aget({ADDR}, next(keys))", env, True),
            Variant("get: bare, same statement", "bare_get(conn, next(keys))", env),
        ]
        timings = await compare(variants, settings)
        latency = await _set_latency(ctx, 200 if settings.quick else 20_000)
        conn.close()
    return timings, latency


async def _set_latency(ctx: Any, n: int) -> dict[str, float]:
    """Per-call latency of `ctx.storage.set` (µs): how long one call holds the event loop."""
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        await ctx.storage.set(KEYS[i % len(KEYS)], VALUE)
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return {
        "median": samples[n // 2],
        "p99": samples[int(n * 0.99)],
        "p99.9": samples[int(n * 0.999)],
        "max": samples[-1],
    }


async def _redis(settings: Settings, tmp: Path) -> dict[str, Timing] | None:
    if REDIS_BINARY is None:
        return None
    import redis
    import redis.asyncio as aredis

    with RedisServer(tmp) as server:
        plugin = Plugin(id=PLUGIN, name="Bench", capabilities=["storage.read", "storage.write"])
        policy = _policy(tmp / "rdata", "redis", server.url)
        async with Host(policy, plugins=[plugin]) as host:
            ctx, backend = plugin.context, host.services.storage
            assert ctx is not None
            client = aredis.Redis.from_url(server.url)
            sync_client = redis.Redis.from_url(server.url)
            script = client.register_script(_SET)
            hkey = data_key(b"tether", PLUGIN, "plugin", "", "default")
            ukey = usage_key(b"tether", PLUGIN)
            bare_hash = b"bare:" + hkey

            async def bare_script_set(key: str, value: Any) -> None:
                text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
                await script(keys=[hkey, ukey], args=[key.encode(), text.encode(), 10**6, 10**10])

            async def bare_hset(key: str, value: Any) -> None:
                await client.hset(bare_hash, key, json.dumps(value))

            async def bare_hget(key: str) -> Any:
                return json.loads(await client.hget(hkey, key))

            def bare_sync_hget(key: str) -> Any:
                return json.loads(sync_client.hget(hkey, key))  # type: ignore[arg-type]

            for key in KEYS:
                await ctx.storage.set(key, VALUE)
            env = {
                "ctx": ctx,
                "st": backend,
                "keys": itertools.cycle(KEYS),
                "v": VALUE,
                "P": PLUGIN,
                "bare_script_set": bare_script_set,
                "bare_hset": bare_hset,
                "bare_hget": bare_hget,
                "bare_sync_hget": bare_sync_hget,
            }
            variants = [
                Variant("set: ctx.storage.set", "await ctx.storage.set(next(keys), v)", env, True),
                Variant("set: backend.aset", f"await st.aset({ADDR}, next(keys), v)", env, True),
                Variant(
                    "set: bare, same script", "await bare_script_set(next(keys), v)", env, True
                ),
                Variant("set: bare HSET, no quota", "await bare_hset(next(keys), v)", env, True),
                Variant("get: ctx.storage.get", "await ctx.storage.get(next(keys))", env, True),
                Variant("get: backend.aget", f"await st.aget({ADDR}, next(keys))", env, True),
                Variant("get: bare HGET", "await bare_hget(next(keys))", env, True),
                Variant("get: bare HGET, synchronous client", "bare_sync_hget(next(keys))", env),
            ]
            timings = await compare(variants, settings)
            await client.aclose()
            sync_client.close()
    return timings


def _rows(timings: dict[str, Timing]) -> list[list[str]]:
    bare = {
        "set": next(t for label, t in timings.items() if label.startswith("set: bare")),
        "get": next(t for label, t in timings.items() if label.startswith("get: bare")),
    }
    rows = []
    for label, t in timings.items():
        base = bare[label[:3]]
        rows.append(
            [
                label,
                f"{1e6 / t.best_us:,.0f}",
                fmt_us(t.best_us),
                fmt_us(t.median_us),
                f"{t.best_us / base.best_us:.2f}x",
            ]
        )
    return rows


def render(report: StorageReport) -> str:
    headers = ["variant", "ops/s (best)", "per op (min)", "median", "time vs bare"]
    out = ["## Storage", "", "### SQLite", "", table(headers, _rows(report.sqlite)), ""]
    lat = report.latency
    out.append(
        f"Single `ctx.storage.set` latency over {len(KEYS)} cycling keys: median "
        f"{fmt_us(lat['median'])}, p99 {fmt_us(lat['p99'])}, p99.9 {fmt_us(lat['p99.9'])}, "
        f"max {fmt_us(lat['max'])}."
    )
    out += ["", "### Redis", ""]
    if report.redis is None:
        out.append("redis-server is not installed: skipped.")
    else:
        out.append(table(headers, _rows(report.redis)))
    return "\n".join(out)


def run(settings: Settings) -> StorageReport:
    with tempfile.TemporaryDirectory(prefix="tether-bench-storage-") as folder:
        tmp = Path(folder)
        sqlite_timings, latency = asyncio.run(_sqlite(settings, tmp))
        redis_timings = asyncio.run(_redis(settings, tmp))
    report = StorageReport(sqlite_timings, redis_timings, latency)
    report.markdown = render(report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny loops (smoke test)")
    args = parser.parse_args(argv)
    print(run(Settings.for_mode(args.quick)).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
