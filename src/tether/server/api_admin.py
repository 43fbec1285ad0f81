"""REST routes for scheduled jobs, the audit log and config keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tether.server.api_common import host_of, not_found
from tether.services.config_keys import GLOBAL, ConfigKeyError

router = APIRouter(tags=["jobs, audit and config"])


class JobOut(BaseModel):
    plugin: str
    name: str
    kind: str
    spec: str | float
    last_run: str | None
    next_run: str | None
    run_count: int
    failure_count: int
    skip_count: int
    last_error: str | None
    running: bool


class AuditOut(BaseModel):
    id: int
    ts: float
    plugin: str
    kind: str
    message: str
    detail: dict[str, Any]


class ConfigEntryOut(BaseModel):
    name: str
    scope: str
    value: str | None
    default: bool
    description: str


class ConfigValueOut(BaseModel):
    """`source` is the scope the value came from, `default`, or `unset`."""

    name: str
    scope: str
    value: str | None
    source: str


class ConfigSetIn(BaseModel):
    value: str = Field(description="The new value (text); the plugin's validator checks it.")
    scope: str = Field(GLOBAL, description='"global" or "<kind>:<id>", e.g. "user:alice".')


@router.get("/jobs", summary="Scheduled jobs", response_model=list[JobOut])
async def list_jobs(
    request: Request, plugin: str | None = Query(None, description="Only this plugin's jobs.")
) -> JSONResponse:
    return JSONResponse([j.to_json() for j in host_of(request).scheduler.jobs(plugin)])


@router.get("/audit", summary="The audit log, newest first", response_model=list[AuditOut])
async def read_audit(
    request: Request,
    plugin: str | None = Query(None, description="Only records of this plugin."),
    kind: str | None = Query(None, description="Only this kind, e.g. state, refused."),
    limit: int = Query(100, ge=1, le=10_000),
) -> JSONResponse:
    records = host_of(request).audit.read(plugin=plugin, kind=kind, limit=limit)
    return JSONResponse([r.to_json() for r in records])


def _bad(exc: ConfigKeyError) -> HTTPException:
    return HTTPException(400, str(exc))


@router.get("/config", summary="Config keys and values", response_model=list[ConfigEntryOut])
async def list_config(
    request: Request,
    scope: str | None = Query(None, description="Resolve every key for this scope."),
    plugin: str | None = Query(None, description="Only this plugin's keys."),
) -> JSONResponse:
    try:
        entries = host_of(request).config_keys.list(scope, plugin=plugin)
    except ConfigKeyError as exc:
        raise _bad(exc) from None
    return JSONResponse([e.to_json() for e in entries])


@router.get("/config/{name}", summary="One config key's value", response_model=ConfigValueOut)
async def get_config(
    name: str, request: Request, scope: str = Query(GLOBAL, description="The scope to resolve.")
) -> JSONResponse:
    keys = host_of(request).config_keys
    try:
        value, source = keys.resolve(name, scope)
    except ConfigKeyError as exc:
        raise _bad(exc) from None
    if not keys.known(name):
        raise not_found(f"no config key {name!r}; GET /api/config lists them")
    return JSONResponse({"name": name, "scope": scope, "value": value, "source": source})


@router.put(
    "/config/{name}",
    summary="Set a config key",
    response_model=ConfigValueOut,
    responses={400: {"description": "Malformed name or scope, or the validator said no"}},
)
async def set_config(name: str, body: ConfigSetIn, request: Request) -> JSONResponse:
    """Store a value after the owning plugin's validator accepts it (the plugin must be
    active, since validators live in its code)."""
    keys = host_of(request).config_keys
    try:
        keys.set(name, body.value, body.scope)
        value, source = keys.resolve(name, body.scope)
    except ConfigKeyError as exc:
        raise _bad(exc) from None
    return JSONResponse({"name": name, "scope": body.scope, "value": value, "source": source})


@router.delete("/config/{name}", summary="Remove a config value", response_model=ConfigValueOut)
async def unset_config(
    name: str, request: Request, scope: str = Query(GLOBAL, description="The scope to clear.")
) -> JSONResponse:
    keys = host_of(request).config_keys
    try:
        keys.unset(name, scope)
        value, source = keys.resolve(name, scope)
    except ConfigKeyError as exc:
        raise _bad(exc) from None
    return JSONResponse({"name": name, "scope": scope, "value": value, "source": source})
