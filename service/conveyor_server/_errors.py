"""Errors the servicer returns, with google.rpc rich details."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"
TASK_RESOURCE_TYPE = "conveyor.v1.Task"


class ServiceError(Exception):
    """An RPC failure with a canonical code and a message that says what to fix.

    `violations` become a google.rpc.BadRequest detail, one entry per field
    at fault.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        violations: list[tuple[str, str]] | None = None,
        resource: error_details_pb2.ResourceInfo | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = violations or []
        self.resource = resource

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ((_DETAILS_KEY, self.status().SerializeToString()),)

    def status(self) -> status_pb2.Status:
        """The google.rpc.Status: code, message and details."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
            status.details.add().Pack(bad_request)
        if self.resource is not None:
            status.details.add().Pack(self.resource)
        return status


def invalid_argument(violations: list[tuple[str, str]]) -> ServiceError:
    """INVALID_ARGUMENT whose message repeats the violations, so grpcurl
    users, who see only the message, learn what to fix."""
    summary = "; ".join(f"{field}: {description}" for field, description in violations[:5])
    if len(violations) > 5:
        summary += f"; and {len(violations) - 5} more"
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, summary, violations)


def not_found(task_id: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, f"task {task_id} not found")


def listed_task_not_found(task_id: str) -> ServiceError:
    """NOT_FOUND for one of several tasks a request listed, with a
    google.rpc.ResourceInfo naming it, so the caller learns which one."""
    return ServiceError(
        grpc.StatusCode.NOT_FOUND,
        f"task {task_id} not found; leave it out of current_ids and ids",
        resource=error_details_pb2.ResourceInfo(
            resource_type=TASK_RESOURCE_TYPE,
            resource_name=task_id,
            description="no task of yours has this id",
        ),
    )
