"""Task logs: what handlers write through ctx.logger, kept per attempt and
read with GetTaskLogs, through the real server and SDK, on every store."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from conveyor import Client, TaskNotFound, TaskState
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from conveyor_server.stores import LogCursor
from conveyor_server.stores._logs import MAX_LINES_PER_ATTEMPT, MAX_MESSAGE_BYTES
from tests.support.log_tasks import gates, registry
from tests.support.server import ServerThread, test_config


@pytest.fixture
def thread(store_url: str) -> Iterator[ServerThread]:
    server = ServerThread(test_config(store=store_url), registry).start()
    yield server
    server.stop()


@pytest.fixture
def client(thread: ServerThread) -> Iterator[Client]:
    with Client(thread.address, timeout=10) as sdk:
        yield sdk


@pytest.fixture
def stub(thread: ServerThread) -> Iterator[pb_grpc.TaskServiceStub]:
    with grpc.insecure_channel(thread.address) as channel:
        yield pb_grpc.TaskServiceStub(channel)


def test_lines_of_each_attempt_in_order(client: Client) -> None:
    task = client.submit("chatty", {"lines": 2, "fail_until": 2}, max_attempts=2).wait(timeout=10)
    assert task.state is TaskState.SUCCEEDED

    lines = list(client.logs(task.id))
    assert [(line.attempt, line.sequence, line.level, line.message) for line in lines] == [
        (1, 1, "INFO", "attempt 1 line 1"),
        (1, 2, "INFO", "attempt 1 line 2"),
        (1, 3, "ERROR", "giving up on attempt 1"),
        (2, 1, "INFO", "attempt 2 line 1"),
        (2, 2, "INFO", "attempt 2 line 2"),
    ]
    assert lines[0].time <= lines[-1].time
    assert [line.message for line in client.logs(task.id, attempt=2)] == [
        "attempt 2 line 1",
        "attempt 2 line 2",
    ]


def test_async_handlers_lines_are_kept(client: Client) -> None:
    task = client.submit("async_chatty", {}).wait(timeout=10)
    assert task.state is TaskState.SUCCEEDED
    assert [line.message for line in client.logs(task.id)] == ["awaiting", "awaited"]


def test_an_attempt_keeps_its_latest_lines_and_counts_the_dropped(
    client: Client, stub: pb_grpc.TaskServiceStub
) -> None:
    over = 5
    task = client.submit("chatty", {"lines": MAX_LINES_PER_ATTEMPT + over}).wait(timeout=30)

    lines = list(client.logs(task.id))
    assert len(lines) == MAX_LINES_PER_ATTEMPT
    assert lines[0].sequence == over + 1
    assert lines[-1].message == f"attempt 1 line {MAX_LINES_PER_ATTEMPT + over}"
    response = stub.GetTaskLogs(pb.GetTaskLogsRequest(id=task.id, page_size=1))
    assert [(d.attempt, d.lines) for d in response.dropped] == [(1, over)]


def test_long_messages_are_cut_and_tracebacks_kept(client: Client) -> None:
    task = client.submit("long_line", {}).wait(timeout=10)
    cut, failed = list(client.logs(task.id))
    assert cut.level == "WARNING"
    assert len(cut.message.encode()) == MAX_MESSAGE_BYTES
    assert failed.level == "ERROR"
    assert failed.message.startswith("row 7 failed\nTraceback")
    assert failed.message.endswith("ValueError: bad row")


def test_pages_continue_after_the_last_line(client: Client, stub: pb_grpc.TaskServiceStub) -> None:
    task = client.submit("chatty", {"lines": 5}).wait(timeout=10)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = stub.GetTaskLogs(
            pb.GetTaskLogsRequest(id=task.id, page_size=2, page_token=token)
        )
        pages += 1
        seen += [line.message for line in response.lines]
        token = response.next_page_token
        if not token:
            break
    assert seen == [f"attempt 1 line {n}" for n in range(1, 6)]
    assert pages == 3
    # A token is good only for the request it was minted for.
    first = stub.GetTaskLogs(pb.GetTaskLogsRequest(id=task.id, page_size=2))
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetTaskLogs(
            pb.GetTaskLogsRequest(id=task.id, attempt=1, page_token=first.next_page_token)
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in str(caught.value.details())


def test_follow_reads_until_the_task_ends(client: Client, stub: pb_grpc.TaskServiceStub) -> None:
    gate = gates[name := uuid.uuid4().hex] = threading.Event()
    handle = client.submit("gated", {"gate": name})
    following = client.follow_logs(handle.id, poll_interval=0.02)
    assert next(following).message == "started"
    # Unfinished: a token to follow with, even with no line after it.
    response = stub.GetTaskLogs(pb.GetTaskLogsRequest(id=handle.id))
    assert [line.message for line in response.lines] == ["started"]
    assert response.next_page_token
    gate.set()
    assert [line.message for line in following] == ["finishing"]
    assert client.get(handle.id).state is TaskState.SUCCEEDED


def test_lines_go_with_the_task(thread: ServerThread, client: Client) -> None:
    task = client.submit("chatty", {"lines": 2}).wait(timeout=10)
    assert len(list(client.logs(task.id))) == 2
    assert task.end_time is not None
    assert thread.server is not None
    store = thread.server.store

    purged = thread.call(lambda: store.purge(time.time() + 1))
    assert purged >= 1
    with pytest.raises(TaskNotFound):
        list(client.logs(task.id))
    page = thread.call(lambda: store.read_logs(task.id, 0, LogCursor(), 10))
    assert page.lines == [] and page.dropped == {}


def test_bad_requests_say_what_to_fix(stub: pb_grpc.TaskServiceStub, client: Client) -> None:
    task = client.submit("chatty", {}).wait(timeout=10)
    for request, field in [
        (pb.GetTaskLogsRequest(id=task.id, attempt=-1), "attempt"),
        (pb.GetTaskLogsRequest(id=task.id, page_size=-1), "page_size"),
        (pb.GetTaskLogsRequest(id=task.id, page_token="nonsense"), "page_token"),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetTaskLogs(request)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in str(caught.value.details())
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetTaskLogs(pb.GetTaskLogsRequest(id="t_" + "0" * 26))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND


def test_another_tenants_task_logs_are_not_found(store_url: str, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice-token-0123456789 team-a\nbob-token-0123456789 team-b\n")
    server = ServerThread(
        test_config(store=store_url, auth_tokens_file=str(tokens)), registry
    ).start()
    try:
        with (
            Client(server.address, token="alice-token-0123456789", timeout=10) as alice,
            Client(server.address, token="bob-token-0123456789", timeout=10) as bob,
        ):
            task = alice.submit("chatty", {"lines": 1}).wait(timeout=10)
            assert [line.message for line in alice.logs(task.id)] == ["attempt 1 line 1"]
            with pytest.raises(TaskNotFound):
                list(bob.logs(task.id))
            with pytest.raises(TaskNotFound):
                list(bob.follow_logs(task.id))
    finally:
        server.stop()
