"""Ingress routes: feed a wasm plugin's declared ingress over HTTP.

`WS /api/plugins/{id}/ingress/{name}` turns each text message into one `websocket_text`
event and sends the plugin's `websocket_send` texts back on the same socket.
`POST /api/plugins/{id}/ingress/{name}` delivers one `http_post` event (the JSON body is the
payload) and answers what became of it, with the texts a websocket would have received.

Both need the operator's bearer token. A browser cannot set headers on a WebSocket, so the
socket also takes the token as `?token=`. A caller without the plugin's roles gets the same
404 as for a plugin that does not exist, as for tools. See docs/server.md.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from tether.contract.types import Caller
from tether.runtime.host import Host
from tether.runtime.lifecycle import State
from tether.runtime.wasm_ingress import Delivery, Reply
from tether.server.api_common import (
    DEFAULT_MAX_BODY,
    caller,
    host_of,
    is_operator,
    json_object_body,
    json_object_openapi,
    require_token,
)
from tether.server.app import ServerState
from tether.server.auth import caller_of, token_matches

if TYPE_CHECKING:
    from tether.runtime.wasm_plugin import WasmPlugin

log = logging.getLogger("tether.server.ingress")

PATH = "/api/plugins/{plugin_id}/ingress/{name}"
MAX_CORRELATION_ID = 200

# Close codes after the socket was accepted (4000-4999 are the application's own).
CLOSE_GONE = 4404
"""The plugin or its ingress went away (unloaded, reloaded without it)."""
CLOSE_NOT_ACTIVE = 4409
"""The plugin is no longer active (disabled, or failed)."""
CLOSE_UNSUPPORTED = 1003
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_POLICY = 1008

router = APIRouter(tags=["ingress"])


class RefusedOut(BaseModel):
    command: dict[str, Any]
    reason: str


class DeliveryOut(BaseModel):
    """What became of one ingress event."""

    plugin: str
    ingress: str
    correlation_id: str
    accepted: bool
    error: str | None
    sent: list[str]
    """The texts of the `websocket_send` commands, in order."""
    executed: list[dict[str, Any]]
    refused: list[RefusedOut]


@dataclass(slots=True)
class Target:
    plugin_id: str
    name: str
    wasm: WasmPlugin


def _visible(host: Host, plugin_id: str, who: Caller) -> bool:
    """Whether `who` may see the plugin: the same rule as for its tools."""
    rec = host.records[plugin_id]
    roles = rec.resolution.roles if rec.resolution is not None else None
    if roles is None or is_operator(who) or "*" in roles:
        return True
    return not frozenset(roles).isdisjoint(who.roles)


def find_target(host: Host, plugin_id: str, name: str, who: Caller) -> Target:
    """The active wasm plugin and ingress name a request addresses; HTTPException (404 or
    409) naming what is wrong otherwise."""
    rec = host.records.get(plugin_id)
    if rec is None or not _visible(host, plugin_id, who):
        if is_operator(who):
            raise HTTPException(404, f"no plugin {plugin_id!r}; GET /api/plugins lists them")
        raise HTTPException(
            404, f"no plugin {plugin_id!r} for caller {who.id!r}; ask the operator for access"
        )
    manifest = rec.candidate.manifest
    tier = rec.resolution.tier if rec.resolution else (manifest.tier if manifest else None)
    if tier != "wasm" or manifest is None:
        raise HTTPException(
            404,
            f"plugin {plugin_id!r} runs in the {tier or 'unknown'} tier and has no ingress: "
            "only wasm plugins declare ingress names (docs/wasm.md)",
        )
    if name not in manifest.ingress:
        known = ", ".join(manifest.ingress) or "none"
        raise HTTPException(
            404,
            f"plugin {plugin_id!r} declares no ingress {name!r} (declared: {known}); "
            "use one of those names",
        )
    wasm = getattr(rec.plugin, "wasm", None)
    if rec.state is not State.ACTIVE or wasm is None:
        raise HTTPException(
            409,
            f"plugin {plugin_id!r} is {rec.state.value}, not active; enable it "
            f"(POST /api/plugins/{plugin_id}/enable) and try again",
        )
    return Target(plugin_id, name, cast("WasmPlugin", wasm))


async def deliver(
    host: Host,
    target: Target,
    payload: dict[str, Any],
    *,
    kind: str,
    source: str,
    reply: Reply | None,
    attempt: int = 1,
    correlation_id: str | None = None,
) -> tuple[str, Delivery]:
    """Deliver one event; (correlation id, delivery). A failed delivery is logged and
    audited (`ingress_error`); nothing here raises for the plugin's sake."""
    cid = correlation_id or uuid.uuid4().hex
    try:
        out = await target.wasm.deliver(
            target.name,
            payload,
            source=source,
            kind=kind,
            reply=reply,
            attempt=attempt,
            correlation_id=cid,
        )
    except Exception as exc:  # a backstop: deliver reports the component's failures itself
        log.exception("plugin %s: ingress %s failed", target.plugin_id, target.name)
        out = Delivery(accepted=False, error=f"the delivery failed: {type(exc).__name__}: {exc}")
    if out.error is not None:
        log.warning("plugin %s: ingress %s: %s", target.plugin_id, target.name, out.error)
        host.audit.record(
            target.plugin_id,
            "ingress_error",
            out.error,
            ingress=target.name,
            source=source,
            correlation_id=cid,
        )
    return cid, out


# HTTP ----------------------------------------------------------------------------------------


