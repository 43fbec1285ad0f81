"""Which IP addresses outbound HTTP may connect to: the SSRF half of the egress checks.

`blocked_reason(ip)` says why an address is not a public unicast destination (loopback,
private, link-local, CGNAT, documentation, cloud metadata...) or returns None. IPv6 forms
that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are judged
by the address they carry: on Python 3.11 `IPv6Address("::ffff:127.0.0.1").is_loopback` is
False, so the standard predicates alone would let such an address through.

The tables are explicit rather than `ipaddress.is_private`, whose contents change between
Python versions; `is_global` is only a final net for anything the tables miss.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TypeAlias

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = [
    "METADATA_ADDRESSES",
    "IPAddress",
    "IPNetwork",
    "address_verdict",
    "blocked_reason",
    "format_ip",
    "parse_networks",
]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Instance-metadata endpoints (AWS, ECS, EKS, GCP, Azure, Alibaba, Oracle): the usual prize of
# an SSRF. They stay closed unless private_hosts names the exact address.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
        "fd00:ec2::23",
        "fd20:ce::254",
    )
)

_BLOCKED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("255.255.255.255/32"), "the broadcast address"),
    (_V4("0.0.0.0/8"), 'a "this network" address (0.0.0.0/8)'),
    (_V4("10.0.0.0/8"), "a private address (10.0.0.0/8)"),
    (_V4("100.64.0.0/10"), "a carrier-grade NAT address (100.64.0.0/10)"),
    (_V4("127.0.0.0/8"), "a loopback address (127.0.0.0/8)"),
    (_V4("169.254.0.0/16"), "a link-local address (169.254.0.0/16)"),
    (_V4("172.16.0.0/12"), "a private address (172.16.0.0/12)"),
    (_V4("192.0.0.0/24"), "an IETF protocol assignment (192.0.0.0/24)"),
    (_V4("192.0.2.0/24"), "a documentation address (192.0.2.0/24)"),
    (_V4("192.88.99.0/24"), "a deprecated 6to4 relay address (192.88.99.0/24)"),
    (_V4("192.168.0.0/16"), "a private address (192.168.0.0/16)"),
    (_V4("198.18.0.0/15"), "a benchmarking address (198.18.0.0/15)"),
    (_V4("198.51.100.0/24"), "a documentation address (198.51.100.0/24)"),
    (_V4("203.0.113.0/24"), "a documentation address (203.0.113.0/24)"),
    (_V4("224.0.0.0/4"), "a multicast address (224.0.0.0/4)"),
    (_V4("240.0.0.0/4"), "a reserved address (240.0.0.0/4)"),
)

_BLOCKED_V4_RANGES: tuple[tuple[int, int, str], ...] = tuple(
    (int(net.network_address), int(net.broadcast_address), why) for net, why in _BLOCKED_V4
)

_BLOCKED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("100::/64"), "a discard-only address (100::/64)"),
    (_V6("2001:2::/48"), "a benchmarking address (2001:2::/48)"),
    (_V6("2001:db8::/32"), "a documentation address (2001:db8::/32)"),
    (_V6("3fff::/20"), "a documentation address (3fff::/20)"),
    (_V6("2001::/23"), "an IETF protocol assignment (2001::/23)"),
    (_V6("fc00::/7"), "a unique-local address (fc00::/7)"),
    (_V6("fe80::/10"), "a link-local address (fe80::/10)"),
    (_V6("fec0::/10"), "a deprecated site-local address (fec0::/10)"),
    (_V6("ff00::/8"), "a multicast address (ff00::/8)"),
    (_V6("::/8"), "a reserved address (::/8)"),
)

_MAPPED = _V6("::ffff:0:0/96")
_COMPATIBLE = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")
_NAT64_LOCAL = _V6("64:ff9b:1::/48")
_SIX_TO_FOUR = _V6("2002::/16")
_TEREDO = _V6("2001::/32")
_THIS_NETWORK = _V4("0.0.0.0/8")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def format_ip(ip: IPAddress) -> str:
    """Canonical text: dotted quad, RFC 5952 IPv6, IPv4-mapped as ``::ffff:a.b.c.d``."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return ip.compressed


