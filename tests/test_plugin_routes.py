"""Plugin routes over real HTTP: public and operator-only routers, the absolute prefix,
removal on disable and return on enable, and a failing route kept to itself."""

from __future__ import annotations

from pathlib import Path

import httpx

from conftest import write_plugin, write_policy
from server_util import running_app
from tether import Host
from tether.server.app import create_app

TOKEN = "routes-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

WEB = """
from fastapi import APIRouter, HTTPException, Request
from tether import Plugin

plugin = Plugin()
public = APIRouter()
private = APIRouter()

@public.get("/hello")
async def hello(name: str = "world") -> dict:
    return {"hello": name}

@public.post("/hook")
async def hook(request: Request) -> dict:
    if request.headers.get("x-secret") != "s3cret":
        raise HTTPException(403, "bad secret")
    return {"got": await request.json()}

@public.get("/crash")
async def crash() -> dict:
    raise RuntimeError("route exploded: password=hunter2")

@private.get("/admin")
async def admin() -> dict:
    return {"admin": True}

@plugin.on_load
def load(ctx):
    ctx.routes.register(public)
    ctx.routes.register(private, auth=True)
"""

ABS = """
from fastapi import APIRouter
from tether import Plugin

plugin = Plugin()
router = APIRouter()

@router.post("/incoming")
async def incoming() -> dict:
    return {"ok": "absolute"}

@plugin.on_load
def load(ctx):
    ctx.routes.register(router)
"""

NOGRANT = """
from fastapi import APIRouter
from tether import Plugin

plugin = Plugin()

@plugin.on_load
def load(ctx):
    ctx.routes.register(APIRouter())
"""


def _setup(tmp_path: Path) -> Path:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "web", WEB, capabilities=["routes.register"])
    write_plugin(
        plugins,
        "slackish",
        ABS,
        capabilities=["routes.register", "routes.absolute"],
        extra='route_prefix = "/hooks/slackish"\n',
    )
    write_plugin(plugins, "nogrant", NOGRANT, capabilities=["routes.register"])
    return write_policy(
        tmp_path,
        """
        [plugins.web]
        grant = ["routes.register"]

        [plugins.slackish]
        grant = ["routes.register", "routes.absolute"]
        route_prefix = "/hooks/slackish"

        [plugins.nogrant]
        grant = []
        """,
    )


async def test_plugin_routes_mount_unmount_and_fail_alone(tmp_path: Path) -> None:
    policy = _setup(tmp_path)
    async with Host(policy) as host:
        app = create_app(host, None, token=TOKEN)
        async with running_app(app) as base, httpx.AsyncClient(base_url=base) as client:
            r = await client.get("/plugins/web/hello", params={"name": "ann"})
            assert r.status_code == 200 and r.json() == {"hello": "ann"}
            # Public routes check their own secret; operator routes need the token.
            r = await client.post("/plugins/web/hook", json={"a": 1}, headers={"x-secret": "no"})
            assert r.status_code == 403
            r = await client.post(
                "/plugins/web/hook", json={"a": 1}, headers={"x-secret": "s3cret"}
            )
            assert r.json() == {"got": {"a": 1}}
            assert (await client.get("/plugins/web/admin")).status_code == 401
            r = await client.get("/plugins/web/admin", headers=AUTH)
            assert r.status_code == 200 and r.json() == {"admin": True}

            # A route that raises answers 500 with a JSON detail and no traceback or secret.
            r = await client.get("/plugins/web/crash")
            assert r.status_code == 500
            assert "RuntimeError" in r.json()["detail"]
            assert "hunter2" not in r.text and "Traceback" not in r.text
            assert (await client.get("/plugins/web/hello")).status_code == 200
            assert (await client.get("/api/tools", headers=AUTH)).status_code == 200
            errors = host.audit.read(plugin="web", kind="route_error")
            assert errors and "route exploded" in errors[0].message

            # The absolute prefix, and nothing for it under /plugins/<id>/.
            r = await client.post("/hooks/slackish/incoming")
            assert r.status_code == 200 and r.json() == {"ok": "absolute"}
            assert (await client.post("/plugins/slackish/incoming")).status_code == 404

            # Disabling removes the routes at once; enabling brings them back.
            r = await client.post("/api/plugins/web/disable", headers=AUTH)
            assert r.status_code == 200
            r = await client.get("/plugins/web/hello")
            assert r.status_code == 404 and "not active" in r.json()["detail"]
            assert (await client.get("/plugins/web/admin", headers=AUTH)).status_code == 404
            assert (await client.post("/api/plugins/web/enable", headers=AUTH)).status_code == 200
            assert (await client.get("/plugins/web/hello")).json() == {"hello": "world"}

            await client.post("/api/plugins/slackish/disable", headers=AUTH)
            assert (await client.post("/hooks/slackish/incoming")).status_code == 404
            await host.unload("web")
            assert (await client.get("/plugins/web/hello")).status_code == 404
            r = await client.post("/api/plugins/web/reload", headers=AUTH)
            assert r.status_code == 200
            assert (await client.get("/plugins/web/hello")).status_code == 200

            # Without the routes.register grant, registering fails the plugin's load.
            info = (await client.get("/api/plugins/nogrant", headers=AUTH)).json()
            assert info["state"] == "error" and "routes.register" in info["error"]
            assert (await client.get("/plugins/nogrant/x")).status_code == 404
            assert (await client.get("/plugins/missing/x")).status_code == 404