@router.post(
    "/plugins/{plugin_id}/ingress/{name}",
    summary="Deliver an ingress event",
    response_model=DeliveryOut,
    responses={
        400: {"description": "The body is not valid JSON"},
        404: {"description": "No such plugin (for this caller), not wasm, or no such ingress"},
        409: {"description": "The plugin is not active"},
        413: {"description": "The body is over the size limit"},
        422: {"description": "The body is JSON but not an object"},
    },
    openapi_extra=json_object_openapi("The event's payload as a JSON object (empty body: `{}`)."),
)
async def post_ingress(
    plugin_id: str,
    name: str,
    request: Request,
    attempt: int = Query(1, ge=1, le=1000, description="the delivery attempt (retries: 2, 3…)"),
    correlation_id: str | None = Query(
        None,
        min_length=1,
        max_length=MAX_CORRELATION_ID,
        description="reuse the id of an earlier attempt; a new one by default",
    ),
) -> JSONResponse:
    """Deliver one `http_post` event to a wasm plugin's ingress and run its output
    commands. A failed delivery is a 200 with `error` set (and `accepted: false`); the
    status says whether the event could be delivered."""
    host = host_of(request)
    target = find_target(host, plugin_id, name, caller(request))
    payload = json_object_body(await request.body(), "payload")
    sent: list[str] = []

    async def reply(text: str) -> None:
        sent.append(text)

    cid, out = await deliver(
        host,
        target,
        payload,
        kind="http_post",
        source=f"http:{request.url.path}",
        reply=reply,
        attempt=attempt,
        correlation_id=correlation_id,
    )
    body = DeliveryOut(
        plugin=plugin_id,
        ingress=name,
        correlation_id=cid,
        accepted=out.accepted,
        error=out.error,
        sent=sent,
        executed=out.executed,
        refused=[RefusedOut(command=cmd, reason=why) for cmd, why in out.refused],
    )
    return JSONResponse(body.model_dump())


# WebSocket -----------------------------------------------------------------------------------


def socket_token_ok(conn: HTTPConnection, token: str) -> bool:
    """The operator token from `Authorization: Bearer` or, for browsers, `?token=`."""
    scheme, _, given = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        given = conn.query_params.get("token", "")
    return token_matches(given, token)


async def ingress_socket(websocket: WebSocket, plugin_id: str, name: str) -> None:
    """One `websocket_text` event per text message; `websocket_send` texts come back here."""
    state: ServerState = websocket.app.state.tether
    if not socket_token_ok(websocket, state.token):
        await _deny(
            websocket,
            401,
            "missing or wrong bearer token: send Authorization: Bearer <token> or ?token=<token>"
            " (printed by `tether serve`, or $TETHER_TOKEN)",
        )
        return
    # caller_of reads only the headers, which a WebSocket has like a Request.
    who = caller_of(cast(Request, websocket))
    try:
        find_target(state.host, plugin_id, name, who)
    except HTTPException as exc:
        await _deny(websocket, exc.status_code, str(exc.detail))
        return
    await websocket.accept()
    try:
        await _serve_socket(websocket, state, plugin_id, name, who)
    except Exception:  # keep the server going whatever happened on this socket
        log.exception("ingress socket %s/%s failed", plugin_id, name)
        await _close(websocket, CLOSE_INTERNAL, "internal error; the server log has the details")


async def _serve_socket(
    websocket: WebSocket, state: ServerState, plugin_id: str, name: str, who: Caller
) -> None:
    host = state.host
    source = f"websocket:{websocket.url.path}"
    limit: int = getattr(websocket.app.state, "max_body_bytes", DEFAULT_MAX_BODY)
    gone = False

    async def reply(text: str) -> None:
        nonlocal gone
        if gone:
            return
        try:
            await websocket.send_text(text)
        except Exception:  # the client left mid-delivery: the other commands still run
            gone = True

    while not gone:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            await _close(websocket, CLOSE_UNSUPPORTED, "send text messages only")
            return
        if len(text.encode()) > limit:
            await _close(websocket, CLOSE_TOO_BIG, f"message over the {limit}-byte limit")
            return
        try:
            target = find_target(host, plugin_id, name, who)
        except HTTPException as exc:
            code = CLOSE_NOT_ACTIVE if exc.status_code == 409 else CLOSE_GONE
            await _close(websocket, code, str(exc.detail))
            return
        await deliver(
            host, target, {"text": text}, kind="websocket_text", source=source, reply=reply
        )


async def _deny(websocket: WebSocket, status: int, detail: str) -> None:
    """Refuse the handshake with an HTTP status and JSON detail (or a close code when the
    server cannot send a response to a WebSocket handshake)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": detail}, status_code=status))
    else:
        await websocket.close(CLOSE_POLICY if status == 401 else 4000 + status, _reason(detail))


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # already closed by the client
        await websocket.close(code, _reason(reason))


def _reason(text: str) -> str:
    """A close reason within the protocol's 123 bytes."""
    data = text.encode()
    if len(data) <= 123:
        return text
    return data[:120].decode(errors="ignore") + "..."


def mount(app: FastAPI) -> None:
    """Add the ingress routes: POST under the token-checked /api router, the WebSocket
    checking the token itself (it cannot take the HTTP bearer dependency)."""
    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)])
    api.include_router(router)
    app.include_router(api)
    app.add_api_websocket_route(PATH, ingress_socket, name="plugin_ingress_socket")
