"""`conveyor types`: list the task types, pause and resume one, change its limits."""

from __future__ import annotations

import click

from conveyor import _cli_fleet as fleet
from conveyor._cli_settings import command_options, current_settings
from conveyor._types import TaskType


def _print_types(found: list[TaskType]) -> None:
    settings = current_settings()
    if settings.as_json:
        click.echo(fleet.dumps_task_types(found))
    elif found:
        settings.stdout.print(fleet.task_type_table(found))
    else:
        settings.stderr.print("no task types")


@click.group(invoke_without_command=True)
@command_options
@click.pass_context
def types(ctx: click.Context) -> None:
    """List the task types the service accepts: the workers that run each,
    running and pending tasks, limits, and whether the type is paused.

    With a command, change one type: `conveyor types pause email`.
    """
    if ctx.invoked_subcommand is None:
        _print_types(current_settings().client().task_types())


@types.command()
@command_options
@click.argument("name")
def pause(name: str) -> None:
    """Pause task type NAME: submits are accepted, nothing new starts, running tasks finish."""
    _print_types([current_settings().client().pause_task_type(name)])


@types.command()
@command_options
@click.argument("name")
def resume(name: str) -> None:
    """Resume task type NAME: its waiting tasks start again."""
    _print_types([current_settings().client().resume_task_type(name)])


@types.command()
@command_options
@click.argument("name")
@click.option(
    "--max-running", type=click.IntRange(min=0), metavar="N", help="At most N running at once."
)
@click.option(
    "--max-per-key",
    type=click.IntRange(min=0),
    metavar="N",
    help="At most N running at once per concurrency key.",
)
@click.option(
    "--rate", type=click.FloatRange(min=0), metavar="R", help="At most R starts per second."
)
@click.option(
    "--burst",
    type=click.IntRange(min=0),
    metavar="N",
    help="Starts allowed at once after a quiet spell (default: the rate, at least 1).",
)
@click.option(
    "--restore",
    is_flag=True,
    help="Go back to the limits the handler declares, all four.",
)
def limits(
    name: str,
    max_running: int | None,
    max_per_key: int | None,
    rate: float | None,
    burst: int | None,
    restore: bool,
) -> None:
    """Change the limits of task type NAME, for every process of the service; 0 removes one.

    Only the limits given change: `conveyor types limits email --max-running 4 --rate 10`.
    `conveyor types limits email --restore` goes back to the handler's defaults.
    """
    given = any(value is not None for value in (max_running, max_per_key, rate, burst))
    if restore == given:
        raise click.UsageError(
            "give --restore, or at least one of --max-running, --max-per-key, --rate, --burst"
            if not given
            else "give --restore alone: it restores every limit"
        )
    client = current_settings().client()
    if restore:
        task_type = client.update_task_type(name, restore_defaults=True)
    else:
        task_type = client.update_task_type(
            name,
            max_running=max_running,
            max_running_per_key=max_per_key,
            max_starts_per_second=rate,
            burst=burst,
        )
    _print_types([task_type])
