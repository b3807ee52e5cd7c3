"""The clients' decisions, written once: retries, resumed watches, waits, paging.

A flow is a generator that yields the next thing to do (`Call` a unary
method, `Sleep`, `OpenWatch`, `Receive` the next streamed message, `Emit` a
task to the caller) and is sent the outcome, or has the call's
`ConveyorError` thrown in at the `yield`. `Client` drives each flow with
blocking I/O and `AsyncClient` with asyncio, as httpx drives an `auth_flow`;
nothing here does I/O, so the retry policy, the resume point and the wait
deadline are decided in this one place.

The docstrings of the flows behind public methods are those methods'
docstrings in both clients (see `shares_doc`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeAlias, TypeVar, get_args

from google.protobuf import message

from conveyor import _core
from conveyor._errors import ConveyorError, DeadlineExceeded, WaitTimeout, translate_rpc_errors
from conveyor._types import Task, TaskChange, TaskSpec, TaskState, TaskType, TaskView, Worker
from conveyor.v1 import task_service_pb2

if TYPE_CHECKING:
    from conveyor._task_logs import LogLine

_log = logging.getLogger(__name__)

_R = TypeVar("_R")
_F = TypeVar("_F", bound=Callable[..., Any])


class _Cancellable(Protocol):
    def cancel(self) -> bool: ...


_Stream = TypeVar("_Stream", bound=_Cancellable)

UnaryMethod: TypeAlias = Literal[
    "SubmitTask",
    "BatchSubmitTasks",
    "GetTask",
    "ListTasks",
    "CancelTask",
    "RetryTask",
    "ListTaskTypes",
    "ListWorkers",
    "BatchCancelTasks",
    "BatchRetryTasks",
    "UpdateTaskType",
    "PauseTaskType",
    "ResumeTaskType",
    "GetTaskLogs",
]


# The methods of ScheduleService: a Call of one goes to its stub.
ScheduleMethod: TypeAlias = Literal[
    "CreateSchedule",
    "GetSchedule",
    "ListSchedules",
    "UpdateSchedule",
    "DeleteSchedule",
    "PauseSchedule",
    "ResumeSchedule",
    "TriggerSchedule",
]
SCHEDULE_METHODS: frozenset[str] = frozenset(get_args(ScheduleMethod))


@dataclass(frozen=True, slots=True)
class Call:
    """Call a unary method of the stub; the outcome is its response."""

    method: UnaryMethod | ScheduleMethod
    request: message.Message
    rpc_timeout: float | None  # None: the client's default deadline


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this many seconds before the next step."""

    seconds: float


StreamMethod: TypeAlias = Literal["WatchTask", "WatchTasks"]


@dataclass(frozen=True, slots=True)
class OpenWatch:
    """Open a stream (WatchTask, or the `method` named) in place of any
    earlier one (which is cancelled)."""

    request: task_service_pb2.WatchTaskRequest | task_service_pb2.WatchTasksRequest
    timeout: float | None  # None: the stream has no deadline
    method: StreamMethod = "WatchTask"


@dataclass(frozen=True, slots=True)
class Receive:
    """Read the open stream; the outcome is its next message, or None at its end."""


@dataclass(frozen=True, slots=True)
class Emit:
    """Hand this task (or change, or log line) to the caller of a streaming
    method."""

    task: Task | TaskChange | LogLine


Step: TypeAlias = Call | Sleep | OpenWatch | Receive | Emit
Flow: TypeAlias = Generator[Step, Any, _R]


