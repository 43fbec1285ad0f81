"""Plugin routes: one dispatcher, mounted when the app is built, that sends each request
under `/plugins/<id>/` (or a plugin's approved absolute prefix) to that plugin's current
routers.

Nothing is added to or removed from the app's routes at run time. Per request the
dispatcher asks the host which plugins are active and which routers their contexts hold,
so disabling or unloading a plugin takes its routes away at once and enabling it brings
them back. Each plugin's routers are served by a small FastAPI app built on first use and
rebuilt when the plugin registers something new or is activated again; a route that raises
answers 500 with a JSON detail (no traceback) and is recorded in the audit log.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.runtime.context import Context
from tether.runtime.host import Host
from tether.runtime.lifecycle import State
from tether.server.api_common import ResponseWatch, require_token

log = logging.getLogger("tether.server.routes")

PLUGIN_PREFIX = "/plugins/"
# Paths no plugin can own (check_route_prefix refuses them), skipped without a lookup.
_HOST_PATHS = ("/api/", "/mcp", "/static/", "/docs", "/openapi.json")


def mounted_routes(host: Host) -> list[tuple[str, str]]:
    """(plugin id, prefix) of every active plugin that registered routes."""
    out = []
    for rec in host.records.values():
        ctx = rec.context
        if rec.state is State.ACTIVE and ctx is not None and ctx.routes.entries:
            out.append((rec.id, ctx.routes.prefix))
    return out


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


async def _plugin_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": f"the plugin's route failed: {type(exc).__name__}; see the audit log"},
        status_code=500,
    )


class PluginRouteDispatcher:
    """ASGI middleware: plugin paths go to the plugin's routers, the rest to the app."""

    def __init__(self, app: ASGIApp, owner: FastAPI) -> None:
        self.app = app
        self.owner = owner
        self._apps: dict[str, tuple[Context, int, str, FastAPI]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] not in ("http", "websocket") or path.startswith(_HOST_PATHS):
            await self.app(scope, receive, send)
            return
        host: Host = self.owner.state.tether.host
        target = self._target(host, path)
        if target is None:
            if path.startswith(PLUGIN_PREFIX) and scope["type"] == "http":
                pid = path[len(PLUGIN_PREFIX) :].split("/", 1)[0]
                await _not_found(send, pid)
                return
            await self.app(scope, receive, send)
            return
        plugin_id, sub = target
        await self._serve(host, plugin_id, sub, scope, receive, send)

    def _target(self, host: Host, path: str) -> tuple[str, FastAPI] | None:
        if path.startswith(PLUGIN_PREFIX):
            pid = path[len(PLUGIN_PREFIX) :].split("/", 1)[0]
            rec = host.records.get(pid)
            if rec is None or rec.state is not State.ACTIVE or rec.context is None:
                return None
            routes = rec.context.routes
            if not routes.entries or not _under(path, routes.prefix):
                return None
            return pid, self._app_for(pid, rec.context)
        for rec in host.records.values():
            ctx = rec.context
            if rec.state is not State.ACTIVE or ctx is None or not ctx.routes.entries:
                continue
            prefix = ctx.routes.prefix
            if not prefix.startswith(PLUGIN_PREFIX) and _under(path, prefix):
                return rec.id, self._app_for(rec.id, ctx)
        return None

    def _app_for(self, plugin_id: str, ctx: Context) -> FastAPI:
        routes = ctx.routes
        cached = self._apps.get(plugin_id)
        if cached is not None and cached[0] is ctx and cached[1] == routes.version:
            return cached[3]
        sub = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        sub.state.tether = self.owner.state.tether
        for entry in routes.entries:
            deps = [Depends(require_token)] if entry.auth else []
            sub.include_router(entry.router, prefix=routes.prefix, dependencies=deps)
        sub.add_exception_handler(Exception, _plugin_error)
        self._apps[plugin_id] = (ctx, routes.version, routes.prefix, sub)
        return sub

    async def _serve(
        self, host: Host, plugin_id: str, sub: FastAPI, scope: Scope, receive: Receive, send: Send
    ) -> None:
        watch = ResponseWatch(send)
        try:
            await sub(scope, receive, watch)
        except Exception as exc:
            # The sub-app already answered 500 (its exception handler); keep the host going.
            log.warning("plugin %s: route %s failed: %r", plugin_id, scope.get("path"), exc)
            host.audit.record(
                plugin_id,
                "route_error",
                f"{scope.get('method', '')} {scope.get('path', '')}: {type(exc).__name__}: {exc}",
            )
            if not watch.started and scope["type"] == "http":
                await _send_json(send, 500, {"detail": "the plugin's route failed"})


async def _not_found(send: Send, plugin_id: str) -> None:
    await _send_json(
        send,
        404,
        {
            "detail": f"no route here: plugin {plugin_id!r} is not active, has no routes, or "
            "has none at this path; GET /api/plugins shows its state"
        },
    )


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
