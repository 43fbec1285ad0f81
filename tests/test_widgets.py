"""Plugin dashboard widgets: `ctx.widgets`, rendering under deadlines, sanitising, teardown,
and `GET /api/dashboard/widgets` on a real server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from conftest import write_plugin, write_policy
from tether import Host
from tether.runtime.widgets import sanitise
from tether.server.app import create_app

TOKEN = "widget-test-token"

BOARD = """
import asyncio
from tether import Context, Plugin

plugin = Plugin()

@plugin.on_load
def load(ctx: Context) -> None:
    ctx.widgets.register("Queue depth", lambda: "<p class='qd'>Queue depth: <b>42</b></p>")

    async def broken() -> str:
        raise RuntimeError("backend down")

    async def slow() -> str:
        await asyncio.sleep(30)
        return "never"

    ctx.widgets.register("Broken", broken)
    ctx.widgets.register("Slow", slow)
    ctx.widgets.register("Not text", lambda: 42)
"""

NOGRANT = """
from tether import Context, Plugin

plugin = Plugin()

@plugin.on_load
def load(ctx: Context) -> None:
    ctx.widgets.register("Sneaky", lambda: "<p>hi</p>")
"""


def _host(tmp_path: Path, timeout_ms: int = 1000) -> Host:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "board", BOARD, capabilities=["widgets.register"])
    write_plugin(plugins, "nogrant", NOGRANT, capabilities=["widgets.register"])
    policy = write_policy(
        tmp_path,
        f"""
        [plugins.board]
        grant = ["widgets.register"]
        limits = {{ timeout_ms = {timeout_ms} }}

        [plugins.nogrant]
        grant = []
        """,
    )
    return Host(policy)


@contextlib.asynccontextmanager
async def serve(host: Host) -> AsyncIterator[str]:
    """The app over `host` on a real uvicorn server at 127.0.0.1:<free port>."""
    app = create_app(host, None, token=TOKEN)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_widgets_render_and_fail_one_at_a_time(tmp_path: Path) -> None:
    async with _host(tmp_path) as host:
        assert host.records["board"].state.value == "active"
        # Registering without the grant fails that plugin's load, naming the capability.
        nogrant = host.records["nogrant"]
        assert nogrant.state.value == "error"
        assert "widgets.register" in (nogrant.error or "")

        rendered = {w.label: w for w in await host.services.widgets.render_all()}
        assert list(rendered) == ["Queue depth", "Broken", "Slow", "Not text"]
        queue = rendered["Queue depth"]
        assert queue.id == "board/queue-depth"
        assert queue.html == '<p class="qd">Queue depth: <b>42</b></p>'
        assert queue.error is None
        assert rendered["Broken"].html is None
        assert rendered["Broken"].error == "render failed: RuntimeError: backend down"
        assert rendered["Slow"].error == "render did not finish within 1s"
        assert 900 <= rendered["Slow"].ms < 3000
        assert rendered["Not text"].error == ("render returned int; it must return an HTML string")


async def test_widgets_leave_with_their_plugin(tmp_path: Path) -> None:
    async with _host(tmp_path) as host:
        assert len(host.services.widgets.widgets()) == 4
        await host.disable("board")
        assert host.services.widgets.widgets() == []
        assert await host.services.widgets.render_all() == []
        assert await host.enable("board")
        assert next(w.id for w in host.services.widgets.widgets()) == "board/queue-depth"


async def test_duplicate_label_and_unregister(tmp_path: Path) -> None:
    async with _host(tmp_path) as host:
        ctx = host.records["board"].context
        assert ctx is not None
        with pytest.raises(Exception, match="already registered"):
            ctx.widgets.register("queue DEPTH", lambda: "")
        assert ctx.widgets.unregister("Queue depth") is True
        assert ctx.widgets.unregister("Queue depth") is False
        assert "board/queue-depth" not in [w.id for w in host.services.widgets.widgets()]


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ("<script>window.__pwned=1</script><p>ok</p>", "<p>ok</p>"),
        ('<img src=x onerror="window.__pwned=2">', "<img>"),
        (
            '<a href="javascript:alert(1)">x</a>',
            '<a target="_blank" rel="noopener noreferrer nofollow">x</a>',
        ),
        ('<p style="color:red" onclick="x()" id="main">t</p>', "<p>t</p>"),
        ("<iframe src='/'></iframe><object data=x></object><form><input></form>", ""),
        ("<style>body{display:none}</style><b>b</b>", "<b>b</b>"),
        ("<svg><script>1</script></svg>", ""),
        ('<img src="data:image/svg+xml;base64,PHN2Zz4=">', "<img>"),
        (
            '<img src="data:image/png;base64,iVBORw0=" alt="p">',
            '<img src="data:image/png;base64,iVBORw0=" alt="p">',
        ),
        ('<img src="/plugins/board/chart.png">', '<img src="/plugins/board/chart.png">'),
        ('<span class="badge ok">up</span>', '<span class="badge ok">up</span>'),
    ],
)
def test_sanitise(dirty: str, clean: str) -> None:
    assert sanitise(dirty) == clean


@pytest.mark.timeout(20)
async def test_widgets_endpoint(tmp_path: Path) -> None:
    async with (
        _host(tmp_path, timeout_ms=500) as host,
        serve(host) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        denied = await client.get("/api/dashboard/widgets")
        assert denied.status_code == 401
        assert "bearer token" in denied.json()["detail"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        res = await client.get("/api/dashboard/widgets", headers=auth)
        assert res.status_code == 200
        widgets = {w["label"]: w for w in res.json()["widgets"]}
        assert widgets["Queue depth"]["html"] == '<p class="qd">Queue depth: <b>42</b></p>'
        assert widgets["Queue depth"]["plugin"] == "board"
        assert widgets["Broken"]["error"] == "render failed: RuntimeError: backend down"
        assert widgets["Slow"]["error"] == "render did not finish within 0.5s"

        # The host emitted plugin.loaded and system.startup before the app existed, so
        # the feed starts with what happens next.
        await host.disable("board")
        await host.events.drain(timeout=2)
        ev = (await client.get("/api/dashboard/events", headers=auth)).json()
        names = [e["name"] for e in ev["events"]]
        assert "plugin.unloaded" in names
        unloaded = next(e for e in ev["events"] if e["name"] == "plugin.unloaded")
        assert '"plugin": "board"' in unloaded["data"]
        assert ev["last"] == ev["events"][-1]["seq"]
        again = await client.get(f"/api/dashboard/events?after={ev['last']}", headers=auth)
        assert again.json() == {"events": [], "last": ev["last"]}
        res = await client.get("/api/dashboard/widgets", headers=auth)
        assert res.json() == {"widgets": []}
