"""Discovery: plugin folders, manifests, folder digests, duplicate ids and installed packages."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import write_plugin, write_policy
from tether import Host, RefusalReason
from tether.runtime.discovery import (
    Candidate,
    discover_folders,
    discover_packages,
    folder_digest,
    inspect_folder,
)

TOOL_CODE = """
from tether import Plugin

plugin = Plugin()


@plugin.tool
def ping() -> str:
    return "pong"
"""

MARKER_CODE = """
from pathlib import Path

Path({marker!r}).write_text("imported")

from tether import Plugin

plugin = Plugin()
"""


def by_id(host: Host) -> dict[str, dict]:
    return {p["id"]: p for p in host.plugins()}


# --- folders -------------------------------------------------------------------------------


def test_folders_are_found_in_sorted_order(
    tmp_path: Path, plugin_dir: Path, make_plugin: Callable[..., Path]
) -> None:
    for pid in ("zeta", "alpha", "mid"):
        make_plugin(pid)
    other = tmp_path / "more"
    write_plugin(other, "beta")
    write_plugin(other, "aardvark")

    found = discover_folders([plugin_dir, other, tmp_path / "does-not-exist"])

    # Sorted within each directory, directories in the order given; a missing one is skipped.
    assert [c.id for c in found] == ["alpha", "mid", "zeta", "aardvark", "beta"]
    assert all(c.source == "folder" and c.refusal is None for c in found)
    assert found[0].folder == plugin_dir / "alpha"
    assert found[0].where == str(plugin_dir / "alpha")


async def test_host_activates_folder_plugins_in_sorted_order(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    for pid in ("zeta", "alpha", "mid"):
        make_plugin(pid, TOOL_CODE)
    write_policy(
        tmp_path,
        """
        [host]
        entry_points = false
        [plugins.zeta]
        grant = ["tools.register"]
        [plugins.alpha]
        grant = ["tools.register"]
        [plugins.mid]
        grant = ["tools.register"]
        """,
    )
    async with Host(tmp_path / "tether.toml") as host:
        assert host.active_ids() == ["alpha", "mid", "zeta"]


async def test_plugin_json_works_like_plugin_toml(tmp_path: Path, plugin_dir: Path) -> None:
    folder = plugin_dir / "jsonic"
    folder.mkdir()
    (folder / "plugin.json").write_text(
        json.dumps(
            {
                "id": "jsonic",
                "name": "Jsonic",
                "version": "2.0.0",
                "api_version": "1.0",
                "entry": "plugin.py",
                "capabilities": ["tools.register"],
            }
        )
    )
    (folder / "plugin.py").write_text(TOOL_CODE)

    cand = inspect_folder(folder)
    assert cand.refusal is None and cand.problems == []
    assert cand.manifest is not None
    assert (cand.manifest.id, cand.manifest.version) == ("jsonic", "2.0.0")
    assert cand.manifest.capabilities == ("tools.register",)
    assert cand.digest is not None and cand.digest.startswith("sha256:")

    write_policy(
        tmp_path, '[host]\nentry_points = false\n[plugins.jsonic]\ngrant = ["tools.register"]\n'
    )
    async with Host(tmp_path / "tether.toml") as host:
        info = by_id(host)["jsonic"]
        assert info["state"] == "active"
        assert info["version"] == "2.0.0"
        result = await host.call_tool("plugin_jsonic_ping", {})
        assert (result.content, result.is_error) == ("pong", False)


async def test_both_manifests_present_is_a_problem(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    marker = tmp_path / "imported.txt"
    folder = make_plugin("twice", MARKER_CODE.format(marker=str(marker)))
    (folder / "plugin.json").write_text(json.dumps({"id": "twice"}))

    cand = inspect_folder(folder)
    assert cand.refusal is not None
    assert cand.refusal[0] is RefusalReason.INVALID_MANIFEST
    assert [(p.where, p.field) for p in cand.problems] == [(str(folder), "plugin.toml")]
    assert "both plugin.toml and plugin.json" in cand.problems[0].message
    assert "keep one" in cand.problems[0].message

    write_policy(
        tmp_path, '[host]\nentry_points = false\n[plugins.twice]\ngrant = ["tools.register"]\n'
    )
    async with Host(tmp_path / "tether.toml") as host:
        (info,) = host.plugins()
        assert info["state"] == "error"
        assert info["reason"] == "invalid_manifest"
        assert "keep one" in info["error"]
    assert not marker.exists()


def test_folder_without_manifest_is_ignored(
    plugin_dir: Path, make_plugin: Callable[..., Path]
) -> None:
    make_plugin("real")
    notes = plugin_dir / "notes"
    notes.mkdir()
    (notes / "README.md").write_text("not a plugin")
    (notes / "plugin.py").write_text("raise RuntimeError('never imported')\n")
    (plugin_dir / "plugin.toml").write_text("a stray file, not a folder")
    # A directory named like a manifest is not a manifest.
    (plugin_dir / "odd").mkdir()
    (plugin_dir / "odd" / "plugin.toml").mkdir()

    found = discover_folders([plugin_dir])
    assert [c.id for c in found] == ["real"]


async def test_missing_entry_file_is_refused_naming_entry(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    folder = make_plugin("noentry", extra="")
    manifest = (folder / "plugin.toml").read_text()
    (folder / "plugin.toml").write_text(
        manifest.replace('entry = "plugin.py"', 'entry = "main.py"')
    )

    cand = inspect_folder(folder)
    assert cand.refusal is not None
    assert cand.refusal[0] is RefusalReason.INVALID_MANIFEST
    assert cand.refusal[1].startswith("entry: ")
    (problem,) = cand.problems
    assert (problem.where, problem.field) == (str(folder), "entry")
    assert "'main.py' does not exist" in problem.message
    assert str(problem) == f"{folder}: entry: {problem.message}"

    write_policy(
        tmp_path, '[host]\nentry_points = false\n[plugins.noentry]\ngrant = ["tools.register"]\n'
    )
    async with Host(tmp_path / "tether.toml") as host:
        info = by_id(host)["noentry"]
        assert (info["state"], info["reason"]) == ("error", "invalid_manifest")
        assert "entry" in info["error"] and "main.py" in info["error"]


# --- digests --------------------------------------------------------------------------------


def test_folder_digest_is_stable_and_location_independent(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    folder = make_plugin("stable", TOOL_CODE)
    (folder / "data").mkdir()
    (folder / "data" / "table.csv").write_text("a,b\n1,2\n")

    first = folder_digest(folder)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert folder_digest(folder) == first

    copy = tmp_path / "elsewhere" / "stable-copy"
    shutil.copytree(folder, copy)
    assert folder_digest(copy) == first


def test_folder_digest_changes_with_content_names_and_new_files(
    make_plugin: Callable[..., Path],
) -> None:
    folder = make_plugin("changing", TOOL_CODE)
    original = folder_digest(folder)

    code = (folder / "plugin.py").read_text()
    (folder / "plugin.py").write_text(code.replace("pong", "pang"))  # same size, new bytes
    changed = folder_digest(folder)
    assert changed != original

    (folder / "plugin.py").write_text(code)
    assert folder_digest(folder) == original

    (folder / "helper.py").write_text("")  # an empty new file still counts
    added = folder_digest(folder)
    assert added != original

    (folder / "helper.py").rename(folder / "other.py")
    assert folder_digest(folder) not in (original, added)


def test_folder_digest_ignores_pycache(make_plugin: Callable[..., Path]) -> None:
    folder = make_plugin("cached", TOOL_CODE)
    (folder / "lib").mkdir()
    (folder / "lib" / "x.py").write_text("X = 1\n")
    before = folder_digest(folder)
    for where in (folder, folder / "lib"):
        (where / "__pycache__").mkdir()
        (where / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\x00bytecode")
    assert folder_digest(folder) == before
    # ...while an ordinary folder with the same content is part of the digest.
    (folder / "cache").mkdir()
    (folder / "cache" / "m.cpython-311.pyc").write_bytes(b"\x00bytecode")
    assert folder_digest(folder) != before


async def test_digest_unchanged_by_importing_the_plugin(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    folder = make_plugin("compiled", TOOL_CODE)
    (folder / "util.py").write_text("VALUE = 'from util'\n")
    code = (
        TOOL_CODE
        + "\nfrom .util import VALUE\n\n\n@plugin.tool\ndef value() -> str:\n    return VALUE\n"
    )
    (folder / "plugin.py").write_text(code)
    digest = folder_digest(folder)
    write_policy(
        tmp_path,
        f"""
        [host]
        entry_points = false
        [plugins.compiled]
        grant = ["tools.register"]
        version = "1.0.0"
        digest = "{digest}"
        """,
    )
    for _ in range(2):  # the second start sees whatever the first import left behind
        async with Host(tmp_path / "tether.toml") as host:
            assert by_id(host)["compiled"]["state"] == "active"
            assert (await host.call_tool("plugin_compiled_value", {})).content == "from util"
    assert folder_digest(folder) == digest


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
@pytest.mark.parametrize("where", ["file", "nested-dir"])
async def test_symlink_inside_folder_refuses_the_plugin(
    tmp_path: Path, make_plugin: Callable[..., Path], where: str
) -> None:
    marker = tmp_path / "imported.txt"
    folder = make_plugin("linky", MARKER_CODE.format(marker=str(marker)))
    outside = tmp_path / "outside.py"
    outside.write_text("SECRET = 1\n")
    if where == "file":
        (folder / "helper.py").symlink_to(outside)
        rel = "helper.py"
    else:
        (folder / "pkg").mkdir()
        (folder / "pkg" / "link").symlink_to(tmp_path)
        rel = os.path.join("pkg", "link")

    cand = inspect_folder(folder)
    assert cand.refusal is not None
    assert cand.refusal[0] is RefusalReason.SYMLINK
    assert f"{rel} is a symlink" in cand.refusal[1]
    assert cand.digest is None
    assert [p.field for p in cand.problems] == ["(folder)"]

    write_policy(
        tmp_path, '[host]\nentry_points = false\n[plugins.linky]\ngrant = ["tools.register"]\n'
    )
    async with Host(tmp_path / "tether.toml") as host:
        info = by_id(host)["linky"]
        assert (info["state"], info["reason"]) == ("error", "symlink")
        assert rel in info["error"]
    assert not marker.exists()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinked_manifest_is_refused(tmp_path: Path, plugin_dir: Path) -> None:
    real = write_plugin(tmp_path / "real", "sneaky")
    folder = plugin_dir / "sneaky"
    folder.mkdir()
    (folder / "plugin.toml").symlink_to(real / "plugin.toml")
    (folder / "plugin.py").write_text("")

    (cand,) = discover_folders([plugin_dir])
    assert cand.refusal is not None
    assert cand.refusal[0] is RefusalReason.INVALID_MANIFEST
    assert [(p.field, "symlink" in p.message) for p in cand.problems] == [("plugin.toml", True)]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_in_folder_does_not_hang_discovery(make_plugin: Callable[..., Path]) -> None:
    folder = make_plugin("piped")
    fifo = folder / "pipe"
    os.mkfifo(fifo)
    result: dict[str, object] = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("cand", inspect_folder(folder)), daemon=True
    )
    worker.start()
    worker.join(2)
    hung = worker.is_alive()
    if hung:  # open the write end once so the blocked open() returns and the thread ends
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(2)
    assert not hung, "inspect_folder blocked on a named pipe"
    cand = result["cand"]
    assert isinstance(cand, Candidate)
    assert cand.refusal is not None and "pipe" in cand.refusal[1]


# --- duplicate ids --------------------------------------------------------------------------


async def test_duplicate_ids_refuse_both_and_name_both_places(tmp_path: Path) -> None:
    marker_a, marker_b = tmp_path / "a.txt", tmp_path / "b.txt"
    first = write_plugin(tmp_path / "plugins", "dup", MARKER_CODE.format(marker=str(marker_a)))
    second = write_plugin(tmp_path / "vendor", "dup", MARKER_CODE.format(marker=str(marker_b)))
    write_plugin(tmp_path / "vendor", "solo", TOOL_CODE)
    write_policy(
        tmp_path,
        """
        [host]
        plugin_dirs = ["plugins", "vendor"]
        entry_points = false
        [plugins.dup]
        grant = ["tools.register"]
        [plugins.solo]
        grant = ["tools.register"]
        """,
    )
    async with Host(tmp_path / "tether.toml") as host:
        dups = [p for p in host.plugins() if p["id"] == "dup"]
        assert len(dups) == 2
        assert {p["where"] for p in dups} == {str(first), str(second)}
        for p in dups:
            assert (p["state"], p["reason"]) == ("error", "duplicate_id")
            assert str(first) in p["error"] and str(second) in p["error"]
            assert "give each plugin its own id" in p["error"]
        assert by_id(host)["solo"]["state"] == "active"
        refusals = host.audit.read(plugin="dup", kind="refused")
        assert len(refusals) == 2
        assert {r.detail["reason"] for r in refusals} == {"duplicate_id"}
    assert not marker_a.exists() and not marker_b.exists()


# --- installed packages ---------------------------------------------------------------------


def _install(site: Path, package: str, files: dict[str, str], entry_points: str) -> None:
    """Write a real installed distribution (dist-info with RECORD) into `site`."""
    pkg = site / package
    pkg.mkdir(parents=True)
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    info = site / f"{package}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    rows = [f"{package}/{name},," for name in files]
    rows += [f"{info.name}/{n},," for n in ("METADATA", "RECORD", "entry_points.txt")]
    (info / "RECORD").write_text("\n".join(rows) + "\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory on sys.path; modules imported from it are forgotten afterwards."""
    d = tmp_path / "site"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    before = set(sys.modules)
    yield d
    for name in set(sys.modules) - before:
        if name.startswith(("tether_pkgdemo", "tether_nomanifest")):
            del sys.modules[name]


