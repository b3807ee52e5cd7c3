"""Change a task type at run time: its limits, paused or not. The requests and
the flows both clients drive (see `_flows`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import get_args

from conveyor import _core, _flows
from conveyor._types import LimitName, TaskType
from conveyor.v1 import task_service_pb2

LIMIT_NAMES: tuple[LimitName, ...] = get_args(LimitName)


def update_task_type(
    name: str,
    max_running: int | None,
    max_running_per_key: int | None,
    max_starts_per_second: float | None,
    burst: int | None,
    restore_defaults: bool | Sequence[LimitName],
    rpc_timeout: float | None,
) -> _flows.Flow[TaskType]:
    """Change the limits of task type `name`, for every process of the
    service's store, until changed again; return the type.

    Only the limits given change: `max_running` (tasks running at once),
    `max_running_per_key` (of one `concurrency_key`), `max_starts_per_second`
    and `burst` (the starts allowed at once after a quiet spell); 0 removes a
    limit. `restore_defaults=True` goes back to the limits the handler
    declares, all four; a list of limit names restores those only. The type
    need not be served yet.

    Example::

        client.update_task_type("email", max_running=4, max_starts_per_second=10)
        client.update_task_type("email", restore_defaults=["max_running"])
    """
    changes: dict[LimitName, float | None] = {
        "max_running": max_running,
        "max_running_per_key": max_running_per_key,
        "max_starts_per_second": max_starts_per_second,
        "burst": burst,
    }
    request = update_request(name, changes, restore_defaults)
    response = yield from _flows._unary("UpdateTaskType", request, _core.DEFAULT_RETRY, rpc_timeout)
    return _core.task_type_from_proto(response.task_type)


def pause_task_type(name: str, rpc_timeout: float | None) -> _flows.Flow[TaskType]:
    """Pause task type `name`: submits are still accepted, nothing new of the
    type starts (its tasks wait with `PendingReason.TYPE_PAUSED`), running
    tasks finish. Return the type."""
    request = task_service_pb2.PauseTaskTypeRequest(name=name)
    response = yield from _flows._unary("PauseTaskType", request, _core.DEFAULT_RETRY, rpc_timeout)
    return _core.task_type_from_proto(response.task_type)


def resume_task_type(name: str, rpc_timeout: float | None) -> _flows.Flow[TaskType]:
    """Resume a paused task type: its waiting tasks start again. Return the type."""
    request = task_service_pb2.ResumeTaskTypeRequest(name=name)
    response = yield from _flows._unary("ResumeTaskType", request, _core.DEFAULT_RETRY, rpc_timeout)
    return _core.task_type_from_proto(response.task_type)


def update_request(
    name: str,
    changes: Mapping[LimitName, float | None],
    restore_defaults: bool | Sequence[LimitName],
) -> task_service_pb2.UpdateTaskTypeRequest:
    """The request, with an update mask naming exactly the limits given.

    An empty mask means all four limits to the service, so a call that names
    none is refused here rather than sent as "set every limit to 0".
    """
    given = {limit: value for limit, value in changes.items() if value is not None}
    request = task_service_pb2.UpdateTaskTypeRequest(name=name)
    if restore_defaults is True:
        if given:
            raise ValueError("set limits or restore_defaults=True, not both in one call")
        request.restore_defaults = True  # an empty mask: all four
        return request
    if restore_defaults:
        if given:
            raise ValueError("set limits or restore their defaults, not both in one call")
        restored = [restore_defaults] if isinstance(restore_defaults, str) else restore_defaults
        request.restore_defaults = True
        request.update_mask.paths.extend(_limit_names(restored))
        return request
    if not given:
        raise ValueError(
            "name at least one limit to change (max_running, max_running_per_key, "
            "max_starts_per_second, burst), or pass restore_defaults=True"
        )
    for limit, value in given.items():
        setattr(request.limits, limit, value)
    request.update_mask.paths.extend(given)
    return request


def _limit_names(names: Sequence[str]) -> list[str]:
    unknown = [name for name in names if name not in LIMIT_NAMES]
    if unknown:
        raise ValueError(f"unknown limits {unknown}; the limits are {', '.join(LIMIT_NAMES)}")
    return list(names)
