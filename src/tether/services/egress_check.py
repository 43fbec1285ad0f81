"""The egress verdict: may a request to this URL go out, and to which addresses?

`check_url` is shared by the HTTP service (before every request and every redirect hop) and
by `tether egress check`. It parses the URL once, checks the scheme, refuses user info,
normalises the host (numeric hosts in every encoding become their address), matches the
allowlist, resolves the name exactly once and judges every address. The addresses it
returns are the only ones the client may connect to, so a second DNS answer (rebinding)
can never change where the request goes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import httpx

from tether.contract.hosts import HostAllowlist, HostPatternError, host_matches, normalize_host
from tether.services.egress_addresses import (
    IPNetwork,
    address_verdict,
    blocked_reason,
    format_ip,
    parse_networks,
)

__all__ = [
    "DEFAULT_PORTS",
    "Resolver",
    "Verdict",
    "check_url",
    "static_resolver",
    "system_resolver",
]

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""`await resolver(host, port)` -> the host's IP addresses as text."""

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_CHARS = 8192
_LOCALHOST = "localhost"
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer of `check_url`. `addresses` are the checked addresses (when allowed, the
    only ones to connect to); `host` is the normalised host and `port` the effective port."""

    allowed: bool
    reason: str
    addresses: tuple[str, ...] = ()
    host: str = ""
    port: int = 0
    scheme: str = ""
    rule: str = ""
    """The rule that blocked: "url", "scheme", "userinfo", "host", "allowlist",
    "resolution" or "address"; empty when allowed."""
    url: httpx.URL | None = field(default=None, repr=False, compare=False)


async def system_resolver(host: str, port: int) -> list[str]:
    """The default resolver: the system's `getaddrinfo`, run off the event loop."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def static_resolver(
    table: Mapping[str, Sequence[str]], fallback: Resolver | None = None
) -> Resolver:
    """A resolver answering from `table` (host -> addresses), like curl's `--resolve`.

    Hosts are matched after normalisation; a host not in the table goes to `fallback`, or
    fails to resolve when there is none.
    """
    normalised = {normalize_host(h): list(addrs) for h, addrs in table.items()}

    async def resolve(host: str, port: int) -> list[str]:
        found = normalised.get(host)
        if found is not None:
            return list(found)
        if fallback is None:
            raise OSError(f"no address given for {host!r}")
        return await fallback(host, port)

    return resolve


def _blocked(
    rule: str, reason: str, url: httpx.URL | None = None, *, scheme: str = "", port: int = 0
) -> Verdict:
    return Verdict(False, reason, (), "", port, scheme, rule, url)


def _parse(raw: str | httpx.URL) -> httpx.URL | str:
    """The parsed URL, or the reason it is refused."""
    if isinstance(raw, httpx.URL):
        return raw
    if not isinstance(raw, str):
        return f"the URL must be a string, not {type(raw).__name__}"
    if len(raw) > MAX_URL_CHARS:
        return f"the URL is longer than {MAX_URL_CHARS} characters"
    # Parsers disagree about "\" (WHATWG reads it as "/") and about control characters;
    # refusing them leaves no room for a check and a connection to see different hosts.
    if _UNSAFE.search(raw):
        return "the URL contains whitespace, control characters or a backslash"
    try:
        return httpx.URL(raw)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        return f"the URL is not valid ({exc})"


def _numeric_note(raw: object) -> str:
    """For a URL httpx cannot parse (``http://0177.0.0.1/``): what its host would mean."""
    try:
        host = urlsplit(str(raw)).hostname or ""
        ip = ipaddress.ip_address(normalize_host(host))
    except ValueError:
        return ""
    why = blocked_reason(ip)
    return f"; its host {host!r} means {format_ip(ip)}" + (f", {why}" if why else "")


def _allowlist(value: HostAllowlist | Iterable[str] | None) -> HostAllowlist | None:
    if value is None or isinstance(value, HostAllowlist):
        return value
    return HostAllowlist(value)