PKG_PLUGIN = '''
from tether import Context, Plugin

plugin = Plugin()


@plugin.tool
async def shout(ctx: Context, text: str) -> str:
    """Upper-case the text."""
    await ctx.storage.set("last", text)
    return text.upper() + "!"
'''

PKG_MANIFEST = """
id = "pkgdemo"
name = "Package demo"
version = "1.0.0"
api_version = "1.0"
entry = "__init__.py"
capabilities = ["tools.register", "storage.read", "storage.write"]
"""


async def test_installed_package_is_discovered_and_activated(tmp_path: Path, site: Path) -> None:
    _install(
        site,
        "tether_pkgdemo",
        {"__init__.py": PKG_PLUGIN, "plugin.toml": PKG_MANIFEST},
        "[tether.plugins]\npkgdemo = tether_pkgdemo\n",
    )

    found = [c for c in discover_packages() if c.module == "tether_pkgdemo"]
    assert len(found) == 1
    (cand,) = found
    assert cand.source == "package"
    assert cand.id == "pkgdemo"
    assert cand.refusal is None and cand.problems == []
    assert cand.folder == site / "tether_pkgdemo"
    assert "tether_pkgdemo" in cand.where and "pkgdemo" in cand.where
    assert cand.digest == folder_digest(site / "tether_pkgdemo")
    assert "tether_pkgdemo" not in sys.modules  # discovery imports nothing

    write_policy(
        tmp_path,
        """
        [plugins.pkgdemo]
        grant = ["tools.register", "storage.read", "storage.write"]
        """,
    )
    async with Host(tmp_path / "tether.toml") as host:
        info = by_id(host)["pkgdemo"]
        assert (info["state"], info["source"]) == ("active", "package")
        assert info["tools"] == ["plugin_pkgdemo_shout"]
        result = await host.call_tool("plugin_pkgdemo_shout", {"text": "hey"})
        assert (result.content, result.is_error) == ("HEY!", False)
        assert host.services.storage.get("pkgdemo", "plugin", "", "default", "last") == "hey"


