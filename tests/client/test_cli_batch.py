"""`conveyor cancel` and `conveyor retry` on many tasks: by ids or by filter,
against the real test server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from conveyor import Client, TaskSpec, TaskState
from conveyor._cli_commands import cli
from conveyor._cli_filters import parse_age, parse_time


@pytest.fixture
def run(server: Any) -> Any:
    def invoke(*args: str, json: bool = False) -> Result:
        options = ["--address", server.address, "--timeout", "5", *(["--json"] if json else [])]
        return CliRunner().invoke(cli, [*options, *args])

    return invoke


def test_cancel_several_ids_prints_the_counts(run: Any, client: Client) -> None:
    first, second = (client.submit("echo", delay=60) for _ in range(2))
    result = run("cancel", first.id, second.id, "no-such-task")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "matched 2: 2 cancelled, 0 asked to stop, 1 not found"
    assert {client.get(h.id).state for h in (first, second)} == {TaskState.CANCELLED}


def test_cancel_and_retry_by_filter(run: Any, client: Client, run_label: dict[str, str]) -> None:
    client.submit_batch([TaskSpec("echo", labels=run_label, delay=60) for _ in range(3)])
    label = "run=" + run_label["run"]
    cancelled = run("cancel", "--label", label, "--state", "pending", "--since", "1h", json=True)
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.stdout) == {
        "matched": 3,
        "cancelled": 3,
        "cancel_requested": 0,
        "not_found": 0,
    }

    retried = run("retry", "--label", label, "--type", "echo")
    assert retried.exit_code == 0, retried.output
    assert retried.stdout.strip() == "matched 3: 3 retried"
    assert run("cancel", "--label", label).exit_code == 0


def test_a_created_before_bound_leaves_newer_tasks(
    run: Any, client: Client, run_label: dict[str, str]
) -> None:
    old = client.submit("echo", labels=run_label, delay=60)
    new = client.submit("echo", labels=run_label, delay=60)
    assert new.task.create_time is not None
    bound = new.task.create_time.isoformat()
    result = run("cancel", "--label", "run=" + run_label["run"], "--created-before", bound)
    assert result.stdout.strip().startswith("matched 1: 1 cancelled")
    assert client.get(old.id).state is TaskState.CANCELLED
    assert client.get(new.id).state is TaskState.PENDING
    client.cancel(new.id)


def test_list_takes_the_creation_filters(
    run: Any, client: Client, run_label: dict[str, str]
) -> None:
    handle = client.submit("echo", labels=run_label)
    label = "run=" + run_label["run"]
    recent = run("list", "--label", label, "--since", "10m", json=True)
    assert [task["id"] for task in json.loads(recent.stdout)] == [handle.id]
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert (
        json.loads(run("list", "--label", label, "--created-after", later, json=True).stdout) == []
    )


@pytest.mark.parametrize(
    "args",
    [
        ["cancel"],
        ["retry"],
        ["cancel", "an-id", "--type", "echo"],
        ["cancel", "--since", "24"],
        ["cancel", "--since", "1h", "--created-after", "2026-01-31"],
        ["retry", "--created-after", "yesterday"],
        ["list", "--watch", "--since", "1h"],
    ],
)
def test_usage_errors_exit_2(run: Any, args: list[str]) -> None:
    assert run(*args).exit_code == 2


def test_ages_and_times() -> None:
    assert parse_age(None, None, "1h30m") == timedelta(hours=1, minutes=30)
    assert parse_age(None, None, "7d") == timedelta(days=7)
    assert parse_age(None, None, "0.5s") == timedelta(seconds=0.5)
    with pytest.raises(click.BadParameter):
        parse_age(None, None, "h")
    aware = parse_time(None, None, "2026-01-31T08:00:00Z")
    assert aware == datetime(2026, 1, 31, 8, tzinfo=UTC)
    local = parse_time(None, None, "2026-01-31")
    assert local is not None and local.utcoffset() is not None
