"""How the `conveyor` command line shows tasks: rich tables, progress bars, JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn
from rich.table import Table

from conveyor._errors import ConveyorError
from conveyor._types import BatchCancelResult, BatchRetryResult, Task, TaskState

STATE_STYLES: Mapping[TaskState, str] = {
    TaskState.PENDING: "yellow",
    TaskState.RUNNING: "cyan",
    TaskState.SUCCEEDED: "green",
    TaskState.FAILED: "red",
    TaskState.CANCELLED: "magenta",
}


# --- JSON: the proto JSON mapping, as grpcurl prints it -----------------------------


def task_json(task: Task) -> dict[str, Any]:
    # grpcurl's spelling: the proto's snake_case field names.
    return json_format.MessageToDict(task.raw, preserving_proto_field_name=True)


def dumps_task(task: Task, *, indent: int | None = 2) -> str:
    return json.dumps(task_json(task), indent=indent)


def dumps_tasks(tasks: Iterable[Task]) -> str:
    return json.dumps([task_json(task) for task in tasks], indent=2)


def dumps_counts(response: Message) -> str:
    """A batch action's response, every count present and a number (no int64 quotes)."""
    counts = json_format.MessageToDict(
        response,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
        unquote_int64_if_possible=True,
    )
    return json.dumps(counts, indent=2)


# --- people -------------------------------------------------------------------------


def _state(task: Task) -> str:
    return f"[{STATE_STYLES[task.state]}]{task.state.name}[/]"


def _time(value: datetime | None, format: str = "%Y-%m-%d %H:%M:%S") -> str:
    return value.astimezone().strftime(format) if value else "-"


def _labels(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _progress(task: Task) -> str:
    note = f" {task.progress.message}" if task.progress.message else ""
    return f"{task.progress.percent:.0f}%{note}"


def _outcome(task: Task) -> str:
    if task.error is not None:
        return f"{task.error.code}: {task.error.message}"
    if task.state is TaskState.SUCCEEDED:
        return json.dumps(task.result)
    return ""


def _cancel_note(task: Task) -> str:
    return " (cancel requested)" if task.cancel_requested and not task.is_terminal else ""


def summary(task: Task) -> str:
    """One line of rich markup: id, type, state, attempt and the outcome when known."""
    line = (
        f"{task.id}  {escape(task.type)}  {_state(task)}{_cancel_note(task)}  "
        f"attempt {task.attempt}/{task.max_attempts}"
    )
    outcome = _outcome(task)
    return f"{line}  {escape(outcome)}" if outcome else line


def task_details(task: Task) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, str]] = [
        ("id", task.id),
        ("type", escape(task.type)),
        ("state", _state(task) + (" (cancel requested)" if task.cancel_requested else "")),
        ("progress", escape(_progress(task))),
        ("attempt", f"{task.attempt}/{task.max_attempts}"),
        ("priority", str(task.priority)),
        ("labels", escape(_labels(task.labels)) or "-"),
        ("payload", escape(json.dumps(task.payload))),
        ("created", _time(task.create_time)),
        ("scheduled", _time(task.scheduled_time)),
        ("started", _time(task.start_time)),
        ("ended", _time(task.end_time)),
        ("timeout", str(task.timeout) if task.timeout is not None else "-"),
        ("idempotency key", escape(task.idempotency_key or "-")),
        ("version", str(task.version)),
    ]
    rows[3:3] = _waiting_rows(task)
    if task.state is TaskState.SUCCEEDED:
        rows.append(("result", escape(json.dumps(task.result))))
    if task.error is not None:
        error = f"{task.error.code}: {task.error.message}"
        if task.error.exception_type:
            error += f" ({task.error.exception_type})"
        rows.append(("error", escape(error)))
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def _waiting_rows(task: Task) -> list[tuple[str, str]]:
    """Why the task waits, what it waits for, and its concurrency key, when it has them."""
    rows = []
    if task.pending_reason is not None:
        reason = task.pending_reason.name
        note = f"{reason}: {task.pending_message}" if task.pending_message else reason
        rows.append(("waiting", f"[yellow]{escape(note)}[/]"))
    if task.depends_on:
        rule = " (runs even if one fails)" if task.run_on_dependency_failure else ""
        rows.append(("depends on", escape(", ".join(task.depends_on)) + rule))
    if task.concurrency_key:
        rows.append(("concurrency key", escape(task.concurrency_key)))
    return rows


def cancel_counts(result: BatchCancelResult) -> str:
    line = (
        f"matched {result.matched}: {result.cancelled} cancelled, "
        f"{result.cancel_requested} asked to stop"
    )
    if result.cancel_requested:
        line += " (each ends CANCELLED when its handler stops)"
    return line + _not_found(result.not_found)


def retry_counts(result: BatchRetryResult) -> str:
    return f"matched {result.matched}: {result.retried} retried" + _not_found(result.not_found)


def _not_found(count: int) -> str:
    return f", {count} not found" if count else ""


def task_table(tasks: Sequence[Task]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    # Ids are what people copy from the table: never wrap or cut them.
    table.add_column("id", no_wrap=True, min_width=max((len(task.id) for task in tasks), default=2))
    table.add_column(
        "type", no_wrap=True, min_width=min(12, max((len(task.type) for task in tasks), default=4))
    )
    table.add_column("state", no_wrap=True, min_width=9)
    # The percent only: messages wrap badly in a table; `get` shows them.
    table.add_column("done", no_wrap=True, justify="right", min_width=4)
    table.add_column("try", no_wrap=True, min_width=3)
    table.add_column("created", no_wrap=True, min_width=14)
    table.add_column("labels", overflow="ellipsis", no_wrap=True)
    for task in tasks:
        table.add_row(
            task.id,
            escape(task.type),
            _state(task),
            f"{task.progress.percent:.0f}%",
            f"{task.attempt}/{task.max_attempts}",
            _time(task.create_time, "%m-%d %H:%M:%S"),
            escape(_labels(task.labels)),
        )
    return table


def follow(tasks: Iterator[Task], console: Console) -> Task | None:
    """Show a live progress bar over a watch stream; return the last snapshot.

    On a console that is not a terminal, rich draws the bar once, at the end.
    """
    last: Task | None = None
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.fields[state]}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("watch", total=100, state="", note="")
        for task in tasks:
            last = task
            done = 100.0 if task.state is TaskState.SUCCEEDED else task.progress.percent
            progress.update(
                bar,
                description=f"{escape(task.type)} {task.id}",
                completed=done,
                state=_state(task),
                note=escape(task.progress.message),
            )
    return last


def print_error(console: Console, error: ConveyorError) -> None:
    console.print(
        f"error: {error.code.name}: {escape(error.message)}", highlight=False, soft_wrap=True
    )
    for field, description in error.field_violations:
        line = f"{field}: {description}"
        if line in error.message:  # the message says it already
            continue
        console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