async def test_installed_package_needs_a_policy_entry(tmp_path: Path, site: Path) -> None:
    _install(
        site,
        "tether_pkgdemo",
        {"__init__.py": PKG_PLUGIN, "plugin.toml": PKG_MANIFEST},
        "[tether.plugins]\npkgdemo = tether_pkgdemo\n",
    )
    write_policy(tmp_path, "[host]\nplugin_dirs = []\n")
    async with Host(tmp_path / "tether.toml") as host:
        info = by_id(host)["pkgdemo"]
        assert (info["state"], info["reason"]) == ("error", "not_approved")
    assert "tether_pkgdemo" not in sys.modules


async def test_entry_points_false_skips_packages(tmp_path: Path, site: Path) -> None:
    _install(
        site,
        "tether_pkgdemo",
        {"__init__.py": PKG_PLUGIN, "plugin.toml": PKG_MANIFEST},
        "[tether.plugins]\npkgdemo = tether_pkgdemo\n",
    )
    write_policy(
        tmp_path,
        '[host]\nentry_points = false\n[plugins.pkgdemo]\ngrant = ["tools.register"]\n',
    )
    async with Host(tmp_path / "tether.toml") as host:
        assert "pkgdemo" not in by_id(host)


async def test_package_without_manifest_is_reported(tmp_path: Path, site: Path) -> None:
    _install(
        site,
        "tether_nomanifest",
        {"__init__.py": "raise RuntimeError('must not be imported')\n"},
        "[tether.plugins]\nnomanifest = tether_nomanifest\n",
    )

    (cand,) = [c for c in discover_packages() if c.module == "tether_nomanifest"]
    assert cand.id is None
    assert cand.refusal is not None
    assert cand.refusal[0] is RefusalReason.INVALID_MANIFEST
    (problem,) = cand.problems
    assert problem.field == "plugin.toml"
    assert "tether_nomanifest" in problem.message
    assert "ship one in the package" in problem.message
    assert "nomanifest" in problem.where

    write_policy(tmp_path, "[host]\nplugin_dirs = []\n")
    async with Host(tmp_path / "tether.toml") as host:
        (info,) = [p for p in host.plugins() if "tether_nomanifest" in p["where"]]
        assert (info["state"], info["reason"]) == ("error", "invalid_manifest")
        assert "no plugin.toml or plugin.json" in info["error"]
    assert "tether_nomanifest" not in sys.modules
