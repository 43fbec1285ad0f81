"""Per-user memories with full-text search, in the host's SQLite database.

Every query carries the user id as a bound column, so a search, a read or an update for one
user can never return or touch another user's memories. Search uses SQLite FTS5 (Porter
stemming, bm25 ranking) and blends relevance with the memory's importance:

    score = 0.7 * (bm25 relevance / best relevance among the candidates) + 0.3 * importance / 10
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal, get_args

from tether.services.database import Database
from tether.services.users import check_user_id

MemoryType = Literal["episodic", "semantic", "procedural"]
MEMORY_TYPES: tuple[str, ...] = get_args(MemoryType)
MAX_CONTENT_CHARS = 32_768
RELEVANCE_WEIGHT = 0.7
IMPORTANCE_WEIGHT = 0.3
_WORD = re.compile(r"\w+", re.UNICODE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    type TEXT NOT NULL,
    importance INTEGER NOT NULL,
    content TEXT NOT NULL,
    source TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_user ON memories (user_id, id);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    content, tokenize = 'porter unicode61'
);
"""


@dataclass(frozen=True, slots=True)
class Memory:
    """One memory. `score` is set on search results (higher is better), else None."""

    id: int
    user: str
    type: str
    importance: int
    content: str
    source: str
    created_at: float
    updated_at: float
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "type": self.type,
            "importance": self.importance,
            "content": self.content,
            "source": self.source,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "score": self.score,
        }


def _check_type(kind: str) -> str:
    if kind not in MEMORY_TYPES:
        raise ValueError(f"memory type {kind!r} must be one of {', '.join(MEMORY_TYPES)}")
    return kind


def _check_importance(importance: int) -> int:
    if isinstance(importance, bool) or not isinstance(importance, int) or not 1 <= importance <= 10:
        raise ValueError(f"importance {importance!r} must be an integer from 1 to 10")
    return importance


def _check_content(content: str) -> str:
    if not isinstance(content, str) or not content.strip() or len(content) > MAX_CONTENT_CHARS:
        raise ValueError(f"memory content must be 1-{MAX_CONTENT_CHARS} characters of text")
    return content


