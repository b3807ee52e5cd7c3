"""WatchTasks `current_ids` through a real server on every store: the
snapshots of the listed tasks first, finished or not, with and without a
cursor, filtered like the changes; bad requests; unknown ids."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.raw_api import Api, violations

LATER = duration_pb2.Duration(seconds=60)
SUCCEEDED = task_pb2.TASK_STATE_SUCCEEDED
CANCELLED = task_pb2.TASK_STATE_CANCELLED


def watch(api: Api, **fields: object) -> grpc.Call:
    return api.watch_tasks(**fields)


def resource_names(error: grpc.RpcError) -> list[str]:
    """The names in the google.rpc.ResourceInfo details of a failed call."""
    names = []
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ResourceInfo()
                if detail.Unpack(info):
                    names.append(info.resource_name)
    return names


def test_current_ids_sends_finished_and_unfinished_snapshots_then_changes(
    store_api: Api,
) -> None:
    done = store_api.wait(store_api.submit("echo", {}).id)
    waiting = store_api.submit("echo", {}, delay=LATER)
    ids = sorted([done.id, waiting.id])
    stream = watch(store_api, ids=ids, current_ids=ids)
    first, second = next(stream), next(stream)
    assert {(m.task.id, m.task.state, m.current) for m in (first, second)} == {
        (done.id, SUCCEEDED, True),
        (waiting.id, task_pb2.TASK_STATE_PENDING, True),
    }
    assert first.cursor and first.cursor == second.cursor
    store_api.stub.CancelTask(pb.CancelTaskRequest(id=waiting.id), timeout=10)
    change = next(stream)
    assert (change.task.id, change.task.state, change.current) == (waiting.id, CANCELLED, False)
    stream.cancel()


def test_current_ids_with_a_cursor_adds_tasks_and_replays_the_others(store_api: Api) -> None:
    followed = store_api.submit("echo", {}, delay=LATER)
    stream = watch(store_api, ids=[followed.id])
    store_api.stub.CancelTask(pb.CancelTaskRequest(id=followed.id), timeout=10)
    cancelled = next(stream)
    stream.cancel()
    # With nobody watching: a task the cursor skips, and a change after it.
    added = store_api.wait(store_api.submit("echo", {}).id)
    store_api.stub.RetryTask(pb.RetryTaskRequest(id=followed.id), timeout=10)
    resumed = watch(
        store_api,
        ids=[followed.id, added.id],
        current_ids=[added.id],
        cursor=cancelled.cursor,
    )
    snapshot = next(resumed)
    assert (snapshot.task.id, snapshot.task.state, snapshot.current) == (added.id, SUCCEEDED, True)
    assert snapshot.cursor == cancelled.cursor
    # The added task's own changes after the cursor may come again.
    replayed = next(m for m in resumed if m.task.id == followed.id)
    assert not replayed.current
    assert replayed.task.version > cancelled.task.version
    resumed.cancel()


def test_current_ids_snapshots_are_filtered_by_state(store_api: Api) -> None:
    done = store_api.wait(store_api.submit("echo", {}).id)
    waiting = store_api.submit("echo", {}, delay=LATER)
    ids = [done.id, waiting.id]
    terminal = [SUCCEEDED, task_pb2.TASK_STATE_FAILED, CANCELLED]
    stream = watch(store_api, ids=ids, current_ids=ids, states=terminal)
    only = next(stream)
    assert (only.task.id, only.current) == (done.id, True)
    store_api.stub.CancelTask(pb.CancelTaskRequest(id=waiting.id), timeout=10)
    change = next(stream)
    assert (change.task.id, change.task.state, change.current) == (waiting.id, CANCELLED, False)
    stream.cancel()


def test_an_unknown_current_id_ends_the_stream_not_found_naming_it(store_api: Api) -> None:
    known = store_api.submit("echo", {}, delay=LATER)
    missing = "no-such-task"
    ids = [known.id, missing]
    with pytest.raises(grpc.RpcError) as caught:
        next(store_api.stub.WatchTasks(pb.WatchTasksRequest(ids=ids, current_ids=ids), timeout=10))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert missing in (caught.value.details() or "")  # type: ignore[attr-defined]
    assert resource_names(caught.value) == [missing]
    store_api.stub.CancelTask(pb.CancelTaskRequest(id=known.id), timeout=10)


@pytest.mark.parametrize(
    ("ids", "current_ids", "field"),
    [
        (["a1"], ["a2"], "current_ids[0]"),
        ([], ["a1"], "current_ids[0]"),
        ([f"a{i}" for i in range(1000)], [f"a{i}" for i in range(1001)], "current_ids"),
    ],
)
def test_bad_current_ids_are_invalid_argument(
    api: Api, ids: list[str], current_ids: list[str], field: str
) -> None:
    request = pb.WatchTasksRequest(ids=ids, current_ids=current_ids)
    with pytest.raises(grpc.RpcError) as caught:
        next(api.stub.WatchTasks(request, timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert field in [f for f, _ in violations(caught.value)]


def test_the_headers_carry_the_cursor_the_stream_follows_from(store_api: Api) -> None:
    store_api.wait(store_api.submit("echo", {"n": 0}).id)  # a feed with a past
    stream = store_api.stub.WatchTasks(pb.WatchTasksRequest(states=[SUCCEEDED]), timeout=20)
    headers = dict(stream.initial_metadata())  # type: ignore[attr-defined]
    cursor = headers["conveyor-cursor"]
    assert cursor
    stream.cancel()  # type: ignore[attr-defined]
    # A task that finishes after the headers, before any message was read:
    # a stream opened again from the headers' cursor gets it.
    task = store_api.wait(store_api.submit("echo", {"n": 1}).id)
    resumed = watch(store_api, states=[SUCCEEDED], cursor=cursor)
    change = next(resumed)
    assert (change.task.id, change.task.state) == (task.id, SUCCEEDED)
    resumed.cancel()  # type: ignore[attr-defined]
