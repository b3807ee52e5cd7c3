"""The SDK's exceptions, and the one mapping from a gRPC status to them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2

from conveyor._types import TaskState

if TYPE_CHECKING:
    from conveyor._types import Task

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
# The ErrorInfo domain of a task's own error, in `TaskFailed.details`.
_ERROR_DOMAIN = "conveyor"

# The google.rpc detail messages a server may attach; anything else stays an Any.
_DETAIL_TYPES: dict[str, type[message.Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        error_details_pb2.BadRequest,
        error_details_pb2.ErrorInfo,
        error_details_pb2.RetryInfo,
        error_details_pb2.DebugInfo,
        error_details_pb2.QuotaFailure,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.ResourceInfo,
        error_details_pb2.RequestInfo,
        error_details_pb2.Help,
        error_details_pb2.LocalizedMessage,
    )
}


class ConveyorError(Exception):
    """An RPC to the Conveyor service failed.

    `code` is the gRPC status code, `message` the server's text and `details`
    the decoded `google.rpc` rich details (such as `BadRequest`).
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        details: Iterable[Any] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: list[Any] = list(details)

    @property
    def field_violations(self) -> list[tuple[str, str]]:
        """(field, description) pairs from any `google.rpc.BadRequest` detail."""
        return [
            (violation.field, violation.description)
            for detail in self.details
            if isinstance(detail, error_details_pb2.BadRequest)
            for violation in detail.field_violations
        ]

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class TaskNotFound(ConveyorError):
    """No task has this id (NOT_FOUND)."""


class InvalidArgument(ConveyorError):
    """The request was rejected (INVALID_ARGUMENT); see `field_violations`."""


class AlreadyExists(ConveyorError):
    """The idempotency key was used before for a different request (ALREADY_EXISTS)."""


class FailedPrecondition(ConveyorError):
    """The task is not in a state that allows this call (FAILED_PRECONDITION)."""


class ResourceExhausted(ConveyorError):
    """The service is at a limit: queue full, too many watchers (RESOURCE_EXHAUSTED)."""


class Unavailable(ConveyorError):
    """The service cannot be reached or is shutting down (UNAVAILABLE)."""


class Unauthenticated(ConveyorError):
    """The call carried no valid credentials (UNAUTHENTICATED)."""


class PermissionDenied(ConveyorError):
    """The caller may not do this (PERMISSION_DENIED)."""


class DeadlineExceeded(ConveyorError):
    """The call's deadline passed before the service answered (DEADLINE_EXCEEDED)."""


_ERROR_CLASSES: dict[grpc.StatusCode, type[ConveyorError]] = {
    grpc.StatusCode.NOT_FOUND: TaskNotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


class TaskFailed(ConveyorError):
    """The task ended FAILED or CANCELLED; `task` is its terminal snapshot.

    An outcome of the task, not a failed call, so `code` says how it ended:
    `CANCELLED` for a cancelled task, `UNKNOWN` for a failed one (the code gRPC
    gives an error raised by application code, here the task's handler).
    `details` holds a `google.rpc.ErrorInfo` whose `reason` is the task's own
    error code (such as `HANDLER_ERROR`) when the task carries an error.
    `str()` is the message alone.
    """

    def __init__(self, task: Task) -> None:
        reason = f": {task.error.code}: {task.error.message}" if task.error else ""
        super().__init__(
            f"task {task.id} ended {task.state.name}{reason}",
            code=_outcome_code(task),
            details=_outcome_details(task),
        )
        self.task = task

    def __str__(self) -> str:
        return self.message


class WaitTimeout(ConveyorError, TimeoutError):
    """The task was not finished when the wait timed out.

    `task` is the last snapshot seen, or None when none arrived. `code` is
    `DEADLINE_EXCEEDED`, the wait's own deadline; it is still a `TimeoutError`
    too. `str()` is the message alone.
    """

    def __init__(self, task_id: str, timeout: float, task: Task | None = None) -> None:
        super().__init__(
            f"task {task_id} did not finish within {timeout:g} s",
            code=grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        self.task_id = task_id
        self.timeout = timeout
        self.task = task

    def __str__(self) -> str:
        return self.message


def _outcome_code(task: Task) -> grpc.StatusCode:
    if task.state is TaskState.CANCELLED:
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _outcome_details(task: Task) -> list[Any]:
    if task.error is None:
        return []
    metadata = {"task_id": task.id}
    if task.error.exception_type:
        metadata["exception_type"] = task.error.exception_type
    return [
        error_details_pb2.ErrorInfo(reason=task.error.code, domain=_ERROR_DOMAIN, metadata=metadata)
    ]


def _decode_detail(detail: any_pb2.Any) -> Any:
    cls = _DETAIL_TYPES.get(detail.TypeName())
    if cls is None:
        return detail
    decoded = cls()
    detail.Unpack(decoded)
    return decoded


def _decode_details(trailing_metadata: Iterable[tuple[str, str | bytes]]) -> list[Any]:
    for key, value in trailing_metadata:
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except message.DecodeError:
                return []
            return [_decode_detail(detail) for detail in status.details]
    return []


_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def from_status(status: message.Message) -> ConveyorError:
    """The `ConveyorError` for a status carried in a response (a
    `conveyor.v1.Status`, wire-identical to `google.rpc.Status`): the same
    class, message and details a failed call with that status raises."""
    decoded = status_pb2.Status.FromString(status.SerializeToString())
    code = _CODES.get(decoded.code, grpc.StatusCode.UNKNOWN)
    cls = _ERROR_CLASSES.get(code, ConveyorError)
    return cls(
        decoded.message, code=code, details=[_decode_detail(detail) for detail in decoded.details]
    )


def from_rpc_error(exc: grpc.RpcError) -> ConveyorError:
    """Map a failed gRPC call (sync or asyncio) to the matching `ConveyorError`."""
    if isinstance(exc, grpc.aio.AioRpcError | grpc.Call):
        code, text, trailing = exc.code(), exc.details() or "", exc.trailing_metadata() or ()
    else:  # an RpcError that carries no status, such as a bare grpc.RpcError()
        code, text, trailing = grpc.StatusCode.UNKNOWN, str(exc), ()
    cls = _ERROR_CLASSES.get(code, ConveyorError)
    return cls(text, code=code, details=_decode_details(trailing))


@contextmanager
def translate_rpc_errors() -> Iterator[None]:
    """Re-raise any gRPC error inside the block as a `ConveyorError`, chained to it."""
    try:
        yield
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from exc
