"""Tests for tether.contract.capabilities: the catalogue, and docs/capabilities.md kept in step."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

import tether
from tether.contract.capabilities import (
    ALL_CAPABILITIES,
    BUILTIN_ONLY,
    BY_NAME,
    CATALOGUE,
    ROOT_EQUIVALENT,
    Capability,
    is_capability,
    root_equivalent_sets,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "capabilities.md"
NAMES = [c.name for c in CATALOGUE]

# The names the source documents' permission lists require, spelt our way.
REQUIRED = [
    "tools.register",
    "tools.execute",
    "storage.read",
    "storage.write",
    "http.outbound",
    "events.subscribe",
    "events.emit",
    "scheduler.read",
    "scheduler.write",
    "memory.read",
    "memory.write",
    "users.read",
]

# Surfaces that must each have at least one capability.
SURFACES = [
    "hooks",
    "routes",
    "notifications",
    "mcp",
    "secrets",
    "db",
    "commands",
    "providers",
    "channels",
    "widgets",
    "sessions",
    "tasks",
]


# --- the catalogue ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED)
def test_required_capability_is_in_the_catalogue(name: str) -> None:
    assert name in BY_NAME
    assert is_capability(name)
    assert BY_NAME[name].name == name
    assert not BY_NAME[name].builtin_only, f"{name} must be grantable to folder plugins"


@pytest.mark.parametrize("surface", SURFACES)
def test_every_surface_has_a_capability(surface: str) -> None:
    names = [c.name for c in CATALOGUE if c.surface == surface]
    assert names, f"no capability for the {surface!r} surface"
    assert all(n.startswith(surface + ".") for n in names), names


def test_db_capability_is_scoped_sql() -> None:
    (db,) = [c for c in CATALOGUE if c.surface == "db"]
    assert "SQL" in db.grants
    assert "scoped" in db.grants


def test_names_are_dotted_lowercase() -> None:
    bad = [n for n in NAMES if not re.fullmatch(r"[a-z]+(\.[a-z]+)+", n)]
    assert bad == []


def test_names_are_unique_and_indexes_agree() -> None:
    assert len(NAMES) == len(set(NAMES))
    assert list(BY_NAME) == NAMES
    assert frozenset(NAMES) == ALL_CAPABILITIES


def test_every_entry_is_described() -> None:
    for c in CATALOGUE:
        assert isinstance(c, Capability)
        assert c.surface and c.surface == c.surface.lower(), c
        assert c.grants.strip(), c
        assert "|" not in c.grants, f"{c.name}: a '|' would break the table in the docs"


def test_catalogue_is_exported_from_the_package() -> None:
    assert tether.CATALOGUE is CATALOGUE
    assert tether.Capability is Capability


@pytest.mark.parametrize(
    "name", ["tools.regster", "tools:register", "Tools.Register", "tools", "", "tools.register "]
)
def test_is_capability_refuses_non_names(name: str) -> None:
    assert not is_capability(name)


def test_builtin_only_is_non_empty_and_from_the_catalogue() -> None:
    assert BUILTIN_ONLY
    assert BUILTIN_ONLY <= ALL_CAPABILITIES
    assert frozenset(c.name for c in CATALOGUE if c.builtin_only) == BUILTIN_ONLY
    assert "plugins.manage" in BUILTIN_ONLY
    assert "tools.register" not in BUILTIN_ONLY


def test_root_equivalent_sets_use_catalogue_names_and_give_reasons() -> None:
    assert ROOT_EQUIVALENT
    for combo, why in ROOT_EQUIVALENT:
        assert combo, "an empty combination would flag every plugin"
        assert combo <= ALL_CAPABILITIES, sorted(combo - ALL_CAPABILITIES)
        assert why.strip()
    combos = [combo for combo, _ in ROOT_EQUIVALENT]
    assert len(combos) == len(set(combos))


def test_root_equivalent_sets_nothing_for_harmless_grant() -> None:
    assert root_equivalent_sets(frozenset()) == []
    assert root_equivalent_sets(frozenset({"tools.register", "storage.read"})) == []


def test_root_equivalent_sets_needs_the_whole_combination() -> None:
    # hooks.model alone is not enough; with hooks.tools it is.
    assert root_equivalent_sets(frozenset({"hooks.model", "storage.read"})) == []
    found = root_equivalent_sets(frozenset({"hooks.model", "hooks.tools", "storage.read"}))
    assert [combo for combo, _ in found] == [frozenset({"hooks.model", "hooks.tools"})]
    assert "rewrites" in found[0][1]


def test_root_equivalent_sets_single_capability() -> None:
    found = root_equivalent_sets(frozenset({"plugins.manage", "tools.register"}))
    assert len(found) == 1
    combo, why = found[0]
    assert combo == frozenset({"plugins.manage"})
    assert "any code" in why


def test_root_equivalent_sets_everything_reports_all_in_order() -> None:
    assert root_equivalent_sets(ALL_CAPABILITIES) == list(ROOT_EQUIVALENT)


# --- docs/capabilities.md ------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    return [html.unescape(cell.strip()) for cell in line.strip().strip("|").split("|")]


def _doc_table() -> tuple[list[str], list[list[str]]]:
    """The header and body rows of every table in the doc (there must be exactly one)."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    tables: list[list[str]] = []
    current: list[str] = []
    for line in [*lines, ""]:
        if line.lstrip().startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) == 1, f"docs/capabilities.md should hold one table, found {len(tables)}"
    header, separator, *body = tables[0]
    assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", separator.strip()), separator
    return _cells(header), [_cells(row) for row in body]


def test_doc_table_has_the_agreed_columns() -> None:
    header, _ = _doc_table()
    assert header == ["capability", "surface", "grants", "builtin only"]


def test_doc_table_lists_the_catalogue_in_order() -> None:
    _, rows = _doc_table()
    expected = [
        [f"`{c.name}`", c.surface, c.grants, "yes" if c.builtin_only else "no"] for c in CATALOGUE
    ]
    assert rows == expected


def test_doc_table_has_no_unknown_names() -> None:
    _, rows = _doc_table()
    unknown = [row[0] for row in rows if row[0].strip("`") not in BY_NAME]
    assert unknown == []


def test_doc_mentions_no_capability_outside_the_catalogue() -> None:
    # Any `x.y` in backticks that looks like a capability must be one.
    text = DOC.read_text(encoding="utf-8")
    surfaces = {c.surface for c in CATALOGUE}
    mentioned = set(re.findall(r"`([a-z]+\.[a-z]+)`", text))
    looks_like_capability = {m for m in mentioned if m.split(".")[0] in surfaces}
    assert looks_like_capability - ALL_CAPABILITIES == set()


def test_doc_lists_every_root_equivalent_combination_with_its_reason() -> None:
    text = DOC.read_text(encoding="utf-8")
    _, _, section = text.partition("## Root-equivalent combinations")
    assert section, "docs/capabilities.md needs a '## Root-equivalent combinations' section"
    bullets = [line for line in section.splitlines() if line.startswith("- ")]
    assert len(bullets) == len(ROOT_EQUIVALENT)
    for (combo, why), line in zip(ROOT_EQUIVALENT, bullets, strict=True):
        listed = set(re.findall(r"`([a-z.]+)`", line.partition(":")[0]))
        assert listed == set(combo), line
        assert why in line, line


def test_doc_explains_the_rules() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "declared ∩ granted" in text
    assert "not_approved" in text
    assert "builtin_only" in text
