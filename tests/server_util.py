"""Run an ASGI app on a free 127.0.0.1 port inside the test's event loop.

    async with running_app(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client: ...

`serving(app)` yields a `Running` with the uvicorn server too (open connections, tasks).
The server runs as a task in the current loop, so the app can share a started `Host`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn


@dataclass
class Running:
    base_url: str
    server: uvicorn.Server
    task: asyncio.Task[None]

    def open_connections(self) -> int:
        return len(self.server.server_state.connections)

    def request_tasks(self) -> int:
        return len(self.server.server_state.tasks)


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # older uvicorn
        pass

    @contextlib.contextmanager
    def capture_signals(self) -> Any:  # tests run in the main thread: leave signals alone
        yield


@contextlib.asynccontextmanager
async def serving(app: Any, *, timeout_graceful_shutdown: int = 5) -> AsyncIterator[Running]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
    )
    server = _Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("the server stopped before it started")
            await asyncio.sleep(0.01)
        yield Running(f"http://127.0.0.1:{port}", server, task)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout_graceful_shutdown + 5)
        sock.close()


@contextlib.asynccontextmanager
async def running_app(app: Any) -> AsyncIterator[str]:
    """Serve `app` on a free 127.0.0.1 port; yields its base URL (no trailing slash)."""
    async with serving(app) as running:
        yield running.base_url
