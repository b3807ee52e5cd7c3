"""TaskService: the gRPC face of TaskCore."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc import aio

from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from conveyor_server._auth import current_tenant
from conveyor_server._core import STORE_ERRORS, Gate, TaskCore, store_error
from conveyor_server._errors import ServiceError, invalid_argument
from conveyor_server._observer import TaskObserver
from conveyor_server._tracing import submit_traceparent, traceparent_in

logger = logging.getLogger(__name__)

__all__ = ["Gate", "Malformed", "TaskServicer", "bound_handlers", "service_handler"]

# WatchTasks response header: the cursor the stream follows from, so a client
# can resume from the moment it opened even before the first message.
CURSOR_HEADER = "conveyor-cursor"


async def _abort(context: aio.ServicerContext[Any, Any], error: ServiceError) -> None:
    await context.abort(error.code, error.message, trailing_metadata=error.trailing_metadata())


def _traceparent(context: aio.ServicerContext[Any, Any]) -> str | None:
    """The trace context a task submitted by this call keeps."""
    return submit_traceparent(traceparent_in(context.invocation_metadata()))


class TaskServicer(pb_grpc.TaskServiceServicer):
    def __init__(self, core: TaskCore) -> None:
        self.core = core
        self.observer = core.observer

    @property
    def watchers(self) -> int:
        """Open watch streams, of every face."""
        return self.core.watchers

    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.SubmitTaskResponse:
        return await self.core.submit(request, current_tenant(), _traceparent(context))

    async def BatchSubmitTasks(
        self, request: pb.BatchSubmitTasksRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.BatchSubmitTasksResponse:
        return await self.core.batch_submit(request, current_tenant(), _traceparent(context))

    async def GetTask(
        self, request: pb.GetTaskRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetTaskResponse:
        return await self.core.get(request, current_tenant())

    async def WatchTask(
        self, request: pb.WatchTaskRequest | Malformed, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchTaskResponse]:
        if isinstance(request, Malformed):
            self.observer.rpc_handled("WatchTask", request.error.code.name, None)
            await _abort(context, request.error)
            return
        tenant = current_tenant()
        try:
            self.core.admit_watch(request, tenant)
        except ServiceError as exc:
            self.observer.rpc_handled("WatchTask", exc.code.name, None)
            await _abort(context, exc)
        code = "UNKNOWN"
        try:
            async with contextlib.aclosing(self.core.watch(request, tenant)) as responses:
                async for response in responses:
                    yield response
            code = "OK"
        except ServiceError as exc:
            code = exc.code.name
            await _abort(context, exc)
        except STORE_ERRORS as exc:
            error = store_error(exc)
            code = error.code.name
            await _abort(context, error)
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away, or the server is stopping.
            code = "CANCELLED"
            raise
        finally:
            self.observer.rpc_handled("WatchTask", code, None)

    async def WatchTasks(
        self, request: pb.WatchTasksRequest | Malformed, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchTasksResponse]:
        code = "UNKNOWN"
        try:
            if isinstance(request, Malformed):
                raise request.error
            changes = self.core.watch_tasks(
                request,
                current_tenant(),
                ready=lambda cursor: context.send_initial_metadata(((CURSOR_HEADER, cursor),)),
            )
            async with contextlib.aclosing(changes):
                async for response in changes:
                    yield response
        except ServiceError as exc:
            code = exc.code.name
            await _abort(context, exc)
        except STORE_ERRORS as exc:
            error = store_error(exc)
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
        return await self.core.list(request, current_tenant())

    async def GetTaskLogs(
        self, request: pb.GetTaskLogsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetTaskLogsResponse:
        return await self.core.logs.read(request, current_tenant())

    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CancelTaskResponse:
        return await self.core.cancel(request, current_tenant())

    async def RetryTask(
        self, request: pb.RetryTaskRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RetryTaskResponse:
        return await self.core.retry(request, current_tenant())

    async def ListTaskTypes(
        self, request: pb.ListTaskTypesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListTaskTypesResponse:
        return await self.core.task_types()

    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListWorkersResponse:
        return await self.core.workers()

    async def BatchCancelTasks(
        self, request: pb.BatchCancelTasksRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.BatchCancelTasksResponse:
        return await self.core.batch_cancel(request, current_tenant())

    async def BatchRetryTasks(
        self, request: pb.BatchRetryTasksRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.BatchRetryTasksResponse:
        return await self.core.batch_retry(request, current_tenant())

    async def UpdateTaskType(
        self, request: pb.UpdateTaskTypeRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.UpdateTaskTypeResponse:
        return await self.core.update_task_type(request, current_tenant())

    async def PauseTaskType(
        self, request: pb.PauseTaskTypeRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.PauseTaskTypeResponse:
        return await self.core.pause_task_type(request, current_tenant())

    async def ResumeTaskType(
        self, request: pb.ResumeTaskTypeRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ResumeTaskTypeResponse:
        return await self.core.resume_task_type(request, current_tenant())


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
        except STORE_ERRORS as exc:
            error = store_error(exc)
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
    return bound_handlers(servicer, pb, "TaskService", servicer.observer)


def bound_handlers(
    servicer: object, module: ModuleType, service_name: str, observer: TaskObserver
) -> grpc.GenericRpcHandler:
    """The handlers of the service `service_name` of the generated `module`,
    bound to the methods of `servicer` of the same names."""
    service = module.DESCRIPTOR.services_by_name[service_name]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_type = getattr(module, method.input_type.name)
        response_type = getattr(module, method.output_type.name)
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
                _unary(bound, method.name, observer),
                request_deserializer=_parser(request_type),
                response_serializer=response_type.SerializeToString,
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
