"""The typed Python SDK of Conveyor, a gRPC task service.

Example::

    from conveyor import Client

    with Client("localhost:50051") as client:
        handle = client.submit("sleep", {"seconds": 1})
        print(handle.wait().state)
"""

from conveyor._async_client import AsyncClient
from conveyor._client import Client
from conveyor._errors import (
    AlreadyExists,
    ConveyorError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    TaskFailed,
    TaskNotFound,
    Unauthenticated,
    Unavailable,
    WaitTimeout,
)
from conveyor._handle import AsyncTaskHandle, TaskHandle
from conveyor._task_logs import LogLine
from conveyor._tls import tls
from conveyor._types import (
    BatchCancelResult,
    BatchRetryResult,
    JSONValue,
    OverlapPolicy,
    PendingReason,
    Progress,
    Schedule,
    ScheduleRun,
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

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncTaskHandle",
    "BatchCancelResult",
    "BatchRetryResult",
    "Client",
    "ConveyorError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "JSONValue",
    "LogLine",
    "OverlapPolicy",
    "PendingReason",
    "PermissionDenied",
    "Progress",
    "ResourceExhausted",
    "Schedule",
    "ScheduleRun",
    "Task",
    "TaskChange",
    "TaskError",
    "TaskFailed",
    "TaskHandle",
    "TaskNotFound",
    "TaskSpec",
    "TaskState",
    "TaskType",
    "TaskTypeLimits",
    "TaskView",
    "Unauthenticated",
    "Unavailable",
    "WaitTimeout",
    "Worker",
    "tls",
]
