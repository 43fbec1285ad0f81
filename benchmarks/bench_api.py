"""REST API throughput and latency for a trivial tool call, against the in-process call.

    python benchmarks/bench_api.py                 # 4,000 calls, 16 concurrent clients
    python benchmarks/bench_api.py --requests 500 --concurrency 4

The server (host + app + uvicorn) runs in a background thread with its own event loop, as
`tether serve` would; the clients run in the main thread: `concurrency` httpx clients with
keep-alive, each sending its share of `POST /api/tools/plugin_bench_add` one after another.
The baseline is `host.call_tool` called directly in the server's loop (no HTTP). Reported:
requests per second (wall clock over all calls) and p50/p99 latency per call.

Other transports (the MCP gateway) add a measure function to `TRANSPORTS` below: an async
function `(base_url, requests, concurrency) -> Figures`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from tether import Host, Plugin, Policy
from tether.server.app import create_app

TOKEN = "bench-token"
TOOL = "plugin_bench_add"

bench = Plugin(id="bench", name="Bench", capabilities=["tools.register"])


@bench.tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@dataclass(frozen=True)
class Figures:
    label: str
    calls: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.calls / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def row(self) -> str:
        return (
            f"| {self.label} | {self.calls} | {self.rps:,.0f} | {self.pct(0.5):.2f} | "
            f"{self.pct(0.99):.2f} |"
        )


class ServerThread:
    """A started host and its app served by uvicorn on 127.0.0.1, in its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.base_url = ""
        self.host: Host | None = None
        self._server: uvicorn.Server | None = None
        self._tmp = tempfile.TemporaryDirectory()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        import socket

        async with Host(Policy(), base_dir=self._tmp.name, plugins=[bench], discover=False) as h:
            self.host = h
            app = create_app(h, None, token=TOKEN)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.bind(("127.0.0.1", 0))
            self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
            self._server = uvicorn.Server(config)
            task = asyncio.create_task(self._server.serve(sockets=[sock]))
            while not self._server.started:
                await asyncio.sleep(0.01)
            self.ready.set()
            await task
            sock.close()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self.ready.wait(20):
            raise RuntimeError("the benchmark server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.should_exit = True
        self._thread.join(15)
        self._tmp.cleanup()

    def call(self, coro: Awaitable[Any]) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return fut.result()


async def measure_rest(base_url: str, requests: int, concurrency: int) -> Figures:
    """`POST /api/tools/{name}` from `concurrency` keep-alive clients."""
    latencies: list[float] = []
    per_client = max(1, requests // concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def client(n: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as c:
            await c.post(f"/api/tools/{TOOL}", json={"a": 0, "b": 0})  # connect first
            for i in range(per_client):
                t0 = time.perf_counter()
                r = await c.post(f"/api/tools/{TOOL}", json={"a": n, "b": i})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200 or r.json()["content"] != str(n + i):
                    raise RuntimeError(f"bad answer: {r.status_code} {r.text}")

    t0 = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return Figures(
        f"REST, {concurrency} clients", len(latencies), time.perf_counter() - t0, latencies
    )


async def measure_inprocess(host: Host, requests: int) -> Figures:
    """The baseline: `host.call_tool` in the server's own loop, one call after another."""
    latencies: list[float] = []
    await host.call_tool(TOOL, {"a": 0, "b": 0})
    t0 = time.perf_counter()
    for i in range(requests):
        s = time.perf_counter()
        await host.call_tool(TOOL, {"a": i, "b": 1})
        latencies.append(time.perf_counter() - s)
    return Figures("in-process host.call_tool", requests, time.perf_counter() - t0, latencies)


Measure = Callable[[str, int, int], Awaitable[Figures]]
TRANSPORTS: list[Measure] = [measure_rest]
"""HTTP transports measured against the running server (the MCP gateway's goes here)."""


def run(requests: int = 4000, concurrency: int = 16) -> list[Figures]:
    with ServerThread() as server:
        assert server.host is not None
        figures = [server.call(measure_inprocess(server.host, requests))]
        for measure in TRANSPORTS:
            figures.append(asyncio.run(measure(server.base_url, requests, concurrency)))
            figures.append(asyncio.run(measure(server.base_url, requests // 4, 1)))
    return figures


def report(figures: list[Figures]) -> str:
    lines = [
        "| path | calls | calls/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
        *(f.row() for f in figures),
    ]
    base = figures[0]
    for f in figures[1:]:
        extra = statistics.median(f.latencies) - statistics.median(base.latencies)
        lines.append(f"\n{f.label}: HTTP adds {extra * 1e6:,.0f} µs per call at the median")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(report(run(args.requests, args.concurrency)))


if __name__ == "__main__":
    main()
