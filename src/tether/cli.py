"""The `tether` command line: check, list, tools, call, audit, egress, config, run, chat.

Exit codes: 0 success; 1 a problem was found or a tool failed; 2 usage errors (bad
arguments, bad JSON, unknown tool).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.logging import RichHandler
from rich.table import Table

from tether import cli_agent, cli_mcp, cli_serve
from tether.cli_support import ConfigOpt, JsonOpt, err, out
from tether.cli_support import load_or_exit as _config
from tether.cli_support import with_host as _with_host
from tether.contract.capabilities import root_equivalent_sets
from tether.contract.errors import Problem, RefusalReason, UnknownToolError
from tether.contract.hosts import HostAllowlist, HostPatternError
from tether.contract.policy import approval_lines, resolve
from tether.runtime.config import HostConfig
from tether.runtime.discovery import (
    Candidate,
    discover_folders,
    discover_packages,
    inspect_folder,
    mark_duplicates,
)
from tether.runtime.host import Host
from tether.runtime.ordering import load_order
from tether.services.audit import AuditLog
from tether.services.config_keys import GLOBAL, ConfigKeyError, ConfigKeys, check_scope, split_name
from tether.services.database import Database
from tether.services.egress_check import check_url, parse_resolve, static_resolver, system_resolver

app = typer.Typer(
    name="tether",
    help="Tether: a plugin runtime for AI-agent hosts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
T = TypeVar("T")


@app.command()
def check(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Plugin folders (default: discover).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Validate plugin folders and the policy: one line per problem, exit 1 if any."""
    cfg = _config(config)
    if paths:
        for folder in paths:
            if not folder.is_dir():
                err.print(f"{folder}: not a folder", markup=False)
                raise typer.Exit(2)
        candidates = [inspect_folder(p) for p in paths]
    else:
        candidates = discover_folders(cfg.plugin_dirs)
        if cfg.policy.host.entry_points:
            candidates += discover_packages()
    mark_duplicates(candidates)
    problems, notes = _check_candidates(cfg, candidates)
    for p in problems:
        out.print(str(p), markup=False)
    for note in notes:
        err.print(note, markup=False)
    if not candidates:
        err.print("no plugin folders found", markup=False)
    raise typer.Exit(1 if problems else 0)


def _check_candidates(
    cfg: HostConfig, candidates: list[Candidate]
) -> tuple[list[Problem], list[str]]:
    problems: list[Problem] = []
    notes: list[str] = []
    deps: dict[str, tuple[str, ...]] = {}
    where: dict[str, str] = {}
    for c in candidates:
        problems.extend(c.problems)
        if c.manifest is None or c.refusal is not None:
            continue
        m = c.manifest
        deps[m.id] = m.dependencies
        where[m.id] = c.where
        res = resolve(m, cfg.policy.plugins.get(m.id), digest=c.digest)
        notes.append(f"{c.where}: {m.id} {m.version} digest {c.digest}")
        if res.refusal is None:
            for combo, why in root_equivalent_sets(res.granted):
                notes.append(
                    f"{c.where}: warning: {' + '.join(sorted(combo))} is root-equivalent: {why}"
                )
            continue
        reason, msg = res.refusal
        if reason is RefusalReason.NOT_APPROVED:
            notes.append(f"{c.where}: not approved; to approve it, add to tether.toml:")
            notes.append(approval_lines(m, c.digest))
        elif reason is not RefusalReason.DISABLED:
            problems.append(Problem(c.where, _field_of(reason), f"{reason.value}: {msg}"))
            notes.append(f"{c.where}: policy lines that would approve it as it is now:")
            notes.append(approval_lines(m, c.digest))
    ordered = load_order(deps, {pid: i for i, pid in enumerate(deps)})
    for pid, (reason, msg) in ordered.failures.items():
        problems.append(Problem(where[pid], "dependencies", f"{reason.value}: {msg}"))
    return problems, notes


def _field_of(reason: RefusalReason) -> str:
    return {
        RefusalReason.VERSION_DRIFT: "version",
        RefusalReason.DIGEST_DRIFT: "(folder)",
        RefusalReason.CAPABILITY_DRIFT: "capabilities",
        RefusalReason.OUTBOUND_DRIFT: "outbound_hosts",
        RefusalReason.BUILTIN_ONLY: "capabilities",
        RefusalReason.INCOMPATIBLE_API_VERSION: "api_version",
        RefusalReason.HOST_TOO_OLD: "min_host_version",
    }.get(reason, "(policy)")


