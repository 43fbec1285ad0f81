"""Running the server: the host with its plugins, the agent, the app and uvicorn, and a
graceful shutdown on SIGINT or SIGTERM.

Shutdown order: stop accepting connections; let in-flight requests finish and running
agent runs end, both within `shutdown_timeout` seconds (runs still going then are aborted,
requests still open a little later are cancelled); tear the plugins down (`host.stop()`,
which also closes the stores); exit 0. A second SIGINT forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from tether.agent.factory import build_agent
from tether.agent.loop import Agent
from tether.contract.errors import TetherError
from tether.runtime.config import HostConfig
from tether.runtime.host import Host
from tether.server.api_common import ApiState
from tether.server.app import create_app
from tether.server.auth import TOKEN_ENV, TOKEN_FILE, load_or_create_token

log = logging.getLogger("tether.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_SHUTDOWN_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """How `tether serve` listens and how long it drains on shutdown."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    log_level: str = "warning"


class ListenError(TetherError):
    """The address or port cannot be listened on."""


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket (port 0: a free port, read it from getsockname())."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port "
            "(or stop what uses it)"
        ) from None
    return sock


class GracefulServer(uvicorn.Server):
    """uvicorn's server, draining the app's agent runs alongside its connections, and
    exiting normally (not by re-raising the signal) after a SIGINT or SIGTERM."""

    def __init__(
        self,
        config: uvicorn.Config,
        app: FastAPI,
        *,
        shutdown_timeout: float,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._app = app
        self._shutdown_timeout = shutdown_timeout
        self._on_ready = on_ready
        self.aborted_runs = 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        api: ApiState = self._app.state.tether_api
        drain = asyncio.create_task(api.runs.drain(self._shutdown_timeout))
        await super().shutdown(sockets)
        self.aborted_runs = await drain

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def _agent_for(host: Host) -> tuple[Agent | None, str | None]:
    try:
        return build_agent(host), None
    except Exception as exc:  # any failure: serve without an agent, and say why
        return None, f"{type(exc).__name__}: {exc}"


def _token_note(data_dir: Path, token: str, created: bool) -> str:
    if created:
        return f"operator token (new, saved in {data_dir / TOKEN_FILE}): {token}"
    if os.environ.get(TOKEN_ENV):
        return f"operator token: from ${TOKEN_ENV}"
    return f"operator token: in {data_dir / TOKEN_FILE}"


async def serve(
    config: HostConfig,
    options: ServeOptions,
    *,
    say: Callable[[str], None] = print,
) -> int:
    """Serve until SIGINT/SIGTERM, then shut down gracefully; returns the exit code."""
    sock = bind(options.host, options.port)
    host = Host(config)
    try:
        await host.start()
    except BaseException:
        sock.close()
        raise
    try:
        agent, agent_error = _agent_for(host)
        token, created = load_or_create_token(config.data_dir)
        app = create_app(host, agent, token=token)
        app.state.tether_api.agent_error = agent_error
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host

        def ready() -> None:
            active = host.active_ids()
            say(f"Tether is serving on http://{shown}:{bound_port}/ (dashboard)")
            say(f"REST API: http://{shown}:{bound_port}/api/  (OpenAPI: /docs)")
            say(f"plugins active: {', '.join(active) if active else 'none'}")
            if agent is not None:
                say(f"agent: model {agent.config.model!r} via {agent.provider.name}")
            else:
                say(f"no agent: {agent_error}; runs answer 503")
            say(_token_note(config.data_dir, token, created))
            if created:
                # The fragment never reaches the server; the dashboard stores it and clears it.
                say(f"open the dashboard: http://{shown}:{bound_port}/#token={token}")
            say("press Ctrl+C to stop")

        uv_config = uvicorn.Config(
            app,
            log_level=options.log_level,
            lifespan="off",
            timeout_graceful_shutdown=int(options.shutdown_timeout) + 2,
            access_log=False,
        )
        server = GracefulServer(
            uv_config, app, shutdown_timeout=options.shutdown_timeout, on_ready=ready
        )
        await server.serve(sockets=[sock])
        if server.aborted_runs:
            say(f"aborted {server.aborted_runs} run(s) still going after the shutdown bound")
        if agent is not None:
            with contextlib.suppress(Exception):
                await agent.provider.aclose()
    finally:
        sock.close()
        await host.stop()
    say("Tether stopped")
    return 0
