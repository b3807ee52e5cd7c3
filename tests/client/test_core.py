"""The pure half of the SDK: converters, request builders, retry decisions, error mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from conveyor import (
    ConveyorError,
    InvalidArgument,
    Task,
    TaskError,
    TaskFailed,
    TaskNotFound,
    TaskSpec,
    TaskState,
    Unavailable,
    WaitTimeout,
    _core,
)
from conveyor._errors import from_rpc_error, translate_rpc_errors
from conveyor.v1 import task_pb2


def _task_message(**fields: object) -> task_pb2.Task:
    message = task_pb2.Task(id="t-1", type="echo", state=task_pb2.TASK_STATE_PENDING, version=1)
    for name, value in fields.items():
        setattr(message, name, value)
    return message


# --- states ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(TaskState))
def test_state_round_trips_through_the_proto_enum(state: TaskState) -> None:
    proto = _core.state_to_proto(state)
    assert proto == state.value
    assert _core.state_from_proto(proto) is state


def test_unspecified_state_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown task state 0"):
        _core.state_from_proto(task_pb2.TASK_STATE_UNSPECIFIED)


def test_terminal_states() -> None:
    assert {state for state in TaskState if state.is_terminal} == {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.CANCELLED,
    }


# --- Task converter -------------------------------------------------------------------


def test_minimal_task_converts_with_unset_fields_as_none() -> None:
    task = _core.task_from_proto(_task_message())
    assert task.id == "t-1"
    assert task.state is TaskState.PENDING
    assert task.payload == {}
    assert task.result is None
    assert task.error is None
    assert task.create_time is None
    assert task.start_time is None
    assert task.end_time is None
    assert task.update_time is None
    assert task.scheduled_time is None
    assert task.timeout is None
    assert task.idempotency_key is None
    assert task.progress.percent == 0.0
    assert not task.is_terminal


def test_full_task_converts() -> None:
    message = _task_message(
        state=task_pb2.TASK_STATE_SUCCEEDED,
        attempt=2,
        max_attempts=3,
        priority=-5,
        idempotency_key="key-1",
        cancel_requested=True,
        version=7,
    )
    message.payload.update({"n": 3, "ratio": 0.5, "items": [1, "a", None, True], "nested": {}})
    message.result.struct_value.update({"rows": 2})
    message.labels["team"] = "data"
    message.progress.percent = 50.0
    message.progress.message = "half"
    message.progress.current = 5
    message.progress.total = 10
    message.create_time.FromDatetime(datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC))
    message.end_time.FromSeconds(1_700_000_000)
    message.timeout.FromSeconds(90)

    task = _core.task_from_proto(message)

    assert task.payload == {"n": 3, "ratio": 0.5, "items": [1, "a", None, True], "nested": {}}
    assert isinstance(task.payload["n"], int)
    assert task.result == {"rows": 2}
    assert task.labels == {"team": "data"}
    assert task.progress.message == "half"
    assert (task.progress.current, task.progress.total) == (5, 10)
    assert task.create_time == datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert task.create_time.tzinfo is UTC
    assert task.end_time == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert task.timeout == timedelta(seconds=90)
    assert task.idempotency_key == "key-1"
    assert task.cancel_requested
    assert (task.attempt, task.max_attempts, task.priority, task.version) == (2, 3, -5, 7)
    assert task.raw is message
    assert task.is_terminal


def test_result_and_error_only_when_set() -> None:
    null_result = _task_message(state=task_pb2.TASK_STATE_SUCCEEDED)
    null_result.result.null_value = struct_pb2.NULL_VALUE
    assert _core.task_from_proto(null_result).result is None

    scalar = _task_message(state=task_pb2.TASK_STATE_SUCCEEDED)
    scalar.result.number_value = 2.5
    assert _core.task_from_proto(scalar).result == 2.5

    failed = _task_message(state=task_pb2.TASK_STATE_FAILED)
    failed.error.code = "HANDLER_ERROR"
    failed.error.message = "boom"
    failed.error.exception_type = "RuntimeError"
    assert _core.task_from_proto(failed).error == TaskError("HANDLER_ERROR", "boom", "RuntimeError")


def test_huge_and_fractional_numbers_stay_floats() -> None:
    value = struct_pb2.Value(number_value=2.0**60)
    assert isinstance(_core.value_to_python(value), float)
    assert _core.value_to_python(struct_pb2.Value(number_value=-3.0)) == -3


def test_task_is_frozen_and_hides_raw_from_repr() -> None:
    task = _core.task_from_proto(_task_message())
    with pytest.raises(AttributeError):
        task.id = "other"  # type: ignore[misc]
    assert "raw" not in repr(task)
    assert isinstance(task, Task)


# --- requests -------------------------------------------------------------------------


def test_submit_request_from_a_spec() -> None:
    spec = TaskSpec(
        type="sleep",
        payload={"seconds": 2},
        labels={"a": "b"},
        idempotency_key="k",
        max_attempts=4,
        timeout=1.5,
        delay=timedelta(minutes=1),
        priority=9,
    )
    request = _core.submit_request(spec)
    assert request.type == "sleep"
    assert request.payload["seconds"] == 2
    assert dict(request.labels) == {"a": "b"}
    assert request.idempotency_key == "k"
    assert request.max_attempts == 4
    assert request.timeout.ToTimedelta() == timedelta(seconds=1.5)
    assert request.delay.ToTimedelta() == timedelta(minutes=1)
    assert request.priority == 9


def test_submit_request_defaults_leave_fields_unset() -> None:
    request = _core.submit_request(TaskSpec(type="echo"))
    assert not request.HasField("timeout")
    assert not request.HasField("delay")
    assert request.max_attempts == 0
    assert request.idempotency_key == ""
    assert len(request.payload.fields) == 0


def test_non_json_payload_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="JSON-compatible"):
        _core.submit_request(TaskSpec(type="echo", payload={"when": datetime.now(UTC)}))


def test_batch_request_keeps_order() -> None:
    request = _core.batch_request([TaskSpec(type="a"), TaskSpec(type="b")])
    assert [item.type for item in request.requests] == ["a", "b"]


def test_list_request() -> None:
    request = _core.list_request(
        states=[TaskState.FAILED, TaskState.CANCELLED],
        type="echo",
        labels={"run": "1"},
        page_size=2,
        page_token="tok",
    )
    assert list(request.states) == [task_pb2.TASK_STATE_FAILED, task_pb2.TASK_STATE_CANCELLED]
    assert (request.type, request.page_size, request.page_token) == ("echo", 2, "tok")
    assert dict(request.labels) == {"run": "1"}


def test_list_page_size() -> None:
    assert _core.list_page_size(100, None) == 100
    assert _core.list_page_size(100, 7) == 7
    assert _core.list_page_size(2, 7) == 2
    with pytest.raises(ValueError, match="page_size"):
        _core.list_page_size(0, None)


def test_channel_options_defaults_and_overrides() -> None:
    options = dict(_core.channel_options([("grpc.keepalive_time_ms", 5), ("grpc.x", "y")]))
    assert options["grpc.max_receive_message_length"] == 8 * 1024 * 1024
    assert options["grpc.max_send_message_length"] == 8 * 1024 * 1024
    assert options["grpc.keepalive_time_ms"] == 5
    assert options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 0
    assert options["grpc.x"] == "y"


# --- retries --------------------------------------------------------------------------


def test_retry_policy_backs_off_only_on_unavailable() -> None:
    policy = _core.DEFAULT_RETRY
    assert policy.backoff(grpc.StatusCode.UNAVAILABLE, 1) == pytest.approx(0.1)
    assert policy.backoff(grpc.StatusCode.UNAVAILABLE, 2) == pytest.approx(0.2)
    assert policy.backoff(grpc.StatusCode.UNAVAILABLE, 3) is None
    assert policy.backoff(grpc.StatusCode.DEADLINE_EXCEEDED, 1) is None
    assert policy.backoff(grpc.StatusCode.INTERNAL, 1) is None
    assert _core.NO_RETRY.backoff(grpc.StatusCode.UNAVAILABLE, 1) is None


def test_submit_is_retried_only_with_idempotency_keys() -> None:
    assert _core.submit_retry([TaskSpec(type="a", idempotency_key="k")]) is _core.DEFAULT_RETRY
    assert _core.submit_retry([TaskSpec(type="a")]) is _core.NO_RETRY
    mixed = [TaskSpec(type="a", idempotency_key="k"), TaskSpec(type="b")]
    assert _core.submit_retry(mixed) is _core.NO_RETRY


def test_remaining_time() -> None:
    assert _core.remaining(None, 5.0) is None
    assert _core.remaining(10.0, 4.0) == 6.0
    assert _core.remaining(10.0, 11.0) == 0.0


# --- errors ---------------------------------------------------------------------------


def _bad_request_metadata() -> grpc.aio.Metadata:
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="type", description="required")
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    unknown = any_pb2.Any(type_url="type.example.com/x.Unknown", value=b"")
    status = status_pb2.Status(code=3, message="bad task", details=[detail, unknown])
    return grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))


def test_rpc_error_maps_to_subclass_with_details() -> None:
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.aio.Metadata(),
        _bad_request_metadata(),
        details="bad task",
    )
    mapped = from_rpc_error(error)
    assert type(mapped) is InvalidArgument
    assert mapped.code is grpc.StatusCode.INVALID_ARGUMENT
    assert mapped.message == "bad task"
    assert mapped.field_violations == [("type", "required")]
    assert isinstance(mapped.details[0], error_details_pb2.BadRequest)
    assert isinstance(mapped.details[1], any_pb2.Any)
    assert str(mapped) == "INVALID_ARGUMENT: bad task"


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.NOT_FOUND, TaskNotFound),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.INTERNAL, ConveyorError),
    ],
)
def test_codes_map_through_the_table(code: grpc.StatusCode, cls: type[ConveyorError]) -> None:
    error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")
    mapped = from_rpc_error(error)
    assert type(mapped) is cls
    assert mapped.details == []
    assert mapped.field_violations == []


def test_translate_chains_the_grpc_error() -> None:
    original = grpc.aio.AioRpcError(
        grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), details="no task"
    )
    with pytest.raises(TaskNotFound) as caught, translate_rpc_errors():
        raise original
    assert caught.value.__cause__ is original


def test_bare_rpc_error_is_unknown() -> None:
    assert from_rpc_error(grpc.RpcError("odd")).code is grpc.StatusCode.UNKNOWN


def test_task_failed_and_wait_timeout_messages() -> None:
    message = _task_message(state=task_pb2.TASK_STATE_FAILED)
    message.error.code = "TIMEOUT"
    message.error.message = "too slow"
    failed = TaskFailed(_core.task_from_proto(message))
    assert str(failed) == "task t-1 ended FAILED: TIMEOUT: too slow"
    assert failed.task.id == "t-1"
    timeout = WaitTimeout("t-1", 0.5)
    assert isinstance(timeout, TimeoutError)
    assert timeout.task is None
    assert "0.5 s" in str(timeout)


def test_task_failed_is_a_conveyor_error_with_the_task_error_as_error_info() -> None:
    message = _task_message(state=task_pb2.TASK_STATE_FAILED)
    message.error.code = "HANDLER_ERROR"
    message.error.message = "boom"
    message.error.exception_type = "builtins.RuntimeError"
    failed = TaskFailed(_core.task_from_proto(message))
    assert isinstance(failed, ConveyorError)
    assert failed.code is grpc.StatusCode.UNKNOWN
    assert failed.message == str(failed) == "task t-1 ended FAILED: HANDLER_ERROR: boom"
    [info] = failed.details
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "HANDLER_ERROR"
    assert info.domain == "conveyor"
    assert dict(info.metadata) == {"task_id": "t-1", "exception_type": "builtins.RuntimeError"}
    assert failed.field_violations == []


def test_task_failed_of_a_cancelled_task_is_cancelled() -> None:
    failed = TaskFailed(_core.task_from_proto(_task_message(state=task_pb2.TASK_STATE_CANCELLED)))
    assert failed.code is grpc.StatusCode.CANCELLED
    assert failed.details == []
    assert str(failed) == "task t-1 ended CANCELLED"


def test_wait_timeout_is_a_deadline_exceeded_conveyor_error_and_a_timeout_error() -> None:
    last = _core.task_from_proto(_task_message(state=task_pb2.TASK_STATE_RUNNING))
    timeout = WaitTimeout("t-1", 0.5, last)
    assert isinstance(timeout, ConveyorError)
    assert isinstance(timeout, TimeoutError)
    assert timeout.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert timeout.message == str(timeout) == "task t-1 did not finish within 0.5 s"
    assert timeout.details == []
    assert timeout.task is last
    assert timeout.task_id == "t-1"
    assert timeout.timeout == 0.5
