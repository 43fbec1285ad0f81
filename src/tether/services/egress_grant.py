"""One plugin's egress settings, built from its manifest and its policy entry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tether.contract.hosts import HostAllowlist
from tether.contract.manifest import Manifest
from tether.contract.policy import PluginPolicy, PolicyLimits
from tether.services.egress_addresses import IPNetwork, parse_networks

__all__ = ["EgressGrant"]


@dataclass(frozen=True, slots=True)
class EgressGrant:
    """One plugin's egress settings: its effective allowlist, opened private networks,
    limits and provisioned client certificates (name -> absolute cert and key paths)."""

    plugin_id: str
    allowlist: HostAllowlist
    private: tuple[IPNetwork, ...] = ()
    timeout_ms: int = 10_000
    max_bytes: int = 5 * 1024 * 1024
    mtls: Mapping[str, tuple[Path, Path]] = field(default_factory=dict)

    @classmethod
    def for_plugin(
        cls,
        manifest: Manifest,
        entry: PluginPolicy | None,
        base_dir: Path,
        outbound_hosts: tuple[str, ...] | None = None,
    ) -> EgressGrant:
        """Build from the manifest and the policy entry. `outbound_hosts` is the resolved
        effective allowlist (`Resolution.outbound_hosts`); when None it is computed as the
        manifest's ∩ the policy's (the manifest's alone when there is no entry)."""
        if outbound_hosts is None:
            mine = HostAllowlist(manifest.outbound_hosts)
            allow = (
                mine
                if entry is None
                else HostAllowlist.intersection(mine, HostAllowlist(entry.outbound_hosts))
            )
        else:
            allow = HostAllowlist(outbound_hosts)
        limits = entry.limits if entry is not None else PolicyLimits()
        provisioned = entry.mtls if entry is not None else {}
        mtls = {
            name: (base_dir / provisioned[name].cert, base_dir / provisioned[name].key)
            for name in manifest.mtls_secrets
            if name in provisioned
        }
        return cls(
            manifest.id,
            allow,
            parse_networks(entry.private_hosts if entry is not None else ()),
            limits.http_timeout_ms,
            limits.http_max_bytes,
            mtls,
        )
