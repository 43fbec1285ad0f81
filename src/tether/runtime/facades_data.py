"""Plugin-facing facades for the data services: `ctx.config_keys`, `ctx.secrets`, `ctx.db`,
`ctx.memory` and `ctx.users`, plus the activation steps that build `ctx.config` from a
config model and apply a plugin's SQL migrations.

Every facade checks the plugin's grant before each operation (the membrane audits a
refusal) and scopes the operation to the plugin: config keys to `<plugin-id>.<key>`,
secrets to tokens the plugin made, SQL to the plugin's own file and tables.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.contract.errors import CapabilityViolationError, DbScopeViolationError
from tether.runtime.config import HostConfig
from tether.runtime.config_model import PluginConfigError, build_config
from tether.services.audit import AuditLog
from tether.services.config_keys import GLOBAL, ConfigEntry, ConfigKey, ConfigKeyError, ConfigKeys
from tether.services.database import Database
from tether.services.events import EventBus
from tether.services.memory import Memory, MemoryStore
from tether.services.migrations import SqlService, collect_migrations, table_prefix
from tether.services.secrets import MASTER_KEY_ENV, SecretBox, SecretError, master_key_loader
from tether.services.users import User, UserStore

if TYPE_CHECKING:
    from tether.authoring import Plugin
    from tether.runtime.context import Context

log = logging.getLogger("tether.data")


@dataclass(slots=True)
class DataServices:
    """The host's data services, shared by every plugin's facades."""

    config_keys: ConfigKeys
    secrets: SecretBox
    sql: SqlService
    memory: MemoryStore
    users: UserStore
    events: EventBus
    audit: AuditLog

    def forget(self, plugin_id: str) -> None:
        """A plugin went inactive: drop its live config-key definitions, close its SQL file."""
        self.config_keys.unregister_plugin(plugin_id)
        self.sql.close(plugin_id)

    def close(self) -> None:
        self.sql.close_all()


def open_data_services(
    config: HostConfig, db: Database, events: EventBus, audit: AuditLog
) -> DataServices:
    """Create the data services for a starting host.

    The master key is loaded now when one is configured (`$TETHER_MASTER_KEY` or
    `[host] master_key_file`), so a bad key is reported at start; the host still starts
    and only encryption fails, with the same message. With neither, the key file is
    `<data_dir>/master.key`, created on first use.
    """
    settings = config.policy.host
    env_key = os.environ.get(MASTER_KEY_ENV)
    key_file = (
        config.base_dir / settings.master_key_file
        if settings.master_key_file
        else config.data_dir / "master.key"
    )
    box = SecretBox(master_key_loader(env_key, key_file))
    if env_key or settings.master_key_file:
        try:
            box.load()
        except SecretError as exc:
            log.warning("%s", exc)
            audit.record("host", "secrets_unavailable", str(exc))
    return DataServices(
        config_keys=ConfigKeys(db),
        secrets=box,
        sql=SqlService(config.data_dir / "sql"),
        memory=MemoryStore(db),
        users=UserStore(db),
        events=events,
        audit=audit,
    )


def _data(ctx: Context) -> DataServices:
    data: DataServices | None = getattr(ctx._services, "data", None)
    if data is None:
        raise RuntimeError(f"plugin {ctx.plugin_id!r}: this host has no data services")
    return data


def _use(ctx: Context, capability: str, action: str) -> None:
    """Check the grant, then charge one operation to the plugin's rate limit."""
    ctx.require(capability, action)
    ctx._spend(action)


# Activation steps -------------------------------------------------------------------


def apply_config_model(plugin: Plugin, ctx: Context, table: dict[str, Any]) -> str | None:
    """Set `ctx.config` to the plugin's config model built from tether.toml and the
    environment; returns the problem (naming the variable) when it does not validate."""
    model = plugin.declared.config_model
    if model is None:
        return None
    try:
        ctx.config = build_config(ctx.plugin_id, model, table)
    except PluginConfigError as exc:
        return str(exc)
    return None


