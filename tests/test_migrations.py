"""Scoped SQL (`db.sql`): a file per plugin, the table-prefix authorizer, and migrations that
apply in order before on_load, once each, and resume after a failure."""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import write_policy
from tether import CapabilityViolationError, Context, DbScopeViolationError, Host, Plugin, State
from tether.services.migrations import (
    Migration,
    MigrationError,
    ScopedSql,
    collect_migrations,
    split_statements,
    table_prefix,
)

SQL_CAPS = ["db.sql"]


def sql_plugin(pid: str = "weather", **declared: str) -> Plugin:
    p = Plugin(id=pid, name=pid.title(), capabilities=SQL_CAPS)
    for name, sql in declared.items():
        p.migration(name, sql)
    return p


def host_for(tmp_path: Path, *plugins: Plugin) -> Host:
    write_policy(tmp_path, "[host]\nentry_points = false\nplugin_dirs = []\n")
    return Host(tmp_path / "tether.toml", plugins=list(plugins))


def raw_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read a plugin's file directly, as an operator would (no authorizer)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# The authorizer ----------------------------------------------------------------------


@pytest.fixture
def scoped(tmp_path: Path) -> ScopedSql:
    handle = ScopedSql("weather-pro", tmp_path / "weather-pro.db")
    handle.migrate(
        [
            Migration(
                "0001_init",
                "CREATE TABLE weather_pro_readings (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " city TEXT NOT NULL, temp REAL);"
                "CREATE INDEX weather_pro_readings_city ON weather_pro_readings (city);",
            )
        ]
    )
    return handle


def test_prefix_is_the_id_with_underscores() -> None:
    assert table_prefix("weather") == "weather_"
    assert table_prefix("weather-pro") == "weather_pro_"


@pytest.mark.parametrize(
    ("sql", "detail"),
    [
        ("SELECT * FROM _migrations", "reading table '_migrations'"),
        ("SELECT * FROM kv", "table 'kv' is not one of its tables"),
        ("CREATE TABLE readings (x)", "creating or dropping 'readings'"),
        ("CREATE TABLE weather_x (x)", "creating or dropping 'weather_x'"),  # wrong prefix
        ("CREATE TEMP TABLE scratch (x)", "creating or dropping 'scratch'"),
        ("INSERT INTO sqlite_master VALUES ('table', 'x', 'x', 0, '')", "sqlite_master"),
        ("UPDATE sqlite_master SET sql = ''", "sqlite_master"),
        ("DELETE FROM sqlite_sequence", "writing table 'sqlite_sequence'"),
        ("ATTACH DATABASE ':memory:' AS other", "ATTACH/DETACH"),
        ("PRAGMA user_version = 7", "PRAGMA user_version = 7"),
        ("PRAGMA writable_schema = ON", "PRAGMA writable_schema"),
        ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode"),
        ("BEGIN", "transaction control"),
        ("SAVEPOINT s1", "transaction control"),
        ("DROP TABLE _migrations", "creating or dropping '_migrations'"),
        ("ALTER TABLE weather_pro_readings RENAME TO audit", "'audit'"),
        ("CREATE INDEX weather_pro_i ON _migrations (name)", "on '_migrations'"),
        ("SELECT load_extension('/tmp/x')", "load_extension"),
        ("SELECT * FROM dbstat", "reading table 'dbstat'"),
        ("CREATE TABLE weather_pro_copy AS SELECT * FROM _migrations", "'_migrations'"),
    ],
)
def test_statements_outside_the_prefix_are_refused(
    scoped: ScopedSql, sql: str, detail: str
) -> None:
    with pytest.raises(DbScopeViolationError) as caught:
        scoped.run(sql, fetch="all")
    exc = caught.value
    assert isinstance(exc, CapabilityViolationError)
    assert exc.capability == "db.sql"
    assert detail in str(exc)
    assert "'weather-pro'" in str(exc) and "weather_pro_..." in str(exc)
    # Nothing changed: the schema still holds only the plugin's objects.
    names = {r[0] for r in raw_rows(scoped.path, "SELECT name FROM sqlite_master")}
    assert names == {
        "_migrations",
        "sqlite_autoindex__migrations_1",
        "sqlite_sequence",
        "weather_pro_readings",
        "weather_pro_readings_city",
    }


