"""Finding plugins: folders under the policy's `plugin_dirs`, installed packages (entry-point
group `tether.plugins`) and plugins passed in code. Nothing here imports plugin code."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tether.contract.errors import ManifestError, Problem, RefusalReason
from tether.contract.manifest import Manifest, parse_manifest
from tether.contract.validation import MAX_MANIFEST_BYTES

if TYPE_CHECKING:
    from tether.authoring import Plugin

ENTRY_POINT_GROUP = "tether.plugins"
MANIFEST_NAMES = ("plugin.toml", "plugin.json")
# Bytecode caches appear when a plugin is imported; they are not part of what was approved.
_DIGEST_SKIP_DIRS = frozenset({"__pycache__"})

Source = Literal["folder", "package", "code"]


@dataclass(slots=True)
class Candidate:
    """A plugin found by discovery, valid or not, before any of its code runs."""

    where: str
    source: Source
    manifest: Manifest | None = None
    folder: Path | None = None
    module: str | None = None
    plugin: Plugin | None = None
    digest: str | None = None
    problems: list[Problem] = field(default_factory=list)
    refusal: tuple[RefusalReason, str] | None = None

    @property
    def id(self) -> str | None:
        return self.manifest.id if self.manifest else None


class SymlinkError(Exception):
    """A plugin folder holds a symlink or a special file, which would let its digest lie."""


def folder_digest(folder: Path) -> str:
    """SHA-256 over the sorted relative paths, sizes and file hashes of a folder.

    Symlinks anywhere in the folder raise `SymlinkError`: the digest must describe exactly
    the bytes that will run.
    """
    entries: list[tuple[str, int, str]] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in _DIGEST_SKIP_DIRS)
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                rel = os.path.relpath(os.path.join(root, name), folder)
                raise SymlinkError(f"{rel} is a symlink; replace it with the real file")
        for name in files:
            path = os.path.join(root, name)
            if not stat.S_ISREG(os.lstat(path).st_mode):
                # A pipe or device would block or lie; only regular files can be approved.
                rel = os.path.relpath(path, folder)
                raise SymlinkError(
                    f"{rel} is not a regular file (pipe, socket or device); remove it"
                )
            with open(path, "rb") as fh:
                data = fh.read()
            rel = Path(os.path.relpath(path, folder)).as_posix()
            entries.append((rel, len(data), hashlib.sha256(data).hexdigest()))
    h = hashlib.sha256()
    for rel, size, file_hash in sorted(entries):
        h.update(f"{rel}\0{size}\0{file_hash}\n".encode())
    return "sha256:" + h.hexdigest()


def _read_manifest(folder: Path, where: str) -> Manifest:
    present = [n for n in MANIFEST_NAMES if (folder / n).is_file()]
    if len(present) > 1:
        raise ManifestError(
            [Problem(where, "plugin.toml", "both plugin.toml and plugin.json exist; keep one")]
        )
    path = folder / present[0]
    if path.is_symlink():
        raise ManifestError([Problem(where, present[0], "is a symlink; replace it with the file")])
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(
            [Problem(where, present[0], f"is larger than {MAX_MANIFEST_BYTES} bytes; shorten it")]
        )
    fmt: Literal["toml", "json"] = "toml" if present[0] == "plugin.toml" else "json"
    return parse_manifest(path.read_bytes(), fmt, where)


def inspect_folder(folder: Path, *, where: str | None = None) -> Candidate:
    """Read and check one plugin folder: manifest, entry file, digest."""
    label = where or str(folder)
    cand = Candidate(where=label, source="folder", folder=folder)
    try:
        cand.manifest = _read_manifest(folder, label)
    except ManifestError as exc:
        cand.problems.extend(exc.problems)
        cand.refusal = (RefusalReason.INVALID_MANIFEST, "; ".join(str(p) for p in exc.problems))
        return cand
    try:
        cand.digest = folder_digest(folder)
    except SymlinkError as exc:
        cand.problems.append(Problem(label, "(folder)", str(exc)))
        cand.refusal = (RefusalReason.SYMLINK, str(exc))
        return cand
    entry = folder / cand.manifest.entry
    if not entry.is_file():
        msg = f"{cand.manifest.entry!r} does not exist in the plugin folder; create it or fix entry"
        cand.problems.append(Problem(label, "entry", msg))
        cand.refusal = (RefusalReason.INVALID_MANIFEST, f"entry: {msg}")
    return cand


def rescan(cand: Candidate) -> Candidate:
    """Inspect a folder or package candidate's files again (before re-importing its code)."""
    if cand.folder is None:
        return cand
    fresh = inspect_folder(cand.folder, where=cand.where)
    fresh.source, fresh.module = cand.source, cand.module
    return fresh


def is_plugin_folder(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in MANIFEST_NAMES)


def discover_folders(dirs: list[Path]) -> list[Candidate]:
    """Every plugin folder directly under each of `dirs`, in sorted order per directory."""
    found: list[Candidate] = []
    for base in dirs:
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if is_plugin_folder(child):
                found.append(inspect_folder(child))
    return found


def discover_packages() -> list[Candidate]:
    """Installed distributions that declare an entry point in the `tether.plugins` group.

    The entry point names a package; its `plugin.toml` (or `plugin.json`) ships inside it
    and is read from the installed files, so nothing is imported to check it.
    """
    found: list[Candidate] = []
    for ep in sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
    ):
        module = ep.value.split(":", 1)[0].strip()
        where = f"package {ep.dist.name if ep.dist else '?'} (entry point {ep.name!r})"
        cand = Candidate(where=where, source="package", module=module)
        folder = _package_folder(ep, module)
        if folder is None:
            msg = f"no plugin.toml or plugin.json found inside the installed package {module!r}"
            cand.problems.append(Problem(where, "plugin.toml", msg + "; ship one in the package"))
            cand.refusal = (RefusalReason.INVALID_MANIFEST, msg)
            found.append(cand)
            continue
        checked = inspect_folder(folder, where=where)
        checked.source, checked.module = "package", module
        found.append(checked)
    return found


def _package_folder(ep: importlib.metadata.EntryPoint, module: str) -> Path | None:
    dist = ep.dist
    if dist is None:
        return None
    parts = tuple(module.split("."))
    for f in dist.files or ():
        if f.parts[:-1] == parts and f.parts[-1] in MANIFEST_NAMES:
            return Path(str(dist.locate_file(f))).parent
    return None


def code_candidate(plugin: Plugin) -> Candidate:
    """A plugin object passed to `Host(plugins=[...])` by the embedding program."""
    manifest = plugin.manifest
    where = f"code plugin {manifest.id!r}" if manifest else "code plugin"
    cand = Candidate(where=where, source="code", manifest=manifest, plugin=plugin)
    if manifest is None:
        msg = "a plugin passed in code needs its manifest: Plugin(id=..., capabilities=[...])"
        cand.problems.append(Problem(where, "manifest", msg))
        cand.refusal = (RefusalReason.INVALID_MANIFEST, msg)
    return cand


def mark_duplicates(candidates: list[Candidate]) -> None:
    """Refuse every candidate whose id another candidate also has, naming both places."""
    by_id: dict[str, list[Candidate]] = {}
    for c in candidates:
        if c.id is not None:
            by_id.setdefault(c.id, []).append(c)
    for pid, group in by_id.items():
        if len(group) < 2:
            continue
        places = " and ".join(c.where for c in group)
        for c in group:
            msg = f"plugin id {pid!r} is used by {places}; give each plugin its own id"
            c.problems.append(Problem(c.where, "id", msg))
            c.refusal = (RefusalReason.DUPLICATE_ID, msg)
