"""Hosts as they appear in request URLs: normalisation, numeric hosts in every encoding,
and the errors shared with host patterns.

A host is normalised the way a browser would before it is matched: lowercased, one trailing
dot dropped, IDN converted to punycode with UTS #46 mapping, and numeric hosts in any
encoding ``inet_aton``/WHATWG accept (``2130706433``, ``0x7f.1``) turned into their canonical
address. Hosts that cannot be valid raise `InvalidHostError`, a subclass of
`HostPatternError`, so ``except HostPatternError`` catches both. Pure computation.
"""

from __future__ import annotations

import ipaddress
import json
from typing import TypeAlias

import idna

__all__ = ["HostPatternError", "InvalidHostError", "normalize_host", "parse_numeric_host"]

_IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_NAME_LENGTH = 253
_MAX_LABEL_LENGTH = 63
_DIGITS = frozenset("0123456789")
_OCTAL_DIGITS = frozenset("01234567")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_LDH_OR_DOT = _LDH | {"."}
_EXAMPLE = '"api.example.com" or "*.example.com"'


class HostPatternError(ValueError):
    """A host pattern (or host) is invalid; the message says what is wrong and how to fix it.

    ``pattern`` is the offending text as given (``None`` if it was not a string).
    """

    def __init__(self, message: str, pattern: str | None = None) -> None:
        super().__init__(message)
        self.pattern = pattern


class InvalidHostError(HostPatternError):
    """A host taken from a URL cannot be a valid host (e.g. ``256.1.1.1``, ``[fe80::1%eth0]``)."""


def _q(text: str) -> str:
    """Quote text for an error message; invisible characters are shown as escapes."""
    return json.dumps(text, ensure_ascii=not text.isprintable())


def _is_blank(char: str) -> bool:
    return char.isspace() or not char.isprintable()


