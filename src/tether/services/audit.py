"""The audit log: violations, refusals and state changes, kept in the host's database."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tether.services.database import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    plugin TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_plugin ON audit (plugin, id);
"""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    ts: float
    plugin: str
    kind: str
    message: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts,
            "plugin": self.plugin,
            "kind": self.kind,
            "message": self.message,
            "detail": self.detail,
        }


_INSERT = "INSERT INTO audit (ts, plugin, kind, message, detail) VALUES (?, ?, ?, ?, ?)"


class AuditLog:
    """Append-only records. `kind` is e.g. `capability_violation`, `refused`, `state`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._buffer: list[tuple[float, str, str, str, str]] | None = None
        with db.lock:
            db.conn.executescript(_SCHEMA)

    def record(self, plugin: str, kind: str, message: str, **detail: Any) -> None:
        row = (time.time(), plugin, kind, message, json.dumps(detail, default=str, sort_keys=True))
        with self._db.lock:
            if self._buffer is not None:
                self._buffer.append(row)
                return
            self._db.conn.execute(_INSERT, row)

    @contextmanager
    def buffered(self) -> Iterator[None]:
        """Collect records and write them in one transaction at the end (host start-up,
        where one transaction per record would cost a commit each)."""
        with self._db.lock:
            self._buffer = []
        try:
            yield
        finally:
            with self._db.lock:
                rows, self._buffer = self._buffer, None
                if rows:
                    # The connection autocommits, so make the batch one transaction by hand.
                    self._db.conn.execute("BEGIN")
                    self._db.conn.executemany(_INSERT, rows)
                    self._db.conn.execute("COMMIT")

    def read(
        self, *, plugin: str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        """Newest first."""
        sql = "SELECT id, ts, plugin, kind, message, detail FROM audit"
        where, args = [], []
        if plugin is not None:
            where.append("plugin = ?")
            args.append(plugin)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._db.lock:
            rows = self._db.conn.execute(sql, (*args, limit)).fetchall()
        return [AuditRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]
