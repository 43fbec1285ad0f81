"""Tests for tether.contract.manifest: parsing and strict validation of plugin manifests."""

from __future__ import annotations

import functools
import json
import tomllib
from typing import Any

import pytest
from pydantic import ValidationError

from tether.contract.errors import ManifestError, Problem
from tether.contract.manifest import Manifest, manifest_from_dict, parse_manifest
from tether.contract.validation import MAX_MANIFEST_BYTES

WHERE = "plugins/demo"
DROP = object()  # marks a key to remove from the base manifest

MINIMAL: dict[str, Any] = {
    "id": "demo",
    "name": "Demo",
    "version": "1.0.0",
    "api_version": "1.0",
    "entry": "plugin.py",
    "capabilities": ["tools.register"],
    "dependencies": [],
}

MINIMAL_TOML = b"""\
id = "demo"
name = "Demo"
version = "1.0.0"
api_version = "1.0"
entry = "plugin.py"
capabilities = ["tools.register"]
dependencies = []
"""

FULL_TOML = b"""\
id = "weather-pro"
name = "Weather Pro"
version = "2.1.0-rc.1+build.7"
api_version = "1.0"
entry = "src/main.py"
capabilities = ["tools.register", "http.outbound", "routes.register", "routes.absolute",
                "env.inject", "skills.register", "secrets.mtls", "config.register"]
dependencies = ["geo", "units-lib"]
description = "Forecasts.\\nTwo lines, with\\ta tab."
author = "Ada Lovelace"
homepage = "https://example.com/weather"
min_host_version = "0.1.0"
tier = "subprocess"
outbound_hosts = ["api.weather.example.com", "*.tiles.example.org", "::1"]
route_prefix = "/hooks/weather"
roles = ["admin", "*"]
env = ["API_KEY", { from = "HOST_TOKEN", as = "TOKEN" }, { from = "REGION" }]
skills = ["skills/forecast"]

[config_schema]
type = "object"
additionalProperties = false

[config_schema.properties.units]
type = "string"
enum = ["celsius", "fahrenheit"]

[limits]
timeout_ms = 5000
memory_max_pages = 256
memory_mb = 128
"""


def _doc(**changes: Any) -> dict[str, Any]:
    doc = dict(MINIMAL)
    for key, value in changes.items():
        if value is DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def _problems_of(call: Any) -> list[Problem]:
    with pytest.raises(ManifestError) as info:
        call()
    problems = info.value.problems
    assert problems, "ManifestError without problems"
    assert all(isinstance(p, Problem) for p in problems)
    return problems


def _find(problems: list[Problem], field: str) -> Problem:
    matching = [p for p in problems if p.field == field]
    assert matching, f"no problem for field {field!r}; got {[str(p) for p in problems]}"
    return matching[0]


# --- valid manifests ----------------------------------------------------------------------------


def test_minimal_toml_manifest() -> None:
    m = parse_manifest(MINIMAL_TOML, "toml", WHERE)
    assert isinstance(m, Manifest)
    assert (m.id, m.name, m.version, m.api_version, m.entry) == (
        "demo",
        "Demo",
        "1.0.0",
        "1.0",
        "plugin.py",
    )
    assert m.capabilities == ("tools.register",)
    assert m.dependencies == ()
    # Every optional key takes its secure default.
    assert m.tier == "inprocess"
    assert m.outbound_hosts == ()
    assert m.route_prefix is None
    assert m.roles is None
    assert m.env == ()
    assert m.skills == ()
    assert m.config_schema is None
    assert m.mtls_secrets == ()
    assert m.description is None and m.author is None and m.homepage is None
    assert m.min_host_version is None
    assert (m.limits.timeout_ms, m.limits.memory_max_pages, m.limits.memory_mb) == (
        None,
        None,
        None,
    )


def test_minimal_json_manifest_equals_toml() -> None:
    from_json = parse_manifest(json.dumps(MINIMAL).encode(), "json", WHERE)
    assert from_json == parse_manifest(MINIMAL_TOML, "toml", WHERE)
    assert from_json == manifest_from_dict(dict(MINIMAL), WHERE)


def test_entry_capabilities_and_dependencies_have_defaults() -> None:
    doc = _doc(entry=DROP, capabilities=DROP, dependencies=DROP)
    m = manifest_from_dict(doc, WHERE)
    assert m.entry == "plugin.py"
    assert m.capabilities == ()
    assert m.dependencies == ()


