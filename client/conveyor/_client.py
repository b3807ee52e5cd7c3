"""The blocking client: drives the flows of `_flows` with blocking gRPC calls."""

from __future__ import annotations

import builtins
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import grpc

from conveyor import _batch_actions, _core, _flows, _schedules, _task_logs, _trace, _type_settings
from conveyor._coalesce_threads import ThreadSubmitter
from conveyor._errors import ConveyorError
from conveyor._flows import shares_doc
from conveyor._handle import TaskHandle
from conveyor._results import AS_COMPLETED_DOC, WAIT_ALL_DOC, WAIT_DOC, documented, targets
from conveyor._results_sync import ResultStreamThread
from conveyor._task_logs import LogLine
from conveyor._types import (
    BatchCancelResult,
    BatchRetryResult,
    HasTaskId,
    LimitName,
    OverlapPolicy,
    Schedule,
    Task,
    TaskChange,
    TaskSpec,
    TaskState,
    TaskType,
    TaskView,
    Worker,
)
from conveyor.v1 import schedule_service_pb2_grpc, task_service_pb2_grpc

_R = TypeVar("_R")


class _WatchCall(Protocol):
    """What the driver uses of a WatchTask or WatchTasks call."""

    def __next__(self) -> Any: ...

    def cancel(self) -> bool: ...


