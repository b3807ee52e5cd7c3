"""Every Python snippet in README.md and docs/*.md runs as pasted into a file,
against a real server: the test rewrites the address they dial,
localhost:50051, to its own server's.

A snippet that cannot run here says so on the line before its fence:
`<!-- snippet: not run (why) -->`; it must still compile.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCUMENTED_ADDRESS = "localhost:50051"
# Each snippet runs in a Python process of its own.
pytestmark = pytest.mark.slow

NOT_RUN = re.compile(r"^<!-- snippet: not run \(.+\) -->$")


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int
    code: str
    run: bool

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_snippets(page: Path) -> list[Snippet]:
    found: list[Snippet] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            start = index
            body: list[str] = []
            index += 1
            while lines[index].strip() != "```":
                body.append(lines[index])
                index += 1
            before = next((line for line in reversed(lines[:start]) if line.strip()), "")
            found.append(
                Snippet(page, start + 1, "\n".join(body) + "\n", not NOT_RUN.match(before))
            )
        index += 1
    return found


SNIPPETS = [snippet for page in PAGES for snippet in python_snippets(page)]


def test_snippets_are_found() -> None:
    names = [snippet.name for snippet in SNIPPETS]
    assert sum(name.startswith("README.md") for name in names) >= 3
    assert any(not snippet.run for snippet in SNIPPETS)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[snippet.name for snippet in SNIPPETS])
def test_snippet_runs_as_pasted(snippet: Snippet, server: Any, tmp_path: Path) -> None:
    compile(snippet.code, snippet.name, "exec")
    if not snippet.run:
        return
    program = tmp_path / "snippet.py"
    program.write_text(snippet.code.replace(DOCUMENTED_ADDRESS, server.address))
    result = subprocess.run(
        [sys.executable, str(program)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert result.returncode == 0, f"{snippet.name} failed:\n{result.stderr}"
