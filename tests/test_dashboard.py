"""The operator dashboard in a real headless Chromium against a real uvicorn server: the
example plugins, a widget-bearing plugin, and one whose widget tries to run script.

Set TETHER_UPDATE_SCREENSHOT=1 to write the screenshot to docs/dashboard.png (otherwise it
goes to the test's temporary directory, so CI leaves the tree clean)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from conftest import EXAMPLES, write_plugin
from tether import Host
from tether.server.app import create_app
from tether.server.dashboard import CSP

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "dashboard-test-token"
DOCS = Path(__file__).resolve().parent.parent / "docs"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"
)

OPS = """
from tether import Context, Plugin

plugin = Plugin()

QUEUE = (
    "<p>Queue depth: <strong>42</strong> <span class='badge ok'>healthy</span></p>"
    "<table><tr><th>worker</th><th>jobs/min</th></tr>"
    "<tr><td>w-1</td><td>118</td></tr><tr><td>w-2</td><td>97</td></tr></table>"
)

@plugin.on_load
def load(ctx: Context) -> None:
    ctx.widgets.register("Queue", lambda: QUEUE)

    async def backend() -> str:
        raise ConnectionError("backend at 10.0.0.7 is down")

    ctx.widgets.register("Backend", backend)
    ctx.scheduler.interval("sync-inbox", 300, lambda: None)
    ctx.scheduler.cron("nightly-report", "0 3 * * *", lambda: None)
"""

EVIL = """
from tether import Context, Plugin

plugin = Plugin()

HTML = (
    "<p>evil widget says hello</p>"
    "<script>window.__pwned=1</script>"
    '<img src=x onerror="window.__pwned=2">'
    '<a href="javascript:window.__pwned=3">click me</a>'
    '<div onmouseover="window.__pwned=4">hover</div>'
    "<iframe srcdoc=\\"<script>parent.__pwned=5</script>\\"></iframe>"
)

@plugin.on_load
def load(ctx: Context) -> None:
    ctx.widgets.register("Innocent", lambda: HTML)
"""

POLICY = """\
[host]
plugin_dirs = [{examples}, {extra}]
data_dir = {data}

[plugins.echo]
grant = ["tools.register", "storage.read", "storage.write"]

[plugins.weather]
grant = ["tools.register", "storage.read", "storage.write"]
config = {{ units = "celsius" }}

[plugins.guard]
grant = ["hooks.tools"]
config = {{ blocked_tools = [], blocked_words = ["rm -rf"] }}

[plugins.prompt]
grant = ["hooks.model", "prompts.contribute", "commands.register"]

[plugins.webhook]
grant = ["notifications.register", "http.outbound"]
outbound_hosts = ["hooks.example.com"]
config = {{ url = "https://hooks.example.com/tether" }}

[plugins.ops]
grant = ["widgets.register", "scheduler.write", "scheduler.read"]

