"""What the REST API's modules share: per-app state, the bearer-token dependency, the
caller, the run book (every run started over HTTP, kept for a while after it ends), the
request-body size limit and JSON-object bodies."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.agent.loop import Agent
from tether.agent.run import RunHandle
from tether.agent.sessions import SessionStore
from tether.contract.types import Caller
from tether.runtime.host import Host
from tether.server.app import ServerState
from tether.server.auth import caller_of, check_bearer

DEFAULT_MAX_BODY = 1024 * 1024
MAX_BODY_ENV = "TETHER_MAX_BODY_BYTES"
KEEP_FINISHED_RUNS = 1000
DRAIN_FACTOR = 16

_bearer = HTTPBearer(auto_error=False, description="The operator token `tether serve` prints.")


def require_token(
    request: Request,
    _credentials: HTTPAuthorizationCredentials | None = Security(_bearer),  # noqa: B008
) -> None:
    """FastAPI dependency: 401 unless the request carries the operator's bearer token."""
    check_bearer(request, server_state(request).token)


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.tether
    return state


def host_of(request: Request) -> Host:
    return server_state(request).host


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.tether_api
    return state


def is_operator(caller: Caller) -> bool:
    return "*" in caller.roles


def caller(request: Request) -> Caller:
    """The caller a request acts for (see tether.server.auth.caller_of)."""
    return caller_of(request)


@dataclass(slots=True)
class RunEntry:
    handle: RunHandle
    caller: Caller
    started: float = field(default_factory=time.time)


class RunBook:
    """Runs started over HTTP: running ones, and the last `keep` finished ones."""

    def __init__(self, keep: int = KEEP_FINISHED_RUNS) -> None:
        self.keep = keep
        self.closing = False
        self._entries: OrderedDict[str, RunEntry] = OrderedDict()

    def add(self, handle: RunHandle, who: Caller) -> None:
        self._entries[handle.run_id] = RunEntry(handle, who)
        if len(self._entries) > self.keep:
            for run_id, entry in list(self._entries.items()):
                if len(self._entries) <= self.keep:
                    break
                if entry.handle.task is not None and entry.handle.task.done():
                    del self._entries[run_id]

    def get(self, run_id: str, who: Caller) -> RunEntry | None:
        """The run, when it exists and `who` started it (the operator sees every run)."""
        entry = self._entries.get(run_id)
        if entry is None or not (is_operator(who) or entry.caller.id == who.id):
            return None
        return entry

    def running(self) -> list[RunHandle]:
        return [
            e.handle
            for e in self._entries.values()
            if e.handle.task is not None and not e.handle.task.done()
        ]

    async def drain(self, timeout: float) -> int:
        """Refuse new runs, wait up to `timeout` s for running ones, abort the rest; returns
        how many were aborted."""
        self.closing = True
        tasks = [h.task for h in self.running() if h.task is not None]
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(pending)


@dataclass(slots=True)
class ApiState:
    """Per-app state of the REST API (`app.state.tether_api`)."""

    runs: RunBook = field(default_factory=RunBook)
    control: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Serialises plugin enable/disable/reload."""
    agent_error: str | None = None
    """Why the server has no agent, shown in the 503 of run routes."""
    _sessions: SessionStore | None = None

    def sessions(self, host: Host, agent: Agent | None) -> SessionStore:
        """The agent's session store, or one on the host's database when there is no agent."""
        if agent is not None and agent.sessions is not None:
            return agent.sessions
        if self._sessions is None:
            assert host.db is not None
            self._sessions = SessionStore(host.db)
        return self._sessions


def max_body_from_env() -> int:
    raw = os.environ.get(MAX_BODY_ENV, "")
    return int(raw) if raw.isdigit() else DEFAULT_MAX_BODY


def _too_large_detail(limit: int) -> str:
    return (
        f"request body too large: the limit is {limit} bytes "
        f"(set ${MAX_BODY_ENV} or app.state.max_body_bytes to change it)"
    )


class _TooLarge(HTTPException):
    """Raised from the body stream; an HTTPException so FastAPI answers it as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=_too_large_detail(limit))


class BodyLimit:
    """ASGI middleware: 413 for a request body over `app.state.max_body_bytes` (declared
    by Content-Length or counted while it streams in)."""

    def __init__(self, app: ASGIApp, owner: Any) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit: int = getattr(self.owner.state, "max_body_bytes", DEFAULT_MAX_BODY)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    # Read (and drop) a moderately large body first, so the client gets
                    # the 413 instead of a reset connection.
                    if int(value) <= DRAIN_FACTOR * limit:
                        await _drain(receive)
                    await _too_large(send, limit)
                    return
                break
        seen = 0
        watch = ResponseWatch(send)

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        try:
            await self.app(scope, counted, watch)
        except _TooLarge:
            if not watch.started:
                await _too_large(send, limit)


class ResponseWatch:
    """An ASGI `send` that remembers whether the response has begun, so an error handler
    knows whether it may still answer."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"detail": _too_large_detail(limit)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def not_found(what: str) -> HTTPException:
    return HTTPException(status_code=404, detail=what)


def json_object_body(raw: bytes, what: str) -> dict[str, Any]:
    """A request body that must be a JSON object (empty: `{}`); `what` names it in the
    400 (not JSON) and 422 (not an object) errors, e.g. "arguments"."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(
            400, f"the body is not valid JSON ({exc}); send the {what} as a JSON object"
        ) from None
    if not isinstance(value, dict):
        raise HTTPException(
            422,
            f"the {what} must be a JSON object, not {type(value).__name__}; "
            'send e.g. {"text": "hi"}',
        )
    return value


def json_object_openapi(description: str) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is a JSON object read by `json_object_body`."""
    return {
        "requestBody": {
            "description": description,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }
