"""Request checks: every problem becomes a field violation that says what to fix."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from conveyor.v1 import task_service_pb2 as pb
from conveyor_server._convert import MAX_NESTING, StructView
from conveyor_server._errors import ServiceError, invalid_argument
from conveyor_server._handlers import HandlerRegistry, InvalidPayload
from conveyor_server._ids import MAX_ID_LENGTH, SAFE_ID
from conveyor_server.stores import NewTask, State

MAX_BATCH = 1000
MAX_ATTEMPTS = 100
MAX_TIMEOUT_SECONDS = 24 * 3600
MAX_DELAY_SECONDS = 30 * 24 * 3600
PRIORITY_RANGE = (-1000, 1000)
MAX_LABELS = 64
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,62}")
MAX_LABEL_VALUE = 256
CONCURRENCY_KEY = re.compile(r"[A-Za-z0-9._:/@-]{1,128}")
# Ids and earlier requests together: a fan-in wider than this is better
# split into stages.
MAX_DEPENDENCIES = 100
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_STATE_NAMES = {state.value: state for state in State}
# The range of google.protobuf.Timestamp: years 1 to 9999.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)


def check_id(task_id: str, field: str = "id") -> None:
    if SAFE_ID.fullmatch(task_id) is None:
        if not task_id:
            problem = "is required"
        elif len(task_id) > MAX_ID_LENGTH:
            problem = f"is {len(task_id)} characters; task ids have at most {MAX_ID_LENGTH}"
        else:
            problem = "may only contain letters, digits and . _ : -"
        raise invalid_argument([(field, f"task id {problem}")])


def check_reply_to(reply_to: str) -> str | None:
    """The problem with a reply_to that is set (an empty one is none), or
    None: the same rule as idempotency keys and task ids."""
    if reply_to and SAFE_ID.fullmatch(reply_to) is None:
        return f"must be 1-{MAX_ID_LENGTH} letters, digits and . _ : -"
    return None


def _fingerprint(request: pb.SubmitTaskRequest) -> bytes:
    """The digest an idempotency key compares: the whole request but its
    reply_to and traceparent, so that a retry from another client (another
    result stream) or another trace is a repeat, not a conflict."""
    if request.reply_to or request.traceparent:
        request = _without_caller(request)
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


def _without_caller(request: pb.SubmitTaskRequest) -> pb.SubmitTaskRequest:
    copy = pb.SubmitTaskRequest()
    copy.CopyFrom(request)
    copy.ClearField("reply_to")
    copy.ClearField("traceparent")
    return copy


def _nests_too_deep(payload: struct_pb2.Struct) -> bool:
    level: list[struct_pb2.Value] = list(payload.fields.values())
    depth = 1
    while level:
        if depth > MAX_NESTING:
            return True
        below: list[struct_pb2.Value] = []
        for value in level:
            kind = value.WhichOneof("kind")
            if kind == "struct_value":
                below.extend(value.struct_value.fields.values())
            elif kind == "list_value":
                below.extend(value.list_value.values)
        level = below
        depth += 1
    return False


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Enough to show the pattern; a payload of a million NaNs needs no million lines.
MAX_REPORTED_NUMBERS = 10


def _non_finite_numbers(payload: struct_pb2.Struct, path: str) -> list[str]:
    """Paths of the NaN and infinite numbers in a payload (which nests at most
    MAX_NESTING levels): JSON has no such numbers, so protobuf's JSON printer,
    grpcurl and every JSON client fail on a task that holds one."""
    found: list[str] = []
    stack: list[tuple[str, struct_pb2.Value]] = []

    def push_fields(prefix: str, struct: struct_pb2.Struct) -> None:
        for key, value in list(struct.fields.items())[::-1]:
            step = f".{key}" if _PLAIN_KEY.fullmatch(key) else f"[{key[:64]!r}]"
            stack.append((prefix + step, value))

    push_fields(path, payload)
    while stack and len(found) < MAX_REPORTED_NUMBERS:
        where, value = stack.pop()
        kind = value.WhichOneof("kind")
        if kind == "number_value":
            if not math.isfinite(value.number_value):
                found.append(where)
        elif kind == "struct_value":
            push_fields(where, value.struct_value)
        elif kind == "list_value":
            items = value.list_value.values
            stack.extend(
                (f"{where}[{index}]", items[index]) for index in reversed(range(len(items)))
            )
    return found


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _check_duration(
    duration: duration_pb2.Duration,
    field: str,
    low: float,
    high: float,
    problems: list[tuple[str, str]],
) -> float:
    if not -999_999_999 <= duration.nanos <= 999_999_999 or (duration.seconds * duration.nanos < 0):
        problems.append((field, "is not a valid duration"))
        return 0.0
    value = _seconds(duration)
    if not low <= value <= high:
        problems.append((field, f"must be between {low:g}s and {high:g}s, got {value:g}s"))
    return value


def _check_count(count: int) -> None:
    if count == 0:
        raise invalid_argument([("requests", "must hold at least one SubmitTaskRequest")])
    if count > MAX_BATCH:
        raise invalid_argument(
            [("requests", f"holds {count} requests; a batch takes at most {MAX_BATCH}")]
        )


class RequestValidator:
    def __init__(
        self,
        registry: HandlerRegistry,
        *,
        max_payload_bytes: int,
        default_max_attempts: int,
        default_timeout: float | None,
        shared: bool = False,
        accept_unserved: bool = False,
    ) -> None:
        self._registry = registry
        # On a shared store, worker processes may serve types this server
        # has no code for.
        self._shared = shared
        self._accept_unserved = accept_unserved
        self._max_payload_bytes = max_payload_bytes
        self._default_max_attempts = default_max_attempts
        self._default_timeout = default_timeout

    def submit(
        self, request: pb.SubmitTaskRequest, tenant: str = "", remote: frozenset[str] = frozenset()
    ) -> NewTask:
        """The task to create; `remote` holds the types live workers serve."""
        problems: list[tuple[str, str]] = []
        new = self._submit(request, "", problems, tenant, remote)
        if problems or new is None:
            raise invalid_argument(problems)
        return new

    def batch(
        self,
        request: pb.BatchSubmitTasksRequest,
        tenant: str = "",
        remote: frozenset[str] = frozenset(),
    ) -> list[NewTask]:
        _check_count(len(request.requests))
        problems: list[tuple[str, str]] = []
        tasks: list[NewTask] = []
        for index, item in enumerate(request.requests):
            new = self._submit(item, f"requests[{index}].", problems, tenant, remote, index)
            if new is not None:
                tasks.append(new)
        if problems:
            raise invalid_argument(problems)
        return tasks

    def each(
        self,
        request: pb.BatchSubmitTasksRequest,
        tenant: str = "",
        remote: frozenset[str] = frozenset(),
    ) -> list[NewTask | ServiceError]:
        """Per request, in order, the task to create or why it is refused,
        with fields named as for a lone SubmitTaskRequest (`payload.x`). Only
        the batch as a whole (empty, too long) fails the call. A request that
        waits for a refused one is refused too (when the store refuses one
        later, `create_each` does the same)."""
        _check_count(len(request.requests))
        checked: list[NewTask | ServiceError] = []
        for index, item in enumerate(request.requests):
            problems: list[tuple[str, str]] = []
            new = self._submit(item, "", problems, tenant, remote, index)
            if new is not None:
                problems = refused_dependencies(new, checked)
                if not problems:
                    checked.append(new)
                    continue
            checked.append(invalid_argument(problems))
        return checked

    def problems(
        self,
        request: pb.SubmitTaskRequest,
        prefix: str,
        tenant: str = "",
        remote: frozenset[str] = frozenset(),
    ) -> list[tuple[str, str]]:
        """What SubmitTask would refuse in `request`, each field named after
        `prefix` (`schedule.task.` for a schedule's template); empty when it
        would accept it."""
        problems: list[tuple[str, str]] = []
        self._submit(request, prefix, problems, tenant, remote)
        return problems

    def _unserved(self, task_type: str, remote: frozenset[str]) -> str | None:
        """Why a type without a local handler is refused; None when a live
        worker serves it (its payload is checked there) or it is let in."""
        if not self._shared:
            known = ", ".join(self._registry.types()) or "none"
            return f"unknown task type {task_type[:128]!r}; registered types: {known}"
        if task_type in remote or self._accept_unserved:
            return None
        served = ", ".join(sorted(remote.union(self._registry.types()))) or "none"
        return (
            f"no live worker serves task type {task_type[:128]!r}; served types: {served}. "
            "Start a worker with its handler, or run the API with --accept-unserved-types "
            "to queue it until one starts"
        )

    def _submit(
        self,
        request: pb.SubmitTaskRequest,
        prefix: str,
        problems: list[tuple[str, str]],
        tenant: str,
        remote: frozenset[str],
        index: int | None = None,
    ) -> NewTask | None:
        """The task a request asks for, or None with its problems added;
        `index` is its place in a BatchSubmitTasks (None in SubmitTask)."""
        start = len(problems)
        registration = None
        if not request.type:
            problems.append((prefix + "type", "is required: name a registered task type"))
        else:
            registration = self._registry.get(request.type)
            if registration is None:
                problem = self._unserved(request.type, remote)
                if problem is not None:
                    problems.append((prefix + "type", problem))
        payload = request.payload.SerializeToString()
        if len(payload) > self._max_payload_bytes:
            problems.append(
                (
                    prefix + "payload",
                    f"is {len(payload)} bytes; the limit is {self._max_payload_bytes} bytes",
                )
            )
        elif _nests_too_deep(request.payload):
            problems.append((prefix + "payload", f"nests deeper than {MAX_NESTING} levels"))
        elif non_finite := _non_finite_numbers(request.payload, prefix + "payload"):
            problems.extend(
                (where, "must be a finite number: JSON has no NaN or Infinity")
                for where in non_finite
            )
        elif registration is not None and registration.validate is not None:
            try:
                # The Struct is itself a Mapping: validators read only the
                # keys they need, without converting the whole payload.
                registration.validate(StructView(request.payload))
            except InvalidPayload as exc:
                where = f"{prefix}payload.{exc.field}" if exc.field else prefix + "payload"
                problems.append((where, str(exc)))

        labels: dict[str, str] | None = None
        if request.labels:
            if len(request.labels) > MAX_LABELS:
                problems.append((prefix + "labels", f"at most {MAX_LABELS} labels"))
            for label, value in request.labels.items():
                if LABEL_KEY.fullmatch(label) is None:
                    problems.append(
                        (
                            f"{prefix}labels[{label[:64]!r}]",
                            "label keys are 1-63 letters, digits and _ . / -, "
                            "starting with a letter or digit",
                        )
                    )
                elif len(value) > MAX_LABEL_VALUE:
                    problems.append(
                        (
                            f"{prefix}labels[{label!r}]",
                            f"values have at most {MAX_LABEL_VALUE} characters",
                        )
                    )
            labels = dict(request.labels)

        key: str | None = request.idempotency_key or None
        if key is not None and SAFE_ID.fullmatch(key) is None:
            problems.append(
                (
                    prefix + "idempotency_key",
                    f"must be 1-{MAX_ID_LENGTH} letters, digits and . _ : -",
                )
            )

        reply_to: str | None = request.reply_to or None
        if reply_to is not None and (problem := check_reply_to(reply_to)) is not None:
            problems.append((prefix + "reply_to", problem))

        max_attempts = request.max_attempts or self._default_max_attempts
        if not 1 <= max_attempts <= MAX_ATTEMPTS:
            problems.append(
                (
                    prefix + "max_attempts",
                    f"must be between 1 and {MAX_ATTEMPTS}, got {max_attempts}",
                )
            )

        timeout = self._default_timeout
        if request.HasField("timeout"):
            timeout = _check_duration(
                request.timeout, prefix + "timeout", 0.001, MAX_TIMEOUT_SECONDS, problems
            )
        delay = 0.0
        if request.HasField("delay"):
            delay = _check_duration(request.delay, prefix + "delay", 0, MAX_DELAY_SECONDS, problems)

        low, high = PRIORITY_RANGE
        if not low <= request.priority <= high:
            problems.append(
                (prefix + "priority", f"must be between {low} and {high}, got {request.priority}")
            )
        concurrency_key = request.concurrency_key or None
        if concurrency_key is not None and CONCURRENCY_KEY.fullmatch(concurrency_key) is None:
            problems.append(
                (prefix + "concurrency_key", "must be 1-128 letters, digits and . _ : / @ -")
            )
        _check_dependencies(request, prefix, index, problems)
        if len(problems) > start:
            return None
        fingerprint = _fingerprint(request) if key is not None else None
        return NewTask(
            type=request.type,
            payload=payload,
            labels=labels,
            max_attempts=max_attempts,
            priority=request.priority,
            timeout=timeout,
            delay=delay,
            idempotency_key=key,
            fingerprint=fingerprint,
            tenant=tenant,
            reply_to=reply_to,
            concurrency_key=concurrency_key,
            depends_on=tuple(request.depends_on),
            depends_on_requests=tuple(request.depends_on_requests),
            run_on_dependency_failure=request.run_on_dependency_failure,
        )


def _check_dependencies(
    request: pb.SubmitTaskRequest,
    prefix: str,
    index: int | None,
    problems: list[tuple[str, str]],
) -> None:
    """Shape, bounds and repeats of depends_on and depends_on_requests: the
    store checks only that the ids name tasks of the tenant."""
    count = len(request.depends_on) + len(request.depends_on_requests)
    if count > MAX_DEPENDENCIES:
        problems.append(
            (
                prefix + "depends_on",
                f"names {count} tasks with depends_on_requests; a task waits for at most "
                f"{MAX_DEPENDENCIES}: chain a task that waits for some of them instead",
            )
        )
        return
    first: dict[str, int] = {}
    for position, task_id in enumerate(request.depends_on):
        field = f"{prefix}depends_on[{position}]"
        if SAFE_ID.fullmatch(task_id) is None:
            problems.append(
                (field, f"must be a task id: 1-{MAX_ID_LENGTH} letters, digits and . _ : -")
            )
        elif task_id in first:
            problems.append((field, f"repeats depends_on[{first[task_id]}]; name each task once"))
        else:
            first[task_id] = position
    if not request.depends_on_requests:
        return
    if index is None:
        problems.append(
            (
                prefix + "depends_on_requests",
                "names requests of the same BatchSubmitTasks call; in SubmitTask, "
                "give the ids of existing tasks in depends_on",
            )
        )
        return
    earlier: dict[int, int] = {}
    for position, number in enumerate(request.depends_on_requests):
        field = f"{prefix}depends_on_requests[{position}]"
        if not 0 <= number < index:
            problems.append(
                (
                    field,
                    f"{number} is not an earlier request of this batch: a task cannot wait "
                    f"for itself or a later one ({_earlier_ones(index)})",
                )
            )
        elif number in earlier:
            problems.append(
                (field, f"repeats depends_on_requests[{earlier[number]}]; name each request once")
            )
        else:
            earlier[number] = position


def _earlier_ones(index: int) -> str:
    if index == 0:
        return "the first request can wait only for existing tasks, by id in depends_on"
    if index == 1:
        return "request 1 can wait for request 0"
    return f"request {index} can wait for requests 0 to {index - 1}"


def refused_dependencies(new: NewTask, outcomes: Sequence[object]) -> list[tuple[str, str]]:
    """The problems of a request of a partial-success batch that waits for
    earlier requests refused (their outcomes are ServiceErrors): it cannot
    wait for a task that will not exist."""
    return [
        (
            f"depends_on_requests[{position}]",
            f"request {number} was refused, so no task can wait for it; "
            "fix that request and submit both again",
        )
        for position, number in enumerate(new.depends_on_requests)
        if isinstance(outcomes[number], ServiceError)
    ]


def check_states(values: Sequence[int], field: str = "states") -> frozenset[State]:
    """The task states a filter names (empty: any state)."""
    states: list[State] = []
    for index, value in enumerate(values):
        state = _STATE_NAMES.get(value)
        if state is None:
            raise invalid_argument(
                [
                    (
                        f"{field}[{index}]",
                        f"{value} is not a task state; use TASK_STATE_PENDING, "
                        "_RUNNING, _SUCCEEDED, _FAILED or _CANCELLED",
                    )
                ]
            )
        states.append(state)
    return frozenset(states)


def check_created(
    request: pb.ListTasksRequest | pb.TaskFilter, prefix: str = ""
) -> tuple[float | None, float | None]:
    """A filter's created_after and created_before, in seconds (None when
    unset)."""
    problems: list[tuple[str, str]] = []
    bounds: list[float | None] = []
    for name in ("created_after", "created_before"):
        if not request.HasField(name):
            bounds.append(None)
            continue
        stamp: timestamp_pb2.Timestamp = getattr(request, name)
        low, high = _TIMESTAMP_SECONDS
        if not low <= stamp.seconds <= high or not 0 <= stamp.nanos < 1_000_000_000:
            problems.append((prefix + name, "is not a valid timestamp"))
            bounds.append(None)
        else:
            bounds.append(stamp.seconds + stamp.nanos / 1e9)
    after, before = bounds
    if after is not None and before is not None and after >= before:
        problems.append(
            (
                prefix + "created_before",
                "must be later than created_after: no task is created in between",
            )
        )
    if problems:
        raise invalid_argument(problems)
    return after, before


def page_size(value: int) -> int:
    if value < 0:
        raise invalid_argument([("page_size", f"must not be negative, got {value}")])
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)
