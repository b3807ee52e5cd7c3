"""The `conveyor` command line against a real in-process server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conveyor import Client, TaskState
from conveyor._cli import MISSING_EXTRA, main
from conveyor._cli_commands import cli


@pytest.fixture
def run(server: Any) -> Any:
    """Invoke the CLI against the test server: run("get", ID, json=True)."""

    def invoke(*args: str, json: bool = False, input: str | None = None) -> Result:
        options = ["--address", server.address, "--timeout", "5"]
        if json:
            options.append("--json")
        return CliRunner().invoke(cli, [*options, *args], input=input)

    return invoke


def test_submit_prints_the_id(run: Any, client: Client) -> None:
    result = run("submit", "echo", "--payload", '{"a": 1}', "--label", "team=data")
    assert result.exit_code == 0, result.output
    task_id = result.stdout.strip()
    task = client.get(task_id)
    assert task.payload == {"a": 1}
    assert task.labels == {"team": "data"}
    assert task_id in result.stderr  # the summary


def test_submit_wait_json(run: Any) -> None:
    result = run("submit", "echo", "--payload", '{"a": [1, 2]}', "--wait", json=True)
    assert result.exit_code == 0, result.output
    task = json.loads(result.stdout)
    assert task["state"] == "TASK_STATE_SUCCEEDED"
    assert task["result"] == {"a": [1, 2]}
    assert task["payload"] == {"a": [1, 2]}


def test_submit_all_options(run: Any, client: Client, tmp_path: Path) -> None:
    payload_file = tmp_path / "payload.json"
    payload_file.write_text('{"from": "file"}')
    result = run(
        "submit",
        "echo",
        "--payload-file",
        str(payload_file),
        "--idempotency-key",
        "cli-key-1",
        "--max-attempts",
        "2",
        "--task-timeout",
        "30",
        "--delay",
        "60",
        "--priority",
        "7",
        json=True,
    )
    assert result.exit_code == 0, result.output
    task = client.get(json.loads(result.stdout)["id"])
    assert task.payload == {"from": "file"}
    assert (task.idempotency_key, task.max_attempts, task.priority) == ("cli-key-1", 2, 7)
    assert task.timeout is not None
    assert task.timeout.total_seconds() == 30
    assert task.state is TaskState.PENDING
    client.cancel(task.id)


def test_submit_payload_from_stdin(run: Any) -> None:
    result = run("submit", "echo", "--payload-file", "-", "--wait", json=True, input='{"s": 1}')
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"] == {"s": 1}


def test_submit_watch_shows_progress_and_exit_code(run: Any) -> None:
    result = run("submit", "sleep", "--payload", '{"seconds": 0.3}', "--watch")
    assert result.exit_code == 0, result.output
    assert "SUCCEEDED" in result.stdout

    failed = run("submit", "fail", "--payload", '{"message": "boom"}', "--watch")
    assert failed.exit_code == 1
    assert "FAILED" in failed.stdout
    assert "boom" in failed.stdout


def test_get_and_watch(run: Any, client: Client) -> None:
    handle = client.submit("echo", {"x": 1})
    handle.wait(timeout=10)

    human = run("get", handle.id)
    assert human.exit_code == 0, human.output
    assert handle.id in human.stdout
    assert "SUCCEEDED" in human.stdout

    as_json = run("get", handle.id, json=True)
    assert json.loads(as_json.stdout)["id"] == handle.id

    watched = run("watch", handle.id, json=True)
    assert watched.exit_code == 0
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert lines[-1]["state"] == "TASK_STATE_SUCCEEDED"


def test_watch_exit_code_for_a_failed_task(run: Any, client: Client) -> None:
    handle = client.submit("fail", {"message": "nope"}, max_attempts=1)
    result = run("watch", handle.id)
    assert result.exit_code == 1
    assert "FAILED" in result.stdout


def test_list_table_and_json(run: Any, client: Client, run_label: dict[str, str]) -> None:
    ids = [client.submit("echo", {"i": i}, labels=run_label).id for i in range(3)]
    for task_id in ids:
        client.wait(task_id, timeout=10)
    label = "run={run}".format(**run_label)

    listed = run("list", "--label", label, "--limit", "2", json=True)
    assert listed.exit_code == 0, listed.output
    assert [task["id"] for task in json.loads(listed.stdout)] == ids[:0:-1]

    filtered = run("list", "--label", label, "--state", "failed", json=True)
    assert json.loads(filtered.stdout) == []

    table = run("list", "--label", label, "--type", "echo", "--state", "SUCCEEDED")
    assert table.exit_code == 0, table.output
    assert all(task_id in table.stdout for task_id in ids)
    assert "SUCCEEDED" in table.stdout


def test_cancel_and_retry(run: Any, client: Client) -> None:
    handle = client.submit("echo", {}, delay=60)
    cancelled = run("cancel", handle.id, json=True)
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.stdout)["state"] == "TASK_STATE_CANCELLED"

    retried = run("retry", handle.id)
    assert retried.exit_code == 0, retried.output
    assert handle.id in retried.stdout


def test_rpc_errors_are_one_line_and_exit_1(run: Any) -> None:
    result = run("get", "no-such-task")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: NOT_FOUND: ")
    assert "Traceback" not in result.output

    invalid = run("submit", "no_such_type")
    assert invalid.exit_code == 1
    assert invalid.stderr.startswith("error: INVALID_ARGUMENT: type: unknown task type")
    # The field violation is the message: said once.
    assert invalid.stderr.count("unknown task type") == 1


def test_watch_bar_names_the_type_and_the_id(run: Any) -> None:
    result = run("submit", "sleep", "--payload", '{"seconds": 0.2}', "--watch")
    assert result.exit_code == 0, result.output
    task_id = result.stdout.split()[0]
    assert f"sleep {task_id} " in result.stderr  # the bar


def test_output_is_not_cut_without_a_terminal(
    run: Any, client: Client, run_label: dict[str, str]
) -> None:
    long_label = {"note": "x" * 60 + "-end-of-the-label", **run_label}
    long_payload = {"text": "y" * 150 + "-end-of-the-payload"}
    handle = client.submit("echo", long_payload, labels=long_label)
    handle.wait(timeout=10)

    table = run("list", "--label", "run={run}".format(**run_label))
    assert table.exit_code == 0, table.output
    assert "-end-of-the-label" in table.stdout
    assert "…" not in table.stdout

    details = run("get", handle.id)
    assert '"' + long_payload["text"] + '"' in details.stdout  # on one line


def test_json_uses_the_field_names_grpcurl_prints(run: Any, client: Client) -> None:
    handle = client.submit("echo", {"a": 1}, max_attempts=2)
    handle.wait(timeout=10)
    task = json.loads(run("get", handle.id, json=True).stdout)
    assert task["max_attempts"] == 2
    assert {"create_time", "end_time", "update_time"} <= task.keys()
    assert "maxAttempts" not in task
    assert "createTime" not in task


def test_global_options_after_the_command(server: Any, client: Client) -> None:
    handle = client.submit("echo", {"after": True})
    handle.wait(timeout=10)
    result = CliRunner().invoke(cli, ["get", handle.id, "--json", "--address", server.address])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == handle.id

    listed = CliRunner().invoke(
        cli, ["--address", "127.0.0.1:1", "list", "--json", "--address", server.address]
    )
    assert listed.exit_code == 0, listed.output  # the later --address wins
    assert isinstance(json.loads(listed.stdout), list)


def test_cancel_of_a_running_task_says_it_was_requested(run: Any, client: Client) -> None:
    handle = client.submit("ignore_cancel", {"seconds": 1})
    for task in handle.watch():
        if task.state is TaskState.RUNNING:
            break
    result = run("cancel", handle.id)
    assert result.exit_code == 0, result.output
    assert "RUNNING (cancel requested)" in result.stdout
    assert "cancel requested: " in result.stderr
    assert "ends CANCELLED" in result.stderr


def test_address_without_a_port_dials_the_default_port(
    server: Any, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor import _cli_settings

    # The test server stands in for one on the default port 50051.
    host, _, port = server.address.rpartition(":")
    monkeypatch.setattr(_cli_settings, "DEFAULT_PORT", int(port))
    handle = client.submit("echo", {})
    result = CliRunner().invoke(cli, ["--address", host, "--timeout", "5", "get", handle.id])
    assert result.exit_code == 0, result.output
    assert _cli_settings.with_default_port("[::1]") == f"[::1]:{port}"
    assert _cli_settings.with_default_port("::1") == f"[::1]:{port}"
    assert _cli_settings.with_default_port("example.com:443") == "example.com:443"
    assert _cli_settings.with_default_port("unix:/tmp/conveyor.sock") == "unix:/tmp/conveyor.sock"


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"conveyor {version('conveyor')}\n"


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "echo", "--payload", "not json"],
        ["submit", "echo", "--payload", "[1, 2]"],
        ["submit", "echo", "--label", "no-equals-sign"],
        ["submit", "echo", "--payload", "{}", "--payload-file", "-"],
        ["list", "--state", "sleeping"],
    ],
)
def test_usage_errors_exit_2(run: Any, args: list[str]) -> None:
    assert run(*args).exit_code == 2


def test_missing_cli_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "click", None)
    monkeypatch.delitem(sys.modules, "conveyor._cli_commands")
    with pytest.raises(SystemExit) as caught:
        main(["list"])
    assert caught.value.code == 2
    assert MISSING_EXTRA in capsys.readouterr().err


def _conveyor_script() -> str:
    script = Path(sys.executable).with_name("conveyor")
    found = str(script) if script.exists() else shutil.which("conveyor")
    if found is None:
        pytest.skip("the conveyor script is not installed")
    return found


def test_installed_script(server: Any) -> None:
    env = {**os.environ, "CONVEYOR_ADDRESS": server.address}
    submitted = subprocess.run(
        [
            _conveyor_script(),
            "--json",
            "submit",
            "echo",
            "--payload",
            '{"via": "script"}',
            "--wait",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stderr
    task = json.loads(submitted.stdout)
    assert task["result"] == {"via": "script"}

    missing = subprocess.run(
        [_conveyor_script(), "--json", "get", "no-such-task"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.startswith("error: NOT_FOUND: ")
    assert "Traceback" not in missing.stderr


def test_submit_with_dependencies_and_a_concurrency_key(run: Any, client: Client) -> None:
    parent = client.submit("echo", delay=60)
    result = run(
        "submit",
        "echo",
        "--concurrency-key",
        "acct-7",
        "--depends-on",
        parent.id,
        "--run-on-dependency-failure",
        json=True,
    )
    assert result.exit_code == 0, result.output
    task = client.get(json.loads(result.stdout)["id"])
    assert task.concurrency_key == "acct-7"
    assert task.depends_on == (parent.id,)
    assert task.run_on_dependency_failure

    shown = run("get", task.id)
    assert shown.exit_code == 0, shown.output
    assert "DEPENDENCIES: " in shown.stdout
    assert f"{parent.id} (runs even if one fails)" in shown.stdout
    assert "acct-7" in shown.stdout
    client.cancel(parent.id)
    assert client.wait(task.id, timeout=10).state is TaskState.SUCCEEDED


def test_get_shows_why_a_delayed_task_waits(run: Any, client: Client) -> None:
    handle = client.submit("echo", delay=60)
    as_json = json.loads(run("get", handle.id, json=True).stdout)
    assert as_json["pending_reason"] == "PENDING_REASON_DELAYED"
    assert as_json["pending_message"]
    assert "DELAYED: " in run("get", handle.id).stdout
    client.cancel(handle.id)
