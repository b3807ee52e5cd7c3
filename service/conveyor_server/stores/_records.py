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
        "create_time",
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
        "scheduled_time",
        "seq",
        "start_time",
        "state",
        "tenant",
        "timeout",
        "type",
        "update_time",
        "version",
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
        "delay",
        "fingerprint",
        "idempotency_key",
        "labels",
        "max_attempts",
        "payload",
        "priority",
        "reply_to",
        "tenant",
        "timeout",
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

    def scheduled_time(self, now: float) -> float:
        """When a task created at `now` becomes due."""
        return now + self.delay if self.delay > 0 else now

    def record(self, task_id: str, now: float, scheduled_time: float, seq: int) -> TaskRecord:
        """The new task's record, as every store creates it."""
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
