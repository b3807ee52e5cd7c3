"""Cancel and retry many tasks in one call, named by ids or by a filter: the
requests, the results and the flows both clients drive (see `_flows`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from conveyor import _core, _flows
from conveyor._types import (
    BatchCancelResult,
    BatchRetryResult,
    HasTaskId,
    TaskState,
)
from conveyor.v1 import task_service_pb2

_BatchRequest = task_service_pb2.BatchCancelTasksRequest | task_service_pb2.BatchRetryTasksRequest


def batch_cancel(
    ids: Sequence[str | HasTaskId] | None,
    states: Sequence[TaskState] | None,
    type: str | None,
    labels: Mapping[str, str] | None,
    created_after: datetime | None,
    created_before: datetime | None,
    rpc_timeout: float | None,
) -> _flows.Flow[BatchCancelResult]:
    """Cancel many tasks, as `cancel` would each, and count what changed.

    Name the tasks by `ids` (ids, tasks or handles; at most 1,000), or by a
    filter as `list` takes it: any of `states`, this `type`, every one of
    `labels`, created at or after `created_after` and before
    `created_before`. PENDING tasks are cancelled at once, RUNNING ones are
    asked to stop; finished ones are matched and left alone. Not retried
    after UNAVAILABLE, so the counts are those of one call.

    Example::

        since = datetime.now(UTC) - timedelta(days=1)
        result = client.batch_cancel(type="email", states=[TaskState.PENDING],
                                     created_after=since)
        print(result.cancelled, result.cancel_requested)
    """
    request = task_service_pb2.BatchCancelTasksRequest()
    if not select(request, ids, states, type, labels, created_after, created_before):
        return cancel_result(task_service_pb2.BatchCancelTasksResponse())
    response = yield from _flows._unary("BatchCancelTasks", request, _core.NO_RETRY, rpc_timeout)
    return cancel_result(response)


def batch_retry(
    ids: Sequence[str | HasTaskId] | None,
    states: Sequence[TaskState] | None,
    type: str | None,
    labels: Mapping[str, str] | None,
    created_after: datetime | None,
    created_before: datetime | None,
    rpc_timeout: float | None,
) -> _flows.Flow[BatchRetryResult]:
    """Run many FAILED or CANCELLED tasks again, as `retry` would each, and
    count what changed.

    Name the tasks as `batch_cancel` does, by `ids` or by a filter; tasks in
    other states are matched and left alone. Not retried after UNAVAILABLE.

    Example::

        result = client.batch_retry(type="email", states=[TaskState.FAILED])
        print(f"{result.retried} of {result.matched} queued again")
    """
    request = task_service_pb2.BatchRetryTasksRequest()
    if not select(request, ids, states, type, labels, created_after, created_before):
        return retry_result(task_service_pb2.BatchRetryTasksResponse())
    response = yield from _flows._unary("BatchRetryTasks", request, _core.NO_RETRY, rpc_timeout)
    return retry_result(response)


def select(
    request: _BatchRequest,
    ids: Sequence[str | HasTaskId] | None,
    states: Sequence[TaskState] | None,
    type: str | None,
    labels: Mapping[str, str] | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> bool:
    """Name the request's tasks by ids or by filter; False when `ids` is empty
    (nothing to do, and no call to make).

    Without ids a filter is required: an empty one would match every task
    of the tenant, which nobody asks for by leaving out every argument.
    """
    filtered = any((states, type, labels, created_after, created_before))
    if ids is not None and filtered:
        raise ValueError("give ids or filters (states, type, labels, created_*), not both")
    if ids is None and not filtered:
        raise ValueError(
            "give the tasks' ids, or at least one filter (states, type, labels, created_*)"
        )
    if ids is not None:
        request.ids.extend(task_id if isinstance(task_id, str) else task_id.id for task_id in ids)
        return bool(request.ids)
    request.filter.CopyFrom(
        task_filter(
            states=states,
            type=type,
            labels=labels,
            created_after=created_after,
            created_before=created_before,
        )
    )
    return True


def task_filter(
    *,
    states: Sequence[TaskState] | None,
    type: str | None,
    labels: Mapping[str, str] | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> task_service_pb2.TaskFilter:
    found = task_service_pb2.TaskFilter(
        states=[_core.state_to_proto(state) for state in states or ()],
        type=type or "",
        labels=dict(labels or {}),
    )
    _core.set_created_range(found, created_after, created_before)
    return found


def cancel_result(message: task_service_pb2.BatchCancelTasksResponse) -> BatchCancelResult:
    return BatchCancelResult(
        matched=message.matched,
        cancelled=message.cancelled,
        cancel_requested=message.cancel_requested,
        not_found=message.not_found,
        raw=message,
    )


def retry_result(message: task_service_pb2.BatchRetryTasksResponse) -> BatchRetryResult:
    return BatchRetryResult(
        matched=message.matched,
        retried=message.retried,
        not_found=message.not_found,
        raw=message,
    )
