"""Subprocess-tier overhead: one trivial tool call round trip through `host.call_tool` on a
subprocess-tier plugin, against

(a) a raw round trip of the same frames (same msgpack framing, same socketpair, same
    reader-callback channel on the host loop) to a trivial child that just answers, and
(b) the official MCP Python SDK's stdio `call_tool` for the same trivial tool, served by a
    tiny `MCPServer` script.

Targets: within 2.5x of (a); at least 12x faster than (b). Medians over interleaved rounds.
Run: `python benchmarks/bench_tiers.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tether import Host
from tether.worker import protocol as p

TARGET_VS_RAW = 2.5
TARGET_VS_MCP = 12.0

PLUGIN = '''from tether import Plugin

plugin = Plugin()


@plugin.tool
async def echo(text: str) -> str:
    """Echo."""
    return text
'''

RAW_CHILD = """
import socket, sys
from tether.worker import protocol as p
sock = socket.socket(fileno=int(sys.argv[1]))
reader = p.FrameReader()
while True:
    msgs = p.recv_blocking(sock, reader)
    if not msgs:
        break
    for m in msgs:
        sock.sendall(p.encode([p.RESULT, m[1], True, [m[3][0]["text"], False, None]]))
"""

MCP_SERVER = """
from mcp.server.mcpserver import MCPServer
mcp = MCPServer("bench")

@mcp.tool()
async def echo(text: str) -> str:
    '''Echo.'''
    return text

mcp.run()
"""


async def _time(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - t0) / n


class RawClient:
    """The transport alone: frames to a child that answers at once."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RAW_CHILD, str(child.fileno())], pass_fds=(child.fileno(),)
        )
        child.close()
        self.futures: dict[int, asyncio.Future[Any]] = {}
        self.channel = p.Channel(parent, self._message, lambda why: None)
        self.next = 0

    def _message(self, msg: list[Any]) -> None:
        self.futures.pop(msg[1]).set_result(msg[3])

    async def call(self) -> Any:
        self.next += 1
        fut = asyncio.get_running_loop().create_future()
        self.futures[self.next] = fut
        self.channel.send([p.CALL, self.next, "tool:echo", [{"text": "hi"}, ["host", []]]])
        return await fut

    def close(self) -> None:
        self.channel.close()
        self.proc.wait(5)


async def run(rounds: int, n: int, n_mcp: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        folder = base / "plugins" / "bench"
        folder.mkdir(parents=True)
        (folder / "plugin.toml").write_text(
            'id = "bench"\nname = "Bench"\nversion = "1.0.0"\napi_version = "1.0"\n'
            'tier = "subprocess"\ncapabilities = ["tools.register"]\n'
        )
        (folder / "plugin.py").write_text(PLUGIN)
        (base / "tether.toml").write_text('[plugins.bench]\ngrant = ["tools.register"]\n')
        (base / "mcp_server.py").write_text(textwrap.dedent(MCP_SERVER))
        params = StdioServerParameters(command=sys.executable, args=[str(base / "mcp_server.py")])
        raw = RawClient()
        samples: dict[str, list[float]] = {"tier": [], "rpc": [], "raw": [], "mcp": []}
        async with (
            Host(base / "tether.toml") as host,
            stdio_client(params) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()

            async def tier() -> Any:
                return await host.call_tool("plugin_bench_echo", {"text": "hi"})

            sup = host.records["bench"].plugin._tether_worker  # type: ignore[union-attr]

            async def rpc() -> Any:  # the proxy's RPC alone, without the host's dispatch
                return await sup.call("tool:echo", [{"text": "hi"}, None])

            async def mcp() -> Any:
                return await session.call_tool("echo", {"text": "hi"})

            assert (await tier()).content == "hi"
            assert (await raw.call())[0] == "hi"
            for _ in range(rounds):
                samples["tier"].append(await _time(tier, n))
                samples["rpc"].append(await _time(rpc, n))
                samples["raw"].append(await _time(raw.call, n))
                samples["mcp"].append(await _time(mcp, n_mcp))
        raw.close()
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args()
    rounds, n, n_mcp = (2, 200, 20) if args.quick else (7, 2000, 200)
    r = asyncio.run(run(rounds, n, n_mcp))
    vs_raw, vs_mcp = r["tier"] / r["raw"], r["mcp"] / r["tier"]
    print(f"subprocess tier call_tool : {r['tier'] * 1e6:8.1f} us")
    print(f"  of which worker RPC     : {r['rpc'] * 1e6:8.1f} us")
    print(f"raw framed round trip     : {r['raw'] * 1e6:8.1f} us")
    print(f"MCP SDK stdio call_tool   : {r['mcp'] * 1e6:8.1f} us")
    ok_raw = "ok" if vs_raw <= TARGET_VS_RAW else "MISSED"
    ok_mcp = "ok" if vs_mcp >= TARGET_VS_MCP else "MISSED"
    print(f"tier / raw = {vs_raw:.2f}x (target <= {TARGET_VS_RAW}x) {ok_raw}")
    print(f"mcp / tier = {vs_mcp:.1f}x (target >= {TARGET_VS_MCP}x) {ok_mcp}")


if __name__ == "__main__":
    main()
