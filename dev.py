#!/usr/bin/env python3
"""Developer entry point, needing only Python: `python3 dev.py serve` or `python3 dev.py test`.

It makes a virtual environment in .venv (once), installs Tether with its test tools, and then
runs the example host or the whole test suite (lint, types, tests, docs examples).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".tether-installed"


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def ensure_env() -> None:
    """Create .venv and install the project (again when pyproject.toml changed)."""
    if not PY.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    pyproject = (ROOT / "pyproject.toml").stat().st_mtime
    if not STAMP.exists() or STAMP.stat().st_mtime < pyproject:
        run(PY, "-m", "pip", "install", "-q", "--upgrade", "pip")
        run(PY, "-m", "pip", "install", "-q", "-e", ".[dev]")
        STAMP.touch()


def serve(args: list[str]) -> None:
    """`tether serve` with the example plugins (./tether.toml) on the embedded SQLite store;
    extra arguments go to `tether serve` (e.g. --port 9000). Stop it with Ctrl+C."""
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C reaches `tether serve` too
        run(BIN / "tether", "serve", "--config", ROOT / "tether.toml", *args)


def test(args: list[str]) -> None:
    run(BIN / "ruff", "check", "src", "tests", "benchmarks", "examples", "dev.py")
    run(BIN / "ruff", "format", "--check", "src", "tests", "benchmarks", "examples", "dev.py")
    run(BIN / "mypy")
    run(PY, "-m", "pytest", *args)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("serve", "test"):
        print(__doc__)
        sys.exit(2)
    ensure_env()
    try:
        {"serve": serve, "test": test}[sys.argv[1]](sys.argv[2:])
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode or 1)


if __name__ == "__main__":
    main()
