"""The REST API over real HTTP: auth, plugins, tools, callers, runs (SSE), sessions, jobs,
audit and config keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import write_plugin, write_policy
from fake_llm import FakeLLM, Reply, Stall
from server_util import running_app
from tether import Host, Plugin, Policy
from tether.agent.loop import Agent, AgentConfig
from tether.agent.openai import OpenAICompatibleProvider
from tether.agent.sessions import SessionStore
from tether.server.app import create_app

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

tools = Plugin(
    id="kit",
    name="Kit",
    capabilities=["tools.register", "scheduler.write", "config.register"],
)


@tools.tool
async def echo(text: str, times: int = 1) -> str:
    """Repeat the text."""
    return " ".join([text] * times)


@tools.tool
def stats(values: list[int]) -> dict[str, int]:
    """Sum and count."""
    return {"sum": sum(values), "count": len(values)}


@tools.tool
def boom() -> str:
    """Always fails."""
    raise RuntimeError("kaput")


@tools.job("tick", interval=3600)
def tick() -> None:
    pass


@tools.config_key("units", default="metric", description="Units to use.")
def _units(value: str) -> bool:
    return value in ("metric", "imperial")


members = Plugin(id="club", name="Club", capabilities=["tools.register"], roles=["member"])


@members.tool
async def secret() -> str:
    """Members only."""
    return "the password is swordfish"


@contextlib.asynccontextmanager
async def api(
    tmp_path: Path, *, llm: FakeLLM | None = None, agent_error: str | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Host]]:
    async with Host(Policy(), base_dir=tmp_path, plugins=[tools, members], discover=False) as host:
        agent = None
        if llm is not None:
            provider = OpenAICompatibleProvider(llm.base_url, None, retries=0)
            assert host.db is not None
            agent = Agent(host, provider, AgentConfig(model="fake"), SessionStore(host.db))
        app = create_app(host, agent, token=TOKEN)
        app.state.tether_api.agent_error = agent_error
        async with (
            running_app(app) as base,
            httpx.AsyncClient(base_url=base, headers=AUTH, timeout=20) as client,
        ):
            yield client, host


async def test_every_api_route_needs_the_token(tmp_path: Path) -> None:
    async with api(tmp_path) as (client, _):
        for method, path in [
            ("GET", "/api/plugins"),
            ("GET", "/api/tools"),
            ("POST", "/api/tools/plugin_kit_echo"),
            ("GET", "/api/audit"),
            ("GET", "/api/sessions"),
            ("POST", "/api/plugins/kit/disable"),
        ]:
            r = await client.request(method, path, headers={"Authorization": ""})
            assert r.status_code == 401, path
            assert "bearer token" in r.json()["detail"]
            r = await client.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401, path
            # a non-ASCII token is a wrong token, not a server error
            odd = {"Authorization": "Bearer caf\u00e9".encode("latin-1")}
            r = await client.request(method, path, headers=odd)
            assert r.status_code == 401, path
        r = await client.get("/api/plugins/kit")
        assert r.status_code == 200 and r.json()["state"] == "active"


async def test_openapi_describes_the_api(tmp_path: Path) -> None:
    async with api(tmp_path) as (client, _):
        doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    for path in [
        "/api/plugins",
        "/api/plugins/{plugin_id}",
        "/api/plugins/{plugin_id}/enable",
        "/api/plugins/{plugin_id}/disable",
        "/api/plugins/{plugin_id}/reload",
        "/api/tools",
        "/api/tools/{name}",
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/events",
        "/api/runs/{run_id}/abort",
        "/api/sessions",
        "/api/sessions/{session_id}",
        "/api/jobs",
        "/api/audit",
        "/api/config",
        "/api/config/{name}",
    ]:
        assert path in paths, path
        for op in paths[path].values():
            assert op["summary"], path
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


async def test_plugins_and_tools(tmp_path: Path) -> None:
    async with api(tmp_path) as (client, _):
        plugins = {p["id"]: p for p in (await client.get("/api/plugins")).json()}
        kit = plugins["kit"]
        assert kit["name"] == "Kit" and kit["state"] == "active" and kit["tier"] == "inprocess"
        assert "tools.register" in kit["granted"] and kit["denied"] == []
        assert kit["reason"] is None and kit["error"] is None
        assert "plugin_kit_echo" in kit["tools"]
        r = await client.get("/api/plugins/nope")
        assert r.status_code == 404 and "nope" in r.json()["detail"]

        names = [t["name"] for t in (await client.get("/api/tools")).json()]
        assert {"plugin_kit_echo", "plugin_kit_stats", "plugin_club_secret"} <= set(names)

        r = await client.post("/api/tools/plugin_kit_echo", json={"text": "hi", "times": 3})
        assert r.status_code == 200
        assert r.json() == {"content": "hi hi hi", "is_error": False}
        r = await client.post("/api/tools/plugin_kit_stats", json={"values": [1, 2, 3]})
        body = r.json()
        assert body["data"] == {"sum": 6, "count": 3} and body["is_error"] is False
        r = await client.post("/api/tools/plugin_kit_boom", content=b"")
        assert r.status_code == 200 and r.json()["is_error"] is True
        assert "kaput" in r.json()["content"]
        r = await client.post("/api/tools/plugin_kit_echo", json={"times": 2})
        assert r.json()["is_error"] is True and "text" in r.json()["content"]


async def test_bad_tool_calls_get_clear_4xx(tmp_path: Path) -> None:
    async with api(tmp_path) as (client, _):
        r = await client.post("/api/tools/plugin_kit_ech", json={})
        assert r.status_code == 404
        assert "plugin_kit_ech" in r.json()["detail"] and "plugin_kit_echo" in r.json()["detail"]
        r = await client.post("/api/tools/plugin_kit_echo", content=b'{"text": ')
        assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
        r = await client.post("/api/tools/plugin_kit_echo", json=["hi"])
        assert r.status_code == 422 and "JSON object" in r.json()["detail"]
        r = await client.post("/api/tools/plugin_kit_echo", content=b"x" * (1024 * 1024 + 1))
        assert r.status_code == 413 and "too large" in r.json()["detail"]


async def test_callers_only_see_their_tools(tmp_path: Path) -> None:
    async with api(tmp_path) as (client, _):
        guest = {"X-Tether-Caller": "bob", "X-Tether-Roles": "guest"}
        member = {"X-Tether-Caller": "ann", "X-Tether-Roles": "member"}
        names = [t["name"] for t in (await client.get("/api/tools", headers=guest)).json()]
        assert "plugin_club_secret" not in names and "plugin_kit_echo" in names
        r = await client.post("/api/tools/plugin_club_secret", json={}, headers=guest)
        assert r.status_code == 404
        assert "swordfish" not in r.text and "bob" in r.json()["detail"]
        names = [t["name"] for t in (await client.get("/api/tools", headers=member)).json()]
        assert "plugin_club_secret" in names
        r = await client.post("/api/tools/plugin_club_secret", json={}, headers=member)
        assert r.json()["content"] == "the password is swordfish"


async def test_disable_enable_and_unknown(tmp_path: Path) -> None:
    async with api(tmp_path) as (client, host):
        r = await client.post("/api/plugins/kit/disable")
        assert r.status_code == 200 and r.json()["state"] == "disabled"
        r = await client.post("/api/tools/plugin_kit_echo", json={"text": "x"})
        assert r.status_code == 404
        r = await client.post("/api/plugins/kit/disable")
        assert r.status_code == 409 and "disabled" in r.json()["detail"]
        r = await client.post("/api/plugins/kit/enable")
        assert r.status_code == 200 and r.json()["state"] == "active"
        r = await client.post("/api/tools/plugin_kit_echo", json={"text": "x"})
        assert r.json()["content"] == "x"
        r = await client.post("/api/plugins/ghost/enable")
        assert r.status_code == 404
        states = [a.message for a in host.audit.read(plugin="kit", kind="state")]
        assert "active -> disabled" in states and "disabled -> loading" in states


async def test_reload_imports_the_files_again(tmp_path: Path) -> None:
    code = """
        from tether import Plugin
        plugin = Plugin()
        @plugin.tool
        def version() -> str:
            return "{v}"
    """
    folder = write_plugin(tmp_path / "plugins", "rel", code.replace("{v}", "one"))
    policy = write_policy(tmp_path, '[plugins.rel]\ngrant = ["tools.register"]\n')
    async with Host(policy) as host:
        app = create_app(host, None, token=TOKEN)
        async with (
            running_app(app) as base,
            httpx.AsyncClient(base_url=base, headers=AUTH) as client,
        ):
            r = await client.post("/api/tools/plugin_rel_version")
            assert r.json()["content"] == "one"
            (folder / "plugin.py").write_text(
                code.replace("{v}", "two").replace("\n        ", "\n")
            )
            r = await client.post("/api/plugins/rel/reload")
            assert r.status_code == 200 and r.json()["state"] == "active"
            r = await client.post("/api/tools/plugin_rel_version")
            assert r.json()["content"] == "two"
            (folder / "plugin.py").write_text("raise ImportError('broken on purpose')\n")
            r = await client.post("/api/plugins/rel/reload")
            assert r.status_code == 409
            assert "broken on purpose" in r.json()["detail"]
            assert (await client.get("/api/plugins/rel")).json()["state"] == "error"


async def _sse(client: httpx.AsyncClient, url: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    async with client.stream("GET", url) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = ""
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    return events


@pytest.mark.timeout(30)
async def test_a_run_streams_events_and_keeps_its_session(tmp_path: Path) -> None:
    with FakeLLM() as llm:
        llm.add(Reply(tool_calls=[("plugin_kit_echo", '{"text": "yo", "times": 2}')]))
        llm.add(Reply(text="The tool said yo yo."))
        async with api(tmp_path, llm=llm) as (client, _):
            r = await client.post("/api/runs", json={"prompt": "say yo twice"})
            assert r.status_code == 200
            run_id, session_id = r.json()["run_id"], r.json()["session_id"]
            events = await _sse(client, f"/api/runs/{run_id}/events")
            kinds = [k for k, _ in events]
            assert kinds[0] == "tool_use" and kinds[-1] == "done"
            assert "tool_result" in kinds and "token" in kinds
            assert events[0][1]["tool"] == "plugin_kit_echo"
            assert events[-1][1]["text"] == "The tool said yo yo."
            assert all(d["run_id"] == run_id for _, d in events)
            result = (await client.get(f"/api/runs/{run_id}", params={"wait": 5})).json()
            assert result["status"] == "finished" and result["reason"] == "complete"
            assert result["reply"] == "The tool said yo yo."
            # Replaying a finished run's events still works.
            assert [k for k, _ in await _sse(client, f"/api/runs/{run_id}/events")] == kinds

            sessions = (await client.get("/api/sessions")).json()
            assert [s["id"] for s in sessions] == [session_id]
            history = (await client.get(f"/api/sessions/{session_id}")).json()
            roles = [m["role"] for m in history["messages"]]
            assert roles == ["user", "assistant", "tool", "assistant"]
            other = {"X-Tether-Caller": "eve", "X-Tether-Roles": "member"}
            assert (await client.get("/api/sessions", headers=other)).json() == []
            assert (await client.get(f"/api/runs/{run_id}", headers=other)).status_code == 404
            r = await client.post(
                "/api/runs", json={"prompt": "again", "session_id": session_id}, headers=other
            )
            assert r.status_code == 404
            r = await client.delete(f"/api/sessions/{session_id}")
            assert r.status_code == 200
            assert (await client.get(f"/api/sessions/{session_id}")).status_code == 404
            r = await client.post("/api/runs", json={"prompt": "x", "session_id": "nope"})
            assert r.status_code == 404 and "nope" in r.json()["detail"]


@pytest.mark.timeout(30)
async def test_abort_a_run(tmp_path: Path) -> None:
    with FakeLLM() as llm:
        llm.add(Stall("thinking", seconds=20))
        async with api(tmp_path, llm=llm) as (client, _):
            run_id = (await client.post("/api/runs", json={"prompt": "hang"})).json()["run_id"]
            await asyncio.sleep(0.3)
            assert (await client.get(f"/api/runs/{run_id}")).json()["status"] == "running"
            r = await client.post(f"/api/runs/{run_id}/abort")
            assert r.json()["status"] == "finished" and r.json()["reason"] == "aborted"
            events = await _sse(client, f"/api/runs/{run_id}/events")
            assert events[-1][0] == "failed" and events[-1][1]["reason"] == "aborted"
            assert (await client.post("/api/runs/nope/abort")).status_code == 404


async def test_runs_without_an_agent_answer_503(tmp_path: Path) -> None:
    async with api(tmp_path, agent_error="AgentConfigError: no provider") as (client, _):
        r = await client.post("/api/runs", json={"prompt": "hi"})
        assert r.status_code == 503
        assert "no provider" in r.json()["detail"] and "[agent]" in r.json()["detail"]
        assert (await client.post("/api/runs", json={})).status_code == 422
        assert (await client.get("/api/sessions")).json() == []


async def test_jobs_audit_and_config(tmp_path: Path) -> None:
    async with api(tmp_path) as (client, _):
        jobs = (await client.get("/api/jobs")).json()
        assert [(j["plugin"], j["name"], j["kind"]) for j in jobs] == [("kit", "tick", "interval")]
        assert (await client.get("/api/jobs", params={"plugin": "club"})).json() == []

        await client.post("/api/plugins/club/disable")
        audit = (await client.get("/api/audit", params={"plugin": "club", "kind": "state"})).json()
        assert audit[0]["message"] == "active -> disabled"
        assert all(a["plugin"] == "club" and a["kind"] == "state" for a in audit)
        assert len((await client.get("/api/audit", params={"limit": 1})).json()) == 1
        assert (await client.get("/api/audit", params={"limit": 0})).status_code == 422

        entries = (await client.get("/api/config")).json()
        assert {
            "name": "kit.units",
            "scope": "global",
            "value": "metric",
            "default": True,
            "description": "Units to use.",
        } in entries
        r = await client.put("/api/config/kit.units", json={"value": "imperial"})
        assert r.status_code == 200 and r.json()["value"] == "imperial"
        r = await client.put("/api/config/kit.units", json={"value": "furlongs"})
        assert r.status_code == 400 and "validator" in r.json()["detail"]
        r = await client.put("/api/config/kit.units", json={"value": "metric", "scope": "user:ann"})
        assert r.json() == {
            "name": "kit.units",
            "scope": "user:ann",
            "value": "metric",
            "source": "user:ann",
        }
        r = await client.get("/api/config/kit.units", params={"scope": "user:bob"})
        assert r.json()["value"] == "imperial" and r.json()["source"] == "global"
        assert (await client.get("/api/config/kit.nope")).status_code == 404
        assert (await client.get("/api/config/bad name")).status_code == 400
        r = await client.delete("/api/config/kit.units")
        assert r.json()["value"] == "metric" and r.json()["source"] == "default"