def _format_ip(ip: _IPAddress) -> str:
    """Canonical text of an address: dotted quad, or RFC 5952 compressed IPv6.

    IPv4-mapped IPv6 addresses use the RFC 5952 mixed form ``::ffff:a.b.c.d`` on every
    Python version (on 3.11, ``str()`` gives ``::ffff:7f00:1``).
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return ip.compressed


def _is_ascii_number(text: str) -> bool:
    return text != "" and all(c in _DIGITS for c in text)


def _ends_in_number(last_label: str) -> bool:
    """WHATWG "ends in a number": the last label is decimal digits or ``0x`` + hex digits."""
    if _is_ascii_number(last_label):
        return True
    return last_label[:2] in ("0x", "0X") and all(c in _HEX_DIGITS for c in last_label[2:])


def _parse_ipv4_part(part: str, host: str) -> int:
    """One dot-separated part of a numeric IPv4 host: decimal, ``0x`` hex or ``0`` octal."""
    if part == "":
        raise InvalidHostError(
            f"{_q(host)} is not a valid IPv4 address: it has an empty part", host
        )
    if part[:2] in ("0x", "0X"):
        digits, base, allowed = part[2:], 16, _HEX_DIGITS
    elif len(part) > 1 and part[0] == "0":
        digits, base, allowed = part[1:], 8, _OCTAL_DIGITS
    else:
        digits, base, allowed = part, 10, _DIGITS
    if digits == "":
        return 0  # WHATWG reads a bare "0x" as zero
    # Check characters ourselves: int() also takes "_", signs, spaces and non-ASCII digits.
    if not all(c in allowed for c in digits):
        kind = "an octal number (a leading 0 means octal)" if base == 8 else "a number"
        raise InvalidHostError(
            f"{_q(host)} is not a valid IPv4 address: part {_q(part)} is not {kind}, and a "
            "host whose last label is numeric cannot be a DNS name",
            host,
        )
    try:
        return int(digits, base)
    except ValueError:  # more digits than int() will convert; far out of range anyway
        raise InvalidHostError(
            f"{_q(host)} is not a valid IPv4 address: part {_q(part)} is out of range", host
        ) from None


def _parse_ipv6(text: str, host: str) -> ipaddress.IPv6Address:
    if "%" in text:
        raise InvalidHostError(
            f"{_q(host)} has an IPv6 zone id; zone ids are not allowed: "
            'use an address without a "%" part',
            host,
        )
    try:
        return ipaddress.IPv6Address(text)
    except ValueError as exc:
        raise InvalidHostError(
            f"{_q(host)} is not a valid IPv6 address ({exc}); a host name cannot contain "
            '":" (if this is "host:port", pass only the host)',
            host,
        ) from None


def _ascii_ldh_name(name: str) -> bool:
    """True if ``name`` is a lowercase LDH name idna would return unchanged.

    Names with ``--`` anywhere are left to idna (it validates ``xn--`` labels and refuses
    ``--`` in positions 3-4 of other labels).
    """
    if not name or len(name) > _MAX_NAME_LENGTH or "--" in name:
        return False
    if not all(c in _LDH_OR_DOT for c in name):
        return False
    for label in name.split("."):
        if not label or len(label) > _MAX_LABEL_LENGTH:
            return False
        if label[0] == "-" or label[-1] == "-":
            return False
    return True


# --- public functions -----------------------------------------------------------------------


def parse_numeric_host(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return the IP address a numeric host denotes, or ``None`` if ``host`` is a DNS name.

    IPv4 follows the WHATWG URL host parser (what browsers do, a superset of ``inet_aton``):
    up to four dot-separated parts, each decimal, hex (``0x7f``) or octal (``0177``), the last
    part filling the remaining bytes (``127.1`` is ``127.0.0.1``, ``10.1`` is ``10.0.0.1``);
    one trailing dot is ignored. Whether the host is numeric is decided by its *last* label
    alone: if that is a number, the host is an IPv4 address or invalid, never a DNS name.

    IPv6 literals are accepted with or without brackets.

    Raises:
        InvalidHostError: the host looks numeric but is not a valid address (``256.1.1.1``,
            ``1.2.3.4.5``, ``example.123``, ``08.0.0.1``), is an IPv6 literal with a zone id
            (``fe80::1%eth0``), or is not a valid IPv6 literal (contains ``:`` or brackets).
    """
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise InvalidHostError(f"{_q(host)} has unbalanced brackets", host)
        return _parse_ipv6(host[1:-1], host)
    if ":" in host:
        return _parse_ipv6(host, host)

    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not _ends_in_number(parts[-1]):
        return None
    if len(parts) > 4:
        raise InvalidHostError(
            f"{_q(host)} is not a valid IPv4 address: it has more than four parts, and a host "
            "whose last label is numeric cannot be a DNS name",
            host,
        )
    numbers = [_parse_ipv4_part(part, host) for part in parts]
    for part, number in zip(parts[:-1], numbers[:-1], strict=True):
        if number > 255:
            raise InvalidHostError(
                f"{_q(host)} is not a valid IPv4 address: part {_q(part)} is greater than 255",
                host,
            )
    limit = 256 ** (5 - len(numbers))
    if numbers[-1] >= limit:
        raise InvalidHostError(
            f"{_q(host)} is not a valid IPv4 address: its last part {_q(parts[-1])} must be "
            f"less than {limit}",
            host,
        )
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def normalize_host(host: str) -> str:
    """Normalise a host taken from a request URL so it can be matched against patterns.

    Lowercases, strips brackets from IPv6 literals, drops one trailing dot, converts IDN to
    punycode (``idna.encode(host, uts46=True)``) and rewrites numeric hosts in any encoding to
    their canonical address (``0x7f.1`` -> ``127.0.0.1``, ``[::FFFF:7f00:1]`` ->
    ``::ffff:127.0.0.1``). Percent-encoded hosts are not decoded; they are refused.

    Raises:
        InvalidHostError: the host cannot be valid (empty, empty labels, invalid characters
            or IDNA, out-of-range numeric host, IPv6 zone id, a ``host:port`` string).
    """
    if not isinstance(host, str):
        raise InvalidHostError(f"host must be a string, not {type(host).__name__}")
    if host.startswith("[") or host.endswith("]") or ":" in host:
        ip = parse_numeric_host(host)
        if ip is None:  # unreachable: brackets and colons always mean IPv6 or an error
            raise InvalidHostError(f"{_q(host)} is not a valid host", host)
        return _format_ip(ip)

    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    if not (host.isascii() and _ascii_ldh_name(name)):
        try:
            name = idna.encode(host, uts46=True).decode("ascii")
        except UnicodeError as exc:  # idna.IDNAError is a UnicodeError
            raise InvalidHostError(f"{_q(host)} is not a valid host name: {exc}", host) from None
        if name.endswith("."):
            name = name[:-1]
    ip = parse_numeric_host(name)
    return name if ip is None else _format_ip(ip)
