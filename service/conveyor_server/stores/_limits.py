"""The limits of a task type in a store of one process (memory, SQLite):
what of the type runs, in all and per (tenant, concurrency key), its token
bucket of starts, and its pause. The due queue asks a type's gate before it
hands out a task of the type, and tells it of every start and every end.
"""

from __future__ import annotations

from conveyor_server.stores._reasons import LimitFigures, explain
from conveyor_server.stores._records import (
    NO_LIMITS,
    PendingExplanation,
    TaskRecord,
    TypeLimits,
)

KeySlot = tuple[str, str]


class TypeGate:
    """One task type's limits, and the counts they are checked against."""

    __slots__ = ("by_key", "last", "limits", "open", "paused", "running", "tokens", "type")

    def __init__(self, task_type: str) -> None:
        self.type = task_type
        self.limits = NO_LIMITS
        self.paused = False
        # True when no limit and no pause holds anything back, so that the
        # common case costs one attribute read per claim.
        self.open = True
        self.running = 0
        # Running tasks per (tenant, concurrency key), of tasks with a key.
        self.by_key: dict[KeySlot, int] = {}
        # The token bucket: `tokens` as of `last`; full when `last` is None.
        self.tokens = 0.0
        self.last: float | None = None

    def configure(self, limits: TypeLimits, paused: bool) -> None:
        """Apply new settings. A bucket that appears starts full; one that
        changes size keeps its tokens, up to the new size."""
        had_rate = bool(self.limits.max_starts_per_second)
        self.limits, self.paused = limits, paused
        self.open = not paused and not limits.any
        if not limits.max_starts_per_second or not had_rate:
            self.last = None
        else:
            self.tokens = min(self.tokens, limits.bucket_size)

    # -- the type's own limits -------------------------------------------

    def admits(self, now: float) -> bool:
        """Whether a task of the type may start at `now`, as far as the
        type's own limits tell (a key's limit is asked apart)."""
        if self.open:
            return True
        limits = self.limits
        if self.paused or (limits.max_running and self.running >= limits.max_running):
            return False
        return not limits.max_starts_per_second or self.tokens_at(now) >= 1.0

    def tokens_at(self, now: float) -> float:
        size = self.limits.bucket_size
        if self.last is None:
            return size
        refill = max(0.0, now - self.last) * self.limits.max_starts_per_second
        return min(size, self.tokens + refill)

    def next_token_time(self) -> float | None:
        """When the bucket next holds a whole token, if it is short of one
        and nothing else holds the type back; None otherwise."""
        rate = self.limits.max_starts_per_second
        if not rate or self.last is None or self.tokens >= 1.0 or self.paused:
            return None
        if self.limits.max_running and self.running >= self.limits.max_running:
            return None
        return self.last + (1.0 - self.tokens) / rate

    def key_full(self, tenant: str, key: str) -> bool:
        """Whether (tenant, key) runs as many tasks as the type allows a key."""
        limit = self.limits.max_running_per_key
        return bool(limit) and self.by_key.get((tenant, key), 0) >= limit

    # -- starts and ends ---------------------------------------------------

    def started(self, record: TaskRecord, now: float | None) -> None:
        """A task of the type entered RUNNING; it took a token unless `now`
        is None (a running task loaded as it was)."""
        self.running += 1
        key = record.concurrency_key
        if key is not None:
            slot = (record.tenant, key)
            self.by_key[slot] = self.by_key.get(slot, 0) + 1
        if now is not None and self.limits.max_starts_per_second:
            self.tokens = self.tokens_at(now) - 1.0
            self.last = now if self.last is None else max(self.last, now)

    def started_all(self, records: list[TaskRecord]) -> None:
        """Tasks of an open type entered RUNNING (no token, no limit to
        check between them)."""
        self.running += len(records)
        by_key = self.by_key
        for record in records:
            key = record.concurrency_key
            if key is not None:
                slot = (record.tenant, key)
                by_key[slot] = by_key.get(slot, 0) + 1

    def stopped(self, record: TaskRecord) -> tuple[bool, KeySlot | None]:
        """A task of the type left RUNNING. Returns whether the type was at
        its max_running, and the (tenant, key) of the task when that key was
        at its limit: what its end frees."""
        limits = self.limits
        was_full = bool(limits.max_running) and self.running >= limits.max_running
        self.running -= 1
        key = record.concurrency_key
        if key is None:
            return was_full, None
        slot = (record.tenant, key)
        count = self.by_key[slot]
        if count > 1:
            self.by_key[slot] = count - 1
        else:
            del self.by_key[slot]
        key_was_full = bool(limits.max_running_per_key) and count >= limits.max_running_per_key
        return was_full, slot if key_was_full else None

    # -- why a task waits --------------------------------------------------

    def explain(self, record: TaskRecord, now: float) -> PendingExplanation:
        """Why the due task `record` of this type waits, limits first."""
        key = record.concurrency_key
        return explain(
            LimitFigures(
                task_type=self.type,
                limits=self.limits,
                paused=self.paused,
                running=self.running,
                key=key,
                key_running=0 if key is None else self.by_key.get((record.tenant, key), 0),
                tokens=self.tokens_at(now),
            )
        )
