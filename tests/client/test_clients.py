"""Both clients against a real in-process server: every test runs on the sync
`Client`, then on the `AsyncClient` through the blocking adapter of conftest.py."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from conveyor import (
    AlreadyExists,
    AsyncTaskHandle,
    Client,
    ConveyorError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    Task,
    TaskFailed,
    TaskHandle,
    TaskNotFound,
    TaskSpec,
    TaskState,
    TaskView,
    Unavailable,
    WaitTimeout,
)

# (ScriptedService, address) from the `scripted` fixture in conftest.py.
Scripted = tuple[Any, str]
# The `connect` fixture of conftest.py: connect(target, **kwargs) opens either client.
Connect = Callable[..., AbstractContextManager[Client]]


@pytest.fixture
def client(each_client: Client) -> Client:
    """In this module, `client` is each kind of client in turn (conftest's is sync only)."""
    return each_client


def _is_async(client: Client) -> bool:
    return not isinstance(client, Client)


def _wait_until_running(client: Client, task_id: str) -> Task:
    for task in client.watch(task_id):
        if task.state is TaskState.RUNNING:
            return task
    raise AssertionError(f"task {task_id} never ran")


def test_submit_returns_a_pending_handle_and_result(client: Client) -> None:
    handle = client.submit("echo", {"n": 3, "words": ["a", "b"]}, labels={"team": "data"})
    assert isinstance(handle, AsyncTaskHandle if _is_async(client) else TaskHandle)
    assert handle.id == handle.task.id
    assert handle.task.type == "echo"
    assert handle.task.payload == {"n": 3, "words": ["a", "b"]}
    assert handle.task.labels == {"team": "data"}
    assert handle.task.create_time is not None
    assert handle.task.create_time.tzinfo is not None
    assert abs((datetime.now(UTC) - handle.task.create_time).total_seconds()) < 60

    assert handle.result(timeout=10) == {"n": 3, "words": ["a", "b"]}


def test_get_and_wait(client: Client) -> None:
    handle = client.submit("echo", {"x": "y"})
    fetched = client.get(handle.id)
    assert fetched.id == handle.id
    assert fetched.payload == {"x": "y"}

    final = client.wait(handle.id, timeout=10)
    assert final.state is TaskState.SUCCEEDED
    assert final.is_terminal
    assert final.result == {"x": "y"}
    assert final.end_time is not None
    assert handle.get().state is TaskState.SUCCEEDED
    assert handle.get().version == final.version
    assert handle.wait(timeout=10).version == final.version


def test_builtin_csv_stats(client: Client) -> None:
    result = client.submit("csv_stats", {"csv": "a,b\n1,x\n3,y\n"}).result(timeout=10)
    assert isinstance(result, dict)
    assert result["rows"] == 2
    columns = result["columns"]
    assert isinstance(columns, dict)
    assert isinstance(columns["a"], dict)
    assert isinstance(columns["b"], dict)
    assert {key: columns["a"][key] for key in ("count", "min", "max", "mean")} == {
        "count": 2,
        "min": 1,
        "max": 3,
        "mean": 2,
    }
    assert {key: columns["b"][key] for key in ("count", "distinct")} == {"count": 2, "distinct": 2}


@pytest.mark.parametrize("payload", [[1, 2], "text", 3, ("a", "b")])
def test_a_payload_that_is_not_an_object_is_a_type_error(client: Client, payload: Any) -> None:
    with pytest.raises(TypeError, match=r"payload must be a mapping \(a JSON object\)") as caught:
        client.submit("echo", payload)
    assert type(payload).__name__ in str(caught.value)
    with pytest.raises(TypeError, match=r"payload must be a mapping"):
        client.submit_batch([TaskSpec("echo", payload)])


def test_task_types_name_descriptions_workers_and_examples(client: Client) -> None:
    types = {t.name: t for t in client.task_types()}
    assert {"echo", "sleep", "csv_stats", "wait_for_cancel"} <= set(types)
    assert list(types) == sorted(types)
    sleep = types["sleep"]
    assert sleep.description.startswith("Wait `seconds`, reporting progress")
    assert sleep.workers == 1  # the server itself runs tasks
    assert sleep.example_payload == {"seconds": 2}
    assert client.submit("sleep", sleep.example_payload).wait(timeout=10).state is (
        TaskState.SUCCEEDED
    )
    assert types["echo"].example_payload is None
    assert types["echo"].raw.name == "echo"


def test_workers_list_the_server_itself(client: Client) -> None:
    [worker] = client.workers()
    assert worker.pid == os.getpid()  # the in-process test server
    assert worker.host == socket.gethostname()
    assert {"echo", "sleep", "csv_stats"} <= set(worker.task_types)
    assert worker.threads > 0
    assert worker.start_time is not None and worker.heartbeat_time is not None
    assert worker.start_time <= worker.heartbeat_time <= datetime.now(UTC)
    assert worker.raw.id == worker.id


def test_submit_batch_keeps_order(client: Client, run_label: dict[str, str]) -> None:
    handles = client.submit_batch(
        [TaskSpec("echo", {"i": i}, labels=run_label, priority=i) for i in range(3)]
    )
    assert [handle.task.payload for handle in handles] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert len({handle.id for handle in handles}) == 3
    assert [handle.result(timeout=10) for handle in handles] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_submit_batch_is_all_or_nothing(client: Client, run_label: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.submit_batch([TaskSpec("echo", labels=run_label), TaskSpec("", labels=run_label)])
    assert "requests[1].type" in [field for field, _ in caught.value.field_violations]
    assert list(client.list(labels=run_label)) == []


def test_submit_batch_names_the_bad_request(client: Client) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.submit_batch([TaskSpec("echo"), TaskSpec("echo"), TaskSpec("")])
    assert "requests[2].type" in [field for field, _ in caught.value.field_violations]


def test_watch_streams_increasing_versions_until_terminal(client: Client) -> None:
    handle = client.submit("sleep", {"seconds": 0.5})
    snapshots = list(handle.watch())
    versions = [task.version for task in snapshots]
    assert versions == sorted(set(versions))
    assert snapshots[-1].state is TaskState.SUCCEEDED
    assert all(not task.is_terminal for task in snapshots[:-1])
    assert {TaskState.SUCCEEDED} <= {task.state for task in snapshots}
    assert list(handle.watch(since_version=versions[-1])) == []


def test_watch_resumes_after_a_version(client: Client) -> None:
    handle = client.submit("echo", {})
    final = handle.wait(timeout=10)
    assert [task.version for task in client.watch(handle.id)] == [final.version]
    assert list(client.watch(handle.id, since_version=final.version)) == []


def test_list_pages_and_filters(client: Client, run_label: dict[str, str]) -> None:
    ids = [client.submit("echo", {"i": i}, labels=run_label).id for i in range(5)]
    for task_id in ids:
        client.wait(task_id, timeout=10)

    listed = list(client.list(labels=run_label, page_size=2))
    assert [task.id for task in listed] == ids[::-1]  # newest first

    assert [task.id for task in client.list(labels=run_label, page_size=2, limit=3)] == ids[:1:-1]
    assert list(client.list(labels=run_label, limit=0)) == []
    assert len(list(client.list(labels=run_label, type="echo", states=[TaskState.SUCCEEDED]))) == 5
    assert list(client.list(labels=run_label, states=[TaskState.FAILED])) == []
    assert list(client.list(labels=run_label, type="sleep")) == []


def test_list_views(each_client: Client, run_label: dict[str, str]) -> None:
    handle = each_client.submit("echo", {"k": "v"}, labels=run_label)
    done = each_client.wait(handle.id, timeout=10)
    [basic] = each_client.list(labels=run_label, view=TaskView.BASIC)
    assert (basic.id, basic.state, basic.version) == (done.id, done.state, done.version)
    assert basic.payload == {} and basic.result is None
    [full] = each_client.list(labels=run_label, view=TaskView.FULL)
    assert full.payload == {"k": "v"} and full.result == {"k": "v"}
    # FULL by default, as before views existed.
    assert list(each_client.list(labels=run_label)) == [full]


def test_cancel_pending_task(client: Client) -> None:
    handle = client.submit("echo", {}, delay=60)
    assert handle.task.state is TaskState.PENDING
    cancelled = handle.cancel()
    assert cancelled.state is TaskState.CANCELLED
    assert client.cancel(handle.id).state is TaskState.CANCELLED  # a no-op the second time
    with pytest.raises(TaskFailed) as caught:
        handle.result(timeout=10)
    assert caught.value.task.state is TaskState.CANCELLED


def test_cancel_running_task(client: Client) -> None:
    handle = client.submit("wait_for_cancel", {"seconds": 30})
    _wait_until_running(client, handle.id)
    client.cancel(handle.id)
    final = handle.wait(timeout=10)
    assert final.state is TaskState.CANCELLED
    with pytest.raises(TaskFailed) as caught:
        handle.result(timeout=10)
    assert caught.value.task.state is TaskState.CANCELLED


def test_cancel_finished_task_is_a_failed_precondition(client: Client) -> None:
    handle = client.submit("echo", {})
    handle.wait(timeout=10)
    with pytest.raises(FailedPrecondition) as caught:
        handle.cancel()
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION


def test_failed_task_raises_task_failed_and_can_be_retried(client: Client) -> None:
    handle = client.submit("fail", {"message": "boom"}, max_attempts=1)
    with pytest.raises(TaskFailed) as caught:
        handle.result(timeout=10)
    failed = caught.value.task
    assert failed.state is TaskState.FAILED
    assert failed.error is not None
    assert failed.error.code == "HANDLER_ERROR"
    assert "boom" in failed.error.message
    assert failed.error.exception_type.endswith("RuntimeError")

    retried = handle.retry()
    assert retried.id == handle.id
    assert retried.state in {TaskState.PENDING, TaskState.RUNNING, TaskState.FAILED}
    again = handle.wait(timeout=10)
    assert again.state is TaskState.FAILED
    assert again.version > failed.version


def test_non_retryable_failure(client: Client) -> None:
    final = client.submit("fail_permanently", {}, max_attempts=3).wait(timeout=10)
    assert final.state is TaskState.FAILED
    assert final.attempt == 1
    assert final.error is not None
    assert final.error.code == "NON_RETRYABLE"


def test_retry_of_running_task_is_a_failed_precondition(client: Client) -> None:
    handle = client.submit("wait_for_cancel", {"seconds": 30})
    try:
        _wait_until_running(client, handle.id)
        with pytest.raises(FailedPrecondition):
            handle.retry()
    finally:
        handle.cancel()


def test_idempotent_submit_returns_the_same_task(client: Client) -> None:
    key = f"key-{uuid.uuid4().hex}"
    first = client.submit("echo", {"a": 1}, idempotency_key=key)
    second = client.submit("echo", {"a": 1}, idempotency_key=key)
    assert second.id == first.id
    assert first.task.idempotency_key == key
    with pytest.raises(AlreadyExists):
        client.submit("echo", {"a": 2}, idempotency_key=key)


def test_unknown_id_is_task_not_found(client: Client) -> None:
    with pytest.raises(TaskNotFound) as caught:
        client.get("no-such-task")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert isinstance(caught.value.__cause__, grpc.RpcError)
    if _is_async(client):
        assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
    with pytest.raises(TaskNotFound):
        list(client.watch("no-such-task"))
    with pytest.raises(TaskNotFound):
        client.cancel("no-such-task")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"type": ""}, "type"),
        ({"type": "no_such_type"}, "type"),
        ({"type": "echo", "priority": 5000}, "priority"),
        ({"type": "echo", "max_attempts": 1000}, "max_attempts"),
    ],
)
def test_bad_submit_is_invalid_argument_with_field_violations(
    client: Client, kwargs: dict[str, object], field: str
) -> None:
    options = dict(kwargs)  # the parameter's dict is shared by both clients' runs
    task_type = options.pop("type")
    assert isinstance(task_type, str)
    with pytest.raises(InvalidArgument) as caught:
        client.submit(task_type, {}, **options)  # type: ignore[arg-type]
    assert field in [name for name, _ in caught.value.field_violations]
    assert caught.value.details


