"""Create the valid requests of a partial-success batch, each answered alone.

A store's `create` accepts a batch whole or not at all. To answer each
request on its own yet keep one store round trip in the normal case, the
whole batch goes to the store first; only a refusal makes a second try:

- an idempotency conflict names a key: the requests with that key are taken
  out and created one by one (so the first of them wins or meets the earlier
  task, and a repeat of it with the same content gets the same task), and
  the rest go to the store together again;
- a full queue or tenant quota: what fits is accepted in request order and
  the rest is refused with RESOURCE_EXHAUSTED.

StoreUnavailable and anything unexpected fail the whole call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from conveyor_server._errors import ServiceError
from conveyor_server.stores import IdempotencyConflict, NewTask, QueueFull, TaskRecord, TaskStore

__all__ = ["create_each"]

Outcome = TaskRecord | ServiceError


async def create_each(
    store: TaskStore,
    checked: Sequence[NewTask | ServiceError],
    now: float,
    store_error: Callable[[Exception], ServiceError],
) -> list[Outcome]:
    """Per item of `checked`, in order: the record created (or repeated by
    its idempotency key), or the refusal, as `store_error` maps it. Items
    that are already a ServiceError (refused by validation) stay as they
    are."""
    outcomes: list[Outcome | None] = [
        item if isinstance(item, ServiceError) else None for item in checked
    ]
    pending = [(index, item) for index, item in enumerate(checked) if isinstance(item, NewTask)]
    alone: list[tuple[int, NewTask]] = []
    while pending:
        try:
            records = await store.create([new for _, new in pending], now)
        except IdempotencyConflict as exc:
            keyed = [p for p in pending if p[1].idempotency_key == exc.key]
            if not keyed:
                raise  # not one of ours: trying again would meet it again
            alone += keyed
            pending = [p for p in pending if p[1].idempotency_key != exc.key]
            continue
        except QueueFull as exc:
            # A prefix of `room` requests holds at most `room` new tasks, so
            # it fits unless other calls took the room meanwhile; the prefix
            # shrinks on every try, so this ends.
            keep = max(0, min(len(pending) - 1, exc.limit - exc.depth))
            error = store_error(exc)
            for index, _ in pending[keep:]:
                outcomes[index] = error
            pending = pending[:keep]
            continue
        for (index, _), record in zip(pending, records, strict=True):
            outcomes[index] = record
        break
    for index, new in sorted(alone):
        try:
            [outcomes[index]] = await store.create([new], now)
        except (IdempotencyConflict, QueueFull) as exc:
            outcomes[index] = store_error(exc)
    done: list[Outcome] = []
    for outcome in outcomes:
        assert outcome is not None
        done.append(outcome)
    return done
