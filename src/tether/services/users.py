"""The host's user store: user ids with a display name, roles and preferences, in the host's
SQLite database. The host (or its login layer) writes it; plugins read it (`users.read`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from tether.services.database import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    roles TEXT NOT NULL,
    preferences TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
) WITHOUT ROWID;
"""

MAX_PREFERENCES_BYTES = 65_536


def check_user_id(user: str) -> str:
    """A user id is 1-256 characters of text without NUL."""
    if not isinstance(user, str) or not user or len(user) > 256 or "\x00" in user:
        raise ValueError(f"user id {user!r} must be 1-256 characters of text without NUL")
    return user


@dataclass(frozen=True, slots=True)
class User:
    """A user as plugins see them. `preferences` is a copy; changing it changes nothing."""

    id: str
    name: str
    roles: tuple[str, ...] = ()
    preferences: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "roles": list(self.roles),
            "preferences": dict(self.preferences),
        }


class UserStore:
    """`host.users`: upsert, get, preferences, delete, list."""

    def __init__(self, db: Database) -> None:
        self._db = db
        with db.lock:
            db.conn.executescript(_SCHEMA)

    def upsert(
        self,
        user_id: str,
        *,
        name: str | None = None,
        roles: list[str] | tuple[str, ...] | None = None,
        preferences: dict[str, Any] | None = None,
    ) -> User:
        """Create or update a user; arguments left as None keep their stored value
        (a new user gets its id as name, no roles and no preferences)."""
        check_user_id(user_id)
        if roles is not None and not all(isinstance(r, str) and r for r in roles):
            raise ValueError(f"user {user_id!r}: roles must be non-empty strings")
        if preferences is not None:
            if not isinstance(preferences, dict):
                raise ValueError(f"user {user_id!r}: preferences must be a dict")
            prefs_text = json.dumps(preferences, allow_nan=False, sort_keys=True)
            if len(prefs_text.encode()) > MAX_PREFERENCES_BYTES:
                raise ValueError(
                    f"user {user_id!r}: preferences are over {MAX_PREFERENCES_BYTES} bytes of JSON"
                )
        now = time.time()
        with self._db.lock:
            current = self._get(user_id)
            merged = User(
                user_id,
                name if name is not None else (current.name if current else user_id),
                tuple(roles) if roles is not None else (current.roles if current else ()),
                dict(preferences)
                if preferences is not None
                else (current.preferences if current else {}),
            )
            self._db.conn.execute(
                "INSERT INTO users (id, name, roles, preferences, created, updated)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                " roles = excluded.roles, preferences = excluded.preferences,"
                " updated = excluded.updated",
                (
                    user_id,
                    merged.name,
                    json.dumps(list(merged.roles)),
                    json.dumps(merged.preferences, allow_nan=False, sort_keys=True),
                    now,
                    now,
                ),
            )
        return merged

    def _get(self, user_id: str) -> User | None:
        row = self._db.conn.execute(
            "SELECT id, name, roles, preferences FROM users WHERE id = ?", (user_id,)
        ).fetchone()
        if row is None:
            return None
        return User(row[0], row[1], tuple(json.loads(row[2])), json.loads(row[3]))

    def get(self, user_id: str) -> User | None:
        """The user, or None when there is no such user."""
        check_user_id(user_id)
        with self._db.lock:
            return self._get(user_id)

    def preferences(self, user_id: str) -> dict[str, Any]:
        """The user's preferences ({} for an unknown user)."""
        user = self.get(user_id)
        return dict(user.preferences) if user else {}

    def delete(self, user_id: str) -> bool:
        """Remove a user; True when there was one."""
        check_user_id(user_id)
        with self._db.lock:
            cur = self._db.conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
        return cur.rowcount > 0

    def list(self) -> list[User]:
        """Every user, by id."""
        with self._db.lock:
            ids = [r[0] for r in self._db.conn.execute("SELECT id FROM users ORDER BY id")]
            return [u for i in ids if (u := self._get(i)) is not None]
