"""WatchTasks through a real server: the changes of the tasks a filter
matches, the current ones first on request, resuming from a cursor, bad
input, the watcher limit, and replicas sharing one Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.raw_api import TERMINAL, Api, violations
from tests.support.server import ServerThread

Stream = Iterator[pb.WatchTasksResponse]


@pytest.fixture
def label() -> dict[str, str]:
    """A label of this test's own: the shared server runs other tests' tasks."""
    return {"run": uuid.uuid4().hex[:12]}


def open_watch(api: Api, **fields: Any) -> Any:
    """A WatchTasks stream, once the server follows the feed for it: its
    response headers say so."""
    stream = api.stub.WatchTasks(pb.WatchTasksRequest(**fields), timeout=20)
    stream.initial_metadata()
    return stream


def until_finished(stream: Stream, task_ids: set[str]) -> list[pb.WatchTasksResponse]:
    """Messages until every one of `task_ids` was seen finished."""
    messages: list[pb.WatchTasksResponse] = []
    left = set(task_ids)
    for message in stream:
        messages.append(message)
        if message.task.state in TERMINAL:
            left.discard(message.task.id)
        if not left:
            return messages
    raise AssertionError(f"the stream ended with {left} unfinished")


def test_watch_tasks_streams_each_change_of_the_matching_tasks(
    api: Api, label: dict[str, str]
) -> None:
    stream = open_watch(api, labels=label)
    other = api.submit("echo", {})  # not labelled: not streamed
    task = api.submit("progress_steps", {"steps": 3, "interval": 0.05}, labels=label)
    messages = until_finished(stream, {task.id})
    stream.cancel()
    assert {m.task.id for m in messages} == {task.id} != {other.id}
    versions = [m.task.version for m in messages]
    assert versions == sorted(set(versions))
    assert messages[0].task.state in (task_pb2.TASK_STATE_PENDING, task_pb2.TASK_STATE_RUNNING)
    assert messages[-1].task.state == task_pb2.TASK_STATE_SUCCEEDED
    assert all(m.cursor and not m.reset and not m.current for m in messages)
    assert len({m.cursor for m in messages}) == len(messages)


def test_watch_tasks_filters_by_state_type_and_ids(api: Api, label: dict[str, str]) -> None:
    finished = open_watch(api, labels=label, states=[task_pb2.TASK_STATE_SUCCEEDED])
    typed = open_watch(api, labels=label, type="progress_steps")
    later = duration_pb2.Duration(seconds=60)
    waiting = api.submit("echo", {}, labels=label, delay=later)
    named = open_watch(api, ids=[waiting.id])
    first = api.submit("echo", {}, labels=label)
    second = api.submit("progress_steps", {"steps": 1}, labels=label)
    api.stub.CancelTask(pb.CancelTaskRequest(id=waiting.id), timeout=10)
    done = until_finished(finished, {first.id, second.id})
    assert {m.task.state for m in done} == {task_pb2.TASK_STATE_SUCCEEDED}
    assert {m.task.id for m in until_finished(typed, {second.id})} == {second.id}
    assert [(m.task.id, m.task.state) for m in until_finished(named, {waiting.id})] == [
        (waiting.id, task_pb2.TASK_STATE_CANCELLED)
    ]
    for stream in (finished, typed, named):
        stream.cancel()


def test_include_current_sends_the_unfinished_tasks_first(api: Api, label: dict[str, str]) -> None:
    later = duration_pb2.Duration(seconds=60)
    waiting = api.submit("echo", {}, labels=label, delay=later)
    finished = api.wait(api.submit("echo", {}, labels=label).id)
    stream = open_watch(api, labels=label, include_current=True)
    first = next(stream)
    assert (first.task.id, first.current) == (waiting.id, True)
    assert first.task.id != finished.id
    api.stub.CancelTask(pb.CancelTaskRequest(id=waiting.id), timeout=10)
    change = next(stream)
    assert (change.task.id, change.task.state, change.current) == (
        waiting.id,
        task_pb2.TASK_STATE_CANCELLED,
        False,
    )
    stream.cancel()


def test_a_stream_opened_again_with_a_cursor_misses_nothing(
    api: Api, label: dict[str, str]
) -> None:
    later = duration_pb2.Duration(seconds=60)
    stream = open_watch(api, labels=label)
    first = api.submit("echo", {}, labels=label, delay=later)
    created = next(stream)
    stream.cancel()
    # Meanwhile, with nobody watching:
    second = api.submit("echo", {}, labels=label, delay=later)
    api.stub.CancelTask(pb.CancelTaskRequest(id=first.id), timeout=10)
    resumed = open_watch(api, labels=label, cursor=created.cursor)
    got = [next(resumed), next(resumed)]
    assert [(m.task.id, m.task.state) for m in got] == [
        (second.id, task_pb2.TASK_STATE_PENDING),
        (first.id, task_pb2.TASK_STATE_CANCELLED),
    ]
    resumed.cancel()
    api.stub.CancelTask(pb.CancelTaskRequest(id=second.id), timeout=10)


def test_an_unknown_cursor_starts_with_a_reset(api: Api, label: dict[str, str]) -> None:
    stream = open_watch(api, labels=label, cursor="from.another.server")
    reset = next(stream)
    assert reset.reset and not reset.HasField("task") and reset.cursor
    task = api.submit("echo", {}, labels=label)
    assert next(stream).task.id == task.id
    stream.cancel()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"states": [42]}, "states[0]"),
        ({"ids": ["not an id!"]}, "ids[0]"),
        ({"ids": [f"id{n}" for n in range(1001)]}, "ids"),
        ({"cursor": "c" * 500}, "cursor"),
    ],
)
def test_bad_watch_tasks_requests_are_invalid_argument(
    api: Api, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        next(api.stub.WatchTasks(pb.WatchTasksRequest(**fields), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in violations(caught.value)] == [field]


def test_watch_tasks_streams_count_against_max_watchers(
    make_api: Callable[..., tuple[ServerThread, Api]],
) -> None:
    _, api = make_api(max_watchers=2)
    task = api.submit("wait_for_cancel", {"seconds": 30})
    one = api.stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=10)
    next(one)
    two = open_watch(api)
    with pytest.raises(grpc.RpcError) as caught:
        next(api.stub.WatchTasks(pb.WatchTasksRequest(), timeout=10))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-watchers" in (caught.value.details() or "")
    one.cancel()
    two.cancel()
    api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)


def test_a_change_on_one_replica_reaches_a_stream_on_another(
    redis_url: str, make_server: Callable[..., ServerThread], label: dict[str, str]
) -> None:
    first = Api(make_server(store=redis_url).address)
    second = Api(make_server(store=redis_url).address)
    try:
        stream = open_watch(second, labels=label)
        task = first.submit("progress_steps", {"steps": 2, "interval": 0.05}, labels=label)
        messages = until_finished(stream, {task.id})
        assert messages[-1].task.state == task_pb2.TASK_STATE_SUCCEEDED
        versions = [m.task.version for m in messages]
        assert versions == sorted(set(versions))
        # A cursor from one replica is good on the other.
        resumed = open_watch(first, labels=label, cursor=messages[0].cursor)
        if len(messages) > 1:
            assert next(resumed).task.version == messages[-1].task.version
        stream.cancel()
        resumed.cancel()
    finally:
        first.close()
        second.close()