def test_own_tables_allow_the_usual_sql(scoped: ScopedSql) -> None:
    assert scoped.run("INSERT INTO weather_pro_readings (city, temp) VALUES (?, ?)", ("Oslo", 3.5))
    row = scoped.run(
        "INSERT INTO weather_pro_readings (city, temp) VALUES (:c, :t) RETURNING id",
        {"c": "Rome", "t": 19.0},
        fetch="one",
    )
    assert row == (2,)
    assert scoped.run("SELECT city FROM weather_pro_readings ORDER BY id", fetch="all") == [
        ("Oslo",),
        ("Rome",),
    ]
    # CTEs, JSON table functions, read-only pragmas, FTS5 and triggers on own tables.
    cte = (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 4)"
        " SELECT sum(x) FROM n"
    )
    assert scoped.run(cte, fetch="one") == (10,)
    assert scoped.run("SELECT value FROM json_each('[1, 2]')", fetch="all") == [(1,), (2,)]
    assert scoped.run("PRAGMA table_info(weather_pro_readings)", fetch="all")[1][1] == "city"
    scoped.run("CREATE VIRTUAL TABLE weather_pro_notes USING fts5(body)")
    scoped.run(
        "CREATE TRIGGER weather_pro_note AFTER INSERT ON weather_pro_readings"
        " BEGIN INSERT INTO weather_pro_notes (body) VALUES (new.city || ' reading'); END"
    )
    scoped.run("INSERT INTO weather_pro_readings (city) VALUES ('Bergen')")
    hits = scoped.run(
        "SELECT body FROM weather_pro_notes WHERE weather_pro_notes MATCH 'bergen'", fetch="all"
    )
    assert hits == [("Bergen reading",)]
    assert scoped.run("ALTER TABLE weather_pro_readings RENAME TO weather_pro_obs") == -1
    assert scoped.run("SELECT count(*) FROM weather_pro_obs", fetch="one") == (3,)


def test_a_runaway_query_is_stopped_at_the_time_limit(scoped: ScopedSql) -> None:
    forever = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT max(x) FROM n"
    with pytest.raises(TimeoutError, match="time limit"):
        scoped.run(forever, fetch="one", timeout_s=0.2)
    assert scoped.run("SELECT 1", fetch="one") == (1,)  # the connection is still usable


def test_one_statement_per_call(scoped: ScopedSql) -> None:
    with pytest.raises(sqlite3.ProgrammingError):
        scoped.run("SELECT 1; DROP TABLE weather_pro_readings")
    assert scoped.run("SELECT count(*) FROM weather_pro_readings", fetch="one") == (0,)


# Migration files and names -----------------------------------------------------------


def test_split_statements_keeps_trigger_bodies_whole() -> None:
    script = textwrap.dedent(
        """
        -- first
        CREATE TABLE w_a (x);
        CREATE TRIGGER w_t AFTER INSERT ON w_a BEGIN SELECT 1; SELECT 2; END;
        /* trailing */ INSERT INTO w_a VALUES ('a;b')
        """
    )
    parts = split_statements(script)
    assert len(parts) == 3
    assert parts[1].endswith("END;")
    assert "'a;b'" in parts[2]