class FlowRun(Generic[_R]):
    """One run of a flow, the bookkeeping both drivers share.

    A driver performs each step of `steps()`, inside `answering()` when it
    does I/O, sets `reply` to the outcome, and reads `result` at the end;
    `close()` ends the flow and cancels the stream it opened last.
    """

    def __init__(self, flow: Flow[_R]) -> None:
        self._flow = flow
        self.reply: Any = None
        self._error: ConveyorError | None = None
        self._returned: list[_R] = []
        self._stream: _Cancellable | None = None

    def steps(self) -> Iterator[Step]:
        while True:
            reply, error = self.reply, self._error
            self.reply, self._error = None, None
            try:
                step = self._flow.send(reply) if error is None else self._flow.throw(error)
            except StopIteration as stop:
                self._returned.append(stop.value)
                return
            yield step

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Around a step's I/O: a gRPC error is translated and raised in the flow."""
        try:
            with translate_rpc_errors():
                yield
        except ConveyorError as exc:
            self._error = exc

    @property
    def result(self) -> _R:
        if not self._returned:
            raise RuntimeError("the flow has not returned")
        return self._returned[0]

    def opened(self, stream: _Stream) -> _Stream:
        """Note the stream an `OpenWatch` opened, cancelling the one before it."""
        if self._stream is not None:
            self._stream.cancel()
        self._stream = stream
        return stream

    def close(self) -> None:
        self._flow.close()
        if self._stream is not None:
            self._stream.cancel()


def shares_doc(flow: Callable[..., Any]) -> Callable[[_F], _F]:
    """Give a client method the docstring of the flow behind it."""

    def decorate(method: _F) -> _F:
        method.__doc__ = flow.__doc__
        return method

    return decorate


# --- the flows behind public methods ------------------------------------------------


def submit(spec: TaskSpec, rpc_timeout: float | None, reply_to: str = "") -> Flow[Task]:
    """Submit one task and return its handle at once (the task is PENDING).

    `timeout` is the execution timeout of one attempt and `delay` the wait
    before the first one, in seconds; `rpc_timeout` is this call's deadline.
    The call is retried after UNAVAILABLE only with an `idempotency_key`.

    The task runs once every task of `depends_on` (ids, tasks or handles)
    is finished; when one ends FAILED or CANCELLED it is cancelled (error
    `DEPENDENCY_FAILED`), or runs anyway with `run_on_dependency_failure`.
    Tasks of one `concurrency_key` (a customer, an account) run at most
    their type's `max_running_per_key` at once.
    """
    retry = _core.submit_retry([spec])
    response = yield from _unary(
        "SubmitTask", _core.submit_request(spec, reply_to), retry, rpc_timeout
    )
    return _core.task_from_proto(response.task)


def submit_batch(
    specs: Sequence[TaskSpec], rpc_timeout: float | None, reply_to: str = ""
) -> Flow[list[Task]]:
    """Submit several tasks at once: all are accepted, or none (the error says why).

    A spec's `depends_on` may name earlier specs of the same batch, by the
    `TaskSpec` object or by its index, so a chain or a fan-in is submitted
    at once::

        extract = TaskSpec("extract", {"day": "2026-01-31"})
        report = TaskSpec("report", depends_on=[extract])
        client.submit_batch([extract, report])
    """
    retry = _core.submit_retry(specs)
    response = yield from _unary(
        "BatchSubmitTasks", _core.batch_request(specs, reply_to), retry, rpc_timeout
    )
    return [_core.task_from_proto(task) for task in response.tasks]


def get(task_id: str, rpc_timeout: float | None) -> Flow[Task]:
    """The current snapshot of a task; raises `TaskNotFound` for an unknown id."""
    request = task_service_pb2.GetTaskRequest(id=task_id)
    response = yield from _unary("GetTask", request, _core.DEFAULT_RETRY, rpc_timeout)
    return _core.task_from_proto(response.task)


def cancel(task_id: str, rpc_timeout: float | None) -> Flow[Task]:
    """Cancel a task: a pending one at once, a running one by asking it to stop.

    Raises `FailedPrecondition` when the task already SUCCEEDED or FAILED.
    """
    request = task_service_pb2.CancelTaskRequest(id=task_id)
    response = yield from _unary("CancelTask", request, _core.DEFAULT_RETRY, rpc_timeout)
    return _core.task_from_proto(response.task)


