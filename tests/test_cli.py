"""The `tether` command line, run as the installed script in real subprocesses.

Each run costs the interpreter start and imports, so the module builds its scenario folders
once, starts every independent run concurrently, and the tests assert on the results.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import write_plugin, write_policy
from tether.runtime.discovery import folder_digest

TETHER = Path(sys.executable).parent / "tether"

pytestmark = pytest.mark.timeout(45)

ECHO_CODE = '''
import asyncio

from tether import Context, Plugin

plugin = Plugin()


@plugin.tool
async def echo(text: str) -> str:
    """Say it back."""
    return text


@plugin.tool
def fail() -> str:
    raise RuntimeError("kaput")


@plugin.tool(timeout_ms=200)
async def slow() -> str:
    await asyncio.sleep(20)
    return "too late"


@plugin.tool
async def peek(ctx: Context) -> object:
    return await ctx.storage.get("anything")
'''


def tether(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_CONFIG"}
    return subprocess.run(
        [str(TETHER), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@dataclass
class Scenario:
    project: Path  # tether.toml, approved `echo`, unapproved `stranger`
    invalid: Path  # broken manifests
    pinned: Path  # `sealed` pinned and unchanged, `drifted` pinned and then edited
    malformed: Path  # a malformed tether.toml
    elsewhere: Path  # an empty working directory
    runs: dict[str, subprocess.CompletedProcess[str]]


def _build(root: Path) -> dict[str, tuple[tuple[str, ...], Path]]:
    project = root / "project"
    write_plugin(
        project / "plugins", "echo", ECHO_CODE, capabilities=["tools.register", "storage.read"]
    )
    write_plugin(project / "plugins", "stranger", capabilities=["tools.register", "hooks.tools"])
    write_policy(
        project, '[host]\nentry_points = false\n[plugins.echo]\ngrant = ["tools.register"]\n'
    )

    invalid = root / "invalid"
    write_plugin(
        invalid / "plugins",
        "bad",
        manifest='id = "Bad_ID"\nname = "Bad"\napi_version = "1.0"\n'
        'capabilities = ["storage:read"]\n',
    )
    noentry = write_plugin(invalid / "plugins", "noentry")
    (noentry / "plugin.py").unlink()
    write_policy(
        invalid, '[host]\nentry_points = false\n[plugins.noentry]\ngrant = ["tools.register"]\n'
    )

    pinned = root / "pinned"
    pins = []
    for pid in ("sealed", "drifted"):
        folder = write_plugin(pinned / "plugins", pid)
        pins.append(
            f'[plugins.{pid}]\ngrant = ["tools.register"]\nversion = "1.0.0"\n'
            f'digest = "{folder_digest(folder)}"\n'
        )
    write_policy(pinned, "[host]\nentry_points = false\n" + "".join(pins))
    with (pinned / "plugins" / "drifted" / "plugin.py").open("a") as fh:
        fh.write("# changed after approval\n")

    malformed = root / "malformed"
    malformed.mkdir()
    write_policy(malformed, "[host]\nwatchdog_ms = 5\nbogus = 1\n")
    (malformed / "broken.toml").write_text("[host\n")

    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    config = str(project / "tether.toml")
    return {
        "list": (("list",), project),
        "list_json": (("list", "--json"), project),
        "tools_json": (("tools", "--json"), project),
        "call_hi": (("call", "plugin_echo_echo", '{"text": "hi"}'), project),
        "call_fail": (("call", "plugin_echo_fail"), project),
        "call_slow": (("call", "plugin_echo_slow", "{}"), project),
        "call_unknown": (("call", "plugin_echo_ecko", '{"text": "hi"}'), project),
        "call_bad_json": (("call", "plugin_echo_echo", "{text: hi}"), project),
        "call_array": (("call", "plugin_echo_echo", "[1, 2]"), project),
        "call_peek": (("call", "plugin_echo_peek"), project),
        "check": (("check",), project),
        "check_one": (("check", str(project / "plugins" / "echo")), project),
        "check_missing": (("check", "no/such/plugin"), project),
        "check_invalid": (("check",), invalid),
        "check_pinned": (("check",), pinned),
        "list_malformed": (("list",), malformed),
        "check_broken": (("check", "--config", "broken.toml"), malformed),
        "list_elsewhere": (("list", "--json", "--config", config), elsewhere),
    }


@pytest.fixture(scope="module")
def sc(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("cli")
    jobs = _build(root)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(tether, *args, cwd=cwd) for name, (args, cwd) in jobs.items()}
        runs = {name: f.result() for name, f in futures.items()}
    # Sequential: the audit log must already hold the violation of `call_peek`.
    runs["audit"] = tether("audit", "--json", "--plugin", "echo", cwd=root / "project")
    return Scenario(
        root / "project",
        root / "invalid",
        root / "pinned",
        root / "malformed",
        root / "elsewhere",
        runs,
    )


def test_script_is_installed() -> None:
    assert TETHER.is_file(), f"{TETHER} missing: install the project with `pip install -e .`"


# --- list and tools -------------------------------------------------------------------------


def test_list_table(sc: Scenario) -> None:
    done = sc.runs["list"]
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if "│" in line}
    assert "active" in rows["echo"]
    assert "plugin_echo_echo" in rows["echo"]
    assert "error (not_approved)" in rows["stranger"]
    assert "stranger: no policy entry" in done.stdout


def test_list_json(sc: Scenario) -> None:
    done = sc.runs["list_json"]
    assert done.returncode == 0, done.stderr
    plugins = {p["id"]: p for p in json.loads(done.stdout)}
    assert set(plugins) == {"echo", "stranger"}
    echo = plugins["echo"]
    assert (echo["state"], echo["reason"]) == ("active", None)
    assert echo["granted"] == ["tools.register"]
    assert echo["denied"] == ["storage.read"]
    assert echo["tools"] == [
        "plugin_echo_echo",
        "plugin_echo_fail",
        "plugin_echo_peek",
        "plugin_echo_slow",
    ]
    assert echo["digest"] == folder_digest(sc.project / "plugins" / "echo")
    stranger = plugins["stranger"]
    assert (stranger["state"], stranger["reason"]) == ("error", "not_approved")
    assert stranger["granted"] == []
    assert stranger["denied"] == ["hooks.tools", "tools.register"]


def test_tools_json(sc: Scenario) -> None:
    done = sc.runs["tools_json"]
    assert done.returncode == 0, done.stderr
    tools = {t["name"]: t for t in json.loads(done.stdout)}
    assert set(tools) == {
        "plugin_echo_echo",
        "plugin_echo_fail",
        "plugin_echo_peek",
        "plugin_echo_slow",
    }
    echo = tools["plugin_echo_echo"]
    assert echo["plugin"] == "echo"
    assert echo["description"] == "Say it back."
    assert echo["input_schema"]["properties"]["text"]["type"] == "string"
    assert echo["input_schema"]["required"] == ["text"]


# --- call -----------------------------------------------------------------------------------


def test_call_success(sc: Scenario) -> None:
    done = sc.runs["call_hi"]
    assert (done.returncode, done.stdout) == (0, "hi\n"), done.stderr


def test_call_tool_error_exits_1(sc: Scenario) -> None:
    done = sc.runs["call_fail"]
    assert done.returncode == 1
    assert "plugin_echo_fail failed: RuntimeError: kaput" in done.stderr
    assert done.stdout == ""


def test_call_timeout_exits_1(sc: Scenario) -> None:
    done = sc.runs["call_slow"]
    assert done.returncode == 1
    assert "plugin_echo_slow: timed out after 0.2s" in done.stderr


def test_call_unknown_tool_exits_2_with_suggestion(sc: Scenario) -> None:
    done = sc.runs["call_unknown"]
    assert done.returncode == 2
    assert "no tool named 'plugin_echo_ecko'" in done.stderr
    assert 'did you mean "plugin_echo_echo"' in done.stderr


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ("call_bad_json", "arguments: not valid JSON"),
        ("call_array", "arguments: must be a JSON object"),
    ],
)
def test_call_bad_arguments_exit_2(sc: Scenario, run: str, message: str) -> None:
    done = sc.runs[run]
    assert done.returncode == 2
    assert message in done.stderr
    assert '{"text": "hi"}' in done.stderr  # shows what a good argument looks like


# --- audit ----------------------------------------------------------------------------------


def test_violation_shows_in_audit(sc: Scenario) -> None:
    done = sc.runs["call_peek"]
    assert done.returncode == 1
    assert "storage.read" in done.stderr

    audit = sc.runs["audit"]
    assert audit.returncode == 0, audit.stderr
    records = json.loads(audit.stdout)
    violations = [r for r in records if r["kind"] == "capability_violation"]
    assert len(violations) == 1, records
    assert violations[0]["detail"] == {"capability": "storage.read", "action": "storage.get"}
    assert {r["plugin"] for r in records} == {"echo"}
    assert any(r["kind"] == "state" and r["message"] == "loading -> active" for r in records)


# --- check ----------------------------------------------------------------------------------


def test_check_discovered_folders(sc: Scenario) -> None:
    done = sc.runs["check"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""  # no problems
    echo = sc.project / "plugins" / "echo"
    stranger = sc.project / "plugins" / "stranger"
    assert f"{echo}: echo 1.0.0 digest {folder_digest(echo)}" in done.stderr
    # The unapproved plugin gets the exact lines that approve it.
    assert f"{stranger}: not approved; to approve it, add to tether.toml:" in done.stderr
    assert (
        '[plugins.stranger]\ngrant = ["tools.register", "hooks.tools"]\nversion = "1.0.0"\n'
        f'digest = "{folder_digest(stranger)}"'
    ) in done.stderr


def test_check_one_folder(sc: Scenario) -> None:
    done = sc.runs["check_one"]
    assert done.returncode == 0, done.stdout + done.stderr
    echo = sc.project / "plugins" / "echo"
    assert f"{echo}: echo 1.0.0 digest {folder_digest(echo)}" in done.stderr
    assert "stranger" not in done.stdout + done.stderr


def test_check_nonexistent_path_exits_2(sc: Scenario) -> None:
    done = sc.runs["check_missing"]
    assert done.returncode == 2
    assert "no/such/plugin: not a folder" in done.stderr


def test_check_invalid_manifest(sc: Scenario) -> None:
    done = sc.runs["check_invalid"]
    assert done.returncode == 1
    bad = sc.invalid / "plugins" / "bad"
    noentry = sc.invalid / "plugins" / "noentry"
    lines = done.stdout.splitlines()
    assert f"{bad}: id: 'Bad_ID' must match ^[a-z][a-z0-9-]*$" in done.stdout
    assert f"{bad}: version: is required; add it" in lines
    assert (
        f'{bad}: capabilities: "storage:read" is written with a colon; write "storage.read"'
        in lines
    )
    assert any(line.startswith(f"{noentry}: entry: 'plugin.py' does not exist") for line in lines)
    for line in lines:
        assert re.match(rf"^{re.escape(str(sc.invalid))}/plugins/\w+: [\w.()]+: \S", line), line


def test_check_digest_drift(sc: Scenario) -> None:
    done = sc.runs["check_pinned"]
    assert done.returncode == 1
    sealed = sc.pinned / "plugins" / "sealed"
    drifted = sc.pinned / "plugins" / "drifted"
    new = folder_digest(drifted)
    (problem,) = done.stdout.splitlines()
    assert problem.startswith(f"{drifted}: (folder): digest_drift: folder digest {new} differs")
    assert f"{sealed}: sealed 1.0.0 digest {folder_digest(sealed)}" in done.stderr
    assert f"{drifted}: policy lines that would approve it as it is now:" in done.stderr
    assert (
        f'[plugins.drifted]\ngrant = ["tools.register"]\nversion = "1.0.0"\ndigest = "{new}"'
    ) in done.stderr


# --- configuration --------------------------------------------------------------------------


def test_config_option_points_elsewhere(sc: Scenario) -> None:
    done = sc.runs["list_elsewhere"]
    assert done.returncode == 0, done.stderr
    states = {p["id"]: p["state"] for p in json.loads(done.stdout)}
    assert states == {"echo": "active", "stranger": "error"}
    assert not (sc.elsewhere / ".tether").exists()


def test_malformed_tether_toml_exits_1(sc: Scenario) -> None:
    done = sc.runs["list_malformed"]
    assert done.returncode == 1
    assert done.stdout == ""
    config = sc.malformed / "tether.toml"
    lines = done.stderr.splitlines()
    assert f"{config}: host.watchdog_ms: must be at least 20" in lines
    assert f"{config}: host.bogus: unknown key; remove it or fix its name" in lines
    for line in lines:
        assert re.match(rf"^{re.escape(str(config))}: [\w.()]+: \S", line), line
    assert not (sc.malformed / ".tether").exists()

    broken = sc.runs["check_broken"]
    assert broken.returncode == 1
    assert f"{sc.malformed / 'broken.toml'}: (file): is not valid TOML" in broken.stderr
