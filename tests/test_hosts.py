"""Tests for tether.contract.hosts: host patterns, host normalisation and allowlists."""

from __future__ import annotations

import ipaddress
import pickle

import idna
import pytest

from tether.contract.hosts import (
    HostAllowlist,
    HostPatternError,
    InvalidHostError,
    host_matches,
    normalize_host,
    normalize_host_pattern,
    parse_numeric_host,
)

LONG_LABEL = "a" * 63
# 63 + 1 + 63 + 1 + 63 + 1 + 57 + 4 (".com") = 253 characters.
LONGEST_NAME = f"{LONG_LABEL}.{LONG_LABEL}.{LONG_LABEL}.{'b' * 57}.com"

# --- normalize_host_pattern: accepted ---------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("example.com", "example.com"),
        ("api.example.com", "api.example.com"),
        ("a-b.example.com", "a-b.example.com"),
        ("1.example.com", "1.example.com"),
        ("123.example.com", "123.example.com"),
        ("*.example.com", "*.example.com"),
        ("*.a.b.example.com", "*.a.b.example.com"),
        ("a.b.example.co.uk", "a.b.example.co.uk"),
        ("*.example.co.uk", "*.example.co.uk"),
        ("*.myname.github.io", "*.myname.github.io"),
        ("www.ck", "www.ck"),  # PSL exception rule under the *.ck wildcard
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("*.xn--bcher-kva.example", "*.xn--bcher-kva.example"),
        (f"{LONG_LABEL}.com", f"{LONG_LABEL}.com"),
        (LONGEST_NAME, LONGEST_NAME),
        ("127.0.0.1", "127.0.0.1"),
        ("10.0.0.1", "10.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
    ],
)
def test_valid_patterns_are_accepted_in_canonical_form(pattern: str, expected: str) -> None:
    assert normalize_host_pattern(pattern) == expected


@pytest.mark.parametrize("pattern", ["*.example.com", "[2001:db8::1]", "xn--bcher-kva.example"])
def test_normalising_a_canonical_pattern_again_changes_nothing(pattern: str) -> None:
    once = normalize_host_pattern(pattern)
    assert normalize_host_pattern(once) == once


# --- normalize_host_pattern: refused, with a message that says what to fix --------------------


