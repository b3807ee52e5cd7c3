"""Why a PENDING task is not running yet: `Task.pending_reason` and its
`pending_message`, as GetTask tells them.

The record itself tells of dependencies and delays; the store tells of the
limits (`TaskStore.pending_reason`); the catalog tells whether any live
worker serves the type. The first reason that holds wins, in the order of
the PendingReason enum.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from conveyor.v1 import task_pb2
from conveyor_server._catalog import TaskTypeCatalog
from conveyor_server.stores import (
    PendingExplanation,
    PendingReason,
    State,
    TaskRecord,
    TaskStore,
)

# The unfinished dependencies a message names; the rest are counted.
NAMED_DEPENDENCIES = 3


class PendingExplainer:
    def __init__(
        self,
        store: TaskStore,
        catalog: TaskTypeCatalog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._clock = clock

    async def fill(self, message: task_pb2.Task, record: TaskRecord) -> None:
        """Set the pending reason and message of a PENDING task."""
        if record.state is not State.PENDING:
            return
        explanation = await self.explain(record)
        message.pending_reason = explanation.reason.value  # type: ignore[assignment]
        message.pending_message = explanation.message

    async def explain(self, record: TaskRecord) -> PendingExplanation:
        """Why the PENDING task `record` waits."""
        if record.waiting > 0:
            return await self._dependencies(record)
        now = self._clock()
        if record.scheduled_time > now:
            return _delayed(record, now)
        explanation = await self._store.pending_reason(record, now)
        if explanation.reason is PendingReason.QUEUED and not await self._catalog.has_worker(
            record.type
        ):
            return PendingExplanation(
                PendingReason.NO_WORKER,
                f"no live worker serves task type {record.type!r}; start a worker with its "
                "handler, and the task runs",
            )
        return explanation

    async def _dependencies(self, record: TaskRecord) -> PendingExplanation:
        ids = record.depends_on or ()
        records = await asyncio.gather(*(self._store.get(i, record.tenant) for i in ids))
        unfinished = [
            f"{found.id} ({found.state.name})"
            for found in records
            if found is not None and not found.state.is_terminal
        ]
        named = ", ".join(unfinished[:NAMED_DEPENDENCIES])
        if len(unfinished) > NAMED_DEPENDENCIES:
            named += f" and {len(unfinished) - NAMED_DEPENDENCIES} more"
        count = record.waiting
        what = "task" if len(ids) == 1 else "tasks"
        return PendingExplanation(
            PendingReason.DEPENDENCIES,
            f"waiting for {count} of the {len(ids)} {what} it depends on to finish"
            + (f": {named}" if named else ""),
        )


def _delayed(record: TaskRecord, now: float) -> PendingExplanation:
    when = (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.scheduled_time))
        + f" (in {record.scheduled_time - now:.1f} s)"
    )
    error = record.error
    if error is None:
        return PendingExplanation(PendingReason.DELAYED, f"delayed until {when}")
    return PendingExplanation(
        PendingReason.BACKING_OFF,
        f"backing off after attempt {record.attempt} of {record.max_attempts} failed "
        f"({error.code}); the next attempt starts at {when}",
    )
