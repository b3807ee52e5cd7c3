"""The asyncio client against a real in-process server."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import grpc
import pytest

from conveyor import (
    AlreadyExists,
    AsyncClient,
    AsyncTaskHandle,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    Task,
    TaskFailed,
    TaskNotFound,
    TaskSpec,
    TaskState,
    Unavailable,
    WaitTimeout,
)


async def _wait_until_running(client: AsyncClient, task_id: str) -> Task:
    async for task in client.watch(task_id):
        if task.state is TaskState.RUNNING:
            return task
    raise AssertionError(f"task {task_id} never ran")


async def test_submit_get_wait_result(aclient: AsyncClient) -> None:
    handle = await aclient.submit("echo", {"n": 1}, labels={"k": "v"})
    assert isinstance(handle, AsyncTaskHandle)
    assert handle.task.labels == {"k": "v"}
    assert (await aclient.get(handle.id)).payload == {"n": 1}
    assert await handle.result(timeout=10) == {"n": 1}
    final = await aclient.wait(handle.id, timeout=10)
    assert final.state is TaskState.SUCCEEDED
    assert (await handle.get()).version == final.version


async def test_submit_batch(aclient: AsyncClient) -> None:
    handles = await aclient.submit_batch([TaskSpec("echo", {"i": i}) for i in range(3)])
    assert [await handle.result(timeout=10) for handle in handles] == [{"i": i} for i in range(3)]


async def test_submit_batch_field_violation(aclient: AsyncClient) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await aclient.submit_batch([TaskSpec("echo"), TaskSpec("echo"), TaskSpec("")])
    assert "requests[2].type" in [field for field, _ in caught.value.field_violations]


async def test_watch_until_terminal(aclient: AsyncClient) -> None:
    handle = await aclient.submit("sleep", {"seconds": 0.5})
    snapshots = [task async for task in handle.watch()]
    versions = [task.version for task in snapshots]
    assert versions == sorted(set(versions))
    assert snapshots[-1].state is TaskState.SUCCEEDED
    assert [task async for task in handle.watch(since_version=versions[-1])] == []


async def test_list_pages_and_filters(aclient: AsyncClient, run_label: dict[str, str]) -> None:
    ids = [(await aclient.submit("echo", {"i": i}, labels=run_label)).id for i in range(5)]
    for task_id in ids:
        await aclient.wait(task_id, timeout=10)
    listed = [task.id async for task in aclient.list(labels=run_label, page_size=2)]
    assert listed == ids[::-1]
    limited = [task.id async for task in aclient.list(labels=run_label, page_size=2, limit=3)]
    assert limited == ids[:1:-1]
    succeeded = aclient.list(labels=run_label, type="echo", states=[TaskState.SUCCEEDED])
    assert len([task async for task in succeeded]) == 5
    assert [task async for task in aclient.list(labels=run_label, type="sleep")] == []


async def test_cancel_pending_and_running(aclient: AsyncClient) -> None:
    pending = await aclient.submit("echo", {}, delay=60)
    assert (await pending.cancel()).state is TaskState.CANCELLED
    assert (await aclient.cancel(pending.id)).state is TaskState.CANCELLED

    running = await aclient.submit("wait_for_cancel", {"seconds": 30})
    await _wait_until_running(aclient, running.id)
    await running.cancel()
    with pytest.raises(TaskFailed) as caught:
        await running.result(timeout=10)
    assert caught.value.task.state is TaskState.CANCELLED


async def test_cancel_finished_is_a_failed_precondition(aclient: AsyncClient) -> None:
    handle = await aclient.submit("echo", {})
    await handle.wait(timeout=10)
    with pytest.raises(FailedPrecondition):
        await handle.cancel()


async def test_retry_after_failure(aclient: AsyncClient) -> None:
    handle = await aclient.submit("fail", {"message": "boom"}, max_attempts=1)
    with pytest.raises(TaskFailed) as caught:
        await handle.result(timeout=10)
    assert caught.value.task.error is not None
    assert "boom" in caught.value.task.error.message
    retried = await handle.retry()
    assert retried.id == handle.id
    assert (await handle.wait(timeout=10)).state is TaskState.FAILED


async def test_idempotent_submit(aclient: AsyncClient) -> None:
    key = f"key-{uuid.uuid4().hex}"
    first = await aclient.submit("echo", {"a": 1}, idempotency_key=key)
    second = await aclient.submit("echo", {"a": 1}, idempotency_key=key)
    assert first.id == second.id
    with pytest.raises(AlreadyExists):
        await aclient.submit("echo", {"a": 2}, idempotency_key=key)


async def test_error_mapping(aclient: AsyncClient) -> None:
    with pytest.raises(TaskNotFound) as not_found:
        await aclient.get("no-such-task")
    assert not_found.value.code is grpc.StatusCode.NOT_FOUND
    assert isinstance(not_found.value.__cause__, grpc.aio.AioRpcError)
    with pytest.raises(TaskNotFound):
        [task async for task in aclient.watch("no-such-task")]
    with pytest.raises(InvalidArgument) as invalid:
        await aclient.submit("", {})
    assert "type" in [field for field, _ in invalid.value.field_violations]


async def test_wait_timeout(aclient: AsyncClient) -> None:
    handle = await aclient.submit("wait_for_cancel", {"seconds": 30})
    try:
        with pytest.raises(WaitTimeout) as caught:
            await handle.wait(timeout=0.3)
        assert caught.value.task is not None
        assert not caught.value.task.is_terminal
    finally:
        await handle.cancel()


async def test_unreachable_server_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AsyncClient(f"127.0.0.1:{port}", timeout=2.0) as client:
        with pytest.raises(Unavailable):
            await client.get("x")


async def test_retries_and_deadline_on_a_scripted_service(scripted: tuple[Any, str]) -> None:
    service, address = scripted
    async with AsyncClient(address, timeout=0.3) as client:
        assert (await client.get("t-1")).state is TaskState.SUCCEEDED
        assert service.calls["GetTask"] == 3
        with pytest.raises(DeadlineExceeded):
            await client.get("slow")
        with pytest.raises(Unavailable):
            await client.submit("echo")
        assert service.calls["SubmitTask"] == 1


async def test_watch_resumes_after_unavailable(scripted: tuple[Any, str]) -> None:
    service, address = scripted
    async with AsyncClient(address) as client:
        assert [task.version async for task in client.watch("t-1")] == [1, 2, 3]
        # A finished task is read, not watched.
        assert (await client.wait("t-1", timeout=5)).version == 1
        assert service.watch_since == [0, 2]
        # An unfinished one is watched, and the watch resumes after a drop.
        assert (await client.wait("running-1", timeout=5)).version == 3
    assert service.watch_since == [0, 2, 0, 2]
