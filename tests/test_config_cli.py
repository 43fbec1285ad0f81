"""`tether config get/set/list`, run as the installed script in real subprocesses.

get and list read the database without importing plugin code; set starts the host so the
plugin's validator can run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import write_plugin, write_policy

TETHER = Path(sys.executable).parent / "tether"

pytestmark = pytest.mark.timeout(60)

WEATHER = """
from tether import Plugin

plugin = Plugin()
plugin.config_key("enabled", default="true", description="Answer weather questions.")


@plugin.config_key("units", default="metric", description="Temperature units.")
def units_ok(value: str) -> bool:
    return value in ("metric", "imperial")
"""

# Importing this would leave a marker file: proof that get and list never import plugins.
BOOBY_TRAP = """
from pathlib import Path

Path(__file__).with_name("imported.marker").write_text("imported")
raise SystemExit("plugin code must not be imported by get or list")
"""


def tether(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return subprocess.run(
        [str(TETHER), *args], cwd=cwd, capture_output=True, text=True, timeout=40, env=env
    )


def run_all(cwd: Path, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands, concurrently (each pays an interpreter start)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda c: tether(*c, cwd=cwd), commands))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_plugin(tmp_path / "plugins", "weather", WEATHER, capabilities=["config.register"])
    write_policy(
        tmp_path,
        '[host]\nentry_points = false\n[plugins.weather]\ngrant = ["config.register"]\n',
    )
    return tmp_path


def test_config_commands(project: Path) -> None:
    # Before any host ran, nothing is known; usage errors are exit 2 without a host.
    unknown, bad_name, empty_list = run_all(
        project,
        ("config", "get", "weather.units", "--scope", "space:main"),
        ("config", "set", "weather", "x"),
        ("config", "list", "--json"),
    )
    assert unknown.returncode == 2 and "unknown config key 'weather.units'" in unknown.stderr
    assert bad_name.returncode == 2 and "'<plugin-id>.<key>'" in bad_name.stderr
    assert empty_list.returncode == 0 and json.loads(empty_list.stdout) == []

    # Each set starts a host on the same data directory; SQLite serialises their writes.
    ok, rejected, no_such_key = run_all(
        project,
        ("config", "set", "weather.units", "imperial", "--scope", "space:main"),
        ("config", "set", "weather.units", "kelvin"),
        ("config", "set", "weather.colour", "red"),
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "weather.units = imperial (space:main)"
    assert rejected.returncode == 1
    assert "weather.units: value 'kelvin' rejected by the plugin's validator" in rejected.stderr
    assert no_such_key.returncode == 2 and "no plugin registered it" in no_such_key.stderr

    # From here on importing the plugin leaves a marker: get and list answer without it.
    (project / "plugins" / "weather" / "plugin.py").write_text(BOOBY_TRAP)
    scoped, bad_scope, as_json, listing, scoped_list = run_all(
        project,
        ("config", "get", "weather.units", "--scope", "space:main"),
        ("config", "get", "weather.units", "--scope", "space"),
        ("config", "get", "weather.enabled", "--json"),
        ("config", "list", "--json"),
        ("config", "list", "--scope", "space:main"),
    )
    assert not (project / "plugins" / "weather" / "imported.marker").exists()
    assert scoped.returncode == 0 and scoped.stdout.strip() == "imperial"
    assert bad_scope.returncode == 2 and '"space:main"' in bad_scope.stderr
    assert json.loads(as_json.stdout) == {
        "name": "weather.enabled",
        "scope": "global",
        "value": "true",
        "source": "default",
    }
    rows = {(e["name"], e["scope"]): e for e in json.loads(listing.stdout)}
    assert rows["weather.units", "space:main"]["value"] == "imperial"
    assert rows["weather.enabled", "global"] == {
        "name": "weather.enabled",
        "scope": "global",
        "value": "true",
        "default": True,
        "description": "Answer weather questions.",
    }
    assert scoped_list.returncode == 0
    assert "weather.units" in scoped_list.stdout and "imperial" in scoped_list.stdout
    assert "true (default)" in scoped_list.stdout
    # set loads plugins, and this one now fails to import, so it has no live validator.
    now_inactive = tether("config", "set", "weather.units", "metric", cwd=project)
    assert (project / "plugins" / "weather" / "imported.marker").exists()
    assert now_inactive.returncode == 1
    assert "its plugin is not active" in now_inactive.stderr
