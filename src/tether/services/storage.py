"""Key/value storage for plugins: the backend protocol, quotas, and the SQLite backend.

Each value is addressed by separate columns (plugin, scope, user, namespace, key), never by a
concatenated string, so no key, prefix or namespace can reach another plugin's or user's rows.

Quotas are per plugin, across every scope, user and namespace. The size of one entry is the
number of UTF-8 bytes of its key plus the UTF-8 bytes of its value's compact JSON text
(`json.dumps(value, ensure_ascii=False, separators=(",", ":"))`); scope, user id and
namespace are not counted. The check and the write happen in one `BEGIN IMMEDIATE`
transaction, so two writers (threads or processes) can never pass a quota together.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from tether.contract.errors import QuotaExceededError
from tether.services.database import Database

if TYPE_CHECKING:
    from tether.contract.policy import Policy, PolicyLimits

Scope = Literal["plugin", "user"]
Keys = list[str]  # an alias: inside the backends, `list` names the method


@dataclass(frozen=True, slots=True)
class StorageQuota:
    """A plugin's storage limits: total bytes (keys + JSON values) and number of keys."""

    max_bytes: int = 10 * 1024 * 1024
    max_keys: int = 1000


@dataclass(frozen=True, slots=True)
class StorageUsage:
    """What a plugin holds now, and its limits."""

    keys: int
    bytes: int
    max_keys: int
    max_bytes: int


QuotaLookup = Callable[[str], StorageQuota]


def default_quota(plugin: str) -> StorageQuota:
    """The policy defaults (10 MiB, 1,000 keys), for backends built without a policy."""
    return _DEFAULT_QUOTA


_DEFAULT_QUOTA = StorageQuota()


def quotas_from_policy(policy: Policy) -> QuotaLookup:
    """Per-plugin quotas from `[plugins.<id>.limits] storage_bytes / storage_keys`."""
    cache: dict[str, StorageQuota] = {}

    def lookup(plugin: str) -> StorageQuota:
        quota = cache.get(plugin)
        if quota is None:
            entry = policy.plugins.get(plugin)
            limits: PolicyLimits | None = entry.limits if entry is not None else None
            quota = (
                StorageQuota(limits.storage_bytes, limits.storage_keys)
                if limits is not None
                else _DEFAULT_QUOTA
            )
            cache[plugin] = quota
        return quota

    return lookup


