"""The pure half of the clients: builds requests, converts responses, decides retries.

Nothing here does I/O, so the sync and asyncio clients share all of it.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from conveyor._dependencies import add_dependencies
from conveyor._errors import Unavailable
from conveyor._struct import struct_to_dict, value_to_python
from conveyor._types import (
    PendingReason,
    Progress,
    Task,
    TaskChange,
    TaskError,
    TaskSpec,
    TaskState,
    TaskType,
    TaskTypeLimits,
    TaskView,
    Worker,
)
from conveyor.v1 import task_pb2, task_service_pb2

_Channel = TypeVar("_Channel")

DEFAULT_TARGET = "localhost:50051"
DEFAULT_TIMEOUT = 10.0

_MIB = 1024 * 1024
DEFAULT_CHANNEL_OPTIONS: Mapping[str, Any] = {
    "grpc.max_receive_message_length": 8 * _MIB,
    "grpc.max_send_message_length": 8 * _MIB,
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 0,
}

# The one table between the SDK enum and the proto enum.
_STATE_TO_PROTO: Mapping[TaskState, task_pb2.TaskState.ValueType] = {
    TaskState.PENDING: task_pb2.TASK_STATE_PENDING,
    TaskState.RUNNING: task_pb2.TASK_STATE_RUNNING,
    TaskState.SUCCEEDED: task_pb2.TASK_STATE_SUCCEEDED,
    TaskState.FAILED: task_pb2.TASK_STATE_FAILED,
    TaskState.CANCELLED: task_pb2.TASK_STATE_CANCELLED,
}
_STATE_FROM_PROTO: Mapping[int, TaskState] = {
    proto: state for state, proto in _STATE_TO_PROTO.items()
}
# PENDING_REASON_UNSPECIFIED (0) reads as None: no reason, or not computed.
_PENDING_REASON_FROM_PROTO: Mapping[int, PendingReason] = {
    reason.value: reason for reason in PendingReason
}


def channel_options(options: Iterable[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """The SDK's default channel options, overridden by the caller's."""
    merged = dict(DEFAULT_CHANNEL_OPTIONS)
    merged.update(options)
    return list(merged.items())


def open_channel(
    insecure: Callable[..., _Channel],
    secure: Callable[..., _Channel],
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: Iterable[tuple[str, Any]],
) -> _Channel:
    """A channel of `grpc` or `grpc.aio` (whose factories are passed in), TLS
    when there are credentials, with the SDK's default options."""
    if credentials is None:
        return insecure(target, options=channel_options(options))
    return secure(target, credentials, options=channel_options(options))


def call_metadata(
    metadata: Iterable[tuple[str, str]], token: str | None
) -> tuple[tuple[str, str], ...]:
    """The metadata sent with every call: the caller's, and the bearer token."""
    entries = tuple(metadata)
    if token is None:
        return entries
    if not token or not all("!" <= char <= "~" for char in token):
        raise ValueError("token must be non-empty printable ASCII without spaces")
    if any(key.lower() == "authorization" for key, _ in entries):
        raise ValueError("give token= or an authorization metadata entry, not both")
    return (*entries, ("authorization", f"Bearer {token}"))


def state_to_proto(state: TaskState) -> task_pb2.TaskState.ValueType:
    return _STATE_TO_PROTO[state]


def state_from_proto(value: int) -> TaskState:
    try:
        return _STATE_FROM_PROTO[value]
    except KeyError:
        raise ValueError(f"unknown task state {value} from the service") from None


def pending_reason_from_proto(value: int) -> PendingReason | None:
    """The reason, or None for PENDING_REASON_UNSPECIFIED and reasons newer than the SDK."""
    return _PENDING_REASON_FROM_PROTO.get(value)


# --- google.protobuf well-known types <-> Python ---------------------------------


def dict_to_struct(payload: Mapping[str, Any] | None) -> struct_pb2.Struct:
    if payload is not None and not isinstance(payload, Mapping):
        # Struct.update would fail deep inside protobuf with an AttributeError.
        raise TypeError(
            f"payload must be a mapping (a JSON object) or None, not "
            f"{type(payload).__name__}; wrap other values in one, e.g. {{'items': [1, 2]}}"
        )
    struct = struct_pb2.Struct()
    if payload:
        try:
            struct.update(payload)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"payload must be JSON-compatible: {exc}") from exc
    return struct


def timestamp_to_datetime(timestamp: timestamp_pb2.Timestamp) -> datetime | None:
    """A UTC-aware datetime, or None for an unset timestamp."""
    if timestamp.seconds == 0 and timestamp.nanos == 0:
        return None
    return timestamp.ToDatetime(tzinfo=UTC)


