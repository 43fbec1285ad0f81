"""`tether serve`: the HTTP server (REST API, plugin routes, MCP gateway, dashboard)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from tether.cli_support import ConfigOpt, err, load_or_exit, out
from tether.server.serve import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_SHUTDOWN_TIMEOUT


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on (0: any free port).", min=0, max=65535)
    ] = DEFAULT_PORT,
    config: ConfigOpt = None,
    shutdown_timeout: Annotated[
        float,
        typer.Option(
            "--shutdown-timeout",
            help="Seconds to let requests and runs finish on SIGINT/SIGTERM before aborting.",
            min=0,
        ),
    ] = DEFAULT_SHUTDOWN_TIMEOUT,
) -> None:
    """Serve the REST API, plugin routes, MCP gateway and dashboard until Ctrl+C."""
    from tether.server.serve import ListenError, ServeOptions
    from tether.server.serve import serve as run_server

    cfg = load_or_exit(config)

    def say(line: str) -> None:
        out.print(line, markup=False)

    try:
        code = asyncio.run(run_server(cfg, ServeOptions(host, port, shutdown_timeout), say=say))
    except ListenError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(1) from None
    raise typer.Exit(code)
