"""The `conveyor` commands: click for the arguments, `_cli_render` for the output."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import IO, Any, NoReturn

import click
from google.protobuf.message import Message

from conveyor import _cli_fleet as fleet
from conveyor import _cli_live as live
from conveyor import _cli_render as render
from conveyor._cli_filters import TaskFilters, filter_options
from conveyor._cli_logs import logs
from conveyor._cli_payload import label_option, read_payload
from conveyor._cli_schedules import schedule
from conveyor._cli_settings import (
    Settings,
    command_options,
    console,
    current_settings,
    group_options,
)
from conveyor._cli_types import types
from conveyor._errors import ConveyorError
from conveyor._types import Task, TaskState


class _ConveyorGroup(click.Group):
    """Turns RPC errors into `error: CODE: message` and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            settings = ctx.find_object(Settings)
            stderr = settings.stderr if settings else console(stderr=True)
            render.print_error(stderr, exc)
            raise click.exceptions.Exit(1) from None


def _print_task(task: Task) -> None:
    settings = current_settings()
    if settings.as_json:
        click.echo(render.dumps_task(task))
    else:
        settings.stdout.print(render.task_details(task))


def _exit_for(task: Task | None) -> NoReturn:
    """Exit 0 when the task SUCCEEDED, 1 when it failed, was cancelled or is unknown."""
    raise click.exceptions.Exit(0 if task is not None and task.state is TaskState.SUCCEEDED else 1)


def _follow(snapshots: Iterator[Task]) -> NoReturn:
    settings = current_settings()
    if settings.as_json:
        last = None
        for last in snapshots:
            click.echo(render.dumps_task(last, indent=None))
    else:
        last = render.follow(snapshots, settings.stderr)
        if last is not None:
            settings.stdout.print(render.summary(last), soft_wrap=True)
    _exit_for(last)


@click.group(cls=_ConveyorGroup)
@group_options
@click.version_option(package_name="conveyor", prog_name="conveyor", message="%(prog)s %(version)s")
@click.pass_context
def cli(
    ctx: click.Context,
    address: str,
    timeout: float,
    as_json: bool,
    use_tls: bool,
    ca: str | None,
    cert: str | None,
    key: str | None,
    token: str | None,
) -> None:
    """Submit, follow, list, cancel and retry Conveyor tasks.

    The options above are accepted after the command too: `conveyor list --json`.
    """
    ctx.obj = Settings(address, timeout, as_json, use_tls, ca, cert, key, token)


@cli.command()
@command_options
@click.argument("type")
@click.option("--payload", "payload_text", metavar="JSON", help="The payload, a JSON object.")
@click.option(
    "--payload-file",
    type=click.File("r"),
    metavar="PATH",
    help="Read the JSON payload from a file ('-' for stdin).",
)
@label_option
@click.option("--idempotency-key", help="Submitting again with this key returns the same task.")
@click.option("--max-attempts", type=click.IntRange(min=1), help="Attempts allowed.")
@click.option(
    "--task-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Execution timeout of one attempt.",
)
@click.option(
    "--delay", type=click.FloatRange(min=0), metavar="SECONDS", help="Wait before running."
)
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option(
    "--concurrency-key",
    metavar="KEY",
    help="Tasks of one key (a customer, an account) run at most the type's "
    "max_running_per_key at once.",
)
@click.option(
    "--depends-on",
    multiple=True,
    metavar="ID",
    help="Run once task ID is finished; repeat for several.",
)
@click.option(
    "--run-on-dependency-failure",
    is_flag=True,
    help="Run even if a task of --depends-on ends FAILED or CANCELLED "
    "(by default the task is then cancelled).",
)
@click.option("--wait", is_flag=True, help="Wait for the task to finish and print it.")
@click.option("--watch", is_flag=True, help="Show a live progress bar until the task finishes.")
def submit(
    type: str,
    payload_text: str | None,
    payload_file: IO[str] | None,
    labels: dict[str, str],
    idempotency_key: str | None,
    max_attempts: int | None,
    task_timeout: float | None,
    delay: float | None,
    priority: int,
    concurrency_key: str | None,
    depends_on: Sequence[str],
    run_on_dependency_failure: bool,
    wait: bool,
    watch: bool,
) -> None:
    """Submit a task of TYPE and print its id."""
    if payload_text is not None and payload_file is not None:
        raise click.UsageError("give --payload or --payload-file, not both")
    if wait and watch:
        raise click.UsageError("give --wait or --watch, not both")
    payload = read_payload(payload_text, payload_file)
    settings = current_settings()
    handle = settings.client().submit(
        type,
        payload,
        labels=labels,
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
        timeout=task_timeout,
        delay=delay,
        priority=priority,
        concurrency_key=concurrency_key,
        depends_on=depends_on,
        run_on_dependency_failure=run_on_dependency_failure,
    )
    if watch:
        _follow(handle.watch())
    if wait:
        final = handle.wait()
        _print_task(final)
        _exit_for(final)
    if settings.as_json:
        click.echo(render.dumps_task(handle.task))
    else:
        click.echo(handle.id)
        settings.stderr.print(render.summary(handle.task), soft_wrap=True)


