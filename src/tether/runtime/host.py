"""The `Host`: discovers, checks, orders, activates and tears down plugins, and is the
embedding API (`async with Host(...) as host:`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from types import CodeType
from typing import Any

from tether.authoring import Plugin
from tether.contract.errors import (
    NameClashError,
    RefusalReason,
    SchemaError,
    ToolInputError,
)
from tether.contract.policy import Policy, resolve
from tether.runtime import inprocess, tiers
from tether.runtime.activation import apply_declarations, run_lifecycle
from tether.runtime.config import HostConfig, load_config
from tether.runtime.context import Context, HostServices
from tether.runtime.discovery import (
    Candidate,
    code_candidate,
    discover_folders,
    discover_packages,
    mark_duplicates,
    rescan,
)
from tether.runtime.facades_data import apply_config_model, open_data_services, run_migrations
from tether.runtime.hooks import Hooks
from tether.runtime.host_calls import HostCalls
from tether.runtime.lifecycle import ALLOWED, PluginRecord, State
from tether.runtime.ordering import load_order
from tether.runtime.registry import Registry
from tether.runtime.schema import compile_validator
from tether.runtime.watchdog import BlockReport, Watchdog
from tether.services.audit import AuditLog
from tether.services.database import Database
from tether.services.egress import EgressService
from tether.services.events import EventBus
from tether.services.notify import NotificationBus
from tether.services.ratelimit import RateLimiter, rates_from_policy
from tether.services.scheduler import Clock, Scheduler, SystemClock
from tether.services.storage import open_storage, quotas_from_policy

log = logging.getLogger("tether.host")


class Host(HostCalls):
    """A Tether host. Use `async with Host() as host:` or `await host.start()` / `stop()`.

    `config` is a path to a `tether.toml`, a `Policy`, or None (the usual lookup: `$TETHER_CONFIG`,
    then `./tether.toml`). `plugins` are plugin objects passed in code; they activate after
    folder and package plugins, and passing them is the operator's approval. `clock` drives
    the scheduler and notification back-offs (a `ManualClock` in tests; default: wall clock).
    """

    def __init__(
        self,
        config: str | Path | Policy | HostConfig | None = None,
        *,
        plugins: Sequence[Plugin] = (),
        base_dir: str | Path | None = None,
        discover: bool = True,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(config, HostConfig):
            self.config = config
        elif isinstance(config, Policy):
            self.config = HostConfig(config, Path(base_dir or Path.cwd()), None)
        else:
            self.config = load_config(config, cwd=Path(base_dir) if base_dir else None)
        self._code_plugins = list(plugins)
        self._discover = discover
        self.records: dict[str, PluginRecord] = {}
        self.refused: list[PluginRecord] = []  # candidates without a usable id
        self._module_ids: dict[str, str] = {}  # top-level module name -> plugin id
        self._code_owners: dict[CodeType, str] = {}  # registered functions -> plugin id
        self._started = False
        self.db: Database | None = None
        self.clock: Clock = clock or SystemClock()

    # Start and stop ------------------------------------------------------------------

    async def start(self) -> None:
        """Open the data directory, discover and activate every plugin."""
        if self._started:
            return
        settings = self.config.policy.host
        self.db = Database(self.config.data_dir / "tether.db")
        self.audit = AuditLog(self.db)
        self.events = EventBus(on_error=self._handler_failed)
        self.events.loop = asyncio.get_running_loop()
        self.scheduler = Scheduler(
            self.clock,
            events=self.events,
            on_error=lambda pid, job, msg: self._note_error(pid, f"job {job} failed: {msg}"),
        )
        self.scheduler.loop = self.events.loop
        self.notifications = NotificationBus(
            self.clock, on_error=lambda pid, kind, msg: self._note_error(pid, msg)
        )
        self.hooks = Hooks(on_error=self._hook_failed)
        self.registry = Registry(self.hooks)
        try:
            storage = await open_storage(
                settings.storage_backend,
                self.db,
                settings.redis_url,
                quotas_from_policy(self.config.policy),
            )
        except Exception:
            self.db.close()  # e.g. Redis unreachable: the host does not start
            raise
        self.data = open_data_services(self.config, self.db, self.events, self.audit)
        self.config_keys, self.secrets = self.data.config_keys, self.data.secrets
        self.memory, self.users = self.data.memory, self.data.users
        self.services = HostServices(
            registry=self.registry,
            events=self.events,
            scheduler=self.scheduler,
            notifications=self.notifications,
            audit=self.audit,
            storage=storage,
            ratelimit=RateLimiter(rates_from_policy(self.config.policy)),
            egress=EgressService(self.audit, base_dir=self.config.base_dir),
            execute_tool=self._execute_for_plugin,
            data=self.data,
        )
        self.watchdog = Watchdog(
            settings.watchdog_ms / 1000,
            self._loop_blocked,
            self._plugin_of_module,
            self._code_owners.get,
        )
        self.watchdog.start(asyncio.get_running_loop())
        self._started = True
        # One hook-plan rebuild and one audit transaction for the whole start-up.
        with self.registry.batch(), self.audit.buffered():
            await self._load_all(self._candidates())
        self.events.emit("system.startup", {"plugins": self.active_ids()})

    async def stop(self) -> None:
        """Tear down every plugin (reverse load order, bounded waits) and close stores."""
        if not self._started:
            return
        self.events.emit("system.shutdown", {})
        with self.registry.batch(), self.audit.buffered():
            for rec in sorted(self.records.values(), key=lambda r: -r.rank):
                if rec.state in (State.ACTIVE, State.DISABLED):
                    await self.unload(rec.id)
                elif rec.plugin is not None:  # activation failed: release its worker
                    await tiers.unload_plugin(rec)
        await self.scheduler.close()
        await self.events.drain(timeout=self.config.policy.host.teardown_timeout_ms / 1000)
        self.events.cancel_pending()
        self.watchdog.stop()
        await self.services.mcp.aclose()
        await self.services.egress.aclose()
        await self.services.storage.aclose()
        self.data.close()
        assert self.db is not None
        self.db.close()
        self._started = False

    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # Discovery and loading -----------------------------------------------------------

    def _candidates(self) -> list[Candidate]:
        found: list[Candidate] = []
        if self._discover:
            found += discover_folders(self.config.plugin_dirs)
            if self.config.policy.host.entry_points:
                found += discover_packages()
        found += [code_candidate(p) for p in self._code_plugins]
        mark_duplicates(found)
        return found

    async def _load_all(self, candidates: list[Candidate]) -> None:
        deps: dict[str, tuple[str, ...]] = {}
        position: dict[str, int] = {}
        for i, cand in enumerate(candidates):
            rec = PluginRecord(cand, rank=i)
            if cand.id is None:
                self._fail(rec, *(cand.refusal or (RefusalReason.INVALID_MANIFEST, "invalid")))
                self.refused.append(rec)
                continue
            if cand.refusal is not None and cand.refusal[0] == RefusalReason.DUPLICATE_ID:
                self._fail(rec, *cand.refusal)
                self.refused.append(rec)
                continue
            self.records[cand.id] = rec
            if not self._resolve(rec):
                continue
            assert cand.manifest is not None
            deps[cand.id] = cand.manifest.dependencies
            position[cand.id] = i
        ordered = load_order(deps, position)
        for pid, (reason, msg) in ordered.failures.items():
            self._fail(self.records[pid], reason, msg)
        for rank, pid in enumerate(ordered.order):
            rec = self.records[pid]
            rec.rank = rank
            self.registry.set_rank(pid, rank)
            await self._activate(rec)

    def _resolve(self, rec: PluginRecord) -> bool:
        """Policy checks that run before any plugin code is imported; True when it may load
        (a plugin disabled by policy returns False but may still be enabled at run time)."""
        cand = rec.candidate
        if cand.refusal is not None:
            self._fail(rec, *cand.refusal)
            return False
        assert cand.manifest is not None
        entry = self.config.policy.plugins.get(cand.manifest.id)
        res = resolve(cand.manifest, entry, builtin=cand.source == "code", digest=cand.digest)
        rec.resolution = res
        if res.refusal is not None:
            reason, msg = res.refusal
            if reason is RefusalReason.DISABLED:
                self._set_state(rec, State.DISABLED, msg)
            else:
                self._fail(rec, reason, msg)
            return False
        if res.tier not in tiers.available_tiers():
            usable = " or ".join(f'"{t}"' for t in sorted(tiers.available_tiers()))
            self._fail(
                rec,
                RefusalReason.POLICY_VIOLATION,
                f"tier {res.tier!r} is not available in this build; use tier = {usable}",
            )
            return False
        problem = self._config_problem(cand, entry.config if entry else {})
        if problem:
            self._fail(rec, RefusalReason.POLICY_VIOLATION, problem)
            return False
        return True

    def _config_problem(self, cand: Candidate, config: dict[str, Any]) -> str | None:
        schema = cand.manifest.config_schema if cand.manifest else None
        if schema is None:
            return None
        try:
            compile_validator(schema, where=f"{cand.where}: config_schema")(config)
        except (SchemaError, ToolInputError) as exc:
            return f"config: {exc}; fix [plugins.{cand.id}.config] in tether.toml"
        return None

    async def _activate(self, rec: PluginRecord, *, reenable: bool = False) -> bool:
        cand, res = rec.candidate, rec.resolution
        assert cand.manifest is not None and res is not None
        missing = [
            d
            for d in cand.manifest.dependencies
            if d not in self.records or self.records[d].state is not State.ACTIVE
        ]
        if missing:
            self._fail(
                rec,
                RefusalReason.DEPENDENCY_FAILED,
                f"dependency {', '.join(missing)} is not active",
            )
            return False
        self._set_state(rec, State.LOADING)
        if rec.plugin is None:
            try:
                rec.plugin = await tiers.load_plugin(cand, res, self)
            except tiers.PluginImportError as exc:
                self._fail(rec, RefusalReason.IMPORT_FAILED, str(exc))
                return False
            if res.tier == "inprocess":  # the watchdog names in-process code only
                self._module_ids[inprocess.package_name(rec.id)] = rec.id
                if cand.module:
                    self._module_ids[cand.module.split(".", 1)[0]] = rec.id
                self._code_owners.update(dict.fromkeys(_declared_code(rec.plugin), rec.id))
        plugin = rec.plugin
        entry = self.config.policy.plugins.get(rec.id)
        ctx = Context(
            cand.manifest,
            res.granted,
            self.services,
            config=entry.config if entry else {},
            timeout_ms=res.timeout_ms,
            roles=res.roles,
            policy_entry=entry,
            resolution=res,
        )
        problem = apply_config_model(plugin, ctx, entry.config if entry else {})
        if problem is not None:
            self._fail(rec, RefusalReason.INVALID_CONFIG, problem)
            return False
        rec.context, plugin._context = ctx, ctx
        timeout = self.config.policy.host.teardown_timeout_ms / 1000
        try:
            with self.registry.batch():
                rec.warnings = apply_declarations(plugin, ctx)
                rec.warnings += await run_migrations(plugin, ctx, cand.folder)
                failure = await run_lifecycle(plugin, "load", timeout, ctx)
                if failure is None and reenable:
                    failure = await run_lifecycle(plugin, "enable", timeout)
        except Exception as exc:
            failure = exc
        if failure is not None:
            self._withdraw(rec)
            reason = (
                RefusalReason.NAME_CLASH
                if isinstance(failure, NameClashError)
                else RefusalReason.ACTIVATION_FAILED
            )
            self._fail(rec, reason, f"{type(failure).__name__}: {failure}")
            return False
        self._set_state(rec, State.ACTIVE)
        self.events.emit("plugin.loaded", {"plugin": rec.id})
        return True

    def _withdraw(self, rec: PluginRecord) -> None:
        """Remove everything a plugin registered; never fails."""
        self.registry.remove_plugin(rec.id)
        self.events.unsubscribe_plugin(rec.id)
        self.scheduler.cancel_plugin(rec.id)
        self.notifications.remove_plugin(rec.id)
        self.data.forget(rec.id)
        self.services.agents.remove_plugin(rec.id)
        self.services.mcp.remove_plugin(rec.id)  # stdio MCP subprocesses end
        self.services.widgets.remove_plugin(rec.id)
        if rec.plugin is not None:
            rec.plugin._context = None

    # Runtime control -----------------------------------------------------------------

    async def disable(self, plugin_id: str) -> None:
        """Deactivate a plugin: its tools, hooks and subscriptions go at once."""
        rec = self._record(plugin_id)
        if rec.state is not State.ACTIVE:
            raise ValueError(f"plugin {plugin_id!r} is {rec.state.value}, not active")
        await self._teardown(rec, "disable")
        self._set_state(rec, State.DISABLED)
        self.events.emit("plugin.unloaded", {"plugin": plugin_id, "disabled": True})

    async def enable(self, plugin_id: str) -> bool:
        """Activate a disabled plugin (or retry one in error); True when it became active."""
        rec = self._record(plugin_id)
        if rec.state is State.ACTIVE:
            return True
        if rec.plugin is None:
            # Its code will be imported again: check the files on disk now, so pins hold
            # against what will actually run, not against what was there at start.
            fresh = rescan(rec.candidate)
            if fresh.id != rec.id:
                self._fail(
                    rec,
                    RefusalReason.INVALID_MANIFEST,
                    f"the manifest's id changed to {fresh.id!r}; restart the host to load it",
                )
                return False
            rec.candidate, rec.resolution = fresh, None
        needs_check = rec.resolution is None or rec.resolution.refusal is not None
        if needs_check and not self._resolve(rec) and rec.state is State.ERROR:
            return False
        return await self._activate(rec, reenable=rec.plugin is not None)

    async def unload(self, plugin_id: str) -> None:
        """Tear a plugin down and forget its code; storage is kept."""
        rec = self._record(plugin_id)
        if rec.state is State.ACTIVE:
            await self._teardown(rec, "unload")
            self.events.emit("plugin.unloaded", {"plugin": plugin_id})
        elif rec.plugin is not None:
            await run_lifecycle(
                rec.plugin, "unload", self.config.policy.host.teardown_timeout_ms / 1000
            )
        self._withdraw(rec)
        await tiers.unload_plugin(rec)
        rec.plugin = None
        self._set_state(rec, State.UNLOADED)

    async def _teardown(self, rec: PluginRecord, handler: str) -> None:
        assert rec.plugin is not None
        timeout = self.config.policy.host.teardown_timeout_ms / 1000
        failure = await run_lifecycle(rec.plugin, handler, timeout)
        if failure is not None:
            rec.warnings.append(f"on_{handler} failed: {type(failure).__name__}: {failure}")
            self.audit.record(rec.id, "teardown_failed", str(failure), handler=handler)
        self._withdraw(rec)

    # Queries -------------------------------------------------------------------------

    def active_ids(self) -> list[str]:
        return [
            r.id
            for r in sorted(self.records.values(), key=lambda r: r.rank)
            if r.state is State.ACTIVE
        ]

    def plugins(self) -> list[dict[str, Any]]:
        """Every plugin the host knows, with state, tier, grants, errors and registrations."""
        out = [
            rec.to_json(self.registry.owned_by(rec.id) if self._started else None)
            for rec in self.records.values()
        ]
        out += [rec.to_json() for rec in self.refused]
        return out

    def _plugin_of_module(self, module: str) -> str | None:
        """The plugin a module belongs to, for the watchdog (called from its thread)."""
        if module.startswith(inprocess.PLUGIN_MODULE_PREFIX):
            parts = module.split(".", 2)
            return self._module_ids.get(".".join(parts[:2]))
        return self._module_ids.get(module.split(".", 1)[0])

    def _record(self, plugin_id: str) -> PluginRecord:
        rec = self.records.get(plugin_id)
        if rec is None:
            raise KeyError(f"no plugin {plugin_id!r}")
        return rec

    # State and failure reporting -----------------------------------------------------

    def _set_state(self, rec: PluginRecord, state: State, note: str | None = None) -> None:
        if state is not rec.state and state not in ALLOWED[rec.state]:
            raise RuntimeError(f"plugin {rec.id!r}: illegal transition {rec.state} -> {state}")
        previous, rec.state = rec.state, state
        if state is not State.ERROR:
            rec.reason, rec.error = (RefusalReason.DISABLED, note) if note else (None, None)
        self.audit.record(rec.id, "state", f"{previous.value} -> {state.value}", note=note)

    def _fail(self, rec: PluginRecord, reason: RefusalReason, message: str) -> None:
        rec.state, rec.reason, rec.error = State.ERROR, reason, message
        log.warning("plugin %s: %s: %s", rec.id, reason.value, message)
        self.audit.record(rec.id, "refused", message, reason=reason.value)

    def _hook_failed(self, plugin_id: str, hook: str, exc: BaseException) -> None:
        self._note_error(plugin_id, f"hook {hook} failed: {type(exc).__name__}: {exc}")

    def _handler_failed(self, plugin_id: str, event: str, exc: BaseException) -> None:
        what = (
            "timed out" if isinstance(exc, TimeoutError) else f"failed: {type(exc).__name__}: {exc}"
        )
        self._note_error(plugin_id, f"handler for {event} {what}")

    def _tool_failed(self, plugin_id: str, tool: str, exc: BaseException) -> None:
        self._note_error(plugin_id, f"tool {tool} failed: {type(exc).__name__}: {exc}")

    def _tool_stuck(self, plugin_id: str, tool: str, what: str) -> None:
        self._note_error(plugin_id, f"tool {tool} {what}", kind="stuck")

    def _loop_blocked(self, report: BlockReport) -> None:
        self._note_error(report.plugin_id, str(report), kind="loop_blocked", seconds=report.seconds)

    def _note_error(
        self, plugin_id: str, message: str, kind: str = "plugin_error", **detail: Any
    ) -> None:
        rec = self.records.get(plugin_id)
        if rec is not None:
            rec.error = message
        log.warning("plugin %s: %s", plugin_id, message)
        self.audit.record(plugin_id, kind, message, **detail)


def _declared_code(plugin: Plugin) -> list[CodeType]:
    """Code objects of everything a plugin declared, so the watchdog can name them."""
    d = plugin.declared
    fns: list[Any] = [t.fn for t in d.tools]
    fns += [fn for _, fn in d.hooks] + [fn for _, fn in d.events]
    fns += [c.fn for c in d.commands] + [p for p in d.prompts if callable(p)]
    fns += [fn for handlers in d.lifecycle.values() for fn in handlers]
    fns += [j.fn for j in d.jobs] + [fn for _, fn in d.channels]
    return [code for fn in fns if isinstance(code := getattr(fn, "__code__", None), CodeType)]
