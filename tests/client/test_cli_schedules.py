"""`conveyor schedule ...` against a real in-process server."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conveyor import Client
from conveyor._cli_commands import cli


@pytest.fixture
def run(server: Any) -> Any:
    def invoke(*args: str, json: bool = False) -> Result:
        options = ["--address", server.address, "--timeout", "5"]
        if json:
            options.append("--json")
        return CliRunner().invoke(cli, [*options, *args])

    return invoke


def test_create_list_get_pause_resume_trigger_delete(run: Any, client: Client) -> None:
    schedule_id = f"cli-{uuid.uuid4().hex[:8]}"
    created = run(
        "schedule",
        "create",
        "echo",
        "--id",
        schedule_id,
        "--cron",
        "0 3 * * *",
        "--tz",
        "Europe/Paris",
        "--payload",
        '{"report": "daily"}',
        "--label",
        "team=data",
        "--overlap",
        "allow",
        "--catch-up",
        "600",
        json=True,
    )
    assert created.exit_code == 0, created.output
    body = json.loads(created.stdout)
    assert (body["cron"], body["time_zone"]) == ("0 3 * * *", "Europe/Paris")
    assert body["overlap_policy"] == "OVERLAP_POLICY_ALLOW"
    assert body["task"]["payload"] == {"report": "daily"}
    listed = run("schedule", "list")
    assert listed.exit_code == 0, listed.output
    assert schedule_id in listed.stdout and "0 3 * * *" in listed.stdout
    shown = run("schedule", "get", schedule_id)
    assert "Europe/Paris" in shown.stdout and "ALLOW" in shown.stdout
    assert "paused" in run("schedule", "pause", schedule_id).stdout
    assert "active" in run("schedule", "resume", schedule_id).stdout
    triggered = run("schedule", "trigger", schedule_id, "--request-id", "by-hand")
    assert triggered.exit_code == 0, triggered.output
    task = client.get(triggered.stdout.strip())
    assert task.labels["conveyor.schedule"] == schedule_id
    deleted = run("schedule", "delete", schedule_id)
    assert deleted.exit_code == 0 and schedule_id in deleted.stderr
    missing = run("schedule", "get", schedule_id)
    assert missing.exit_code == 1
    assert "NOT_FOUND" in missing.stderr


def test_create_with_every(run: Any, client: Client) -> None:
    schedule_id = f"cli-{uuid.uuid4().hex[:8]}"
    created = run("schedule", "create", "echo", "--id", schedule_id, "--every", "90")
    assert created.exit_code == 0, created.output
    assert client.get_schedule(schedule_id).interval.total_seconds() == 90  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "args",
    [
        ["schedule", "create", "echo", "--id", "x"],
        ["schedule", "create", "echo", "--id", "x", "--cron", "* * * * *", "--every", "5"],
        ["schedule", "create", "echo", "--cron", "* * * * *"],
    ],
)
def test_usage_errors_exit_2(run: Any, args: list[str]) -> None:
    assert run(*args).exit_code == 2


def test_a_bad_cron_is_one_line_and_exit_1(run: Any) -> None:
    result = run("schedule", "create", "echo", "--id", "bad-cron", "--cron", "nope")
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT" in result.stderr and "schedule.cron" in result.stderr
