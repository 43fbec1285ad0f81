"""Tests for tether.contract.policy: parsing tether.toml and resolving what each plugin gets."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from tether.contract.errors import PolicyError, Problem, RefusalReason
from tether.contract.manifest import Manifest, manifest_from_dict
from tether.contract.policy import (
    DEFAULT_TIMEOUT_MS,
    PluginPolicy,
    Policy,
    PolicyLimits,
    Resolution,
    approval_lines,
    parse_policy,
    policy_from_dict,
    resolve,
)
from tether.contract.versions import API_VERSION, HOST_VERSION, parse_api_version, parse_semver

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def manifest(**changes: Any) -> Manifest:
    doc: dict[str, Any] = {
        "id": "demo",
        "name": "Demo",
        "version": "1.0.0",
        "api_version": API_VERSION,
        "capabilities": ["tools.register", "storage.read"],
    }
    doc.update(changes)
    return manifest_from_dict(doc, "plugins/demo")


def policy(text: str) -> Policy:
    return parse_policy(textwrap.dedent(text).encode())


def entry(text: str, plugin_id: str = "demo") -> PluginPolicy:
    return policy(text).plugins[plugin_id]


def problems(text: str, where: str = "tether.toml") -> list[Problem]:
    with pytest.raises(PolicyError) as info:
        parse_policy(textwrap.dedent(text).encode(), where)
    assert info.value.problems
    return info.value.problems


def refusal(res: Resolution) -> RefusalReason | None:
    return None if res.refusal is None else res.refusal[0]


# --- parsing: defaults ---------------------------------------------------------------------------


def test_empty_policy_has_secure_defaults() -> None:
    p = parse_policy(b"")
    assert p.host.plugin_dirs == ("plugins",)
    assert p.host.data_dir == ".tether"
    assert p.plugins == {}
    assert policy_from_dict({}) == p


def test_plugin_entry_defaults() -> None:
    e = entry("[plugins.demo]\n")
    assert e.enabled is True
    assert e.grant == ()
    assert e.outbound_hosts == ()
    assert e.tier is None
    assert e.strict is False
    assert e.version is None and e.digest is None
    assert e.limits.timeout_ms == DEFAULT_TIMEOUT_MS == 30_000
    assert e.limits == PolicyLimits()


def test_full_policy_parses() -> None:
    p = policy(
        f"""
        [host]
        plugin_dirs = ["plugins", "/opt/tether/plugins"]
        data_dir = "/var/lib/tether"
        entry_points = false

        [plugins.demo]
        enabled = true
        grant = ["tools.register", "http.outbound"]
        outbound_hosts = ["api.example.com", "[::1]"]
        tier = "subprocess"
        strict = true
        roles = ["admin"]
        route_prefix = "/hooks/demo"
        version = "1.2.3"
        digest = "{DIGEST_A}"
        config = {{ units = "celsius", depth = 3 }}

        [plugins.demo.limits]
        timeout_ms = 10000
        memory_mb = 256

        [plugins.other-one]
        enabled = false
        """
    )
    assert p.host.plugin_dirs == ("plugins", "/opt/tether/plugins")
    assert p.host.data_dir == "/var/lib/tether"
    assert p.host.entry_points is False
    e = p.plugins["demo"]
    assert e.grant == ("tools.register", "http.outbound")
    assert e.outbound_hosts == ("api.example.com", "::1")
    assert (e.tier, e.strict, e.roles, e.route_prefix) == (
        "subprocess",
        True,
        ("admin",),
        "/hooks/demo",
    )
    assert (e.version, e.digest) == ("1.2.3", DIGEST_A)
    assert e.config == {"units": "celsius", "depth": 3}
    assert (e.limits.timeout_ms, e.limits.memory_mb) == (10_000, 256)
    assert p.plugins["other-one"].enabled is False


# --- parsing: problems ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "needles"),
    [
        pytest.param("[hots]\n", "hots", ['did you mean "host"'], id="top-level-hots"),
        pytest.param("plugin = {}\n", "plugin", ['did you mean "plugins"'], id="top-level-plugin"),
        pytest.param(
            "[host]\nplugin_dir = ['x']\n",
            "host.plugin_dir",
            ['did you mean "plugin_dirs"'],
            id="host-plugin_dir",
        ),
        pytest.param(
            "[host]\ndatadir = 'x'\n",
            "host.datadir",
            ['did you mean "data_dir"'],
            id="host-datadir",
        ),
        pytest.param(
            "[plugins.demo]\ngrants = []\n",
            "plugins.demo.grants",
            ['did you mean "grant"'],
            id="plugin-grants",
        ),
        pytest.param(
            "[plugins.demo]\nenable = false\n",
            "plugins.demo.enable",
            ['did you mean "enabled"'],
            id="plugin-enable",
        ),
        pytest.param(
            "[plugins.demo]\noutbound = []\n",
            "plugins.demo.outbound",
            ['did you mean "outbound_hosts"'],
            id="plugin-outbound",
        ),
        pytest.param(
            "[plugins.demo.limits]\ntimeout = 5\n",
            "plugins.demo.limits.timeout",
            ['did you mean "timeout_ms"'],
            id="limits-timeout",
        ),
        pytest.param(
            "[plugins.demo.limits]\nmemory = 64\n",
            "plugins.demo.limits.memory",
            ['did you mean "memory_mb"'],
            id="limits-memory",
        ),
    ],
)
def test_unknown_key_gets_did_you_mean(text: str, field: str, needles: list[str]) -> None:
    found = problems(text)
    assert [p.field for p in found] == [field]
    assert found[0].where == "tether.toml"
    for needle in [*needles, "unknown key", "remove it or fix its name"]:
        assert needle in found[0].message


@pytest.mark.parametrize(
    ("text", "field", "needles"),
    [
        pytest.param(
            "[plugins.demo]\ngrant = ['tools.regster']\n",
            "plugins.demo.grant",
            ['did you mean "tools.register"', "docs/capabilities.md"],
            id="grant-misspelt",
        ),
        pytest.param(
            "[plugins.demo]\ngrant = ['tools:register']\n",
            "plugins.demo.grant",
            ['write "tools.register"'],
            id="grant-colon-form",
        ),
        pytest.param(
            "[plugins.demo]\ngrant = ['everything']\n",
            "plugins.demo.grant",
            ['"everything" is not a known capability'],
            id="grant-unknown",
        ),
        pytest.param(
            "[plugins.demo]\ngrant = 'tools.register'\n",
            "plugins.demo.grant",
            ["must be a list"],
            id="grant-as-string",
        ),
        pytest.param(
            "[plugins.demo]\ndigest = 'sha256:abc'\n",
            "plugins.demo.digest",
            ["64 lowercase hex digits", "copy it from `tether check`"],
            id="digest-short",
        ),
        pytest.param(
            f"[plugins.demo]\ndigest = '{DIGEST_A.upper()}'\n",
            "plugins.demo.digest",
            ["'sha256:' and 64 lowercase hex"],
            id="digest-uppercase",
        ),
        pytest.param(
            "[plugins.demo]\ndigest = '" + "a" * 64 + "'\n",
            "plugins.demo.digest",
            ["'sha256:'"],
            id="digest-without-prefix",
        ),
        pytest.param(
            "[plugins.demo]\ndigest = 'md5:" + "a" * 64 + "'\n",
            "plugins.demo.digest",
            ["'sha256:'"],
            id="digest-md5",
        ),
        pytest.param(
            "[plugins.demo]\nversion = '1.0'\n",
            "plugins.demo.version",
            ["pin an exact version like 1.0.0"],
            id="version-pin-not-semver",
        ),
        pytest.param(
            "[plugins.Demo]\n", "plugins", ["'Demo'", "e.g. 'my-plugin'"], id="plugin-id-uppercase"
        ),
        pytest.param(
            "[plugins.demo]\nenabled = 'no'\n",
            "plugins.demo.enabled",
            ["must be true or false"],
            id="enabled-as-string",
        ),
        pytest.param(
            "[plugins.demo]\ntier = 'docker'\n",
            "plugins.demo.tier",
            ["'inprocess', 'subprocess' or 'wasm'"],
            id="tier-unknown",
        ),
        pytest.param(
            "[plugins.demo]\noutbound_hosts = ['*.com']\n",
            "plugins.demo.outbound_hosts",
            ['as in "*.example.com"'],
            id="outbound-public-suffix",
        ),
        pytest.param(
            "[plugins.demo]\nroute_prefix = '/api/x'\n",
            "plugins.demo.route_prefix",
            ["choose another prefix"],
            id="route-prefix-under-api",
        ),
        pytest.param(
            "[plugins.demo.limits]\ntimeout_ms = 0\n",
            "plugins.demo.limits.timeout_ms",
            ["must be at least 1"],
            id="limit-timeout-0",
        ),
        pytest.param(
            "[host]\nwatchdog_ms = 5\n", "host.watchdog_ms", ["must be at least 20"], id="watchdog"
        ),
        pytest.param("plugins = 3\n", "plugins", ["must be a table"], id="plugins-not-a-table"),
        pytest.param(
            "[plugins.demo]\nconfig = 3\n", "plugins.demo.config", ["must be a table"], id="config"
        ),
        pytest.param(
            "[plugins.demo\n", "(file)", ["is not valid TOML", "line 1"], id="toml-syntax-error"
        ),
        pytest.param(
            "[plugins.demo.config]\nratio = nan\n",
            "(file)",
            ["plugins.demo.config.ratio", "not a finite number"],
            id="toml-nan",
        ),
    ],
)
def test_bad_policy_value_names_field_and_fix(text: str, field: str, needles: list[str]) -> None:
    found = problems(text, where="conf/tether.toml")
    assert {p.where for p in found} == {"conf/tether.toml"}
    matching = [p for p in found if p.field == field]
    assert matching, [str(p) for p in found]
    for needle in needles:
        assert needle in matching[0].message, str(matching[0])


def test_every_policy_problem_is_reported() -> None:
    found = problems(
        """
        [hots]
        [host]
        datadir = "x"
        [plugins.demo]
        grant = ["tools.regster"]
        digest = "sha256:0"
        [plugins.demo.limits]
        timeout = 1
        [plugins.other]
        enable = true
        """
    )
    assert {p.field for p in found} == {
        "hots",
        "host.datadir",
        "plugins.demo.grant",
        "plugins.demo.digest",
        "plugins.demo.limits.timeout",
        "plugins.other.enable",
    }


def test_oversize_policy_is_refused_as_a_file_problem() -> None:
    found = problems("#" + "x" * 70_000 + "\n")
    assert [(p.field, "65536 bytes" in p.message) for p in found] == [("(file)", True)]


def test_oversize_policy_message_does_not_call_it_a_manifest() -> None:
    (problem,) = problems("#" + "x" * 70_000 + "\n")
    assert "manifest" not in problem.message


def test_policy_error_is_a_manifest_error_with_lines() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(b"[hots]\n[host]\ndatadir = 'x'\n")
    assert str(info.value).splitlines() == [str(p) for p in info.value.problems]
    assert str(info.value).startswith("tether.toml: ")


# --- resolve: grants -----------------------------------------------------------------------------


def test_effective_grant_is_declared_intersect_granted() -> None:
    m = manifest(capabilities=["tools.register", "storage.read", "storage.write"])
    e = entry('[plugins.demo]\ngrant = ["tools.register", "storage.write", "http.outbound"]\n')
    res = resolve(m, e)
    assert res.refusal is None
    assert res.granted == {"tools.register", "storage.write"}
    assert res.denied == {"storage.read"}
    # Granted but never declared is not given, and not "denied" either.
    assert "http.outbound" not in res.granted | res.denied


def test_empty_grant_loads_with_nothing() -> None:
    res = resolve(manifest(), entry("[plugins.demo]\n"))
    assert res.refusal is None
    assert res.granted == frozenset()
    assert res.denied == {"tools.register", "storage.read"}


def test_no_entry_is_refused_with_the_exact_approval_lines() -> None:
    m = manifest()
    res = resolve(m, None)
    assert refusal(res) is RefusalReason.NOT_APPROVED
    assert res.granted == frozenset()
    message = res.refusal[1]  # type: ignore[index]
    assert approval_lines(m) in message
    assert "[plugins.demo]" in message
    assert 'grant = ["tools.register", "storage.read"]' in message
    assert "tether.toml" in message


def test_no_entry_approval_lines_carry_the_digest() -> None:
    m = manifest()
    message = resolve(m, None, digest=DIGEST_A).refusal[1]  # type: ignore[index]
    assert approval_lines(m, DIGEST_A) in message
    assert f'digest = "{DIGEST_A}"' in message


def test_code_plugin_without_entry_gets_what_it_declares() -> None:
    m = manifest(
        capabilities=["tools.register", "http.outbound", "routes.absolute"],
        outbound_hosts=["api.example.com"],
        route_prefix="/hooks/demo",
    )
    res = resolve(m, None, builtin=True)
    assert res.refusal is None
    assert res.granted == {"tools.register", "http.outbound", "routes.absolute"}
    assert res.denied == frozenset()
    assert res.outbound_hosts == ("api.example.com",)
    assert res.route_prefix == "/hooks/demo"


def test_code_plugin_with_entry_is_narrowed_by_it() -> None:
    res = resolve(manifest(), entry('[plugins.demo]\ngrant = ["storage.read"]\n'), builtin=True)
    assert res.refusal is None
    assert res.granted == {"storage.read"}


def test_folder_plugin_route_prefix_needs_policy_approval() -> None:
    m = manifest(capabilities=["routes.register", "routes.absolute"], route_prefix="/hooks/demo")
    res = resolve(m, entry('[plugins.demo]\ngrant = ["routes.register", "routes.absolute"]\n'))
    assert res.refusal is None
    assert res.route_prefix is None
    approved = entry('[plugins.demo]\ngrant = ["routes.absolute"]\nroute_prefix = "/hooks/demo"\n')
    assert resolve(m, approved).route_prefix == "/hooks/demo"


def test_route_prefix_mismatch_is_a_policy_violation() -> None:
    m = manifest(capabilities=["routes.absolute"], route_prefix="/hooks/demo")
    res = resolve(m, entry('[plugins.demo]\ngrant = ["routes.absolute"]\nroute_prefix = "/x"\n'))
    assert refusal(res) is RefusalReason.POLICY_VIOLATION
    assert "make them match" in res.refusal[1]  # type: ignore[index]


def test_policy_roles_override_manifest_roles() -> None:
    m = manifest(roles=["admin", "ops"])
    assert resolve(m, entry("[plugins.demo]\n")).roles == ("admin", "ops")
    assert resolve(m, entry('[plugins.demo]\nroles = ["*"]\n')).roles == ("*",)


# --- resolve: refusals ---------------------------------------------------------------------------


def test_disabled_plugin_is_refused() -> None:
    res = resolve(
        manifest(), entry('[plugins.demo]\nenabled = false\ngrant = ["tools.register"]\n')
    )
    assert refusal(res) is RefusalReason.DISABLED
    assert "[plugins.demo] enabled = false" in res.refusal[1]  # type: ignore[index]


def test_disabled_code_plugin_is_refused_too() -> None:
    res = resolve(manifest(), entry("[plugins.demo]\nenabled = false\n"), builtin=True)
    assert refusal(res) is RefusalReason.DISABLED


@pytest.mark.parametrize("capability", ["plugins.manage", "audit.read"])
def test_builtin_only_capability_in_folder_plugin_is_refused(capability: str) -> None:
    m = manifest(capabilities=["tools.register", capability])
    e = entry(f'[plugins.demo]\ngrant = ["tools.register", "{capability}"]\n')
    res = resolve(m, e)
    assert refusal(res) is RefusalReason.BUILTIN_ONLY
    message = res.refusal[1]  # type: ignore[index]
    assert capability in message
    assert "only built-in plugins" in message and "remove it" in message


def test_builtin_only_capability_in_code_plugin_is_fine() -> None:
    res = resolve(manifest(capabilities=["plugins.manage"]), None, builtin=True)
    assert res.refusal is None
    assert res.granted == {"plugins.manage"}


def test_version_pin_drift() -> None:
    m = manifest(version="1.1.0")
    res = resolve(m, entry('[plugins.demo]\ngrant = ["tools.register"]\nversion = "1.0.0"\n'))
    assert refusal(res) is RefusalReason.VERSION_DRIFT
    message = res.refusal[1]  # type: ignore[index]
    assert "1.1.0" in message and "1.0.0" in message
    assert "update [plugins.demo] version" in message


def test_version_pin_match_loads() -> None:
    res = resolve(
        manifest(),
        entry('[plugins.demo]\ngrant = ["tools.register", "storage.read"]\nversion = "1.0.0"\n'),
    )
    assert res.refusal is None


def test_digest_pin_drift() -> None:
    e = entry(
        f'[plugins.demo]\ngrant = ["tools.register", "storage.read"]\ndigest = "{DIGEST_A}"\n'
    )
    res = resolve(manifest(), e, digest=DIGEST_B)
    assert refusal(res) is RefusalReason.DIGEST_DRIFT
    message = res.refusal[1]  # type: ignore[index]
    assert DIGEST_A in message and DIGEST_B in message
    assert "update [plugins.demo] digest" in message
    assert resolve(manifest(), e, digest=DIGEST_A).refusal is None


@pytest.mark.parametrize(
    "pin",
    [
        pytest.param('version = "1.0.0"', id="version-pinned"),
        pytest.param(f'digest = "{DIGEST_A}"', id="digest-pinned"),
        pytest.param("strict = true", id="strict"),
    ],
)
def test_pinned_plugin_declaring_ungranted_capability_drifts(pin: str) -> None:
    e = entry(f'[plugins.demo]\ngrant = ["tools.register"]\n{pin}\n')
    res = resolve(manifest(), e, digest=DIGEST_A)
    assert refusal(res) is RefusalReason.CAPABILITY_DRIFT
    message = res.refusal[1]  # type: ignore[index]
    assert "storage.read" in message
    assert "add to [plugins.demo] grant" in message


def test_unpinned_plugin_with_ungranted_capability_loads_without_it() -> None:
    res = resolve(manifest(), entry('[plugins.demo]\ngrant = ["tools.register"]\n'))
    assert res.refusal is None
    assert res.denied == {"storage.read"}


def test_pinned_plugin_declaring_ungranted_outbound_host_drifts() -> None:
    m = manifest(
        capabilities=["http.outbound"], outbound_hosts=["api.example.com", "evil.example.net"]
    )
    e = entry(
        '[plugins.demo]\ngrant = ["http.outbound"]\noutbound_hosts = ["api.example.com"]\n'
        'version = "1.0.0"\n'
    )
    res = resolve(m, e)
    assert refusal(res) is RefusalReason.OUTBOUND_DRIFT
    message = res.refusal[1]  # type: ignore[index]
    assert "evil.example.net" in message
    assert "api.example.com" not in message
    assert "add to [plugins.demo] outbound_hosts" in message


def test_strict_plugin_declaring_ungranted_outbound_host_drifts() -> None:
    m = manifest(capabilities=["http.outbound"], outbound_hosts=["api.example.com"])
    e = entry('[plugins.demo]\ngrant = ["http.outbound"]\nstrict = true\n')
    assert refusal(resolve(m, e)) is RefusalReason.OUTBOUND_DRIFT


def test_outbound_hosts_are_intersected() -> None:
    m = manifest(
        capabilities=["http.outbound"],
        outbound_hosts=["a.example.com", "b.example.com", "c.example.com"],
    )
    e = entry(
        '[plugins.demo]\ngrant = ["http.outbound"]\n'
        'outbound_hosts = ["c.example.com", "b.example.com", "z.example.com"]\n'
    )
    res = resolve(m, e)
    assert res.refusal is None
    assert res.outbound_hosts == ("b.example.com", "c.example.com")


@pytest.mark.parametrize(
    ("declared", "approved", "effective"),
    [
        pytest.param("api.example.com", "*.example.com", ("api.example.com",), id="policy-wider"),
        pytest.param("*.example.com", "api.example.com", ("api.example.com",), id="manifest-wider"),
    ],
)
def test_outbound_intersection_understands_wildcards(
    declared: str, approved: str, effective: tuple[str, ...]
) -> None:
    m = manifest(capabilities=["http.outbound"], outbound_hosts=[declared])
    e = entry(f'[plugins.demo]\ngrant = ["http.outbound"]\noutbound_hosts = ["{approved}"]\n')
    assert resolve(m, e).outbound_hosts == effective


def _api(major: int, minor: int) -> str:
    return f"{major}.{minor}"


HOST_API = parse_api_version(API_VERSION)
assert HOST_API is not None


@pytest.mark.parametrize(
    "api",
    [
        pytest.param(_api(HOST_API[0] + 1, 0), id="major-ahead"),
        pytest.param(_api(HOST_API[0] + 1, HOST_API[1]), id="major-ahead-same-minor"),
        pytest.param(_api(HOST_API[0] - 1, HOST_API[1]), id="major-behind"),
        pytest.param(_api(HOST_API[0], HOST_API[1] + 1), id="minor-ahead"),
    ],
)
def test_incompatible_api_version_is_refused(api: str) -> None:
    res = resolve(manifest(api_version=api), entry('[plugins.demo]\ngrant = ["tools.register"]\n'))
    assert refusal(res) is RefusalReason.INCOMPATIBLE_API_VERSION
    message = res.refusal[1]  # type: ignore[index]
    assert api in message and API_VERSION in message
    assert "update the plugin or the host" in message


def test_same_major_and_minor_not_ahead_is_compatible() -> None:
    # Every minor from 0 up to the host's own (only "X.0" while the host speaks X.0).
    for minor in range(HOST_API[1] + 1):
        m = manifest(api_version=_api(HOST_API[0], minor))
        res = resolve(m, entry('[plugins.demo]\ngrant = ["tools.register", "storage.read"]\n'))
        assert res.refusal is None, res.refusal


def test_api_version_is_checked_before_approval() -> None:
    m = manifest(api_version=_api(HOST_API[0] + 1, 0))
    assert refusal(resolve(m, None)) is RefusalReason.INCOMPATIBLE_API_VERSION
    assert refusal(resolve(m, None, builtin=True)) is RefusalReason.INCOMPATIBLE_API_VERSION


def test_min_host_version_ahead_is_refused() -> None:
    host = parse_semver(HOST_VERSION)
    assert host is not None
    need = f"{host.major}.{host.minor + 1}.0"
    res = resolve(manifest(min_host_version=need), entry("[plugins.demo]\n"))
    assert refusal(res) is RefusalReason.HOST_TOO_OLD
    message = res.refusal[1]  # type: ignore[index]
    assert need in message and "upgrade Tether" in message


@pytest.mark.parametrize("need", ["0.0.1", HOST_VERSION, HOST_VERSION + "-rc.1"])
def test_min_host_version_met_loads(need: str) -> None:
    res = resolve(manifest(min_host_version=need), entry("[plugins.demo]\n"))
    assert refusal(res) is None


# --- resolve: tier and limits --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "policy_tier", "effective"),
    [
        pytest.param("subprocess", "inprocess", "subprocess", id="manifest-stricter"),
        pytest.param("inprocess", "wasm", "wasm", id="policy-stricter"),
        pytest.param("wasm", "subprocess", "wasm", id="manifest-wasm"),
        pytest.param("subprocess", "subprocess", "subprocess", id="equal"),
        pytest.param("subprocess", None, "subprocess", id="policy-silent"),
        pytest.param("inprocess", None, "inprocess", id="default"),
    ],
)
def test_stricter_tier_wins(asked: str, policy_tier: str | None, effective: str) -> None:
    line = "" if policy_tier is None else f'tier = "{policy_tier}"\n'
    res = resolve(manifest(tier=asked), entry(f"[plugins.demo]\n{line}"))
    assert res.refusal is None
    assert res.tier == effective


@pytest.mark.parametrize(
    ("asked", "cap_line", "effective"),
    [
        pytest.param(5000, "", 5000, id="asks-less-than-default-cap"),
        pytest.param(60_000, "", 30_000, id="asks-more-than-default-cap"),
        pytest.param(None, "", 30_000, id="asks-nothing-gets-default"),
        pytest.param(5000, "timeout_ms = 30000", 5000, id="asks-less-than-cap"),
        pytest.param(60_000, "timeout_ms = 30000", 30_000, id="asks-more-than-cap"),
        pytest.param(None, "timeout_ms = 2000", 2000, id="asks-nothing-gets-cap"),
    ],
)
def test_timeout_is_capped_by_policy(asked: int | None, cap_line: str, effective: int) -> None:
    limits = {} if asked is None else {"limits": {"timeout_ms": asked}}
    res = resolve(manifest(**limits), entry(f"[plugins.demo]\n[plugins.demo.limits]\n{cap_line}\n"))
    assert res.timeout_ms == effective


def test_memory_is_capped_by_policy() -> None:
    m = manifest(limits={"memory_mb": 1024, "memory_max_pages": 10})
    res = resolve(m, entry("[plugins.demo.limits]\nmemory_mb = 256\nmemory_max_pages = 100\n"))
    assert (res.memory_mb, res.memory_max_pages) == (256, 10)


# --- approval_lines ------------------------------------------------------------------------------


def test_approval_lines_without_digest() -> None:
    assert approval_lines(manifest()) == (
        '[plugins.demo]\ngrant = ["tools.register", "storage.read"]'
    )


def test_approval_lines_with_digest_pins_version_and_digest() -> None:
    lines = approval_lines(manifest(version="2.0.0-rc.1"), DIGEST_A).splitlines()
    assert lines == [
        "[plugins.demo]",
        'grant = ["tools.register", "storage.read"]',
        'version = "2.0.0-rc.1"',
        f'digest = "{DIGEST_A}"',
    ]


def test_approval_lines_with_hosts_and_route() -> None:
    m = manifest(
        capabilities=["http.outbound", "routes.register", "routes.absolute"],
        outbound_hosts=["api.example.com", "*.cdn.example.org"],
        route_prefix="/hooks/demo",
    )
    lines = approval_lines(m).splitlines()
    assert 'outbound_hosts = ["api.example.com", "*.cdn.example.org"]' in lines
    assert 'route_prefix = "/hooks/demo"' in lines


ROUND_TRIP = [
    pytest.param({}, None, id="plain"),
    pytest.param({}, DIGEST_A, id="with-digest"),
    pytest.param({"capabilities": []}, DIGEST_B, id="no-capabilities"),
    pytest.param(
        {
            "id": "web-hooks-2",
            "version": "3.1.4+build.9",
            "capabilities": ["http.outbound", "routes.register", "routes.absolute", "db.sql"],
            "outbound_hosts": ["api.example.com", "*.cdn.example.org", "::1"],
            "route_prefix": "/hooks/web",
            "tier": "subprocess",
            "limits": {"timeout_ms": 90_000},
        },
        DIGEST_B,
        id="everything",
    ),
]


@pytest.mark.parametrize(("changes", "digest"), ROUND_TRIP)
def test_approval_lines_round_trip(changes: dict[str, Any], digest: str | None) -> None:
    m = manifest(**changes)
    p = parse_policy(approval_lines(m, digest).encode())
    assert list(p.plugins) == [m.id]
    res = resolve(m, p.plugins[m.id], digest=digest)
    assert res.refusal is None, res.refusal
    assert res.granted == frozenset(m.capabilities)
    assert res.denied == frozenset()
    assert res.outbound_hosts == m.outbound_hosts
    assert res.route_prefix == m.route_prefix


@pytest.mark.parametrize(("changes", "digest"), ROUND_TRIP)
def test_not_approved_message_round_trips(changes: dict[str, Any], digest: str | None) -> None:
    m = manifest(**changes)
    reason, message = resolve(m, None, digest=digest).refusal  # type: ignore[misc]
    assert reason is RefusalReason.NOT_APPROVED
    _, _, lines = message.partition("add to tether.toml:\n")
    p = parse_policy(lines.encode())
    res = resolve(m, p.plugins[m.id], digest=digest)
    assert res.refusal is None, res.refusal
    assert res.granted == frozenset(m.capabilities)


def test_approved_with_digest_then_changed_is_caught() -> None:
    m = manifest()
    e = parse_policy(approval_lines(m, DIGEST_A).encode()).plugins["demo"]
    assert refusal(resolve(m, e, digest=DIGEST_B)) is RefusalReason.DIGEST_DRIFT
    bumped = manifest(version="1.0.1")
    assert refusal(resolve(bumped, e, digest=DIGEST_A)) is RefusalReason.VERSION_DRIFT
    wider = manifest(capabilities=["tools.register", "storage.read", "storage.write"])
    assert refusal(resolve(wider, e, digest=DIGEST_A)) is RefusalReason.CAPABILITY_DRIFT
