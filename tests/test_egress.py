"""Outbound HTTP (`ctx.http`, `EgressService`, `check_url`): allowlist, SSRF defence on
resolved addresses, pinned connections, redirects, limits, User-Agent, audit and mTLS.

Real HTTP(S) servers run on 127.0.0.1 inside the test's event loop. 127.0.0.1 is private,
so tests either open it with private_hosts or map a public-looking name (api.example.com)
to it with an injected resolver AND open it, so the name check and the address check both
run. Nothing here needs DNS or leaves the machine; the only doubles are at the edge (the
resolver, and once the network backend).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ipaddress
import json
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tether import CapabilityViolationError, Context, EgressBlockedError, Host, Plugin, Policy
from tether.contract.hosts import HostAllowlist
from tether.contract.policy import MtlsFiles, PluginPolicy
from tether.runtime.http_facade import MtlsRef
from tether.services.audit import AuditLog
from tether.services.database import Database
from tether.services.egress import (
    EgressError,
    EgressGrant,
    EgressService,
    EgressTimeoutError,
    ResponseTooLargeError,
    check_url,
)
from tether.services.egress_addresses import blocked_reason, parse_networks
from tether.services.egress_check import Resolver, static_resolver

# --- a small HTTP/1.1 server ----------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer_cn: str | None = None


@dataclass
class Server:
    """Routes: /ok, /headers, /echo, /r/<n> (n relative redirects), /to?u=<url>&s=<status>,
    /endless (chunked forever), /declared (Content-Length too big), /bomb (gzip bomb),
    /slow (5 s), /whoami (client certificate CN)."""

    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    cut: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> Server:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):  # let open handlers end instead of being cancelled
            writer.close()
        await asyncio.sleep(0.01)
        await self._server.wait_closed()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        cert = writer.get_extra_info("peercert")
        cn = None
        if cert:
            cn = next(v for rdn in cert["subject"] for k, v in rdn if k == "commonName")
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *lines = head.split("\r\n")
                method, target, _ = line.split(" ")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (h.partition(":") for h in lines if h)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(Seen(method, target, headers, body, cn))
                await self._route(writer, method, target, headers, body, cn)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes = b"",
        extra: dict[str, str] | None = None,
    ) -> None:
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
        for k, v in (extra or {}).items():
            head += f"{k}: {v}\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()

    async def _route(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        cn: str | None,
    ) -> None:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/ok":
            await self._send(writer, 200, b"hello", {"Content-Type": "text/plain"})
        elif path == "/headers":
            await self._send(writer, 200, json.dumps(headers).encode())
        elif path == "/echo":
            data = {"method": method, "body": body.decode(), "type": headers.get("content-type")}
            await self._send(writer, 200, json.dumps(data).encode())
        elif path.startswith("/r/"):
            n = int(path[3:])
            if n == 0:
                await self._send(writer, 200, b"done")
            else:
                await self._send(writer, 302, b"", {"Location": f"/r/{n - 1}"})
        elif path == "/to":
            status = int(query.get("s", ["302"])[0])
            await self._send(writer, status, b"", {"Location": unquote(query["u"][0])})
        elif path == "/endless":
            writer.write(b"HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"x" * 16384
            try:
                while True:
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
                    await asyncio.sleep(0.001)
            except (ConnectionError, RuntimeError):
                self.cut.set()
                raise ConnectionResetError from None
        elif path == "/declared":
            writer.write(b"HTTP/1.1 200 X\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 10)
            await writer.drain()
            await asyncio.sleep(5)
        elif path == "/bomb":
            packed = gzip.compress(b"\0" * (20 * 1024 * 1024))
            await self._send(writer, 200, packed, {"Content-Encoding": "gzip"})
        elif path == "/small-gzip":
            await self._send(writer, 200, gzip.compress(b"unpacked"), {"Content-Encoding": "gzip"})
        elif path == "/slow":
            await asyncio.sleep(5)
            await self._send(writer, 200, b"late")
        elif path == "/whoami":
            await self._send(writer, 200, (cn or "anonymous").encode())
        else:
            await self._send(writer, 404, b"no such path")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = await Server().start()
    yield srv
    await srv.close()


# --- helpers ----------------------------------------------------------------------------------


def counting(table: dict[str, list[list[str]]]) -> tuple[Resolver, list[str]]:
    """A resolver answering each host's list of answers in turn; records every lookup."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        answers = table[host]
        return answers[min(len(calls) - 1, len(answers) - 1)]

    return resolve, calls


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(Database(tmp_path / "audit.db"))


