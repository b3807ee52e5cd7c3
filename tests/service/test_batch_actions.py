"""BatchCancelTasks and BatchRetryTasks on every store: by ids and by
filter, with the counts of what they changed; what they refuse."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import timestamp_pb2

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.procs import wait_until
from tests.support.raw_api import Api, violations
from tests.support.server import ServerThread

PENDING, RUNNING = task_pb2.TASK_STATE_PENDING, task_pb2.TASK_STATE_RUNNING
FAILED, CANCELLED = task_pb2.TASK_STATE_FAILED, task_pb2.TASK_STATE_CANCELLED
LATER = {"seconds": 3600}


def counts(response: pb.BatchCancelTasksResponse | pb.BatchRetryTasksResponse) -> dict[str, int]:
    return {field.name: value for field, value in response.ListFields()}


def test_cancel_by_ids_counts_what_each_task_was(store_api: Api) -> None:
    api = store_api
    running = [api.submit("wait_for_cancel", {"seconds": 30}) for _ in range(2)]
    for task in running:
        api.wait(task.id, states={RUNNING})
    pending = [api.submit("echo", delay=LATER) for _ in range(3)]
    done = api.submit("echo")
    api.wait(done.id)
    ids = [t.id for t in [*running, *pending, done]] + ["no-such-task", pending[0].id]
    assert counts(api.batch_cancel(ids=ids)) == {
        "matched": 6,
        "cancelled": 3,
        "cancel_requested": 2,
        "not_found": 1,
    }
    for task in [*running, *pending]:
        assert api.wait(task.id).state == CANCELLED
    assert api.get(done.id).state == task_pb2.TASK_STATE_SUCCEEDED
    # Again: all of them are finished now, and left alone.
    assert counts(api.batch_cancel(ids=ids)) == {"matched": 6, "not_found": 1}


def test_cancel_by_filter_pages_through_every_match(store_api: Api) -> None:
    api = store_api
    label = {"run": "many"}
    for _ in range(2):
        api.batch_submit(
            *(pb.SubmitTaskRequest(type="echo", delay=LATER, labels=label) for _ in range(600))
        )
    other = api.submit("echo", delay=LATER, labels={"run": "other"})
    response = api.batch_cancel(filter=pb.TaskFilter(labels=label))
    assert counts(response) == {"matched": 1200, "cancelled": 1200}
    left = api.stub.ListTasks(pb.ListTasksRequest(labels=label, states=[PENDING]), timeout=10).tasks
    assert list(left) == []
    assert api.get(other.id).state == PENDING


def test_a_filter_narrows_by_state_type_and_creation_time(store_api: Api) -> None:
    api = store_api
    early = [api.submit("echo", delay=LATER) for _ in range(2)]
    last = early[-1].create_time.ToNanoseconds() / 1e9
    wait_until(lambda: time.time() > last + 0.002, 1, "the clock to pass the early tasks")
    late = [api.submit("echo", delay=LATER) for _ in range(2)]
    other_type = api.submit("wait_for_cancel", delay=LATER)
    boundary = late[0].create_time
    before = pb.TaskFilter(type="echo", created_before=boundary)
    assert counts(api.batch_cancel(filter=before)) == {"matched": 2, "cancelled": 2}
    # Retry looks only at FAILED and CANCELLED tasks, cancel only at
    # PENDING and RUNNING ones, whatever states the filter names.
    assert counts(api.batch_retry(filter=pb.TaskFilter(states=[PENDING]))) == {}
    after = pb.TaskFilter(type="echo", created_after=boundary, states=[PENDING, FAILED])
    assert counts(api.batch_cancel(filter=after)) == {"matched": 2, "cancelled": 2}
    assert [api.get(t.id).state for t in [*early, *late]] == [CANCELLED] * 4
    assert api.get(other_type.id).state == PENDING
    retried = api.batch_retry(filter=pb.TaskFilter(type="echo", created_after=boundary))
    assert counts(retried) == {"matched": 2, "retried": 2}
    for task in late:
        assert api.wait(task.id).state == task_pb2.TASK_STATE_SUCCEEDED
    assert [api.get(t.id).state for t in early] == [CANCELLED] * 2


def test_retry_by_ids_counts_what_it_queued_again(store_api: Api) -> None:
    api = store_api
    failed = [api.submit("fail_permanently") for _ in range(2)]
    for task in failed:
        api.wait(task.id)
    waiting = api.submit("echo", delay=LATER)
    response = api.batch_retry(ids=[*(t.id for t in failed), waiting.id, "no-such-task"])
    assert counts(response) == {"matched": 3, "retried": 2, "not_found": 1}
    for task in failed:
        retried = api.wait(task.id)
        assert retried.state == FAILED and retried.version > task.version


def test_retry_stops_where_the_queue_fills_and_says_how_many_it_retried(
    store_url: str, make_api: Callable[..., tuple[ServerThread, Api]]
) -> None:
    _, api = make_api(store=store_url, max_queue=2)
    tasks = []
    for _ in range(3):
        tasks.append(api.submit("wait_for_cancel", {"seconds": 30}, delay=LATER))
        api.batch_cancel(ids=[tasks[-1].id])
    with pytest.raises(grpc.RpcError) as caught:
        api.batch_retry(filter=pb.TaskFilter(type="wait_for_cancel"))
    error = caught.value
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert "2 tasks were retried before the queue filled" in error.details()  # type: ignore[attr-defined]
    states = sorted(api.get(t.id).state for t in tasks)
    assert states[-1] == CANCELLED and set(states[:2]) <= {PENDING, RUNNING}
    api.batch_cancel(ids=[t.id for t in tasks])


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({}, "ids", "give the ids of the tasks, or a filter"),
        ({"ids": ["a"], "filter": pb.TaskFilter()}, "filter", "not both"),
        ({"ids": [f"t{i}" for i in range(1001)]}, "ids", "holds 1001 ids; give at most 1000"),
        ({"ids": ["ok", "not ok"]}, "ids[1]", "task id may only contain"),
        ({"filter": pb.TaskFilter(states=[9])}, "filter.states[0]", "9 is not a task state"),
        (
            {
                "filter": pb.TaskFilter(
                    created_after=timestamp_pb2.Timestamp(seconds=200),
                    created_before=timestamp_pb2.Timestamp(seconds=100),
                )
            },
            "filter.created_before",
            "must be later than created_after",
        ),
    ],
)
def test_a_request_naming_no_tasks_well_is_refused(
    api: Api, fields: dict[str, object], field: str, problem: str
) -> None:
    calls = [
        lambda: api.stub.BatchCancelTasks(pb.BatchCancelTasksRequest(**fields), timeout=10),
        lambda: api.stub.BatchRetryTasks(pb.BatchRetryTasksRequest(**fields), timeout=10),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        [(named, description)] = violations(caught.value)
        assert named == field
        assert problem in description