def retry(task_id: str, rpc_timeout: float | None) -> Flow[Task]:
    """Run a FAILED or CANCELLED task again, with a fresh set of attempts."""
    request = task_service_pb2.RetryTaskRequest(id=task_id)
    response = yield from _unary("RetryTask", request, _core.NO_RETRY, rpc_timeout)
    return _core.task_from_proto(response.task)


def task_types(rpc_timeout: float | None) -> Flow[list[TaskType]]:
    """The task types the service accepts, by name: those it has handlers
    for and those live workers serve, with how many workers serve each."""
    request = task_service_pb2.ListTaskTypesRequest()
    response = yield from _unary("ListTaskTypes", request, _core.DEFAULT_RETRY, rpc_timeout)
    return [_core.task_type_from_proto(message) for message in response.task_types]


def workers(rpc_timeout: float | None) -> Flow[list[Worker]]:
    """The live worker processes on the service's store, oldest first."""
    request = task_service_pb2.ListWorkersRequest()
    response = yield from _unary("ListWorkers", request, _core.DEFAULT_RETRY, rpc_timeout)
    return [_core.worker_from_proto(message) for message in response.workers]


def watch(task_id: str, since_version: int) -> Flow[None]:
    """Yield the task's snapshots: the current one, then one per change.

    The iterator ends after the terminal snapshot. The stream has no
    deadline; after UNAVAILABLE it reopens from the last version seen.
    """
    yield from _follow(task_id, _Watched(since_version), None, emit=True)


def watch_tasks(
    states: Sequence[TaskState] | None,
    type: str | None,
    labels: Mapping[str, str] | None,
    ids: Sequence[str] | None,
    cursor: str | None,
    include_current: bool,
) -> Flow[None]:
    """Yield the changes of every task matching the filters, as `TaskChange`s,
    each with the task's latest snapshot, until the caller stops reading.

    Filters combine: any of `states` (after the change), this `type`, every
    one of `labels`, any of `ids`. With `include_current`, the matching
    unfinished tasks come first (`change.current`). A slow reader gets the
    latest snapshot of each changed task, never a backlog. Pass a change's
    `cursor` to continue after it; the stream has no deadline and after
    UNAVAILABLE reopens from the last cursor by itself. A change with
    `reset` set means changes may have been missed: list the tasks again.
    """
    failures = 0
    # Reopened during the current snapshots, the stream sends them all
    # again; after them, it resumes from the last cursor.
    current = include_current and not cursor
    while True:
        request = _core.watch_tasks_request(
            states=states,
            type=type,
            labels=labels,
            ids=ids,
            cursor=None if current else cursor,
            include_current=current,
        )
        yield OpenWatch(request, None, "WatchTasks")
        policy = _core.NEW_WATCH_RETRY
        try:
            while (response := (yield Receive())) is not None:
                policy = _core.DEFAULT_RETRY
                failures = 0
                change = _core.change_from_proto(response)
                cursor = change.cursor
                if not change.current:
                    current = False
                yield Emit(change)
            return
        except ConveyorError as exc:
            failures += 1
            delay = policy.backoff(exc.code, failures)
            if delay is None:
                raise
            _log.debug("reopening the task feed from cursor %s", cursor)
        yield Sleep(delay)


def wait(task_id: str, timeout: float | None) -> Flow[Task]:
    """Wait until the task is finished and return its terminal snapshot.

    Raises `WaitTimeout` when `timeout` seconds pass first; its `task` is the
    last snapshot seen.
    """
    deadline = _core.deadline_after(timeout, time.monotonic())
    watched = _Watched(0)
    try:
        # A task that is already finished costs one unary call, far
        # cheaper than opening a stream; otherwise watch it.
        watched.last = yield from get(task_id, _core.remaining(deadline, time.monotonic()))
        if watched.last.is_terminal:
            return watched.last
        final = yield from _follow(task_id, watched, deadline, emit=False)
        if final is not None:
            return final
    except DeadlineExceeded as exc:
        if timeout is None:
            raise
        raise WaitTimeout(task_id, timeout, watched.last) from exc
    # The stream ended without a terminal snapshot (a resumed stream can).
    task = yield from get(task_id, None)
    if task.is_terminal:
        return task
    raise _core.watch_ended_early(task_id)


