"""Key/value storage for plugins, on the host's SQLite database.

Each value is addressed by separate columns (plugin, scope, user, namespace, key), never by a
concatenated string, so no key, prefix or namespace can reach another plugin's or user's rows.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol

from tether.services.database import Database

Scope = Literal["plugin", "user"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    plugin TEXT NOT NULL,
    scope TEXT NOT NULL,
    user_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (plugin, scope, user_id, namespace, key)
) WITHOUT ROWID;
"""


class StorageBackend(Protocol):
    """What a storage backend provides; every call carries the full address."""

    def get(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> Any | None: ...

    def set(self, plugin: str, scope: Scope, user: str, ns: str, key: str, value: Any) -> None: ...

    def delete(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> bool: ...

    def list(self, plugin: str, scope: Scope, user: str, ns: str, prefix: str) -> list[str]: ...

    def clear(self, plugin: str, scope: Scope, user: str, ns: str) -> int: ...


class SqliteStorage:
    """The embedded default backend."""

    def __init__(self, db: Database) -> None:
        self._db = db
        with db.lock:
            db.conn.executescript(_SCHEMA)

    def get(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> Any | None:
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT value FROM kv WHERE plugin=? AND scope=? AND user_id=? AND namespace=?"
                " AND key=?",
                (plugin, scope, user, ns, key),
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def set(self, plugin: str, scope: Scope, user: str, ns: str, key: str, value: Any) -> None:
        text = json.dumps(value, allow_nan=False)
        with self._db.lock:
            self._db.conn.execute(
                "INSERT INTO kv (plugin, scope, user_id, namespace, key, value)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (plugin, scope, user_id, namespace, key)"
                " DO UPDATE SET value = excluded.value",
                (plugin, scope, user, ns, key, text),
            )

    def delete(self, plugin: str, scope: Scope, user: str, ns: str, key: str) -> bool:
        with self._db.lock:
            cur = self._db.conn.execute(
                "DELETE FROM kv WHERE plugin=? AND scope=? AND user_id=? AND namespace=? AND key=?",
                (plugin, scope, user, ns, key),
            )
        return cur.rowcount > 0

    def list(self, plugin: str, scope: Scope, user: str, ns: str, prefix: str) -> list[str]:
        # substr() comparison instead of LIKE: '%' and '_' in a prefix are not wildcards.
        with self._db.lock:
            rows = self._db.conn.execute(
                "SELECT key FROM kv WHERE plugin=? AND scope=? AND user_id=? AND namespace=?"
                " AND substr(key, 1, ?) = ? ORDER BY key",
                (plugin, scope, user, ns, len(prefix), prefix),
            ).fetchall()
        return [r[0] for r in rows]

    def clear(self, plugin: str, scope: Scope, user: str, ns: str) -> int:
        with self._db.lock:
            cur = self._db.conn.execute(
                "DELETE FROM kv WHERE plugin=? AND scope=? AND user_id=? AND namespace=?",
                (plugin, scope, user, ns),
            )
        return cur.rowcount
