"""Per-scope config keys: plugin-declared settings with defaults and validators, stored
per scope ("global", "space:main", "user:alice", ...) in the host's SQLite database.

A key's full name is `<plugin-id>.<key>`. Definitions (description, default) are written to
the database when a plugin registers them, so `tether config get/list` can answer without
importing plugin code; validators live only in plugin code, so setting a value checks it
against the validator of the running plugin.
"""

from __future__ import annotations

import inspect
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether.contract.errors import TetherError
from tether.services.database import Database

GLOBAL = "global"
MAX_VALUE_CHARS = 65_536
_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_SCOPE = re.compile(r"^[a-z][a-z0-9_-]{0,31}:[^\x00-\x1f\x7f]{1,256}$")
_NAME = re.compile(r"^([a-z][a-z0-9-]*)\.(.+)$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS config_keys (
    name TEXT PRIMARY KEY,
    plugin TEXT NOT NULL,
    description TEXT NOT NULL,
    default_value TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS config_values (
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    value TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (name, scope)
) WITHOUT ROWID;
"""

Validator = Callable[[str], Any]
"""`(value) -> bool | None`; False or raising rejects the value."""


class ConfigKeyError(TetherError, ValueError):
    """An unknown or malformed config key or scope, or a value its validator rejected."""


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """A registered key: full name, owner, description, default and (in memory) validator."""

    name: str
    plugin: str
    key: str
    description: str = ""
    default: str | None = None
    validate: Validator | None = None


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One row of `list()`: a key with its value in a scope (or its default)."""

    name: str
    scope: str
    value: str | None
    is_default: bool
    description: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scope": self.scope,
            "value": self.value,
            "default": self.is_default,
            "description": self.description,
        }


