"""How `conveyor types` and `conveyor workers` print: tables for people,
JSON (the messages' proto JSON) for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf import json_format
from rich import box
from rich.markup import escape
from rich.table import Table

from conveyor._types import TaskType, TaskTypeLimits, Worker


def dumps_task_types(types: Sequence[TaskType]) -> str:
    return json.dumps([json_format.MessageToDict(t.raw) for t in types], indent=2)


def dumps_workers(workers: Sequence[Worker]) -> str:
    return json.dumps([json_format.MessageToDict(w.raw) for w in workers], indent=2)


def limits_text(limits: TaskTypeLimits) -> str:
    """The limits in force, in words: `4 running, 2 per key, 10/s (burst 20)`, or `-`."""
    parts = []
    if limits.max_running:
        parts.append(f"{limits.max_running} running")
    if limits.max_running_per_key:
        parts.append(f"{limits.max_running_per_key} per key")
    if limits.max_starts_per_second:
        rate = f"{limits.max_starts_per_second:g}/s"
        parts.append(f"{rate} (burst {limits.burst})" if limits.burst else rate)
    return ", ".join(parts) or "-"


def task_type_table(types: Sequence[TaskType]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("type", no_wrap=True)
    table.add_column("workers", no_wrap=True, justify="right")
    table.add_column("running", no_wrap=True, justify="right")
    table.add_column("pending", no_wrap=True, justify="right")
    table.add_column("limits", no_wrap=True)
    table.add_column("description")
    table.add_column("example payload", overflow="fold")
    for t in types:
        example = "" if t.example_payload is None else json.dumps(t.example_payload)
        name = escape(t.name) + (" [yellow](paused)[/]" if t.paused else "")
        table.add_row(
            name,
            str(t.workers),
            str(t.running),
            str(t.pending),
            escape(limits_text(t.limits)),
            escape(t.description),
            escape(example),
        )
    return table


def _ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "-"
    seconds = max(0, int((now - value).total_seconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def worker_table(workers: Sequence[Worker]) -> Table:
    now = datetime.now(UTC)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    # Ids are what people copy from the table: never wrap or cut them.
    table.add_column("id", no_wrap=True)
    table.add_column("running", no_wrap=True, justify="right")
    table.add_column("started", no_wrap=True)
    table.add_column("seen", no_wrap=True)
    table.add_column("task types")
    for w in workers:
        table.add_row(
            escape(w.id),
            f"{w.running}/{w.threads}",
            _ago(w.start_time, now),
            _ago(w.heartbeat_time, now),
            escape(", ".join(w.task_types)),
        )
    return table
