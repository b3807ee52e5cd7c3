"""The README's terminal tour runs as pasted: every `$ grpcurl ...` and
`$ conveyor ...` command of its console blocks, against a real server with
only the built-in task types, as a fresh `conveyor-server` has.

The test rewrites the address the commands dial (localhost:50051) to its
server's, and the example task ids to ids of real tasks; the output shown
after a command must match where it does not depend on time or ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor_server import HandlerRegistry
from tests.support.server import ServerThread, grpcurl_path, test_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCUMENTED_ADDRESS = "localhost:50051"
# The example ids the README shows, each standing for a task the tour
# created: one that runs to its end (watched), one still waiting (got,
# cancelled and retried).
WATCHED_ID = "xmF8M2DIYa9HX9hc8LSDlw"
WAITING_ID = "1pA3RwQ7bEkJ2Vd9sX3nTg"


def console_commands(page: Path) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown after it) of every `$ ` line in the
    page's console blocks, continuation lines joined."""
    commands: list[tuple[str, list[str]]] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    inside = False
    for line in lines:
        if line.strip().startswith("```"):
            inside = line.strip() == "```console"
            continue
        if not inside:
            continue
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands and commands[-1][0].endswith("\\"):
            command, shown = commands[-1]
            commands[-1] = (command[:-1].rstrip() + " " + line.strip(), shown)
        elif commands and line.strip():
            commands[-1][1].append(line)
    return commands


COMMANDS = console_commands(README)


@pytest.fixture(scope="module")
def bare_server() -> Iterator[ServerThread]:
    """A server with the built-in task types only, as `conveyor-server` starts."""
    thread = ServerThread(test_config(), registry=HandlerRegistry()).start()
    yield thread
    thread.stop()


def run(
    command: str, server: ServerThread, ids: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)
    grpcurl_dir = str(Path(grpcurl_path()).parent)
    env = {**os.environ, "PATH": os.pathsep.join([bin_dir, grpcurl_dir, os.environ["PATH"]])}
    env.pop("CONVEYOR_ADDRESS", None)
    # The CLI dials localhost:50051 unless told otherwise, as the tour assumes.
    env["CONVEYOR_ADDRESS"] = server.address
    command = command.replace(DOCUMENTED_ADDRESS, server.address)
    for example, real in ids.items():
        command = command.replace(example, real)
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_tour_has_commands() -> None:
    tools = {command.split()[0] for command, _ in COMMANDS}
    assert tools == {"grpcurl", "conveyor"}
    assert len(COMMANDS) >= 8


def submit(server: ServerThread, request: str) -> str:
    submitted = subprocess.run(
        [
            grpcurl_path(),
            "-plaintext",
            "-d",
            request,
            server.address,
            "conveyor.v1.TaskService/SubmitTask",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    task_id: str = json.loads(submitted.stdout)["task"]["id"]
    return task_id


def test_the_readme_tour_runs_as_pasted(bare_server: ServerThread) -> None:
    ids = {
        WATCHED_ID: submit(bare_server, '{"type": "sleep", "payload": {"seconds": 0.1}}'),
        WAITING_ID: submit(
            bare_server, '{"type": "sleep", "payload": {"seconds": 1}, "delay": "3600s"}'
        ),
    }
    for command, shown in COMMANDS:
        result = run(command, bare_server, ids)
        if shown and shown[0] == "ERROR:":
            # The documented refusal: grpcurl exits non-zero and prints it.
            assert result.returncode != 0, command
            assert [line.strip() for line in result.stderr.splitlines()][:3] == [
                line.strip() for line in shown[:3]
            ], command
            continue
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        if command.endswith(" list") or "grpc.health.v1.Health/Check" in command:
            # Output that depends on neither time nor ids is shown exactly.
            assert result.stdout.split() == " ".join(shown).split(), command
        elif "SubmitTask" in command:
            assert json.loads(result.stdout)["task"]["state"] == "TASK_STATE_PENDING"
