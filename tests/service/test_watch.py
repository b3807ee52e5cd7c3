"""WatchTask: snapshot first, one message per change, terminal last, resume, limits."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import duration_pb2

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from conveyor_server.stores import StoreUnavailable
from tests.support.raw_api import Api
from tests.support.server import ServerThread


def watch(api: Api, task_id: str, since: int = 0) -> list[task_pb2.Task]:
    request = pb.WatchTaskRequest(id=task_id, since_version=since)
    return [m.task for m in api.stub.WatchTask(request, timeout=10)]


def test_watch_streams_every_change_to_the_terminal_one(api: Api) -> None:
    task = api.submit("progress_steps", {"steps": 5, "interval": 0.05})
    snapshots = watch(api, task.id)
    versions = [s.version for s in snapshots]
    assert versions == sorted(set(versions))
    assert snapshots[0].state in (task_pb2.TASK_STATE_PENDING, task_pb2.TASK_STATE_RUNNING)
    assert snapshots[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    percents = [s.progress.percent for s in snapshots if s.state == task_pb2.TASK_STATE_RUNNING]
    assert percents == sorted(percents) and len(percents) >= 3
    assert [s.state for s in snapshots].count(task_pb2.TASK_STATE_SUCCEEDED) == 1


def test_watch_of_a_finished_task_sends_one_snapshot(api: Api) -> None:
    done = api.wait(api.submit("echo", {}).id)
    snapshots = watch(api, done.id)
    assert [s.version for s in snapshots] == [done.version]


def test_watch_resumes_after_a_seen_version(api: Api) -> None:
    task = api.submit("progress_steps", {"steps": 4, "interval": 0.05})
    first = watch(api, task.id)
    resumed = watch(api, task.id, since=first[1].version)
    assert [s.version for s in resumed] == [first[-1].version] or all(
        s.version > first[1].version for s in resumed
    )
    assert resumed and resumed[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    # Resuming after the terminal version ends at once with nothing to send.
    assert watch(api, task.id, since=first[-1].version) == []


def test_watch_sees_cancel_of_a_pending_task(api: Api) -> None:
    task = api.submit("echo", {}, delay=duration_pb2.Duration(seconds=60))
    stream = api.stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=10)
    first = next(stream).task
    assert first.state == task_pb2.TASK_STATE_PENDING
    api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)
    rest = [m.task for m in stream]
    assert [t.state for t in rest] == [task_pb2.TASK_STATE_CANCELLED]


def test_slow_reader_gets_the_latest_state(api: Api) -> None:
    """Changes made while the reader does not read are folded into the
    latest, not buffered one by one."""
    # Big snapshots fill the transport's flow-control window quickly, so the
    # server feels the reader's slowness.
    padding = "x" * 200_000
    task = api.submit("progress_steps", {"steps": 200, "interval": 0.001, "padding": padding})
    stream = api.stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=10)
    next(stream)
    api.wait(task.id)
    rest = [m.task for m in stream]
    assert rest[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    # 200 progress changes happened; a folded stream delivers far fewer.
    assert len(rest) < 50


def test_disconnect_frees_the_watcher(server: ServerThread, api: Api) -> None:
    servicer = server.server.servicer
    task = api.submit("wait_for_cancel", {"seconds": 30})
    before = servicer.watchers
    channel = grpc.insecure_channel(server.address)
    stream = pb_grpc.TaskServiceStub(channel).WatchTask(pb.WatchTaskRequest(id=task.id))
    next(stream)
    assert servicer.watchers == before + 1
    channel.close()
    deadline = time.monotonic() + 5
    while servicer.watchers != before:
        assert time.monotonic() < deadline, "watcher not released after disconnect"
        time.sleep(0.01)
    assert not server.server.store._feed.subscriptions.watching(task.id)
    api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)


def test_too_many_watchers_is_resource_exhausted(make_api) -> None:  # type: ignore[no-untyped-def]
    _, api = make_api(max_watchers=2)
    task = api.submit("wait_for_cancel", {"seconds": 30})
    streams = [api.stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=10) for _ in range(2)]
    for stream in streams:
        next(stream)
    with pytest.raises(grpc.RpcError) as caught:
        next(api.stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=10))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-watchers" in caught.value.details()
    for stream in streams:
        stream.cancel()


def test_many_watchers_all_see_the_end(server: ServerThread) -> None:
    async def scenario() -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.TaskServiceStub(channel)
            request = pb.SubmitTaskRequest(type="progress_steps")
            request.payload.update({"steps": 3, "interval": 0.1})
            task = (await stub.SubmitTask(request)).task

            async def follow() -> int:
                last = task_pb2.TASK_STATE_UNSPECIFIED
                async for message in stub.WatchTask(pb.WatchTaskRequest(id=task.id)):
                    last = message.task.state
                return last

            states = await asyncio.gather(*(follow() for _ in range(200)))
            assert set(states) == {task_pb2.TASK_STATE_SUCCEEDED}

    asyncio.run(scenario())


@pytest.mark.parametrize("state", ["pending", "running"])
def test_watch_from_a_version_ahead_is_out_of_range(api: Api, state: str) -> None:
    if state == "pending":
        task = api.submit("echo", {}, delay=duration_pb2.Duration(seconds=60))
    else:
        task = api.submit("wait_for_cancel", {"seconds": 30})
        task = api.wait(task.id, states={task_pb2.TASK_STATE_RUNNING})
    try:
        ahead = task.version + 1000
        stream = api.stub.WatchTask(pb.WatchTaskRequest(id=task.id, since_version=ahead), timeout=5)
        with pytest.raises(grpc.RpcError) as caught:
            list(stream)
        error = caught.value
        assert error.code() == grpc.StatusCode.OUT_OF_RANGE, error.details()
        assert f"since_version {ahead}" in error.details()
        assert "resume from" in error.details()
    finally:
        api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)


def test_a_store_that_fails_during_a_watch_is_unavailable(make_api) -> None:  # type: ignore[no-untyped-def]
    """As for every unary call: a store outage is UNAVAILABLE (retryable),
    not an unexpected UNKNOWN with a traceback."""
    server, api = make_api()
    store = server.server.store
    task = api.submit("echo", {})

    async def unreachable(task_id, tenant=""):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("Redis at example:6379 is unavailable: connection refused")

    store.get = unreachable
    stream = api.stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=10)
    with pytest.raises(grpc.RpcError) as refused:
        next(stream)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "connection refused" in refused.value.details()