def datetime_to_timestamp(value: datetime, name: str) -> timestamp_pb2.Timestamp:
    """A timestamp of an aware datetime; `name` is the argument, for the error."""
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive datetime is local time to some callers and UTC to others.
        raise ValueError(
            f"{name} must be timezone-aware, such as datetime.now(UTC) - timedelta(days=1)"
        )
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(value)
    return timestamp


def to_duration(value: float | timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    if isinstance(value, timedelta):
        duration.FromTimedelta(value)
    else:
        if not math.isfinite(value):
            raise ValueError(f"a duration must be finite, not {value!r}")
        duration.FromNanoseconds(round(value * 1e9))
    return duration


# --- responses -> SDK values --------------------------------------------------------


def task_from_proto(message: task_pb2.Task) -> Task:
    """The one converter from a `conveyor.v1.Task` message to a `Task`."""
    return Task(
        id=message.id,
        type=message.type,
        state=state_from_proto(message.state),
        payload=struct_to_dict(message.payload),
        result=value_to_python(message.result) if message.HasField("result") else None,
        error=(
            TaskError(
                code=message.error.code,
                message=message.error.message,
                exception_type=message.error.exception_type,
            )
            if message.HasField("error")
            else None
        ),
        progress=Progress(
            percent=message.progress.percent,
            message=message.progress.message,
            current=message.progress.current,
            total=message.progress.total,
        ),
        attempt=message.attempt,
        max_attempts=message.max_attempts,
        priority=message.priority,
        labels=dict(message.labels),
        create_time=timestamp_to_datetime(message.create_time),
        start_time=timestamp_to_datetime(message.start_time),
        end_time=timestamp_to_datetime(message.end_time),
        update_time=timestamp_to_datetime(message.update_time),
        scheduled_time=timestamp_to_datetime(message.scheduled_time),
        timeout=message.timeout.ToTimedelta() if message.HasField("timeout") else None,
        idempotency_key=message.idempotency_key or None,
        cancel_requested=message.cancel_requested,
        version=message.version,
        concurrency_key=message.concurrency_key or None,
        depends_on=tuple(message.depends_on),
        run_on_dependency_failure=message.run_on_dependency_failure,
        pending_reason=pending_reason_from_proto(message.pending_reason),
        pending_message=message.pending_message,
        raw=message,
    )


def task_type_from_proto(message: task_service_pb2.TaskType) -> TaskType:
    """The one converter from a `conveyor.v1.TaskType` message to a `TaskType`."""
    return TaskType(
        name=message.name,
        description=message.description,
        workers=message.workers,
        example_payload=(
            struct_to_dict(message.example_payload) if message.HasField("example_payload") else None
        ),
        limits=limits_from_proto(message.limits),
        default_limits=limits_from_proto(message.default_limits),
        paused=message.paused,
        running=message.running,
        pending=message.pending,
        raw=message,
    )


def limits_from_proto(message: task_service_pb2.TaskTypeLimits) -> TaskTypeLimits:
    return TaskTypeLimits(
        max_running=message.max_running,
        max_running_per_key=message.max_running_per_key,
        max_starts_per_second=message.max_starts_per_second,
        burst=message.burst,
    )


def worker_from_proto(message: task_service_pb2.Worker) -> Worker:
    """The one converter from a `conveyor.v1.Worker` message to a `Worker`."""
    return Worker(
        id=message.id,
        host=message.host,
        pid=message.pid,
        task_types=tuple(message.task_types),
        threads=message.threads,
        running=message.running,
        start_time=timestamp_to_datetime(message.start_time),
        heartbeat_time=timestamp_to_datetime(message.heartbeat_time),
        raw=message,
    )


# --- SDK arguments -> requests ------------------------------------------------------


def new_reply_to() -> str:
    """A client's name for its result stream (see `SubmitTaskRequest.reply_to`)."""
    return "sdk-" + secrets.token_urlsafe(16)


def submit_request(
    spec: TaskSpec, reply_to: str = "", batch: Sequence[TaskSpec] = ()
) -> task_service_pb2.SubmitTaskRequest:
    """The request for one spec; `batch` is the `submit_batch` it is part of,
    where its `depends_on` may name earlier specs."""
    request = task_service_pb2.SubmitTaskRequest(
        type=spec.type,
        reply_to=reply_to,
        payload=dict_to_struct(spec.payload),
        labels=dict(spec.labels or {}),
        idempotency_key=spec.idempotency_key or "",
        max_attempts=spec.max_attempts or 0,
        priority=spec.priority,
        concurrency_key=spec.concurrency_key or "",
        run_on_dependency_failure=spec.run_on_dependency_failure,
    )
    if spec.timeout is not None:
        request.timeout.CopyFrom(to_duration(spec.timeout))
    if spec.delay is not None:
        request.delay.CopyFrom(to_duration(spec.delay))
    add_dependencies(request, spec.depends_on, batch)
    return request


def batch_request(
    specs: Sequence[TaskSpec], reply_to: str = ""
) -> task_service_pb2.BatchSubmitTasksRequest:
    return task_service_pb2.BatchSubmitTasksRequest(
        requests=[submit_request(spec, reply_to, specs) for spec in specs]
    )


def list_request(
    *,
    states: Iterable[TaskState] | None,
    type: str | None,
    labels: Mapping[str, str] | None,
    page_size: int,
    page_token: str = "",
    view: TaskView = TaskView.FULL,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> task_service_pb2.ListTasksRequest:
    request = task_service_pb2.ListTasksRequest(
        view=view.value,
        page_size=page_size,
        page_token=page_token,
        states=[state_to_proto(state) for state in states or ()],
        type=type or "",
        labels=dict(labels or {}),
    )
    set_created_range(request, created_after, created_before)
    return request


def set_created_range(
    message: task_service_pb2.ListTasksRequest | task_service_pb2.TaskFilter,
    created_after: datetime | None,
    created_before: datetime | None,
) -> None:
    """Set the creation-time bounds of a list request or a batch action's filter."""
    if created_after is not None:
        message.created_after.CopyFrom(datetime_to_timestamp(created_after, "created_after"))
    if created_before is not None:
        message.created_before.CopyFrom(datetime_to_timestamp(created_before, "created_before"))


def watch_tasks_request(
    *,
    states: Iterable[TaskState] | None,
    type: str | None,
    labels: Mapping[str, str] | None,
    ids: Iterable[str] | None,
    cursor: str | None,
    include_current: bool,
) -> task_service_pb2.WatchTasksRequest:
    return task_service_pb2.WatchTasksRequest(
        states=[state_to_proto(state) for state in states or ()],
        type=type or "",
        labels=dict(labels or {}),
        ids=list(ids or ()),
        cursor=cursor or "",
        include_current=include_current,
    )


def change_from_proto(message: task_service_pb2.WatchTasksResponse) -> TaskChange:
    task = None if message.reset else task_from_proto(message.task)
    return TaskChange(task=task, cursor=message.cursor, current=message.current, raw=message)


def list_page_size(page_size: int, limit: int | None) -> int:
    """The page size to ask for: never more than the caller's limit.

    It stays the same on every page, since a page token goes with its request.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, not {page_size}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")
    return page_size if limit is None else max(1, min(page_size, limit))


# --- retries ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff, for UNAVAILABLE (and `codes`)."""

    max_tries: int = 3
    initial_backoff: float = 0.1
    multiplier: float = 2.0
    codes: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})

    def backoff(self, code: grpc.StatusCode, tries: int) -> float | None:
        """Seconds to wait before another try after `tries` failed ones, or None to give up."""
        if code not in self.codes or tries >= self.max_tries:
            return None
        return self.initial_backoff * self.multiplier ** (tries - 1)


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_tries=1)
# A watch stream that ends CANCELLED before its first message was shed by
# the server before any handler ran (gRPC does so to a burst of new calls
# past its backlog); opening it again is as safe as any watch.
NEW_WATCH_RETRY = RetryPolicy(
    codes=frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
)


def submit_retry(specs: Iterable[TaskSpec]) -> RetryPolicy:
    """Submitting again is safe only when every task carries an idempotency key."""
    return DEFAULT_RETRY if all(spec.idempotency_key for spec in specs) else NO_RETRY


def deadline_after(timeout: float | None, now: float) -> float | None:
    return None if timeout is None else now + timeout


def remaining(deadline: float | None, now: float) -> float | None:
    """Seconds left until a monotonic deadline (never negative), or None without one."""
    return None if deadline is None else max(0.0, deadline - now)


def watch_ended_early(task_id: str) -> Unavailable:
    """What `wait` raises when a watch stream ends before a terminal
    snapshot and the task is still unfinished."""
    return Unavailable(
        f"the watch stream of task {task_id} ended before the task finished",
        code=grpc.StatusCode.UNAVAILABLE,
    )
