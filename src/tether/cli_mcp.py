"""`tether mcp`: serve the host's tools as an MCP server over stdin/stdout.

Before anything else runs, the protocol stream moves to a private duplicate of fd 1 and fd 1
(and `sys.stdout`) point at stderr, so plugin output and logs never reach the protocol
stream; logs go to stderr only. The host starts from tether.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import sys
from typing import Annotated

import typer

from tether.cli_support import ConfigOpt
from tether.cli_support import load_or_exit as _config
from tether.contract.types import Caller

CallerOpt = Annotated[
    str | None,
    typer.Option("--caller", help="Act for this caller id (default: the operator, all roles)."),
]
RolesOpt = Annotated[
    str, typer.Option("--roles", help="Comma-separated roles of --caller, e.g. 'staff,ops'.")
]


def mcp(config: ConfigOpt = None, caller: CallerOpt = None, roles: RolesOpt = "") -> None:
    """Serve every tool the caller may use as an MCP server on stdin/stdout (logs: stderr)."""
    from tether.runtime.host import Host
    from tether.server.mcp_gateway import build_server

    for h in logging.getLogger().handlers:  # keep every log line off stdout
        if isinstance(h, logging.StreamHandler) and h.stream is sys.stdout:
            h.setStream(sys.stderr)
    cfg = _config(config)
    who = (
        Caller(caller, frozenset(r.strip() for r in roles.split(",") if r.strip()))
        if caller
        else Caller.operator()
    )

    wire = _claim_stdout()

    async def main() -> None:
        import anyio
        from mcp.server.stdio import stdio_server

        async with stdio_server(stdout=anyio.wrap_file(wire)) as (read, write):
            host = Host(cfg)
            await host.start()
            try:
                server = build_server(lambda: host, lambda _request: who)
                await server.run(read, write, server.create_initialization_options())
            finally:
                await host.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def _claim_stdout() -> io.TextIOWrapper:
    """Keep the protocol stream to ourselves: a private duplicate of fd 1 carries MCP, and
    fd 1 and `sys.stdout` point at stderr for the rest of the process (plugins' prints,
    including ones still buffered at exit, land there)."""
    sys.stdout.flush()
    private = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return io.TextIOWrapper(os.fdopen(private, "wb"), encoding="utf-8", write_through=True)