class StorageBackend(Protocol):
    """What a storage backend provides; every call carries the full address.

    Two faces with one meaning: synchronous, thread-safe methods for host-side callers (the
    CLI, tests, other services), and `a`-prefixed coroutines for the plugin facade on the
    event loop. SQLite's coroutines run inline (a call takes tens of microseconds); Redis's
    await the network without holding the loop. `set` raises QuotaExceededError, writing
    nothing, past a quota; `list` matches the prefix literally and sorts by code point.
    """

    def get(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> Any | None: ...

    def set(self, plugin: str, scope: Scope, user: str, ns: str, key: str, value: Any) -> None: ...

    def delete(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> bool: ...

    def list(self, plugin: str, scope: Scope, user: str, ns: str, prefix: str) -> Keys: ...

    def clear(self, plugin: str, scope: Scope, user: str, ns: str) -> int: ...

    def usage(self, plugin: str) -> StorageUsage: ...

    def close(self) -> None: ...

    async def aget(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> Any | None: ...

    async def aset(
        self, plugin: str, scope: Scope, user: str, ns: str, key: str, value: Any
    ) -> None: ...

    async def adelete(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> bool: ...

    async def alist(self, plugin: str, scope: Scope, user: str, ns: str, prefix: str) -> Keys: ...

    async def aclear(self, plugin: str, scope: Scope, user: str, ns: str) -> int: ...

    async def ausage(self, plugin: str) -> StorageUsage: ...

    async def aclose(self) -> None: ...


# Built once: json.dumps() with non-default options builds a new encoder on every call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_JSON_ASCII = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def encode_value(value: Any) -> tuple[str, bytes]:
    """The stored form of a value, compact JSON with non-ASCII kept as is: the text and
    its UTF-8 bytes. Raises TypeError/ValueError for what JSON cannot represent (NaN, sets,
    objects...)."""
    try:
        text = _JSON.encode(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(
            f"storage values must be JSON (str, number, bool, None, list, "
            f"dict with str keys): {exc}"
        ) from None
    try:
        return text, text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate in a string: the escaped form is valid JSON for the same value.
        text = _JSON_ASCII.encode(value)
        return text, text.encode("utf-8")


def utf8(text: str, what: str) -> bytes:
    """`text` as UTF-8, or a ValueError naming `what` (lone surrogates cannot be stored)."""
    if not isinstance(text, str):
        raise TypeError(f"storage {what} must be a str, not {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"storage {what} {text!r} is not valid Unicode text") from None


def check_quota(
    plugin: str, quota: StorageQuota, keys: int, used: int, add_keys: int, add_bytes: int
) -> None:
    """Raise QuotaExceededError when a write adding `add_keys`/`add_bytes` would pass a limit.

    A write that does not grow usage (an overwrite with a smaller value) always passes, so a
    plugin over a lowered quota can still shrink its data.
    """
    if add_keys > 0 and keys + add_keys > quota.max_keys:
        raise QuotaExceededError(plugin, "storage_keys", quota.max_keys, keys, keys + add_keys)
    if add_bytes > 0 and used + add_bytes > quota.max_bytes:
        raise QuotaExceededError(plugin, "storage_bytes", quota.max_bytes, used, used + add_bytes)


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kv (
    plugin TEXT NOT NULL,
    scope TEXT NOT NULL,
    user_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (plugin, scope, user_id, namespace, key)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS kv_usage (
    plugin TEXT PRIMARY KEY,
    keys INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID""",
    # Triggers keep kv_usage exact inside the same transaction as every write and delete, so
    # usage can never drift from the rows, not even across a crash.
    """CREATE TRIGGER IF NOT EXISTS kv_usage_insert AFTER INSERT ON kv BEGIN
    INSERT OR IGNORE INTO kv_usage (plugin, keys, bytes) VALUES (NEW.plugin, 0, 0);
    UPDATE kv_usage SET keys = keys + 1,
        bytes = bytes + length(CAST(NEW.key AS BLOB)) + length(CAST(NEW.value AS BLOB))
        WHERE plugin = NEW.plugin;
END""",
    """CREATE TRIGGER IF NOT EXISTS kv_usage_update AFTER UPDATE OF value ON kv BEGIN
    UPDATE kv_usage SET
        bytes = bytes + length(CAST(NEW.value AS BLOB)) - length(CAST(OLD.value AS BLOB))
        WHERE plugin = NEW.plugin;
END""",
    """CREATE TRIGGER IF NOT EXISTS kv_usage_delete AFTER DELETE ON kv BEGIN
    UPDATE kv_usage SET keys = keys - 1,
        bytes = bytes - length(CAST(OLD.key AS BLOB)) - length(CAST(OLD.value AS BLOB))
        WHERE plugin = OLD.plugin;
END""",
)

_ADDR = "plugin=?1 AND scope=?2 AND user_id=?3 AND namespace=?4"
_STATE = (
    f"SELECT (SELECT length(CAST(value AS BLOB)) FROM kv WHERE {_ADDR} AND key=?5),"
    " (SELECT keys FROM kv_usage WHERE plugin=?1), (SELECT bytes FROM kv_usage WHERE plugin=?1)"
)
_UPSERT = (
    "INSERT INTO kv (plugin, scope, user_id, namespace, key, value) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (plugin, scope, user_id, namespace, key) DO UPDATE SET value = excluded.value"
)


class SqliteStorage:
    """The embedded default backend, on the host's database (WAL, synchronous=NORMAL).

    The coroutines run inline on the event loop: a typical get or set takes tens of
    microseconds, less than handing it to a worker thread would cost (see docs/storage.md).
    Thread-safe: the database lock serialises callers in one process, and `BEGIN IMMEDIATE`
    serialises writers across processes.
    """

    def __init__(self, db: Database, quotas: QuotaLookup = default_quota) -> None:
        self._db = db
        self._quotas = quotas
        with db.lock, self._write():
            fresh = not db.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='kv_usage'"
            ).fetchone()
            for statement in _SCHEMA:
                db.conn.execute(statement)
            if fresh:
                # A database from before usage was tracked: count what is already there.
                db.conn.execute(
                    "INSERT INTO kv_usage (plugin, keys, bytes) SELECT plugin, count(*),"
                    " sum(length(CAST(key AS BLOB)) + length(CAST(value AS BLOB)))"
                    " FROM kv GROUP BY plugin"
                )

    def _begin(self) -> bool:
        """Start a write transaction that takes the database's write lock up front, so what
        it reads cannot change before it writes (another process waits on busy_timeout).
        Inside someone's open transaction, a savepoint instead; returns True then.
        Call with `db.lock` held."""
        nested = self._db.conn.in_transaction
        self._db.conn.execute("SAVEPOINT kv_write" if nested else "BEGIN IMMEDIATE")
        return nested

    def _rollback(self, nested: bool) -> None:
        conn = self._db.conn
        if nested:
            conn.execute("ROLLBACK TO kv_write")
            conn.execute("RELEASE kv_write")
        elif conn.in_transaction:
            conn.execute("ROLLBACK")

    @contextmanager
    def _write(self) -> Iterator[None]:
        """`_begin()` ... commit, or roll back on any exception. Call with `db.lock` held."""
        nested = self._begin()
        try:
            yield
            self._db.conn.execute("RELEASE kv_write" if nested else "COMMIT")
        except BaseException:
            self._rollback(nested)
            raise

    def get(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> Any | None:
        utf8(key, "key"), utf8(user, "user id")
        with self._db.lock:
            row = self._db.conn.execute(
                f"SELECT value FROM kv WHERE {_ADDR} AND key=?5", (plugin, scope, user, ns, key)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def set(self, plugin: str, scope: Scope, user: str, ns: str, key: str, value: Any) -> None:
        text, raw = encode_value(value)
        key_len = len(utf8(key, "key"))
        utf8(user, "user id")
        quota = self._quotas(plugin)
        conn = self._db.conn
        # The hot path: the steps of _write() written out (a generator costs microseconds).
        with self._db.lock:
            nested = self._begin()
            try:
                old, keys, used = conn.execute(_STATE, (plugin, scope, user, ns, key)).fetchone()
                if old is None:
                    check_quota(plugin, quota, keys or 0, used or 0, 1, key_len + len(raw))
                else:
                    check_quota(plugin, quota, keys or 0, used or 0, 0, len(raw) - old)
                conn.execute(_UPSERT, (plugin, scope, user, ns, key, text))
                conn.execute("RELEASE kv_write" if nested else "COMMIT")
            except BaseException:
                self._rollback(nested)
                raise

    def delete(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> bool:
        utf8(key, "key"), utf8(user, "user id")
        with self._db.lock:
            cur = self._db.conn.execute(
                f"DELETE FROM kv WHERE {_ADDR} AND key=?5", (plugin, scope, user, ns, key)
            )
        return cur.rowcount > 0

    def list(self, plugin: str, scope: Scope, user: str, ns: str, prefix: str) -> Keys:
        utf8(prefix, "prefix"), utf8(user, "user id")
        # substr() comparison instead of LIKE: '%' and '_' in a prefix are not wildcards.
        # Keys compare as UTF-8 bytes (BINARY collation): code-point order, as in Python.
        with self._db.lock:
            rows = self._db.conn.execute(
                f"SELECT key FROM kv WHERE {_ADDR} AND substr(key, 1, ?5) = ?6 ORDER BY key",
                (plugin, scope, user, ns, len(prefix), prefix),
            ).fetchall()
        return [r[0] for r in rows]

    def clear(self, plugin: str, scope: Scope, user: str, ns: str) -> int:
        utf8(user, "user id")
        with self._db.lock:
            cur = self._db.conn.execute(f"DELETE FROM kv WHERE {_ADDR}", (plugin, scope, user, ns))
        return cur.rowcount

    def usage(self, plugin: str) -> StorageUsage:
        quota = self._quotas(plugin)
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT keys, bytes FROM kv_usage WHERE plugin=?", (plugin,)
            ).fetchone()
        keys, used = row if row is not None else (0, 0)
        return StorageUsage(keys, used, quota.max_keys, quota.max_bytes)

    def close(self) -> None:
        """Nothing to release: the host closes the shared database."""

    # The coroutine face: the same calls, inline (they never wait on anything but SQLite).

    async def aget(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> Any | None:
        return self.get(plugin, scope, user, ns, key)

    async def aset(
        self, plugin: str, scope: Scope, user: str, ns: str, key: str, value: Any
    ) -> None:
        self.set(plugin, scope, user, ns, key, value)

    async def adelete(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> bool:
        return self.delete(plugin, scope, user, ns, key)

    async def alist(self, plugin: str, scope: Scope, user: str, ns: str, prefix: str) -> Keys:
        return self.list(plugin, scope, user, ns, prefix)

    async def aclear(self, plugin: str, scope: Scope, user: str, ns: str) -> int:
        return self.clear(plugin, scope, user, ns)

    async def ausage(self, plugin: str) -> StorageUsage:
        return self.usage(plugin)

    async def aclose(self) -> None:
        self.close()


async def open_storage(
    backend: str, db: Database, redis_url: str, quotas: QuotaLookup = default_quota
) -> StorageBackend:
    """The backend `[host] storage_backend` names: "sqlite" (default) or "redis"."""
    if backend == "redis":
        # Imported here: the redis client costs start-up time only for hosts that use it.
        from tether.services.redis_storage import RedisStorage

        return await RedisStorage.connect(redis_url, quotas)
    if backend != "sqlite":
        raise ValueError(f'[host] storage_backend must be "sqlite" or "redis", not {backend!r}')
    return SqliteStorage(db, quotas)