@pytest.mark.parametrize(
    ("pattern", "fragments"),
    [
        # case, unicode, trailing dot
        ("Example.com", ['"Example.com" must be lowercase', 'write "example.com"']),
        ("*.EXAMPLE.com", ["must be lowercase", 'write "*.example.com"']),
        ("bücher.example", ["must be ASCII", 'write the punycode form "xn--bcher-kva.example"']),
        ("*.bücher.example", ['write the punycode form "*.xn--bcher-kva.example"']),
        ("BÜCHER.example", ['write the punycode form "xn--bcher-kva.example"']),
        ("example.com.", ["must not end with a dot", 'write "example.com"']),
        # scheme, user, path, port, whitespace
        ("https://api.example.com/v1", ["must not include a scheme", 'write "api.example.com"']),
        ("user@example.com", ["must not include a user name", 'write "example.com"']),
        ("example.com/path", ["must not include a path", 'write "example.com"']),
        ("example.com:443", ["must not include a port", 'write "example.com"']),
        ("[::1]:8080", ["must not include a port", 'write "::1"']),
        (" example.com", ["whitespace", 'write "example.com"']),
        ("example.com\n", ["whitespace", 'write "example.com"']),
        ("\u200bexample.com", ["invisible characters", 'write "example.com"']),
        ("exa mple.com", ["whitespace", "write a host such as"]),
        ("", ["empty", "write a host such as"]),
        # several problems at once: the fix offered is checked too
        ("HTTPS://API.example.com:443/", ["would be refused too", 'write "api.example.com"']),
        # wildcards
        ("*", ["would allow every host", "list the hosts you need"]),
        ("*.com", ['public suffix "com"', 'as in "*.example.com"']),
        ("*.co.uk", ['public suffix "co.uk"', 'as in "*.example.co.uk"']),
        ("*.github.io", ['public suffix "github.io"', "name your own domain"]),
        ("*.foo.ck", ['public suffix "foo.ck"']),  # the PSL's *.ck makes foo.ck public
        ("**.example.com", ['"*" inside a label', 'write "*.example.com"']),
        ("*foo.com", ['"*" inside a label', 'to match subdomains write "*.foo.com"']),
        ("foo.*.com", ["only allowed as the whole leftmost label"]),
        ("foo*.example.com", ["only allowed as the whole leftmost label"]),
        ("*.*.example.com", ['only one "*."', 'write "*.example.com"']),
        ("*.", ["must not end with a dot", '"*" would allow every host']),
        # public suffixes and single labels
        ("com", ['"com" is a public suffix', 'as in "api.example.com"']),
        ("co.uk", ['"co.uk" is a public suffix', 'as in "api.example.co.uk"']),
        ("github.io", ["is a public suffix"]),
        ("localhost", ["single-label name", 'write "127.0.0.1" or "::1"']),
        ("*.internal", ["single-label name", 'as in "*.example.internal"']),
        # DNS label syntax
        ("a..example.com", ["empty label", "remove the extra dot"]),
        (".example.com", ["empty label"]),
        ("a_b.example.com", ['contains "_"', 'use only a-z, 0-9, "-" and "."']),
        ("-a.example.com", ['label "-a" must not start or end with "-"']),
        ("a-.example.com", ['label "a-" must not start or end with "-"']),
        (f"{LONG_LABEL}a.com", ["label of 64 characters", "at most 63"]),
        (f"a{LONGEST_NAME}", ["254 characters long", "at most 253"]),
        ("xn--zz.example.com", ['label "xn--zz" is not valid punycode']),
        ("xn--a.example.com", ["is not valid punycode"]),
        ("xn--ls8h.example.com", ["is not valid punycode"]),  # an emoji: not IDNA2008
        ("ab--cd.example.com", ["not a valid IDNA host name", "3rd and 4th"]),
        # IP addresses
        ("127.1", ["not a canonical IPv4 address", 'write "127.0.0.1"']),
        ("2130706433", ['write "127.0.0.1"']),
        ("0177.0.0.1", ['write "127.0.0.1"']),
        ("1.2.3", ['write "1.2.0.3"']),
        ("256.1.1.1", ['part "256" is greater than 255', "write a valid IP address"]),
        ("1.2.3.4.5", ["more than four parts"]),
        ("08.0.0.1", ["not an octal number"]),
        ("example.123", ["last label is numeric", "whose last label is not all digits"]),
        ("*.127.0.0.1", ["wildcards are not allowed over IP addresses", '"127.0.0.1"']),
        ("*.10.1", ["wildcards are not allowed over IP addresses", '"10.0.0.1"']),
        ("*.[::1]", ["wildcards are not allowed over IP addresses", '"::1"']),
        ("*.::1", ["wildcards are not allowed over IP addresses"]),
        ("::FFFF:127.0.0.1", ["not a canonical IPv6 address", 'write "::ffff:127.0.0.1"']),
        ("::ffff:7f00:1", ['write "::ffff:127.0.0.1"']),
        ("2001:0db8:0:0:0:0:0:1", ['write "2001:db8::1"']),
        ("fe80::1%eth0", ["zone id"]),
        ("::g", ["not a valid IPv6 address"]),
    ],
)
def test_invalid_patterns_are_refused_with_a_fix(pattern: str, fragments: list[str]) -> None:
    with pytest.raises(HostPatternError) as caught:
        normalize_host_pattern(pattern)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert caught.value.pattern == pattern


def test_non_string_pattern_is_refused() -> None:
    with pytest.raises(HostPatternError, match="must be a string, not int"):
        normalize_host_pattern(42)  # type: ignore[arg-type]


