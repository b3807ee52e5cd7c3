"""The errors a store raises for a request it refuses."""

from __future__ import annotations

from conveyor_server.stores._records import TaskRecord


class StoreError(Exception):
    """Base of the errors a store raises for a request it refuses."""


class QueueFull(StoreError):
    """Too many unfinished tasks: in all, or (`tenant` set) of one tenant."""

    def __init__(self, depth: int, limit: int, tenant: str | None = None) -> None:
        if tenant is None:
            message = f"queue is full: {depth} unfinished tasks, limit {limit}"
        else:
            message = f"tenant {tenant!r} has {depth} unfinished tasks, its quota is {limit}"
        super().__init__(message)
        self.depth = depth
        self.limit = limit
        self.tenant = tenant


class IdempotencyConflict(StoreError):
    """A key seen before with a different request; `task_id` is None when
    the earlier use is in the same batch."""

    def __init__(self, key: str, task_id: str | None) -> None:
        where = f"by task {task_id}" if task_id is not None else "earlier in this batch"
        super().__init__(
            f"idempotency key {key!r} was already used {where} with a different request"
        )
        self.key = key
        self.task_id = task_id


class InvalidTransition(StoreError):
    """The task is not in a state that allows the change (cancel, retry)."""

    def __init__(self, record: TaskRecord, message: str) -> None:
        super().__init__(message)
        self.record = record


class StoreUnavailable(StoreError):
    """The backing store cannot be reached; the call may be retried."""


class UnknownDependency(StoreError):
    """A task of a `create` call names a dependency that is no task of its
    tenant; `index` is the task's place in the call, `position` the place
    of the id in its `depends_on`."""

    def __init__(self, index: int, position: int, task_id: str) -> None:
        super().__init__(f"task {task_id} does not exist; a task can depend only on existing tasks")
        self.index = index
        self.position = position
        self.task_id = task_id


class ScheduleExists(StoreError):
    """`create_schedule` with an id the tenant already uses."""

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id!r} already exists")
        self.schedule_id = schedule_id
