"""Structured logs: the JSON format, and a real server's lines about tasks."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor import Client, TaskState
from conveyor_server._logging import JsonFormatter, configure_logging
from tests.support.server import free_port, server_command

SECRET = "payload-secret-7f3a9c"
TOKEN = "log-test-token-0123456789abcdef"
TENANT = "acme"


def format_json(record: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def make_record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(
        "conveyor_server._runner", logging.INFO, __file__, 1, message, args, None
    )
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_known_fields_only() -> None:
    record = make_record(
        "task %s attempt %d failed",
        "t1",
        2,
        task_id="t1",
        task_type="echo",
        tenant="",
        attempt=2,
        rpc_method="CancelTask",
        unrelated="not copied",
    )
    record.created = 1_700_000_000.25
    entry = format_json(record)
    assert entry == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "INFO",
        "logger": "conveyor_server._runner",
        "message": "task t1 attempt 2 failed",
        "task_id": "t1",
        "task_type": "echo",
        "attempt": 2,
        "rpc_method": "CancelTask",
    }


def test_json_lines_keep_a_traceback_on_one_line() -> None:
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        record = make_record("it broke")
        record.exc_info = sys.exc_info()
    entry = format_json(record)
    assert entry["message"] == "it broke"
    assert "RuntimeError: boom\nsecond line" in entry["exception"]


def test_configure_logging_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="json"):
        configure_logging("INFO", "xml", io.StringIO())


def write_tasks_module(root: Path) -> None:
    package = root / "opstasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(
        "from conveyor_server import task\n\n"
        "@task('explode')\n"
        "def explode(ctx, payload):\n"
        "    ctx.logger.info('working on it')\n"
        "    raise RuntimeError('handler gave up')\n"
    )


def wait_until_serving(address: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(tuple(address.split(":")), timeout=0.5):  # type: ignore[arg-type]
                return
        except OSError:
            assert process.poll() is None, "server exited"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)


def test_a_json_server_logs_task_lines_without_payloads_or_tokens(tmp_path: Path) -> None:
    write_tasks_module(tmp_path)
    port = free_port()
    env = dict(os.environ, CONVEYOR_AUTH_TOKENS=f"{TOKEN}={TENANT}")
    process = subprocess.Popen(
        [
            *server_command(),
            "--log-format",
            "json",
            "--log-level",
            "DEBUG",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--tasks",
            "opstasks.tasks",
            "--retry-backoff-seconds",
            "0.01",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = f"127.0.0.1:{port}"
        wait_until_serving(address, process)
        with Client(address, token=TOKEN) as client:
            failed = client.submit("explode", {"secret": SECRET}, max_attempts=2)
            assert failed.wait(timeout=20).state is TaskState.FAILED
            pending = client.submit("explode", {"secret": SECRET}, delay=60)
            pending.cancel()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        stderr = process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    assert SECRET not in stderr
    assert TOKEN not in stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    for entry in lines:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry

    def about(task_id: str) -> list[dict[str, Any]]:
        return [entry for entry in lines if entry.get("task_id") == task_id]

    failures = [e for e in about(failed.id) if "failed" in e["message"]]
    assert [(e["level"], e["attempt"]) for e in failures] == [("INFO", 1), ("INFO", 2)]
    for entry in failures:
        assert entry["task_type"] == "explode"
        assert entry["tenant"] == TENANT
        assert "HANDLER_ERROR: handler gave up" in entry["message"]
    assert "will retry" in failures[0]["message"]
    assert "will retry" not in failures[1]["message"]
    started = [e for e in about(failed.id) if e["message"].endswith("started")]
    assert [(e["level"], e["attempt"]) for e in started] == [("DEBUG", 1), ("DEBUG", 2)]
    # The handler's own logger carries the task's fields too.
    handler_lines = [e for e in about(failed.id) if e["message"] == "working on it"]
    assert len(handler_lines) == 2
    assert all(e["task_type"] == "explode" for e in handler_lines)
    [cancelled] = [e for e in about(pending.id) if "cancelled" in e["message"]]
    assert cancelled["rpc_method"] == "CancelTask"
    assert cancelled["tenant"] == TENANT
    assert cancelled["level"] == "INFO"
