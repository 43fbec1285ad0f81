"""Every Python block in the README and docs/ runs, each in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
EXPECT = re.compile(r"# -> (.+)$", re.M)


def _blocks() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for i, match in enumerate(BLOCK.finditer(doc.read_text())):
            out.append((f"{doc.name}#{i + 1}", match.group(1)))
    return out


BLOCKS = _blocks()


def test_docs_have_examples() -> None:
    names = {name.split("#")[0] for name, _ in BLOCKS}
    assert {"README.md", "plugins.md", "embedding.md"} <= names


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "code"), BLOCKS, ids=[n for n, _ in BLOCKS])
def test_doc_block_runs(name: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=25
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stderr}"
    # A `# -> text` comment on a line states output the block must print.
    for expected in EXPECT.findall(code):
        assert expected.strip() in proc.stdout, f"{name}: expected {expected!r} in output"
