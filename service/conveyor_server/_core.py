"""TaskCore: the TaskService contract, whichever face calls it.

The gRPC servicer and the HTTP/JSON face both call these methods with the
contract's request messages and the caller's tenant, and get the response
messages back, so validation, limits and tenancy are the same on both.
Refusals are raised as `ServiceError`; the store's own errors are mapped to
one by `store_error` where a face turns them into its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import grpc

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from conveyor_server._batch_actions import BatchActions
from conveyor_server._catalog import (
    TaskTypeCatalog,
    TaskTypeEntry,
    fill_task_type,
    task_types_response,
    workers_response,
)
from conveyor_server._convert import fill_task
from conveyor_server._errors import ServiceError, invalid_argument, not_found
from conveyor_server._list_page import fill_page, full_view
from conveyor_server._log_reader import TaskLogReader
from conveyor_server._logging import task_fields
from conveyor_server._observer import NULL_OBSERVER, TaskObserver
from conveyor_server._page_token import BadPageToken, PageTokens
from conveyor_server._partial_submit import create_each
from conveyor_server._pending import PendingExplainer
from conveyor_server._task_feed import TaskFeed, watch_query
from conveyor_server._tracing import task_traceparent
from conveyor_server._type_settings import check_type_name, limits_change
from conveyor_server._validation import (
    RequestValidator,
    check_created,
    check_id,
    check_states,
    page_size,
)
from conveyor_server._watchers import WatcherSlots
from conveyor_server.stores import (
    CancelOutcome,
    IdempotencyConflict,
    InvalidTransition,
    ListQuery,
    NewTask,
    QueueFull,
    StoreUnavailable,
    TaskRecord,
    TaskStore,
    TypeCounts,
    TypeSettings,
    UnknownDependency,
)

logger = logging.getLogger(__name__)

# What a store raises that a caller can act on; `store_error` maps each.
STORE_ERRORS = (
    QueueFull,
    IdempotencyConflict,
    InvalidTransition,
    StoreUnavailable,
    UnknownDependency,
)


class Gate:
    """Whether the server takes new work; closed while shutting down."""

    def __init__(self) -> None:
        self.open = True

    def check(self) -> None:
        if not self.open:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                "the server is shutting down and takes no new work; retry on another replica",
            )


def store_error(exc: Exception, prefix: str = "") -> ServiceError:
    """The status of a store error; `prefix` leads the field of a violation
    (`requests[2].` in a batch)."""
    if isinstance(exc, UnknownDependency):
        return invalid_argument(
            [
                (
                    f"{prefix}depends_on[{exc.position}]",
                    f"task {exc.task_id} is no task of yours: a task can wait only for "
                    "existing tasks of its tenant (finished ones are dropped after the "
                    "retention period)",
                )
            ]
        )
    if isinstance(exc, QueueFull):
        flag = "--max-queue" if exc.tenant is None else "--max-queue-per-tenant"
        return ServiceError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc}; retry later, or raise {flag}"
        )
    if isinstance(exc, IdempotencyConflict):
        return ServiceError(grpc.StatusCode.ALREADY_EXISTS, str(exc))
    if isinstance(exc, InvalidTransition):
        return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, StoreUnavailable):
        return ServiceError(grpc.StatusCode.UNAVAILABLE, f"task store unavailable: {exc}")
    raise exc


def _ahead(task_id: str, since: int, version: int) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.OUT_OF_RANGE,
        f"since_version {since} is ahead of task {task_id}, which is at version {version}; "
        f"resume from a version you received, or from 0 for the current snapshot",
    )


class TaskCore:
    """The contract's operations on one store, for every face."""

    def __init__(
        self,
        store: TaskStore,
        validator: RequestValidator,
        page_tokens: PageTokens,
        gate: Gate,
        catalog: TaskTypeCatalog,
        *,
        max_watchers: int,
        max_watchers_per_tenant: int | None = None,
        explain_waits: bool = False,
        operators: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.time,
        observer: TaskObserver = NULL_OBSERVER,
    ) -> None:
        self.store = store
        # With --accept-unserved-types, a pending task of a type that no
        # live worker serves says so in its progress message.
        self._explain_waits = explain_waits
        self.observer = observer
        self._validator = validator
        self._catalog = catalog
        self.page_tokens = page_tokens
        # GetTaskLogs, for the gRPC and HTTP faces.
        self.logs = TaskLogReader(store, page_tokens)
        self._gate = gate
        # Every watch stream, WatchTask or WatchTasks, gRPC or HTTP, counts.
        self.slots = WatcherSlots(max_watchers, max_watchers_per_tenant)
        self.feed = TaskFeed(store, self.slots)
        self._clock = clock
        # Tenants that may change task types (UpdateTaskType, Pause, Resume).
        self._operators = operators
        self._pending = PendingExplainer(store, catalog, clock)
        self._batch = BatchActions(store, store_error, self._cancelled_pending, clock)

    @property
    def watchers(self) -> int:
        """Open watch streams, of every kind and face."""
        return self.slots.open

    async def submit(
        self, request: pb.SubmitTaskRequest, tenant: str, traceparent: str | None = None
    ) -> pb.SubmitTaskResponse:
        """Create a task; `traceparent` is the submitting call's trace context."""
        self._gate.check()
        remote = await self._catalog.remote_types([request.type])
        new = self._validator.submit(request, tenant, remote)
        new.traceparent = task_traceparent(request, traceparent)
        now = self._clock()
        records = await self.store.create([new], now)
        self.observer.tasks_submitted(records, now)
        [record] = records
        response = pb.SubmitTaskResponse()
        await self.fill(response.task, record)
        return response

    async def submit_problems(
        self, request: pb.SubmitTaskRequest, tenant: str, prefix: str
    ) -> list[tuple[str, str]]:
        """What SubmitTask would refuse in `request` now, each field named
        after `prefix`: a request kept to be submitted later (a schedule's
        template) is checked as a submit is."""
        remote = await self._catalog.remote_types([request.type])
        return self._validator.problems(request, prefix, tenant, remote)

    async def batch_submit(
        self, request: pb.BatchSubmitTasksRequest, tenant: str, traceparent: str | None = None
    ) -> pb.BatchSubmitTasksResponse:
        """Create tasks; each keeps `traceparent`, the call's trace context."""
        self._gate.check()
        remote = await self._catalog.remote_types({r.type for r in request.requests})
        if request.partial_success:
            return await self._submit_each(request, tenant, remote, traceparent)
        tasks = self._validator.batch(request, tenant, remote)
        for new, each in zip(tasks, request.requests, strict=True):
            new.traceparent = task_traceparent(each, traceparent)
        now = self._clock()
        try:
            records = await self.store.create(tasks, now)
        except UnknownDependency as exc:
            raise store_error(exc, f"requests[{exc.index}].") from None
        self.observer.tasks_submitted(records, now)
        response = pb.BatchSubmitTasksResponse()
        add = response.tasks.add
        for record in records:
            await self.fill(add(), record)
        return response

    async def _submit_each(
        self,
        request: pb.BatchSubmitTasksRequest,
        tenant: str,
        remote: frozenset[str],
        traceparent: str | None,
    ) -> pb.BatchSubmitTasksResponse:
        checked = self._validator.each(request, tenant, remote)
        for new, each in zip(checked, request.requests, strict=True):
            if isinstance(new, NewTask):
                new.traceparent = task_traceparent(each, traceparent)
        now = self._clock()
        outcomes = await create_each(self.store, checked, now, store_error)
        records = [outcome for outcome in outcomes if not isinstance(outcome, ServiceError)]
        if records:
            self.observer.tasks_submitted(records, now)
        response = pb.BatchSubmitTasksResponse()
        add = response.results.add
        for outcome in outcomes:
            result = add()
            if isinstance(outcome, ServiceError):
                result.error.ParseFromString(outcome.status().SerializeToString())
            else:
                await self.fill(result.task, outcome)
        return response

    async def get(self, request: pb.GetTaskRequest, tenant: str) -> pb.GetTaskResponse:
        check_id(request.id)
        record = await self.store.get(request.id, tenant)
        if record is None:
            raise not_found(request.id)
        response = pb.GetTaskResponse()
        await self.fill(response.task, record)
        await self._pending.fill(response.task, record)
        return response

    def admit_watch(self, request: pb.WatchTaskRequest, tenant: str) -> None:
        """Refuse a watch before it opens: a bad request, or no room for it."""
        check_id(request.id)
        if request.since_version < 0:
            raise invalid_argument([("since_version", "must not be negative")])
        self.slots.check(tenant, "poll with GetTask")

    async def watch(
        self, request: pb.WatchTaskRequest, tenant: str
    ) -> AsyncGenerator[pb.WatchTaskResponse, None]:
        """The snapshots of a watch admitted by `admit_watch`: the current
        one, then one per change, ending after the terminal one. Raises
        NOT_FOUND or OUT_OF_RANGE before the first."""
        self.slots.take(tenant, "poll with GetTask")
        # Subscribe before reading the snapshot, so no change can slip
        # between the two.
        subscription = self.store.subscribe(request.id)
        try:
            # Another tenant's task is not found: nothing of it is streamed.
            record = await self.store.get(request.id, tenant)
            if record is None:
                raise not_found(request.id)
            last = request.since_version
            if last > record.version and not record.state.is_terminal:
                # Versions only grow: waiting for this one would hold the
                # stream open with nothing to send, perhaps for ever.
                raise _ahead(request.id, last, record.version)
            while True:
                if record.version > last:
                    last = record.version
                    terminal = record.state.is_terminal
                    response = pb.WatchTaskResponse()
                    await self.fill(response.task, record)
                    yield response
                    if terminal:
                        return
                elif record.state.is_terminal:
                    return
                record = await subscription.next()
        finally:
            subscription.close()
            self.slots.give_back(tenant)

    async def watch_tasks(
        self,
        request: pb.WatchTasksRequest,
        tenant: str,
        *,
        ready: Callable[[str], Awaitable[None]] | None = None,
    ) -> AsyncGenerator[pb.WatchTasksResponse, None]:
        """The changes of the tasks a filter matches (see `TaskFeed.watch`),
        as WatchTasksResponse messages: a task's latest snapshot, or a
        reset marker telling the reader to list again."""
        changes = self.feed.watch(watch_query(request, tenant), ready=ready)
        async with contextlib.aclosing(changes):
            async for item in changes:
                response = pb.WatchTasksResponse(cursor=item.cursor, current=item.current)
                if item.record is None:
                    response.reset = True
                else:
                    await self.fill(response.task, item.record)
                yield response

    async def list(self, request: pb.ListTasksRequest, tenant: str) -> pb.ListTasksResponse:
        size = page_size(request.page_size)
        full = full_view(request.view)
        states = check_states(request.states)
        created_after, created_before = check_created(request)
        query = ListQuery(
            page_size=size,
            states=states,
            type=request.type,
            labels=tuple(sorted(request.labels.items())),
            tenant=tenant,
            created_after=created_after,
            created_before=created_before,
        )
        if request.page_token:
            try:
                cursor = self.page_tokens.read(request.page_token, query)
            except BadPageToken as exc:
                raise invalid_argument([("page_token", str(exc))]) from None
            query = dataclasses.replace(query, before_seq=cursor)
        records, next_cursor = await self.store.list_page(query)
        response = pb.ListTasksResponse()
        kept = fill_page(response, records, full=full)
        if self._explain_waits:
            for message, record in zip(response.tasks, records, strict=False):
                await self._explain(message, record)
        if kept < len(records):
            # A short page: the next one starts after its last task.
            next_cursor = records[kept - 1].seq
        if next_cursor is not None:
            response.next_page_token = self.page_tokens.mint(query, next_cursor)
        return response

    async def cancel(self, request: pb.CancelTaskRequest, tenant: str) -> pb.CancelTaskResponse:
        check_id(request.id)
        now = self._clock()
        cancellation = await self.store.cancel(request.id, now, tenant)
        if cancellation is None:
            raise not_found(request.id)
        record = cancellation.record
        # The end of a running task is the runner's to report.
        if cancellation.outcome is CancelOutcome.CANCELLED:
            self._cancelled_pending(record, "CancelTask")
        # A running task's handler hears of the cancel through the store,
        # in whichever process it runs.
        response = pb.CancelTaskResponse()
        fill_task(response.task, record)
        return response

    async def retry(self, request: pb.RetryTaskRequest, tenant: str) -> pb.RetryTaskResponse:
        check_id(request.id)
        self._gate.check()
        record = await self.store.retry(request.id, self._clock(), tenant)
        if record is None:
            raise not_found(request.id)
        response = pb.RetryTaskResponse()
        fill_task(response.task, record)
        return response

    def _cancelled_pending(self, record: TaskRecord, method: str = "BatchCancelTasks") -> None:
        self.observer.task_cancelled(record)
        logger.info(
            "task %s cancelled while pending",
            record.id,
            extra={**task_fields(record), "rpc_method": method},
        )

    async def batch_cancel(
        self, request: pb.BatchCancelTasksRequest, tenant: str
    ) -> pb.BatchCancelTasksResponse:
        return await self._batch.cancel(request, tenant)

    async def batch_retry(
        self, request: pb.BatchRetryTasksRequest, tenant: str
    ) -> pb.BatchRetryTasksResponse:
        self._gate.check()
        return await self._batch.retry(request, tenant)

    async def task_types(self) -> pb.ListTaskTypesResponse:
        entries, settings, counts = await asyncio.gather(
            self._catalog.entries(), self.store.type_settings(), self.store.type_counts()
        )
        return task_types_response(entries, settings, counts)

    async def update_task_type(
        self, request: pb.UpdateTaskTypeRequest, tenant: str
    ) -> pb.UpdateTaskTypeResponse:
        self._check_operator(tenant)
        change = limits_change(request)
        settings = await self.store.update_type(
            request.name, self._clock(), limits=change.limits, restore=change.restore
        )
        response = pb.UpdateTaskTypeResponse()
        await self._fill_task_type(response.task_type, settings)
        return response

    async def pause_task_type(
        self, request: pb.PauseTaskTypeRequest, tenant: str
    ) -> pb.PauseTaskTypeResponse:
        self._check_operator(tenant)
        check_type_name(request.name)
        settings = await self.store.update_type(request.name, self._clock(), paused=True)
        response = pb.PauseTaskTypeResponse()
        await self._fill_task_type(response.task_type, settings)
        return response

    async def resume_task_type(
        self, request: pb.ResumeTaskTypeRequest, tenant: str
    ) -> pb.ResumeTaskTypeResponse:
        self._check_operator(tenant)
        check_type_name(request.name)
        settings = await self.store.update_type(request.name, self._clock(), paused=False)
        response = pb.ResumeTaskTypeResponse()
        await self._fill_task_type(response.task_type, settings)
        return response

    def _check_operator(self, tenant: str) -> None:
        """Task types are shared by every tenant: only the operators change
        them. The tenant is "" when authentication is off, where every
        caller is the operator."""
        if tenant and tenant not in self._operators:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"tenant {tenant!r} may not change task types: their limits and pause hold for "
                "every tenant; the server's --operator-tenants names the tenants that may",
            )

    async def _fill_task_type(self, message: pb.TaskType, settings: TypeSettings) -> None:
        """One type as ListTaskTypes tells of it, with its settings as just changed."""
        entries, counts = await asyncio.gather(self._catalog.entries(), self.store.type_counts())
        name = settings.type
        entry = next((e for e in entries if e.name == name), TaskTypeEntry(name, "", 0, ""))
        fill_task_type(message, entry, settings, counts.get(name) or TypeCounts())

    async def workers(self) -> pb.ListWorkersResponse:
        return workers_response(await self._catalog.workers(max_age=0))

    async def fill(self, message: task_pb2.Task, record: TaskRecord) -> None:
        fill_task(message, record)
        if self._explain_waits:
            await self._explain(message, record)

    async def _explain(self, message: task_pb2.Task, record: TaskRecord) -> None:
        reason = await self._catalog.waiting_reason(record)
        if reason is not None:
            message.progress.message = reason
