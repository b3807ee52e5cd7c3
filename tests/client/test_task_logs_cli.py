"""Task logs from the SDK's AsyncClient and the `conveyor logs` command."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from click.testing import CliRunner, Result

from conveyor import AsyncClient, Client
from conveyor._cli_commands import cli
from tests.support.log_tasks import gates, registry
from tests.support.server import ServerThread, test_config


@pytest.fixture(scope="module")
def log_server() -> Iterator[ServerThread]:
    server = ServerThread(test_config(), registry).start()
    yield server
    server.stop()


@pytest.fixture
def sdk(log_server: ServerThread) -> Iterator[Client]:
    with Client(log_server.address, timeout=10) as client:
        yield client


def run(server: ServerThread, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--address", server.address, "--timeout", "5", *args])


def test_logs_prints_each_line(log_server: ServerThread, sdk: Client) -> None:
    task = sdk.submit("chatty", {"lines": 1, "fail_until": 2}, max_attempts=2).wait(timeout=10)
    result = run(log_server, "logs", task.id)
    assert result.exit_code == 0, result.output
    printed = result.stdout.splitlines()
    assert len(printed) == 3
    assert printed[0].endswith("#1 INFO     attempt 1 line 1")
    assert printed[1].endswith("#1 ERROR    giving up on attempt 1")
    assert printed[2].endswith("#2 INFO     attempt 2 line 1")

    only = run(log_server, "--json", "logs", task.id, "--attempt", "2")
    assert only.exit_code == 0, only.output
    [line] = [json.loads(text) for text in only.stdout.splitlines()]
    assert line["attempt"] == 2 and line["sequence"] == 1 and line["level"] == "INFO"
    assert line["message"] == "attempt 2 line 1"


def test_logs_follow_ends_with_the_task(log_server: ServerThread, sdk: Client) -> None:
    gate = gates[name := uuid.uuid4().hex] = threading.Event()
    handle = sdk.submit("gated", {"gate": name})
    # The command runs until the task ends: the gate opens once it printed
    # the first line.
    assert next(sdk.follow_logs(handle.id, poll_interval=0.02)).message == "started"
    gate.set()
    result = run(log_server, "logs", handle.id, "--follow")
    assert result.exit_code == 0, result.output
    assert [text.split()[-1] for text in result.stdout.splitlines()] == ["started", "finishing"]


def test_logs_of_an_unknown_task_fail(log_server: ServerThread) -> None:
    result = run(log_server, "logs", "t_" + "0" * 26)
    assert result.exit_code == 1
    assert "NOT_FOUND" in result.stderr


@pytest.fixture
async def async_sdk(log_server: ServerThread) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(log_server.address, timeout=10) as client:
        yield client


async def test_async_client_reads_and_follows(async_sdk: AsyncClient) -> None:
    gate = gates[name := uuid.uuid4().hex] = threading.Event()
    handle = await async_sdk.submit("gated", {"gate": name})
    following = async_sdk.follow_logs(handle.id, poll_interval=0.02)
    first = await anext(following)
    assert first.message == "started"
    gate.set()
    assert [line.message async for line in following] == ["finishing"]
    assert [line.message async for line in async_sdk.logs(handle.id)] == ["started", "finishing"]