def test_error_classes_are_value_errors_and_pickle_with_their_pattern() -> None:
    assert issubclass(InvalidHostError, HostPatternError)
    assert issubclass(HostPatternError, ValueError)
    error = HostPatternError("bad", "Example.com")
    restored = pickle.loads(pickle.dumps(error))
    assert (str(restored), restored.pattern) == ("bad", "Example.com")


# --- parse_numeric_host -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),  # one trailing dot is ignored
        ("2130706433", "127.0.0.1"),  # single decimal integer
        ("0x7f000001", "127.0.0.1"),  # single hex integer
        ("0X7F000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),  # single octal integer
        ("0x7f.0x0.0x0.0x1", "127.0.0.1"),  # hex per part
        ("0177.0.0.1", "127.0.0.1"),  # octal per part
        ("0177.0.0.01", "127.0.0.1"),
        ("127.000.000.001", "127.0.0.1"),  # leading zeros mean octal, still 0 and 1
        ("127.1", "127.0.0.1"),  # shortened: the last part fills the remaining bytes
        ("127.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),  # mixed: hex then decimal
        ("0177.0x0.1", "127.0.0.1"),  # mixed: octal, hex, decimal
        ("127.0x1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("10.0.1", "10.0.0.1"),
        ("167772161", "10.0.0.1"),
        ("0xa000001", "10.0.0.1"),
        ("012.0.0.1", "10.0.0.1"),
        ("012.1", "10.0.0.1"),
        ("0xa.0.0.01", "10.0.0.1"),
        ("1.2.3", "1.2.0.3"),
        ("192.168.257", "192.168.1.1"),
        ("4294967295", "255.255.255.255"),
        ("0xffffffff", "255.255.255.255"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),  # WHATWG reads a bare "0x" as zero
    ],
)
def test_numeric_ipv4_encodings_parse_to_the_address(host: str, expected: str) -> None:
    assert parse_numeric_host(host) == ipaddress.IPv4Address(expected)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("[2001:0db8:0000::0001]", "2001:db8::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("[::ffff:7f00:1]", "::ffff:127.0.0.1"),
    ],
)
def test_ipv6_literals_parse_with_or_without_brackets(host: str, expected: str) -> None:
    assert parse_numeric_host(host) == ipaddress.IPv6Address(expected)


def test_ipv4_mapped_ipv6_keeps_its_embedded_ipv4_address() -> None:
    ip = parse_numeric_host("[::ffff:127.0.0.1]")
    assert isinstance(ip, ipaddress.IPv6Address)
    assert ip.ipv4_mapped == ipaddress.IPv4Address("127.0.0.1")


@pytest.mark.parametrize(
    "host",
    ["example.com", "localhost", "1.2.3.4.example.com", "0x7g", "1e5", "1.2.3.04a", "a.0xg"],
)
def test_names_whose_last_label_is_not_a_number_are_not_numeric(host: str) -> None:
    assert parse_numeric_host(host) is None


@pytest.mark.parametrize(
    "host",
    [
        "256.1.1.1",
        "1.2.3.4.5",
        "4294967296",
        "0x100000000",
        "1.2.65536",
        "1.16777216",
        "08.0.0.1",
        "0x7g.0.0.1",
        "1..1",
        "1_0.0.0.1",  # int() would accept the underscore
        "+1.0.0.1",  # ... and the sign
        "example.123",  # numeric last label: never a DNS name
        "foo.0x1",
        "[fe80::1%eth0]",
        "fe80::1%25eth0",
        "[::1",
        "::1]",
        "[127.0.0.1]",
        "[]",
        ":::",
        "example.com:443",
    ],
)
def test_invalid_numeric_hosts_raise(host: str) -> None:
    with pytest.raises(InvalidHostError):
        parse_numeric_host(host)