def check_key(key: str) -> str:
    """Validate a short key name (`enabled`, `max.items`)."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ConfigKeyError(
            f"config key {key!r} must be 1-64 characters of a-z 0-9 _ . - starting with a "
            "letter or digit"
        )
    return key


def check_scope(scope: str) -> str:
    """Validate a scope: "global" or "<kind>:<id>" such as "space:main" or "user:alice"."""
    if scope == GLOBAL or (isinstance(scope, str) and _SCOPE.fullmatch(scope)):
        return scope
    raise ConfigKeyError(
        f'scope {scope!r} must be "global" or "<kind>:<id>" such as "space:main" or '
        '"user:alice" (kind: a-z 0-9 _ -, id: 1-256 printable characters)'
    )


def split_name(name: str) -> tuple[str, str]:
    """`"weather.units"` -> `("weather", "units")`; raises `ConfigKeyError` when malformed."""
    m = _NAME.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise ConfigKeyError(
            f"config key name {name!r} must be '<plugin-id>.<key>', e.g. 'weather.units'"
        )
    return m.group(1), check_key(m.group(2))


def _check_value(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise ConfigKeyError(f"{name}: values are text, not {type(value).__name__}")
    if len(value) > MAX_VALUE_CHARS or "\x00" in value:
        raise ConfigKeyError(f"{name}: values are at most {MAX_VALUE_CHARS} characters, no NUL")
    return value


class ConfigKeys:
    """The host's config-key service (`host.config_keys`)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._keys: dict[str, ConfigKey] = {}
        self._lock = threading.Lock()
        with db.lock:
            db.conn.executescript(_SCHEMA)

    # Definitions ---------------------------------------------------------------------

    def register(
        self,
        plugin_id: str,
        key: str,
        *,
        description: str = "",
        default: str | None = None,
        validate: Validator | None = None,
    ) -> ConfigKey:
        """Define `<plugin_id>.<key>`; the default must pass the validator."""
        check_key(key)
        name = f"{plugin_id}.{key}"
        if validate is not None and (
            not callable(validate) or inspect.iscoroutinefunction(validate)
        ):
            raise ConfigKeyError(f"{name}: validate= must be a plain (not async) callable")
        if default is not None:
            _check_value(name, default)
        definition = ConfigKey(name, plugin_id, key, description, default, validate)
        if default is not None:
            self._validate(definition, default)
        with self._lock:
            if name in self._keys:
                raise ConfigKeyError(f"config key {name!r} is already registered")
            self._keys[name] = definition
        with self._db.lock:
            self._db.conn.execute(
                "INSERT INTO config_keys (name, plugin, description, default_value, updated)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " description = excluded.description, default_value = excluded.default_value,"
                " updated = excluded.updated",
                (name, plugin_id, description, default, time.time()),
            )
        return definition

    def unregister_plugin(self, plugin_id: str) -> int:
        """Forget a plugin's in-memory definitions (stored values and defaults stay)."""
        with self._lock:
            gone = [n for n, k in self._keys.items() if k.plugin == plugin_id]
            for n in gone:
                del self._keys[n]
        return len(gone)

    def definition(self, name: str) -> ConfigKey | None:
        """The live definition of a key registered by an active plugin."""
        return self._keys.get(name)

    def _stored_definition(self, name: str) -> tuple[str, str | None] | None:
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT description, default_value FROM config_keys WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else (row[0], row[1])

    # Values --------------------------------------------------------------------------

    def _validate(self, key: ConfigKey, value: str) -> None:
        if key.validate is None:
            return
        try:
            ok = key.validate(value)
        except Exception as exc:
            raise ConfigKeyError(
                f"{key.name}: value {value!r} rejected by the plugin's validator: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if ok is False:
            raise ConfigKeyError(f"{key.name}: value {value!r} rejected by the plugin's validator")

    def stored(self, name: str, scope: str = GLOBAL) -> str | None:
        """The value stored at exactly `scope`, without fallback or default."""
        check_scope(scope)
        with self._db.lock:
            row = self._db.conn.execute(
                "SELECT value FROM config_values WHERE name = ? AND scope = ?", (name, scope)
            ).fetchone()
        return None if row is None else str(row[0])

    def resolve(self, name: str, scope: str = GLOBAL) -> tuple[str | None, str]:
        """(value, where it came from): the scope's value, else the global value, else the
        default (from the live definition or the stored one); `where` is the scope,
        "default", or "unset"."""
        split_name(name)
        for s in (scope,) if scope == GLOBAL else (scope, GLOBAL):
            value = self.stored(name, s)
            if value is not None:
                return value, s
        live = self._keys.get(name)
        default = live.default if live else (d[1] if (d := self._stored_definition(name)) else None)
        return (default, "default") if default is not None else (None, "unset")

    def get(self, name: str, scope: str = GLOBAL) -> str | None:
        """The value for `scope` (falling back to the global value, then the default)."""
        return self.resolve(name, scope)[0]

    def known(self, name: str) -> bool:
        """True when a plugin has ever registered `name` (now or in an earlier run)."""
        return name in self._keys or self._stored_definition(name) is not None

    def set(self, name: str, value: str, scope: str = GLOBAL) -> None:
        """Store a value after the registering plugin's validator accepts it."""
        check_scope(scope)
        split_name(name)
        key = self._keys.get(name)
        if key is None:
            why = (
                "its plugin is not active, and validators live in plugin code"
                if self.known(name)
                else "no plugin registered it"
            )
            raise ConfigKeyError(f"cannot set {name!r}: {why}")
        self._validate(key, _check_value(name, value))
        with self._db.lock:
            self._db.conn.execute(
                "INSERT INTO config_values (name, scope, value, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name, scope) DO UPDATE SET value = excluded.value,"
                " updated = excluded.updated",
                (name, scope, value, time.time()),
            )

    def unset(self, name: str, scope: str = GLOBAL) -> bool:
        """Remove the value stored at `scope`; True when there was one."""
        check_scope(scope)
        with self._db.lock:
            cur = self._db.conn.execute(
                "DELETE FROM config_values WHERE name = ? AND scope = ?", (name, scope)
            )
        return cur.rowcount > 0

    def list(self, scope: str | None = None, *, plugin: str | None = None) -> list[ConfigEntry]:
        """Every known key with its value: with `scope`, one row per key resolved for that
        scope; without, one row per stored (key, scope) plus defaults of keys never set."""
        if scope is not None:
            check_scope(scope)
        with self._db.lock:
            defs = {
                r[0]: (r[1], r[2], r[3])
                for r in self._db.conn.execute(
                    "SELECT name, plugin, description, default_value FROM config_keys"
                )
            }
            values = self._db.conn.execute(
                "SELECT name, scope, value FROM config_values ORDER BY name, scope"
            ).fetchall()
        for k in list(self._keys.values()):
            defs[k.name] = (k.plugin, k.description, k.default)
        names = sorted({*defs, *(v[0] for v in values)})
        if plugin is not None:
            names = [n for n in names if n.split(".", 1)[0] == plugin]
        out: list[ConfigEntry] = []
        for name in names:
            desc = defs.get(name, ("", "", None))[1]
            if scope is not None:
                value, where = self.resolve(name, scope)
                out.append(ConfigEntry(name, scope, value, where in ("default", "unset"), desc))
                continue
            rows = [v for v in values if v[0] == name]
            out += [ConfigEntry(name, s, val, False, desc) for _, s, val in rows]
            if not rows:
                out.append(ConfigEntry(name, GLOBAL, defs.get(name, ("", "", None))[2], True, desc))
        return out
