"""Shared fixtures: plugin folders written into a temporary directory, and a host on them."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "plugins"


def write_plugin(
    base: Path,
    plugin_id: str,
    code: str = "",
    *,
    capabilities: list[str] | None = None,
    extra: str = "",
    manifest: str | None = None,
    version: str = "1.0.0",
) -> Path:
    """Write `base/<id>/plugin.toml` and `plugin.py`; returns the folder."""
    folder = base / plugin_id
    folder.mkdir(parents=True, exist_ok=True)
    caps = capabilities if capabilities is not None else ["tools.register"]
    if manifest is None:
        manifest = (
            f'id = "{plugin_id}"\nname = "{plugin_id.title()}"\nversion = "{version}"\n'
            f'api_version = "1.0"\nentry = "plugin.py"\n'
            f"capabilities = {caps!r}\n".replace("'", '"')
            + textwrap.dedent(extra)
        )
    (folder / "plugin.toml").write_text(manifest)
    body = code or "from tether import Plugin\n\nplugin = Plugin()\n"
    (folder / "plugin.py").write_text(textwrap.dedent(body))
    return folder


def write_policy(base: Path, text: str) -> Path:
    path = base / "tether.toml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """`tmp_path/plugins`, the default plugin directory of a host rooted at `tmp_path`."""
    d = tmp_path / "plugins"
    d.mkdir()
    return d


@pytest.fixture
def make_plugin(plugin_dir: Path) -> Callable[..., Path]:
    def make(plugin_id: str, code: str = "", **kw: object) -> Path:
        return write_plugin(plugin_dir, plugin_id, code, **kw)  # type: ignore[arg-type]

    return make


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the wasm test components once, before any test runs, when a collected module
    uses them: a cold build takes a minute or more on 2 CPUs and would otherwise count
    against the first wasm test's timeout. Later runs find them cached."""
    wasm_build = sys.modules.get("wasm_build")
    if session.items and wasm_build is not None:
        wasm_build.build_all()