def fts_query(text: str) -> str | None:
    """Turn free text into an FTS5 query: each word quoted (so no query syntax can be
    injected), any word may match. None when the text has no words."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))[:32]
    return " OR ".join(f'"{w}"' for w in words) if words else None


_COLUMNS = "m.id, m.user_id, m.type, m.importance, m.content, m.source, m.created, m.updated"


def _row(r: tuple[Any, ...], score: float | None = None) -> Memory:
    return Memory(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], score)


class MemoryStore:
    """`host.memory`: create, update, get, delete, search; every call names the user."""

    def __init__(self, db: Database) -> None:
        self._db = db
        with db.lock:
            db.conn.executescript(_SCHEMA)

    def create(
        self, user: str, content: str, type: str, importance: int = 5, *, source: str = "host"
    ) -> Memory:
        """Store a memory for `user`; returns it with its new id."""
        check_user_id(user)
        _check_content(content)
        _check_type(type)
        _check_importance(importance)
        now = time.time()
        with self._db.lock:
            conn = self._db.conn
            conn.execute("BEGIN")
            try:
                cur = conn.execute(
                    "INSERT INTO memories (user_id, type, importance, content, source, created,"
                    " updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (user, type, importance, content, source, now, now),
                )
                mid = int(cur.lastrowid or 0)
                conn.execute(
                    "INSERT INTO memories_fts (rowid, content) VALUES (?, ?)", (mid, content)
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return Memory(mid, user, type, importance, content, source, now, now)

    def get(self, user: str, memory_id: int) -> Memory | None:
        """The memory with this id if it belongs to `user`, else None."""
        check_user_id(user)
        with self._db.lock:
            r = self._db.conn.execute(
                f"SELECT {_COLUMNS} FROM memories m WHERE m.id = ? AND m.user_id = ?",
                (memory_id, user),
            ).fetchone()
        return None if r is None else _row(r)

    def update(
        self,
        user: str,
        memory_id: int,
        *,
        content: str | None = None,
        type: str | None = None,
        importance: int | None = None,
    ) -> Memory:
        """Change a memory of `user`; raises KeyError when `user` has no such memory."""
        check_user_id(user)
        if content is not None:
            _check_content(content)
        if type is not None:
            _check_type(type)
        if importance is not None:
            _check_importance(importance)
        with self._db.lock:
            conn = self._db.conn
            conn.execute("BEGIN")
            try:
                r = conn.execute(
                    f"SELECT {_COLUMNS} FROM memories m WHERE m.id = ? AND m.user_id = ?",
                    (memory_id, user),
                ).fetchone()
                if r is None:
                    raise KeyError(f"user {user!r} has no memory with id {memory_id!r}")
                old = _row(r)
                new = Memory(
                    old.id,
                    user,
                    type or old.type,
                    importance if importance is not None else old.importance,
                    content if content is not None else old.content,
                    old.source,
                    old.created_at,
                    time.time(),
                )
                conn.execute(
                    "UPDATE memories SET type = ?, importance = ?, content = ?, updated = ?"
                    " WHERE id = ? AND user_id = ?",
                    (new.type, new.importance, new.content, new.updated_at, new.id, user),
                )
                if content is not None:
                    conn.execute("DELETE FROM memories_fts WHERE rowid = ?", (new.id,))
                    conn.execute(
                        "INSERT INTO memories_fts (rowid, content) VALUES (?, ?)",
                        (new.id, new.content),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return new

    def delete(self, user: str, memory_id: int) -> bool:
        """Remove a memory of `user`; True when there was one."""
        check_user_id(user)
        with self._db.lock:
            conn = self._db.conn
            conn.execute("BEGIN")
            try:
                cur = conn.execute(
                    "DELETE FROM memories WHERE id = ? AND user_id = ?", (memory_id, user)
                )
                if cur.rowcount:
                    conn.execute("DELETE FROM memories_fts WHERE rowid = ?", (memory_id,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return cur.rowcount > 0

    def search(
        self, user: str, query: str, limit: int = 5, *, type: str | None = None
    ) -> list[Memory]:
        """`user`'s memories matching `query`, best first, each with its `score`."""
        check_user_id(user)
        if not isinstance(limit, int) or not 1 <= limit <= 100:
            raise ValueError(f"limit {limit!r} must be an integer from 1 to 100")
        if type is not None:
            _check_type(type)
        match = fts_query(query if isinstance(query, str) else "")
        if match is None:
            return []
        sql = (
            f"SELECT {_COLUMNS}, bm25(memories_fts) AS rank FROM memories_fts"
            " JOIN memories m ON m.id = memories_fts.rowid"
            " WHERE memories_fts MATCH ? AND m.user_id = ?"
        )
        args: list[Any] = [match, user]
        if type is not None:
            sql += " AND m.type = ?"
            args.append(type)
        # Rank a wider set by text relevance, then blend in importance.
        sql += " ORDER BY rank LIMIT ?"
        args.append(limit * 4)
        with self._db.lock:
            rows = self._db.conn.execute(sql, args).fetchall()
        if not rows:
            return []
        relevance = [-float(r[8]) for r in rows]  # bm25: lower (more negative) is better
        best = max(max(relevance), 1e-9)
        scored = [
            _row(
                r,
                round(RELEVANCE_WEIGHT * max(rel, 0.0) / best + IMPORTANCE_WEIGHT * r[3] / 10, 6),
            )
            for r, rel in zip(rows, relevance, strict=True)
        ]
        scored.sort(key=lambda m: (-(m.score or 0.0), -m.id))
        return scored[:limit]

    def count(self, user: str) -> int:
        """How many memories `user` has."""
        check_user_id(user)
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT count(*) FROM memories WHERE user_id = ?", (user,)
            ).fetchone()
        return int(row[0])
