"""The audit log: violations, refusals and state changes, kept in the host's database."""

from __future__ import annotations

import json
import time
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


class AuditLog:
    """Append-only records. `kind` is e.g. `capability_violation`, `refused`, `state`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        with db.lock:
            db.conn.executescript(_SCHEMA)

    def record(self, plugin: str, kind: str, message: str, **detail: Any) -> None:
        payload = json.dumps(detail, default=str, sort_keys=True)
        with self._db.lock:
            self._db.conn.execute(
                "INSERT INTO audit (ts, plugin, kind, message, detail) VALUES (?, ?, ?, ?, ?)",
                (time.time(), plugin, kind, message, payload),
            )

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
