"""The raw generated stub, for tests of the contract itself."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc

TERMINAL = {
    task_pb2.TASK_STATE_SUCCEEDED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELLED,
}


class Api:
    """The raw generated stub plus the small conveniences tests repeat."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.TaskServiceStub(self.channel)

    def submit(
        self, type: str, payload: dict[str, Any] | None = None, **fields: Any
    ) -> task_pb2.Task:
        request = pb.SubmitTaskRequest(type=type, **fields)
        if payload is not None:
            request.payload.update(payload)
        return self.stub.SubmitTask(request, timeout=10).task

    def get(self, task_id: str) -> task_pb2.Task:
        return self.stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=10).task

    def wait(self, task_id: str, timeout: float = 10, states: set[int] = TERMINAL) -> task_pb2.Task:
        deadline = time.monotonic() + timeout
        while True:
            task = self.get(task_id)
            if task.state in states:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {task_pb2.TaskState.Name(task.state)}")
            time.sleep(0.01)

    def batch_submit(self, *requests: pb.SubmitTaskRequest, **fields: Any) -> list[task_pb2.Task]:
        """The tasks of a BatchSubmitTasks (without partial_success)."""
        request = pb.BatchSubmitTasksRequest(requests=requests, **fields)
        return list(self.stub.BatchSubmitTasks(request, timeout=10).tasks)

    def batch_cancel(self, **fields: Any) -> pb.BatchCancelTasksResponse:
        request = pb.BatchCancelTasksRequest(**fields)
        return self.stub.BatchCancelTasks(request, timeout=30)

    def batch_retry(self, **fields: Any) -> pb.BatchRetryTasksResponse:
        request = pb.BatchRetryTasksRequest(**fields)
        return self.stub.BatchRetryTasks(request, timeout=30)

    def update_type(
        self, name: str, paths: Sequence[str] = (), *, restore: bool = False, **limits: Any
    ) -> pb.TaskType:
        """UpdateTaskType: `limits` as TaskTypeLimits fields, `paths` the mask."""
        request = pb.UpdateTaskTypeRequest(
            name=name,
            limits=pb.TaskTypeLimits(**limits),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
            restore_defaults=restore,
        )
        return self.stub.UpdateTaskType(request, timeout=10).task_type

    def pause_type(self, name: str) -> pb.TaskType:
        return self.stub.PauseTaskType(pb.PauseTaskTypeRequest(name=name), timeout=10).task_type

    def resume_type(self, name: str) -> pb.TaskType:
        return self.stub.ResumeTaskType(pb.ResumeTaskTypeRequest(name=name), timeout=10).task_type

    def task_types(self) -> dict[str, pb.TaskType]:
        """ListTaskTypes, by name."""
        response = self.stub.ListTaskTypes(pb.ListTaskTypesRequest(), timeout=10)
        return {task_type.name: task_type for task_type in response.task_types}

    def watch_tasks(self, **fields: Any) -> grpc.Call:
        """A WatchTasks stream, once the server follows the feed for it."""
        stream = self.stub.WatchTasks(pb.WatchTasksRequest(**fields), timeout=20)
        stream.initial_metadata()  # type: ignore[attr-defined]
        return stream  # type: ignore[no-any-return]

    def close(self) -> None:
        self.channel.close()


def payload(**values: Any) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The google.rpc.BadRequest field violations of a failed call."""
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            found = []
            for detail in status.details:
                bad_request = error_details_pb2.BadRequest()
                if detail.Unpack(bad_request):
                    found.extend((v.field, v.description) for v in bad_request.field_violations)
            return found
    return []
