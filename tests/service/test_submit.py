"""SubmitTask, BatchSubmitTasks and GetTask through the real server."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.raw_api import Api, payload


def test_submit_returns_pending_task_at_once(api: Api) -> None:
    task = api.submit("echo", {"x": 1, "nested": {"y": [1, "two"]}}, labels={"team": "a"})
    assert len(task.id) == 22
    assert task.type == "echo"
    assert task.state == task_pb2.TASK_STATE_PENDING
    assert task.payload["x"] == 1
    assert task.labels == {"team": "a"}
    assert task.version == 1
    assert task.max_attempts == 1
    assert task.create_time.seconds > 0
    assert task.scheduled_time == task.create_time


def test_task_runs_to_success_with_result(api: Api) -> None:
    task = api.submit("echo", {"x": 1, "nested": {"y": [1, "two"]}})
    done = api.wait(task.id)
    assert done.state == task_pb2.TASK_STATE_SUCCEEDED
    assert dict(done.result.struct_value)["x"] == 1
    assert done.attempt == 1
    assert done.start_time.ToNanoseconds() >= done.create_time.ToNanoseconds()
    assert done.end_time.ToNanoseconds() >= done.start_time.ToNanoseconds()
    assert done.progress.percent == 100
    assert done.version > task.version
    assert not done.HasField("error")


def test_get_returns_same_task(api: Api) -> None:
    task = api.submit("echo", {})
    assert api.get(task.id).id == task.id


def test_csv_stats_computes_per_column_stats(api: Api) -> None:
    text = "name,age,score\nada,36,9.5\nbob,41,7\ncy,,8\nada,29,x\n"
    done = api.wait(api.submit("csv_stats", {"csv": text}).id)
    assert done.state == task_pb2.TASK_STATE_SUCCEEDED
    result = done.result.struct_value
    assert result["rows"] == 4
    name = result["columns"]["name"]
    assert name["type"] == "text" and name["count"] == 4 and name["distinct"] == 3
    age = result["columns"]["age"]
    assert (age["type"], age["count"], age["min"], age["max"]) == ("number", 3, 29, 41)
    assert age["mean"] == pytest.approx(106 / 3)
    score = result["columns"]["score"]
    assert score["type"] == "text"  # "x" makes it text
    assert done.progress.total == 4 and done.progress.current == 4


def test_csv_stats_with_ragged_rows_fails_with_reason(api: Api) -> None:
    done = api.wait(api.submit("csv_stats", {"csv": "a,b\n1,2\n3\n"}).id)
    assert done.state == task_pb2.TASK_STATE_FAILED
    assert done.error.code == "INVALID_PAYLOAD"
    assert "row 3 has 1 fields but the header has 2" in done.error.message


def test_batch_submit_returns_tasks_in_order(api: Api) -> None:
    requests = [pb.SubmitTaskRequest(type="echo", payload=payload(i=i)) for i in range(50)]
    response = api.stub.BatchSubmitTasks(pb.BatchSubmitTasksRequest(requests=requests), timeout=10)
    assert [t.payload["i"] for t in response.tasks] == list(range(50))
    assert len({t.id for t in response.tasks}) == 50
    for task in response.tasks:
        assert api.wait(task.id).state == task_pb2.TASK_STATE_SUCCEEDED


def test_batch_of_1000_is_accepted(api: Api) -> None:
    requests = [pb.SubmitTaskRequest(type="sleep") for _ in range(1000)]
    response = api.stub.BatchSubmitTasks(pb.BatchSubmitTasksRequest(requests=requests), timeout=10)
    assert len(response.tasks) == 1000


def test_idempotent_submit_returns_original(api: Api) -> None:
    first = api.submit("echo", {"a": 1}, idempotency_key="order-17:charge")
    again = api.submit("echo", {"a": 1}, idempotency_key="order-17:charge")
    assert again.id == first.id


def test_idempotency_conflict_is_already_exists(api: Api) -> None:
    api.submit("echo", {"a": 1}, idempotency_key="order-18")
    with pytest.raises(grpc.RpcError) as caught:
        api.submit("echo", {"a": 2}, idempotency_key="order-18")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "order-18" in caught.value.details()


def test_idempotency_key_repeated_inside_a_batch(api: Api) -> None:
    request = pb.SubmitTaskRequest(type="echo", idempotency_key="batch-dup")
    response = api.stub.BatchSubmitTasks(
        pb.BatchSubmitTasksRequest(requests=[request, request]), timeout=10
    )
    assert response.tasks[0].id == response.tasks[1].id


def test_conflicting_key_inside_a_batch_accepts_nothing(api: Api) -> None:
    first = pb.SubmitTaskRequest(type="echo", idempotency_key="batch-conflict", priority=1)
    second = pb.SubmitTaskRequest(type="echo", idempotency_key="batch-conflict", priority=2)
    with pytest.raises(grpc.RpcError) as caught:
        api.stub.BatchSubmitTasks(pb.BatchSubmitTasksRequest(requests=[first, second]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "batch-conflict" in caught.value.details()
    # All or nothing: the first request was not accepted either, so its key
    # is still free for it.
    task = api.submit("echo", {}, idempotency_key="batch-conflict", priority=2)
    assert task.priority == 2 and task.version == 1


def test_submit_fields_are_kept(api: Api) -> None:
    task = api.submit(
        "echo",
        {},
        max_attempts=4,
        priority=7,
        timeout=duration_pb2.Duration(seconds=30),
        delay=duration_pb2.Duration(seconds=3600),
    )
    assert task.max_attempts == 4
    assert task.priority == 7
    assert task.timeout.seconds == 30
    assert task.scheduled_time.seconds - task.create_time.seconds in (3599, 3600)
    api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)


def test_queue_full_is_resource_exhausted(make_api) -> None:  # type: ignore[no-untyped-def]
    _, api = make_api(max_queue=2)
    api.submit("wait_for_cancel", {"seconds": 5})
    api.submit("wait_for_cancel", {"seconds": 5})
    with pytest.raises(grpc.RpcError) as caught:
        api.submit("echo", {})
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in caught.value.details()
    requests = [pb.SubmitTaskRequest(type="echo")]
    with pytest.raises(grpc.RpcError) as caught:
        api.stub.BatchSubmitTasks(pb.BatchSubmitTasksRequest(requests=requests), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
