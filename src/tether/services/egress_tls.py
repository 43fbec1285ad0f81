"""TLS contexts for outbound HTTP: the verifying default, and client certificates (mTLS)
loaded server-side from the files the operator provisioned.

A plugin only ever holds an `MtlsRef` (a name). When a request uses one, the calling
plugin's own grant maps the name to files; they are stat'ed on every request and loaded
with `SSLContext.load_cert_chain` whenever they are new or changed, so a rotated certificate
is picked up by the next request without a restart. Error messages never name the files
(the plugin sees them); the host log does.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tether.contract.errors import CapabilityViolationError, TetherError
from tether.services.egress_client import MtlsRef

if TYPE_CHECKING:
    from tether.services.egress_grant import EgressGrant

log = logging.getLogger("tether.egress")

_DEFAULT_KEY = ("default",)


class MtlsLoadError(TetherError):
    """A provisioned client certificate could not be loaded (missing file, bad key)."""


def _context(ca: str) -> ssl.SSLContext:
    if os.path.isdir(ca):
        ctx = ssl.create_default_context(capath=ca)
    else:
        ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class TlsContexts:
    """The default verifying context (built once, on first use) and mTLS contexts keyed by
    the name and the files' identity (path, mtime, size)."""

    def __init__(self, ca: str | Path | Callable[[], str], cache_size: int = 16) -> None:
        self._ca = ca
        self._default: ssl.SSLContext | None = None
        self._mtls: OrderedDict[tuple[object, ...], ssl.SSLContext] = OrderedDict()
        self._size = cache_size

    def _ca_path(self) -> str:
        return self._ca() if callable(self._ca) else str(self._ca)

    def default(self) -> ssl.SSLContext:
        if self._default is None:
            self._default = _context(self._ca_path())
        return self._default

    @staticmethod
    def check(grant: EgressGrant, ref: MtlsRef | str) -> tuple[str, tuple[Path, Path]]:
        """The name and files `ref` stands for in `grant`; `CapabilityViolationError` when
        the plugin did not declare it or the operator did not provision it."""
        name = ref.name if isinstance(ref, MtlsRef) else ref
        files = grant.mtls.get(name) if isinstance(name, str) else None
        if files is None:
            pid = grant.plugin_id
            raise CapabilityViolationError(
                pid,
                "secrets.mtls",
                f"mTLS certificate {name!r} is not both declared in the manifest's "
                f"mtls_secrets and provisioned under [plugins.{pid}.mtls.{name}]",
            )
        return name, files

    def context_for(
        self, grant: EgressGrant, ref: MtlsRef | str | None
    ) -> tuple[tuple[object, ...], ssl.SSLContext]:
        """(cache key, context) for a request by `grant`'s plugin using `ref`."""
        if ref is None:
            return _DEFAULT_KEY, self.default()
        name, files = self.check(grant, ref)
        pid = grant.plugin_id
        cert, key = files
        try:
            stats = [(str(p), s.st_mtime_ns, s.st_size) for p in files if (s := p.stat())]
        except OSError as exc:
            log.warning("plugin %s: mTLS %r: cannot read %s", pid, name, exc)
            raise MtlsLoadError(self._unusable(pid, name)) from None
        ident: tuple[object, ...] = ("mtls", name, *stats)
        ctx = self._mtls.get(ident)
        if ctx is None:
            ctx = _context(self._ca_path())
            try:
                ctx.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                log.warning(
                    "plugin %s: mTLS %r: loading %s / %s failed: %s", pid, name, cert, key, exc
                )
                raise MtlsLoadError(self._unusable(pid, name)) from None
            self._mtls[ident] = ctx
            while len(self._mtls) > self._size:
                self._mtls.popitem(last=False)
        self._mtls.move_to_end(ident)
        return ident, ctx

    @staticmethod
    def _unusable(pid: str, name: str) -> str:
        return (
            f"plugin {pid!r}: the client certificate {name!r} cannot be loaded (the host log "
            f"says why); the operator should fix the cert and key files named under "
            f"[plugins.{pid}.mtls.{name}] in tether.toml"
        )
