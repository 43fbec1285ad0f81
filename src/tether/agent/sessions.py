"""Conversation sessions persisted in the host's SQLite database, resumable after restart,
and the per-session message bus plugins use to add display-only or next-turn messages."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tether.contract.types import Message, ToolCall
from tether.services.database import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS session_messages (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
"""


def message_to_json(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out


def message_from_json(d: dict[str, Any]) -> Message:
    calls = [ToolCall(c["name"], c["arguments"], c.get("id", "")) for c in d.get("tool_calls", [])]
    return Message(d["role"], d.get("content", ""), calls, d.get("tool_call_id"), d.get("name"))


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    caller: str
    title: str
    created: float
    updated: float
    messages: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "caller": self.caller,
            "title": self.title,
            "created": self.created,
            "updated": self.updated,
            "messages": self.messages,
        }


class SessionStore:
    """Sessions and their message history. Writes are one transaction per turn."""

    def __init__(self, db: Database) -> None:
        self._db = db
        with db.lock:
            db.conn.execute("PRAGMA foreign_keys=ON")
            db.conn.executescript(_SCHEMA)

    def create(self, caller: str, title: str = "") -> str:
        sid = uuid.uuid4().hex
        now = time.time()
        with self._db.lock:
            self._db.conn.execute(
                "INSERT INTO sessions (id, caller, title, created, updated) VALUES (?, ?, ?, ?, ?)",
                (sid, caller, title[:200], now, now),
            )
        return sid

    def exists(self, session_id: str) -> bool:
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT 1 FROM sessions WHERE id=?", (session_id,)
            ).fetchone()
        return row is not None

    def append(self, session_id: str, messages: list[Message]) -> None:
        if not messages:
            return
        with self._db.lock:
            conn = self._db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                (last,) = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM session_messages WHERE session_id=?",
                    (session_id,),
                ).fetchone()
                conn.executemany(
                    "INSERT INTO session_messages (session_id, seq, message) VALUES (?, ?, ?)",
                    [
                        (session_id, last + i + 1, json.dumps(message_to_json(m)))
                        for i, m in enumerate(messages)
                    ],
                )
                conn.execute("UPDATE sessions SET updated=? WHERE id=?", (time.time(), session_id))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def load(self, session_id: str) -> list[Message]:
        with self._db.lock:
            rows = self._db.conn.execute(
                "SELECT message FROM session_messages WHERE session_id=? ORDER BY seq",
                (session_id,),
            ).fetchall()
        return [message_from_json(json.loads(r[0])) for r in rows]

    def list(self) -> list[SessionInfo]:
        with self._db.lock:
            rows = self._db.conn.execute(
                "SELECT s.id, s.caller, s.title, s.created, s.updated, COUNT(m.seq)"
                " FROM sessions s LEFT JOIN session_messages m ON m.session_id = s.id"
                " GROUP BY s.id ORDER BY s.updated DESC"
            ).fetchall()
        return [SessionInfo(*r) for r in rows]

    def delete(self, session_id: str) -> bool:
        with self._db.lock:
            cur = self._db.conn.execute("DELETE FROM sessions WHERE id=?", (session_id,))
        return cur.rowcount > 0


@dataclass(slots=True)
class MessageBus:
    """Per-session side channel for plugins.

    `append` adds a display-only message (shown to people, never sent to the model);
    `inject_next` queues a message that travels with the next user turn (the model sees it,
    and it is persisted with the history).
    """

    display: list[Message] = field(default_factory=list)
    _next: list[Message] = field(default_factory=list)

    def append(self, message: Message) -> None:
        self.display.append(message)

    def inject_next(self, message: Message) -> None:
        self._next.append(message)

    def drain_next(self) -> list[Message]:
        out, self._next = self._next, []
        return out