# --- normalize_host -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("EXAMPLE.com.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.Example.", "xn--bcher-kva.example"),
        ("bücher。example", "xn--bcher-kva.example"),  # ideographic full stop
        ("faß.de", "xn--fa-hia.de"),  # non-transitional UTS #46: ß is kept
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("\u212a.example.com", "k.example.com"),  # Kelvin sign maps to "k"
        ("[::1]", "::1"),
        ("[::FFFF:127.0.0.1]", "::ffff:127.0.0.1"),
        ("::ffff:7f00:1", "::ffff:127.0.0.1"),
        ("[2001:DB8:0:0:0:0:0:1]", "2001:db8::1"),
        ("2130706433", "127.0.0.1"),
        ("0x7F.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("１２７.０.０.１", "127.0.0.1"),  # fullwidth digits are mapped, then parsed
    ],
)
def test_normalize_host(host: str, expected: str) -> None:
    assert normalize_host(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "example.com..",
        "a..b",
        "exa mple.com",
        "a_b.com",
        "ex%61mple.com",  # percent-encoding is not decoded
        "-a.com",
        f"{LONG_LABEL}a.com",
        "*.example.com",
        "xn--zz.com",
        "ab--cd.com",
        "example.com:443",
        "256.1.1.1",
        "example.123",
        "[fe80::1%eth0]",
    ],
)
def test_normalize_host_refuses_hosts_that_cannot_be_valid(host: str) -> None:
    with pytest.raises(InvalidHostError):
        normalize_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "Example.COM",
        "EXAMPLE.COM.",
        "a-b.example.com",
        "0a.example",
        "a.b.c.d.e.f",
        f"{LONG_LABEL}.com",
        LONGEST_NAME,
        "xn--bcher-kva.example",
        "XN--BCHER-KVA.example",
    ],
)
def test_ascii_hosts_normalise_exactly_as_idna_does(host: str) -> None:
    # normalize_host skips idna for plain ASCII names; it must agree with idna.
    assert normalize_host(host) == idna.encode(host, uts46=True).decode().removesuffix(".")


# --- host_matches ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "evil-example.com", False),
        ("*.example.com", "example.com.evil.com", False),
        ("*.example.com", "a.example.com.evil.com", False),
        ("*.example.com", "aexample.com", False),
        ("*.example.com", "a.example.co", False),
        ("*.example.com", ".example.com", False),
        ("example.com", "example.com", True),
        ("example.com", "a.example.com", False),
        ("example.com", "aexample.com", False),
        ("example.com", "example.co", False),
        ("a.example.com", "example.com", False),
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("127.0.0.1", "::ffff:127.0.0.1", False),  # IPv4-mapped IPv6 is a different host
        ("::1", "::1", True),
        ("::1", "::2", False),
        ("*.0.0.1", "127.0.0.1", False),  # never a valid pattern; IPs never match wildcards
    ],
)
def test_host_matches(pattern: str, host: str, expected: bool) -> None:
    assert host_matches(pattern, host) is expected


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("*.example.com", "A.EXAMPLE.COM", True),
        ("example.com", "EXAMPLE.com.", True),
        ("*.example.com", "example.com.", False),
        ("*.example.com", "a.example.com.", True),
        ("xn--bcher-kva.example", "bücher.example", True),
        ("xn--bcher-kva.example", "BÜCHER.example.", True),
        ("*.xn--bcher-kva.example", "www.Bücher.example", True),
        ("xn--bcher-kva.example", "bucher.example", False),
        ("127.0.0.1", "2130706433", True),
        ("127.0.0.1", "0x7f.1", True),
        ("127.0.0.1", "0177.0.0.1", True),
        ("10.0.0.1", "10.1", True),
        ("10.0.0.1", "10.0.0.2", False),
        ("::1", "[0:0:0:0:0:0:0:1]", True),
        ("[::ffff:127.0.0.1]", "[::ffff:7f00:1]", True),
    ],
)
def test_matching_after_normalisation(pattern: str, host: str, expected: bool) -> None:
    assert host_matches(normalize_host_pattern(pattern), normalize_host(host)) is expected


# --- HostAllowlist --------------------------------------------------------------------------

