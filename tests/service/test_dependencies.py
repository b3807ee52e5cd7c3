"""Dependencies through the API: what submit refuses (codes, field
violations, messages), and chains and fan-ins submitted in one batch that
run in order on every store, each handler reading its parents' outcomes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from conveyor_server import HandlerRegistry, NonRetryableError, TaskContext
from tests.support.raw_api import Api, payload, violations
from tests.support.server import ServerThread, test_config

registry = HandlerRegistry()


@registry.task("add")
def add(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Its number plus the results of the tasks it depends on."""
    parents = ctx.dependency_results()
    return payload["n"] + sum(parents.values())


@registry.task("refuse")
def refuse(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    raise NonRetryableError("refused on purpose")


@registry.task("report")
def report(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """How each task it depends on ended, as its context tells."""
    return {
        task_id: [dependency.state, dependency.error.code if dependency.error else ""]
        for task_id, dependency in ctx.dependencies().items()
    }


@pytest.fixture
def api(store_url: str) -> Iterator[Api]:
    thread = ServerThread(test_config(store=store_url), registry).start()
    client = Api(thread.address)
    yield client
    client.close()
    thread.stop()


def request(type: str, **fields: Any) -> pb.SubmitTaskRequest:
    values = fields.pop("payload", None)
    message = pb.SubmitTaskRequest(type=type, **fields)
    if values is not None:
        message.payload.CopyFrom(payload(**values))
    return message


def refusal(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()  # type: ignore[attr-defined]
    return error


def test_a_chain_submitted_at_once_runs_in_order_each_reading_its_parent(api: Api) -> None:
    first, second, third = api.batch_submit(
        request("add", payload={"n": 1}),
        request("add", payload={"n": 2}, depends_on_requests=[0]),
        request("add", payload={"n": 3}, depends_on_requests=[1]),
    )
    assert list(second.depends_on) == [first.id]
    assert list(third.depends_on) == [second.id]
    done = [api.wait(task.id) for task in (first, second, third)]
    assert [task.state for task in done] == [task_pb2.TASK_STATE_SUCCEEDED] * 3
    assert [task.result.number_value for task in done] == [1, 3, 6]
    for parent, child in itertools.pairwise(done):
        assert child.start_time.ToNanoseconds() >= parent.end_time.ToNanoseconds()


def test_a_fan_in_waits_for_every_parent_and_reads_all_their_results(api: Api) -> None:
    *parents, joined = api.batch_submit(
        request("add", payload={"n": 1}),
        request("add", payload={"n": 2}),
        request("add", payload={"n": 10}, depends_on_requests=[0, 1]),
    )
    assert list(joined.depends_on) == [parent.id for parent in parents]
    assert api.wait(joined.id).result.number_value == 13


def test_a_failed_parent_cancels_its_child_unless_it_runs_on_failure(api: Api) -> None:
    parent, existing = api.batch_submit(request("refuse"), request("add", payload={"n": 5}))
    api.wait(existing.id)
    cancelled, told = api.batch_submit(
        request("add", payload={"n": 1}, depends_on=[parent.id]),
        request("report", depends_on=[parent.id, existing.id], run_on_dependency_failure=True),
    )
    assert told.run_on_dependency_failure
    ended = api.wait(cancelled.id)
    assert ended.state == task_pb2.TASK_STATE_CANCELLED
    assert ended.error.code == "DEPENDENCY_FAILED"
    assert parent.id in ended.error.message
    outcomes = json_format.MessageToDict(api.wait(told.id).result)
    assert outcomes == {
        parent.id: ["FAILED", "NON_RETRYABLE"],
        existing.id: ["SUCCEEDED", ""],
    }


def test_an_unknown_dependency_is_refused_naming_its_place(api: Api) -> None:
    real = api.submit("add", {"n": 1})
    error = refusal(lambda: api.submit("add", {"n": 1}, depends_on=[real.id, "no-such-task"]))
    [(field, description)] = violations(error)
    assert field == "depends_on[1]"
    assert "task no-such-task is no task of yours" in description
    error = refusal(
        lambda: api.batch_submit(
            request("add", payload={"n": 1}),
            request("add", payload={"n": 2}, depends_on=["no-such-task"]),
        )
    )
    assert [field for field, _ in violations(error)] == ["requests[1].depends_on[0]"]


def test_partial_success_refuses_what_waits_for_a_refused_request(api: Api) -> None:
    response = api.stub.BatchSubmitTasks(
        pb.BatchSubmitTasksRequest(
            partial_success=True,
            requests=[
                request("add", payload={"n": 1}, max_attempts=1000),
                request("add", payload={"n": 2}, depends_on_requests=[0]),
                request("add", payload={"n": 3}),
                request("add", payload={"n": 4}, depends_on=["no-such-task"]),
                request("add", payload={"n": 5}, depends_on_requests=[2]),
                request("add", payload={"n": 6}, depends_on_requests=[3]),
            ],
        ),
        timeout=10,
    )
    invalid, waits_on_invalid, fine, unknown, waits_on_fine, waits_on_unknown = response.results
    assert [r.WhichOneof("outcome") for r in response.results] == [
        "error",
        "error",
        "task",
        "error",
        "task",
        "error",
    ]
    assert invalid.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert waits_on_invalid.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "depends_on_requests[0]: request 0 was refused" in waits_on_invalid.error.message
    assert "depends_on[0]: task no-such-task is no task of yours" in unknown.error.message
    assert "request 3 was refused" in waits_on_unknown.error.message
    assert list(waits_on_fine.task.depends_on) == [fine.task.id]
    assert api.wait(waits_on_fine.task.id).result.number_value == 8


def test_dependencies_in_the_wrong_shape_are_refused_field_by_field(api: Api) -> None:
    error = refusal(lambda: api.submit("add", {"n": 1}, depends_on_requests=[0]))
    [(field, description)] = violations(error)
    assert field == "depends_on_requests"
    assert "in SubmitTask, give the ids of existing tasks in depends_on" in description

    error = refusal(
        lambda: api.batch_submit(
            request("add", payload={"n": 1}),
            request("add", payload={"n": 2}, depends_on_requests=[1, 0, 0]),
        )
    )
    assert violations(error) == [
        (
            "requests[1].depends_on_requests[0]",
            "1 is not an earlier request of this batch: a task cannot wait for itself or a "
            "later one (request 1 can wait for request 0)",
        ),
        (
            "requests[1].depends_on_requests[2]",
            "repeats depends_on_requests[1]; name each request once",
        ),
    ]

    error = refusal(lambda: api.submit("add", {"n": 1}, depends_on=["a b", "x", "x"]))
    assert [field for field, _ in violations(error)] == ["depends_on[0]", "depends_on[2]"]

    error = refusal(lambda: api.submit("add", {"n": 1}, depends_on=[f"t{i}" for i in range(101)]))
    [(field, description)] = violations(error)
    assert field == "depends_on"
    assert "a task waits for at most 100" in description

    error = refusal(lambda: api.submit("add", {"n": 1}, concurrency_key="no spaces"))
    assert violations(error) == [
        ("concurrency_key", "must be 1-128 letters, digits and . _ : / @ -")
    ]


def test_the_concurrency_key_and_dependencies_are_part_of_an_idempotent_request(
    api: Api,
) -> None:
    parent = api.submit("add", {"n": 1})
    keyed = api.submit("add", {"n": 2}, idempotency_key="k1", concurrency_key="acme")
    assert keyed.concurrency_key == "acme"
    assert api.submit("add", {"n": 2}, idempotency_key="k1", concurrency_key="acme").id == keyed.id
    for changed in ({"concurrency_key": "other"}, {"depends_on": [parent.id]}):
        fields: dict[str, Any] = {"concurrency_key": "acme", **changed}
        with pytest.raises(grpc.RpcError) as caught:
            api.submit("add", {"n": 2}, idempotency_key="k1", **fields)
        assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
