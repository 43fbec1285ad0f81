"""REST routes for agent runs (start, stream events as SSE, abort, result) and sessions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from tether.agent.run import RunHandle, SessionEvent
from tether.agent.sessions import SessionInfo, SessionStore, message_to_json
from tether.contract.types import Caller
from tether.server.api_common import api_state, caller, is_operator, not_found, server_state

router = APIRouter(tags=["runs and sessions"])

KEEPALIVE_S = 15.0
FINAL_KINDS = frozenset({"done", "failed"})


class RunIn(BaseModel):
    prompt: str = Field(min_length=1, max_length=200_000, description="The user's input.")
    session_id: str | None = Field(None, description="Continue this session (default: new).")


class RunStarted(BaseModel):
    run_id: str
    session_id: str | None


class RunOut(BaseModel):
    """`status` is `running` or `finished`; the other fields are there once finished."""

    run_id: str
    session_id: str | None
    status: str
    reason: str | None = None
    reply: str | None = None
    turns: int | None = None
    usage: dict[str, int] | None = None
    error: str | None = None


class SessionOut(BaseModel):
    id: str
    caller: str
    title: str
    created: float
    updated: float
    messages: int


class SessionHistory(BaseModel):
    session: SessionOut
    messages: list[dict[str, Any]]


def _no_agent(request: Request) -> HTTPException:
    why = api_state(request).agent_error or "the server was started without an agent"
    return HTTPException(
        503,
        f"runs are unavailable: {why}; configure [agent] in tether.toml (or $TETHER_BASE_URL "
        "and $TETHER_MODEL) and restart `tether serve`",
    )


@router.post(
    "/runs",
    summary="Start an agent run",
    response_model=RunStarted,
    responses={404: {"description": "Unknown session"}, 503: {"description": "No agent"}},
)
async def start_run(body: RunIn, request: Request, who: Caller = Depends(caller)) -> JSONResponse:  # noqa: B008
    """Start a run in the background; follow it with `GET /api/runs/{id}/events`."""
    agent = server_state(request).agent
    book = api_state(request).runs
    if agent is None:
        raise _no_agent(request)
    if book.closing:
        raise HTTPException(503, "the server is shutting down; start the run after it restarts")
    if body.session_id is not None:
        owner = _session_owner(request, body.session_id)
        if owner is None or not (is_operator(who) or owner == who.id):
            raise not_found(f"no session {body.session_id!r}; GET /api/sessions lists yours")
    try:
        handle = agent.start(body.prompt, session_id=body.session_id, caller=who)
    except KeyError:
        raise not_found(f"no session {body.session_id!r}; GET /api/sessions lists yours") from None
    book.add(handle, who)
    return JSONResponse({"run_id": handle.run_id, "session_id": handle.session_id})


def _handle(request: Request, run_id: str, who: Caller) -> RunHandle:
    entry = api_state(request).runs.get(run_id, who)
    if entry is None:
        raise not_found(f"no run {run_id!r} (runs are kept a while after they end)")
    return entry.handle


def _result_json(handle: RunHandle) -> dict[str, Any]:
    task = handle.task
    base: dict[str, Any] = {"run_id": handle.run_id, "session_id": handle.session_id}
    if task is None or not task.done():
        return {**base, "status": "running"}
    if task.cancelled():
        return {**base, "status": "finished", "reason": "aborted", "error": "the run was aborted"}
    exc = task.exception()
    if exc is not None:
        return {**base, "status": "finished", "reason": "error", "error": f"{exc!r}"}
    return {**task.result().to_json(), "status": "finished"}


@router.get("/runs/{run_id}", summary="A run's status and result", response_model=RunOut)
async def get_run(
    run_id: str,
    request: Request,
    wait: float = Query(0, ge=0, le=60, description="Wait up to this many seconds for the end."),
    who: Caller = Depends(caller),  # noqa: B008
) -> JSONResponse:
    handle = _handle(request, run_id, who)
    if wait and handle.task is not None and not handle.task.done():
        await asyncio.wait({handle.task}, timeout=wait)
    return JSONResponse(_result_json(handle))


@router.post("/runs/{run_id}/abort", summary="Abort a run", response_model=RunOut)
async def abort_run(run_id: str, request: Request, who: Caller = Depends(caller)) -> JSONResponse:  # noqa: B008
    """Stop the run promptly (the model stream and running tools are cancelled) and wait
    briefly for it to finish its bookkeeping."""
    handle = _handle(request, run_id, who)
    handle.abort()
    if handle.task is not None:
        await asyncio.wait({handle.task}, timeout=5)
    return JSONResponse(_result_json(handle))


def _sse(kind: str, payload: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(payload, default=str)}\n\n"


async def run_events(handle: RunHandle) -> AsyncIterator[str]:
    """The run's session events as SSE text: those already sent, then live ones, ending
    after `done` or `failed` (a comment line every 15 s keeps proxies from timing out)."""
    queue: asyncio.Queue[SessionEvent | None] = asyncio.Queue()
    for past in handle.history:
        queue.put_nowait(past)
    handle.on_event(queue.put_nowait)
    task = handle.task
    if task is not None:
        if task.done():
            queue.put_nowait(None)
        else:
            task.add_done_callback(lambda _: queue.put_nowait(None))
    while True:
        try:
            event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
        except TimeoutError:
            yield ": keep-alive\n\n"
            continue
        if event is None:  # ended without a final event (it crashed): say so
            info = _result_json(handle)
            yield _sse("failed", {**info, "error": info.get("error") or "the run ended"})
            return
        yield _sse(
            event.kind, {"run_id": event.run_id, "session_id": event.session_id, **event.data}
        )
        if event.kind in FINAL_KINDS:
            return


@router.get(
    "/runs/{run_id}/events",
    summary="Stream a run's events (SSE)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_run(
    run_id: str,
    request: Request,
    who: Caller = Depends(caller),  # noqa: B008
) -> StreamingResponse:
    """Server-sent events: `event: <kind>` (token, tool_use, tool_result, ask_user, done,
    failed) and `data: <json>` with run_id, session_id and the event's fields."""
    handle = _handle(request, run_id, who)
    return StreamingResponse(
        run_events(handle),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _session_owner(request: Request, session_id: str) -> str | None:
    for info in _store(request).list():
        if info.id == session_id:
            return info.caller
    return None


def _store(request: Request) -> SessionStore:
    state = server_state(request)
    return api_state(request).sessions(state.host, state.agent)


@router.get("/sessions", summary="List sessions", response_model=list[SessionOut])
async def list_sessions(request: Request, who: Caller = Depends(caller)) -> JSONResponse:  # noqa: B008
    """Newest first; a caller sees its own sessions, the operator sees all."""
    infos = _store(request).list()
    return JSONResponse([s.to_json() for s in infos if is_operator(who) or s.caller == who.id])


def _session(request: Request, session_id: str, who: Caller) -> SessionInfo:
    for info in _store(request).list():
        if info.id == session_id and (is_operator(who) or info.caller == who.id):
            return info
    raise not_found(f"no session {session_id!r}; GET /api/sessions lists yours")


@router.get(
    "/sessions/{session_id}", summary="A session and its history", response_model=SessionHistory
)
async def get_session(
    session_id: str,
    request: Request,
    who: Caller = Depends(caller),  # noqa: B008
) -> JSONResponse:
    info = _session(request, session_id, who)
    messages = [message_to_json(m) for m in _store(request).load(session_id)]
    return JSONResponse({"session": info.to_json(), "messages": messages})


@router.delete("/sessions/{session_id}", summary="Delete a session")
async def delete_session(
    session_id: str,
    request: Request,
    who: Caller = Depends(caller),  # noqa: B008
) -> JSONResponse:
    _session(request, session_id, who)
    _store(request).delete(session_id)
    return JSONResponse({"deleted": session_id})