def test_full_manifest_with_every_optional_key() -> None:
    m = parse_manifest(FULL_TOML, "toml", WHERE)
    assert m.id == "weather-pro"
    assert m.version == "2.1.0-rc.1+build.7"
    assert m.entry == "src/main.py"
    assert "routes.absolute" in m.capabilities and len(m.capabilities) == 8
    assert m.dependencies == ("geo", "units-lib")
    assert m.description == "Forecasts.\nTwo lines, with\ta tab."
    assert m.author == "Ada Lovelace"
    assert m.homepage == "https://example.com/weather"
    assert m.min_host_version == "0.1.0"
    assert m.tier == "subprocess"
    assert m.outbound_hosts == ("api.weather.example.com", "*.tiles.example.org", "::1")
    assert m.route_prefix == "/hooks/weather"
    assert m.roles == ("admin", "*")
    assert [(e.from_, e.as_, e.target) for e in m.env] == [
        ("API_KEY", None, "API_KEY"),
        ("HOST_TOKEN", "TOKEN", "TOKEN"),
        ("REGION", None, "REGION"),
    ]
    assert m.skills == ("skills/forecast",)
    assert m.config_schema == {
        "type": "object",
        "additionalProperties": False,
        "properties": {"units": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    }
    assert (m.limits.timeout_ms, m.limits.memory_max_pages, m.limits.memory_mb) == (5000, 256, 128)


def test_full_manifest_json_form_is_the_same() -> None:
    toml_form = parse_manifest(FULL_TOML, "toml", WHERE)
    as_json = json.dumps(tomllib.loads(FULL_TOML.decode()), indent=2).encode()
    assert parse_manifest(as_json, "json", WHERE) == toml_form


def test_mtls_secrets_list_is_accepted() -> None:
    doc = _doc(capabilities=["secrets.mtls"], mtls_secrets=["client-cert", "backup_cert"])
    assert manifest_from_dict(doc, WHERE).mtls_secrets == ("client-cert", "backup_cert")


def test_outbound_hosts_are_kept_in_canonical_form() -> None:
    m = manifest_from_dict(
        _doc(capabilities=["http.outbound"], outbound_hosts=["[::1]", "api.example.com"]), WHERE
    )
    assert m.outbound_hosts == ("::1", "api.example.com")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("id", "a", id="one-letter-id"),
        pytest.param("id", "a" * 64, id="64-char-id"),
        pytest.param("id", "my-plugin-2", id="id-with-digits-and-hyphens"),
        pytest.param("version", "0.0.1-alpha.1", id="prerelease-version"),
        pytest.param("api_version", "1.0", id="api-version"),
        pytest.param("entry", "pkg/sub/plugin.py", id="nested-entry"),
        pytest.param("name", "Wetter für Köln ☀", id="unicode-name"),
        pytest.param("homepage", "http://example.com", id="http-homepage"),
        pytest.param("description", "x" * 2000, id="2000-char-description"),
        pytest.param("tier", "wasm", id="wasm-tier"),
        pytest.param("roles", [], id="no-roles"),
    ],
)
def test_valid_edge_values(key: str, value: Any) -> None:
    m = manifest_from_dict(_doc(**{key: value}), WHERE)
    got = getattr(m, key)
    assert got == (tuple(value) if isinstance(value, list) else value)


def test_manifest_is_immutable() -> None:
    m = manifest_from_dict(dict(MINIMAL), WHERE)
    with pytest.raises(ValidationError):
        m.id = "other"  # type: ignore[misc]
    assert isinstance(m.capabilities, tuple)


# --- malformed manifests: one problem each -------------------------------------------------------