ALLOWLIST = HostAllowlist(["api.example.com", "*.example.org", "127.0.0.1", "[::1]"])


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.example.com", True),
        ("API.Example.COM.", True),
        ("www.example.com", False),
        ("example.com", False),
        ("a.example.org", True),
        ("a.b.c.example.org", True),
        ("example.org", False),
        ("evil-example.org", False),
        ("example.org.evil.com", False),
        ("127.0.0.1", True),
        ("2130706433", True),
        ("127.1", True),
        ("127.0.0.2", False),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", False),
        # hosts that fail normalisation are never allowed
        ("", False),
        ("api.example.com:443", False),
        ("256.0.0.1", False),
        ("*.example.org", False),
        ("a b.example.org", False),
    ],
)
def test_allowlist_allows(host: str, expected: bool) -> None:
    assert ALLOWLIST.allows(host) is expected


def test_allowlist_patterns_are_canonical_and_deduplicated_in_order() -> None:
    allowlist = HostAllowlist(["b.example.com", "[::1]", "a.example.com", "b.example.com", "::1"])
    assert allowlist.patterns == ("b.example.com", "::1", "a.example.com")


@pytest.mark.parametrize("host", ["example.com", "a.example.com", "127.0.0.1", "::1", ""])
def test_empty_allowlist_allows_nothing(host: str) -> None:
    assert HostAllowlist([]).allows(host) is False


def test_allowlist_names_the_bad_pattern() -> None:
    with pytest.raises(HostPatternError, match=r'"\*\.com" would match every site') as caught:
        HostAllowlist(["api.example.com", "*.com"])
    assert caught.value.pattern == "*.com"


def test_allowlist_refuses_a_single_string() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        HostAllowlist("api.example.com")


# --- intersection ---------------------------------------------------------------------------

MANIFEST = HostAllowlist(["*.example.com", "api.other.com", "127.0.0.1", "cdn.example.net"])
POLICY = HostAllowlist(
    ["a.example.com", "*.b.example.com", "api.other.com", "::1", "*.example.net"]
)

SAMPLE_HOSTS = [
    "example.com",
    "a.example.com",
    "x.a.example.com",
    "b.example.com",
    "x.b.example.com",
    "y.x.b.example.com",
    "c.example.com",
    "api.other.com",
    "other.com",
    "127.0.0.1",
    "::1",
    "cdn.example.net",
    "x.example.net",
]


@pytest.mark.parametrize("host", SAMPLE_HOSTS)
def test_intersection_allows_exactly_what_both_allow(host: str) -> None:
    both = MANIFEST.allows(host) and POLICY.allows(host)
    assert HostAllowlist.intersection(MANIFEST, POLICY).allows(host) is both
    assert HostAllowlist.intersection(POLICY, MANIFEST).allows(host) is both


def test_intersection_patterns_are_the_effective_allowlist() -> None:
    effective = HostAllowlist.intersection(MANIFEST, POLICY)
    assert effective.patterns == (
        "api.other.com",
        "cdn.example.net",
        "a.example.com",
        "*.b.example.com",
    )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (
            ["*.example.com"],
            ["*.example.com", "*.a.example.com", "x.example.com"],
            ["*.example.com"],
        ),
        (["*.example.com"], ["example.com"], []),
        (["example.com"], ["*.example.com"], []),
        (["*.a.example.com"], ["*.example.com"], ["*.a.example.com"]),
        (["127.0.0.1"], ["::ffff:127.0.0.1"], []),
        (["api.example.com"], [], []),
    ],
)
def test_intersection_patterns(a: list[str], b: list[str], expected: list[str]) -> None:
    assert HostAllowlist.intersection(HostAllowlist(a), HostAllowlist(b)).patterns == tuple(
        expected
    )


def test_intersection_with_an_empty_allowlist_allows_nothing() -> None:
    effective = HostAllowlist.intersection(MANIFEST, HostAllowlist([]))
    assert [host for host in SAMPLE_HOSTS if effective.allows(host)] == []
