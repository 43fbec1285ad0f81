"""`tether egress check`: every case in-process through typer's runner, and the installed
script in subprocesses; numeric hosts or `--resolve` everywhere, so no test needs DNS."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_plugin, write_policy
from tether.cli import app

TETHER = Path(sys.executable).parent / "tether"
PUBLIC = "93.184.216.34"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_CONFIG"}
    return subprocess.run(
        [str(TETHER), "egress", "check", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=30,
    )


BLOCKED: list[tuple[list[str], str]] = [
    (["http://0x7f.1/"], "127.0.0.1 is a loopback address"),
    (["http://2130706433/admin"], "127.0.0.1 is a loopback address"),
    (["http://[::ffff:7f00:1]/"], "IPv4-mapped form of 127.0.0.1"),
    (["http://169.254.169.254/latest/meta-data/"], "cloud metadata"),
    (["http://[2002:a00:1::]/"], "6to4 form of 10.0.0.1"),
    (["http://localhost:8080/"], "localhost name"),
    (["file:///etc/passwd"], "scheme file: is not allowed"),
    (["http://user@evil.com@api.example.com/"], "user info"),
    (
        ["http://api.example.com/", "--resolve", "api.example.com:10.0.0.8"],
        "resolves to 10.0.0.8, a private address",
    ),
    (["http://api.example.com/", "--resolve", "api.example.com:[::1]"], "loopback"),
    (
        ["http://evil.com/", "--allow", "*.example.com", "--resolve", f"evil.com:{PUBLIC}"],
        "not in the outbound allowlist (*.example.com)",
    ),
    (["http://example.com/", "--allow", "*.example.com"], "not in the outbound allowlist"),
]
ALLOWED: list[list[str]] = [
    [f"http://{PUBLIC}/"],
    ["https://api.example.com/v1", "--resolve", f"api.example.com:{PUBLIC}"],
    [
        "https://a.b.example.com/",
        "--allow",
        "*.example.com",
        "--resolve",
        f"a.b.example.com:{PUBLIC}",
    ],
    [
        "http://API.example.com./",
        "--allow",
        "api.example.com",
        "--resolve",
        "api.example.com:[2606:2800:220:1:248:1893:25c8:1946]",
    ],
]
USAGE: list[tuple[list[str], str]] = [
    (["http://x.example.com/", "--resolve", "x.example.com"], "write HOST:ADDRESS"),
    (["http://x.example.com/", "--resolve", "x.example.com:999.1.1.1"], "HOST:ADDRESS"),
    (["http://x.example.com/", "--allow", "*"], "would allow every host"),
    (["http://x.example.com/", "--allow", "x.example.com", "--plugin", "p"], "not both"),
    (["http://x.example.com/", "--plugin", "nobody"], "no plugin 'nobody'"),
    ([], "Missing argument"),
]
PLUGIN: dict[str, list[str]] = {
    "private-opened": [
        "https://api.example.com/",
        "--plugin",
        "fetcher",
        "--resolve",
        "api.example.com:10.0.0.5",
    ],
    "private-closed": [
        "https://api.example.com/",
        "--plugin",
        "fetcher",
        "--resolve",
        "api.example.com:10.0.0.6",
    ],
    "manifest-only": [
        "https://x.corp.example.com/",
        "--plugin",
        "fetcher",
        "--resolve",
        f"x.corp.example.com:{PUBLIC}",
    ],
    "ungranted": [
        "https://api.example.com/",
        "--plugin",
        "offline",
        "--resolve",
        f"api.example.com:{PUBLIC}",
    ],
}


def _workspace(root: Path) -> Path:
    """Two plugin folders and a tether.toml; importing `fetcher` would leave a marker."""
    marker = root / "imported"
    write_plugin(
        root / "plugins",
        "fetcher",
        f"open({str(marker)!r}, 'w').close()\nfrom tether import Plugin\nplugin = Plugin()\n",
        capabilities=["http.outbound"],
        extra='outbound_hosts = ["api.example.com", "*.corp.example.com"]\n',
    )
    write_plugin(
        root / "plugins",
        "offline",
        capabilities=["http.outbound"],
        extra='outbound_hosts = ["api.example.com"]\n',
    )
    write_policy(
        root,
        textwrap.dedent(
            """
            [plugins.fetcher]
            grant = ["http.outbound"]
            outbound_hosts = ["api.example.com", "*.example.org"]
            private_hosts = ["10.0.0.5"]

            [plugins.offline]
            grant = []
            outbound_hosts = ["api.example.com"]
            """
        ),
    )
    return marker


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("egress-cli")
    return root, _workspace(root)


def invoke(args: list[str], root: Path) -> Ran:
    """The command in this process (typer's runner): each case costs milliseconds, not the
    second of a cold interpreter start. The installed script is run below as well."""
    if "--plugin" in args:
        args = [*args, "--config", str(root / "tether.toml")]
    result = CliRunner().invoke(app, ["egress", "check", *args])
    return Ran(result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize(("args", "why"), BLOCKED, ids=[a[0] for a, _ in BLOCKED])
def test_blocked_prints_the_reason_and_exits_1(
    workspace: tuple[Path, Path], args: list[str], why: str
) -> None:
    proc = invoke(args, workspace[0])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("blocked: ")
    assert why in proc.stdout


@pytest.mark.parametrize("args", ALLOWED, ids=[a[0] for a in ALLOWED])
def test_allowed_prints_allowed_and_exits_0(workspace: tuple[Path, Path], args: list[str]) -> None:
    proc = invoke(args, workspace[0])
    assert (proc.returncode, proc.stdout.strip()) == (0, "allowed"), proc.stdout + proc.stderr
    assert " -> " in proc.stderr  # the checked addresses, on stderr


@pytest.mark.parametrize(("args", "why"), USAGE, ids=[w for _, w in USAGE])
def test_usage_errors_exit_2(workspace: tuple[Path, Path], args: list[str], why: str) -> None:
    proc = invoke(args, workspace[0])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert why in proc.stderr


def test_plugin_uses_its_effective_allowlist_and_private_hosts(
    workspace: tuple[Path, Path],
) -> None:
    root, marker = workspace
    ok = invoke(PLUGIN["private-opened"], root)
    assert (ok.returncode, ok.stdout.strip()) == (0, "allowed"), ok.stdout + ok.stderr
    closed = invoke(PLUGIN["private-closed"], root)
    assert closed.returncode == 1
    assert "resolves to 10.0.0.6, a private address" in closed.stdout
    # In the manifest but not in the policy: outside the intersection.
    corp = invoke(PLUGIN["manifest-only"], root)
    assert corp.returncode == 1
    assert "not in the outbound allowlist (api.example.com)" in corp.stdout
    ungranted = invoke(PLUGIN["ungranted"], root)
    assert ungranted.returncode == 1
    assert "blocked: plugin 'offline' is not granted http.outbound" in ungranted.stdout
    assert not marker.exists()  # the plugin's code was never imported


@pytest.mark.timeout(90)
def test_the_installed_script(workspace: tuple[Path, Path]) -> None:
    """The real `tether` script in subprocesses (run concurrently: each is a cold start)."""
    root, marker = workspace
    cases = {
        "blocked": (["http://0x7f.1/"], 1, "blocked: 127.0.0.1 is a loopback address"),
        "allowed": (
            ["https://api.example.com/", "--resolve", f"api.example.com:{PUBLIC}"],
            0,
            "allowed",
        ),
        "usage": (["http://x.example.com/", "--resolve", "nonsense"], 2, "HOST:ADDRESS"),
        "plugin": (PLUGIN["private-opened"], 0, "allowed"),
    }
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        futures = {k: pool.submit(run, *args, cwd=root) for k, (args, _, _) in cases.items()}
        done = {k: f.result() for k, f in futures.items()}
    for key, (_, code, text) in cases.items():
        proc = done[key]
        assert proc.returncode == code, f"{key}: {proc.stdout}{proc.stderr}"
        assert text in (proc.stderr if code == 2 else proc.stdout), key
    assert not marker.exists()
