"""Ingress routes over real HTTP and a real WebSocket client: a real server on 127.0.0.1
feeding the hello wasm component's `chat` ingress."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server_util import running_app, serving
from test_wasm_tier import ARTIFACTS, FULL, write_host_dir
from tether import Host, Plugin
from tether.contract.types import Event
from tether.runtime.lifecycle import State
from tether.runtime.wasm_engine import load_component
from tether.runtime.wasm_ingress import MAX_COMMANDS
from tether.server.app import create_app
from wasm_build import build_all

pytestmark = pytest.mark.timeout(300)  # the first test may build the components

TOKEN = "ingress-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = "/api/plugins/hello/ingress/chat"

echo = Plugin(id="echo", name="Echo", capabilities=["tools.register"])


@echo.tool
async def say(text: str) -> str:
    """Echo the text."""
    return text


@dataclass
class Server:
    host: Host
    client: httpx.AsyncClient
    ws_base: str
    seen: list[Event]
    app: Any

    def socket(self, path: str = CHAT, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", AUTH)
        return connect(self.ws_base + path, additional_headers=headers, **kwargs)


@pytest.fixture(scope="module")
def hello_wasm() -> Path:
    """The hello example component (built, or taken from the build cache)."""
    path = build_all()["hello"]
    load_component(path, ARTIFACTS)  # compiled once per content; hosts then deserialize it
    return path


@pytest.fixture
async def server(tmp_path: Path, hello_wasm: Path) -> AsyncIterator[Server]:
    policy = write_host_dir(
        tmp_path,
        hello_wasm,
        grant=FULL,
        extra_policy='roles = ["member"]\n\n[plugins.echo]\ngrant = ["tools.register"]\n',
    )
    async with Host(policy, plugins=[echo]) as host:
        assert host.records["hello"].state is State.ACTIVE, host.records["hello"].error
        seen: list[Event] = []
        host.events.subscribe("hello.seen", "test", seen.append)
        host.events.subscribe("hello.shouted", "test", seen.append)
        app = create_app(host, None, token=TOKEN)
        async with (
            running_app(app) as base,
            httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as client,
        ):
            yield Server(host, client, base.replace("http://", "ws://"), seen, app)


async def _seen(srv: Server, n: int, name: str = "hello.seen") -> list[dict[str, Any]]:
    """The data of the first `n` events called `name` (hello.seen is emitted from inside
    the component); delivery is asynchronous, so wait for them."""
    for _ in range(200):
        found = [e.data for e in srv.seen if e.name == name]
        if len(found) >= n:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {n} {name} events, got {srv.seen}")


async def _recv(ws: ClientConnection) -> str:
    message = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(message, str)
    return message


# HTTP -----------------------------------------------------------------------------------------


async def test_post_delivers_one_event_and_reports_the_delivery(server: Server) -> None:
    r = await server.client.post(CHAT, json={"text": "shout"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] is True and out["error"] is None and out["refused"] == []
    assert out["plugin"] == "hello" and out["ingress"] == "chat"
    assert out["sent"] == ["echo: shout"]
    assert {"type": "emit", "event": "hello.shouted", "data": {"text": "shout"}} in out["executed"]
    (seen,) = await _seen(server, 1)
    assert seen == {
        "ingress": "chat",
        "kind": "http_post",
        "source": f"http:{CHAT}",
        "attempt": 1,
        "correlation_id": out["correlation_id"],
    }
    assert await _seen(server, 1, "hello.shouted") == [{"text": "shout"}]

    # a retry names its attempt and reuses the correlation id
    r = await server.client.post(
        CHAT, params={"attempt": 2, "correlation_id": "order-7"}, json={"text": "hi"}
    )
    assert r.json()["correlation_id"] == "order-7" and r.json()["sent"] == ["echo: hi"]
    second = (await _seen(server, 2))[1]
    assert second["attempt"] == 2 and second["correlation_id"] == "order-7"


async def test_post_reports_refused_commands(server: Server) -> None:
    flood = (await server.client.post(CHAT, json={"text": "flood"})).json()
    assert flood["sent"] == [str(i) for i in range(MAX_COMMANDS)]
    assert len(flood["refused"]) == 100 - MAX_COMMANDS
    assert f"more than {MAX_COMMANDS}" in flood["refused"][0]["reason"]
    assert flood["refused"][0]["command"] == {"type": "websocket_send", "text": str(MAX_COMMANDS)}

    sneak = (await server.client.post(CHAT, json={"text": "sneak"})).json()
    assert sneak["sent"] == ["echo: sneak"]
    (refused,) = sneak["refused"]
    assert refused["command"]["event"] == "other.thing" and "other.thing" in refused["reason"]
    audited = server.host.audit.read(plugin="hello", kind="wasm_command_refused")
    assert len(audited) == 100 - MAX_COMMANDS + 1


async def test_a_failed_delivery_is_a_200_with_the_error_and_is_audited(server: Server) -> None:
    # the echo of 300 KB is over the component output bound: the host refuses the output
    r = await server.client.post(CHAT, json={"text": "x" * 300_000})
    assert r.status_code == 200
    out = r.json()
    assert out["accepted"] is False and "larger than" in out["error"]
    assert out["sent"] == [] and out["executed"] == []
    (row,) = server.host.audit.read(plugin="hello", kind="ingress_error")
    assert "larger than" in str(row)
    # the plugin and the server carry on
    again = await server.client.post(CHAT, json={"text": "still here"})
    assert again.json()["sent"] == ["echo: still here"]


async def test_post_errors_name_what_is_wrong(server: Server) -> None:
    c = server.client
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
        r = await c.post(CHAT, json={"text": "hi"}, headers=headers)
        assert r.status_code == 401 and "bearer token" in r.json()["detail"]

    r = await c.post("/api/plugins/nope/ingress/chat", json={})
    assert r.status_code == 404 and "no plugin 'nope'" in r.json()["detail"]
    r = await c.post("/api/plugins/echo/ingress/chat", json={})
    assert r.status_code == 404
    assert "'echo'" in r.json()["detail"] and "inprocess tier" in r.json()["detail"]
    r = await c.post("/api/plugins/hello/ingress/mail", json={})
    assert r.status_code == 404
    assert "no ingress 'mail'" in r.json()["detail"] and "declared: chat" in r.json()["detail"]

    r = await c.post(CHAT, content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = await c.post(CHAT, json=["a"])
    assert r.status_code == 422 and "JSON object" in r.json()["detail"]
    r = await c.post(CHAT, params={"attempt": 0}, json={})
    assert r.status_code == 422

    assert (await c.post("/api/plugins/hello/disable")).status_code == 200
    r = await c.post(CHAT, json={"text": "hi"})
    assert r.status_code == 409
    assert "'hello' is disabled" in r.json()["detail"] and "enable" in r.json()["detail"]
    assert (await c.post("/api/plugins/hello/enable")).status_code == 200
    r = await c.post(CHAT, json={"text": "back"})
    assert r.status_code == 200 and r.json()["sent"] == ["echo: back"]


async def test_callers_without_the_plugins_roles_get_a_404(server: Server) -> None:
    guest = {"X-Tether-Caller": "bob", "X-Tether-Roles": "guest"}
    r = await server.client.post(CHAT, json={"text": "hi"}, headers=guest)
    unknown = await server.client.post("/api/plugins/nope/ingress/chat", json={}, headers=guest)
    assert r.status_code == 404 == unknown.status_code
    assert r.json()["detail"] == "no plugin 'hello' for caller 'bob'; ask the operator for access"
    assert "for caller 'bob'" in unknown.json()["detail"]
    member = {"X-Tether-Caller": "ann", "X-Tether-Roles": "member"}
    r = await server.client.post(CHAT, json={"text": "hi"}, headers=member)
    assert r.status_code == 200 and r.json()["sent"] == ["echo: hi"]

    with pytest.raises(InvalidStatus) as denied:
        async with server.socket(headers={**AUTH, **guest}):
            pass
    assert denied.value.response.status_code == 404
    async with server.socket(headers={**AUTH, **member}) as ws:
        await ws.send("hi")
        assert await _recv(ws) == "echo: hi"


# WebSocket ------------------------------------------------------------------------------------


async def test_each_text_message_is_one_event_and_replies_come_back(server: Server) -> None:
    async with server.socket() as ws:
        await ws.send("hi")
        assert await _recv(ws) == "echo: hi"
        await ws.send("flood")  # only the first MAX_COMMANDS commands run
        assert [await _recv(ws) for _ in range(MAX_COMMANDS)] == [
            str(i) for i in range(MAX_COMMANDS)
        ]
        await ws.send("shout")
        assert await _recv(ws) == "echo: shout"  # nothing of the flood's refusals in between
    seen = await _seen(server, 3)
    assert {s["kind"] for s in seen} == {"websocket_text"}
    assert {s["source"] for s in seen} == {f"websocket:{CHAT}"}
    assert {s["attempt"] for s in seen} == {1}
    assert len({s["correlation_id"] for s in seen}) == 3
    assert await _seen(server, 1, "hello.shouted") == [{"text": "shout"}]
    refused = server.host.audit.read(plugin="hello", kind="wasm_command_refused")
    assert len(refused) == 100 - MAX_COMMANDS


async def test_the_socket_takes_the_token_as_header_or_query(server: Server) -> None:
    async with server.socket(f"{CHAT}?token={TOKEN}", headers={}) as ws:
        await ws.send("q")
        assert await _recv(ws) == "echo: q"
    for path, headers in [
        (CHAT, {}),
        (CHAT, {"Authorization": "Bearer wrong"}),
        (f"{CHAT}?token=wrong", {}),
        (f"{CHAT}?token=", {}),
    ]:
        with pytest.raises(InvalidStatus) as denied:
            async with server.socket(path, headers=headers):
                pass
        assert denied.value.response.status_code == 401, path
        assert "bearer token" in json.loads(denied.value.response.body)["detail"]


async def test_the_socket_handshake_names_what_is_wrong(server: Server) -> None:
    async def refused(path: str) -> tuple[int, str]:
        with pytest.raises(InvalidStatus) as denied:
            async with server.socket(path):
                pass
        response = denied.value.response
        return response.status_code, json.loads(response.body)["detail"]

    status, detail = await refused("/api/plugins/nope/ingress/chat")
    assert status == 404 and "no plugin 'nope'" in detail
    status, detail = await refused("/api/plugins/echo/ingress/chat")
    assert status == 404 and "'echo'" in detail and "wasm" in detail
    status, detail = await refused("/api/plugins/hello/ingress/mail")
    assert status == 404 and "declared: chat" in detail
    await server.host.disable("hello")
    status, detail = await refused(CHAT)
    assert status == 409 and "'hello' is disabled" in detail


async def test_a_plugin_disabled_mid_connection_closes_the_socket(server: Server) -> None:
    async with server.socket() as ws:
        await ws.send("one")
        assert await _recv(ws) == "echo: one"
        await server.host.disable("hello")
        await ws.send("two")
        with pytest.raises(ConnectionClosed) as closed:
            await _recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4409
    assert "'hello' is disabled" in closed.value.rcvd.reason
    await server.host.enable("hello")
    async with server.socket() as ws:  # a new connection works again
        await ws.send("three")
        assert await _recv(ws) == "echo: three"


async def test_bad_messages_close_only_their_socket(server: Server) -> None:
    server.app.state.max_body_bytes = 1000
    async with server.socket() as other:
        async with server.socket() as ws:
            await ws.send(b"\x00binary")
            with pytest.raises(ConnectionClosed) as closed:
                await _recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
        async with server.socket() as ws:
            await ws.send("x" * 1001)
            with pytest.raises(ConnectionClosed) as closed:
                await _recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert "1000-byte limit" in closed.value.rcvd.reason
        await other.send("fine")
        assert await _recv(other) == "echo: fine"


async def test_failures_and_vanishing_clients_leave_the_server_serving(server: Server) -> None:
    async with server.socket(max_size=None) as ws:
        # over the component's output bound: no reply, audited, the socket stays open
        await ws.send("x" * 300_000)
        await ws.send("after")
        assert await _recv(ws) == "echo: after"
    assert len(server.host.audit.read(plugin="hello", kind="ingress_error")) == 1
    # a client that leaves mid-delivery: the replies have nowhere to go
    for _ in range(3):
        ws = await connect(server.ws_base + CHAT, additional_headers=AUTH)
        await ws.send("flood")
        ws.transport.abort()  # gone without a closing handshake
    await _seen(server, 5)
    r = await server.client.post(CHAT, json={"text": "alive"})
    assert r.status_code == 200 and r.json()["sent"] == ["echo: alive"]
    async with server.socket() as ws:
        await ws.send("alive")
        assert await _recv(ws) == "echo: alive"


async def test_an_open_socket_does_not_hold_up_shutdown(tmp_path: Path, hello_wasm: Path) -> None:
    async with Host(write_host_dir(tmp_path, hello_wasm, grant=FULL)) as host:
        app = create_app(host, None, token=TOKEN)
        async with serving(app, timeout_graceful_shutdown=2) as running:
            ws = await connect(
                running.base_url.replace("http://", "ws://") + CHAT, additional_headers=AUTH
            )
            await ws.send("hi")
            assert await _recv(ws) == "echo: hi"
            running.server.should_exit = True
            await asyncio.wait_for(running.task, 10)
        with pytest.raises(ConnectionClosed) as closed:
            await _recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code in (1001, 1012)