# (changes to MINIMAL, expected field, substrings of the message: what is wrong and the fix)
BAD_DOCS = [
    # unknown keys, with did-you-mean (including names other ecosystems use)
    pytest.param(
        {"permisions": ["tools.register"]},
        "permisions",
        ['did you mean "capabilities"', "remove it or fix its name"],
        id="unknown-permisions",
    ),
    pytest.param(
        {"main": "plugin.py"}, "main", ['did you mean "entry"', "unknown key"], id="unknown-main"
    ),
    pytest.param(
        {"apiVersion": "1.0"}, "apiVersion", ['did you mean "api_version"'], id="unknown-apiVersion"
    ),
    pytest.param(
        {"descripton": "x"}, "descripton", ['did you mean "description"'], id="unknown-descripton"
    ),
    pytest.param(
        {"requires": []}, "requires", ['did you mean "dependencies"'], id="unknown-requires"
    ),
    pytest.param(
        {"minHostVersion": "0.1.0"},
        "minHostVersion",
        ['did you mean "min_host_version"'],
        id="unknown-minHostVersion",
    ),
    # required keys
    pytest.param({"id": DROP}, "id", ["is required; add it"], id="missing-id"),
    pytest.param({"name": DROP}, "name", ["is required; add it"], id="missing-name"),
    pytest.param({"version": DROP}, "version", ["is required; add it"], id="missing-version"),
    pytest.param(
        {"api_version": DROP}, "api_version", ["is required; add it"], id="missing-api_version"
    ),
    # id
    pytest.param(
        {"id": "Demo"}, "id", ["^[a-z][a-z0-9-]*$", "e.g. 'my-plugin'"], id="id-uppercase"
    ),
    pytest.param({"id": "1demo"}, "id", ["a lowercase letter, then"], id="id-leading-digit"),
    pytest.param({"id": "my_plugin"}, "id", ["'my_plugin'", "hyphens"], id="id-underscore"),
    pytest.param({"id": ""}, "id", ["e.g. 'my-plugin'"], id="id-empty"),
    pytest.param({"id": "a" * 65}, "id", ["65 characters", "use at most 64"], id="id-65-chars"),
    pytest.param({"id": "démo"}, "id", ["'démo'", "e.g. 'my-plugin'"], id="id-unicode"),
    pytest.param({"id": "my plugin"}, "id", ["e.g. 'my-plugin'"], id="id-space"),
    pytest.param({"id": "demo\n"}, "id", ["e.g. 'my-plugin'"], id="id-trailing-newline"),
    # version
    pytest.param({"version": "1.0"}, "version", ["MAJOR.MINOR.PATCH like 1.0.0"], id="version-1.0"),
    pytest.param(
        {"version": "v1.0.0"}, "version", ["'v1.0.0'", "like 1.0.0"], id="version-v-prefix"
    ),
    pytest.param({"version": "01.0.0"}, "version", ["not a semantic version"], id="version-01.0.0"),
    # api_version
    pytest.param({"api_version": "1"}, "api_version", ['"MAJOR.MINOR", e.g. "1.0"'], id="api-1"),
    pytest.param({"api_version": "1.0.0"}, "api_version", ['"MAJOR.MINOR"'], id="api-1.0.0"),
    pytest.param({"api_version": "a.b"}, "api_version", ['e.g. "1.0"'], id="api-a.b"),
    # entry
    pytest.param(
        {"entry": "/srv/plugin.py"},
        "entry",
        ["is absolute", "relative to the plugin folder"],
        id="entry-absolute",
    ),
    pytest.param({"entry": "C:/x.py"}, "entry", ["is absolute"], id="entry-windows-drive"),
    pytest.param(
        {"entry": "../x.py"}, "entry", ["keep it inside the plugin folder"], id="entry-traversal"
    ),
    pytest.param(
        {"entry": "src/../../x.py"},
        "entry",
        ["inside the plugin folder"],
        id="entry-deep-traversal",
    ),
    pytest.param({"entry": "src\\plugin.py"}, "entry", ["forward slashes"], id="entry-backslash"),
    pytest.param({"entry": ""}, "entry", ["give a file name"], id="entry-empty"),
    # capabilities
    pytest.param(
        {"capabilities": ["tools.regster"]},
        "capabilities",
        ['did you mean "tools.register"', "docs/capabilities.md"],
        id="capability-misspelt",
    ),
    pytest.param(
        {"capabilities": ["tools:register"]},
        "capabilities",
        ["colon", 'write "tools.register"'],
        id="capability-colon-form",
    ),
    pytest.param(
        {"capabilities": ["tools.register", "tools.register"]},
        "capabilities",
        ["'tools.register' is listed twice", "list it once"],
        id="capability-duplicate",
    ),
    pytest.param(
        {"capabilities": ["teleport"]},
        "capabilities",
        ['"teleport" is not a known capability', "docs/capabilities.md"],
        id="capability-unknown",
    ),
    # dependencies
    pytest.param(
        {"dependencies": ["demo"]},
        "dependencies",
        ["depends on itself", "remove it"],
        id="dependency-on-self",
    ),
    pytest.param(
        {"dependencies": ["Bad_Dep"]},
        "dependencies",
        ["'Bad_Dep'", "e.g. 'my-plugin'"],
        id="dependency-invalid-id",
    ),
    pytest.param(
        {"dependencies": ["geo", "geo"]}, "dependencies", ["list it once"], id="dependency-twice"
    ),
    # display strings
    pytest.param({"name": "De\x07mo"}, "name", ["U+0007", "remove it"], id="name-control-char"),
    pytest.param({"name": "a\nb"}, "name", ["U+000A", "remove it"], id="name-newline"),
    pytest.param(
        {"name": "evil\u202eexe.txt"},
        "name",
        ["bidi control U+202E", "remove it"],
        id="name-bidi-override",
    ),
    pytest.param({"name": "   "}, "name", ["give it some visible text"], id="name-blank"),
    pytest.param({"name": "x" * 81}, "name", ["keep it to at most 80"], id="name-too-long"),
    pytest.param(
        {"description": "x" * 2001},
        "description",
        ["2001 characters", "keep it to at most 2000"],
        id="description-too-long",
    ),
    pytest.param({"author": "a\u2066b"}, "author", ["U+2066"], id="author-bidi-isolate"),
    pytest.param(
        {"homepage": "ftp://example.com"},
        "homepage",
        ["http(s) URL like https://example.com/plugin"],
        id="homepage-ftp",
    ),
    pytest.param(
        {"homepage": "javascript:alert(1)"}, "homepage", ["http(s) URL"], id="homepage-javascript"
    ),
    # tier
    pytest.param(
        {"tier": "docker"},
        "tier",
        ["must be one of 'inprocess', 'subprocess' or 'wasm'"],
        id="tier-unknown",
    ),
    # outbound hosts
    pytest.param(
        {"outbound_hosts": ["api.example.com"]},
        "outbound_hosts",
        ['"http.outbound"', "add it to capabilities or remove outbound_hosts"],
        id="outbound-without-capability",
    ),
    pytest.param(
        {"capabilities": ["http.outbound"], "outbound_hosts": ["*.com"]},
        "outbound_hosts",
        ["public suffix", 'as in "*.example.com"'],
        id="outbound-wildcard-tld",
    ),
    pytest.param(
        {"capabilities": ["http.outbound"], "outbound_hosts": ["API.Example.com"]},
        "outbound_hosts",
        ["must be lowercase", 'write "api.example.com"'],
        id="outbound-uppercase",
    ),
    pytest.param(
        {"capabilities": ["http.outbound"], "outbound_hosts": ["bücher.example"]},
        "outbound_hosts",
        ["must be ASCII", '"xn--bcher-kva.example"'],
        id="outbound-unicode",
    ),
    pytest.param(
        {"capabilities": ["http.outbound"], "outbound_hosts": ["https://api.example.com/v1"]},
        "outbound_hosts",
        ["must not include a scheme", 'write "api.example.com"'],
        id="outbound-url",
    ),
    pytest.param(
        {"capabilities": ["http.outbound"], "outbound_hosts": ["*"]},
        "outbound_hosts",
        ["every host", "list the hosts you need"],
        id="outbound-star",
    ),
    pytest.param(
        {"capabilities": ["http.outbound"], "outbound_hosts": ["a.example.com", "A.example.com"]},
        "outbound_hosts",
        ["must be lowercase"],
        id="outbound-case-duplicate",
    ),
    # routes
    pytest.param(
        {"route_prefix": "/hooks/slack"},
        "route_prefix",
        ['"routes.absolute"', "add it to capabilities or remove route_prefix"],
        id="route-prefix-without-capability",
    ),
    pytest.param(
        {"capabilities": ["routes.absolute"], "route_prefix": "/api/slack"},
        "route_prefix",
        ["under the host's own /api", "choose another prefix"],
        id="route-prefix-under-api",
    ),
    pytest.param(
        {"capabilities": ["routes.absolute"], "route_prefix": "/mcp"},
        "route_prefix",
        ["/mcp", "choose another prefix"],
        id="route-prefix-is-mcp",
    ),
    pytest.param(
        {"capabilities": ["routes.absolute"], "route_prefix": "hooks"},
        "route_prefix",
        ["absolute lowercase path like /hooks/slack"],
        id="route-prefix-relative",
    ),
    # roles
    pytest.param(
        {"roles": ["Admin"]}, "roles", ["lowercase like 'admin', or '*'"], id="role-uppercase"
    ),
    pytest.param({"roles": ["admins!"]}, "roles", ["'admins!'"], id="role-punctuation"),
    # env
    pytest.param(
        {"env": ["api_key"]},
        "env.0.from",
        ["'api_key'", "upper-case environment variable name like API_KEY"],
        id="env-lowercase-name",
    ),
    pytest.param(
        {"env": ["API_KEY", {"from": "TOKEN", "as": "my-token"}]},
        "env.1.as",
        ["like API_KEY"],
        id="env-table-bad-as",
    ),
    pytest.param(
        {"env": [{"from": "TOKEN", "to": "X"}]},
        "env.0.to",
        ['did you mean "as"'],
        id="env-table-unknown-key",
    ),
    # limits
    pytest.param(
        {"limits": {"timeout_ms": 0}}, "limits.timeout_ms", ["must be at least 1"], id="timeout-0"
    ),
    pytest.param(
        {"limits": {"timeout_ms": 600_001}},
        "limits.timeout_ms",
        ["must be at most 600000"],
        id="timeout-too-large",
    ),
    pytest.param(
        {"limits": {"timeout": 5000}},
        "limits.timeout",
        ['did you mean "timeout_ms"', "remove it or fix its name"],
        id="limits-unknown-key",
    ),
    pytest.param(
        {"limits": {"memory_mb": 8}}, "limits.memory_mb", ["must be at least 16"], id="memory-tiny"
    ),
    pytest.param(
        {"limits": {"timeout_ms": "5000"}},
        "limits.timeout_ms",
        ["must be an integer"],
        id="timeout-as-string",
    ),
    pytest.param(
        {"limits": {"timeout_ms": 5.5}},
        "limits.timeout_ms",
        ["must be an integer"],
        id="timeout-as-float",
    ),
    pytest.param({"limits": "fast"}, "limits", ["must be a table"], id="limits-as-string"),
    # other keys
    pytest.param(
        {"min_host_version": "0.1"},
        "min_host_version",
        ["like 0.1.0"],
        id="min-host-version-not-semver",
    ),
    pytest.param(
        {"mtls_secrets": ["Client Cert"]},
        "mtls_secrets",
        ["lowercase letters, digits, - and _"],
        id="mtls-secret-name",
    ),
    pytest.param({"skills": ["/etc/skills"]}, "skills", ["is absolute"], id="skill-absolute"),
    pytest.param(
        {"config_schema": {"type": "array"}},
        "config_schema",
        ['"type" = "object"'],
        id="config-schema-not-object",
    ),
    pytest.param(
        {"config_schema": [1]}, "config_schema", ["must be a table"], id="config-schema-list"
    ),
    # wrong types
    pytest.param(
        {"capabilities": "tools.register"},
        "capabilities",
        ["must be a list"],
        id="capabilities-as-string",
    ),
    pytest.param({"id": 5}, "id", ["must be a string"], id="id-as-int"),
    pytest.param({"name": True}, "name", ["must be a string"], id="name-as-bool"),
    pytest.param({"version": True}, "version", ["must be a string"], id="version-as-bool"),
    pytest.param(
        {"capabilities": [1]}, "capabilities.0", ["must be a string"], id="capability-int"
    ),
]