async def run_migrations(plugin: Plugin, ctx: Context, folder: Path | None) -> list[str]:
    """Apply the plugin's pending migrations before `on_load`; returns warnings.

    Raises `MigrationError` when one fails (the activation then fails). Without `db.sql`
    the migrations are skipped with a warning, like any declaration needing it.
    """
    migrations = collect_migrations(ctx.plugin_id, plugin.declared.migrations, folder)
    if not migrations:
        return []
    try:
        ctx.require("db.sql", "migrations")
    except CapabilityViolationError:
        return [f"{len(migrations)} migration(s) skipped: db.sql is not granted"]
    data = _data(ctx)
    handle = data.sql.handle(ctx.plugin_id)
    report = await asyncio.to_thread(handle.migrate, migrations)
    if report.applied:
        data.audit.record(
            ctx.plugin_id,
            "migrations",
            f"applied {', '.join(report.applied)}",
            applied=report.applied,
        )
    return report.warnings


# Facades ----------------------------------------------------------------------------


class PluginConfigKeys:
    """Per-scope config keys of this plugin (`config.register`): `<plugin-id>.<key>`."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def _name(self, key: str) -> str:
        return f"{self._ctx.plugin_id}.{key}"

    def _own(self, key: str, action: str) -> str:
        _use(self._ctx, "config.register", action)
        name = self._name(key)
        if _data(self._ctx).config_keys.definition(name) is None:
            raise ConfigKeyError(
                f"plugin {self._ctx.plugin_id!r}: config key {key!r} is not registered; "
                "call ctx.config_keys.register (or declare plugin.config_key) first"
            )
        return name

    def register(
        self,
        key: str,
        *,
        description: str = "",
        default: str | None = None,
        validate: Callable[[str], Any] | None = None,
    ) -> ConfigKey:
        """Define a key with its default and an optional validator `(value) -> bool`."""
        self._ctx.require("config.register", f"config key {key}")
        return _data(self._ctx).config_keys.register(
            self._ctx.plugin_id, key, description=description, default=default, validate=validate
        )

    async def get(self, key: str, *, scope: str = GLOBAL) -> str | None:
        """The value for `scope`, else the global value, else the default."""
        name = self._own(key, f"config.get {key}")
        return _data(self._ctx).config_keys.get(name, scope)

    async def set(self, key: str, value: str, *, scope: str = GLOBAL) -> None:
        """Store a value for `scope` after the key's validator accepts it."""
        name = self._own(key, f"config.set {key}")
        data = _data(self._ctx)
        data.config_keys.set(name, value, scope)
        data.audit.record(self._ctx.plugin_id, "config_set", f"{name} set", scope=scope)

    async def unset(self, key: str, *, scope: str = GLOBAL) -> bool:
        """Remove the value stored for `scope` (the default applies again)."""
        name = self._own(key, f"config.unset {key}")
        return _data(self._ctx).config_keys.unset(name, scope)

    async def list(self, *, scope: str | None = None) -> list[ConfigEntry]:
        """This plugin's keys with their values (see `ConfigKeys.list`)."""
        _use(self._ctx, "config.register", "config.list")
        return _data(self._ctx).config_keys.list(scope, plugin=self._ctx.plugin_id)


