"""`conveyor types` and `conveyor workers` against the real test server."""

from __future__ import annotations

import json
import os
from typing import Any

from click.testing import CliRunner, Result

from conveyor._cli_commands import cli


def run(server: Any, *args: str, as_json: bool = False) -> Result:
    options = ["--address", server.address, "--timeout", "5"]
    if as_json:
        options.append("--json")
    return CliRunner().invoke(cli, [*options, *args])


def test_types_table_shows_workers_descriptions_and_examples(server: Any) -> None:
    result = run(server, "types")
    assert result.exit_code == 0, result.output
    sleep = next(line for line in result.output.splitlines() if line.startswith("sleep "))
    assert " 1 " in sleep
    assert "Wait `seconds`, reporting" in sleep  # the rest wraps
    assert '{"seconds": 2}' in sleep


def test_types_json(server: Any) -> None:
    result = run(server, "types", as_json=True)
    assert result.exit_code == 0, result.output
    types = {t["name"]: t for t in json.loads(result.output)}
    assert types["sleep"]["workers"] == 1
    assert types["sleep"]["examplePayload"] == {"seconds": 2}
    assert "examplePayload" not in types["echo"]


def test_workers_table_and_json(server: Any) -> None:
    table = run(server, "workers")
    assert table.exit_code == 0, table.output
    assert f":{os.getpid()}:" in table.output
    assert "0/" in table.output or "1/" in table.output

    listed = run(server, "workers", as_json=True)
    assert listed.exit_code == 0, listed.output
    [worker] = json.loads(listed.output)
    assert int(worker["pid"]) == os.getpid()
    assert "sleep" in worker["taskTypes"]
    assert "heartbeatTime" in worker


def _type_line(result: Result, name: str) -> str:
    return next(line for line in result.output.splitlines() if line.startswith(f"{name} "))


def test_types_shows_running_pending_and_limits(make_server: Any) -> None:
    server = make_server()
    limited = run(server, "types", "limits", "echo", "--max-running", "4", "--rate", "2.5")
    assert limited.exit_code == 0, limited.output
    assert "4 running, 2.5/s" in _type_line(limited, "echo")

    run(server, "types", "limits", "echo", "--max-per-key", "1", "--burst", "5")
    line = _type_line(run(server, "types"), "echo")
    assert "4 running, 1 per key, 2.5/s (burst 5)" in line

    listed = run(server, "types", as_json=True)
    echo = next(t for t in json.loads(listed.output) if t["name"] == "echo")
    assert echo["limits"] == {
        "maxRunning": 4,
        "maxRunningPerKey": 1,
        "maxStartsPerSecond": 2.5,
        "burst": 5,
    }

    restored = run(server, "types", "limits", "echo", "--restore", as_json=True)
    assert restored.exit_code == 0, restored.output
    [echo] = json.loads(restored.output)
    assert "limits" not in echo or echo["limits"] == {}


def test_types_pause_and_resume(make_server: Any) -> None:
    server = make_server()
    paused = run(server, "types", "pause", "echo")
    assert paused.exit_code == 0, paused.output
    assert "echo (paused)" in paused.output
    submitted = run(server, "submit", "echo", "--payload", '{"n": 1}')
    task_id = submitted.stdout.strip()
    assert "echo (paused)" in run(server, "types").output
    listed = run(server, "types", as_json=True)
    echo = next(t for t in json.loads(listed.output) if t["name"] == "echo")
    assert (echo["paused"], int(echo["pending"])) == (True, 1)
    waiting = run(server, "get", task_id)
    assert "TYPE_PAUSED" in waiting.output

    resumed = run(server, "types", "resume", "echo", as_json=True)
    assert resumed.exit_code == 0, resumed.output
    assert not json.loads(resumed.output)[0].get("paused", False)
    assert run(server, "watch", task_id).exit_code == 0


def test_types_limits_needs_a_limit_or_restore(server: Any) -> None:
    assert run(server, "types", "limits", "echo").exit_code == 2
    assert run(server, "types", "limits", "echo", "--restore", "--burst", "1").exit_code == 2
    refused = run(server, "types", "limits", "echo", "--rate", "-1")
    assert refused.exit_code == 2
