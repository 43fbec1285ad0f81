"""The ASGI application: one FastAPI app over a started host (and agent, when configured).

Each part mounts itself: `api` (REST under /api/ and plugin routes), `api_ingress` (wasm
ingress over HTTP and WebSocket), `mcp_gateway` (/mcp) and `dashboard` (/). The app does
not own the host's lifetime; `tether serve` (and tests) start the host, build the app, serve
it, and stop the host after the server has drained.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from tether.agent.loop import Agent
from tether.contract.versions import HOST_VERSION
from tether.runtime.host import Host


@dataclass(slots=True)
class ServerState:
    """What every request handler reaches through `request.app.state.tether`."""

    host: Host
    agent: Agent | None
    token: str


def create_app(host: Host, agent: Agent | None, *, token: str) -> FastAPI:
    """The app for a started host. `token` is the operator's bearer token."""
    from tether.server import api, api_ingress, dashboard, mcp_gateway

    app = FastAPI(
        title="Tether",
        version=HOST_VERSION,
        description="REST API of a Tether host: plugins, tools, runs, sessions, jobs, audit.",
    )
    app.state.tether = ServerState(host, agent, token)
    api.mount(app)
    api_ingress.mount(app)
    mcp_gateway.mount(app)
    dashboard.mount(app)
    return app
