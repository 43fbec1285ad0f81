"""Outbound host patterns: validation, host normalisation and allowlist matching.

Plugins declare ``outbound_hosts`` in their manifest, the operator declares patterns in policy,
and the effective allowlist is the intersection of the two (`HostAllowlist.intersection`).

A *pattern* (as written in a manifest or policy) is one of:

* an exact DNS name, already in canonical form: lowercase ASCII, punycode (``xn--``) for
  internationalised labels, no trailing dot (``api.example.com``);
* ``*.`` followed by such a name, matching every host strictly below it at any depth
  (``*.example.com`` matches ``a.example.com`` and ``a.b.example.com``, not ``example.com``);
* an IP address in canonical form: dotted-quad IPv4 (``127.0.0.1``) or RFC 5952 IPv6
  (``::1``, ``2001:db8::1``, ``::ffff:127.0.0.1``), the latter with or without brackets.

Public suffixes (``com``, ``co.uk``, ``github.io``) and wildcards over them are refused, and so
is every single-label name (``localhost``), which the public suffix list treats as a TLD.

A *host* (taken from a request URL) is normalised the way a browser would before it is matched:
lowercased, one trailing dot dropped, IDN converted to punycode with UTS #46 mapping, and
numeric hosts in any encoding ``inet_aton``/WHATWG accept (``2130706433``, ``0x7f.1``) turned into
their canonical address. Hosts that cannot be valid raise `InvalidHostError`, a subclass of
`HostPatternError`, so ``except HostPatternError`` catches both.

Everything here is pure computation; the only file read is the public suffix list bundled
with ``publicsuffixlist``, loaded once, lazily, on the first pattern check (about 60 ms).
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterable
from typing import NoReturn, TypeAlias

import idna
from publicsuffixlist import PublicSuffixList

__all__ = [
    "HostAllowlist",
    "HostPatternError",
    "InvalidHostError",
    "host_matches",
    "normalize_host",
    "normalize_host_pattern",
    "parse_numeric_host",
]

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


# --- public suffix list ---------------------------------------------------------------------

_psl_instance: PublicSuffixList | None = None
_psl_lock = threading.Lock()


def _psl() -> PublicSuffixList:
    """The shared public suffix list, built on first use (construction takes ~60 ms)."""
    global _psl_instance
    if _psl_instance is None:
        with _psl_lock:
            if _psl_instance is None:
                _psl_instance = PublicSuffixList()
    return _psl_instance


# --- helpers --------------------------------------------------------------------------------


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


def normalize_host_pattern(pattern: str) -> str:
    """Validate a host pattern as written in a manifest or policy and return it canonical.

    The pattern must already be canonical (lowercase, punycode, canonical IP text) apart
    from IPv6 brackets, which are accepted and removed; anything else is refused rather than
    silently rewritten, so what the operator reviews is exactly what is enforced.

    Raises:
        HostPatternError: the pattern is invalid; the message names it, says what is wrong
            and, where there is one, gives the pattern to write instead.
    """
    if not isinstance(pattern, str):
        raise HostPatternError(
            f"host pattern must be a string, not {type(pattern).__name__}: "
            f"write a host such as {_EXAMPLE}"
        )
    if pattern == "":
        raise HostPatternError(f"host pattern is empty: write a host such as {_EXAMPLE}", pattern)
    if any(_is_blank(c) for c in pattern):
        start, end = 0, len(pattern)
        while start < end and _is_blank(pattern[start]):
            start += 1
        while end > start and _is_blank(pattern[end - 1]):
            end -= 1
        trimmed = pattern[start:end]
        # Only suggest a fix when trimming the ends removes every offending character.
        fixed = "" if any(_is_blank(c) for c in trimmed) else trimmed
        _refuse(pattern, "contains whitespace or invisible characters", fixed)
    if "://" in pattern:
        _refuse(pattern, "must not include a scheme", _bare_host(pattern))
    if "@" in pattern:
        _refuse(pattern, "must not include a user name", _bare_host(pattern))
    if any(c in pattern for c in "/?#\\"):
        _refuse(pattern, "must not include a path, query or fragment", _bare_host(pattern))

    wildcard = pattern.startswith("*.")
    base = pattern[2:] if wildcard else pattern

    if base.startswith("[") or base.endswith("]") or ":" in base:
        return _check_ipv6_pattern(pattern, base, wildcard)

    if not pattern.isascii():
        try:
            encoded = idna.encode(base, uts46=True).decode("ascii")
        except UnicodeError as exc:
            raise HostPatternError(
                f"{_q(pattern)} is not a valid internationalised host name ({exc}): "
                "check the spelling, and write it in punycode form (xn--...)",
                pattern,
            ) from None
        fixed = ("*." if wildcard else "") + encoded.rstrip(".")
        _refuse(pattern, "must be ASCII", fixed, verb="write the punycode form")
    if pattern != pattern.lower():
        _refuse(pattern, "must be lowercase", pattern.lower())
    if pattern.endswith("."):
        _refuse(pattern, "must not end with a dot", pattern.rstrip("."))

    if "*" in base:
        _check_wildcard_placement(pattern)

    if len(pattern) > _MAX_NAME_LENGTH:
        raise HostPatternError(
            f"{_q(pattern)} is {len(pattern)} characters long; host names are at most "
            f"{_MAX_NAME_LENGTH}: shorten it",
            pattern,
        )

    try:
        ip = parse_numeric_host(base)
    except InvalidHostError as exc:
        where = "" if base == pattern else f"{_q(pattern)}: "
        raise HostPatternError(
            f"{where}{exc}: write a valid IP address, or a host name whose last label is not "
            "all digits",
            pattern,
        ) from None
    if ip is not None:
        canonical = _format_ip(ip)
        if wildcard:
            raise HostPatternError(
                f"{_q(pattern)}: wildcards are not allowed over IP addresses: list each "
                f"address on its own, as in {_q(canonical)}",
                pattern,
            )
        if base != canonical:
            raise HostPatternError(
                f"{_q(pattern)} is not a canonical IPv4 address: write {_q(canonical)}", pattern
            )
        return canonical

    _check_dns_labels(pattern, base)
    _check_public_suffix(pattern, base, wildcard)
    return pattern


def host_matches(pattern: str, host: str) -> bool:
    """True if the normalised ``host`` matches the normalised ``pattern``.

    ``*.example.com`` matches hosts strictly below ``example.com`` (at any depth), never
    ``example.com`` itself; other patterns, including IP addresses, match only equal hosts.
    Both arguments must already be normalised (`normalize_host_pattern`, `normalize_host`).
    """
    if not pattern.startswith("*."):
        return pattern == host
    base = pattern[1:]  # ".example.com": the leading dot anchors the match at a label boundary
    if ":" in host or _is_ascii_number(host.rpartition(".")[2]):
        return False  # an IP address is never matched by a wildcard
    return len(host) > len(base) and host.endswith(base)


# --- pattern checks -------------------------------------------------------------------------


def _refuse(pattern: str, problem: str, fixed: str, *, verb: str = "write") -> NoReturn:
    """Raise a HostPatternError for ``problem``, suggesting ``fixed`` if that is valid."""
    if fixed == "" or fixed == pattern:
        raise HostPatternError(f"{_q(pattern)} {problem}: write a host such as {_EXAMPLE}", pattern)
    try:
        canonical = normalize_host_pattern(fixed)
    except HostPatternError as exc:
        raise HostPatternError(
            f"{_q(pattern)} {problem}, and {_q(fixed)} would be refused too: {exc}", pattern
        ) from None
    raise HostPatternError(f"{_q(pattern)} {problem}: {verb} {_q(canonical)}", pattern)


def _bare_host(pattern: str) -> str:
    """Best-effort host part of a URL-like pattern, used only to suggest a fix."""
    rest = pattern.split("://", 1)[-1]
    for sep in "/?#\\":
        rest = rest.split(sep, 1)[0]
    rest = rest.rpartition("@")[2]
    if rest.startswith("["):
        return rest.split("]", 1)[0] + "]"
    if rest.count(":") == 1:
        rest = rest.split(":", 1)[0]
    return rest


def _check_ipv6_pattern(pattern: str, base: str, wildcard: bool) -> str:
    text = base
    if base.startswith("["):
        end = base.find("]")
        if end != -1 and end != len(base) - 1:
            _refuse(pattern, "must not include a port", base[: end + 1])
        text = base[1:-1] if end != -1 else base[1:]
    elif base.count(":") == 1 and not base.endswith("]"):
        _refuse(pattern, "must not include a port", pattern.split(":", 1)[0])
    try:
        ip = _parse_ipv6(text, text)
    except InvalidHostError as exc:
        where = "" if text == pattern else f"{_q(pattern)}: "
        raise HostPatternError(f"{where}{exc}", pattern) from None
    canonical = _format_ip(ip)
    if wildcard:
        raise HostPatternError(
            f"{_q(pattern)}: wildcards are not allowed over IP addresses: list each address "
            f"on its own, as in {_q(canonical)}",
            pattern,
        )
    if base not in (canonical, f"[{canonical}]"):
        raise HostPatternError(
            f"{_q(pattern)} is not a canonical IPv6 address: write {_q(canonical)}", pattern
        )
    return canonical


def _check_wildcard_placement(pattern: str) -> NoReturn:
    """Refuse a pattern with "*" anywhere but a single leading "*." label."""
    if pattern == "*":
        raise HostPatternError(
            f'"*" would allow every host: list the hosts you need, such as {_EXAMPLE}', pattern
        )
    labels = pattern.split(".")
    if labels[0] == "*" and labels[1] == "*":
        rest = [label for label in labels if label != "*"]
        if rest and not any("*" in label for label in rest):
            _refuse(
                pattern,
                'may start with only one "*." (it already matches subdomains at any depth)',
                "*." + ".".join(rest),
            )
    elif labels[0] != "*" and not any("*" in label for label in labels[1:]):
        first = labels[0].lstrip("*")
        if "*" not in first:
            # "**.example.com" or "*foo.example.com": most likely meant to match subdomains.
            fixed = ".".join(label for label in (first, *labels[1:]) if label)
            _refuse(
                pattern, 'has "*" inside a label', "*." + fixed, verb="to match subdomains write"
            )
    raise HostPatternError(
        f'{_q(pattern)}: "*" is only allowed as the whole leftmost label, as in "*.example.com"',
        pattern,
    )


def _check_dns_labels(pattern: str, base: str) -> None:
    for label in base.split("."):
        if label == "":
            raise HostPatternError(
                f'{_q(pattern)} has an empty label (a leading dot or ".."): remove the extra dot',
                pattern,
            )
        bad = sorted({c for c in label if c not in _LDH})
        if bad:
            shown = ", ".join(_q(c) for c in bad)
            raise HostPatternError(
                f"{_q(pattern)} contains {shown}, not allowed in host names: use only a-z, "
                '0-9, "-" and "."',
                pattern,
            )
        if len(label) > _MAX_LABEL_LENGTH:
            raise HostPatternError(
                f"{_q(pattern)} has a label of {len(label)} characters; labels are at most "
                f"{_MAX_LABEL_LENGTH}: shorten it",
                pattern,
            )
        if label[0] == "-" or label[-1] == "-":
            raise HostPatternError(
                f'{_q(pattern)}: label {_q(label)} must not start or end with "-"', pattern
            )
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except UnicodeError as exc:
                raise HostPatternError(
                    f"{_q(pattern)}: label {_q(label)} is not valid punycode ({exc}): write the "
                    "name in Unicode once and convert it with an IDNA encoder",
                    pattern,
                ) from None
    # idna is what normalize_host uses, so a name it would not produce could never match.
    try:
        valid = idna.encode(base, uts46=True).decode("ascii") == base
        reason = "it is not in the form hosts are normalised to"
    except UnicodeError as exc:
        valid, reason = False, str(exc)
    if not valid:
        raise HostPatternError(
            f"{_q(pattern)} is not a valid IDNA host name ({reason}): only punycode labels "
            '("xn--...") may have "--" in the 3rd and 4th positions',
            pattern,
        )


def _check_public_suffix(pattern: str, base: str, wildcard: bool) -> None:
    psl = _psl()
    if not psl.is_public(base):
        return
    if not psl.is_public(base, accept_unknown=False):
        # Only single labels get here: the list treats every unknown TLD as public.
        if wildcard:
            raise HostPatternError(
                f"{_q(pattern)} would match every host under the single-label name {_q(base)}, "
                f"which counts as a top-level domain: name your own domain, as in "
                f"{_q('*.example.' + base)}",
                pattern,
            )
        local = ' (for this machine write "127.0.0.1" or "::1")' if base == "localhost" else ""
        raise HostPatternError(
            f"{_q(pattern)} is a single-label name, which counts as a top-level domain: "
            f"write a fully-qualified host name{local}",
            pattern,
        )
    if wildcard:
        raise HostPatternError(
            f"{_q(pattern)} would match every site under the public suffix {_q(base)}: "
            f"name your own domain, as in {_q('*.example.' + base)}",
            pattern,
        )
    raise HostPatternError(
        f"{_q(pattern)} is a public suffix, not a host: name a host under it, as in "
        f"{_q('api.example.' + base)}",
        pattern,
    )


# --- allowlists -----------------------------------------------------------------------------


class HostAllowlist:
    """A set of host patterns, answering whether a host is allowed.

    Patterns are validated with `normalize_host_pattern` and kept in first-seen order without
    duplicates. `allows` is a few set lookups: exact names and IPs in one frozenset, wildcard
    bases in another, checked against each parent suffix of the host. An empty allowlist
    allows nothing.
    """

    __slots__ = ("_exact", "_patterns", "_wildcard_bases")

    def __init__(self, patterns: Iterable[str]) -> None:
        """Validate ``patterns``; raises `HostPatternError` naming the first bad one."""
        if isinstance(patterns, str):
            raise TypeError(
                "HostAllowlist takes an iterable of patterns, not a single string: "
                f"write HostAllowlist([{patterns!r}])"
            )
        self._init(normalize_host_pattern(p) for p in patterns)

    def _init(self, canonical: Iterable[str]) -> None:
        self._patterns = tuple(dict.fromkeys(canonical))
        self._exact = frozenset(p for p in self._patterns if not p.startswith("*."))
        self._wildcard_bases = frozenset(p[2:] for p in self._patterns if p.startswith("*."))

    @classmethod
    def _from_canonical(cls, canonical: Iterable[str]) -> HostAllowlist:
        allowlist = cls.__new__(cls)
        allowlist._init(canonical)
        return allowlist

    @property
    def patterns(self) -> tuple[str, ...]:
        """The canonical patterns, in first-seen order, without duplicates."""
        return self._patterns

    def allows(self, host: str) -> bool:
        """True if ``host`` (from a URL; normalised here) matches a pattern.

        A host that fails normalisation is not allowed.
        """
        try:
            normalized = normalize_host(host)
        except HostPatternError:
            return False
        return self._allows_normalized(normalized)

    def _allows_normalized(self, host: str) -> bool:
        return host in self._exact or self._under_wildcard(host)

    def _under_wildcard(self, name: str) -> bool:
        """True if a strict parent suffix of ``name`` is a wildcard base."""
        # IP hosts never match: wildcard bases are DNS names, never ending in a numeric label.
        bases = self._wildcard_bases
        if not bases:
            return False
        dot = name.find(".")
        while dot != -1:
            if name[dot + 1 :] in bases:
                return True
            dot = name.find(".", dot + 1)
        return False

    def covers_pattern(self, pattern: str) -> bool:
        """True if every host ``pattern`` matches is allowed here."""
        if pattern.startswith("*."):
            base = pattern[2:]
            return base in self._wildcard_bases or self._under_wildcard(base)
        return self._allows_normalized(pattern)

    @staticmethod
    def intersection(a: HostAllowlist, b: HostAllowlist) -> HostAllowlist:
        """The allowlist allowing exactly the hosts both ``a`` and ``b`` allow.

        The result is a plain `HostAllowlist` whose ``patterns`` are the effective allowlist,
        minimal: ``a``'s patterns that ``b`` fully covers, then ``b``'s that ``a`` covers, minus
        any pattern another one in the result already covers.
        """
        candidates = [p for p in a.patterns if b.covers_pattern(p)]
        candidates += [p for p in b.patterns if a.covers_pattern(p)]
        wildcards = HostAllowlist._from_canonical(p for p in candidates if p.startswith("*."))
        kept = [
            p
            for p in candidates
            if not (wildcards._under_wildcard(p[2:] if p.startswith("*.") else p))
        ]
        return HostAllowlist._from_canonical(kept)

    def __repr__(self) -> str:
        return f"HostAllowlist({list(self._patterns)!r})"