class PluginSecrets:
    """Encrypt and decrypt with the host's master key (`secrets.encrypt`).

    A token is bound to this plugin: another plugin's `decrypt` refuses it.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def encrypt(self, plaintext: str) -> str:
        """A versioned, base64 AES-256-GCM token for `plaintext` (fresh nonce each call)."""
        _use(self._ctx, "secrets.encrypt", "secrets.encrypt")
        try:
            token = _data(self._ctx).secrets.encrypt(self._ctx.plugin_id, plaintext)
        except SecretError as exc:
            raise SecretError(f"plugin {self._ctx.plugin_id!r}: {exc}") from None
        log.debug("plugin %s encrypted a secret (%d characters)", self._ctx.plugin_id, len(token))
        return token

    def decrypt(self, token: str) -> str:
        """The plaintext of a token this plugin made; `SecretError` for anything else."""
        _use(self._ctx, "secrets.encrypt", "secrets.decrypt")
        data = _data(self._ctx)
        try:
            return data.secrets.decrypt(self._ctx.plugin_id, token)
        except SecretError as exc:
            # The record says that a token failed, never what it or its plaintext was.
            data.audit.record(self._ctx.plugin_id, "secret_rejected", "a secret token failed")
            log.warning("plugin %s: a secret token failed to decrypt", self._ctx.plugin_id)
            raise SecretError(f"plugin {self._ctx.plugin_id!r}: {exc}") from None


Row = tuple[Any, ...]
Params = Sequence[Any] | dict[str, Any]


class PluginDb:
    """SQL on the plugin's own SQLite file (`db.sql`); tables must start with `prefix`.

    Each call is one statement and one transaction, run off the event loop with the
    plugin's time limit. Anything outside the plugin's tables raises
    `DbScopeViolationError`.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    @property
    def prefix(self) -> str:
        """The table prefix: the plugin id with `-` as `_`, then `_` (`weather_`)."""
        return table_prefix(self._ctx.plugin_id)

    async def _run(self, sql: str, params: Params, fetch: str) -> Any:
        ctx = self._ctx
        _use(ctx, "db.sql", "db." + ("execute" if fetch == "none" else "fetch" + fetch))
        data = _data(ctx)
        handle = data.sql.handle(ctx.plugin_id)
        try:
            return await asyncio.to_thread(
                handle.run, sql, params, fetch=fetch, timeout_s=ctx._timeout_ms / 1000
            )
        except DbScopeViolationError as exc:
            data.audit.record(ctx.plugin_id, "capability_violation", str(exc), capability="db.sql")
            raise

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; returns the number of rows changed (-1 for DDL)."""
        result: int = await self._run(sql, params, "none")
        return result

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row of a query, as tuples."""
        rows: list[Row] = await self._run(sql, params, "all")
        return rows

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """The first row of a query (or of `INSERT ... RETURNING`), or None."""
        row: Row | None = await self._run(sql, params, "one")
        return row


class PluginMemory:
    """Users' memories (`memory.read`, `memory.write`); every call names its user and sees
    only that user's memories."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def _emit(self, event: str, memory: Memory) -> None:
        # No content in the event: every events.subscribe plugin sees it, for any user.
        _data(self._ctx).events.emit(
            event,
            {"id": memory.id, "user": memory.user, "type": memory.type,
             "importance": memory.importance, "plugin": self._ctx.plugin_id},
            source=self._ctx.plugin_id,
        )  # fmt: skip

    async def create(self, user: str, content: str, type: str, importance: int = 5) -> int:
        """Store a memory (type episodic, semantic or procedural; importance 1-10); its id."""
        _use(self._ctx, "memory.write", "memory.create")
        memory = _data(self._ctx).memory.create(
            user, content, type, importance, source=self._ctx.plugin_id
        )
        self._emit("memory.created", memory)
        return memory.id

    async def update(
        self,
        memory_id: int,
        *,
        user: str,
        content: str | None = None,
        type: str | None = None,
        importance: int | None = None,
    ) -> Memory:
        """Change a memory of `user`; KeyError when that user has no such memory."""
        _use(self._ctx, "memory.write", "memory.update")
        memory = _data(self._ctx).memory.update(
            user, memory_id, content=content, type=type, importance=importance
        )
        self._emit("memory.updated", memory)
        return memory

    async def delete(self, memory_id: int, *, user: str) -> bool:
        """Remove a memory of `user`; True when there was one."""
        _use(self._ctx, "memory.write", "memory.delete")
        return _data(self._ctx).memory.delete(user, memory_id)

    async def get(self, memory_id: int, *, user: str) -> Memory | None:
        """A memory of `user` by id, or None."""
        _use(self._ctx, "memory.read", "memory.get")
        return _data(self._ctx).memory.get(user, memory_id)

    async def search(
        self, user: str, query: str, limit: int = 5, *, type: str | None = None
    ) -> list[Memory]:
        """`user`'s memories best matching `query` (full-text, weighted by importance)."""
        _use(self._ctx, "memory.read", "memory.search")
        return _data(self._ctx).memory.search(user, query, limit, type=type)


class PluginUsers:
    """Read users and their preferences from the host's user store (`users.read`)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def get(self, user_id: str) -> User | None:
        """The user, or None."""
        _use(self._ctx, "users.read", "users.get")
        return _data(self._ctx).users.get(user_id)

    async def preferences(self, user_id: str) -> dict[str, Any]:
        """The user's preferences ({} for an unknown user)."""
        _use(self._ctx, "users.read", "users.preferences")
        return _data(self._ctx).users.preferences(user_id)
