"""REST routes for plugins (list, get, enable, disable, reload) and tools (list, call)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from tether.contract.errors import UnknownToolError
from tether.contract.types import Caller
from tether.runtime.host import Host
from tether.runtime.lifecycle import State
from tether.server.api_common import (
    api_state,
    caller,
    host_of,
    is_operator,
    json_object_body,
    json_object_openapi,
    not_found,
)

router = APIRouter(tags=["plugins and tools"])


class PluginOut(BaseModel):
    """A plugin as `host.plugins()` describes it (more fields may follow)."""

    model_config = ConfigDict(extra="allow")
    id: str
    name: str | None
    version: str | None
    tier: str | None
    state: str
    reason: str | None
    error: str | None
    granted: list[str]
    denied: list[str]
    warnings: list[str] = []
    tools: list[str] = []


class ToolOut(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any]
    plugin: str


class ToolResultOut(BaseModel):
    """`content` is what a model would see; `data` is present when the tool returned a
    structured value."""

    content: str
    is_error: bool
    data: Any = None


def _plugin(host: Host, plugin_id: str) -> dict[str, Any]:
    for info in host.plugins():
        if info["id"] == plugin_id:
            return info
    raise not_found(f"no plugin {plugin_id!r}; GET /api/plugins lists them")


@router.get("/plugins", summary="List every plugin", response_model=list[PluginOut])
async def list_plugins(request: Request) -> JSONResponse:
    """Every plugin the host knows, whatever its state, with grants, errors and tools."""
    return JSONResponse(host_of(request).plugins())


@router.get("/plugins/{plugin_id}", summary="One plugin", response_model=PluginOut)
async def get_plugin(plugin_id: str, request: Request) -> JSONResponse:
    return JSONResponse(_plugin(host_of(request), plugin_id))


async def _control(request: Request, plugin_id: str, action: str) -> JSONResponse:
    host = host_of(request)
    rec = host.records.get(plugin_id)
    if rec is None:
        raise not_found(f"no plugin {plugin_id!r}; GET /api/plugins lists them")
    async with api_state(request).control:
        if action == "disable":
            if rec.state is not State.ACTIVE:
                raise HTTPException(
                    409,
                    f"plugin {plugin_id!r} is {rec.state.value}, not active; nothing to disable",
                )
            await host.disable(plugin_id)
            ok = True
        else:
            if action == "reload" and rec.state is not State.UNLOADED:
                await host.unload(plugin_id)
            ok = await host.enable(plugin_id)
    info = _plugin(host, plugin_id)
    if not ok:
        raise HTTPException(
            409,
            f"plugin {plugin_id!r} did not become active: {info['reason']}: {info['error']}; "
            "fix it and try again",
        )
    return JSONResponse(info)


@router.post("/plugins/{plugin_id}/enable", summary="Enable a plugin", response_model=PluginOut)
async def enable_plugin(plugin_id: str, request: Request) -> JSONResponse:
    """Activate a disabled plugin (or retry one in error). 409 when it does not activate."""
    return await _control(request, plugin_id, "enable")


@router.post("/plugins/{plugin_id}/disable", summary="Disable a plugin", response_model=PluginOut)
async def disable_plugin(plugin_id: str, request: Request) -> JSONResponse:
    """Deactivate an active plugin: its tools, hooks, subscriptions and routes go at once."""
    return await _control(request, plugin_id, "disable")


@router.post("/plugins/{plugin_id}/reload", summary="Reload a plugin", response_model=PluginOut)
async def reload_plugin(plugin_id: str, request: Request) -> JSONResponse:
    """Unload, then enable again: the files are inspected again (digest and version pins
    are checked against what is on disk now) and the code is imported afresh."""
    return await _control(request, plugin_id, "reload")


@router.get("/tools", summary="Tools the caller may use", response_model=list[ToolOut])
async def list_tools(request: Request, who: Caller = Depends(caller)) -> JSONResponse:  # noqa: B008
    return JSONResponse([t.to_json() for t in host_of(request).tools(who)])


@router.post(
    "/tools/{name}",
    summary="Call a tool",
    response_model=ToolResultOut,
    responses={
        400: {"description": "The body is not valid JSON"},
        404: {"description": "No such tool visible to the caller"},
        413: {"description": "The body is over the size limit"},
        422: {"description": "The body is JSON but not an object"},
    },
    openapi_extra=json_object_openapi(
        "The tool's arguments as a JSON object (empty body: no arguments)."
    ),
)
async def call_tool(name: str, request: Request) -> JSONResponse:
    """Run the tool through the plugins' before/after-tool-call hooks with its timeout.
    A tool failure is a 200 with `is_error: true`; the HTTP status says whether the call
    could be made."""
    who = caller(request)
    host = host_of(request)
    arguments = json_object_body(await request.body(), "arguments")
    try:
        result = await host.call_tool(name, arguments, caller=who)
    except UnknownToolError as exc:
        detail = (
            str(exc)
            if is_operator(who)
            else f"no tool named {name!r} for caller {who.id!r}; GET /api/tools lists yours"
        )
        raise HTTPException(404, detail) from None
    return JSONResponse(result.to_json())