@app.command("list")
def list_plugins(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Plugins with version, tier, state, granted and denied capabilities, and tools."""

    async def work(host: Host) -> list[dict[str, Any]]:
        return host.plugins()

    plugins = _with_host(config, work, quiet=as_json)
    if as_json:
        out.print(json.dumps(plugins, indent=2), markup=False)
        return
    table = Table(show_lines=False)
    for col in ("plugin", "version", "tier", "state", "granted", "denied", "tools"):
        table.add_column(col)
    for p in plugins:
        state = p["state"] if not p["reason"] else f"{p['state']} ({p['reason']})"
        table.add_row(
            p["id"],
            p["version"] or "",
            p["tier"] or "",
            state,
            "\n".join(p["granted"]),
            "\n".join(p["denied"]),
            "\n".join(p.get("tools", [])),
        )
    out.print(table)
    for p in plugins:
        if p["error"]:
            out.print(f"{p['id']}: {p['error']}", markup=False)
        for w in p["warnings"]:
            out.print(f"{p['id']}: warning: {w}", markup=False)
        for r in p["root_equivalent"]:
            out.print(f"{p['id']}: warning: root-equivalent grant {r}", markup=False)
        if p.get("confinement"):
            out.print(f"{p['id']}: confined: {', '.join(p['confinement'])}", markup=False)


@app.command()
def tools(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Tools of active plugins, as the model sees them."""

    async def work(host: Host) -> list[dict[str, Any]]:
        return [t.to_json() for t in host.tools()]

    listing = _with_host(config, work, quiet=as_json)
    if as_json:
        out.print(json.dumps(listing, indent=2), markup=False)
        return
    table = Table()
    table.add_column("tool")
    table.add_column("description")
    for t in listing:
        table.add_row(t["name"], t["description"])
    out.print(table)


@app.command()
def call(
    tool: Annotated[str, typer.Argument(help="Full tool name, e.g. plugin_echo_echo.")],
    arguments: Annotated[str, typer.Argument(help="Arguments as a JSON object.")] = "{}",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Call a tool: exit 0 on success, 1 on a tool error or timeout, 2 for bad input."""
    try:
        args = json.loads(arguments)
    except json.JSONDecodeError as exc:
        err.print(
            f'arguments: not valid JSON ({exc}); pass an object like \'{{"text": "hi"}}\'',
            markup=False,
        )
        raise typer.Exit(2) from None
    if not isinstance(args, dict):
        err.print('arguments: must be a JSON object like \'{"text": "hi"}\'', markup=False)
        raise typer.Exit(2)

    async def work(host: Host) -> Any:
        try:
            return await host.call_tool(tool, args)
        except UnknownToolError as exc:
            return exc

    result = _with_host(config, work, quiet=True)
    if isinstance(result, UnknownToolError):
        err.print(str(result), markup=False)
        raise typer.Exit(2)
    if as_json:
        out.print(json.dumps(result.to_json()), markup=False)
    elif result.is_error:
        err.print(result.content, markup=False)
    else:
        out.print(result.content, markup=False)
    raise typer.Exit(1 if result.is_error else 0)


@app.command()
def audit(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    plugin: Annotated[str | None, typer.Option(help="Only this plugin's records.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many records, newest first.")] = 50,
) -> None:
    """Read the audit log: violations, refusals and state changes."""
    cfg = _config(config)
    path = cfg.data_dir / "tether.db"
    if not path.exists():
        records = []
    else:
        db = Database(path)
        try:
            records = AuditLog(db).read(plugin=plugin, limit=limit)
        finally:
            db.close()
    if as_json:
        out.print(json.dumps([r.to_json() for r in records], indent=2), markup=False)
        return
    table = Table()
    for col in ("time", "plugin", "kind", "message"):
        table.add_column(col)
    for r in records:
        when = dt.datetime.fromtimestamp(r.ts).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, r.plugin, r.kind, r.message)
    out.print(table)


egress_app = typer.Typer(help="Outbound HTTP rules (docs/egress.md).", no_args_is_help=True)
app.add_typer(egress_app, name="egress")


@egress_app.command("check")
def egress_check(
    url: Annotated[str, typer.Argument(help="The URL a plugin would request.")],
    plugin: Annotated[
        str | None, typer.Option(help="Use this plugin's allowlist and private_hosts.")
    ] = None,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="Allowed host pattern (repeatable).")
    ] = None,
    resolve_to: Annotated[
        list[str] | None,
        typer.Option("--resolve", help="HOST:ADDRESS instead of DNS (repeatable; host:[::1])."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Would outbound HTTP to URL be allowed? Prints `allowed` or `blocked: <reason>`;
    exit 0 when allowed, 1 when blocked, 2 for usage errors. Without --plugin the allowlist
    is the --allow patterns (none: any public host); nothing private is ever open."""
    if plugin is not None and allow:
        err.print("use --plugin or --allow, not both", markup=False)
        raise typer.Exit(2)
    try:
        table = parse_resolve(resolve_to or [])
        allowlist = HostAllowlist(allow) if allow else None
    except (ValueError, HostPatternError) as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    private: tuple[str, ...] = ()
    refusal: str | None = None
    if plugin is not None:
        cfg = _config(config)
        entry = cfg.policy.plugins.get(plugin)
        found = discover_folders(cfg.plugin_dirs)
        if cfg.policy.host.entry_points:
            found += discover_packages()
        cand = next((c for c in found if c.id == plugin and c.manifest is not None), None)
        if cand is None and entry is None:
            err.print(f"no plugin {plugin!r} in the plugin folders or in tether.toml", markup=False)
            raise typer.Exit(2)
        if cand is not None and cand.manifest is not None:
            res = resolve(cand.manifest, entry, digest=cand.digest)
            allowlist = HostAllowlist(res.outbound_hosts)
            if "http.outbound" not in res.granted:
                refusal = f"plugin {plugin!r} is not granted http.outbound"
        else:
            note = f"note: plugin {plugin!r} was not found; using tether.toml alone"
            err.print(note, markup=False)
            allowlist = HostAllowlist(entry.outbound_hosts if entry else ())
            if entry is not None and "http.outbound" not in entry.grant:
                refusal = f"plugin {plugin!r} is not granted http.outbound"
        private = entry.private_hosts if entry is not None else ()
    if refusal is not None:
        out.print(f"blocked: {refusal}", markup=False)
        raise typer.Exit(1)
    resolver = static_resolver(table, fallback=system_resolver) if table else system_resolver
    verdict = asyncio.run(check_url(url, allowlist, private, resolver))
    if not verdict.allowed:
        out.print(f"blocked: {verdict.reason}", markup=False)
        raise typer.Exit(1)
    out.print("allowed", markup=False)
    err.print(f"{verdict.host} -> {', '.join(verdict.addresses)}", markup=False)


config_app = typer.Typer(
    help="Plugins' per-scope config keys (docs/config.md). get and list read the database "
    "without loading plugins; set loads them, because validators live in plugin code.",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")
KeyArg = Annotated[str, typer.Argument(help="<plugin-id>.<key>, e.g. weather.units")]
ScopeOpt = Annotated[
    str, typer.Option("--scope", "-s", help='"global", or "<kind>:<id>" such as "space:main".')
]


def _key_args(name: str | None, scope: str) -> None:
    try:
        if name is not None:
            split_name(name)
        check_scope(scope)
    except ConfigKeyError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None


def _read_keys(cfg: HostConfig, read: Callable[[ConfigKeys], T]) -> T | None:
    path = cfg.data_dir / "tether.db"
    if not path.exists():
        return None
    db = Database(path)
    try:
        return read(ConfigKeys(db))
    finally:
        db.close()


@config_app.command("get")
def config_get(
    name: KeyArg, scope: ScopeOpt = GLOBAL, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Print a key's value for a scope: its own, else the global value, else the default.
    Exit 1 when it has none, 2 for an unknown key."""
    _key_args(name, scope)
    found = _read_keys(_config(config), lambda k: (*k.resolve(name, scope), k.known(name)))
    if found is None or (not found[2] and found[0] is None):
        err.print(f"unknown config key {name!r}; `tether config list` shows them", markup=False)
        raise typer.Exit(2)
    value, source, _ = found
    if as_json:
        doc = {"name": name, "scope": scope, "value": value, "source": source}
        out.print(json.dumps(doc), markup=False)
    elif value is None:
        err.print(f"{name} has no value for {scope} and no default", markup=False)
    else:
        out.print(value, markup=False)
    raise typer.Exit(0 if value is not None else 1)


@config_app.command("set")
def config_set(
    name: KeyArg,
    value: Annotated[str, typer.Argument(help="The value (text).")],
    scope: ScopeOpt = GLOBAL,
    config: ConfigOpt = None,
) -> None:
    """Store a value after the plugin's validator accepts it (starts the host to load the
    plugin). Exit 1 when the validator rejects it or the plugin is not active."""
    _key_args(name, scope)

    async def work(host: Host) -> ConfigKeyError | None:
        try:
            host.config_keys.set(name, value, scope)
        except ConfigKeyError as exc:
            return exc
        host.audit.record(name.split(".", 1)[0], "config_set", f"{name} set", scope=scope)
        return None

    problem = _with_host(config, work, quiet=True)
    if problem is not None:
        err.print(str(problem), markup=False)
        raise typer.Exit(2 if "no plugin registered it" in str(problem) else 1)
    out.print(f"{name} = {value} ({scope})", markup=False)


@config_app.command("list")
def config_list(
    scope: Annotated[str | None, typer.Option("--scope", "-s", help="Resolve for a scope.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every known key: stored values per scope and defaults (or, with --scope, each
    key's value for that scope)."""
    _key_args(None, scope or GLOBAL)
    entries = _read_keys(_config(config), lambda k: k.list(scope)) or []
    if as_json:
        out.print(json.dumps([e.to_json() for e in entries], indent=2), markup=False)
        return
    table = Table()
    for col in ("key", "scope", "value", "description"):
        table.add_column(col)
    for e in entries:
        shown = "(unset)" if e.value is None else e.value + (" (default)" if e.is_default else "")
        table.add_row(e.name, e.scope, shown, e.description)
    out.print(table)


app.command("run")(cli_agent.run)
app.command("chat")(cli_agent.chat)
app.command("mcp")(cli_mcp.mcp)
app.command("serve")(cli_serve.serve)


def main() -> None:
    """Entry point of the `tether` script."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_time=False, show_path=False, markup=False)],
    )
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
