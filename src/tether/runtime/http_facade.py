"""`ctx.http` (capability `http.outbound`) and `ctx.secrets.mtls` (capability `secrets.mtls`).

`ctx.http` is the plugin's only sanctioned way out: every request goes through the host's
`EgressService` with the plugin's own grant (effective allowlist, opened private networks,
limits, client certificates), and every call is audited, refused ones included. A client
certificate is reached through an opaque `MtlsRef` naming it; the files never reach the
plugin. See docs/egress.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tether.contract.errors import CapabilityViolationError, EgressBlockedError, TetherError
from tether.runtime.facades_data import PluginSecrets as VaultSecrets
from tether.services.egress import (
    EgressError,
    EgressGrant,
    EgressService,
    EgressTimeoutError,
    HttpResponse,
    MtlsRef,
    ResponseTooLargeError,
)

if TYPE_CHECKING:
    from tether.runtime.context import Context

__all__ = [
    "EgressBlockedError",
    "EgressError",
    "EgressTimeoutError",
    "HttpResponse",
    "MtlsRef",
    "PluginHttp",
    "PluginSecrets",
    "ResponseTooLargeError",
]


def _refuse_mtls(ctx: Context, name: object) -> None:
    """Raise (and audit) `CapabilityViolationError` unless the plugin may use `name`."""
    problem = _mtls_problem(ctx, name)
    if problem is not None:
        ctx._services.audit.record(
            ctx.plugin_id,
            "capability_violation",
            problem,
            capability="secrets.mtls",
            action=f"mtls {name!r}",
        )
        raise CapabilityViolationError(ctx.plugin_id, "secrets.mtls", problem)


def _mtls_problem(ctx: Context, name: object) -> str | None:
    """Why the plugin may not use the client certificate `name`, or None."""
    if not isinstance(name, str):
        return f"mTLS references are names (str), not {type(name).__name__}"
    if name not in ctx.manifest.mtls_secrets:
        return f"mTLS certificate {name!r} is not declared in the manifest's mtls_secrets"
    entry = ctx.policy_entry
    if entry is None or name not in entry.mtls:
        return (
            f"mTLS certificate {name!r} is not provisioned: the operator adds "
            f'[plugins.{ctx.plugin_id}.mtls.{name}] cert = "..." and key = "..." to tether.toml'
        )
    return None


class PluginSecrets(VaultSecrets):
    """`ctx.secrets`: `encrypt`/`decrypt` with the host's key (`secrets.encrypt`, from
    runtime/facades_data.py) and opaque client-certificate references (`secrets.mtls`)."""

    def mtls(self, name: str) -> MtlsRef:
        """A reference to the client certificate `name` (declared in the manifest's
        `mtls_secrets`, provisioned under `[plugins.<id>.mtls.<name>]`), for
        `ctx.http.request(..., mtls=ref)`. It holds the name only: no key, no path."""
        self._ctx.require("secrets.mtls", f"mtls {name}")
        _refuse_mtls(self._ctx, name)
        return MtlsRef(name)


class PluginHttp:
    """`ctx.http`: audited outbound HTTP to the hosts both the manifest and the operator
    allow. Raises `EgressBlockedError` when a rule refuses a request (the host is outside
    the allowlist, an address is private, a redirect goes astray, the body is too large),
    `EgressTimeoutError` / `EgressError` when an allowed request fails, and
    `CapabilityViolationError` without `http.outbound`."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._grant: EgressGrant | None = None

    def _service(self) -> EgressService:
        return self._ctx._services.egress

    def grant(self) -> EgressGrant:
        """The plugin's egress settings (built on first use from its manifest and policy)."""
        if self._grant is None:
            ctx = self._ctx
            resolution = ctx.resolution
            self._grant = EgressGrant.for_plugin(
                ctx.manifest,
                ctx.policy_entry,
                self._service().base_dir,
                resolution.outbound_hosts if resolution is not None else None,
            )
        return self._grant

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | str | None = None,
        json: Any = None,
        timeout_ms: int | None = None,
        max_bytes: int | None = None,
        mtls: MtlsRef | None = None,
    ) -> HttpResponse:
        """Send `method url` and return the whole response.

        `timeout_ms` (default `[plugins.<id>.limits] http_timeout_ms`, at most 30 s) bounds
        the whole call, redirects and body included; `max_bytes` (at most `http_max_bytes`)
        bounds the body. `mtls` is a reference from `ctx.secrets.mtls(name)`.
        """
        ctx = self._ctx
        service = self._service()
        try:
            ctx.require("http.outbound", f"http {str(method).upper()[:16]}")
            if mtls is not None:
                ctx.require("secrets.mtls", "http request with mtls")
                _refuse_mtls(ctx, mtls.name if isinstance(mtls, MtlsRef) else mtls)
            ctx._spend("http.request")
        except TetherError as exc:
            service.refused(ctx.plugin_id, method, url, str(exc))
            raise
        return await service.request(
            self.grant(),
            method,
            url,
            headers=headers,
            content=content,
            json=json,
            timeout_ms=timeout_ms,
            max_bytes=max_bytes,
            mtls=mtls,
        )

    async def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int | None = None,
        max_bytes: int | None = None,
        mtls: MtlsRef | None = None,
    ) -> HttpResponse:
        """`request("GET", url, ...)`."""
        return await self.request(
            "GET", url, headers=headers, timeout_ms=timeout_ms, max_bytes=max_bytes, mtls=mtls
        )

    async def post(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | str | None = None,
        json: Any = None,
        timeout_ms: int | None = None,
        max_bytes: int | None = None,
        mtls: MtlsRef | None = None,
    ) -> HttpResponse:
        """`request("POST", url, ...)`."""
        return await self.request(
            "POST",
            url,
            headers=headers,
            content=content,
            json=json,
            timeout_ms=timeout_ms,
            max_bytes=max_bytes,
            mtls=mtls,
        )
