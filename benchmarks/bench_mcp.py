"""MCP gateway overhead: one trivial tool call through `/mcp` (official client, streamable
HTTP, real uvicorn on 127.0.0.1) and through `tether mcp` (stdio subprocess), against the
in-process `host.call_tool` baseline. Reports p50/p99 latency and sequential calls/s.

Run: `python benchmarks/bench_mcp.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import uvicorn
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tether import Host, Plugin, Policy
from tether.server.app import create_app

TOKEN = "bench-token"
PLUGIN = '''from tether import Plugin

plugin = Plugin()


@plugin.tool
async def echo(text: str) -> str:
    """Echo."""
    return text
'''


def echo_plugin() -> Plugin:
    p = Plugin(id="p", name="P", capabilities=["tools.register"])

    @p.tool
    async def echo(text: str) -> str:
        """Echo."""
        return text

    return p


async def measure(call: Callable[[], Awaitable[Any]], n: int) -> dict[str, float]:
    for _ in range(min(20, n)):
        await call()
    samples = []
    t0 = time.perf_counter()
    for _ in range(n):
        s = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - s)
    total = time.perf_counter() - t0
    samples.sort()
    return {
        "p50_us": statistics.median(samples) * 1e6,
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6,
        "calls_s": n / total,
    }


async def bench(n: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        host = Host(Policy(), plugins=[echo_plugin()], base_dir=tmp, discover=False)
        async with host:
            args = {"text": "hi"}
            out["in-process host.call_tool"] = await measure(
                lambda: host.call_tool("plugin_p_echo", args), n
            )
            app = create_app(host, None, token=TOKEN)
            cfg = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
            server = uvicorn.Server(cfg)
            task = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            headers = {"Authorization": f"Bearer {TOKEN}"}
            try:
                async with (
                    httpx2.AsyncClient(headers=headers) as http,
                    streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http) as (
                        read,
                        write,
                    ),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    out["MCP streamable HTTP /mcp"] = await measure(
                        lambda: session.call_tool("plugin_p_echo", args), n
                    )
            finally:
                server.should_exit = True
                await task
        base = Path(tmp)
        (base / "plugins" / "p").mkdir(parents=True)
        (base / "plugins" / "p" / "plugin.py").write_text(PLUGIN)
        (base / "plugins" / "p" / "plugin.toml").write_text(
            'id = "p"\nname = "P"\nversion = "1.0.0"\napi_version = "1.0"\n'
            'entry = "plugin.py"\ncapabilities = ["tools.register"]\n'
        )
        (base / "tether.toml").write_text('[plugins.p]\ngrant = ["tools.register"]\n')
        tether = str(Path(sys.executable).parent / "tether")
        params = StdioServerParameters(
            command=tether, args=["mcp", "--config", str(base / "tether.toml")], cwd=tmp
        )
        async with (
            stdio_client(params) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            out["MCP stdio `tether mcp`"] = await measure(
                lambda: session.call_tool("plugin_p_echo", {"text": "hi"}), n
            )
    return out


def report(results: dict[str, dict[str, float]]) -> str:
    lines = ["| path | p50 | p99 | calls/s |", "|---|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['p50_us']:.0f} µs | {r['p99_us']:.0f} µs | {r['calls_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny loops (smoke test)")
    ns = ap.parse_args()
    print(report(asyncio.run(bench(30 if ns.quick else 1000))))


if __name__ == "__main__":
    main()
