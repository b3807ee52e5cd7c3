"""A schedule's configuration: its checks, its fire times, and the submit
request each fire makes.

A store keeps the configuration as a serialized `conveyor.v1.Schedule`
holding only the fields a caller sets (`ScheduleRecord.spec`); the output
fields are computed when a schedule is read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from google.protobuf import duration_pb2
from google.protobuf.message import Message

from conveyor.v1 import schedule_service_pb2 as spb
from conveyor.v1 import task_service_pb2 as pb
from conveyor_server._errors import invalid_argument
from conveyor_server._fire_times import (
    CronTimes,
    FireTimes,
    IntervalTimes,
    cron_problem,
    rfc3339,
    time_zone,
    to_millis,
)

SCHEDULE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MIN_INTERVAL_SECONDS = 1.0
DEFAULT_CATCH_UP_SECONDS = 60.0
MAX_CATCH_UP_SECONDS = 7 * 24 * 3600.0
# Missed fires caught up at most, the latest.
MAX_CATCH_UP_FIRES = 100

# The labels of the tasks a schedule submits.
SCHEDULE_LABEL = "conveyor.schedule"
FIRE_TIME_LABEL = "conveyor.fire_time"
# On a task TriggerSchedule submitted: the trigger's request id.
TRIGGER_LABEL = "conveyor.trigger"
FIRE_LABELS = (SCHEDULE_LABEL, FIRE_TIME_LABEL, TRIGGER_LABEL)

# The fields UpdateSchedule's mask may name, each a configuration field.
MASK_PATHS = (
    "cron",
    "time_zone",
    "interval",
    "task",
    "overlap_policy",
    "catch_up_window",
    "description",
)
MAX_DESCRIPTION = 1024


def schedule_not_found_message(schedule_id: str) -> str:
    return f"schedule {schedule_id!r} not found"


def schedule_id_problem(schedule_id: str) -> str:
    if not schedule_id:
        return "schedule id is required"
    return "schedule id must be 1-64 letters, digits and . _ -"


def check_schedule_id(schedule_id: str, field: str = "id") -> None:
    if SCHEDULE_ID.fullmatch(schedule_id) is None:
        raise invalid_argument([(field, schedule_id_problem(schedule_id))])


def check_request_id(request_id: str) -> None:
    if request_id and REQUEST_ID.fullmatch(request_id) is None:
        raise invalid_argument([("request_id", "must be 1-64 letters, digits and . _ : -")])


def seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def catch_up_seconds(spec: spb.Schedule) -> float:
    if spec.HasField("catch_up_window"):
        return seconds(spec.catch_up_window)
    return DEFAULT_CATCH_UP_SECONDS


def spec_of(schedule: spb.Schedule) -> spb.Schedule:
    """The configuration fields of a schedule, as a store keeps them."""
    spec = spb.Schedule()
    for path in MASK_PATHS:
        _copy_field(schedule, spec, path)
    return spec


def merged(stored: spb.Schedule, update: spb.Schedule, paths: Sequence[str]) -> spb.Schedule:
    """`stored` with the fields `paths` names taken from `update`."""
    spec = spb.Schedule()
    spec.CopyFrom(stored)
    for path in paths:
        _copy_field(update, spec, path)
    return spec


def _copy_field(source: Message, target: Message, path: str) -> None:
    if path in ("interval", "task", "catch_up_window"):
        if source.HasField(path):
            getattr(target, path).CopyFrom(getattr(source, path))
        else:
            target.ClearField(path)
    else:
        setattr(target, path, getattr(source, path))


def mask_paths(paths: Sequence[str]) -> list[str]:
    """The configuration fields an update mask names (all of them when it
    is empty); INVALID_ARGUMENT for any other path."""
    problems = [
        (
            f"update_mask.paths[{index}]",
            f"{path[:64]!r} cannot be updated; name some of {', '.join(MASK_PATHS)}"
            + (" (pause and resume have their own methods)" if path == "paused" else ""),
        )
        for index, path in enumerate(paths)
        if path not in MASK_PATHS
    ]
    if problems:
        raise invalid_argument(problems)
    return list(paths) if paths else list(MASK_PATHS)


def spec_problems(spec: spb.Schedule, prefix: str) -> list[tuple[str, str]]:
    """What is wrong with a schedule's timing and policies; the task
    template is checked apart (`template_problems`), as a submit is."""
    problems: list[tuple[str, str]] = []
    has_interval = spec.HasField("interval")
    if bool(spec.cron) == has_interval:
        problems.append(
            (
                prefix + ("cron" if spec.cron else "interval"),
                "give exactly one of cron (with time_zone) and interval",
            )
        )
    if spec.cron and (problem := cron_problem(spec.cron)) is not None:
        problems.append((prefix + "cron", problem))
    if spec.time_zone:
        if not spec.cron:
            problems.append((prefix + "time_zone", "goes only with cron"))
        else:
            try:
                time_zone(spec.time_zone)
            except ValueError as exc:
                problems.append((prefix + "time_zone", str(exc)))
    if has_interval:
        _check_duration(spec.interval, prefix + "interval", MIN_INTERVAL_SECONDS, None, problems)
    if spec.HasField("catch_up_window"):
        _check_duration(
            spec.catch_up_window, prefix + "catch_up_window", 0.0, MAX_CATCH_UP_SECONDS, problems
        )
    if spec.overlap_policy not in spb.OverlapPolicy.values():
        problems.append(
            (
                prefix + "overlap_policy",
                f"{spec.overlap_policy} is not an overlap policy; use OVERLAP_POLICY_SKIP "
                "or OVERLAP_POLICY_ALLOW",
            )
        )
    if not spec.HasField("task"):
        problems.append((prefix + "task", "is required: the SubmitTaskRequest each fire makes"))
    if len(spec.description) > MAX_DESCRIPTION:
        problems.append((prefix + "description", f"has more than {MAX_DESCRIPTION} characters"))
    return problems


def _check_duration(
    duration: duration_pb2.Duration,
    field: str,
    low: float,
    high: float | None,
    problems: list[tuple[str, str]],
) -> None:
    if not -999_999_999 <= duration.nanos <= 999_999_999 or duration.seconds * duration.nanos < 0:
        problems.append((field, "is not a valid duration"))
        return
    value = seconds(duration)
    if value < low:
        problems.append((field, f"must be at least {low:g}s, got {value:g}s"))
    elif high is not None and value > high:
        problems.append((field, f"must be at most {high:g}s, got {value:g}s"))


def template_problems(task: pb.SubmitTaskRequest, prefix: str) -> list[tuple[str, str]]:
    """What a task template may not hold, beside what SubmitTask refuses:
    each fire makes its own key and labels, and has no one to reply to."""
    problems = [
        (prefix + name, "must be empty in a schedule's task: each fire makes its own")
        for name in ("idempotency_key", "reply_to")
        if getattr(task, name)
    ]
    problems.extend(
        (prefix + name, "must be empty in a schedule's task: a fire depends on no task")
        for name in ("depends_on", "depends_on_requests")
        if len(getattr(task, name))
    )
    problems.extend(
        (f"{prefix}labels[{label!r}]", "is set by the schedule on each task it submits")
        for label in FIRE_LABELS
        if label in task.labels
    )
    return problems


def fire_times(spec: spb.Schedule, create_time: float) -> FireTimes:
    if spec.cron:
        return CronTimes(spec.cron, time_zone(spec.time_zone))
    every = spec.interval.seconds * 1000 + spec.interval.nanos // 1_000_000
    return IntervalTimes(to_millis(create_time), every)


def fire_request(schedule_id: str, spec: spb.Schedule, fire_time: int) -> pb.SubmitTaskRequest:
    """The submit of the fire at `fire_time` (milliseconds): the template,
    labelled, with a key of the schedule and the time, the same in every
    process."""
    request = _labelled(schedule_id, spec, fire_time)
    request.idempotency_key = f"sched:{schedule_id}:{fire_time}"
    return request


def trigger_request(
    schedule_id: str, spec: spb.Schedule, now: int, request_id: str
) -> pb.SubmitTaskRequest:
    """The submit of a TriggerSchedule call; its key is made of the
    request id (hashed, to fit the key's length)."""
    request = _labelled(schedule_id, spec, now)
    request.labels[TRIGGER_LABEL] = request_id
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:32]
    request.idempotency_key = f"sched:{schedule_id}:trigger:{digest}"
    return request


def _labelled(schedule_id: str, spec: spb.Schedule, fire_time: int) -> pb.SubmitTaskRequest:
    request = pb.SubmitTaskRequest()
    request.CopyFrom(spec.task)
    request.labels[SCHEDULE_LABEL] = schedule_id
    request.labels[FIRE_TIME_LABEL] = rfc3339(fire_time)
    return request
