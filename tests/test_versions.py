"""Tests for tether.contract.versions: API version, host version, semver parsing and order."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

import tether
from tether.contract.versions import (
    API_VERSION,
    HOST_VERSION,
    SemVer,
    api_compatible,
    host_satisfies,
    parse_api_version,
    parse_semver,
    semver_key,
)

# --- the versions themselves ---------------------------------------------------------------------


def test_api_version_is_major_minor() -> None:
    assert re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)", API_VERSION)
    assert parse_api_version(API_VERSION) is not None


def test_api_version_is_exported() -> None:
    assert tether.API_VERSION == API_VERSION
    assert "API_VERSION" in tether.__all__


def test_host_version_is_semver_and_is_the_package_version() -> None:
    assert parse_semver(HOST_VERSION) is not None
    assert tether.__version__ == HOST_VERSION


def test_a_plugin_built_for_this_api_runs_here() -> None:
    assert api_compatible(API_VERSION)
    major, minor = parse_api_version(API_VERSION)  # type: ignore[misc]
    assert not api_compatible(f"{major + 1}.{minor}")
    assert not api_compatible(f"{major}.{minor + 1}")


# --- parse_api_version ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.0", (1, 0)), ("0.9", (0, 9)), ("2.13", (2, 13)), ("10.0", (10, 0))],
)
def test_parse_api_version_accepts(text: str, expected: tuple[int, int]) -> None:
    assert parse_api_version(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1", id="major-only"),
        pytest.param("1.0.0", id="three-parts"),
        pytest.param("a.b", id="letters"),
        pytest.param("01.0", id="leading-zero-major"),
        pytest.param("1.01", id="leading-zero-minor"),
        pytest.param("v1.0", id="v-prefix"),
        pytest.param("1.", id="empty-minor"),
        pytest.param("", id="empty"),
        pytest.param(" 1.0", id="leading-space"),
        pytest.param("-1.0", id="negative"),
        pytest.param(
            "1.0\n",
            id="trailing-newline",
        ),
    ],
)
def test_parse_api_version_refuses(text: str) -> None:
    assert parse_api_version(text) is None


# --- api_compatible ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plugin", "host", "ok"),
    [
        pytest.param("1.0", "1.0", True, id="same"),
        pytest.param("1.0", "1.3", True, id="plugin-minor-behind"),
        pytest.param("1.2", "1.3", True, id="plugin-minor-behind-nonzero"),
        pytest.param("1.3", "1.3", True, id="same-nonzero-minor"),
        pytest.param("1.4", "1.3", False, id="plugin-minor-ahead"),
        pytest.param("2.0", "1.3", False, id="plugin-major-ahead"),
        pytest.param("0.9", "1.0", False, id="plugin-major-behind"),
        pytest.param("1.0", "2.0", False, id="host-major-ahead"),
        pytest.param("0.1", "0.2", True, id="zero-major-minor-behind"),
        pytest.param("0.3", "0.2", False, id="zero-major-minor-ahead"),
        pytest.param("1", "1.0", False, id="malformed-plugin"),
        pytest.param("1.0.0", "1.0", False, id="semver-is-not-api-version"),
        pytest.param("1.0", "x", False, id="malformed-host"),
    ],
)
def test_api_compatible(plugin: str, host: str, ok: bool) -> None:
    assert api_compatible(plugin, host) is ok


# --- parse_semver ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("0.0.0", SemVer(0, 0, 0, ""), id="zeros"),
        pytest.param("1.2.3", SemVer(1, 2, 3, ""), id="plain"),
        pytest.param("10.20.30", SemVer(10, 20, 30, ""), id="multi-digit"),
        pytest.param("1.0.0-alpha", SemVer(1, 0, 0, "alpha"), id="prerelease"),
        pytest.param("1.0.0-rc.1", SemVer(1, 0, 0, "rc.1"), id="dotted-prerelease"),
        pytest.param("1.0.0-0.3.7", SemVer(1, 0, 0, "0.3.7"), id="numeric-prerelease"),
        pytest.param("1.0.0-x-y.z--", SemVer(1, 0, 0, "x-y.z--"), id="hyphens-in-prerelease"),
        pytest.param("1.0.0+build.5", SemVer(1, 0, 0, ""), id="build-only"),
        pytest.param("1.2.3-rc.1+build.5", SemVer(1, 2, 3, "rc.1"), id="prerelease-and-build"),
        pytest.param("1.0.0+20130313144700", SemVer(1, 0, 0, ""), id="numeric-build"),
        pytest.param("1.0.0+exp.sha.5114f85", SemVer(1, 0, 0, ""), id="build-with-sha"),
    ],
)
def test_parse_semver_accepts(text: str, expected: SemVer) -> None:
    assert parse_semver(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1.0", id="two-parts"),
        pytest.param("1", id="one-part"),
        pytest.param("1.0.0.0", id="four-parts"),
        pytest.param("v1.0.0", id="v-prefix"),
        pytest.param("01.0.0", id="leading-zero-major"),
        pytest.param("1.02.0", id="leading-zero-minor"),
        pytest.param("1.0.00", id="leading-zero-patch"),
        pytest.param("1.0.0-", id="empty-prerelease"),
        pytest.param("1.0.0-01", id="leading-zero-numeric-prerelease"),
        pytest.param("1.0.0-a..b", id="empty-prerelease-part"),
        pytest.param("1.0.0+", id="empty-build"),
        pytest.param("1.0.0-rc_1", id="underscore-in-prerelease"),
        pytest.param("", id="empty"),
        pytest.param(" 1.0.0", id="leading-space"),
        pytest.param("1.0.0 ", id="trailing-space"),
        pytest.param("-1.0.0", id="negative"),
        pytest.param("1.a.0", id="letter"),
        pytest.param(
            "1.0.0\n",
            id="trailing-newline",
        ),
    ],
)
def test_parse_semver_refuses(text: str) -> None:
    assert parse_semver(text) is None


# --- ordering -------------------------------------------------------------------------------------

# The precedence example of Semantic Versioning 2.0.0, section 11, plus a few neighbours.
ORDERED = [
    "0.9.9",
    "1.0.0-0",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0-rc.1",
    "1.1.0",
    "1.10.0",
    "2.0.0",
]


def _key(text: str) -> object:
    v = parse_semver(text)
    assert v is not None, text
    return semver_key(v)


def test_semver_order_matches_the_spec() -> None:
    for a, b in pairwise(ORDERED):
        assert _key(a) < _key(b), f"{a} should sort before {b}"  # type: ignore[operator]


def test_semver_sorting_a_shuffled_list() -> None:
    shuffled = list(reversed(ORDERED))
    shuffled[3], shuffled[8] = shuffled[8], shuffled[3]
    assert sorted(shuffled, key=_key) == ORDERED  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pre", "release"),
    [("1.0.0-rc.1", "1.0.0"), ("2.0.0-alpha", "2.0.0"), ("0.1.0-0", "0.1.0")],
)
def test_prerelease_sorts_before_its_release(pre: str, release: str) -> None:
    assert _key(pre) < _key(release)  # type: ignore[operator]


def test_build_metadata_does_not_affect_order() -> None:
    assert _key("1.0.0+a") == _key("1.0.0+b") == _key("1.0.0")
    assert _key("1.0.0-rc.1+x") == _key("1.0.0-rc.1")


def test_numeric_prerelease_parts_compare_as_numbers() -> None:
    assert _key("1.0.0-rc.2") < _key("1.0.0-rc.10")  # type: ignore[operator]
    assert _key("1.0.0-2") < _key("1.0.0-10")  # type: ignore[operator]
    # Numbers sort before words in a pre-release part.
    assert _key("1.0.0-999") < _key("1.0.0-a")  # type: ignore[operator]


# --- host_satisfies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("need", "have", "ok"),
    [
        pytest.param("0.1.0", "0.1.0", True, id="equal"),
        pytest.param("0.1.0", "0.2.0", True, id="host-newer-minor"),
        pytest.param("0.1.0", "1.0.0", True, id="host-newer-major"),
        pytest.param("0.1.1", "0.1.0", False, id="host-older-patch"),
        pytest.param("0.2.0", "0.1.9", False, id="host-older-minor"),
        pytest.param("1.0.0", "0.99.99", False, id="host-older-major"),
        pytest.param("0.1.0-rc.1", "0.1.0", True, id="release-satisfies-its-prerelease"),
        pytest.param("0.1.0", "0.1.0-rc.1", False, id="prerelease-is-older-than-release"),
        pytest.param("0.1.0-rc.1", "0.1.0-rc.2", True, id="later-prerelease"),
        pytest.param("0.1.0+build", "0.1.0", True, id="build-ignored"),
        pytest.param("0.1", "0.1.0", False, id="malformed-need"),
        pytest.param("0.1.0", "latest", False, id="malformed-have"),
    ],
)
def test_host_satisfies(need: str, have: str, ok: bool) -> None:
    assert host_satisfies(need, have) is ok


def test_host_satisfies_defaults_to_this_host() -> None:
    assert host_satisfies(HOST_VERSION)
    assert host_satisfies("0.0.0")
    v = parse_semver(HOST_VERSION)
    assert v is not None
    assert not host_satisfies(f"{v.major + 1}.0.0")