async def check_url(
    url: str | httpx.URL,
    allowlist: HostAllowlist | Iterable[str] | None = None,
    private: Iterable[str | IPNetwork] = (),
    resolver: Resolver | None = None,
) -> Verdict:
    """Decide whether a request to `url` may go out.

    `allowlist` is a `HostAllowlist` (or its patterns); None allows any public host, an
    empty one allows nothing. `private` lists the addresses and CIDRs the operator opened
    (`private_hosts`); nothing private is reachable otherwise. `resolver` (default: the
    system's) is called at most once, and only for a host that passed every name check.
    """
    parsed = _parse(url)
    if isinstance(parsed, str):
        return _blocked("url", parsed + _numeric_note(url))
    scheme = parsed.scheme
    if scheme not in DEFAULT_PORTS:
        shown = f"{scheme}:" if scheme else "(none)"
        return _blocked("scheme", f"scheme {shown} is not allowed: only http: and https:", parsed)
    if parsed.userinfo:
        return _blocked(
            "userinfo",
            "the URL has user info before an '@'; credentials in URLs are refused, send them "
            "in a header",
            parsed,
            scheme=scheme,
        )
    raw_host = parsed.raw_host.decode("ascii", "replace")
    if not raw_host:
        return _blocked("host", "the URL has no host", parsed, scheme=scheme)
    port = parsed.port or DEFAULT_PORTS[scheme]
    try:
        host = normalize_host(raw_host)
    except HostPatternError as exc:
        return _blocked("host", f"invalid host: {exc}", parsed, scheme=scheme, port=port)
    # From here on every verdict names the host, port and scheme.
    base = Verdict(False, "", (), host, port, scheme, "", parsed)
    if host == _LOCALHOST or host.endswith("." + _LOCALHOST):
        reason = f"{host!r} is a localhost name, which always means this machine"
        return replace(base, rule="host", reason=reason)
    rules = _allowlist(allowlist)
    # `host` is normalised already, so match it directly (HostAllowlist.allows would
    # normalise it a second time).
    if rules is not None and not any(host_matches(p, host) for p in rules.patterns):
        listed = ", ".join(rules.patterns) if rules.patterns else "it is empty"
        reason = f"host {host!r} is not in the outbound allowlist ({listed})"
        return replace(base, rule="allowlist", reason=reason)
    networks = parse_networks(private)
    try:
        literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        why = address_verdict(literal, networks)
        if why is not None:
            return replace(base, rule="address", reason=f"{host} is {why}", addresses=(host,))
        return Verdict(True, "allowed", (host,), host, port, scheme, "", parsed)
    return await _check_resolved(base, networks, resolver)


async def _check_resolved(
    base: Verdict, networks: tuple[IPNetwork, ...], resolver: Resolver | None
) -> Verdict:
    host = base.host
    try:
        answers = await (resolver or system_resolver)(host, base.port)
    except (OSError, UnicodeError) as exc:
        return replace(base, rule="resolution", reason=f"cannot resolve {host!r}: {exc}")
    addresses: list[str] = []
    for answer in answers:
        try:
            ip = ipaddress.ip_address(answer)
        except ValueError:
            reason = f"the resolver answered {answer!r} for {host!r}, which is not an IP address"
            return replace(base, rule="resolution", reason=reason)
        text = format_ip(ip)
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        return replace(base, rule="resolution", reason=f"{host!r} resolves to no address")
    for text in addresses:
        # One bad address blocks the host: the client may not pick among them.
        why = address_verdict(ipaddress.ip_address(text), networks)
        if why is not None:
            reason = f"{host!r} resolves to {text}, {why}"
            return replace(base, rule="address", reason=reason, addresses=tuple(addresses))
    return Verdict(
        True, "allowed", tuple(addresses), base.host, base.port, base.scheme, "", base.url
    )


def parse_resolve(entries: Iterable[str]) -> dict[str, list[str]]:
    """Parse curl-style `HOST:ADDRESS` entries (IPv6 as `host:[::1]`) into a table for
    `static_resolver`; several entries for one host add addresses. Raises `ValueError`."""
    table: dict[str, list[str]] = {}
    for entry in entries:
        host, sep, address = entry.partition(":")
        if address.startswith("[") and address.endswith("]"):
            address = address[1:-1]
        try:
            if not (sep and host and address):
                raise ValueError("it is not HOST:ADDRESS")
            ip = ipaddress.ip_address(address)
            name = normalize_host(host)
        except ValueError as exc:
            raise ValueError(
                f"--resolve {entry!r}: {exc}; write HOST:ADDRESS, as in "
                "api.example.com:93.184.216.34 or api.example.com:[2606:2800:220:1::1]"
            ) from None
        table.setdefault(name, []).append(format_ip(ip))
    return table