def test_wait_timeout(client: Client) -> None:
    handle = client.submit("wait_for_cancel", {"seconds": 30})
    try:
        with pytest.raises(WaitTimeout) as caught:
            handle.wait(timeout=0.3)
        assert caught.value.task_id == handle.id
        assert caught.value.task is not None
        assert not caught.value.task.is_terminal
    finally:
        handle.cancel()


def test_rpc_timeout_sets_the_deadline(scripted: Scripted, connect: Connect) -> None:
    service, address = scripted
    service.unavailable_gets = 0
    with connect(address, timeout=5.0) as client, pytest.raises(DeadlineExceeded):
        client.get("slow", rpc_timeout=0.2)


def test_default_deadline_is_the_client_timeout(scripted: Scripted, connect: Connect) -> None:
    service, address = scripted
    service.unavailable_gets = 0
    with connect(address, timeout=0.2) as client, pytest.raises(DeadlineExceeded):
        client.get("slow")


def test_get_is_retried_on_unavailable(scripted: Scripted, connect: Connect) -> None:
    service, address = scripted
    with connect(address) as client:
        assert client.get("t-1").state is TaskState.SUCCEEDED
    assert service.calls["GetTask"] == 3


def test_retries_are_bounded(scripted: Scripted, connect: Connect) -> None:
    service, address = scripted
    service.unavailable_gets = 10
    with connect(address) as client, pytest.raises(Unavailable, match="warming up"):
        client.get("t-1")
    assert service.calls["GetTask"] == 3


def test_submit_is_retried_only_with_an_idempotency_key(
    scripted: Scripted, connect: Connect
) -> None:
    service, address = scripted
    with connect(address) as client:
        with pytest.raises(Unavailable):
            client.submit("echo")
        assert service.calls["SubmitTask"] == 1
        with pytest.raises(Unavailable):
            client.submit("echo", idempotency_key="k")
        assert service.calls["SubmitTask"] == 4


def test_watch_resumes_from_the_last_version_after_unavailable(
    scripted: Scripted, connect: Connect
) -> None:
    service, address = scripted
    with connect(address) as client:
        assert [task.version for task in client.watch("t-1")] == [1, 2, 3]
        # A finished task is read, not watched.
        assert client.wait("t-1", timeout=5).version == 1
        assert service.watch_since == [0, 2]
        # An unfinished one is watched, and the watch resumes after a drop.
        assert client.wait("running-1", timeout=5).version == 3
    assert service.watch_since == [0, 2, 0, 2]


def test_unreachable_server_is_unavailable_after_bounded_retries(connect: Connect) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with connect(f"127.0.0.1:{port}", timeout=2.0) as client, pytest.raises(Unavailable) as caught:
        client.get("x")
    assert isinstance(caught.value, ConveyorError)
