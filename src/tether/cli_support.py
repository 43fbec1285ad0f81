"""What every `tether` command shares: consoles, the --config and --json options, and
starting a host around a piece of work."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from tether.contract.errors import PolicyError
from tether.runtime.config import HostConfig, load_config
from tether.runtime.host import Host

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Path to tether.toml (default: ./tether.toml)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

T = TypeVar("T")


def load_or_exit(path: Path | None) -> HostConfig:
    try:
        return load_config(path)
    except PolicyError as exc:
        for p in exc.problems:
            err.print(str(p), markup=False)
        raise typer.Exit(1) from None


def with_host(path: Path | None, work: Callable[[Host], Awaitable[T]], quiet: bool = False) -> T:
    """Start a host, run `work`, stop the host; a spinner shows while plugins load."""
    config = load_or_exit(path)

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
