"""Create the valid requests of a partial-success batch, each answered alone.

A store's `create` accepts a batch whole or not at all. To answer each
request on its own yet keep one store round trip in the normal case, the
whole batch goes to the store first; only a refusal makes a second try:

- an idempotency conflict names a key: the requests with that key are taken
  out and created one by one (so the first of them wins or meets the earlier
  task, and a repeat of it with the same content gets the same task), and
  the rest go to the store together again;
- an unknown dependency names a request: it is refused, and the rest go to
  the store together again;
- a full queue or tenant quota: what fits is accepted in request order and
  the rest is refused with RESOURCE_EXHAUSTED.

A request that waits for earlier ones (`depends_on_requests`) follows them:
it is refused when one of them is, and it is created one by one after them
when one of them is. Its indexes are renumbered for each store call (the
call holds only some of the batch), and an earlier request already created
is named by its task id instead.

StoreUnavailable and anything unexpected fail the whole call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from conveyor_server._errors import ServiceError, invalid_argument
from conveyor_server._validation import refused_dependencies
from conveyor_server.stores import (
    IdempotencyConflict,
    NewTask,
    QueueFull,
    TaskRecord,
    TaskStore,
    UnknownDependency,
)

__all__ = ["create_each"]

Outcome = TaskRecord | ServiceError


async def create_each(
    store: TaskStore,
    checked: Sequence[NewTask | ServiceError],
    now: float,
    refusal: Callable[[Exception], ServiceError],
) -> list[Outcome]:
    """Per item of `checked`, in order: the record created (or repeated by
    its idempotency key), or the refusal, as `refusal` maps the store's
    error. Items that are already a ServiceError (refused by validation)
    stay as they are."""
    outcomes: list[Outcome | None] = [
        item if isinstance(item, ServiceError) else None for item in checked
    ]
    pending = [index for index, item in enumerate(checked) if isinstance(item, NewTask)]
    alone: list[int] = []
    while pending:
        call = _call(checked, pending, outcomes)
        try:
            records = await store.create([new for _, new in call], now) if call else []
        except IdempotencyConflict as exc:
            keyed = {index for index, new in call if new.idempotency_key == exc.key}
            if not keyed:
                raise  # not one of ours: trying again would meet it again
            taken = _with_dependents(keyed, call, checked)
            alone += taken
            pending = [index for index, _ in call if index not in taken]
            continue
        except UnknownDependency as exc:
            refused, _ = call[exc.index]
            outcomes[refused] = refusal(exc)
            pending = [index for index, _ in call if index != refused]
            continue
        except QueueFull as exc:
            # A prefix of `room` requests holds at most `room` new tasks, so
            # it fits unless other calls took the room meanwhile; the prefix
            # shrinks on every try, so this ends.
            keep = max(0, min(len(call) - 1, exc.limit - exc.depth))
            error = refusal(exc)
            for index, _ in call[keep:]:
                outcomes[index] = error
            pending = [index for index, _ in call[:keep]]
            continue
        for (index, _), record in zip(call, records, strict=True):
            outcomes[index] = record
        break
    for index in sorted(alone):
        call = _call(checked, [index], outcomes)
        if not call:
            continue  # refused: it waits for a refused request
        [(_, new)] = call
        try:
            [outcomes[index]] = await store.create([new], now)
        except (IdempotencyConflict, QueueFull, UnknownDependency) as exc:
            outcomes[index] = refusal(exc)
    done: list[Outcome] = []
    for outcome in outcomes:
        assert outcome is not None
        done.append(outcome)
    return done


def _call(
    checked: Sequence[NewTask | ServiceError],
    pending: Sequence[int],
    outcomes: list[Outcome | None],
) -> list[tuple[int, NewTask]]:
    """The tasks of one store call, from the `pending` requests: each with
    its earlier requests renumbered within the call, or named by id when
    created already. A request that waits for a refused one is refused here
    (its outcome set) and left out."""
    call: list[tuple[int, NewTask]] = []
    places: dict[int, int] = {}
    for index in pending:
        new = checked[index]
        assert isinstance(new, NewTask)
        if new.depends_on_requests:
            problems = refused_dependencies(new, outcomes)
            if problems:
                outcomes[index] = invalid_argument(problems)
                continue
            new = _renumbered(new, places, outcomes)
        places[index] = len(call)
        call.append((index, new))
    return call


def _renumbered(new: NewTask, places: dict[int, int], outcomes: list[Outcome | None]) -> NewTask:
    ids = list(new.depends_on)
    requests: list[int] = []
    for number in new.depends_on_requests:
        earlier = outcomes[number]
        if isinstance(earlier, TaskRecord):
            if earlier.id not in ids:
                ids.append(earlier.id)
        else:
            requests.append(places[number])
    clone = NewTask.__new__(NewTask)
    for name in NewTask.__slots__:
        setattr(clone, name, getattr(new, name))
    clone.depends_on = tuple(ids)
    clone.depends_on_requests = tuple(requests)
    return clone


def _with_dependents(
    keyed: set[int],
    call: Sequence[tuple[int, NewTask]],
    checked: Sequence[NewTask | ServiceError],
) -> list[int]:
    """`keyed` and the requests of the call that wait for one of them, at
    any depth (a request waits only for earlier ones: one pass in order)."""
    taken = set(keyed)
    for index, _ in call:
        item = checked[index]
        assert isinstance(item, NewTask)
        if any(number in taken for number in item.depends_on_requests):
            taken.add(index)
    return sorted(taken)