@pytest.mark.parametrize(("changes", "field", "needles"), BAD_DOCS)
def test_malformed_manifest_names_field_and_fix(
    changes: dict[str, Any], field: str, needles: list[str]
) -> None:
    doc = _doc(**changes)
    for problems in (
        _problems_of(lambda: manifest_from_dict(doc, WHERE)),
        _problems_of(lambda: parse_manifest(json.dumps(doc).encode(), "json", WHERE)),
    ):
        assert {p.where for p in problems} == {WHERE}
        problem = _find(problems, field)
        for needle in needles:
            assert needle in problem.message, str(problem)
        assert str(problem).startswith(f"{WHERE}: {field}: ")


def test_there_are_enough_malformed_cases() -> None:
    assert len(BAD_DOCS) >= 45


# --- malformed files: the parser ----------------------------------------------------------------

BAD_FILES = [
    pytest.param(
        b'{"id": "demo", "id": "other"}',
        "json",
        ['duplicate key "id"', "keep one of them"],
        id="json-duplicate-key",
    ),
    pytest.param(
        b'{"id": "demo", "limits": {"timeout_ms": 1, "timeout_ms": 2}}',
        "json",
        ['duplicate key "timeout_ms"'],
        id="json-nested-duplicate-key",
    ),
    pytest.param(
        b'{"id": "demo", "limits": {"timeout_ms": NaN}}',
        "json",
        ["NaN is not valid JSON", "use a finite number"],
        id="json-nan",
    ),
    pytest.param(
        b'{"x": Infinity}', "json", ["Infinity is not valid JSON", "finite number"], id="json-inf"
    ),
    pytest.param(b'{"x": -Infinity}', "json", ["-Infinity"], id="json-negative-inf"),
    pytest.param(
        b"\xef\xbb\xbf" + json.dumps(MINIMAL).encode(),
        "json",
        ["byte-order mark", "UTF-8 without BOM"],
        id="json-bom",
    ),
    pytest.param(
        b'{"id": "d\xe9mo"}',
        "json",
        ["not valid UTF-8", "save the file as UTF-8"],
        id="json-latin1",
    ),
    pytest.param(
        json.dumps([MINIMAL]).encode(),
        "json",
        ["must be a JSON object at the top level"],
        id="json-top-level-array",
    ),
    pytest.param(b'"demo"', "json", ["JSON object at the top level"], id="json-top-level-string"),
    pytest.param(
        json.dumps(MINIMAL).encode() + b" trailing",
        "json",
        ["is not valid JSON", "Extra data", "line 1"],
        id="json-trailing-garbage",
    ),
    pytest.param(b"", "json", ["is not valid JSON"], id="json-empty"),
    pytest.param(
        MINIMAL_TOML + b'name = "again"\n',
        "toml",
        ["is not valid TOML", "line 8"],
        id="toml-duplicate-key",
    ),
    pytest.param(
        b'id = "demo"\nname = \n', "toml", ["is not valid TOML", "line 2"], id="toml-syntax-error"
    ),
    pytest.param(
        MINIMAL_TOML + b'[config_schema]\ntype = "object"\nx = nan\n',
        "toml",
        ["config_schema.x", "not a finite number", "remove it"],
        id="toml-nan-in-config-schema",
    ),
    pytest.param(
        MINIMAL_TOML + b"[limits]\ntimeout_ms = inf\n",
        "toml",
        ["limits.timeout_ms", "not a finite number"],
        id="toml-inf",
    ),
    pytest.param(
        MINIMAL_TOML + b"#" + b"x" * MAX_MANIFEST_BYTES + b"\n",
        "toml",
        [f"at most {MAX_MANIFEST_BYTES} bytes"],
        id="toml-oversize",
    ),
    pytest.param(b"\xef\xbb\xbf" + MINIMAL_TOML, "toml", ["without BOM"], id="toml-bom"),
    pytest.param(
        MINIMAL_TOML + b'description = "caf\xe9"\n', "toml", ["not valid UTF-8"], id="toml-latin1"
    ),
]


