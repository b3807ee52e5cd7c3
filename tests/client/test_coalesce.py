"""The shared half of coalesced submits: the queue's bounds and the wave's
per-request retry policy, with the flows driven by hand as a client would."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from conveyor import (
    AlreadyExists,
    ConveyorError,
    InvalidArgument,
    TaskSpec,
    Unavailable,
    _flows,
)
from conveyor._coalesce import (
    MAX_WAVE_BYTES,
    MAX_WAVE_REQUESTS,
    QueuedSubmit,
    SubmitQueue,
    send,
)
from conveyor.v1 import task_pb2, task_service_pb2


def _submit(key: str | None = None, payload: dict[str, Any] | None = None) -> QueuedSubmit:
    return QueuedSubmit(
        TaskSpec("echo", payload, idempotency_key=key), None, 10.0, time.monotonic()
    )


def test_a_lone_submit_goes_at_once_and_the_others_queue() -> None:
    queue: SubmitQueue[QueuedSubmit] = SubmitQueue()
    first, second, third = _submit(), _submit(), _submit()
    assert queue.arrive(first)
    assert not queue.arrive(second) and not queue.arrive(third)
    assert queue.next_wave() == [second, third]
    # That wave is in flight now: the next arrival queues too.
    assert not queue.arrive(first)
    assert queue.next_wave() == [first]
    assert queue.next_wave() == []
    assert queue.arrive(second)  # nothing in flight any more


def test_a_wave_is_bounded_by_count_and_by_bytes() -> None:
    queue: SubmitQueue[QueuedSubmit] = SubmitQueue()
    queue.arrive(_submit())
    small = [_submit() for _ in range(MAX_WAVE_REQUESTS + 5)]
    for submit in small:
        queue.arrive(submit)
    assert queue.next_wave() == small[:MAX_WAVE_REQUESTS]
    big = [_submit(payload={"blob": "x" * (MAX_WAVE_BYTES // 3)}) for _ in range(4)]
    for submit in big:
        queue.arrive(submit)
    assert queue.next_wave() == small[MAX_WAVE_REQUESTS:] + big[:2]
    assert queue.next_wave() == big[2:]
    huge = _submit(payload={"blob": "x" * (MAX_WAVE_BYTES + 1)})
    queue.arrive(huge)
    assert queue.next_wave() == [huge]  # the first of a wave always goes


def test_withdraw_takes_only_a_submit_still_queued() -> None:
    queue: SubmitQueue[QueuedSubmit] = SubmitQueue()
    first, second, third = _submit(), _submit(), _submit()
    queue.arrive(first)
    queue.arrive(second)
    queue.arrive(third)
    assert queue.withdraw(second)
    assert not queue.withdraw(first)  # in flight
    assert queue.next_wave() == [third]
    assert not queue.withdraw(third)


def _task(task_id: str) -> task_pb2.Task:
    return task_pb2.Task(id=task_id, type="echo", state=task_pb2.TASK_STATE_PENDING)


def _bad_request(field: str) -> task_service_pb2.Status:
    status = task_service_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="bad")
    status.details.add().Pack(
        error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field)]
        )
    )
    return status


def test_each_result_becomes_its_callers_task_or_error() -> None:
    wave = [_submit(), _submit(), _submit()]
    flow = send(wave)
    call = next(flow)
    assert isinstance(call, _flows.Call) and call.method == "BatchSubmitTasks"
    assert isinstance(call.request, task_service_pb2.BatchSubmitTasksRequest)
    assert call.request.partial_success and len(call.request.requests) == 3
    response = task_service_pb2.BatchSubmitTasksResponse()
    response.results.add().task.CopyFrom(_task("t-1"))
    response.results.add().error.CopyFrom(_bad_request("payload.x"))
    response.results.add().error.CopyFrom(
        task_service_pb2.Status(code=grpc.StatusCode.ALREADY_EXISTS.value[0], message="key")
    )
    with pytest.raises(StopIteration):
        flow.send(response)
    assert wave[0].result().id == "t-1"
    with pytest.raises(InvalidArgument) as invalid:
        wave[1].result()
    assert invalid.value.field_violations == [("payload.x", "")]
    with pytest.raises(AlreadyExists, match="key"):
        wave[2].result()


def test_after_unavailable_only_the_keyed_submits_are_sent_again() -> None:
    keyed, plain, also_keyed = _submit("k-1"), _submit(), _submit("k-2")
    flow = send([keyed, plain, also_keyed])
    next(flow)
    sleep = flow.throw(Unavailable("down", code=grpc.StatusCode.UNAVAILABLE))
    assert isinstance(sleep, _flows.Sleep)
    with pytest.raises(Unavailable):
        plain.result()
    again = flow.send(None)
    assert isinstance(again, _flows.Call)
    assert isinstance(again.request, task_service_pb2.BatchSubmitTasksRequest)
    assert [r.idempotency_key for r in again.request.requests] == ["k-1", "k-2"]
    response = task_service_pb2.BatchSubmitTasksResponse()
    response.results.add().task.CopyFrom(_task("t-1"))
    response.results.add().error.CopyFrom(
        task_service_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="store down")
    )
    third = flow.send(response)
    assert isinstance(third, _flows.Sleep)
    assert keyed.result().id == "t-1"
    last = flow.send(None)
    assert isinstance(last, _flows.Call)
    assert [r.idempotency_key for r in last.request.requests] == ["k-2"]  # type: ignore[attr-defined]
    # Out of tries: the error stays.
    with pytest.raises(StopIteration):
        flow.throw(Unavailable("down", code=grpc.StatusCode.UNAVAILABLE))
    with pytest.raises(Unavailable):
        also_keyed.result()


def test_a_wave_of_one_is_a_plain_submit() -> None:
    submit = _submit()
    flow = send([submit])
    call = next(flow)
    assert isinstance(call, _flows.Call) and call.method == "SubmitTask"
    with pytest.raises(StopIteration):
        flow.throw(InvalidArgument("bad", code=grpc.StatusCode.INVALID_ARGUMENT))
    with pytest.raises(InvalidArgument):
        submit.result()


def test_a_server_without_partial_success_answers_all_or_nothing() -> None:
    wave = [_submit(), _submit()]
    flow = send(wave)
    next(flow)
    response = task_service_pb2.BatchSubmitTasksResponse(tasks=[_task("t-1"), _task("t-2")])
    with pytest.raises(StopIteration):
        flow.send(response)
    assert [submit.result().id for submit in wave] == ["t-1", "t-2"]
    flow = send(wave)
    next(flow)
    with pytest.raises(StopIteration):
        flow.send(task_service_pb2.BatchSubmitTasksResponse())
    with pytest.raises(ConveyorError, match="0 results for 2 requests"):
        wave[0].result()
