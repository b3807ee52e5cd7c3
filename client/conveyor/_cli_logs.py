"""`conveyor logs`: the lines a task's handler wrote through `ctx.logger`."""

from __future__ import annotations

import json

import click

from conveyor._cli_settings import command_options, current_settings
from conveyor._task_logs import LogLine


def line_json(line: LogLine) -> str:
    return json.dumps(
        {
            "attempt": line.attempt,
            "sequence": line.sequence,
            "time": line.time.isoformat(),
            "level": line.level,
            "message": line.message,
        }
    )


@click.command()
@command_options
@click.argument("id")
@click.option(
    "--attempt",
    type=click.IntRange(min=1),
    help="Only this attempt's lines (default: every attempt's, in order).",
)
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing new lines until the task finishes."
)
def logs(id: str, attempt: int | None, follow: bool) -> None:
    """Print the lines task ID's handler logged (with --json: one JSON object
    per line). The server keeps the latest 1,000 lines of each attempt: a
    first line numbered above 1 means earlier ones were dropped."""
    settings = current_settings()
    client = settings.client()
    read = client.follow_logs if follow else client.logs
    for line in read(id, attempt=attempt or 0):
        click.echo(line_json(line) if settings.as_json else str(line))