@pytest.mark.parametrize(("data", "fmt", "needles"), BAD_FILES)
def test_malformed_file_is_reported_against_the_file(
    data: bytes, fmt: str, needles: list[str]
) -> None:
    problems = _problems_of(lambda: parse_manifest(data, fmt, WHERE))  # type: ignore[arg-type]
    filename = "plugin.toml" if fmt == "toml" else "plugin.json"
    assert problems == [problems[0]]
    problem = problems[0]
    assert (problem.where, problem.field) == (WHERE, filename)
    for needle in needles:
        assert needle in problem.message, str(problem)


def test_file_of_exactly_the_size_limit_is_accepted() -> None:
    padding = MAX_MANIFEST_BYTES - len(MINIMAL_TOML) - 2
    data = MINIMAL_TOML + b"#" + b"x" * padding + b"\n"
    assert len(data) == MAX_MANIFEST_BYTES
    assert parse_manifest(data, "toml", WHERE).id == "demo"


def test_where_label_is_the_one_passed_in() -> None:
    problems = _problems_of(lambda: manifest_from_dict(_doc(id="X"), "somewhere/else"))
    assert [p.where for p in problems] == ["somewhere/else"]
    problems = _problems_of(lambda: parse_manifest(b"[", "toml", "pkg:my-dist"))
    assert [(p.where, p.field) for p in problems] == [("pkg:my-dist", "plugin.toml")]


