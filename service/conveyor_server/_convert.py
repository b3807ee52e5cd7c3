"""Conversions between records, protobuf messages and plain Python values."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from google.protobuf import struct_pb2

from conveyor._struct import struct_to_dict, value_to_python
from conveyor.v1 import task_pb2
from conveyor_server.stores import TaskRecord

_NULL = struct_pb2.NULL_VALUE


def set_timestamp(target: Any, seconds: float) -> None:
    whole = math.floor(seconds)
    target.seconds = whole
    target.nanos = int((seconds - whole) * 1e9)


def fill_task(task: task_pb2.Task, record: TaskRecord, *, full: bool = True) -> None:
    """Write a record into an empty Task message, in place: every response
    embeds its task this way, without building a Task and copying it.
    Without `full`, payload and result stay out (TASK_VIEW_BASIC)."""
    task.id = record.id
    task.type = record.type
    task.state = record.state.value  # type: ignore[assignment]
    task.version = record.version
    if record.attempt:
        task.attempt = record.attempt
    task.max_attempts = record.max_attempts
    if record.priority:
        task.priority = record.priority
    if record.cancel_requested:
        task.cancel_requested = True
    if full:
        if record.payload:
            task.payload.MergeFromString(record.payload)
        else:
            task.payload.SetInParent()
    if record.labels:
        task.labels.update(record.labels)
    if record.idempotency_key is not None:
        task.idempotency_key = record.idempotency_key
    if record.reply_to is not None:
        task.reply_to = record.reply_to
    if record.traceparent is not None:
        task.traceparent = record.traceparent
    if record.concurrency_key is not None:
        task.concurrency_key = record.concurrency_key
    if record.depends_on:
        task.depends_on.extend(record.depends_on)
    if record.run_on_dependency_failure:
        task.run_on_dependency_failure = True
    if full and record.result is not None:
        task.result.MergeFromString(record.result)
    error = record.error
    if error is not None:
        task.error.code = error.code
        task.error.message = error.message
        task.error.exception_type = error.exception_type
    progress = record.progress
    if progress is not None:
        task.progress.percent = progress.percent
        task.progress.message = progress.message
        task.progress.current = progress.current
        task.progress.total = progress.total
    set_timestamp(task.create_time, record.create_time)
    # A new task's three times are one float object: copy, not recompute.
    if record.update_time is record.create_time:
        task.update_time.CopyFrom(task.create_time)
    else:
        set_timestamp(task.update_time, record.update_time)
    if record.scheduled_time is record.create_time:
        task.scheduled_time.CopyFrom(task.create_time)
    else:
        set_timestamp(task.scheduled_time, record.scheduled_time)
    if record.start_time is not None:
        set_timestamp(task.start_time, record.start_time)
    if record.end_time is not None:
        set_timestamp(task.end_time, record.end_time)
    if record.timeout is not None:
        task.timeout.FromNanoseconds(int(record.timeout * 1e9))


class StructView(Mapping[str, Any]):
    """A read-only Mapping over a Struct that converts values on access, so
    a validator that reads one key does not pay for the whole payload."""

    __slots__ = ("_fields",)

    def __init__(self, struct: struct_pb2.Struct) -> None:
        self._fields = struct.fields

    def __getitem__(self, key: str) -> Any:
        if key not in self._fields:
            raise KeyError(key)
        return value_to_python(self._fields[key])

    def get(self, key: str, default: Any = None) -> Any:
        fields = self._fields
        return value_to_python(fields[key]) if key in fields else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


def result_to_python(result: bytes) -> Any:
    """A stored result (a serialized google.protobuf.Value) as Python."""
    value = struct_pb2.Value()
    value.MergeFromString(result)
    return value_to_python(value)


def payload_to_python(payload: bytes) -> dict[str, Any]:
    struct = struct_pb2.Struct()
    struct.MergeFromString(payload)
    return struct_to_dict(struct)


# How deep values may nest in a payload or a result. Clients parse messages
# at most 100 levels deep (protobuf's default); a value 32 containers down
# sits 99 levels deep in a GetTaskResponse. One level more and every read of
# the task fails on the client, though the server stored it.
MAX_NESTING = 32


class ResultNotJSON(TypeError):
    pass


def python_to_value(obj: Any, target: struct_pb2.Value, depth: int = 0) -> None:
    if depth > MAX_NESTING:
        raise ResultNotJSON(f"result nests deeper than {MAX_NESTING} levels")
    if obj is None:
        target.null_value = _NULL
    elif obj is True or obj is False:
        target.bool_value = obj
    elif isinstance(obj, int | float):
        number = float(obj)
        if not math.isfinite(number):
            raise ResultNotJSON(f"result holds a non-finite number {obj!r}")
        target.number_value = number
    elif isinstance(obj, str):
        target.string_value = obj
    elif isinstance(obj, dict):
        fields = target.struct_value.fields
        target.struct_value.SetInParent()
        for key, item in obj.items():
            if not isinstance(key, str):
                raise ResultNotJSON(f"result has a non-string key {key!r}")
            python_to_value(item, fields[key], depth + 1)
    elif isinstance(obj, list | tuple):
        values = target.list_value.values
        target.list_value.SetInParent()
        for item in obj:
            python_to_value(item, values.add(), depth + 1)
    else:
        raise ResultNotJSON(f"result holds a {type(obj).__name__}, which is not JSON")


def result_to_bytes(obj: Any) -> bytes:
    """Serialize a handler's return value as a google.protobuf.Value."""
    value = struct_pb2.Value()
    python_to_value(obj, value)
    return value.SerializeToString()
