"""The in-process tier: import a plugin's code into the host's interpreter.

A folder plugin becomes the package `tether_plugins.<id>` (so its modules can import each
other relatively) and its entry file a submodule of it. The tier returns the plugin's
`Plugin` object; the host then activates it through the capability membrane. Other tiers
return an object with the same declarations whose callables cross a process or sandbox
boundary, so the host treats every tier alike.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

from tether.authoring import Plugin
from tether.runtime.discovery import Candidate
from tether.runtime.watchdog import PLUGIN_MODULE_PREFIX

__all__ = ["PLUGIN_MODULE_PREFIX", "PluginImportError", "forget", "import_plugin", "package_name"]

_ROOT = PLUGIN_MODULE_PREFIX.rstrip(".")


class PluginImportError(Exception):
    """The plugin's code could not be imported or defines no `Plugin`."""


def package_name(plugin_id: str) -> str:
    return PLUGIN_MODULE_PREFIX + plugin_id.replace("-", "_")


def _ensure_root() -> None:
    if _ROOT not in sys.modules:
        root = types.ModuleType(_ROOT, "Namespace of plugins imported by Tether.")
        root.__path__ = []
        sys.modules[_ROOT] = root


def forget(plugin_id: str, package: str | None = None) -> None:
    """Drop a plugin's modules so the next import reads its files again (reload).

    `package` is the top-level module of an installed-package plugin.
    """
    for name in (package_name(plugin_id), package):
        if name is None or name not in sys.modules:
            continue
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]


def import_plugin(cand: Candidate) -> Plugin:
    """Import a candidate's code and return its `Plugin` object."""
    if cand.plugin is not None:
        return cand.plugin
    assert cand.manifest is not None
    if cand.source == "package":
        assert cand.module is not None
        try:
            module = importlib.import_module(cand.module)
        except BaseException as exc:  # a plugin's SystemExit at import is its failure only
            raise PluginImportError(
                f"importing {cand.module!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return _find_plugin(module, cand.module)
    assert cand.folder is not None
    return _import_folder(cand.manifest.id, cand.folder, cand.manifest.entry)


def _import_folder(plugin_id: str, folder: Path, entry: str) -> Plugin:
    _ensure_root()
    forget(plugin_id)
    pkg_name = package_name(plugin_id)
    pkg = types.ModuleType(pkg_name)
    pkg.__path__ = [str(folder)]
    pkg.__file__ = None
    sys.modules[pkg_name] = pkg
    rel = Path(entry)
    mod_name = pkg_name + "." + ".".join(rel.with_suffix("").parts)
    spec = importlib.util.spec_from_file_location(mod_name, folder / rel)
    if spec is None or spec.loader is None:
        raise PluginImportError(f"cannot import {entry!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # a plugin's SystemExit at import is its failure only
        forget(plugin_id)
        raise PluginImportError(f"importing {entry} failed: {type(exc).__name__}: {exc}") from exc
    return _find_plugin(module, entry)


def _find_plugin(module: types.ModuleType, where: str) -> Plugin:
    found = getattr(module, "plugin", None)
    if isinstance(found, Plugin):
        return found
    candidates = [v for v in vars(module).values() if isinstance(v, Plugin)]
    if len(candidates) == 1:
        return candidates[0]
    raise PluginImportError(
        f"{where} defines {len(candidates)} Plugin objects; define exactly one at module level, "
        "named `plugin`: `plugin = Plugin()`"
    )
