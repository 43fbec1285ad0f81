"""The REST API under /api/ (every route needs the operator's bearer token) and the
plugin-route dispatcher. See docs/server.md for every route."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from tether.server import api_admin, api_plugins, api_runs
from tether.server.api_common import ApiState, BodyLimit, max_body_from_env, require_token
from tether.server.routes import PluginRouteDispatcher

log = logging.getLogger("tether.server.api")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": f"internal error ({type(exc).__name__}); the server log has the details"},
        status_code=500,
    )


def mount(app: FastAPI) -> None:
    """Add the REST routes, the plugin-route dispatcher and the body-size limit."""
    app.state.tether_api = ApiState()
    app.state.max_body_bytes = max_body_from_env()
    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)])
    api.include_router(api_plugins.router)
    api.include_router(api_runs.router)
    api.include_router(api_admin.router)
    app.include_router(api)
    app.add_exception_handler(Exception, _internal_error)
    # Added last = outermost: the size limit applies to plugin routes too.
    app.add_middleware(PluginRouteDispatcher, owner=app)
    app.add_middleware(BodyLimit, owner=app)