def parse_networks(items: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    """Parse `private_hosts` entries ("10.0.0.5", "127.0.0.1/32", "fd00::/8")."""
    out: list[IPNetwork] = []
    for item in items:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(item)
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=True))
        except ValueError:
            raise ValueError(
                f"private host {item!r} must be an IP address or a CIDR like 10.0.0.0/24"
            ) from None
    return tuple(out)


def _v4_reason(ip: ipaddress.IPv4Address) -> str | None:
    if ip in METADATA_ADDRESSES:
        return f"a cloud metadata address ({ip})"
    value = int(ip)
    for first, last, why in _BLOCKED_V4_RANGES:
        if first <= value <= last:
            return why
    # The table covers every IPv4 range Python's is_private/is_global know (3.11-3.13).
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why `ip` is not a public unicast destination, or None when it is one."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_reason(ip)
    if ip.scope_id:
        return "an address with a zone id"
    if ip in METADATA_ADDRESSES:
        return f"a cloud metadata address ({ip})"
    if ip.is_unspecified or ip.is_loopback:  # before ::/96, which contains both
        return "the unspecified address (::)" if ip.is_unspecified else "the loopback address (::1)"
    # Forms that carry an IPv4 address are judged by that address: the kernel (or a NAT64
    # gateway, a 6to4 relay) delivers them to it.
    embedded: tuple[str, ipaddress.IPv4Address] | None = None
    if ip in _MAPPED:
        embedded = ("an IPv4-mapped form of", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    elif ip in _NAT64:
        embedded = ("a NAT64 form of", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    elif ip in _SIX_TO_FOUR and ip.sixtofour is not None:
        embedded = ("a 6to4 form of", ip.sixtofour)
    if embedded is not None:
        what, v4 = embedded
        inner = _v4_reason(v4)
        return None if inner is None else f"{what} {v4}, {inner}"
    if ip in _NAT64_LOCAL:
        return "a local-use NAT64 address (64:ff9b:1::/48)"
    if ip in _TEREDO and ip.teredo is not None:
        server, client = ip.teredo
        inner = _v4_reason(client) or _v4_reason(server)
        carried = f", carrying {client}, {inner}" if inner else ""
        return f"a Teredo tunnel address (2001::/32){carried}"
    if ip in _COMPATIBLE:
        v4 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        inner = _v4_reason(v4)
        return f"a deprecated IPv4-compatible form of {v4}" + (f", {inner}" if inner else "")
    for net, why in _BLOCKED_V6:
        if ip in net:
            return why
    return None if ip.is_global else "not a globally routable address"


def _opened(ip: IPAddress, private: tuple[IPNetwork, ...]) -> bool:
    """True when the operator opened `ip` with private_hosts.

    A metadata address opens only when listed exactly (a /32 or /128), never through a
    wider range that happens to contain it. An IPv4-mapped address opens with its IPv4
    address.
    """
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    for addr in candidates:
        exact_only = addr in METADATA_ADDRESSES
        for net in private:
            if addr.version != net.version or addr not in net:
                continue
            if not exact_only or net.num_addresses == 1:
                return True
    return False


def _never_opens(ip: IPAddress) -> bool:
    """Unspecified, broadcast and multicast addresses are no destination at all."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address) and (ip in _THIS_NETWORK or ip == _BROADCAST):
        return True
    return ip.is_unspecified or ip.is_multicast


def address_verdict(ip: IPAddress, private: tuple[IPNetwork, ...] = ()) -> str | None:
    """Why outbound HTTP may not connect to `ip` under `private` (the networks the operator
    opened with private_hosts), or None when it may."""
    reason = blocked_reason(ip)
    if reason is None or (private and not _never_opens(ip) and _opened(ip, private)):
        return None
    return reason
