"""Scoped SQL for plugins (`db.sql`): one SQLite file per plugin, an authorizer that keeps
every statement on the plugin's own tables, and ordered, resumable migrations.

Why a file per plugin (`<data_dir>/sql/<plugin-id>.db`) rather than one connection per
plugin on the host's `tether.db`: SQLite has one writer per file, so a plugin's slow write
cannot stall the host's audit and storage writes; isolation does not rest on the
authorizer alone (the host's tables and other plugins' tables are simply not in the file,
and ATTACH is refused); a migration and its `_migrations` record commit in one transaction;
and a plugin's data is one file to back up or delete. The authorizer still requires the
plugin's table prefix, so every name a plugin creates is unambiguous wherever it ends up.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.contract.errors import DbScopeViolationError, TetherError

MIGRATION_NAME = re.compile(r"^[0-9]{4}_[A-Za-z0-9_]{1,60}$")
_LEAD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*([A-Za-z]+)", re.S)
_DDL = frozenset({"CREATE", "DROP", "ALTER", "ANALYZE"})
_SCHEMA_TABLES = frozenset(
    {"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"}
)
_INTERNAL = frozenset(
    {"sqlite_sequence", "sqlite_stat1", "sqlite_stat2", "sqlite_stat3", "sqlite_stat4"}
)
_READABLE = _SCHEMA_TABLES | _INTERNAL | {"json_each", "json_tree"}
# Pragmas that only read; the first group takes a table or index name as argument.
_PRAGMAS_WITH_ARG = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
_PRAGMAS_READ = frozenset(
    {"data_version", "user_version", "schema_version", "page_count", "page_size",
     "freelist_count", "table_list", "integrity_check", "quick_check", "foreign_key_check",
     "compile_options", "collation_list", "encoding"}
)  # fmt: skip
_VTABLE_MODULES = frozenset({"fts5", "fts4", "fts3", "rtree"})
_BLOCKED_FUNCTIONS = frozenset(
    {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
)

A = sqlite3
_NAME_FIRST = {A.SQLITE_CREATE_TABLE, A.SQLITE_CREATE_TEMP_TABLE, A.SQLITE_CREATE_VIEW,
               A.SQLITE_CREATE_TEMP_VIEW, A.SQLITE_DROP_TABLE, A.SQLITE_DROP_TEMP_TABLE,
               A.SQLITE_DROP_VIEW, A.SQLITE_DROP_TEMP_VIEW, A.SQLITE_DROP_VTABLE}  # fmt: skip
_NAME_ON_TABLE = {A.SQLITE_CREATE_INDEX, A.SQLITE_CREATE_TEMP_INDEX, A.SQLITE_CREATE_TRIGGER,
                  A.SQLITE_CREATE_TEMP_TRIGGER, A.SQLITE_DROP_INDEX, A.SQLITE_DROP_TEMP_INDEX,
                  A.SQLITE_DROP_TRIGGER, A.SQLITE_DROP_TEMP_TRIGGER}  # fmt: skip
_WRITES = {A.SQLITE_INSERT, A.SQLITE_UPDATE, A.SQLITE_DELETE}
_NO_SUCH_TABLE = re.compile(r"no such table: (\S+)")


class MigrationError(TetherError):
    """A plugin migration is misnamed, duplicated or failed to apply."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration: `name` like `0001_init`, its SQL, and where it came from."""

    name: str
    sql: str
    origin: str = "plugin.migration()"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(slots=True)
class MigrationReport:
    """What `migrate` did: names applied now, names already applied, warnings."""

    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def table_prefix(plugin_id: str) -> str:
    """The prefix every table of the plugin carries: `weather-pro` -> `weather_pro_`."""
    return plugin_id.replace("-", "_") + "_"


