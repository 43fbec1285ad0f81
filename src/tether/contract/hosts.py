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

A *host* (taken from a request URL) is normalised by `tether.contract.host_names` before it
is matched; its names are re-exported here.

Everything here is pure computation; the only file read is the public suffix list bundled
with ``publicsuffixlist``, loaded once, lazily, on the first pattern check (about 60 ms).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import NoReturn

import idna
from publicsuffixlist import PublicSuffixList

from tether.contract.host_names import (
    _EXAMPLE,
    _LDH,
    _MAX_LABEL_LENGTH,
    _MAX_NAME_LENGTH,
    HostPatternError,
    InvalidHostError,
    _format_ip,
    _is_ascii_number,
    _is_blank,
    _parse_ipv6,
    _q,
    normalize_host,
    parse_numeric_host,
)

__all__ = [
    "HostAllowlist",
    "HostPatternError",
    "InvalidHostError",
    "host_matches",
    "normalize_host",
    "normalize_host_pattern",
    "parse_numeric_host",
]

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
