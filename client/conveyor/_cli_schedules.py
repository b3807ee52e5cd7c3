"""`conveyor schedule ...`: create, list, show, pause, resume, trigger and
delete schedules; tables for people, JSON (proto JSON) for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import IO

import click
from google.protobuf import json_format
from rich import box
from rich.markup import escape
from rich.table import Table

from conveyor import _cli_render as render
from conveyor._cli_payload import label_option, read_payload
from conveyor._cli_settings import command_options, current_settings
from conveyor._types import OverlapPolicy, Schedule


def _dumps(schedules: Sequence[Schedule] | Schedule) -> str:
    if isinstance(schedules, Schedule):
        return json.dumps(_json(schedules), indent=2)
    return json.dumps([_json(schedule) for schedule in schedules], indent=2)


def _json(schedule: Schedule) -> object:
    return json_format.MessageToDict(schedule.raw, preserving_proto_field_name=True)


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


def _when(schedule: Schedule) -> str:
    if schedule.cron is not None:
        return f"{schedule.cron} ({schedule.time_zone or 'UTC'})"
    return f"every {_seconds(schedule.interval)}" if schedule.interval else "-"


def _time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def schedule_table(schedules: Sequence[Schedule]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("id", no_wrap=True)
    table.add_column("when")
    table.add_column("type", no_wrap=True)
    table.add_column("next fire", no_wrap=True)
    table.add_column("last fire", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for schedule in schedules:
        following = schedule.next_fire_times[0] if schedule.next_fire_times else None
        table.add_row(
            escape(schedule.id),
            escape(_when(schedule)),
            escape(schedule.task.type),
            _time(following),
            _time(schedule.last_fire_time),
            "[yellow]paused[/]" if schedule.paused else "active",
        )
    return table


def schedule_details(schedule: Schedule) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    task = schedule.task
    rows = [
        ("id", escape(schedule.id)),
        ("when", escape(_when(schedule))),
        ("task", escape(f"{task.type} {json.dumps(task.payload or {})}")),
        ("overlap", schedule.overlap.name),
        ("catch up", _seconds(schedule.catch_up_window) if schedule.catch_up_window else "60s"),
        ("state", "[yellow]paused[/]" if schedule.paused else "active"),
        ("description", escape(schedule.description) or "-"),
        ("next fires", ", ".join(_time(t) for t in schedule.next_fire_times) or "-"),
        ("last fire", _time(schedule.last_fire_time)),
        ("created", _time(schedule.create_time)),
    ]
    for name, value in rows:
        grid.add_row(name, value)
    for run in schedule.recent_runs:
        note = " (triggered)" if run.triggered else ""
        style = render.STATE_STYLES[run.state]
        grid.add_row(
            "run", f"{_time(run.fire_time)}  {run.task_id}  [{style}]{run.state.name}[/]{note}"
        )
    return grid


def _print(schedule: Schedule) -> None:
    settings = current_settings()
    if settings.as_json:
        click.echo(_dumps(schedule))
    else:
        settings.stdout.print(schedule_details(schedule))


@click.group()
def schedule() -> None:
    """Submit tasks on a schedule: a cron expression or a fixed interval."""


@schedule.command()
@command_options
@click.argument("type")
@click.option("--id", "schedule_id", required=True, help="The schedule's id, unique to you.")
@click.option("--cron", metavar="EXPR", help="When: 5 cron fields, 6 with seconds, or @daily.")
@click.option("--tz", "time_zone", metavar="ZONE", help="The IANA time zone of --cron.")
@click.option(
    "--every", type=click.FloatRange(min=1), metavar="SECONDS", help="Or: fire every N seconds."
)
@click.option("--payload", "payload_text", metavar="JSON", help="The payload, a JSON object.")
@click.option(
    "--payload-file",
    type=click.File("r"),
    metavar="PATH",
    help="Read the JSON payload from a file ('-' for stdin).",
)
@label_option
@click.option("--max-attempts", type=click.IntRange(min=1), help="Attempts of each task.")
@click.option(
    "--task-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Execution timeout of one attempt.",
)
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option(
    "--overlap",
    type=click.Choice(["skip", "allow"], case_sensitive=False),
    default="skip",
    show_default=True,
    help="Skip a fire while the last task is unfinished, or allow overlapping runs.",
)
@click.option(
    "--catch-up",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Submit fires missed while nothing ran this long after their time (default 60).",
)
@click.option("--description", default="", help="For people.")
@click.option("--paused", is_flag=True, help="Create it paused.")
def create(
    type: str,
    schedule_id: str,
    cron: str | None,
    time_zone: str | None,
    every: float | None,
    payload_text: str | None,
    payload_file: IO[str] | None,
    labels: dict[str, str],
    max_attempts: int | None,
    task_timeout: float | None,
    priority: int,
    overlap: str,
    catch_up: float | None,
    description: str,
    paused: bool,
) -> None:
    """Create a schedule that submits a task of TYPE: --cron (with --tz) or --every."""
    if (cron is None) == (every is None):
        raise click.UsageError("give --cron or --every, one of them")
    created = (
        current_settings()
        .client()
        .create_schedule(
            schedule_id,
            type,
            read_payload(payload_text, payload_file),
            cron=cron,
            time_zone=time_zone,
            interval=every,
            labels=labels,
            max_attempts=max_attempts,
            timeout=task_timeout,
            priority=priority,
            overlap=OverlapPolicy[overlap.upper()],
            catch_up_window=catch_up,
            description=description,
            paused=paused,
        )
    )
    _print(created)


@schedule.command("list")
@command_options
def list_schedules() -> None:
    """List your schedules, by id."""
    settings = current_settings()
    found = settings.client().list_schedules()
    if settings.as_json:
        click.echo(_dumps(found))
    elif found:
        settings.stdout.print(schedule_table(found))
    else:
        settings.stderr.print("no schedules")


@schedule.command()
@command_options
@click.argument("id")
def get(id: str) -> None:
    """Show schedule ID: its times, its task and its recent runs."""
    _print(current_settings().client().get_schedule(id))


@schedule.command()
@command_options
@click.argument("id")
def pause(id: str) -> None:
    """Stop firing schedule ID; fires meanwhile are skipped."""
    _print(current_settings().client().pause_schedule(id))


@schedule.command()
@command_options
@click.argument("id")
def resume(id: str) -> None:
    """Fire schedule ID again, from its next fire time on."""
    _print(current_settings().client().resume_schedule(id))


@schedule.command()
@command_options
@click.argument("id")
@click.option("--request-id", help="The same request id triggers once.")
def trigger(id: str, request_id: str | None) -> None:
    """Submit the task of schedule ID now, and print its id."""
    settings = current_settings()
    task = settings.client().trigger_schedule(id, request_id=request_id)
    if settings.as_json:
        click.echo(render.dumps_task(task))
    else:
        click.echo(task.id)
        settings.stderr.print(render.summary(task), soft_wrap=True)


@schedule.command()
@command_options
@click.argument("id")
def delete(id: str) -> None:
    """Delete schedule ID; the tasks it submitted stay."""
    settings = current_settings()
    settings.client().delete_schedule(id)
    settings.stderr.print(f"deleted schedule {escape(id)}", highlight=False)