def leading_keyword(sql: str) -> str | None:
    """The statement's first keyword, past whitespace and comments (upper case)."""
    m = _LEAD.match(sql)
    return m.group(1).upper() if m else None


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (trigger bodies with `;` stay whole)."""
    out: list[str] = []
    buf = ""
    for piece in sql.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            out.append(buf)
            buf = ""
    if buf.strip(" \t\r\n;"):
        out.append(buf.rstrip(";"))
    return [s.strip() for s in out if leading_keyword(s) is not None]


def collect_migrations(
    plugin_id: str, declared: Sequence[tuple[str, str]], folder: Path | None
) -> list[Migration]:
    """Declared migrations plus `<folder>/migrations/NNNN_name.sql`, sorted by name."""
    found: dict[str, Migration] = {}
    items = [Migration(n, s) for n, s in declared]
    mdir = folder / "migrations" if folder is not None else None
    if mdir is not None and mdir.is_dir():
        for path in sorted(mdir.glob("*.sql")):
            items.append(Migration(path.stem, path.read_text(encoding="utf-8"), str(path)))
    for m in items:
        if not MIGRATION_NAME.fullmatch(m.name):
            raise MigrationError(
                f"plugin {plugin_id!r}: migration name {m.name!r} ({m.origin}) must be four "
                "digits, an underscore and a name, like '0001_init'"
            )
        if m.name in found:
            raise MigrationError(
                f"plugin {plugin_id!r}: migration {m.name!r} is defined twice "
                f"({found[m.name].origin} and {m.origin}); give each migration its own number"
            )
        found[m.name] = m
    return [found[n] for n in sorted(found)]


class ScopedSql:
    """One plugin's connection. Each call is one statement in its own transaction."""

    def __init__(self, plugin_id: str, path: Path) -> None:
        self.plugin_id = plugin_id
        self.prefix = table_prefix(plugin_id)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # No statement cache: a statement is authorized when prepared, so a cached one
        # prepared for the host could otherwise be reused by plugin SQL unchecked.
        self._conn = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, cached_statements=0
        )
        self._lock = threading.RLock()
        self._trusted = True
        self._ddl = False
        self._denied: str | None = None
        self._deadline: float | None = None
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS _migrations ("
            " name TEXT PRIMARY KEY, checksum TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        self._conn.set_authorizer(self._authorize)
        self._conn.set_progress_handler(self._progress, 2_000)
        self._trusted = False

    # The authorizer -----------------------------------------------------------------

    def _own(self, name: str | None) -> bool:
        return (
            name is not None
            and len(name) > len(self.prefix)
            and name.lower().startswith(self.prefix)
        )

    def _authorize(
        self, action: int, a1: str | None, a2: str | None, db: str | None, trigger: str | None
    ) -> int:
        if self._trusted:
            return sqlite3.SQLITE_OK
        why = self._judge(action, a1, a2, db)
        if why is None:
            return sqlite3.SQLITE_OK
        if self._denied is None:
            self._denied = why
        return sqlite3.SQLITE_DENY

    def _judge(self, action: int, a1: str | None, a2: str | None, db: str | None) -> str | None:
        """None to allow, else why the statement is refused."""
        if action in (A.SQLITE_SELECT, A.SQLITE_RECURSIVE):
            return None
        t = (a1 or "").lower()
        if action == A.SQLITE_READ:
            # db is None for a common table expression's own name, which is not a table.
            ok = db is None or self._own(a1) or t in _READABLE or t.startswith("pragma_")
            return None if ok else f"reading table {a1!r}"
        if action in _WRITES:
            # SQLite itself updates sqlite_schema when a statement first uses a table-valued
            # function; a direct UPDATE of it still fails (writable_schema is refused).
            implicit = action == A.SQLITE_UPDATE and t in _SCHEMA_TABLES
            ok = (
                self._own(a1) or implicit or (self._ddl and (t in _SCHEMA_TABLES or t in _INTERNAL))
            )
            return None if ok else f"writing table {a1!r}"
        if action in _NAME_FIRST:
            ok = self._own(a1) or (self._ddl and (a1 or "").lower() in _INTERNAL)
            return None if ok else f"creating or dropping {a1!r}"
        if action in _NAME_ON_TABLE:
            named = self._own(a1) or (a1 or "").startswith("sqlite_autoindex_")
            return None if named and self._own(a2) else f"index or trigger {a1!r} on {a2!r}"
        if action == A.SQLITE_CREATE_VTABLE:
            if (a2 or "").lower() not in _VTABLE_MODULES:
                return (
                    f"virtual table module {a2!r} (allowed: {', '.join(sorted(_VTABLE_MODULES))})"
                )
            return None if self._own(a1) else f"creating virtual table {a1!r}"
        if action == A.SQLITE_ALTER_TABLE:
            return None if self._own(a2) else f"altering table {a2!r}"
        if action == A.SQLITE_REINDEX:
            return (
                None if self._own(a1) or (a1 or "").startswith("sqlite_autoindex_") else "REINDEX"
            )
        if action == A.SQLITE_ANALYZE:
            return None if a1 is None or self._own(a1) else f"ANALYZE {a1!r}"
        if action == A.SQLITE_FUNCTION:
            return f"function {a2}()" if (a2 or "").lower() in _BLOCKED_FUNCTIONS else None
        if action == A.SQLITE_PRAGMA:
            name = (a1 or "").lower()
            if name in _PRAGMAS_WITH_ARG or (name in _PRAGMAS_READ and a2 is None):
                return None
            return f"PRAGMA {name}" + ("" if a2 is None else f" = {a2}")
        if action in (A.SQLITE_ATTACH, A.SQLITE_DETACH):
            return "ATTACH/DETACH"
        if action in (A.SQLITE_TRANSACTION, A.SQLITE_SAVEPOINT):
            return "transaction control (each call is already one transaction)"
        return f"SQLite action {action}"

    def _progress(self) -> int:
        deadline = self._deadline
        return 1 if deadline is not None and time.monotonic() > deadline else 0

    def _check_schema(self) -> None:
        """After DDL: every object in the schema must carry the prefix (catches renames,
        whose new name the authorizer is not told)."""
        rows = self._trusted_fetch(
            "SELECT name FROM sqlite_schema UNION ALL SELECT name FROM sqlite_temp_schema"
        )
        for (name,) in rows:
            if name == "_migrations" or name.startswith("sqlite_") or self._own(name):
                continue
            raise DbScopeViolationError(self.plugin_id, f"the schema would contain {name!r}")

    # Running statements --------------------------------------------------------------

    def _trusted_fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self._trusted = True
        try:
            return self._conn.execute(sql, params).fetchall()
        finally:
            self._trusted = False

    def _statement(self, sql: str, params: Sequence[Any] | dict[str, Any], fetch: str) -> Any:
        """Run one plugin statement inside the caller's transaction; translate refusals."""
        if not isinstance(sql, str):
            raise TypeError("SQL must be a str")
        self._ddl = leading_keyword(sql) in _DDL
        self._denied = None
        try:
            cur = self._conn.execute(sql, params)
            if fetch == "all":
                result: Any = cur.fetchall()
            elif fetch == "one":
                result = cur.fetchone()
            else:
                result = cur.rowcount
            cur.close()
        except sqlite3.DatabaseError as exc:
            if self._denied is not None:
                raise DbScopeViolationError(self.plugin_id, self._denied) from None
            if "may not be modified" in str(exc):
                raise DbScopeViolationError(self.plugin_id, str(exc)) from None
            missing = _NO_SUCH_TABLE.search(str(exc))
            if missing and not self._own(missing.group(1).rsplit(".", 1)[-1]):
                # Other plugins' and the host's tables are not in this file at all; naming
                # one is still a scope violation, not a typo.
                raise DbScopeViolationError(
                    self.plugin_id, f"table {missing.group(1)!r} is not one of its tables"
                ) from None
            if "interrupted" in str(exc) and self._deadline is not None:
                raise TimeoutError(
                    f"plugin {self.plugin_id!r}: SQL statement ran past its time limit and was "
                    "stopped; add an index or fetch less"
                ) from None
            raise
        if self._ddl:
            self._check_schema()
        return result

    def run(
        self,
        sql: str,
        params: Sequence[Any] | dict[str, Any] = (),
        *,
        fetch: str = "none",
        timeout_s: float = 30.0,
    ) -> Any:
        """Run one statement as one transaction: rowcount (`fetch="none"`), one row
        (`"one"`) or every row (`"all"`) as tuples."""
        with self._lock:
            self._trusted_fetch("BEGIN")
            try:
                self._deadline = time.monotonic() + timeout_s
                result = self._statement(sql, params, fetch)
                self._deadline = None
                self._trusted_fetch("COMMIT")
            except BaseException:
                self._deadline = None
                if self._conn.in_transaction:
                    self._trusted_fetch("ROLLBACK")
                raise
        return result

    # Migrations ----------------------------------------------------------------------

    def applied(self) -> dict[str, str]:
        """`<plugin-id>_<name>` -> checksum of every migration applied to this file."""
        with self._lock:
            return dict(self._trusted_fetch("SELECT name, checksum FROM _migrations"))

    def migrate(
        self, migrations: Sequence[Migration], *, timeout_s: float = 60.0
    ) -> MigrationReport:
        """Apply, in order, each migration not yet recorded; each in its own transaction.
        The first failure raises `MigrationError`; those before it stay applied."""
        report = MigrationReport()
        done = self.applied()
        for m in migrations:
            full = f"{self.plugin_id}_{m.name}"
            if full in done:
                report.skipped.append(m.name)
                if done[full] != m.checksum:
                    report.warnings.append(
                        f"migration {m.name} changed after it was applied; it is not applied "
                        "again: add a new migration for further changes"
                    )
                continue
            with self._lock:
                self._trusted_fetch("BEGIN IMMEDIATE")
                try:
                    for stmt in split_statements(m.sql):
                        self._deadline = time.monotonic() + timeout_s
                        self._statement(stmt, (), "none")
                    self._deadline = None
                    self._trusted_fetch(
                        "INSERT INTO _migrations (name, checksum, applied_at) VALUES (?, ?, ?)",
                        (full, m.checksum, time.time()),
                    )
                    self._trusted_fetch("COMMIT")
                except Exception as exc:
                    self._deadline = None
                    if self._conn.in_transaction:
                        self._trusted_fetch("ROLLBACK")
                    raise MigrationError(
                        f"plugin {self.plugin_id!r}: migration {m.name} ({m.origin}) failed: "
                        f"{type(exc).__name__}: {exc}. Migrations before it stay applied; fix it "
                        "and restart, and the host continues from this one"
                    ) from exc
            report.applied.append(m.name)
        return report

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class SqlService:
    """Opens each plugin's `ScopedSql` on first use and closes them all at stop."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._handles: dict[str, ScopedSql] = {}
        self._lock = threading.Lock()

    def path_for(self, plugin_id: str) -> Path:
        return self.directory / f"{plugin_id}.db"

    def handle(self, plugin_id: str) -> ScopedSql:
        """The plugin's connection (opened, and its file created, on first use)."""
        with self._lock:
            h = self._handles.get(plugin_id)
            if h is None:
                h = self._handles[plugin_id] = ScopedSql(plugin_id, self.path_for(plugin_id))
            return h

    def close(self, plugin_id: str) -> None:
        with self._lock:
            h = self._handles.pop(plugin_id, None)
        if h is not None:
            h.close()

    def close_all(self) -> None:
        with self._lock:
            handles, self._handles = list(self._handles.values()), {}
        for h in handles:
            h.close()