class Client:
    """A blocking client of the Conveyor task service.

    Example::

        from conveyor import Client

        with Client("localhost:50051") as client:
            handle = client.submit("csv_stats", {"csv": "a,b\\n1,x\\n"})
            print(handle.result(timeout=30))

    Submits from several threads are coalesced: while one is in flight,
    the others queue and then go out together in one call, each caller
    still getting its own handle or error; `coalesce_submits=False` sends
    each on its own.

    Every unary call has a deadline (`timeout` seconds, or the call's
    `rpc_timeout`); calls that are safe to repeat are retried a few times
    when the service is UNAVAILABLE. Failed calls raise `ConveyorError`
    subclasses.

    For a service that serves TLS, pass `credentials=conveyor.tls(...)`; for
    one that requires tokens, `token=` sends `authorization: Bearer <token>`
    with every call, watch streams included.
    """

    def __init__(
        self,
        target: str = _core.DEFAULT_TARGET,
        *,
        timeout: float = _core.DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        options: Sequence[tuple[str, Any]] = (),
        coalesce_submits: bool = True,
    ) -> None:
        # Checked before the channel opens, so a bad token leaks nothing.
        self._metadata = _core.call_metadata(metadata, token)
        channel = _core.open_channel(
            grpc.insecure_channel, grpc.secure_channel, target, credentials, options
        )
        self._attach(channel, target, timeout, coalesce_submits)

    @classmethod
    def _on_channel(
        cls,
        channel: grpc.Channel,
        *,
        timeout: float = _core.DEFAULT_TIMEOUT,
        token: str | None = None,
    ) -> Self:
        """A client on a channel made elsewhere, such as a test's fake channel."""
        client = cls.__new__(cls)
        client._metadata = _core.call_metadata((), token)
        client._attach(channel, "<channel>", timeout)
        return client

    def _attach(
        self, channel: grpc.Channel, target: str, timeout: float, coalesce: bool = True
    ) -> None:
        self._channel = channel
        self._stub = task_service_pb2_grpc.TaskServiceStub(channel)
        self._schedule_stub = schedule_service_pb2_grpc.ScheduleServiceStub(channel)
        self._target = target
        self._timeout = timeout
        reply_to = _core.new_reply_to()
        self._submitter = ThreadSubmitter(self._run, timeout, reply_to) if coalesce else None
        self._results = ResultStreamThread(
            lambda request: self._stub.WatchTasks(
                request, metadata=_trace.outgoing_metadata(self._metadata)
            ),
            lambda task_id, timeout: self._run(_flows.wait(task_id, timeout)),
            self._snapshot,
            reply_to,
        )

    def __repr__(self) -> str:
        return f"Client({self._target!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; streams still open are cancelled, and waits
        still pending raise `ConveyorError` (CANCELLED)."""
        self._results.close()
        self._channel.close()

    # --- calls (the decisions are in _flows) ---------------------------------------

    @shares_doc(_flows.submit)
    def submit(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout: float | timedelta | None = None,
        delay: float | timedelta | None = None,
        priority: int = 0,
        concurrency_key: str | None = None,
        depends_on: Sequence[str | HasTaskId] = (),
        run_on_dependency_failure: bool = False,
        rpc_timeout: float | None = None,
    ) -> TaskHandle:
        spec = TaskSpec(
            type,
            payload,
            labels,
            idempotency_key,
            max_attempts,
            timeout,
            delay,
            priority,
            concurrency_key,
            depends_on,
            run_on_dependency_failure,
        )
        with self._results.submitting() as handed:
            if self._submitter is None:
                reply_to = self._results.reply_to
                task = self._run(_flows.submit(spec, rpc_timeout, reply_to))
            else:
                task = self._submitter.submit(spec, rpc_timeout)
            handle = TaskHandle(self, task)
            handed.append(handle)
        return handle

    @shares_doc(_flows.submit_batch)
    def submit_batch(
        self, specs: Sequence[TaskSpec], *, rpc_timeout: float | None = None
    ) -> builtins.list[TaskHandle]:
        with self._results.submitting() as handed:
            reply_to = self._results.reply_to
            tasks = self._run(_flows.submit_batch(specs, rpc_timeout, reply_to))
            handles = [TaskHandle(self, task) for task in tasks]
            handed.extend(handles)
        return handles

    @shares_doc(_flows.get)
    def get(self, id: str, *, rpc_timeout: float | None = None) -> Task:
        return self._run(_flows.get(id, rpc_timeout))

    @shares_doc(_flows.watch)
    def watch(self, id: str, *, since_version: int = 0) -> Iterator[Task]:
        return self._drive(_flows.FlowRun(_flows.watch(id, since_version)))

    @shares_doc(_flows.watch_tasks)
    def watch_tasks(
        self,
        *,
        states: Sequence[TaskState] | None = None,
        type: str | None = None,
        labels: Mapping[str, str] | None = None,
        ids: Sequence[str] | None = None,
        cursor: str | None = None,
        include_current: bool = False,
    ) -> Iterator[TaskChange]:
        flow = _flows.watch_tasks(states, type, labels, ids, cursor, include_current)
        return self._drive(_flows.FlowRun(flow))

    @shares_doc(_task_logs.logs)
    def logs(self, id: str, *, attempt: int = 0) -> Iterator[LogLine]:
        return self._drive(_flows.FlowRun(_task_logs.logs(id, attempt, False, 0.0)))

    @shares_doc(_task_logs.logs)
    def follow_logs(
        self, id: str, *, attempt: int = 0, poll_interval: float = 0.5
    ) -> Iterator[LogLine]:
        return self._drive(_flows.FlowRun(_task_logs.logs(id, attempt, True, poll_interval)))

    @documented(WAIT_DOC)
    def wait(self, id: str, *, timeout: float | None = None) -> Task:
        return self._results.wait(id, timeout)

    @documented(WAIT_ALL_DOC)
    def wait_all(
        self, tasks: Iterable[TaskHandle | str], *, timeout: float | None = None
    ) -> builtins.list[Task]:
        return self._results.wait_all(targets(tasks), timeout)

    @documented(AS_COMPLETED_DOC)
    def as_completed(
        self, tasks: Iterable[TaskHandle | str], *, timeout: float | None = None
    ) -> Iterator[Task]:
        return self._results.as_completed(targets(tasks), timeout)

    @shares_doc(_flows.list_tasks)
    def list(
        self,
        *,
        states: Sequence[TaskState] | None = None,
        type: str | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int = 100,
        limit: int | None = None,
        view: TaskView = TaskView.FULL,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> Iterator[Task]:
        flow = _flows.list_tasks(
            states, type, labels, page_size, limit, view, created_after, created_before
        )
        return self._drive(_flows.FlowRun(flow))

    @shares_doc(_flows.cancel)
    def cancel(self, id: str, *, rpc_timeout: float | None = None) -> Task:
        return self._run(_flows.cancel(id, rpc_timeout))

    @shares_doc(_flows.retry)
    def retry(self, id: str, *, rpc_timeout: float | None = None) -> Task:
        task = self._run(_flows.retry(id, rpc_timeout))
        self._results.retried(task)
        return task

    @shares_doc(_batch_actions.batch_cancel)
    def batch_cancel(
        self,
        ids: Sequence[str | HasTaskId] | None = None,
        *,
        states: Sequence[TaskState] | None = None,
        type: str | None = None,
        labels: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        rpc_timeout: float | None = None,
    ) -> BatchCancelResult:
        flow = _batch_actions.batch_cancel(
            ids, states, type, labels, created_after, created_before, rpc_timeout
        )
        return self._run(flow)

    @shares_doc(_batch_actions.batch_retry)
    def batch_retry(
        self,
        ids: Sequence[str | HasTaskId] | None = None,
        *,
        states: Sequence[TaskState] | None = None,
        type: str | None = None,
        labels: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        rpc_timeout: float | None = None,
    ) -> BatchRetryResult:
        flow = _batch_actions.batch_retry(
            ids, states, type, labels, created_after, created_before, rpc_timeout
        )
        return self._run(flow)

    @shares_doc(_type_settings.update_task_type)
    def update_task_type(
        self,
        name: str,
        *,
        max_running: int | None = None,
        max_running_per_key: int | None = None,
        max_starts_per_second: float | None = None,
        burst: int | None = None,
        restore_defaults: bool | Sequence[LimitName] = False,
        rpc_timeout: float | None = None,
    ) -> TaskType:
        flow = _type_settings.update_task_type(
            name,
            max_running,
            max_running_per_key,
            max_starts_per_second,
            burst,
            restore_defaults,
            rpc_timeout,
        )
        return self._run(flow)

    @shares_doc(_type_settings.pause_task_type)
    def pause_task_type(self, name: str, *, rpc_timeout: float | None = None) -> TaskType:
        return self._run(_type_settings.pause_task_type(name, rpc_timeout))

    @shares_doc(_type_settings.resume_task_type)
    def resume_task_type(self, name: str, *, rpc_timeout: float | None = None) -> TaskType:
        return self._run(_type_settings.resume_task_type(name, rpc_timeout))

    @shares_doc(_flows.task_types)
    def task_types(self, *, rpc_timeout: float | None = None) -> builtins.list[TaskType]:
        return self._run(_flows.task_types(rpc_timeout))

    @shares_doc(_flows.workers)
    def workers(self, *, rpc_timeout: float | None = None) -> builtins.list[Worker]:
        return self._run(_flows.workers(rpc_timeout))

    # --- schedules (the decisions are in _schedules) --------------------------------

    @shares_doc(_schedules.create)
    def create_schedule(
        self,
        id: str,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        cron: str | None = None,
        time_zone: str | None = None,
        interval: float | timedelta | None = None,
        labels: Mapping[str, str] | None = None,
        max_attempts: int | None = None,
        timeout: float | timedelta | None = None,
        delay: float | timedelta | None = None,
        priority: int = 0,
        overlap: OverlapPolicy = OverlapPolicy.SKIP,
        catch_up_window: float | timedelta | None = None,
        description: str = "",
        paused: bool = False,
        rpc_timeout: float | None = None,
    ) -> Schedule:
        task = TaskSpec(type, payload, labels, None, max_attempts, timeout, delay, priority)
        schedule, _ = _schedules.schedule_message(
            id,
            task,
            _schedules.Timing(cron, time_zone, interval),
            overlap=overlap,
            catch_up_window=catch_up_window,
            description=description,
            paused=paused,
        )
        return self._run(_schedules.create(schedule, rpc_timeout))

    @shares_doc(_schedules.get)
    def get_schedule(self, id: str, *, rpc_timeout: float | None = None) -> Schedule:
        return self._run(_schedules.get(id, rpc_timeout))

    @shares_doc(_schedules.list_all)
    def list_schedules(
        self, *, page_size: int = 100, rpc_timeout: float | None = None
    ) -> builtins.list[Schedule]:
        return self._run(_schedules.list_all(page_size, rpc_timeout))

    @shares_doc(_schedules.update)
    def update_schedule(
        self,
        id: str,
        *,
        cron: str | None = None,
        time_zone: str | None = None,
        interval: float | timedelta | None = None,
        task: TaskSpec | None = None,
        overlap: OverlapPolicy | None = None,
        catch_up_window: float | timedelta | None = None,
        description: str | None = None,
        rpc_timeout: float | None = None,
    ) -> Schedule:
        schedule, paths = _schedules.schedule_message(
            id,
            task,
            _schedules.Timing(cron, time_zone, interval),
            overlap=overlap,
            catch_up_window=catch_up_window,
            description=description,
        )
        return self._run(_schedules.update(schedule, paths, rpc_timeout))

    @shares_doc(_schedules.delete)
    def delete_schedule(self, id: str, *, rpc_timeout: float | None = None) -> None:
        self._run(_schedules.delete(id, rpc_timeout))

    @shares_doc(_schedules.pause)
    def pause_schedule(self, id: str, *, rpc_timeout: float | None = None) -> Schedule:
        return self._run(_schedules.pause(id, rpc_timeout))

    @shares_doc(_schedules.resume)
    def resume_schedule(self, id: str, *, rpc_timeout: float | None = None) -> Schedule:
        return self._run(_schedules.resume(id, rpc_timeout))

    @shares_doc(_schedules.trigger)
    def trigger_schedule(
        self, id: str, *, request_id: str | None = None, rpc_timeout: float | None = None
    ) -> Task:
        return self._run(_schedules.trigger(id, request_id, rpc_timeout))

    def _snapshot(self, id: str) -> Task | None:
        try:
            return self.get(id)
        except ConveyorError:
            return None

    # --- the blocking driver ---------------------------------------------------------

    def _run(self, flow: _flows.Flow[_R]) -> _R:
        """Drive a flow that returns a value (and emits no tasks)."""
        run = _flows.FlowRun(flow)
        for _task in self._drive(run):
            pass
        return run.result

    def _drive(self, run: _flows.FlowRun[Any]) -> Generator[Any, None, None]:
        """Perform the flow's steps with blocking calls, yielding the tasks it emits."""
        stream: _WatchCall | None = None
        with closing(run):
            for step in run.steps():
                match step:
                    case _flows.Sleep(seconds):
                        time.sleep(seconds)
                    case _flows.Call():
                        with run.answering():
                            run.reply = self._call(step)
                    case _flows.Receive() if stream is not None:
                        with run.answering():
                            run.reply = next(stream, None)
                    case _flows.OpenWatch(request, timeout, method):
                        open_stream = getattr(self._stub, method)
                        stream = run.opened(
                            open_stream(
                                request,
                                timeout=timeout,
                                metadata=_trace.outgoing_metadata(self._metadata),
                            )
                        )
                    case _flows.Emit(task):
                        yield task

    def _call(self, step: _flows.Call) -> Any:
        stub = self._schedule_stub if step.method in _flows.SCHEDULE_METHODS else self._stub
        method = getattr(stub, step.method)
        timeout = self._timeout if step.rpc_timeout is None else step.rpc_timeout
        return method(
            step.request, timeout=timeout, metadata=_trace.outgoing_metadata(self._metadata)
        )
