"""reply_to through a real server on every store: kept with the task and
returned, left out of what an idempotency key compares, and followed by a
WatchTasks stream opened with it, alone or with ids; bad values refused."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.raw_api import Api, payload, violations

LATER = duration_pb2.Duration(seconds=60)
TERMINAL = [
    task_pb2.TASK_STATE_SUCCEEDED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELLED,
]
SUCCEEDED = task_pb2.TASK_STATE_SUCCEEDED
CANCELLED = task_pb2.TASK_STATE_CANCELLED


def watch(api: Api, **fields: object) -> grpc.Call:
    return api.watch_tasks(**fields)


def refusal(call: Callable[[], object]) -> list[tuple[str, str]]:
    """The field violations of a call refused INVALID_ARGUMENT."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    return violations(caught.value)


def field_violations(error: pb.Status) -> list[tuple[str, str]]:
    """The field violations in the details of a per-request error."""
    found = []
    for detail in error.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found += [(v.field, v.description) for v in bad_request.field_violations]
    return found


def test_reply_to_is_kept_with_the_task_and_returned(store_api: Api) -> None:
    task = store_api.submit("echo", {}, reply_to="client-1")
    assert task.reply_to == "client-1"
    batch = store_api.stub.BatchSubmitTasks(
        pb.BatchSubmitTasksRequest(
            requests=[
                pb.SubmitTaskRequest(type="echo", reply_to="client-2"),
                pb.SubmitTaskRequest(type="echo"),
            ]
        ),
        timeout=10,
    )
    assert [t.reply_to for t in batch.tasks] == ["client-2", ""]
    assert store_api.wait(task.id).reply_to == "client-1"
    listed = store_api.stub.ListTasks(pb.ListTasksRequest(page_size=10), timeout=10)
    assert {(t.id, t.reply_to) for t in listed.tasks} == {
        (task.id, "client-1"),
        (batch.tasks[0].id, "client-2"),
        (batch.tasks[1].id, ""),
    }


def test_an_idempotent_retry_from_another_client_returns_the_original(store_api: Api) -> None:
    first = store_api.submit("echo", {"n": 1}, idempotency_key="order-7", reply_to="client-a")
    again = store_api.submit("echo", {"n": 1}, idempotency_key="order-7", reply_to="client-b")
    assert (again.id, again.reply_to) == (first.id, "client-a")
    # Without a reply_to too; a different request under the key still conflicts.
    bare = store_api.submit("echo", {"n": 1}, idempotency_key="order-7")
    assert (bare.id, bare.reply_to) == (first.id, "client-a")
    with pytest.raises(grpc.RpcError) as caught:
        store_api.submit("echo", {"n": 2}, idempotency_key="order-7", reply_to="client-a")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
    # Inside one batch, as a client's coalesced submits arrive.
    requests = [
        pb.SubmitTaskRequest(type="echo", idempotency_key="order-8", reply_to=name)
        for name in ("client-b", "client-a")
    ]
    response = store_api.stub.BatchSubmitTasks(
        pb.BatchSubmitTasksRequest(requests=requests, partial_success=True), timeout=10
    )
    one, two = (result.task for result in response.results)
    assert one.id == two.id and (one.reply_to, two.reply_to) == ("client-b", "client-b")


def test_a_reply_to_stream_follows_the_tasks_submitted_with_it(store_api: Api) -> None:
    stream = watch(store_api, reply_to="client-1", states=TERMINAL)
    # Other clients' tasks and tasks without a reply_to finish first: had
    # the stream taken them, they would come before the client's own.
    others = [
        store_api.submit("echo", {}, reply_to="client-2"),
        store_api.submit("echo", {}),
    ]
    for other in others:
        store_api.wait(other.id)
    mine = store_api.submit("echo", {}, reply_to="client-1")
    done = next(stream)
    assert (done.task.id, done.task.state, done.task.reply_to) == (mine.id, SUCCEEDED, "client-1")
    waiting = store_api.submit("echo", {}, reply_to="client-1", delay=LATER)
    store_api.stub.CancelTask(pb.CancelTaskRequest(id=waiting.id), timeout=10)
    cancelled = next(stream)
    assert (cancelled.task.id, cancelled.task.state) == (waiting.id, CANCELLED)
    stream.cancel()


def test_a_reply_to_stream_follows_its_ids_as_well(store_api: Api) -> None:
    foreign = store_api.submit("echo", {}, delay=LATER)
    unrelated = store_api.submit("echo", {}, delay=LATER)
    stream = watch(store_api, reply_to="client-1", ids=[foreign.id], states=TERMINAL)
    store_api.stub.CancelTask(pb.CancelTaskRequest(id=unrelated.id), timeout=10)
    store_api.stub.CancelTask(pb.CancelTaskRequest(id=foreign.id), timeout=10)
    first = next(stream)
    assert (first.task.id, first.task.state) == (foreign.id, CANCELLED)
    mine = store_api.submit("echo", {}, reply_to="client-1")
    second = next(stream)
    assert (second.task.id, second.task.state) == (mine.id, SUCCEEDED)
    stream.cancel()


def test_current_ids_with_a_reply_to_catch_up_on_the_listed_tasks(store_api: Api) -> None:
    done = store_api.wait(store_api.submit("echo", {}, reply_to="client-1").id)
    stream = watch(store_api, reply_to="client-1", ids=[done.id], current_ids=[done.id])
    snapshot = next(stream)
    assert (snapshot.task.id, snapshot.task.state, snapshot.current) == (done.id, SUCCEEDED, True)
    stream.cancel()


@pytest.mark.parametrize(
    "reply_to",
    ["client 1", "client/1", "é", "x" * 129],
    ids=["space", "slash", "non-ascii", "too-long"],
)
def test_a_bad_reply_to_is_refused_naming_the_field(api: Api, reply_to: str) -> None:
    problem = "must be 1-128 letters, digits and . _ : -"
    assert refusal(lambda: api.submit("echo", {}, reply_to=reply_to)) == [("reply_to", problem)]
    requests = [
        pb.SubmitTaskRequest(type="echo"),
        pb.SubmitTaskRequest(type="echo", payload=payload(n=1), reply_to=reply_to),
    ]
    whole = pb.BatchSubmitTasksRequest(requests=requests)
    assert refusal(lambda: api.stub.BatchSubmitTasks(whole, timeout=10)) == [
        ("requests[1].reply_to", problem)
    ]
    each = pb.BatchSubmitTasksRequest(requests=requests, partial_success=True)
    accepted, refused = api.stub.BatchSubmitTasks(each, timeout=10).results
    assert accepted.WhichOneof("outcome") == "task"
    assert refused.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert field_violations(refused.error) == [("reply_to", problem)]
    request = pb.WatchTasksRequest(reply_to=reply_to)
    assert refusal(lambda: next(api.stub.WatchTasks(request, timeout=10))) == [
        ("reply_to", problem)
    ]


def test_include_current_with_a_reply_to_is_refused_pointing_to_current_ids(api: Api) -> None:
    request = pb.WatchTasksRequest(reply_to="client-1", include_current=True)
    [(field, problem)] = refusal(lambda: next(api.stub.WatchTasks(request, timeout=10)))
    assert field == "include_current"
    assert "current_ids" in problem
