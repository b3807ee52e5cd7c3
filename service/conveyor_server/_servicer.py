"""TaskService: the gRPC face of the store."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc import aio

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from conveyor_server._auth import current_tenant
from conveyor_server._catalog import TaskTypeCatalog, task_types_response, workers_response
from conveyor_server._convert import fill_task
from conveyor_server._errors import ServiceError, invalid_argument, not_found
from conveyor_server._list_page import fill_page, full_view
from conveyor_server._logging import task_fields
from conveyor_server._observer import NULL_OBSERVER, TaskObserver
from conveyor_server._page_token import BadPageToken, PageTokens
from conveyor_server._task_feed import TaskFeed, watch_query
from conveyor_server._validation import RequestValidator, check_id, page_size
from conveyor_server._watchers import WatcherSlots
from conveyor_server.stores import (
    CancelOutcome,
    IdempotencyConflict,
    InvalidTransition,
    ListQuery,
    QueueFull,
    State,
    StoreUnavailable,
    TaskRecord,
    TaskStore,
)

logger = logging.getLogger(__name__)

_STATE_NAMES = {state.value: state for state in State}


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


def _store_error(exc: Exception) -> ServiceError:
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


async def _abort(context: aio.ServicerContext[Any, Any], error: ServiceError) -> None:
    await context.abort(error.code, error.message, trailing_metadata=error.trailing_metadata())


class TaskServicer(pb_grpc.TaskServiceServicer):
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
        clock: Callable[[], float] = time.time,
        observer: TaskObserver = NULL_OBSERVER,
    ) -> None:
        self._store = store
        # With --accept-unserved-types, a pending task of a type that no
        # live worker serves says so in its progress message.
        self._explain_waits = explain_waits
        self.observer = observer
        self._validator = validator
        self._catalog = catalog
        self.page_tokens = page_tokens
        self._gate = gate
        self.slots = WatcherSlots(max_watchers, max_watchers_per_tenant)
        # WatchTasks without gRPC: the HTTP face serves it from here too.
        self.feed = TaskFeed(store, self.slots)
        self._clock = clock

    @property
    def watchers(self) -> int:
        """Open watch streams, of every kind."""
        return self.slots.open

    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.SubmitTaskResponse:
        self._gate.check()
        remote = await self._catalog.remote_types([request.type])
        new = self._validator.submit(request, current_tenant(), remote)
        now = self._clock()
        records = await self._store.create([new], now)
        self.observer.tasks_submitted(records, now)
        [record] = records
        response = pb.SubmitTaskResponse()
        await self._fill(response.task, record)
        return response

    async def BatchSubmitTasks(
        self, request: pb.BatchSubmitTasksRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.BatchSubmitTasksResponse:
        self._gate.check()
        remote = await self._catalog.remote_types({r.type for r in request.requests})
        tasks = self._validator.batch(request, current_tenant(), remote)
        now = self._clock()
        records = await self._store.create(tasks, now)
        self.observer.tasks_submitted(records, now)
        response = pb.BatchSubmitTasksResponse()
        add = response.tasks.add
        for record in records:
            await self._fill(add(), record)
        return response

    async def GetTask(
        self, request: pb.GetTaskRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetTaskResponse:
        check_id(request.id)
        record = await self._store.get(request.id, current_tenant())
        if record is None:
            raise not_found(request.id)
        response = pb.GetTaskResponse()
        await self._fill(response.task, record)
        return response

    async def WatchTask(
        self, request: pb.WatchTaskRequest | Malformed, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchTaskResponse]:
        if isinstance(request, Malformed):
            self.observer.rpc_handled("WatchTask", request.error.code.name, None)
            await _abort(context, request.error)
            return
        try:
            check_id(request.id)
            if request.since_version < 0:
                raise invalid_argument([("since_version", "must not be negative")])
            tenant = current_tenant()
            self.slots.take(tenant, "poll with GetTask")
        except ServiceError as exc:
            self.observer.rpc_handled("WatchTask", exc.code.name, None)
            await _abort(context, exc)
        # Subscribe before reading the snapshot, so no change can slip
        # between the two.
        subscription = self._store.subscribe(request.id)
        code = "UNKNOWN"
        try:
            # Another tenant's task is not found: nothing of it is streamed.
            record = await self._store.get(request.id, tenant)
            if record is None:
                code = "NOT_FOUND"
                await _abort(context, not_found(request.id))
                return
            last = request.since_version
            if last > record.version and not record.state.is_terminal:
                # Versions only grow: waiting for this one would hold the
                # stream open with nothing to send, perhaps for ever.
                code = "OUT_OF_RANGE"
                await _abort(context, _ahead(request.id, last, record.version))
                return
            while True:
                if record.version > last:
                    last = record.version
                    terminal = record.state.is_terminal
                    response = pb.WatchTaskResponse()
                    await self._fill(response.task, record)
                    yield response
                    if terminal:
                        code = "OK"
                        return
                elif record.state.is_terminal:
                    code = "OK"
                    return
                record = await subscription.next()
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away, or the server is stopping.
            code = "CANCELLED"
            raise
        finally:
            subscription.close()
            self.slots.give_back(tenant)
            self.observer.rpc_handled("WatchTask", code, None)

    async def WatchTasks(
        self, request: pb.WatchTasksRequest | Malformed, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchTasksResponse]:
        code = "UNKNOWN"
        try:
            if isinstance(request, Malformed):
                raise request.error
            changes = self.feed.watch(
                watch_query(request, current_tenant()),
                ready=lambda: context.send_initial_metadata(()),
            )
            try:
                async for item in changes:
                    response = pb.WatchTasksResponse(cursor=item.cursor, current=item.current)
                    if item.record is None:
                        response.reset = True
                    else:
                        await self._fill(response.task, item.record)
                    yield response
            finally:
                await changes.aclose()
        except ServiceError as exc:
            code = exc.code.name
            await _abort(context, exc)
        except StoreUnavailable as exc:
            error = _store_error(exc)
            code = error.code.name
            await _abort(context, error)
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        finally:
            self.observer.rpc_handled("WatchTasks", code, None)

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListTasksResponse:
        size = page_size(request.page_size)
        full = full_view(request.view)
        states = []
        for index, value in enumerate(request.states):
            state = _STATE_NAMES.get(value)
            if state is None:
                raise invalid_argument(
                    [
                        (
                            f"states[{index}]",
                            f"{value} is not a task state; use TASK_STATE_PENDING, "
                            "_RUNNING, _SUCCEEDED, _FAILED or _CANCELLED",
                        )
                    ]
                )
            states.append(state)
        query = ListQuery(
            page_size=size,
            states=frozenset(states),
            type=request.type,
            labels=tuple(sorted(request.labels.items())),
            tenant=current_tenant(),
        )
        if request.page_token:
            try:
                cursor = self.page_tokens.read(request.page_token, query)
            except BadPageToken as exc:
                raise invalid_argument([("page_token", str(exc))]) from None
            query = dataclasses.replace(query, before_seq=cursor)
        records, next_cursor = await self._store.list_page(query)
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

    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CancelTaskResponse:
        check_id(request.id)
        now = self._clock()
        cancellation = await self._store.cancel(request.id, now, current_tenant())
        if cancellation is None:
            raise not_found(request.id)
        record = cancellation.record
        # The end of a running task is the runner's to report.
        if cancellation.outcome is CancelOutcome.CANCELLED:
            self.observer.task_cancelled(record)
            logger.info(
                "task %s cancelled while pending",
                record.id,
                extra={**task_fields(record), "rpc_method": "CancelTask"},
            )
        # A running task's handler hears of the cancel through the store,
        # in whichever process it runs.
        response = pb.CancelTaskResponse()
        fill_task(response.task, record)
        return response

    async def RetryTask(
        self, request: pb.RetryTaskRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RetryTaskResponse:
        check_id(request.id)
        self._gate.check()
        record = await self._store.retry(request.id, self._clock(), current_tenant())
        if record is None:
            raise not_found(request.id)
        response = pb.RetryTaskResponse()
        fill_task(response.task, record)
        return response

    async def ListTaskTypes(
        self, request: pb.ListTaskTypesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListTaskTypesResponse:
        return task_types_response(await self._catalog.entries())

    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListWorkersResponse:
        return workers_response(await self._catalog.workers(max_age=0))

    async def _fill(self, message: task_pb2.Task, record: TaskRecord) -> None:
        fill_task(message, record)
        if self._explain_waits:
            await self._explain(message, record)

    async def _explain(self, message: task_pb2.Task, record: TaskRecord) -> None:
        reason = await self._catalog.waiting_reason(record)
        if reason is not None:
            message.progress.message = reason


class Malformed:
    """Stands in for a request that did not parse, so the handler can refuse
    it with INVALID_ARGUMENT and a reason (gRPC would say UNKNOWN)."""

    __slots__ = ("error",)

    def __init__(self, error: ServiceError) -> None:
        self.error = error


def _parser(request_type: type[Message]) -> Callable[[bytes], Message | Malformed]:
    def parse(raw: bytes) -> Message | Malformed:
        try:
            return request_type.FromString(raw)
        except DecodeError as exc:
            return Malformed(
                invalid_argument(
                    [
                        (
                            "request",
                            f"is not a valid {request_type.DESCRIPTOR.full_name} message: {exc}",
                        )
                    ]
                )
            )

    return parse


def _log_refusal(method: str, code: str) -> None:
    # The code only: messages may quote what the client sent.
    logger.debug("%s refused with %s", method, code, extra={"rpc_method": method})


def _unary(
    method: Callable[[Any, aio.ServicerContext[Any, Any]], Any],
    name: str,
    observer: TaskObserver,
) -> Callable[[Any, aio.ServicerContext[Any, Any]], Any]:
    rpc_handled = observer.rpc_handled
    clock = time.perf_counter

    async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        # The one place where refusals become RPC errors, and where calls
        # are counted and timed.
        started = clock()
        code = "UNKNOWN"
        try:
            if type(request) is Malformed:
                raise request.error
            response = await method(request, context)
            code = "OK"
            return response
        except ServiceError as exc:
            code = exc.code.name
            _log_refusal(name, code)
            await _abort(context, exc)
        except (QueueFull, IdempotencyConflict, InvalidTransition, StoreUnavailable) as exc:
            error = _store_error(exc)
            code = error.code.name
            _log_refusal(name, code)
            await _abort(context, error)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            rpc_handled(name, code, clock() - started)
        raise AssertionError("abort returns only by raising")

    return unary


def service_handler(servicer: TaskServicer) -> grpc.GenericRpcHandler:
    """The TaskService handlers, bound to `servicer`."""
    service = pb.DESCRIPTOR.services_by_name["TaskService"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        bound = getattr(servicer, method.name)
        if method.server_streaming:
            # Streaming handlers refuse a Malformed request themselves: one
            # generator frame per stream instead of two.
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                bound,
                request_deserializer=_parser(request_type),
                response_serializer=response_type.SerializeToString,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(bound, method.name, servicer.observer),
                request_deserializer=_parser(request_type),
                response_serializer=response_type.SerializeToString,
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