[plugins.evil]
grant = ["widgets.register"]
"""


def _q(p: Path) -> str:
    return '"' + str(p) + '"'


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    extra = tmp_path / "extra"
    write_plugin(extra, "ops", OPS, capabilities=["widgets.register", "scheduler.write"])
    write_plugin(extra, "evil", EVIL, capabilities=["widgets.register"])
    policy = tmp_path / "tether.toml"
    policy.write_text(
        POLICY.format(examples=_q(EXAMPLES), extra=_q(extra), data=_q(tmp_path / "data"))
    )
    async with Host(policy) as h:
        yield h


@contextlib.asynccontextmanager
async def serve(host: Host) -> AsyncIterator[str]:
    """`create_app` over `host` on a real uvicorn server at 127.0.0.1:<free port>."""
    app = create_app(host, None, token=TOKEN)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False
    )
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


@contextlib.asynccontextmanager
async def browser_page() -> AsyncIterator[tuple[Any, list[str]]]:
    """A fresh page in headless Chromium, and the console errors and page errors it logs."""
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            errors: list[str] = []
            page.on(
                "console",
                lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            yield page, errors
        finally:
            await browser.close()


def _screenshot_path(tmp_path: Path) -> Path:
    if os.environ.get("TETHER_UPDATE_SCREENSHOT") == "1":
        return DOCS / "dashboard.png"
    return tmp_path / "dashboard.png"


@pytest.mark.timeout(45)
async def test_dashboard_in_chromium(host: Host, tmp_path: Path) -> None:
    async with serve(host) as base, browser_page() as (page, errors):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base, headers=auth) as client:
            # Some traffic, so the audit and event panes have something to show.
            called = await client.post("/api/tools/plugin_echo_echo", json={"text": "hi"})
            assert called.status_code == 200, called.text

            response = await page.goto(f"{base}/#token={TOKEN}")
            assert response is not None and response.status == 200
            assert response.headers["content-security-policy"] == CSP
            # The token left the address bar; it is in this tab's session storage.
            assert "token" not in page.url
            assert await page.evaluate("sessionStorage.getItem('tether.token')") == TOKEN

            plugins = page.locator("#plugins tbody tr[data-plugin]")
            await page.locator('#plugins tr[data-plugin="echo"]').wait_for()
            ids = set(await plugins.evaluate_all("rows => rows.map(r => r.dataset.plugin)"))
            assert ids == {"echo", "guard", "prompt", "weather", "webhook", "ops", "evil"}
            echo_row = page.locator('#plugins tr[data-plugin="echo"]')
            assert await echo_row.locator(".badge.state").inner_text() == "active"
            weather_caps = page.locator('#plugins tr[data-plugin="weather"] .cap.denied')
            assert await weather_caps.all_inner_texts() == ["events.subscribe"]
            echo_tool = page.locator('#tools tr[data-tool="plugin_echo_echo"]')
            await echo_tool.wait_for()
            assert await page.locator("#count-tools").inner_text() == "3"

            # Jobs with next runs; widgets: one renders, one fails in its own box.
            await page.locator("#jobs td", has_text="nightly-report").wait_for()
            queue = page.locator('.widget[data-widget="ops/queue"] .widget-body')
            await queue.get_by_text("Queue depth: 42").wait_for()
            assert await queue.locator("table td").first.inner_text() == "w-1"
            failed = page.locator('.widget.failed[data-widget="ops/backend"]')
            assert "backend at 10.0.0.7 is down" in await failed.inner_text()

            # The hostile widget's text shows, its script does not exist and did not run.
            evil = page.locator('.widget[data-widget="evil/innocent"] .widget-body')
            await evil.get_by_text("evil widget says hello").wait_for()
            await evil.get_by_text("click me").hover()
            await evil.get_by_text("hover").hover()
            assert await page.evaluate("typeof window.__pwned") == "undefined"
            inside = await evil.evaluate(
                "b => b.querySelectorAll('script, iframe, [onerror], [onmouseover]').length"
            )
            assert inside == 0
            assert await evil.locator("a").get_attribute("href") is None
            scripts = await page.evaluate(
                "Array.from(document.scripts).map(s => new URL(s.src).pathname)"
            )
            assert scripts == ["/static/dashboard.js"]

            await page.locator("#audit tbody tr").first.wait_for()
            await page.locator("#events td", has_text="tool.after_execute").wait_for()
            await page.screenshot(path=str(_screenshot_path(tmp_path)), full_page=True)

            # Disable echo from the UI: the state changes, its tool goes, the API agrees.
            await echo_row.locator('button[data-action="disable"]').click()
            await page.locator('#plugins tr[data-plugin="echo"][data-state="disabled"]').wait_for()
            assert await echo_row.locator(".badge.state").inner_text() == "disabled"
            await echo_tool.wait_for(state="detached")
            listed = {p["id"]: p["state"] for p in (await client.get("/api/plugins")).json()}
            assert listed["echo"] == "disabled"
            tools = [t["name"] for t in (await client.get("/api/tools")).json()]
            assert "plugin_echo_echo" not in tools and "plugin_weather_current" in tools
            await page.locator("#events td", has_text="plugin.unloaded").wait_for()

            # And enable it again.
            await echo_row.locator('button[data-action="enable"]').click()
            await page.locator('#plugins tr[data-plugin="echo"][data-state="active"]').wait_for()
            await echo_tool.wait_for()
            assert host.records["echo"].state.value == "active"

        assert errors == []


@pytest.mark.timeout(30)
async def test_token_form(host: Host) -> None:
    async with serve(host) as base, browser_page() as (page, errors):
        await page.goto(f"{base}/")
        form = page.locator("#login-form")
        await form.wait_for()
        assert await page.locator("#main").is_hidden()

        await page.fill("#token-input", "wrong")
        await page.click("#login-form button[type=submit]")
        message = page.locator("#login-error")
        await message.wait_for()
        assert "token was refused" in await message.inner_text()
        assert await page.evaluate("sessionStorage.getItem('tether.token')") is None

        await page.fill("#token-input", TOKEN)
        await page.click("#login-form button[type=submit]")
        await page.locator('#plugins tr[data-plugin="echo"]').wait_for()
        assert await form.is_hidden()

        await page.click("#signout")
        await form.wait_for()
        assert await page.evaluate("sessionStorage.getItem('tether.token')") is None
        # The only errors are the browser's reports of the refused requests.
        assert errors and all("401" in e for e in errors), errors


async def test_page_and_assets_without_token(host: Host) -> None:
    async with serve(host) as base, httpx.AsyncClient(base_url=base) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["x-frame-options"] == "DENY"
        assert "<script>" not in page.text and " style=" not in page.text
        js = await client.get("/static/dashboard.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        css = await client.get("/static/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert (await client.get("/api/plugins")).status_code == 401
        assert (await client.get("/api/dashboard/events")).status_code == 401