def test_collect_sorts_declared_and_folder_migrations(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0002_more.sql").write_text("SELECT 2")
    (tmp_path / "migrations" / "notes.txt").write_text("ignored")
    found = collect_migrations(
        "w", [("0003_last", "SELECT 3"), ("0001_init", "SELECT 1")], tmp_path
    )
    assert [m.name for m in found] == ["0001_init", "0002_more", "0003_last"]
    assert found[1].origin.endswith("0002_more.sql")


@pytest.mark.parametrize(
    ("declared", "files", "message"),
    [
        ([("init", "SELECT 1")], [], "must be four digits"),
        ([], ["1_init.sql"], "must be four digits"),
        ([("0001_init", "SELECT 1")], ["0001_init.sql"], "defined twice"),
    ],
)
def test_bad_migration_names_are_refused(
    tmp_path: Path, declared: list[tuple[str, str]], files: list[str], message: str
) -> None:
    (tmp_path / "migrations").mkdir()
    for f in files:
        (tmp_path / "migrations" / f).write_text("SELECT 1")
    with pytest.raises(MigrationError, match=message):
        collect_migrations("w", declared, tmp_path)


# Migrations through the host ---------------------------------------------------------


async def test_migrations_run_before_on_load_and_are_recorded(tmp_path: Path) -> None:
    p = sql_plugin(
        **{
            "0001_init": "CREATE TABLE weather_readings (id INTEGER PRIMARY KEY, city TEXT);",
            "0002_seed": "INSERT INTO weather_readings (city) VALUES ('Oslo'), ('Rome');",
        }
    )
    seen: list[object] = []

    @p.on_load
    async def load(ctx: Context) -> None:
        seen.append(await ctx.db.fetchall("SELECT city FROM weather_readings ORDER BY id"))

    async with host_for(tmp_path, p) as host:
        assert host.records["weather"].state is State.ACTIVE
        assert seen == [[("Oslo",), ("Rome",)]]
        assert p.context.db.prefix == "weather_"
        (audit,) = host.audit.read(plugin="weather", kind="migrations")
        assert audit.detail["applied"] == ["0001_init", "0002_seed"]
    db = tmp_path / ".tether" / "sql" / "weather.db"
    assert raw_rows(db, "SELECT name FROM _migrations ORDER BY name") == [
        ("weather_0001_init",),
        ("weather_0002_seed",),
    ]
    # The host's own database holds none of the plugin's tables.
    host_tables = raw_rows(tmp_path / ".tether" / "tether.db", "SELECT name FROM sqlite_master")
    assert "weather_readings" not in {r[0] for r in host_tables}

    # A restart applies nothing again (a re-run of 0002 would duplicate the rows).
    async with host_for(tmp_path, p) as host:
        assert host.records["weather"].state is State.ACTIVE
        assert host.audit.read(plugin="weather", kind="migrations") != []  # only the old one
        assert len(host.audit.read(plugin="weather", kind="migrations")) == 1
    assert raw_rows(db, "SELECT count(*) FROM weather_readings") == [(2,)]


async def test_a_failing_migration_stops_the_load_and_the_next_start_resumes(
    tmp_path: Path,
) -> None:
    good = "CREATE TABLE weather_a (x INTEGER);"
    # Two statements: the first succeeds, the second fails, so the whole migration must
    # roll back (no weather_b left behind) for the retry to succeed.
    broken = "CREATE TABLE weather_b (x INTEGER); INSERT INTO weather_missing VALUES (1);"
    fixed = "CREATE TABLE weather_b (x INTEGER); INSERT INTO weather_b VALUES (1);"
    loads: list[str] = []

    def make(second: str) -> Plugin:
        p = sql_plugin(
            **{"0001_a": good, "0002_b": second, "0003_c": "INSERT INTO weather_a VALUES (3);"}
        )
        p.on_load(lambda ctx: loads.append("loaded"))
        return p

    async with host_for(tmp_path, make(broken)) as host:
        rec = host.records["weather"]
        assert rec.state is State.ERROR
        assert rec.reason is not None and rec.reason.value == "activation_failed"
        assert rec.error is not None
        assert "migration 0002_b" in rec.error and "weather_missing" in rec.error
        assert "continues from this one" in rec.error
        assert loads == []  # on_load never ran
    db = tmp_path / ".tether" / "sql" / "weather.db"
    assert raw_rows(db, "SELECT name FROM _migrations") == [("weather_0001_a",)]
    tables = {r[0] for r in raw_rows(db, "SELECT name FROM sqlite_master")}
    assert "weather_a" in tables and "weather_b" not in tables

    async with host_for(tmp_path, make(fixed)) as host:
        assert host.records["weather"].state is State.ACTIVE
        assert loads == ["loaded"]
    assert raw_rows(db, "SELECT name FROM _migrations ORDER BY name") == [
        ("weather_0001_a",),
        ("weather_0002_b",),
        ("weather_0003_c",),
    ]
    assert raw_rows(db, "SELECT x FROM weather_a") == [(3,)]


async def test_a_migration_outside_the_prefix_fails_that_plugin_only(tmp_path: Path) -> None:
    bad = sql_plugin("weather", **{"0001_init": "CREATE TABLE kv (x);"})
    fine = sql_plugin("notes", **{"0001_init": "CREATE TABLE notes_items (x);"})
    async with host_for(tmp_path, bad, fine) as host:
        rec = host.records["weather"]
        assert rec.state is State.ERROR
        assert rec.error is not None and "SQL refused" in rec.error and "'kv'" in rec.error
        assert host.records["notes"].state is State.ACTIVE


async def test_migrations_need_db_sql(tmp_path: Path) -> None:
    p = Plugin(id="weather", name="Weather", capabilities=[])
    p.migration("0001_init", "CREATE TABLE weather_x (x);")
    async with host_for(tmp_path, p) as host:
        rec = host.records["weather"]
        assert rec.state is State.ACTIVE
        assert rec.warnings == ["1 migration(s) skipped: db.sql is not granted"]
        with pytest.raises(CapabilityViolationError, match=r"db.sql"):
            await p.context.db.execute("SELECT 1")
    assert not (tmp_path / ".tether" / "sql" / "weather.db").exists()


async def test_folder_migrations_and_changed_migration_warning(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    folder = make_plugin(
        "weather",
        "from tether import Plugin\nplugin = Plugin()\n"
        "plugin.migration('0002_seed', \"INSERT INTO weather_r VALUES ('x')\")\n",
        capabilities=["db.sql"],
    )
    (folder / "migrations").mkdir()
    first = folder / "migrations" / "0001_init.sql"
    first.write_text("CREATE TABLE weather_r (v TEXT);\n")
    write_policy(tmp_path, '[host]\nentry_points = false\n[plugins.weather]\ngrant = ["db.sql"]\n')
    async with Host(tmp_path / "tether.toml") as host:
        assert host.records["weather"].state is State.ACTIVE
        ctx = host.records["weather"].context
        assert ctx is not None
        assert await ctx.db.fetchall("SELECT v FROM weather_r") == [("x",)]
    first.write_text("CREATE TABLE weather_r (v TEXT, w TEXT);\n")
    async with Host(tmp_path / "tether.toml") as host:
        rec = host.records["weather"]
        assert rec.state is State.ACTIVE
        assert any("0001_init changed after it was applied" in w for w in rec.warnings)


async def test_each_plugin_has_its_own_file_and_violations_are_audited(tmp_path: Path) -> None:
    a = sql_plugin("alpha", **{"0001_init": "CREATE TABLE alpha_t (v TEXT);"})
    b = sql_plugin("beta", **{"0001_init": "CREATE TABLE beta_t (v TEXT);"})
    async with host_for(tmp_path, a, b) as host:
        await a.context.db.execute("INSERT INTO alpha_t VALUES (?)", ("secret-a",))
        # beta cannot name alpha's table: it is outside beta's prefix (and not in its file).
        with pytest.raises(DbScopeViolationError, match="'alpha_t'"):
            await b.context.db.fetchall("SELECT v FROM alpha_t")
        with pytest.raises(DbScopeViolationError, match="'kv'"):
            await b.context.db.fetchall("SELECT * FROM kv")
        with pytest.raises(DbScopeViolationError, match="'audit'"):
            await b.context.db.execute("DELETE FROM audit")
        assert await b.context.db.fetchone("SELECT count(*) FROM beta_t") == (0,)
        records = host.audit.read(plugin="beta", kind="capability_violation")
        assert len(records) == 3 and all(r.detail["capability"] == "db.sql" for r in records)
    sql_dir = tmp_path / ".tether" / "sql"
    assert sorted(p.name for p in sql_dir.glob("*.db")) == ["alpha.db", "beta.db"]
    assert raw_rows(sql_dir / "alpha.db", "SELECT v FROM alpha_t") == [("secret-a",)]