def grant(*patterns: str, private: tuple[str, ...] = ("127.0.0.1",), **kw: Any) -> EgressGrant:
    return EgressGrant("p", HostAllowlist(patterns), parse_networks(private), **kw)


def records(audit: AuditLog) -> list[dict[str, Any]]:
    """Egress records, oldest first, as detail dicts with the message."""
    out = []
    for r in reversed(audit.read(kind="egress", limit=100)):
        out.append({**r.detail, "message": r.message, "plugin": r.plugin})
    return out


API = static_resolver({"api.example.com": ["127.0.0.1"], "b.example.com": ["127.0.0.1"]})

# --- check_url: every blocked class -----------------------------------------------------------

PUBLIC = "93.184.216.34"
NAMES = static_resolver(
    {
        "api.example.com": [PUBLIC],
        "internal.example.com": ["10.1.2.3"],
        "rebind.example.com": [PUBLIC, "127.0.0.1"],
        "mapped.example.com": ["::ffff:10.0.0.1"],
        "meta.example.com": ["169.254.169.254"],
        "v6local.example.com": ["fe80::1"],
        "cgnat.example.com": ["100.64.1.1"],
        "nothing.example.com": [],
        "garbage.example.com": ["not-an-ip"],
    }
)

BLOCKED: list[tuple[str, str]] = [
    # loopback in every numeric encoding
    ("http://127.0.0.1/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0177.0.0.1/", "means 127.0.0.1, a loopback"),
    ("http://017700000001/", "loopback"),
    ("http://0x7f.0.0.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped form of 127.0.0.1"),
    ("http://[::ffff:7f00:1]/", "IPv4-mapped form of 127.0.0.1"),
    ("http://[::127.0.0.1]/", "IPv4-compatible form of 127.0.0.1"),
    ("http://[2002:a00:1::]/", "6to4 form of 10.0.0.1"),
    ("http://[64:ff9b::c0a8:101]/", "NAT64 form of 192.168.1.1"),
    ("http://[64:ff9b::192.168.1.1]/", "NAT64 form of 192.168.1.1"),
    ("http://[64:ff9b:1::a00:1]/", "local-use NAT64"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    # cloud metadata
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://0xa9fea9fe/", "cloud metadata"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://100.100.100.200/", "cloud metadata"),
    ("http://169.254.170.2/v2/credentials", "cloud metadata"),
    ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
    # this network, private, shared, link-local, unique-local
    ("http://0.0.0.0/", "this network"),
    ("http://0/", "this network"),
    ("http://[::]/", "unspecified"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[fd12:3456::1]/", "unique-local"),
    ("http://[fec0::1]/", "site-local"),
    # multicast, broadcast, reserved, documentation, benchmarking
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.0.8/", "IETF protocol assignment"),
    ("http://192.0.2.1/", "documentation"),
    ("http://198.51.100.7/", "documentation"),
    ("http://203.0.113.9/", "documentation"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://198.19.255.1/", "benchmarking"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://[100::1]/", "discard-only"),
    # localhost names and URL confusions
    ("http://localhost/", "localhost name"),
    ("http://LOCALHOST./", "localhost name"),
    ("http://foo.localhost/", "localhost name"),
    ("http://user@evil.com@api.example.com/", "user info"),
    ("http://user:pass@api.example.com/", "user info"),
    ("http://api.example.com\\@evil.com/", "backslash"),
    ("http://api.example.com /", "whitespace"),
    ("http://api.example.com/\n", "control characters"),
    ("http:///path", "no host"),
    ("http://[fe80::1%25eth0]/", "invalid host"),
    ("http://256.1.1.1/", "not valid"),
    ("http://1.2.3.4.5/", "invalid host"),
    # schemes
    ("file:///etc/passwd", "scheme file:"),
    ("ftp://api.example.com/", "scheme ftp:"),
    ("gopher://api.example.com:70/_x", "scheme gopher:"),
    ("dict://api.example.com:11211/", "scheme dict:"),
    ("ws://api.example.com/", "scheme ws:"),
    ("//api.example.com/", "scheme (none)"),
    # names resolving to private addresses (the address check after the name check)
    ("http://internal.example.com/", "resolves to 10.1.2.3, a private address"),
    ("http://rebind.example.com/", "resolves to 127.0.0.1"),
    ("http://mapped.example.com/", "IPv4-mapped form of 10.0.0.1"),
    ("http://meta.example.com/", "cloud metadata"),
    ("http://v6local.example.com/", "link-local"),
    ("http://cgnat.example.com/", "carrier-grade NAT"),
    ("http://nothing.example.com/", "resolves to no address"),
    ("http://garbage.example.com/", "not an IP address"),
    ("http://unknown.example.com/", "cannot resolve"),
]


@pytest.mark.parametrize(("url", "why"), BLOCKED, ids=[u for u, _ in BLOCKED])
async def test_blocked_without_an_allowlist(url: str, why: str) -> None:
    verdict = await check_url(url, None, (), NAMES)
    assert not verdict.allowed
    assert why in verdict.reason, verdict.reason


def test_the_blocked_table_is_big_enough() -> None:
    assert len(BLOCKED) >= 40


def test_every_range_python_calls_non_global_is_blocked() -> None:
    """The IPv4 table replaces `is_global`; it must cover every range Python knows."""
    constants = ipaddress._IPv4Constants  # type: ignore[attr-defined]
    nets = [
        *constants._private_networks,
        constants._reserved_network,
        constants._multicast_network,
        constants._linklocal_network,
        ipaddress.ip_network("100.64.0.0/10"),
    ]
    for net in nets:
        for ip in (net.network_address, net.broadcast_address):
            assert blocked_reason(ip) is not None, ip
    assert blocked_reason(ipaddress.ip_address(PUBLIC)) is None


ALLOWLIST_CASES = [
    ("http://api.example.com/", ["*.example.com"], True),
    ("http://API.Example.COM./x", ["*.example.com"], True),
    ("http://a.b.example.com/", ["*.example.com"], True),
    ("http://example.com/", ["*.example.com"], False),
    ("http://evil-example.com/", ["*.example.com"], False),
    ("http://example.com.evil.com/", ["*.example.com"], False),
    ("http://api.example.com.evil.com/", ["api.example.com"], False),
    ("http://xapi.example.com/", ["api.example.com"], False),
    ("http://bücher.example.com/", ["xn--bcher-kva.example.com"], True),
    ("http://xn--bcher-kva.example.com/", ["xn--bcher-kva.example.com"], True),
    ("http://api.example.com/", [], False),
]


@pytest.mark.parametrize(("url", "patterns", "ok"), ALLOWLIST_CASES)
async def test_allowlist_matching(url: str, patterns: list[str], ok: bool) -> None:
    resolver, calls = counting(
        {h: [[PUBLIC]] for h in ("api.example.com", "a.b.example.com", "xn--bcher-kva.example.com")}
    )
    verdict = await check_url(url, patterns, (), resolver)
    assert verdict.allowed is ok, verdict.reason
    if ok:
        assert verdict.addresses == (PUBLIC,)
    else:
        assert verdict.rule == "allowlist" and "not in the outbound allowlist" in verdict.reason
        assert calls == []  # the name check runs before any resolution


@pytest.mark.parametrize(
    ("url", "private", "ok"),
    [
        ("http://10.0.0.5/", ["10.0.0.5"], True),
        ("http://10.0.0.6/", ["10.0.0.5"], False),
        ("http://10.0.0.6/", ["10.0.0.0/24"], True),
        ("http://127.0.0.1/", ["127.0.0.1/32"], True),
        ("http://0x7f.1/", ["127.0.0.1/32"], True),
        ("http://[::ffff:127.0.0.1]/", ["127.0.0.1"], True),
        ("http://[::1]/", ["127.0.0.1"], False),
        ("http://169.254.169.254/", ["169.254.0.0/16"], False),  # metadata needs the exact address
        ("http://169.254.169.254/", ["169.254.169.254"], True),
        ("http://0.0.0.0/", ["0.0.0.0/8"], False),  # never a destination
        ("http://224.0.0.1/", ["224.0.0.0/4"], False),
        ("http://[64:ff9b::5db8:d822]/", [], True),  # NAT64 of a public address
        ("http://[2002:5db8:d822::1]/", [], True),  # 6to4 of a public address
        (f"http://{PUBLIC}/", [], True),
    ],
)
async def test_private_hosts_open_only_what_they_name(
    url: str, private: list[str], ok: bool
) -> None:
    verdict = await check_url(url, None, private, NAMES)
    assert verdict.allowed is ok, verdict.reason


async def test_every_resolved_address_must_pass_and_one_resolution_is_made() -> None:
    resolver, calls = counting({"api.example.com": [[PUBLIC, "10.0.0.1"]]})
    verdict = await check_url("https://api.example.com/x", ["api.example.com"], (), resolver)
    assert not verdict.allowed and verdict.rule == "address"
    assert verdict.addresses == (PUBLIC, "10.0.0.1")
    assert calls == ["api.example.com"]
    ok = await check_url(
        "https://api.example.com:8443/", ["api.example.com"], ["10.0.0.1"], resolver
    )
    assert ok.allowed and ok.port == 8443 and ok.scheme == "https"


# --- requests through the service -------------------------------------------------------------


async def test_get_through_name_and_address_checks(server: Server, audit: AuditLog) -> None:
    svc = EgressService(audit, resolver=API)
    r = await svc.request(
        grant("api.example.com"), "GET", f"http://api.example.com:{server.port}/ok?k=secret"
    )
    assert (r.status, r.content, r.text, r.ok) == (200, b"hello", "hello", True)
    seen = server.seen[-1]
    assert seen.headers["user-agent"] == "Tether-Plugin/p"
    assert seen.headers["host"] == f"api.example.com:{server.port}"
    [rec] = records(audit)
    assert rec["plugin"] == "p" and rec["verdict"] == "allowed" and rec["reason"] == ""
    assert (rec["method"], rec["host"], rec["port"], rec["status"], rec["bytes"]) == (
        "GET",
        "api.example.com",
        server.port,
        200,
        5,
    )
    assert rec["addresses"] == ["127.0.0.1"] and rec["duration_ms"] > 0
    assert rec["timeout_ms"] == 10_000 and rec["max_bytes"] == 5 * 1024 * 1024
    assert "secret" not in rec["message"]  # the query may hold credentials
    await svc.aclose()


async def test_private_address_is_refused_unless_opened(server: Server, audit: AuditLog) -> None:
    svc = EgressService(audit, resolver=API)
    url = f"http://api.example.com:{server.port}/ok"
    with pytest.raises(EgressBlockedError) as info:
        await svc.request(grant("api.example.com", private=()), "GET", url)
    assert "resolves to 127.0.0.1, a loopback address" in info.value.reason
    assert "[plugins.p] private_hosts" in str(info.value)
    assert server.seen == [] and server.connections == 0
    [rec] = records(audit)
    assert rec["verdict"] == "blocked" and rec["status"] is None and "loopback" in rec["reason"]
    # Opened by address, a numeric URL needs the address itself in the allowlist.
    r = await svc.request(grant("127.0.0.1"), "GET", f"http://0x7f.1:{server.port}/ok")
    assert r.status == 200
    await svc.aclose()


async def test_rebinding_cannot_move_the_connection(server: Server, audit: AuditLog) -> None:
    """The first answer is checked and connected to; a second answer is never asked for."""
    resolver, calls = counting({"api.example.com": [["127.0.0.1"], ["10.9.9.9"]]})
    svc = EgressService(audit, resolver=resolver)
    r = await svc.request(
        grant("api.example.com"), "GET", f"http://api.example.com:{server.port}/ok"
    )
    assert r.status == 200 and calls == ["api.example.com"]
    assert len(server.seen) == 1  # the connection went to the checked 127.0.0.1
    await svc.aclose()


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """The machine's edge: records where the client asks to connect, then connects to the
    local test server instead, so a public address in a test never leaves the machine."""

    def __init__(self, port: int) -> None:
        self.asked: list[tuple[str, int]] = []
        self._port = port
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        self.asked.append((host, port))
        return await self._real.connect_tcp("127.0.0.1", self._port, timeout=timeout)

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


async def test_rebinding_public_then_loopback_connects_to_the_checked_public_address(
    server: Server, audit: AuditLog
) -> None:
    resolver, calls = counting({"api.example.com": [[PUBLIC], ["127.0.0.1"]]})
    edge = RecordingBackend(server.port)
    svc = EgressService(audit, resolver=resolver, network_backend=edge)
    g = grant("api.example.com", private=())
    r = await svc.request(g, "GET", "http://api.example.com/ok")
    assert r.status == 200
    assert calls == ["api.example.com"]
    assert edge.asked == [(PUBLIC, 80)]  # the checked address, not the name, not 127.0.0.1
    assert server.seen[-1].headers["host"] == "api.example.com"
    await svc.aclose()


async def test_keep_alive_is_reused_only_for_the_same_checked_addresses(
    server: Server, audit: AuditLog
) -> None:
    svc = EgressService(audit, resolver=API)
    g = grant("api.example.com")
    for _ in range(3):
        await svc.request(g, "GET", f"http://api.example.com:{server.port}/ok")
    assert server.connections == 1 and len(server.seen) == 3
    # Another answer is another set of checked addresses: a new connection, never the old.
    svc.resolver = static_resolver({"api.example.com": ["127.0.0.1", "127.0.0.2"]})
    g2 = grant("api.example.com", private=("127.0.0.0/8",))
    r = await svc.request(g2, "GET", f"http://api.example.com:{server.port}/ok")
    assert r.status == 200 and server.connections == 2
    await svc.aclose()


# --- redirects --------------------------------------------------------------------------------


async def test_redirects_are_followed_up_to_three(server: Server, audit: AuditLog) -> None:
    svc = EgressService(audit, resolver=API)
    g = grant("api.example.com")
    r = await svc.request(g, "GET", f"http://api.example.com:{server.port}/r/3")
    assert (r.status, r.text) == (200, "done")
    assert r.url == f"http://api.example.com:{server.port}/r/0"
    hops = records(audit)
    assert [h["redirect"] for h in hops] == [0, 1, 2, 3]
    assert [h["status"] for h in hops] == [302, 302, 302, 200]
    with pytest.raises(EgressBlockedError, match="too many redirects: at most 3"):
        await svc.request(g, "GET", f"http://api.example.com:{server.port}/r/4")
    assert [s.path for s in server.seen[-4:]] == ["/r/4", "/r/3", "/r/2", "/r/1"]
    last = records(audit)[-1]
    assert last["verdict"] == "blocked" and last["redirect"] == 4
    await svc.aclose()


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://10.0.0.1/x", "not in the outbound allowlist"),
        ("http://internal.example.com/x", "resolves to 10.0.0.7, a private address"),
        ("http://other.example.org/x", "not in the outbound allowlist"),
        ("file:///etc/passwd", "scheme file:"),
        ("http://169.254.169.254/latest/meta-data/", "not in the outbound allowlist"),
    ],
)
async def test_redirects_pass_the_same_checks(
    server: Server, audit: AuditLog, target: str, why: str
) -> None:
    resolver = static_resolver(
        {
            "api.example.com": ["127.0.0.1"],
            "internal.example.com": ["10.0.0.7"],
            "other.example.org": [PUBLIC],
        }
    )
    svc = EgressService(audit, resolver=resolver)
    url = f"http://api.example.com:{server.port}/to?u={target}"
    with pytest.raises(EgressBlockedError) as info:
        await svc.request(grant("*.example.com"), "GET", url)
    assert why in info.value.reason
    first, second = records(audit)
    assert first["status"] == 302 and first["verdict"] == "allowed"
    assert second["verdict"] == "blocked" and second["redirect"] == 1 and why in second["reason"]
    assert len(server.seen) == 1
    await svc.aclose()


async def test_cross_origin_redirect_drops_credentials_and_303_becomes_get(
    server: Server, audit: AuditLog
) -> None:
    svc = EgressService(audit, resolver=API)
    g = grant("*.example.com")
    target = f"http://b.example.com:{server.port}/headers"
    r = await svc.request(
        g,
        "GET",
        f"http://api.example.com:{server.port}/to?u={target}",
        headers={"Authorization": "Bearer t", "X-Keep": "1"},
    )
    echoed = r.json()
    assert "authorization" not in echoed and echoed["x-keep"] == "1"
    assert server.seen[0].headers["authorization"] == "Bearer t"
    echo = f"http://api.example.com:{server.port}/echo"
    r = await svc.request(
        g, "POST", f"http://api.example.com:{server.port}/to?s=303&u={echo}", json={"a": 1}
    )
    assert r.json() == {"method": "GET", "body": "", "type": None}
    r = await svc.request(
        g, "POST", f"http://api.example.com:{server.port}/to?s=307&u={echo}", json={"a": 1}
    )
    assert r.json() == {"method": "POST", "body": '{"a":1}', "type": "application/json"}
    await svc.aclose()


# --- limits -----------------------------------------------------------------------------------


@pytest.mark.timeout(20)
async def test_a_body_over_the_limit_cuts_the_connection(server: Server, audit: AuditLog) -> None:
    svc = EgressService(audit, resolver=API)
    started = time.perf_counter()
    with pytest.raises(ResponseTooLargeError) as info:
        await svc.request(
            grant("api.example.com"),
            "GET",
            f"http://api.example.com:{server.port}/endless",
            max_bytes=100_000,
        )
    assert "larger than 100,000 bytes" in info.value.reason
    assert "connection was closed" in info.value.reason
    assert isinstance(info.value, EgressBlockedError)
    await asyncio.wait_for(server.cut.wait(), 5)  # the server saw its peer go away
    assert time.perf_counter() - started < 5
    [rec] = records(audit)
    assert rec["verdict"] == "blocked" and rec["status"] == 200 and rec["bytes"] > 100_000
    await svc.aclose()


async def test_declared_length_and_gzip_bombs_fail_early(server: Server, audit: AuditLog) -> None:
    svc = EgressService(audit, resolver=API)
    g = grant("api.example.com", max_bytes=1_000_000)
    started = time.perf_counter()
    with pytest.raises(ResponseTooLargeError):
        await svc.request(g, "GET", f"http://api.example.com:{server.port}/declared")
    assert time.perf_counter() - started < 2  # not waiting for 50 MB that never comes
    with pytest.raises(ResponseTooLargeError, match="1,000,000 bytes"):
        await svc.request(g, "GET", f"http://api.example.com:{server.port}/bomb")
    r = await svc.request(g, "GET", f"http://api.example.com:{server.port}/small-gzip")
    assert r.content == b"unpacked"
    await svc.aclose()


async def test_head_is_not_judged_by_its_content_length(server: Server, audit: AuditLog) -> None:
    svc = EgressService(audit, resolver=API)
    g = grant("api.example.com", max_bytes=3)
    r = await svc.request(g, "HEAD", f"http://api.example.com:{server.port}/ok")
    assert (r.status, r.content, r.headers["content-length"]) == (200, b"", "5")
    assert server.seen[-1].method == "HEAD"
    await svc.aclose()


async def test_per_call_limits_are_capped(server: Server, audit: AuditLog) -> None:
    svc = EgressService(audit, resolver=API)
    g = grant("api.example.com", max_bytes=4)
    with pytest.raises(ResponseTooLargeError, match="larger than 4 bytes"):
        await svc.request(g, "GET", f"http://api.example.com:{server.port}/ok", max_bytes=10**9)
    r = await svc.request(g, "GET", f"http://api.example.com:{server.port}/r/0", timeout_ms=10**9)
    assert r.content == b"done"
    assert records(audit)[-1]["timeout_ms"] == 30_000 and records(audit)[-1]["max_bytes"] == 4
    with pytest.raises(ValueError, match="timeout_ms must be a positive integer"):
        await svc.request(g, "GET", f"http://api.example.com:{server.port}/ok", timeout_ms=0)
    assert records(audit)[-1]["verdict"] == "blocked"
    await svc.aclose()


@pytest.mark.timeout(10)
async def test_timeout_covers_the_whole_call(server: Server, audit: AuditLog) -> None:
    svc = EgressService(audit, resolver=API)
    started = time.perf_counter()
    with pytest.raises(EgressTimeoutError, match="timed out"):
        await svc.request(
            grant("api.example.com"),
            "GET",
            f"http://api.example.com:{server.port}/slow",
            timeout_ms=300,
        )
    assert 0.25 < time.perf_counter() - started < 2
    assert records(audit)[-1]["reason"].startswith("timed out")
    await svc.aclose()


async def test_request_arguments_are_checked(server: Server, audit: AuditLog) -> None:
    svc = EgressService(audit, resolver=API)
    g = grant("api.example.com")
    url = f"http://api.example.com:{server.port}/ok"
    with pytest.raises(ValueError, match="Host header"):
        await svc.request(g, "GET", url, headers={"Host": "internal"})
    with pytest.raises(ValueError, match="method 'CONNECT' is not allowed"):
        await svc.request(g, "CONNECT", url)
    with pytest.raises(ValueError, match="not both"):
        await svc.request(g, "POST", url, content=b"x", json={})
    r = await svc.request(
        g, "GET", f"http://api.example.com:{server.port}/headers", headers={"User-Agent": "spoofed"}
    )
    assert r.json()["user-agent"] == "Tether-Plugin/p"  # the host's header wins
    assert server.seen and all(s.path != "/ok" for s in server.seen)
    assert [r["verdict"] for r in records(audit)] == ["blocked", "blocked", "blocked", "allowed"]
    await svc.aclose()


async def test_connection_failure_is_an_egress_error(audit: AuditLog) -> None:
    svc = EgressService(audit, resolver=API)
    with pytest.raises(EgressError, match="ConnectError"):
        await svc.request(grant("api.example.com"), "GET", "http://api.example.com:1/")
    assert (
        records(audit)[-1]["verdict"] == "allowed"
        and "ConnectError" in records(audit)[-1]["reason"]
    )
    await svc.aclose()


# --- through a plugin's context ---------------------------------------------------------------


def http_plugin(pid: str = "web", **manifest: Any) -> Plugin:
    plugin = Plugin(id=pid, name=pid, **manifest)

    @plugin.tool
    async def fetch(ctx: Context, url: str, method: str = "GET") -> dict[str, Any]:
        """Fetch a URL."""
        try:
            r = await ctx.http.request(method, url, json={"n": 1} if method == "POST" else None)
        except EgressBlockedError as exc:
            return {"blocked": exc.reason}
        return {"status": r.status, "body": r.text}

    return plugin


async def test_plugin_uses_the_intersection_and_private_hosts(
    server: Server, tmp_path: Path
) -> None:
    plugin = http_plugin(
        capabilities=["tools.register", "http.outbound"],
        outbound_hosts=["api.example.com", "b.example.com"],
    )
    policy = Policy(
        plugins={
            "web": PluginPolicy(
                grant=["tools.register", "http.outbound"],
                outbound_hosts=["api.example.com"],
                private_hosts=["127.0.0.1"],
            )
        }
    )
    async with Host(policy, base_dir=tmp_path, plugins=[plugin], discover=False) as host:
        host.services.egress.resolver = API
        ok = await host.call_tool(
            "plugin_web_fetch", {"url": f"http://api.example.com:{server.port}/headers"}
        )
        assert ok.data is not None and ok.data["status"] == 200
        assert json.loads(ok.data["body"])["user-agent"] == "Tether-Plugin/web"
        refused = await host.call_tool(
            "plugin_web_fetch", {"url": f"http://b.example.com:{server.port}/ok"}
        )
        assert (
            refused.data is not None
            and "not in the outbound allowlist (api.example.com)" in refused.data["blocked"]
        )
        posted = await host.call_tool(
            "plugin_web_fetch",
            {"url": f"http://api.example.com:{server.port}/echo", "method": "POST"},
        )
        assert posted.data is not None and json.loads(posted.data["body"])["body"] == '{"n":1}'
        recs = [r for r in host.audit.read(plugin="web", kind="egress")]
        assert [r.detail["verdict"] for r in reversed(recs)] == ["allowed", "blocked", "allowed"]


async def test_without_the_capability_the_call_is_refused_and_audited(
    server: Server, tmp_path: Path
) -> None:
    plugin = http_plugin(
        capabilities=["tools.register", "http.outbound"], outbound_hosts=["api.example.com"]
    )
    policy = Policy(
        plugins={
            "web": PluginPolicy(
                grant=["tools.register"],
                outbound_hosts=["api.example.com"],
                private_hosts=["127.0.0.1"],
            )
        }
    )
    async with Host(policy, base_dir=tmp_path, plugins=[plugin], discover=False) as host:
        host.services.egress.resolver = API
        ctx = plugin.context
        with pytest.raises(CapabilityViolationError, match=r"http\.outbound"):
            await ctx.http.get(f"http://api.example.com:{server.port}/ok")
        assert server.seen == []
        [rec] = host.audit.read(plugin="web", kind="egress")
        assert rec.detail["verdict"] == "blocked" and "http.outbound" in rec.detail["reason"]
        assert host.audit.read(plugin="web", kind="capability_violation")


# --- mTLS -------------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    dns: str | None = None,
    client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if dns:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, srv_key, cli_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("Test CA", ca_key, "Test CA", ca_key, ca=True)
    srv = _cert("api.example.com", srv_key, "Test CA", ca_key, dns="api.example.com")
    cli = _cert("tether-client", cli_key, "Test CA", ca_key, client=True)
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write(d / "server.pem", srv, srv_key)
    _write(d / "client.pem", cli, cli_key)
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[Server]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv = await Server(tls=ctx).start()
    yield srv
    await srv.close()


def mtls_plugin() -> Plugin:
    plugin = Plugin(
        id="corpapi",
        name="Corp API",
        capabilities=["tools.register", "http.outbound", "secrets.mtls"],
        outbound_hosts=["api.example.com", "other.example.com"],
        mtls_secrets=["corp"],
    )

    @plugin.tool
    async def whoami(ctx: Context, url: str) -> str:
        """Ask the server who we are."""
        return (await ctx.http.get(url, mtls=ctx.secrets.mtls("corp"))).text

    return plugin


async def test_mtls_by_reference(
    tls_server: Server, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    (tmp_path / "certs").mkdir()
    for src in (pki.client_cert, pki.client_key):
        (tmp_path / "certs" / src.name).write_bytes(src.read_bytes())
    policy = Policy(
        plugins={
            "corpapi": PluginPolicy(
                grant=["tools.register", "http.outbound", "secrets.mtls"],
                outbound_hosts=["api.example.com", "other.example.com"],
                private_hosts=["127.0.0.1"],
                mtls={"corp": MtlsFiles(cert="certs/client.pem", key="certs/client.key")},
            )
        }
    )
    plugin = mtls_plugin()
    async with Host(policy, base_dir=tmp_path, plugins=[plugin], discover=False) as host:
        host.services.egress.resolver = static_resolver(
            {"api.example.com": ["127.0.0.1"], "other.example.com": ["127.0.0.1"]}
        )
        url = f"https://api.example.com:{tls_server.port}/whoami"
        result = await host.call_tool("plugin_corpapi_whoami", {"url": url})
        assert (result.content, result.is_error) == ("tether-client", False)
        assert tls_server.seen[-1].peer_cn == "tether-client"

        ctx = plugin.context
        ref = ctx.secrets.mtls("corp")
        assert ref == MtlsRef("corp") and repr(ref) == "MtlsRef('corp')"
        assert set(vars(ref) if hasattr(ref, "__dict__") else ref.__slots__) == {"name"}
        with pytest.raises(CapabilityViolationError, match="not declared"):
            ctx.secrets.mtls("other")
        with pytest.raises(CapabilityViolationError, match="not declared"):
            await ctx.http.get(url, mtls=MtlsRef("other"))
        # Without the client certificate the server refuses the handshake.
        with pytest.raises(EgressError):
            await ctx.http.get(url)
        # The certificate is checked against the URL's name, not the pinned address.
        with pytest.raises(EgressError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await ctx.http.get(f"https://other.example.com:{tls_server.port}/whoami", mtls=ref)
        # Files that disappear give a clear error naming the policy table, not the path.
        (tmp_path / "certs" / "client.key").unlink()
        with pytest.raises(Exception, match=r"\[plugins\.corpapi\.mtls\.corp\]") as info:
            await ctx.http.get(url, mtls=ref)
        assert "client.key" not in str(info.value)


async def test_mtls_needs_declaration_and_provisioning(tmp_path: Path) -> None:
    plugin = mtls_plugin()
    policy = Policy(
        plugins={
            "corpapi": PluginPolicy(
                grant=["tools.register", "http.outbound", "secrets.mtls"],
                outbound_hosts=["api.example.com"],
            )
        }
    )
    async with Host(policy, base_dir=tmp_path, plugins=[plugin], discover=False) as host:
        ctx = plugin.context
        with pytest.raises(CapabilityViolationError, match="not provisioned"):
            ctx.secrets.mtls("corp")
        [rec] = host.audit.read(plugin="corpapi", kind="capability_violation")
        assert rec.detail["capability"] == "secrets.mtls" and "not provisioned" in rec.message
    unprivileged = mtls_plugin()
    policy = Policy(
        plugins={
            "corpapi": PluginPolicy(
                grant=["tools.register", "http.outbound"],
                mtls={"corp": MtlsFiles(cert="c.pem", key="c.key")},
            )
        }
    )
    async with Host(policy, base_dir=tmp_path, plugins=[unprivileged], discover=False) as host:
        with pytest.raises(CapabilityViolationError, match=r"secrets\.mtls"):
            unprivileged.context.secrets.mtls("corp")


@pytest.mark.timeout(60)
def test_the_benchmark_runs(tmp_path: Path) -> None:
    """`benchmarks/bench_egress.py --quick` end to end (its figures are meaningless)."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_egress.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=55,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for row in ("| plain |", "| ctx_ip |", "| ctx_name |", "| check_ip |", "| audit |"):
        assert row in proc.stdout
    assert "ctx.http.get / httpx.AsyncClient.get: " in proc.stdout
    assert list(tmp_path.iterdir()) == []