# --- several problems at once --------------------------------------------------------------------


def test_every_field_problem_is_reported_not_just_the_first() -> None:
    doc = _doc(
        id="Bad_Id",
        version="1.0",
        api_version="1",
        entry="../escape.py",
        capabilities=["tools.regster"],
        tier="docker",
        permisions=[],
        limits={"timeout_ms": 0, "memry_mb": 64},
    )
    problems = _problems_of(lambda: manifest_from_dict(doc, WHERE))
    fields = {p.field for p in problems}
    assert fields == {
        "id",
        "version",
        "api_version",
        "entry",
        "capabilities",
        "tier",
        "permisions",
        "limits.timeout_ms",
        "limits.memry_mb",
    }
    assert all(p.where == WHERE for p in problems)
    text = str(ManifestError(problems))
    assert text.count("\n") == len(problems) - 1
    assert f"{WHERE}: capabilities: " in text
    assert 'did you mean "memory_mb"' in _find(problems, "limits.memry_mb").message


def test_every_problem_in_a_toml_file_is_reported() -> None:
    data = b'id = "Bad"\nname = "x"\nversion = "1"\napi_version = "1.0"\nmain = "p.py"\n'
    problems = _problems_of(lambda: parse_manifest(data, "toml", WHERE))
    assert {p.field for p in problems} == {"id", "version", "main"}


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(
            {"dependencies": ["demo"], "outbound_hosts": ["api.example.com"]},
            id="two-cross-field-problems",
        ),
        pytest.param({"id": "Demo", "outbound_hosts": ["api.example.com"]}, id="field-and-cross"),
    ],
)
def test_cross_field_problems_are_reported_with_the_rest(changes: dict[str, Any]) -> None:
    problems = _problems_of(lambda: manifest_from_dict(_doc(**changes), WHERE))
    assert {p.field for p in problems} >= set(changes)
    assert (
        "add it to capabilities or remove outbound_hosts"
        in _find(problems, "outbound_hosts").message
    )


def test_every_bad_capability_in_the_list_is_reported() -> None:
    doc = _doc(capabilities=["tools.regster", "storage.raed"])
    problems = _problems_of(lambda: manifest_from_dict(doc, WHERE))
    text = " ".join(p.message for p in problems if p.field == "capabilities")
    assert '"tools.regster"' in text
    assert '"storage.raed"' in text


# --- wasm-only keys: hooks, subscribe, jobs -----------------------------------------------------

WASM_TOML = b"""\
id = "demo"
name = "Demo"
version = "1.0.0"
api_version = "1.0"
tier = "wasm"
entry = "demo.wasm"
hooks = ["before_tool_call", "transform_user_input"]
subscribe = ["message.received", "run.start", "other-plugin.changed"]

[[jobs]]
name = "nightly"
cron = "0 3 * * *"

[[jobs]]
name = "poll"
every_s = 30

[[jobs]]
name = "once"
delay_s = 1.5
"""


