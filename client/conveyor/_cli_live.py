"""`conveyor list --watch`: the task table, kept current by WatchTasks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence

from rich.console import Console
from rich.live import Live

from conveyor import _cli_render as render
from conveyor._client import Client
from conveyor._types import Task, TaskChange, TaskState


class LiveRows:
    """The newest `limit` tasks that match, by id; a change updates its row,
    or adds the task when it matches. A listed task keeps its row after it
    leaves `states`, so that it is seen finishing."""

    def __init__(self, states: Iterable[TaskState], limit: int) -> None:
        self._states = frozenset(states)
        self._limit = limit
        self._rows: dict[str, Task] = {}

    def add(self, task: Task) -> bool:
        """Take a snapshot in; whether the table changed."""
        known = self._rows.get(task.id)
        if known is not None:
            if task.version <= known.version:
                return False
        elif self._states and task.state not in self._states:
            return False
        self._rows[task.id] = task
        if len(self._rows) > self._limit:
            oldest = min(self._rows.values(), key=_created)
            del self._rows[oldest.id]
        return True

    def clear(self) -> None:
        self._rows.clear()

    def tasks(self) -> list[Task]:
        """Newest first, as `list` prints them."""
        return sorted(self._rows.values(), key=_created, reverse=True)


def _created(task: Task) -> float:
    return task.create_time.timestamp() if task.create_time else 0.0


def watch_list(
    client: Client,
    *,
    states: Sequence[TaskState],
    type: str | None,
    labels: Mapping[str, str],
    limit: int,
    console: Console,
) -> None:
    """Show the table and keep it current until interrupted (Ctrl-C)."""
    rows = LiveRows(states, limit)

    def listed() -> None:
        rows.clear()
        for task in client.list(states=states, type=type, labels=labels, limit=limit):
            rows.add(task)

    listed()
    # No state filter on the stream: a listed task is followed to its end.
    changes = client.watch_tasks(type=type, labels=labels, include_current=True)
    with Live(render.task_table(rows.tasks()), console=console, auto_refresh=False) as live:
        try:
            for change in changes:
                if _apply(rows, change, listed):
                    live.update(render.task_table(rows.tasks()), refresh=True)
        except KeyboardInterrupt:
            pass
        finally:
            changes.close()  # type: ignore[attr-defined]


def watch_json(
    client: Client, *, states: Sequence[TaskState], type: str | None, labels: Mapping[str, str]
) -> None:
    """Print each change of a matching task as one JSON line until interrupted;
    a reset prints {"reset": true}: changes may have been missed."""
    changes = client.watch_tasks(states=states, type=type, labels=labels, include_current=True)
    try:
        for change in changes:
            if change.task is None:
                print(json.dumps({"reset": True, "cursor": change.cursor}), flush=True)
            else:
                print(render.dumps_task(change.task, indent=None), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        changes.close()  # type: ignore[attr-defined]


def _apply(rows: LiveRows, change: TaskChange, relist: Callable[[], None]) -> bool:
    if change.task is None:
        relist()  # changes may have been missed: list again
        return True
    return rows.add(change.task)
