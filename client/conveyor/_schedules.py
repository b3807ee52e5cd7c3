"""Schedules in the SDK: requests built from arguments, responses converted
to `Schedule`, and the flows behind the clients' schedule methods (driven
by `Client` and `AsyncClient` as the flows of `_flows` are)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, timedelta

from conveyor import _core
from conveyor._flows import Flow, _unary
from conveyor._struct import struct_to_dict
from conveyor._types import OverlapPolicy, Schedule, ScheduleRun, Task, TaskSpec
from conveyor.v1 import schedule_service_pb2 as spb
from conveyor.v1 import task_service_pb2

_OVERLAP_FROM_PROTO: Mapping[int, OverlapPolicy] = {
    spb.OVERLAP_POLICY_UNSPECIFIED: OverlapPolicy.SKIP,
    spb.OVERLAP_POLICY_SKIP: OverlapPolicy.SKIP,
    spb.OVERLAP_POLICY_ALLOW: OverlapPolicy.ALLOW,
}


@dataclass(frozen=True, slots=True)
class Timing:
    """When a schedule fires: `cron` (in `time_zone`) or `interval`; None
    leaves a field as it is on update."""

    cron: str | None = None
    time_zone: str | None = None
    interval: float | timedelta | None = None


# --- responses -> SDK values --------------------------------------------------------


def spec_from_proto(request: task_service_pb2.SubmitTaskRequest) -> TaskSpec:
    """A schedule's task template as the `TaskSpec` it submits."""
    return TaskSpec(
        type=request.type,
        payload=struct_to_dict(request.payload),
        labels=dict(request.labels),
        max_attempts=request.max_attempts or None,
        timeout=request.timeout.ToTimedelta() if request.HasField("timeout") else None,
        delay=request.delay.ToTimedelta() if request.HasField("delay") else None,
        priority=request.priority,
    )


def schedule_from_proto(message: spb.Schedule) -> Schedule:
    """The one converter from a `conveyor.v1.Schedule` message to a `Schedule`."""
    return Schedule(
        id=message.id,
        cron=message.cron or None,
        time_zone=message.time_zone or None,
        interval=message.interval.ToTimedelta() if message.HasField("interval") else None,
        task=spec_from_proto(message.task),
        overlap=_OVERLAP_FROM_PROTO.get(message.overlap_policy, OverlapPolicy.SKIP),
        catch_up_window=(
            message.catch_up_window.ToTimedelta() if message.HasField("catch_up_window") else None
        ),
        paused=message.paused,
        description=message.description,
        next_fire_times=tuple(time.ToDatetime(tzinfo=UTC) for time in message.next_fire_times),
        recent_runs=tuple(
            ScheduleRun(
                fire_time=_core.timestamp_to_datetime(run.fire_time),
                task_id=run.task_id,
                state=_core.state_from_proto(run.state),
                triggered=run.triggered,
            )
            for run in message.recent_runs
        ),
        create_time=_core.timestamp_to_datetime(message.create_time),
        update_time=_core.timestamp_to_datetime(message.update_time),
        last_fire_time=_core.timestamp_to_datetime(message.last_fire_time),
        raw=message,
    )


# --- SDK arguments -> requests ------------------------------------------------------


def _set_timing(schedule: spb.Schedule, timing: Timing) -> list[str]:
    """Write `timing` into `schedule`; returns the fields it sets. A cron
    replaces an interval, and an interval a cron and its time zone."""
    paths: list[str] = []
    if timing.cron is not None:
        schedule.cron = timing.cron
        paths += ["cron", "interval"]
    if timing.time_zone is not None:
        schedule.time_zone = timing.time_zone
        paths.append("time_zone")
    if timing.interval is not None:
        schedule.interval.CopyFrom(_core.to_duration(timing.interval))
        paths += ["interval", "cron", "time_zone"]
    return list(dict.fromkeys(paths))


def schedule_message(
    id: str,
    task: TaskSpec | None,
    timing: Timing,
    *,
    overlap: OverlapPolicy | None = None,
    catch_up_window: float | timedelta | None = None,
    description: str | None = None,
    paused: bool = False,
) -> tuple[spb.Schedule, list[str]]:
    """A Schedule message of the given fields, and the names of those set
    (an update's mask)."""
    schedule = spb.Schedule(id=id, paused=paused)
    paths = _set_timing(schedule, timing)
    if task is not None:
        if task.idempotency_key:
            raise ValueError("a schedule's task takes no idempotency_key: each fire makes its own")
        schedule.task.CopyFrom(_core.submit_request(task))
        paths.append("task")
    if overlap is not None:
        schedule.overlap_policy = overlap.value
        paths.append("overlap_policy")
    if catch_up_window is not None:
        schedule.catch_up_window.CopyFrom(_core.to_duration(catch_up_window))
        paths.append("catch_up_window")
    if description is not None:
        schedule.description = description
        paths.append("description")
    return schedule, paths


