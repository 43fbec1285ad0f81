"""Audited outbound HTTP for plugins (capability `http.outbound`).

Every request passes `check_url` (scheme, allowlist, one DNS resolution, every address
judged) and then connects only to the checked addresses; every redirect hop passes the same
checks, at most `MAX_REDIRECTS` of them. Bodies are streamed and cut at the size limit, the
whole call has one deadline, every request carries `User-Agent: Tether-Plugin/<id>`, and
every call leaves an audit record of kind `egress`. See docs/egress.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi
import httpcore
import httpx

from tether.contract.errors import EgressBlockedError, TetherError
from tether.contract.hosts import HostAllowlist
from tether.services.audit import AuditLog
from tether.services.egress_check import (
    DEFAULT_PORTS,
    Resolver,
    Verdict,
    check_url,
    system_resolver,
)
from tether.services.egress_client import (
    BodyTooLarge,
    HttpResponse,
    MtlsRef,
    PinnedTransport,
    TransportCache,
    build_body,
    read_limited,
)
from tether.services.egress_grant import EgressGrant
from tether.services.egress_tls import TlsContexts

__all__ = [
    "MAX_REDIRECTS",
    "MAX_TIMEOUT_MS",
    "EgressBlockedError",
    "EgressError",
    "EgressGrant",
    "EgressService",
    "EgressTimeoutError",
    "HttpResponse",
    "MtlsRef",
    "ResponseTooLargeError",
    "Verdict",
    "check_url",
    "system_resolver",
]

MAX_REDIRECTS = 3
MAX_TIMEOUT_MS = 30_000
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CROSS_ORIGIN_DROP = ("authorization", "proxy-authorization", "cookie")


class EgressError(TetherError):
    """An allowed request failed on the way (connection, TLS, protocol, timeout)."""

    def __init__(self, plugin_id: str, url: str, message: str) -> None:
        self.plugin_id = plugin_id
        self.url = url
        super().__init__(f"plugin {plugin_id!r}: request to {url} failed: {message}")


class EgressTimeoutError(EgressError):
    """The call did not finish within its timeout (resolution, redirects and body included)."""


class ResponseTooLargeError(EgressBlockedError):
    """The response body went past the size limit; the connection was cut."""


@dataclass(slots=True)
class _Call:
    """One call in flight: what to send, and what the audit says about the current hop."""

    grant: EgressGrant
    method: str
    url: str
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes = b""
    timeout_s: float = 0.0
    limit: int = 0
    mtls: MtlsRef | str | None = None
    started: float = field(default_factory=time.perf_counter)
    host: str = ""
    port: int = 0
    addresses: tuple[str, ...] = ()
    hop: int = 0


def _shown(url: httpx.URL | str) -> str:
    """A URL for messages and the audit: no user info, query or fragment (they may hold
    secrets)."""
    if isinstance(url, httpx.URL):
        parsed = url
    else:
        try:
            parsed = httpx.URL(url)
        except Exception:
            return repr(url)[:200]
    # Assembled by hand: URL.copy_with re-parses and re-quotes, ~20x slower.
    host = parsed.raw_host.decode("ascii", "replace")
    host = f"[{host}]" if ":" in host else host
    port = f":{parsed.port}" if parsed.port is not None else ""
    path = parsed.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    return f"{parsed.scheme}://{host}{port}{path}"


def _default_verify() -> str:
    """CA bundle: `$SSL_CERT_FILE` when set (as httpx, requests and curl do), else certifi."""
    return os.environ.get("SSL_CERT_FILE") or certifi.where()


class EgressService:
    """The host's outbound HTTP. `resolver` (default: the system's `getaddrinfo`) and
    `network_backend` (default: httpcore's) are the edges tests may replace; `verify` is a
    CA bundle file or folder (default: `$SSL_CERT_FILE`, else certifi's bundle)."""

    def __init__(
        self,
        audit: AuditLog | None = None,
        *,
        base_dir: Path | None = None,
        resolver: Resolver | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        verify: str | Path | None = None,
    ) -> None:
        self.audit = audit
        self.base_dir = base_dir or Path.cwd()
        self.resolver: Resolver = resolver or system_resolver
        self.network_backend = network_backend
        self._tls = TlsContexts(verify if verify is not None else _default_verify)
        self._transports = TransportCache()

    # Public API ----------------------------------------------------------------------

    async def check(self, grant: EgressGrant, url: str) -> Verdict:
        """The verdict for `url` under `grant`, without sending anything."""
        return await check_url(url, grant.allowlist, grant.private, self.resolver)

    async def request(
        self,
        grant: EgressGrant,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | str | None = None,
        json: Any = None,
        timeout_ms: int | None = None,
        max_bytes: int | None = None,
        mtls: MtlsRef | str | None = None,
    ) -> HttpResponse:
        """Send a request for the plugin `grant` describes; see the module docstring.

        Raises `EgressBlockedError` (refused; `ResponseTooLargeError` when cut at the size
        limit), `EgressTimeoutError` or `EgressError`; `ValueError` for bad arguments.
        """
        call = _Call(grant, str(method).upper()[:16], _shown(url), mtls=mtls)
        try:
            for name, value in (("timeout_ms", timeout_ms), ("max_bytes", max_bytes)):
                if value is not None and (type(value) is not int or value < 1):
                    raise ValueError(f"{name} must be a positive integer, not {value!r}")
            # A call may ask for up to 30 s (default: the policy's), never more bytes than
            # the policy allows.
            call.timeout_s = min(timeout_ms or grant.timeout_ms, MAX_TIMEOUT_MS) / 1000
            call.limit = min(max_bytes or grant.max_bytes, grant.max_bytes)
            call.headers, call.body = build_body(
                grant.plugin_id, call.method, headers, content, json
            )
            if mtls is not None:
                self._tls.check(grant, mtls)
        except (ValueError, TypeError, TetherError) as exc:
            self._record(call, "blocked", str(exc))
            raise
        try:
            async with asyncio.timeout(call.timeout_s):
                return await self._follow(call, url)
        except TimeoutError:
            reason = f"timed out after {call.timeout_s * 1000:.0f} ms"
            self._record(call, "allowed", reason)
            raise EgressTimeoutError(grant.plugin_id, call.url, reason) from None

    def refused(self, plugin_id: str, method: str, url: str, reason: str) -> None:
        """Audit a call refused before it reached the service (capability, rate limit)."""
        call = _Call(
            EgressGrant(plugin_id, HostAllowlist([])), str(method).upper()[:16], _shown(url)
        )
        with contextlib.suppress(Exception):
            parsed = httpx.URL(url)
            call.host, call.port = parsed.host, parsed.port or DEFAULT_PORTS.get(parsed.scheme, 0)
        self._record(call, "blocked", reason)

    async def aclose(self) -> None:
        """Close pooled connections (the host calls this when it stops)."""
        await self._transports.aclose()

    # Internals -----------------------------------------------------------------------

    async def _follow(self, call: _Call, url: str | httpx.URL) -> HttpResponse:
        grant = call.grant
        for hop in range(MAX_REDIRECTS + 1):
            call.hop, call.started = hop, time.perf_counter()
            verdict = await check_url(url, grant.allowlist, grant.private, self.resolver)
            call.url = _shown(verdict.url or str(url))
            call.host, call.port, call.addresses = verdict.host, verdict.port, verdict.addresses
            if not verdict.allowed:
                self._record(call, "blocked", verdict.reason)
                raise EgressBlockedError(grant.plugin_id, call.url, _hint(grant, verdict))
            current = verdict.url
            assert current is not None
            response = await self._send(call, verdict)
            status = response.status_code
            location = response.headers.get("location") if status in _REDIRECTS else None
            if location is None:
                return await self._read(call, response, str(current))
            await response.aclose()
            self._record(call, "allowed", "redirect", status=status)
            call.hop, call.started = hop + 1, time.perf_counter()
            try:
                url = current.join(location)
            except (httpx.InvalidURL, ValueError) as exc:
                reason = f"the redirect location is not a valid URL ({exc})"
                self._record(call, "blocked", reason)
                raise EgressBlockedError(grant.plugin_id, call.url, reason) from None
            if hop == MAX_REDIRECTS:
                call.url, call.host, call.port = _shown(url), url.host, url.port or 0
                reason = f"too many redirects: at most {MAX_REDIRECTS} are followed"
                self._record(call, "blocked", reason)
                raise EgressBlockedError(grant.plugin_id, call.url, reason)
            _rewrite_for_redirect(call, status, current, url)
        raise AssertionError("unreachable")

    async def _send(self, call: _Call, verdict: Verdict) -> httpx.Response:
        assert verdict.url is not None
        plugin_id = call.grant.plugin_id
        request = httpx.Request(
            call.method, verdict.url, headers=call.headers, content=call.body or None
        )
        request.extensions["timeout"] = httpx.Timeout(call.timeout_s).as_dict()
        try:
            # Only https needs a context; the default one costs ~40 ms to build, once.
            tls_key, tls = (
                self._tls.context_for(call.grant, call.mtls)
                if verdict.scheme == "https"
                else (("plain",), None)
            )
        except TetherError as exc:
            self._record(call, "blocked", str(exc))
            raise
        key = (plugin_id, verdict.scheme, verdict.host, verdict.port, verdict.addresses, tls_key)
        try:
            async with self._transports.lease(
                key, lambda: PinnedTransport(verdict.addresses, tls, self.network_backend)
            ) as transport:
                return await transport.handle_async_request(request)
        except httpx.TimeoutException as exc:
            self._record(call, "allowed", f"timed out: {type(exc).__name__}")
            raise EgressTimeoutError(plugin_id, call.url, f"timed out ({exc})") from None
        except httpx.HTTPError as exc:
            message = f"{type(exc).__name__}: {exc}"
            self._record(call, "allowed", message)
            raise EgressError(plugin_id, call.url, message) from None

    async def _read(self, call: _Call, response: httpx.Response, final_url: str) -> HttpResponse:
        plugin_id, status, limit = call.grant.plugin_id, response.status_code, call.limit
        try:
            content = await read_limited(response, limit, head=call.method == "HEAD")
        except BodyTooLarge as exc:
            reason = (
                f"the response is larger than {limit:,} bytes (max_bytes, capped by "
                f"[plugins.{plugin_id}.limits] http_max_bytes); the connection was closed"
            )
            self._record(call, "blocked", reason, status=status, bytes=exc.seen)
            raise ResponseTooLargeError(plugin_id, call.url, reason) from None
        except httpx.TimeoutException as exc:
            self._record(call, "allowed", "timed out reading the body", status=status)
            raise EgressTimeoutError(plugin_id, call.url, f"timed out ({exc})") from None
        except httpx.HTTPError as exc:
            message = f"reading the body failed: {type(exc).__name__}: {exc}"
            self._record(call, "allowed", message, status=status)
            raise EgressError(plugin_id, call.url, message) from None
        self._record(call, "allowed", "", status=status, bytes=len(content))
        return HttpResponse(status, response.headers, content, final_url)

    def _record(
        self,
        call: _Call,
        verdict: str,
        reason: str,
        *,
        status: int | None = None,
        bytes: int | None = None,
    ) -> None:
        if self.audit is None:
            return
        outcome = f"-> {status}" if status is not None else verdict
        message = f"{call.method} {call.url} {outcome}" + (f": {reason}" if reason else "")
        self.audit.record(
            call.grant.plugin_id,
            "egress",
            message,
            method=call.method,
            host=call.host,
            port=call.port,
            status=status,
            bytes=bytes,
            duration_ms=round((time.perf_counter() - call.started) * 1000, 3),
            verdict=verdict,
            reason=reason,
            redirect=call.hop,
            addresses=list(call.addresses),
            timeout_ms=round(call.timeout_s * 1000),
            max_bytes=call.limit,
        )


def _rewrite_for_redirect(call: _Call, status: int, current: httpx.URL, target: httpx.URL) -> None:
    """Method, body and headers for the next hop, as browsers do: 303 (and 301/302 after a
    POST) become a GET without a body; credentials never follow to another origin."""
    if status == 303 or (status in (301, 302) and call.method == "POST"):
        call.method = "GET" if call.method != "HEAD" else "HEAD"
        call.body = b""
        for key in ("content-type", "content-length", "transfer-encoding"):
            call.headers.pop(key, None)
    if (target.scheme, target.host, target.port) != (current.scheme, current.host, current.port):
        for key in _CROSS_ORIGIN_DROP:
            call.headers.pop(key, None)


def _hint(grant: EgressGrant, verdict: Verdict) -> str:
    """The verdict's reason plus what the operator or plugin author can change."""
    pid, reason = grant.plugin_id, verdict.reason
    if verdict.rule == "allowlist":
        return (
            f"{reason}; add it to the manifest's outbound_hosts and to [plugins.{pid}] "
            "outbound_hosts in tether.toml"
        )
    if verdict.rule == "address":
        return (
            f"{reason}; nothing private is reachable unless [plugins.{pid}] private_hosts opens it"
        )
    return reason
