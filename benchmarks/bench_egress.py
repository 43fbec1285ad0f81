"""Outbound HTTP overhead: `ctx.http.get` (every egress check, pinned transport, bounded
body, audit record) against a plain `httpx.AsyncClient.get`, to the same local server.

The server is a minimal keep-alive HTTP/1.1 responder on 127.0.0.1 in the same process and
event loop, so both sides pay the same server cost; the plugin's policy opens 127.0.0.1
with `private_hosts` (and raises `ops_per_minute`, which would otherwise rate-limit the
loop). Both clients keep their connection alive between requests. Wall clock
(`perf_counter`), minimum over interleaved repeats; the parts below are timed on their own.

Run: `python benchmarks/bench_egress.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import httpx

from _timing import Settings, Timing, Variant, compare, fmt_us, ratio, table
from tether import Context, Host, Plugin, Policy
from tether.contract.policy import HostSettings, PluginPolicy, PolicyLimits
from tether.services.egress import check_url
from tether.services.egress_check import static_resolver

BODY = b'{"ok": true}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)

VARIANTS = [
    ("plain", "`await client.get(url)`: one shared `httpx.AsyncClient` (baseline)"),
    ("ctx_ip", "`await ctx.http.get(url)`, URL host 127.0.0.1"),
    ("ctx_name", "`await ctx.http.get(url)`, URL host api.example.com (resolver -> 127.0.0.1)"),
    ("service", "`await egress.request(grant, 'GET', url)`: the service without the facade"),
]
PARTS = [
    ("check_ip", "`check_url` alone, numeric host"),
    ("check_name", "`check_url` alone, name + injected resolver"),
    ("audit", "one `audit.record(...)` (SQLite insert)"),
]


class _Responder(asyncio.Protocol):
    """Answers every request with the same small response; keeps the connection open."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport: Any = transport
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            _, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            self._transport.write(RESPONSE)


def make_plugin() -> Plugin:
    """A plugin with nothing but the grant: the benchmark drives its context directly."""
    plugin = Plugin(
        id="bench",
        name="Bench",
        capabilities=["http.outbound"],
        outbound_hosts=["127.0.0.1", "api.example.com"],
    )
    return plugin


def policy() -> Policy:
    return Policy(
        host=HostSettings(watchdog_ms=5000),  # a batch holds the loop; no report noise
        plugins={
            "bench": PluginPolicy(
                grant=("http.outbound",),
                outbound_hosts=("127.0.0.1", "api.example.com"),
                private_hosts=("127.0.0.1",),
                limits=PolicyLimits(ops_per_minute=10**9),
            )
        },
    )


@dataclass(slots=True)
class EgressReport:
    timings: dict[str, Timing]
    markdown: str = ""


async def measure(settings: Settings) -> EgressReport:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Responder, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    plugin = make_plugin()
    with tempfile.TemporaryDirectory() as tmp:
        host = Host(policy(), base_dir=tmp, plugins=[plugin], discover=False)
        await host.start()
        resolver = static_resolver({"api.example.com": ["127.0.0.1"]})
        host.services.egress.resolver = resolver
        try:
            async with httpx.AsyncClient() as client:
                return await _measure(host, plugin.context, client, port, resolver, settings)
        finally:
            await host.stop()
            server.close()


async def _measure(
    host: Host,
    ctx: Context,
    client: httpx.AsyncClient,
    port: int,
    resolver: Any,
    settings: Settings,
) -> EgressReport:
    by_ip = f"http://127.0.0.1:{port}/v1/items"
    by_name = f"http://api.example.com:{port}/v1/items"
    grant = ctx.http.grant()
    for url in (by_ip, by_name):
        assert (await ctx.http.get(url)).content == BODY
    assert (await client.get(by_ip)).content == BODY
    env: dict[str, Any] = {
        "client": client,
        "http": ctx.http,
        "egress": host.services.egress,
        "grant": grant,
        "check_url": check_url,
        "allow": grant.allowlist,
        "private": grant.private,
        "resolver": resolver,
        "audit": host.audit,
        "by_ip": by_ip,
        "by_name": by_name,
    }
    stmts = {
        "plain": "await client.get(by_ip)",
        "ctx_ip": "await http.get(by_ip)",
        "ctx_name": "await http.get(by_name)",
        "service": "await egress.request(grant, 'GET', by_ip)",
        "check_ip": "await check_url(by_ip, allow, private, resolver)",
        "check_name": "await check_url(by_name, allow, private, resolver)",
        "audit": "audit.record('bench', 'egress', 'GET x -> 200', method='GET', host='h', "
        "port=1, status=200, bytes=12, duration_ms=0.1, verdict='allowed', reason='')",
    }
    timings = await compare(
        [Variant(k, stmts[k], env, is_async=True) for k, _ in VARIANTS + PARTS],
        settings.with_timer(time.perf_counter),
    )
    report = EgressReport(timings)
    report.markdown = render(report, settings)
    return report


def render(report: EgressReport, settings: Settings) -> str:
    t = report.timings
    base = t["plain"].best_us
    rows = [
        [k, what, fmt_us(t[k].best_us), ratio(t[k].best_us, base), fmt_us(t[k].median_us)]
        for k, what in VARIANTS
    ]
    parts = [[k, what, fmt_us(t[k].best_us)] for k, what in PARTS]
    over = t["ctx_ip"].best_us - base
    return "\n\n".join(
        [
            "## Outbound HTTP",
            f"Per-request minimum over {settings.repeats} interleaved repeats (each batch "
            f"about {settings.target_s:g} s), wall clock, keep-alive on both sides.",
            table(["variant", "what runs", "min", "vs plain", "median"], rows),
            f"ctx.http.get / httpx.AsyncClient.get: {ratio(t['ctx_ip'].best_us, base)} "
            f"(+{fmt_us(over)} per request).",
            "Parts measured on their own:",
            table(["part", "what runs", "min"], parts),
        ]
    )


def run(settings: Settings) -> EgressReport:
    return asyncio.run(measure(settings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny loops (smoke test)")
    args = parser.parse_args(argv)
    print(run(Settings.for_mode(args.quick)).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