def _wasm(**changes: Any) -> dict[str, Any]:
    return _doc(tier="wasm", entry="demo.wasm", **changes)


def test_wasm_hooks_subscriptions_and_jobs_are_parsed() -> None:
    m = parse_manifest(WASM_TOML, "toml", WHERE)
    assert m.hooks == ("before_tool_call", "transform_user_input")
    assert m.subscribe == ("message.received", "run.start", "other-plugin.changed")
    schedules = [(j.name, j.cron, j.every_s, j.delay_s) for j in m.jobs]
    assert schedules == [
        ("nightly", "0 3 * * *", None, None),
        ("poll", None, 30.0, None),
        ("once", None, None, 1.5),
    ]
    assert parse_manifest(MINIMAL_TOML, "toml", WHERE).jobs == ()


@pytest.mark.parametrize("key", ["hooks", "subscribe", "jobs", "commands", "channels", "prompt"])
def test_wasm_only_keys_need_the_wasm_tier(key: str) -> None:
    value: Any = {
        "hooks": ["after_run"],
        "subscribe": ["run.end"],
        "jobs": [{"name": "j", "every_s": 5}],
        "commands": [{"name": "ping"}],
        "channels": ["webhook"],
        "prompt": "Be brief.",
    }[key]
    for tier in ("inprocess", "subprocess"):
        doc = _doc(tier=tier, **{key: value})
        problems = _problems_of(functools.partial(manifest_from_dict, doc, WHERE))
        message = _find(problems, key).message
        assert f"only a wasm component lists its {key}" in message
        assert 'set tier = "wasm"' in message
    assert manifest_from_dict(_wasm(**{key: value}), WHERE).tier == "wasm"


@pytest.mark.parametrize(
    ("changes", "field", "needles"),
    [
        pytest.param(
            {"hooks": ["before_tool_cal"]},
            "hooks",
            ["unknown hook kind 'before_tool_cal'", '"before_tool_call"', "after_run"],
            id="hook-typo",
        ),
        pytest.param(
            {"hooks": ["after_run", "after_run"]}, "hooks", ["listed twice"], id="hook-twice"
        ),
        pytest.param(
            {"subscribe": ["message.recieved"]},
            "subscribe",
            ["unknown event 'message.recieved'", '"message.received"', "docs/events.md"],
            id="event-typo",
        ),
        pytest.param(
            {"subscribe": ["shout"]}, "subscribe", ["'<plugin-id>.<name>'"], id="event-no-dot"
        ),
        pytest.param(
            {"subscribe": ["run.begin"]}, "subscribe", ["unknown event"], id="host-namespace"
        ),
        pytest.param(
            {"jobs": [{"name": "Bad Name", "every_s": 1}]},
            "jobs.0.name",
            ["lowercase letters, digits and _"],
            id="job-name",
        ),
        pytest.param(
            {"jobs": [{"name": "j", "cron": "* * *"}]},
            "jobs.0.cron",
            ["exactly 5 fields", "'*/5 * * * *'"],
            id="cron-fields",
        ),
        pytest.param(
            {"jobs": [{"name": "j", "cron": "61 * * * *"}]},
            "jobs.0.cron",
            ["invalid cron expression '61 * * * *'"],
            id="cron-range",
        ),
        pytest.param(
            {"jobs": [{"name": "j", "every_s": 0}]},
            "jobs.0.every_s",
            ["positive number of seconds"],
            id="every-zero",
        ),
        pytest.param(
            {"jobs": [{"name": "j", "delay_s": -1}]},
            "jobs.0.delay_s",
            ["positive number of seconds"],
            id="delay-negative",
        ),
        pytest.param(
            {"jobs": [{"name": "j"}]},
            "jobs.0",
            ["exactly one of cron, every_s, delay_s; got none"],
            id="no-schedule",
        ),
        pytest.param(
            {"jobs": [{"name": "j", "cron": "0 * * * *", "every_s": 5}]},
            "jobs.0",
            ["exactly one of cron, every_s, delay_s; got cron, every_s"],
            id="two-schedules",
        ),
        pytest.param(
            {"jobs": [{"name": "j", "every_s": 5}, {"name": "j", "cron": "0 * * * *"}]},
            "jobs",
            ["'j' is listed twice"],
            id="job-twice",
        ),
        pytest.param(
            {"jobs": [{"name": "j", "evry_s": 5}]},
            "jobs.0.evry_s",
            ['did you mean "every_s"'],
            id="job-key-typo",
        ),
    ],
)
def test_bad_wasm_hooks_subscriptions_and_jobs(
    changes: dict[str, Any], field: str, needles: list[str]
) -> None:
    problems = _problems_of(lambda: manifest_from_dict(_wasm(**changes), WHERE))
    problem = _find(problems, field)
    for needle in needles:
        assert needle in problem.message, str(problem)


