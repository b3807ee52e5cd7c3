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