@cli.command()
@command_options
@click.argument("id")
def get(id: str) -> None:
    """Show task ID."""
    _print_task(current_settings().client().get(id))


@cli.command()
@command_options
@click.argument("id")
def watch(id: str) -> None:
    """Follow task ID until it finishes; exit 0 if it SUCCEEDED, 1 otherwise."""
    _follow(current_settings().client().watch(id))


@cli.command("list")
@command_options
@filter_options
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most N tasks."
)
@click.option(
    "--watch",
    is_flag=True,
    help="Keep the table current as tasks change, until Ctrl-C "
    "(with --json: print each change as a JSON line).",
)
def list_tasks(filters: TaskFilters, limit: int, watch: bool) -> None:
    """List tasks, newest first."""
    settings = current_settings()
    if watch:
        _watch_list(settings, filters, limit)
        return
    tasks = list(
        settings.client().list(page_size=min(limit, 100), limit=limit, **filters.as_kwargs())
    )
    if settings.as_json:
        click.echo(render.dumps_tasks(tasks))
    elif tasks:
        settings.stdout.print(render.task_table(tasks))
    else:
        settings.stderr.print("no tasks")


def _watch_list(settings: Settings, filters: TaskFilters, limit: int) -> None:
    if filters.created():
        raise click.UsageError(
            "--watch follows changes as they come: leave out --since and --created-*"
        )
    if settings.as_json:
        live.watch_json(
            settings.client(), states=filters.states, type=filters.type, labels=filters.labels
        )
    else:
        live.watch_list(
            settings.client(),
            states=filters.states,
            type=filters.type,
            labels=filters.labels,
            limit=limit,
            console=settings.stdout,
        )


@cli.command()
@command_options
@click.argument("ids", nargs=-1, metavar="[ID]...")
@filter_options
def cancel(ids: Sequence[str], filters: TaskFilters) -> None:
    """Cancel tasks: at once when they wait, by asking their handlers to stop when they run.

    Name one task, several, or all that match the filters (at least one):
    `conveyor cancel --type email --state pending --since 24h`.
    """
    settings = current_settings()
    if _batch_selection(ids, filters):
        result = settings.client().batch_cancel(ids or None, **filters.as_kwargs())
        _print_counts(result.raw, render.cancel_counts(result))
        return
    task = settings.client().cancel(ids[0])
    _print_short(task)
    if not task.is_terminal:
        settings.stderr.print(
            f"cancel requested: the handler is asked to stop, and the task ends CANCELLED "
            f"when it does (follow it with: conveyor watch {task.id})",
            highlight=False,
            soft_wrap=True,
        )


@cli.command()
@command_options
@click.argument("ids", nargs=-1, metavar="[ID]...")
@filter_options
def retry(ids: Sequence[str], filters: TaskFilters) -> None:
    """Run FAILED or CANCELLED tasks again, with fresh attempts.

    Name one task, several, or all that match the filters (at least one):
    `conveyor retry --type email --state failed --since 24h`.
    """
    settings = current_settings()
    if _batch_selection(ids, filters):
        result = settings.client().batch_retry(ids or None, **filters.as_kwargs())
        _print_counts(result.raw, render.retry_counts(result))
        return
    _print_short(settings.client().retry(ids[0]))


def _batch_selection(ids: Sequence[str], filters: TaskFilters) -> bool:
    """Whether the command acts on many tasks (by ids or by filter) or on one."""
    if ids and filters.given():
        raise click.UsageError("give task ids or filters, not both")
    if not ids and not filters.given():
        raise click.UsageError(
            "give task ids, or filters (--type, --state, --label, --since, --created-after, "
            "--created-before)"
        )
    return len(ids) != 1


def _print_counts(response: Message, line: str) -> None:
    settings = current_settings()
    if settings.as_json:
        click.echo(render.dumps_counts(response))
    else:
        settings.stdout.print(line, highlight=False, soft_wrap=True)


def _print_short(task: Task) -> None:
    settings = current_settings()
    if settings.as_json:
        click.echo(render.dumps_task(task))
    else:
        settings.stdout.print(render.summary(task), soft_wrap=True)


cli.add_command(types)


@cli.command()
def workers() -> None:
    """List the live worker processes: their task types, load and last heartbeat."""
    settings = current_settings()
    found = settings.client().workers()
    if settings.as_json:
        click.echo(fleet.dumps_workers(found))
    elif found:
        settings.stdout.print(fleet.worker_table(found))
    else:
        settings.stderr.print("no live workers")


cli.add_command(schedule)
cli.add_command(logs)
