"""`conveyor list --watch`, run as a process and stopped with Ctrl-C (SIGINT)
as a person would: the table follows the tasks as they change."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from conveyor import Client, TaskState
from tests.support.server import ServerThread

CLI = [sys.executable, "-c", "from conveyor._cli import main; main()"]


@contextmanager
def cli_watching(server: ServerThread, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`conveyor list --watch ARGS` on `server`, once its stream is open."""
    servicer = server.server.servicer  # type: ignore[union-attr]
    before = servicer.watchers
    process = subprocess.Popen(
        [*CLI, "--address", server.address, "list", "--watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while servicer.watchers == before:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the CLI did not open its stream"
            time.sleep(0.02)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    return out, err


def test_the_live_table_follows_the_tasks_until_ctrl_c(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server()
    label = f"run={uuid.uuid4().hex[:12]}"
    with Client(server.address, timeout=5) as client:
        waiting = client.submit("echo", {}, labels=dict([label.split("=")]), delay=60)
        with cli_watching(server, "--label", label) as process:
            client.cancel(waiting.id)
            new = client.submit("echo", {}, labels=dict([label.split("=")]))
            assert new.wait(timeout=10).state is TaskState.SUCCEEDED
            time.sleep(0.5)  # the last change reaches the table
            out, _ = stop(process)
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "CANCELLED" in rows[waiting.id]
    assert "SUCCEEDED" in rows[new.id]


def test_watch_with_json_prints_a_line_per_change(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server()
    labels = {"run": uuid.uuid4().hex[:12]}
    with (
        Client(server.address, timeout=5) as client,
        cli_watching(server, "--json", "--label", f"run={labels['run']}") as process,
    ):
        task = client.submit("progress_steps", {"steps": 2, "interval": 0.05}, labels=labels)
        task.wait(timeout=10)
        time.sleep(0.5)
        out, _ = stop(process)
    lines = [json.loads(line) for line in out.splitlines()]
    assert {line["id"] for line in lines} == {task.id}
    assert lines[-1]["state"] == "TASK_STATE_SUCCEEDED"
    versions = [int(line["version"]) for line in lines]
    assert versions == sorted(set(versions))