# --- wasm-only keys: commands, channels, prompt ------------------------------------------------

WASM_OFFERS_TOML = b"""\
id = "demo"
name = "Demo"
version = "1.0.0"
api_version = "1.0"
tier = "wasm"
entry = "demo.wasm"
channels = ["webhook", "team.chat-2"]
prompt = \"\"\"
Answer in French.
\tKeep it short.\"\"\"

[[commands]]
name = "weather"
description = "Today's weather."

[[commands]]
name = "ping-2_x"
"""


def test_wasm_commands_channels_and_prompt_are_parsed() -> None:
    m = parse_manifest(WASM_OFFERS_TOML, "toml", WHERE)
    assert [(c.name, c.description) for c in m.commands] == [
        ("weather", "Today's weather."),
        ("ping-2_x", ""),
    ]
    assert m.channels == ("webhook", "team.chat-2")
    assert m.prompt == "Answer in French.\n\tKeep it short."
    plain = parse_manifest(MINIMAL_TOML, "toml", WHERE)
    assert (plain.commands, plain.channels, plain.prompt) == ((), (), None)


def test_command_names_follow_the_registrys_rule() -> None:
    # the same pattern the host applies when a plugin registers a command in code
    longest = "c" * 32
    assert manifest_from_dict(_wasm(commands=[{"name": longest}]), WHERE).commands[0].name
    problems = _problems_of(lambda: manifest_from_dict(_wasm(commands=[{"name": "c" * 33}]), WHERE))
    assert "at most 32 characters" in _find(problems, "commands.0.name").message


@pytest.mark.parametrize(
    ("changes", "field", "needles"),
    [
        pytest.param(
            {"commands": [{"name": "Weather"}]},
            "commands.0.name",
            ["command name 'Weather'", "lowercase letters, digits, _ or -", "'weather'"],
            id="command-upper",
        ),
        pytest.param(
            {"commands": [{"name": "1st"}]},
            "commands.0.name",
            ["starting with a letter"],
            id="command-digit-first",
        ),
        pytest.param(
            {"commands": [{"name": "ping\n"}]},
            "commands.0.name",
            ["command name 'ping\\n'"],
            id="command-newline",
        ),
        pytest.param(
            {"commands": [{"name": "a"}, {"name": "a"}]},
            "commands",
            ["'a' is listed twice"],
            id="command-twice",
        ),
        pytest.param(
            {"commands": [{"name": "a", "descripton": "x"}]},
            "commands.0.descripton",
            ['did you mean "description"'],
            id="command-key-typo",
        ),
        pytest.param(
            {"commands": [{"name": "a", "description": "x\x1b[31m"}]},
            "commands.0.description",
            ["control character U+001B"],
            id="command-description-control",
        ),
        pytest.param(
            {"commands": [{"name": "a", "description": "x" * 501}]},
            "commands.0.description",
            ["at most 500"],
            id="command-description-long",
        ),
        pytest.param({"commands": ["ping"]}, "commands.0", ["must be a table"], id="command-bare"),
        pytest.param(
            {"channels": ["Web hook"]},
            "channels",
            ["channel kind 'Web hook'", "a-z 0-9 _ . -", "'webhook'"],
            id="channel-kind",
        ),
        pytest.param({"channels": ["c" * 65]}, "channels", ["1-64 of a-z"], id="channel-too-long"),
        pytest.param(
            {"channels": ["mail", "mail"]},
            "channels",
            ["'mail' is listed twice"],
            id="channel-twice",
        ),
        pytest.param(
            {"prompt": "Be\x07 brief"}, "prompt", ["control character U+0007"], id="prompt-control"
        ),
        pytest.param(
            {"prompt": "Be \u202ebrief"}, "prompt", ["bidi control U+202E"], id="prompt-bidi"
        ),
        pytest.param(
            {"prompt": "x" * 4001}, "prompt", ["4001 characters", "at most 4000"], id="prompt-long"
        ),
        pytest.param({"prompt": " \n "}, "prompt", ["is empty"], id="prompt-blank"),
        pytest.param({"prompt": ["a"]}, "prompt", ["must be a string"], id="prompt-list"),
        pytest.param(
            {"system_prompt": "Be brief."},
            "system_prompt",
            ['did you mean "prompt"'],
            id="prompt-alias",
        ),
    ],
)
def test_bad_wasm_commands_channels_and_prompt(
    changes: dict[str, Any], field: str, needles: list[str]
) -> None:
    problems = _problems_of(lambda: manifest_from_dict(_wasm(**changes), WHERE))
    problem = _find(problems, field)
    for needle in needles:
        assert needle in problem.message, str(problem)


def test_a_prompt_of_exactly_the_limit_is_accepted() -> None:
    assert manifest_from_dict(_wasm(prompt="x" * 4000), WHERE).prompt == "x" * 4000