# --- the flows behind the clients' methods ------------------------------------------


def create(schedule: spb.Schedule, rpc_timeout: float | None) -> Flow[Schedule]:
    """Create a schedule that submits a task of `type` with `payload` at the
    times of `cron` (5 fields, or 6 with seconds last; read in `time_zone`,
    UTC by default) or every `interval` seconds, and return it.

    The task options (`labels`, `max_attempts`, `timeout`, `delay`,
    `priority`) are those of `submit`. `overlap` says whether a fire is
    skipped while the last task is unfinished (SKIP, the default);
    `catch_up_window` how late a missed fire is still submitted (1 minute
    by default). Raises `AlreadyExists` when the id is taken.

    Example::

        client.create_schedule(
            "nightly-report", "csv_stats", {"csv": "a\\n1\\n"},
            cron="0 3 * * *", time_zone="Europe/Paris",
        )
    """
    request = spb.CreateScheduleRequest(schedule=schedule)
    response = yield from _unary("CreateSchedule", request, _core.NO_RETRY, rpc_timeout)
    return schedule_from_proto(response.schedule)


def get(schedule_id: str, rpc_timeout: float | None) -> Flow[Schedule]:
    """A schedule, with its next fire times and its recent tasks; raises
    `TaskNotFound` (the SDK's NOT_FOUND error) for an unknown id."""
    request = spb.GetScheduleRequest(id=schedule_id)
    response = yield from _unary("GetSchedule", request, _core.DEFAULT_RETRY, rpc_timeout)
    return schedule_from_proto(response.schedule)


def list_all(page_size: int, rpc_timeout: float | None) -> Flow[list[Schedule]]:
    """Every schedule of the caller's tenant, by id."""
    found: list[Schedule] = []
    token = ""
    while True:
        request = spb.ListSchedulesRequest(page_size=page_size, page_token=token)
        response = yield from _unary("ListSchedules", request, _core.DEFAULT_RETRY, rpc_timeout)
        found.extend(schedule_from_proto(message) for message in response.schedules)
        token = response.next_page_token
        if not token:
            return found


def update(schedule: spb.Schedule, paths: list[str], rpc_timeout: float | None) -> Flow[Schedule]:
    """Change the given fields of a schedule and return it; the others stay.

    A `cron` replaces an `interval` and the other way round; `task` replaces
    the whole task template. Pause and resume have their own methods.
    """
    if not paths:
        raise ValueError("name at least one field to change")
    request = spb.UpdateScheduleRequest(schedule=schedule)
    request.update_mask.paths.extend(paths)
    response = yield from _unary("UpdateSchedule", request, _core.DEFAULT_RETRY, rpc_timeout)
    return schedule_from_proto(response.schedule)


def delete(schedule_id: str, rpc_timeout: float | None) -> Flow[None]:
    """Delete a schedule; the tasks it submitted stay."""
    request = spb.DeleteScheduleRequest(id=schedule_id)
    yield from _unary("DeleteSchedule", request, _core.NO_RETRY, rpc_timeout)


def pause(schedule_id: str, rpc_timeout: float | None) -> Flow[Schedule]:
    """Stop firing until resumed (fires that fall meanwhile are skipped)."""
    request = spb.PauseScheduleRequest(id=schedule_id)
    response = yield from _unary("PauseSchedule", request, _core.DEFAULT_RETRY, rpc_timeout)
    return schedule_from_proto(response.schedule)


def resume(schedule_id: str, rpc_timeout: float | None) -> Flow[Schedule]:
    """Fire again, from the next fire time on."""
    request = spb.ResumeScheduleRequest(id=schedule_id)
    response = yield from _unary("ResumeSchedule", request, _core.DEFAULT_RETRY, rpc_timeout)
    return schedule_from_proto(response.schedule)


def trigger(schedule_id: str, request_id: str | None, rpc_timeout: float | None) -> Flow[Task]:
    """Submit the schedule's task now, outside its times (also when paused),
    and return it. The same `request_id` triggers once, so the call is
    retried after UNAVAILABLE only with one."""
    request = spb.TriggerScheduleRequest(id=schedule_id, request_id=request_id or "")
    retry = _core.DEFAULT_RETRY if request_id else _core.NO_RETRY
    response = yield from _unary("TriggerSchedule", request, retry, rpc_timeout)
    return _core.task_from_proto(response.task)
