"""The curl examples of README.md and docs/http.md run as pasted, with curl,
against a real server with only the built-in task types, and succeed."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor_server import HandlerRegistry
from tests.support.server import ServerThread, test_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED_ADDRESS = "localhost:8080"
EXAMPLE_ID = "Qb7u1tq0SxmKp4Yw2dE9Zg"
SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def curl_commands(page: Path, section: str) -> list[str]:
    """The curl lines of the sh blocks in one section of a page."""
    text = page.read_text(encoding="utf-8")
    start = text.index(section)
    following = re.search(r"^#{2,3} ", text[start + len(section) :], re.MULTILINE)
    end = start + len(section) + following.start() if following else len(text)
    return [
        line
        for block in SH_BLOCK.findall(text[start:end])
        for line in block.splitlines()
        if line.startswith("curl ")
    ]


PAGES = {
    "README.md": curl_commands(ROOT / "README.md", "### 5. HTTP and curl"),
    "docs/http.md": curl_commands(ROOT / "docs" / "http.md", "## Examples"),
}


@pytest.fixture(scope="module")
def bare_server() -> Iterator[ServerThread]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    thread = ServerThread(test_config(), registry=HandlerRegistry()).start()
    yield thread
    thread.stop()


def run(command: str, server: ServerThread, task_id: str | None) -> str:
    assert server.server is not None
    command = command.replace(DOCUMENTED_ADDRESS, f"127.0.0.1:{server.server.http_port}")
    if task_id is not None:
        command = command.replace(EXAMPLE_ID, task_id)
    result = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout


@pytest.mark.parametrize("page", list(PAGES))
def test_the_curl_examples_run_as_pasted(page: str, bare_server: ServerThread) -> None:
    commands = PAGES[page]
    assert commands and commands[0].startswith("curl -s localhost:8080/v1/tasks -H")
    task_id: str | None = None
    for command in commands:
        output = run(command, bare_server, task_id)
        if command.startswith("curl -sN"):
            events = [json.loads(line[6:]) for line in output.splitlines() if line[:6] == "data: "]
            assert events[-1]["task"]["state"] == "TASK_STATE_SUCCEEDED", output
            continue
        body = json.loads(output)
        assert "code" not in body, (command, body)  # not a google.rpc.Status
        if task_id is None:
            task_id = body["task"]["id"]
    assert task_id is not None
    assert EXAMPLE_ID in " ".join(commands)
