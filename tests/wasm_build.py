"""Build Python guests into components with componentize-py, cached by content hash.

The cache (`$TETHER_TEST_WASM_CACHE`, default `~/.cache/tether-test-wasm`) is keyed by the
sha256 of the guest's source, the WIT world and componentize-py's version, so only the first
run pays the build (about 5-15 s per component); builds run in parallel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIT = ROOT / "wit"
HELLO = ROOT / "examples" / "wasm" / "hello"
CACHE = Path(os.environ.get("TETHER_TEST_WASM_CACHE", Path.home() / ".cache" / "tether-test-wasm"))

GUESTS = Path(__file__).resolve().parent / "wasm_guests"
"""Test-only guests: each `<name>.py` here is built as the component `<name>`."""


def place(source: Path, target: Path) -> None:
    """Put a built component or compiled artifact (tens of MB each) where a test's host
    expects it: a hard link where the filesystem allows, else a copy. Hosts only read them
    (a damaged artifact is unlinked, never rewritten in place)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _digest(sources: dict[str, bytes]) -> str:
    h = hashlib.sha256(version("componentize-py").encode())
    for wit in sorted(WIT.glob("*.wit")):
        h.update(wit.read_bytes())
    for name in sorted(sources):
        h.update(name.encode() + b"\0" + sources[name])
    return h.hexdigest()[:32]


def _start_build(app_dir: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    exe = Path(sys.executable).parent / "componentize-py"
    cmd = [str(exe), "-d", str(WIT), "-w", "plugin", "componentize", "app"]
    cmd += ["-p", str(app_dir), "-o", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def build_all() -> dict[str, Path]:
    """Paths of the built components: `hello` (the example) and one per file in
    tests/wasm_guests/ (built now, in parallel, unless cached)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    guests: dict[str, tuple[Path, dict[str, bytes]]] = {
        "hello": (HELLO, {"app.py": (HELLO / "app.py").read_bytes()})
    }
    for source in sorted(GUESTS.glob("*.py")):
        work = CACHE / f"{source.stem}-src"
        work.mkdir(exist_ok=True)
        code = source.read_bytes()
        if not (work / "app.py").is_file() or (work / "app.py").read_bytes() != code:
            (work / "app.py").write_bytes(code)
        guests[source.stem] = (work, {"app.py": code})
    out: dict[str, Path] = {}
    running: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
    for name, (folder, sources) in guests.items():
        target = CACHE / f"{name}-{_digest(sources)}.wasm"
        out[name] = target
        if not target.is_file():
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            running.append((name, tmp, _start_build(folder, tmp)))
    for name, tmp, proc in running:
        log, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"building {name} failed:\n{log.decode(errors='replace')}")
        os.replace(tmp, out[name])
    return out
