"""One attempt on a runner: its state, the handler thread's side of it, the
retry policy, and the log lines of starts and ends."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor_server._context import TaskCancelled, TaskContext
from conveyor_server._convert import ResultNotJSON, payload_to_python, result_to_bytes
from conveyor_server._handlers import InvalidPayload, NonRetryableError, Registration
from conveyor_server._logging import task_fields
from conveyor_server._tracing import attempt_trace
from conveyor_server.stores import ErrorCode, Progress, State, TaskFailure, TaskRecord

logger = logging.getLogger("conveyor_server._runner")
task_logger = logging.getLogger("conveyor_server.tasks")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff: float
    backoff_max: float

    def retry_at(self, attempt: int, max_attempts: int, now: float) -> float | None:
        """When to run the next attempt after `attempt` failed, or None."""
        if attempt >= max_attempts:
            return None
        ceiling = min(self.backoff_max, self.backoff * 2.0 ** (attempt - 1))
        # Equal jitter: at least half the delay, so retries neither stampede
        # nor collapse to zero.
        return now + ceiling * random.uniform(0.5, 1.0)


class RunningAttempt:
    """One attempt in flight on this runner."""

    __slots__ = (
        "attempt",
        "claim",
        "ctx",
        "finished",
        "max_attempts",
        "progress",
        "progress_posted",
        "stop_timer",
        "task_id",
        "tenant",
        "timeout_timer",
        "traceparent",
    )

    def __init__(self, record: TaskRecord, ctx: TaskContext) -> None:
        self.task_id = record.id
        self.tenant = record.tenant
        self.attempt = record.attempt
        # What the store knows this attempt by in its reports (fencing).
        self.claim = record.claim
        self.max_attempts = record.max_attempts
        # The submitting call's trace context: the attempt's span continues it.
        self.traceparent = record.traceparent
        self.ctx = ctx
        # Set once the store has been told how the attempt ended, perhaps
        # before the handler's thread returns (timeout, cancel, shutdown).
        self.finished = False
        self.progress: Progress | None = None
        self.progress_posted = False
        self.timeout_timer: asyncio.TimerHandle | None = None
        self.stop_timer: asyncio.TimerHandle | None = None

    def log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "task_id": self.task_id,
            "task_type": self.ctx.type,
            "attempt": self.attempt,
        }
        if self.tenant:
            fields["tenant"] = self.tenant
        return fields


def log_started(records: Sequence[TaskRecord]) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        for record in records:
            logger.debug(
                "task %s attempt %d started", record.id, record.attempt, extra=task_fields(record)
            )


def log_ended(records: Sequence[TaskRecord]) -> None:
    """One line per attempt the store recorded the end of: DEBUG for a
    success (thousands a second would flood INFO), INFO otherwise."""
    debug = logger.isEnabledFor(logging.DEBUG)
    for record in records:
        state = record.state
        if state is State.SUCCEEDED:
            if debug:
                logger.debug(
                    "task %s attempt %d succeeded",
                    record.id,
                    record.attempt,
                    extra=task_fields(record),
                )
        elif state is State.CANCELLED:
            logger.info(
                "task %s cancelled in attempt %d",
                record.id,
                record.attempt,
                extra=task_fields(record),
            )
        elif state is State.FAILED or state is State.PENDING:
            error = record.error
            logger.info(
                "task %s attempt %d failed: %s: %s%s",
                record.id,
                record.attempt,
                error.code if error is not None else "",
                error.message if error is not None else "",
                "; will retry" if state is State.PENDING else "",
                extra=task_fields(record),
            )


class ProgressPosted:
    """A handler thread reported progress (the latest is on `running`)."""

    __slots__ = ("running",)

    def __init__(self, running: RunningAttempt) -> None:
        self.running = running


class HandlerReturned:
    """A handler thread finished an attempt: its result, or why it failed."""

    __slots__ = ("failure", "result", "running")

    def __init__(
        self, running: RunningAttempt, result: bytes | None, failure: TaskFailure | None
    ) -> None:
        self.running = running
        self.result = result
        self.failure = failure


def run_handler(
    running: RunningAttempt,
    registration: Registration,
    payload: bytes,
    post: Callable[[HandlerReturned], None],
    max_result_bytes: int,
) -> None:
    """Run one attempt's handler on this (executor) thread and `post` how it
    ended, whatever happens.

    The payload check runs first: an API replica without the handler code
    accepted the task unchecked, so this is where a bad payload is found.
    """
    result: bytes | None = None
    failure: TaskFailure | None = None
    trace = attempt_trace(running)
    post = trace.ending(post)
    try:
        arguments = checked_arguments(registration, payload)
        with trace.active():
            value = registration.handler(running.ctx, arguments)
        result, failure = encode_result(value, max_result_bytes)
    except Exception as exc:
        failure = failure_of(exc, running.ctx)
    finally:
        post(HandlerReturned(running, result, failure))


def checked_arguments(registration: Registration, payload: bytes) -> dict[str, Any]:
    """The payload as the handler receives it, once its type's check passed."""
    arguments = payload_to_python(payload)
    if registration.validate is not None:
        registration.validate(arguments)
    return arguments


def encode_result(value: Any, max_result_bytes: int) -> tuple[bytes | None, TaskFailure | None]:
    """A handler's return value as stored, or why it cannot be."""
    result = result_to_bytes(value)
    if len(result) > max_result_bytes:
        # Capped as payloads are: a task must stay readable in one
        # message, alone and on a page of ListTasks. Not retried: the
        # same handler would return the same result.
        return None, TaskFailure(
            ErrorCode.INVALID_RESULT,
            f"the result is {len(result)} bytes serialized; the limit is "
            f"{max_result_bytes} bytes (--max-result-bytes): store large outputs "
            "elsewhere and return a reference",
        )
    return result, None


def failure_of(exc: Exception, ctx: TaskContext) -> TaskFailure:
    """How an attempt failed, from what its handler (or the payload check,
    or the result's encoding) raised; the code decides whether it is retried."""
    if isinstance(exc, InvalidPayload):
        return TaskFailure(ErrorCode.INVALID_PAYLOAD, str(exc), type(exc).__name__)
    if isinstance(exc, NonRetryableError):
        return TaskFailure(ErrorCode.NON_RETRYABLE, str(exc), type(exc).__name__)
    if isinstance(exc, TaskCancelled):
        return TaskFailure(ErrorCode.INTERRUPTED, str(exc), type(exc).__name__)
    if isinstance(exc, ResultNotJSON):
        return TaskFailure(ErrorCode.INVALID_RESULT, str(exc), type(exc).__name__)
    # Not through ctx.logger: the task's logs hold its handler's lines only.
    task_logger.info(
        "handler raised %s",
        type(exc).__name__,
        exc_info=exc,
        extra={"task_id": ctx.task_id, "task_type": ctx.type, "attempt": ctx.attempt},
    )
    message = str(exc) or type(exc).__name__
    return TaskFailure(ErrorCode.HANDLER_ERROR, message[:4096], type(exc).__name__)
