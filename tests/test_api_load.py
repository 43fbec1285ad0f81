"""Load and abuse over real HTTP: 2,000 tool calls from 50 concurrent clients with no error
and nothing leaked; bad requests get clear 4xx answers; a failing plugin route is a 500
that leaves every other route working."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from server_util import serving
from tether import Host, Plugin, Policy
from tether.server.app import create_app

TOKEN = "load-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

kit = Plugin(id="kit", name="Kit", capabilities=["tools.register", "routes.register"])


@kit.tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    await asyncio.sleep(0)
    return a + b


@kit.on_load
def _routes(ctx: object) -> None:
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    @router.get("/fail")
    async def fail() -> dict[str, bool]:
        raise ValueError("nope")

    ctx.routes.register(router)  # type: ignore[attr-defined]


async def _settle(predicate: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate() and asyncio.get_running_loop().time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.02)


@pytest.mark.timeout(40)
async def test_2000_calls_from_50_clients_leak_nothing(tmp_path: Path) -> None:
    async with Host(Policy(), base_dir=tmp_path, plugins=[kit], discover=False) as host:
        app = create_app(host, None, token=TOKEN)
        async with serving(app) as running:
            # Warm up once, so lazily created tasks and caches are in the baseline.
            async with httpx.AsyncClient(base_url=running.base_url, headers=AUTH) as c:
                assert (await c.post("/api/tools/plugin_kit_add", json={"a": 1, "b": 1})).is_success
            await _settle(lambda: running.open_connections() == 0)
            tasks_before = len(asyncio.all_tasks())
            errors: list[str] = []

            async def client(n: int) -> int:
                done = 0
                async with httpx.AsyncClient(
                    base_url=running.base_url, headers=AUTH, timeout=20
                ) as c:
                    for i in range(40):
                        r = await c.post("/api/tools/plugin_kit_add", json={"a": n, "b": i})
                        body = r.json()
                        if r.status_code != 200 or body != {
                            "content": str(n + i),
                            "is_error": False,
                            "data": n + i,
                        }:
                            errors.append(f"{r.status_code} {body}")
                        done += 1
                return done

            counts = await asyncio.gather(*(client(n) for n in range(50)))
            assert sum(counts) == 2000 and errors == []
            await _settle(
                lambda: running.open_connections() == 0 and len(asyncio.all_tasks()) <= tasks_before
            )
            assert running.open_connections() == 0
            assert running.request_tasks() == 0
            assert len(asyncio.all_tasks()) <= tasks_before


async def test_abuse_gets_clear_4xx(tmp_path: Path) -> None:
    async with Host(Policy(), base_dir=tmp_path, plugins=[kit], discover=False) as host:
        app = create_app(host, None, token=TOKEN)
        app.state.max_body_bytes = 10_000
        async with (
            serving(app) as running,
            httpx.AsyncClient(base_url=running.base_url, headers=AUTH) as c,
        ):
            cases = [
                (b"x" * 10_001, 413, "too large"),
                (b'{"a": 1,', 400, "not valid JSON"),
                (b"\xff\xfe", 400, "not valid JSON"),
                (b"[1, 2]", 422, "JSON object"),
                (b'"text"', 422, "JSON object"),
            ]
            for body, status, words in cases:
                r = await c.post("/api/tools/plugin_kit_add", content=body)
                assert r.status_code == status, body
                assert words in r.json()["detail"], r.json()

            async def chunks() -> object:
                for _ in range(20):
                    yield b"y" * 1000

            r = await c.post("/api/tools/plugin_kit_add", content=chunks())
            assert r.status_code == 413 and "too large" in r.json()["detail"]
            r = await c.post("/api/tools/no_such_tool", json={})
            assert r.status_code == 404 and "no_such_tool" in r.json()["detail"]
            r = await c.post("/api/tools/plugin_kit_add", json={"a": "x", "b": 1})
            assert r.status_code == 200 and r.json()["is_error"] is True

            results = await asyncio.gather(
                *(c.get(f"/plugins/kit/{'fail' if i % 2 else 'ok'}") for i in range(40))
            )
            for i, r in enumerate(results):
                if i % 2:
                    assert r.status_code == 500 and "ValueError" in r.json()["detail"]
                else:
                    assert r.status_code == 200 and r.json() == {"ok": True}
            r = await c.post("/api/tools/plugin_kit_add", json={"a": 2, "b": 3})
            assert r.json()["content"] == "5"
            assert host.records["kit"].state.value == "active"