def list_tasks(
    states: Sequence[TaskState] | None,
    type: str | None,
    labels: Mapping[str, str] | None,
    page_size: int,
    limit: int | None,
    view: TaskView = TaskView.FULL,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> Flow[None]:
    """Yield tasks, newest first, fetching further pages as needed.

    Filters combine: any of `states`, this `type`, every one of `labels`,
    created at or after `created_after` and before `created_before`
    (timezone-aware datetimes). `limit` caps the number of tasks yielded.
    `view=TaskView.BASIC` leaves out each task's payload and result. A page
    may hold fewer than `page_size` tasks when they are large; paging goes
    on regardless.
    """
    # Built here, so bad arguments raise when the method is called, not at
    # the first page.
    first = _core.list_request(
        states=states,
        type=type,
        labels=labels,
        page_size=_core.list_page_size(page_size, limit),
        view=view,
        created_after=created_after,
        created_before=created_before,
    )

    def page(token: str) -> task_service_pb2.ListTasksRequest:
        request = task_service_pb2.ListTasksRequest()
        request.CopyFrom(first)
        request.page_token = token
        return request

    return _pages(page, limit)


# --- the loops ----------------------------------------------------------------------


def _unary(
    method: UnaryMethod | ScheduleMethod,
    request: message.Message,
    retry: _core.RetryPolicy,
    rpc_timeout: float | None,
) -> Flow[Any]:
    """One unary call, tried again after UNAVAILABLE as `retry` allows."""
    tries = 0
    while True:
        tries += 1
        try:
            return (yield Call(method, request, rpc_timeout))
        except ConveyorError as exc:
            delay = retry.backoff(exc.code, tries)
            if delay is None:
                raise
            _log.debug("retrying after %s (try %d) in %.2f s", exc.code.name, tries, delay)
        yield Sleep(delay)


@dataclass(slots=True)
class _Watched:
    """How far a watch got: the version to resume from, and the last snapshot."""

    version: int
    last: Task | None = None


def _follow(
    task_id: str, watched: _Watched, deadline: float | None, *, emit: bool
) -> Flow[Task | None]:
    """Watch a task, reopening the stream from the last version after UNAVAILABLE,
    or after CANCELLED before the stream's first message.

    With `emit`, every snapshot goes to the caller until the stream ends;
    without, the flow returns the first terminal snapshot. None: the stream
    ended without one.
    """
    failures = 0
    while True:
        request = task_service_pb2.WatchTaskRequest(id=task_id, since_version=watched.version)
        yield OpenWatch(request, _core.remaining(deadline, time.monotonic()))
        policy = _core.NEW_WATCH_RETRY
        try:
            while (response := (yield Receive())) is not None:
                policy = _core.DEFAULT_RETRY
                task = _core.task_from_proto(response.task)
                watched.version, watched.last = task.version, task
                failures = 0
                if emit:
                    yield Emit(task)
                elif task.is_terminal:
                    return task
            return None
        except ConveyorError as exc:
            failures += 1
            delay = policy.backoff(exc.code, failures)
            if delay is None:
                raise
            _log.debug("reopening the watch of %s from version %d", task_id, watched.version)
        left = _core.remaining(deadline, time.monotonic())
        yield Sleep(delay if left is None else min(delay, left))


def _pages(
    page: Callable[[str], task_service_pb2.ListTasksRequest], limit: int | None
) -> Flow[None]:
    """Emit the tasks of page after page until `limit` or the last page."""
    yielded = 0
    token = ""
    while limit is None or yielded < limit:
        response = yield from _unary("ListTasks", page(token), _core.DEFAULT_RETRY, None)
        for proto in response.tasks:
            if limit is not None and yielded >= limit:
                return
            yielded += 1
            yield Emit(_core.task_from_proto(proto))
        token = response.next_page_token
        if not token:
            return
