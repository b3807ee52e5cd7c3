"""`watch_tasks` on both clients against the real server: the changes of
the matching tasks, the current ones first, and a cursor to resume from."""

from __future__ import annotations

import uuid
from itertools import islice
from typing import Any

from conveyor import TaskChange, TaskState
from tests.client.conftest import Connect


def test_watch_tasks_follows_the_matching_tasks(server: Any, connect: Connect) -> None:
    label = {"run": uuid.uuid4().hex[:12]}
    with connect(server.address, timeout=5.0) as client:
        waiting = client.submit("echo", {}, labels=label, delay=60)
        changes = client.watch_tasks(labels=label, include_current=True)
        first: TaskChange = next(changes)
        assert first.current and first.task is not None and first.task.id == waiting.id
        client.cancel(waiting.id)
        after = next(changes)
        assert after.task is not None and not after.current
        assert (after.task.id, after.task.state) == (waiting.id, TaskState.CANCELLED)
        changes.close()  # type: ignore[attr-defined]

        # Resuming from a cursor gives what happened since.
        other = client.submit("echo", {}, labels=label, delay=60)
        resumed = client.watch_tasks(labels=label, cursor=after.cursor)
        [created] = islice(resumed, 1)
        assert created.task is not None and created.task.id == other.id
        resumed.close()  # type: ignore[attr-defined]
        client.cancel(other.id)


def test_watch_tasks_says_reset_for_a_cursor_it_does_not_know(
    server: Any, connect: Connect
) -> None:
    with connect(server.address, timeout=5.0) as client:
        changes = client.watch_tasks(ids=["nothing-here"], cursor="unknown.1")
        first = next(changes)
        assert first.reset and first.task is None and first.cursor
        changes.close()  # type: ignore[attr-defined]
