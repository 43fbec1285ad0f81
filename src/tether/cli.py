"""The `tether` command line: check, list, tools, call, audit.

Exit codes: 0 success; 1 a problem was found or a tool failed; 2 usage errors (bad
arguments, bad JSON, unknown tool).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from tether.contract.capabilities import root_equivalent_sets
from tether.contract.errors import PolicyError, Problem, RefusalReason, UnknownToolError
from tether.contract.policy import approval_lines, resolve
from tether.runtime.config import HostConfig, load_config
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
from tether.services.database import Database

app = typer.Typer(
    name="tether",
    help="Tether: a plugin runtime for AI-agent hosts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Path to tether.toml (default: ./tether.toml)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

T = TypeVar("T")


def _config(path: Path | None) -> HostConfig:
    try:
        return load_config(path)
    except PolicyError as exc:
        for p in exc.problems:
            err.print(str(p), markup=False)
        raise typer.Exit(1) from None


def _with_host(path: Path | None, work: Callable[[Host], Awaitable[T]], quiet: bool = False) -> T:
    """Start a host, run `work`, stop the host; a spinner shows while plugins load."""
    config = _config(path)

    async def main() -> T:
        host = Host(config)
        if quiet:
            await host.start()
        else:
            with err.status("loading plugins…"):
                await host.start()
        try:
            return await work(host)
        finally:
            await host.stop()

    return asyncio.run(main())


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
