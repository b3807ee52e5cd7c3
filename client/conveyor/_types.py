"""Typed values returned by the SDK: tasks, their state, progress and errors,
the task types a service accepts, the workers that run them, and schedules."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from conveyor.v1 import schedule_service_pb2, task_pb2, task_service_pb2

JSONValue: TypeAlias = dict[str, "JSONValue"] | list["JSONValue"] | str | int | float | bool | None
"""A value that JSON (and so `google.protobuf.Value`) can carry."""


class TaskState(enum.Enum):
    """The lifecycle state of a task; the values are the proto enum numbers."""

    PENDING = task_pb2.TASK_STATE_PENDING
    RUNNING = task_pb2.TASK_STATE_RUNNING
    SUCCEEDED = task_pb2.TASK_STATE_SUCCEEDED
    FAILED = task_pb2.TASK_STATE_FAILED
    CANCELLED = task_pb2.TASK_STATE_CANCELLED

    @property
    def is_terminal(self) -> bool:
        """True for SUCCEEDED, FAILED and CANCELLED: the task will not change by itself."""
        return self in _TERMINAL_STATES


_TERMINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})


class TaskView(enum.Enum):
    """How much of each task `list` returns; the values are the proto enum numbers.

    BASIC leaves out `payload` (an empty dict) and `result` (None), which can
    be large; `get` returns them.
    """

    BASIC = task_service_pb2.TASK_VIEW_BASIC
    FULL = task_service_pb2.TASK_VIEW_FULL


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a running task has come, as its handler reports it."""

    percent: float
    message: str
    current: int
    total: int


@dataclass(frozen=True, slots=True)
class TaskError:
    """Why a task failed, or why its last attempt failed."""

    code: str
    message: str
    exception_type: str


@dataclass(frozen=True, slots=True)
class Task:
    """A snapshot of one task. `raw` keeps the `conveyor.v1.Task` message it came from."""

    id: str
    type: str
    state: TaskState
    payload: dict[str, Any]
    result: JSONValue | None
    error: TaskError | None
    progress: Progress
    attempt: int
    max_attempts: int
    priority: int
    labels: Mapping[str, str]
    create_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    update_time: datetime | None
    scheduled_time: datetime | None
    timeout: timedelta | None
    idempotency_key: str | None
    cancel_requested: bool
    version: int
    raw: task_pb2.Task = field(repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        """True once the task is SUCCEEDED, FAILED or CANCELLED."""
        return self.state.is_terminal


@dataclass(frozen=True, slots=True)
class TaskChange:
    """One message of `Client.watch_tasks`: a task's latest snapshot, or a
    reset.

    `cursor` resumes after this message (`watch_tasks(cursor=...)`). On a
    reset (`task` is None) changes may have been missed: list the tasks
    again, then carry on reading. `current` marks a snapshot sent for
    `include_current` rather than a change. `raw` keeps the
    `conveyor.v1.WatchTasksResponse` message.
    """

    task: Task | None
    cursor: str
    current: bool
    raw: task_service_pb2.WatchTasksResponse = field(repr=False, compare=False)

    @property
    def reset(self) -> bool:
        return self.task is None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task to submit, as `Client.submit_batch` takes them.

    `timeout` and `delay` are seconds (or a `timedelta`); `None` leaves the
    server default.
    """

    type: str
    payload: Mapping[str, Any] | None = None
    labels: Mapping[str, str] | None = None
    idempotency_key: str | None = None
    max_attempts: int | None = None
    timeout: float | timedelta | None = None
    delay: float | timedelta | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class TaskType:
    """A task type the service accepts. `raw` keeps the `conveyor.v1.TaskType` message.

    `workers` counts the live worker processes that run it; 0 for a type only
    the API has handler code for. `example_payload` is None when the
    handler's author gave none.
    """

    name: str
    description: str
    workers: int
    example_payload: dict[str, Any] | None
    raw: task_service_pb2.TaskType = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Worker:
    """A live process that runs tasks. `raw` keeps the `conveyor.v1.Worker` message."""

    id: str
    host: str
    pid: int
    task_types: tuple[str, ...]
    threads: int
    running: int
    start_time: datetime | None
    heartbeat_time: datetime | None
    raw: task_service_pb2.Worker = field(repr=False, compare=False)


class OverlapPolicy(enum.Enum):
    """What a schedule does when a fire comes while its last task is
    unfinished; the values are the proto enum numbers."""

    SKIP = schedule_service_pb2.OVERLAP_POLICY_SKIP
    """Skip the fire (the default)."""
    ALLOW = schedule_service_pb2.OVERLAP_POLICY_ALLOW
    """Submit anyway: runs may overlap."""


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """One task a schedule submitted: for the fire at `fire_time`, or (when
    `triggered`) by `trigger_schedule` at that time."""

    fire_time: datetime | None
    task_id: str
    state: TaskState
    triggered: bool


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule: submits `task` at the times of `cron` (read in
    `time_zone`) or every `interval`. `raw` keeps the
    `conveyor.v1.Schedule` message.

    `next_fire_times` (up to 5, none while paused) and `recent_runs` (the
    latest 10 tasks, newest first) are computed when it is read.
    """

    id: str
    cron: str | None
    time_zone: str | None
    interval: timedelta | None
    task: TaskSpec
    overlap: OverlapPolicy
    catch_up_window: timedelta | None
    paused: bool
    description: str
    next_fire_times: tuple[datetime, ...]
    recent_runs: tuple[ScheduleRun, ...]
    create_time: datetime | None
    update_time: datetime | None
    last_fire_time: datetime | None
    raw: schedule_service_pb2.Schedule = field(repr=False, compare=False)
