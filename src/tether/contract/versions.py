"""Version strings: the plugin API version, the host version and semver parsing."""

from __future__ import annotations

import re
from typing import NamedTuple

API_VERSION = "1.0"
"""The plugin API version, "MAJOR.MINOR". A plugin built for X.Y runs on a host with the same
major X and a minor of at least Y."""

HOST_VERSION = "0.1.0"

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_API = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)$")


class SemVer(NamedTuple):
    major: int
    minor: int
    patch: int
    prerelease: str


def parse_semver(text: str) -> SemVer | None:
    """Parse a semantic version (2.0.0 grammar); None when it is not one."""
    m = _SEMVER.fullmatch(text)
    if m is None:
        return None
    return SemVer(int(m[1]), int(m[2]), int(m[3]), m[4] or "")


def semver_key(v: SemVer) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Ordering key: a pre-release sorts before its release (1.0.0-rc.1 < 1.0.0)."""
    pre: tuple[tuple[int, int | str], ...] = tuple(
        (0, int(p)) if p.isdigit() else (1, p) for p in v.prerelease.split(".") if p
    )
    return (v.major, v.minor, v.patch, 0 if v.prerelease else 1, pre)


def parse_api_version(text: str) -> tuple[int, int] | None:
    """Parse "MAJOR.MINOR"; None when malformed."""
    m = _API.fullmatch(text)
    return (int(m[1]), int(m[2])) if m else None


def api_compatible(plugin_api: str, host_api: str = API_VERSION) -> bool:
    """Same major, and the plugin's minor is not ahead of the host's."""
    p, h = parse_api_version(plugin_api), parse_api_version(host_api)
    if p is None or h is None:
        return False
    return p[0] == h[0] and p[1] <= h[1]


def host_satisfies(min_host_version: str, host_version: str = HOST_VERSION) -> bool:
    """True when this host is at least `min_host_version`."""
    need, have = parse_semver(min_host_version), parse_semver(host_version)
    if need is None or have is None:
        return False
    return semver_key(have) >= semver_key(need)
