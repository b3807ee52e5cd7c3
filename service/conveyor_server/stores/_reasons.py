"""Why a due task waits, in words: what every store says of the figures of
the limits that hold it back (`TaskStore.pending_reason`)."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor_server.stores._records import PendingExplanation, PendingReason, TypeLimits


@dataclass(frozen=True, slots=True)
class LimitFigures:
    """A due task's type and key group as a store sees them now."""

    task_type: str
    limits: TypeLimits
    paused: bool
    running: int
    # The task's concurrency key (None for none) and its running tasks.
    key: str | None
    key_running: int
    # The tokens in the type's bucket now (meaningful with a rate limit).
    tokens: float


def explain(figures: LimitFigures) -> PendingExplanation:
    """The first limit that holds the task back, else QUEUED."""
    task_type, limits = figures.task_type, figures.limits
    if figures.paused:
        return PendingExplanation(PendingReason.TYPE_PAUSED, f"task type {task_type} is paused")
    if limits.max_running and figures.running >= limits.max_running:
        return PendingExplanation(
            PendingReason.CONCURRENCY_LIMIT,
            f"task type {task_type} allows {limits.max_running} running tasks"
            f" and {figures.running} are running",
        )
    key = figures.key
    if (
        key is not None
        and limits.max_running_per_key
        and (figures.key_running >= limits.max_running_per_key)
    ):
        return PendingExplanation(
            PendingReason.KEY_CONCURRENCY_LIMIT,
            f"concurrency key {key} of task type {task_type} allows"
            f" {limits.max_running_per_key} running tasks and {figures.key_running} are running",
        )
    rate = limits.max_starts_per_second
    if rate and figures.tokens < 1:
        wait = (1 - figures.tokens) / rate
        return PendingExplanation(
            PendingReason.RATE_LIMIT,
            f"task type {task_type} starts at most {rate:g} tasks per second;"
            f" the next start is allowed in {wait:.1f} s",
        )
    return PendingExplanation(
        PendingReason.QUEUED, f"due, waiting for a free worker of type {task_type}"
    )
