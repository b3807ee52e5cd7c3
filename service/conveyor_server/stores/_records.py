"""The server's own model of a task, independent of the wire format.

Records are plain slotted objects rather than protobuf messages: a retained
finished task costs a few hundred bytes this way, and the hot path (submit,
claim, complete) only touches Python attributes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class State(enum.IntEnum):
    """Task states; the values are those of `conveyor.v1.TaskState`."""

    PENDING = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def is_terminal(self) -> bool:
        return self >= State.SUCCEEDED


class ErrorCode:
    """Stable values of `TaskError.code`."""

    HANDLER_ERROR = "HANDLER_ERROR"
    NON_RETRYABLE = "NON_RETRYABLE"
    TIMEOUT = "TIMEOUT"
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    INVALID_RESULT = "INVALID_RESULT"
    UNKNOWN_TASK_TYPE = "UNKNOWN_TASK_TYPE"
    INTERRUPTED = "INTERRUPTED"
    DEPENDENCY_FAILED = "DEPENDENCY_FAILED"


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """Why an attempt failed: becomes `Task.error`."""

    code: str
    message: str
    exception_type: str = ""


@dataclass(frozen=True, slots=True)
class Progress:
    percent: float = 0.0
    message: str = ""
    current: int = 0
    total: int = 0


class TaskRecord:
    """One task as a store holds it.

    A store owns its records: callers outside the store treat them as
    read-only snapshots. Times are seconds since the epoch (UTC), None when
    unset.
    """

    __slots__ = (
        "attempt",
        "cancel_requested",
        "claim",
        "concurrency_key",
        "create_time",
        "depends_on",
        "end_time",
        "error",
        "fingerprint",
        "id",
        "idempotency_key",
        "labels",
        "max_attempts",
        "payload",
        "priority",
        "progress",
        "reply_to",
        "result",
        "run_on_dependency_failure",
        "scheduled_time",
        "seq",
        "start_time",
        "state",
        "tenant",
        "timeout",
        "traceparent",
        "type",
        "update_time",
        "version",
        "waiting",
    )

    def __init__(
        self,
        *,
        id: str,
        type: str,
        payload: bytes,
        labels: dict[str, str] | None,
        max_attempts: int,
        priority: int,
        timeout: float | None,
        idempotency_key: str | None,
        fingerprint: bytes | None,
        create_time: float,
        scheduled_time: float,
        seq: int = 0,
        tenant: str = "",
        reply_to: str | None = None,
        concurrency_key: str | None = None,
        depends_on: tuple[str, ...] | None = None,
        run_on_dependency_failure: bool = False,
        traceparent: str | None = None,
    ) -> None:
        self.id = id
        self.type = type
        self.state = State.PENDING
        # Serialized google.protobuf.Struct: compact, and turned back into a
        # message without a Python-level walk.
        self.payload = payload
        # Serialized google.protobuf.Value, set when SUCCEEDED.
        self.result: bytes | None = None
        self.error: TaskFailure | None = None
        self.progress: Progress | None = None
        self.attempt = 0
        # The fencing token: the number of the latest claim of the task,
        # 1 for the first. Unlike `attempt`, which RetryTask starts again
        # and a hand-back gives back, it never goes down, so a report of an
        # earlier claim is never taken for the current one.
        self.claim = 0
        self.max_attempts = max_attempts
        self.priority = priority
        self.labels = labels
        self.create_time = create_time
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.update_time = create_time
        self.scheduled_time = scheduled_time
        self.timeout = timeout
        self.idempotency_key = idempotency_key
        # Digest of the submit request, to tell a repeat from a conflict.
        self.fingerprint = fingerprint
        self.cancel_requested = False
        self.version = 1
        # Creation order inside one store; the list cursor.
        self.seq = seq
        self.tenant = tenant
        # The name of the result stream the submitter follows the task on
        # (WatchTasks reply_to). Not part of `fingerprint`.
        self.reply_to = reply_to
        # Limits per key of a type count the running tasks of one
        # (tenant, concurrency_key); fair claims take keys in turn.
        self.concurrency_key = concurrency_key
        # The ids of the tasks this one waits for, resolved at create.
        self.depends_on = depends_on
        # How many of `depends_on` are unfinished: the task is PENDING but
        # not queued (not claimable) while this is above 0.
        self.waiting = 0
        # Run when a dependency ends FAILED or CANCELLED, instead of being
        # cancelled with DEPENDENCY_FAILED.
        self.run_on_dependency_failure = run_on_dependency_failure
        # The W3C trace context of the submitting call, for the handler's
        # span. Not part of `fingerprint`.
        self.traceparent = traceparent

    def copy(self) -> TaskRecord:
        clone = TaskRecord.__new__(TaskRecord)
        for name in TaskRecord.__slots__:
            setattr(clone, name, getattr(self, name))
        return clone

    def __repr__(self) -> str:
        return (
            f"TaskRecord(id={self.id!r}, type={self.type!r}, state={self.state.name}, "
            f"attempt={self.attempt}, claim={self.claim}, version={self.version})"
        )


class NewTask:
    """A validated submit request, ready for `TaskStore.create`.

    A plain slotted class rather than a frozen dataclass: one is built per
    submitted task, and frozen initialisation costs several times more.
    """

    __slots__ = (
        "concurrency_key",
        "delay",
        "depends_on",
        "depends_on_requests",
        "fingerprint",
        "idempotency_key",
        "labels",
        "max_attempts",
        "payload",
        "priority",
        "reply_to",
        "run_on_dependency_failure",
        "tenant",
        "timeout",
        "traceparent",
        "type",
    )

    def __init__(
        self,
        type: str,
        payload: bytes,
        labels: dict[str, str] | None,
        max_attempts: int,
        priority: int,
        timeout: float | None,
        delay: float,
        idempotency_key: str | None,
        fingerprint: bytes | None,
        tenant: str = "",
        reply_to: str | None = None,
        concurrency_key: str | None = None,
        depends_on: tuple[str, ...] = (),
        depends_on_requests: tuple[int, ...] = (),
        run_on_dependency_failure: bool = False,
        traceparent: str | None = None,
    ) -> None:
        self.type = type
        self.payload = payload
        self.labels = labels
        self.max_attempts = max_attempts
        self.priority = priority
        self.timeout = timeout
        self.delay = delay
        self.idempotency_key = idempotency_key
        self.fingerprint = fingerprint
        self.tenant = tenant
        self.reply_to = reply_to
        self.concurrency_key = concurrency_key
        # Ids of existing tasks of the tenant, and indexes of earlier tasks
        # of the same `create` call (each less than this task's own index):
        # the store resolves both to ids and refuses an unknown id
        # (UnknownDependency).
        self.depends_on = depends_on
        self.depends_on_requests = depends_on_requests
        self.run_on_dependency_failure = run_on_dependency_failure
        self.traceparent = traceparent

    def scheduled_time(self, now: float) -> float:
        """When a task created at `now` becomes due."""
        return now + self.delay if self.delay > 0 else now

    def record(
        self,
        task_id: str,
        now: float,
        scheduled_time: float,
        seq: int,
        depends_on: tuple[str, ...] | None = None,
    ) -> TaskRecord:
        """The new task's record, as every store creates it; `depends_on`
        are the resolved ids of its dependencies (the store sets `waiting`)."""
        return TaskRecord(
            id=task_id,
            type=self.type,
            payload=self.payload,
            labels=self.labels,
            max_attempts=self.max_attempts,
            priority=self.priority,
            timeout=self.timeout,
            idempotency_key=self.idempotency_key,
            fingerprint=self.fingerprint,
            create_time=now,
            scheduled_time=scheduled_time,
            seq=seq,
            tenant=self.tenant,
            reply_to=self.reply_to,
            concurrency_key=self.concurrency_key,
            depends_on=depends_on,
            run_on_dependency_failure=self.run_on_dependency_failure,
            traceparent=self.traceparent,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as the runner reports it to the store.

    `claim` is the claim number of the attempt (`TaskRecord.claim` as the
    claim returned it): the store applies the outcome only while that claim
    still holds the task. Exactly one of `result` (success) or `failure` is set, unless
    `cancelled` is true. `retry_at` is set on a failure that may be retried.
    """

    task_id: str
    claim: int
    result: bytes | None = None
    failure: TaskFailure | None = None
    retry_at: float | None = None
    cancelled: bool = False
    # The handler's last progress report, not yet applied.
    progress: Progress | None = None


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Filters and position of one ListTasks page."""

    page_size: int
    states: frozenset[State] = field(default_factory=frozenset)
    type: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    # List only tasks created before this sequence number (exclusive).
    before_seq: int | None = None
    tenant: str = ""
    # Only tasks created at or after / before these times (seconds).
    created_after: float | None = None
    created_before: float | None = None


class CancelOutcome(enum.Enum):
    """What a call to `TaskStore.cancel` did."""

    # The task was PENDING: it is CANCELLED now.
    CANCELLED = "cancelled"
    # The task was RUNNING: its attempt is asked to stop, and ends CANCELLED
    # when it does.
    REQUESTED = "requested"
    # Nothing to do: the task was CANCELLED already, or a stop was already
    # asked of its running attempt.
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Cancellation:
    """The answer of `TaskStore.cancel`: the task after the call, and what
    the call did to it."""

    record: TaskRecord
    outcome: CancelOutcome


class PendingReason(enum.IntEnum):
    """Why a PENDING task waits; the values are those of
    `conveyor.v1.PendingReason`. When several hold, the lowest value."""

    UNSPECIFIED = 0
    DEPENDENCIES = 1
    DELAYED = 2
    BACKING_OFF = 3
    TYPE_PAUSED = 4
    CONCURRENCY_LIMIT = 5
    KEY_CONCURRENCY_LIMIT = 6
    RATE_LIMIT = 7
    NO_WORKER = 8
    QUEUED = 9


@dataclass(frozen=True, slots=True)
class PendingExplanation:
    """What a store says of a PENDING task: the first reason that holds it
    (QUEUED when nothing in the store does; the service then checks for a
    live worker), and the reason in words with its figures."""

    reason: PendingReason
    message: str


# The names of the limits, as TaskTypeLimits and UpdateTaskType's mask
# spell them.
LIMIT_NAMES = ("max_running", "max_running_per_key", "max_starts_per_second", "burst")


@dataclass(frozen=True, slots=True)
class TypeLimits:
    """The limits of a task type; 0 means no limit."""

    max_running: int = 0
    max_running_per_key: int = 0
    max_starts_per_second: float = 0.0
    # The token bucket's size; 0 means max(1, max_starts_per_second).
    burst: int = 0

    @property
    def bucket_size(self) -> float:
        return float(self.burst) if self.burst > 0 else max(1.0, self.max_starts_per_second)

    @property
    def any(self) -> bool:
        return bool(self.max_running or self.max_running_per_key or self.max_starts_per_second)


NO_LIMITS = TypeLimits()


@dataclass(frozen=True, slots=True)
class TypeSettings:
    """What a store keeps of a task type: the limits its handler declares
    (`defaults`, written by every process that serves it, the last one
    winning), those set at run time through the API (`overrides`, by limit
    name), and whether it is paused."""

    type: str
    defaults: TypeLimits = NO_LIMITS
    overrides: tuple[tuple[str, float], ...] = ()
    paused: bool = False
    update_time: float = 0.0

    @property
    def limits(self) -> TypeLimits:
        """The limits in force: each override, else the default."""
        if not self.overrides:
            return self.defaults
        values = {name: getattr(self.defaults, name) for name in LIMIT_NAMES}
        for name, value in self.overrides:
            values[name] = value
        return TypeLimits(
            max_running=int(values["max_running"]),
            max_running_per_key=int(values["max_running_per_key"]),
            max_starts_per_second=float(values["max_starts_per_second"]),
            burst=int(values["burst"]),
        )


@dataclass(frozen=True, slots=True)
class TypeCounts:
    """Tasks of one type now, across every tenant and worker."""

    running: int = 0
    pending: int = 0


@dataclass(frozen=True, slots=True)
class BacklogGauge:
    """The unfinished tasks of one task type and tenant, across every
    process of a store: what an autoscaler sizes workers on. `pending`
    counts every PENDING task (delayed ones and those waiting for
    dependencies too), `due` those a worker could start now but for the
    limits, and `oldest_due_time` is when the longest-waiting of them
    became due (None when none is)."""

    type: str
    tenant: str
    pending: int = 0
    due: int = 0
    running: int = 0
    oldest_due_time: float | None = None


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A schedule as a store keeps it. The store does not read `spec` (a
    serialized `conveyor.v1.Schedule` holding its configuration fields):
    the service does. `fired_until` is the last fire time handled; it only
    grows (`advance_schedule`)."""

    id: str
    tenant: str
    spec: bytes
    paused: bool
    create_time: float
    update_time: float
    fired_until: float
