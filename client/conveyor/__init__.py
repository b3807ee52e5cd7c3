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
from conveyor._tls import tls
from conveyor._types import (
    JSONValue,
    OverlapPolicy,
    Progress,
    Schedule,
    ScheduleRun,
    Task,
    TaskChange,
    TaskError,
    TaskSpec,
    TaskState,
    TaskType,
    TaskView,
    Worker,
)

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncTaskHandle",
    "Client",
    "ConveyorError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "JSONValue",
    "OverlapPolicy",
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
    "TaskView",
    "Unauthenticated",
    "Unavailable",
    "WaitTimeout",
    "Worker",
    "tls",
]
