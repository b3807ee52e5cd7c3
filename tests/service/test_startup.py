"""`conveyor-server` as a person meets it: start-up failures in one line,
--version, a missing server extra, and Ctrl-C twice."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from conveyor import Client, TaskState
from tests.support.server import free_port, server_command

pytestmark = pytest.mark.slow

HANDLERS = """
import time

from conveyor_server import task


@task("stubborn")
def stubborn(ctx, payload):
    time.sleep(payload["seconds"])  # never looks at ctx: ignores a stop request
    return "done"
"""


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """A conveyor-server process, once it serves."""
    process = subprocess.Popen(
        [*server_command(), "--host", "127.0.0.1", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    port = args[args.index("--port") + 1]
    deadline = time.monotonic() + 20
    while True:
        try:
            with Client(f"127.0.0.1:{port}", timeout=1) as client:
                list(client.list(limit=1))
            return process
        except Exception:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)


def stop(process: subprocess.Popen[str]) -> str:
    """Kill the process if it still runs; return what it wrote to stderr."""
    if process.poll() is None:
        process.kill()
    return process.communicate()[1]


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A running server, as the README's set-up leaves one: (its port, its store)."""
    port, store = free_port(), f"sqlite:///{tmp_path / 'tasks.db'}"
    process = start(["--port", str(port), "--store", store], tmp_path)
    yield port, store
    stop(process)


def fails_in_one_line(args: list[str], cwd: Path) -> str:
    result = subprocess.run(
        [*server_command(), "--host", "127.0.0.1", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("conveyor-server: error: ")
    return result.stderr


def test_port_in_use(holder: tuple[int, str], tmp_path: Path) -> None:
    # The README's flow: --tasks started while the first server holds the port.
    (tmp_path / "mytasks.py").write_text(HANDLERS)
    message = fails_in_one_line(["--port", str(holder[0]), "--tasks", "mytasks"], tmp_path)
    assert f"cannot listen on 127.0.0.1:{holder[0]}: the port is in use" in message
    assert "--port" in message


def test_metrics_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        message = fails_in_one_line(
            ["--port", str(free_port()), "--metrics-port", str(metrics_port)], tmp_path
        )
    assert f"cannot serve metrics on 127.0.0.1:{metrics_port}" in message
    assert "--metrics-port" in message


def test_http_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http_port = taken.getsockname()[1]
        message = fails_in_one_line(
            ["--port", str(free_port()), "--http-port", str(http_port)], tmp_path
        )
    assert f"cannot serve the HTTP API on 127.0.0.1:{http_port}" in message
    assert "--http-port" in message and "-1 for none" in message


def test_redis_down(tmp_path: Path) -> None:
    store = f"redis://127.0.0.1:{free_port()}/0"
    message = fails_in_one_line(["--port", str(free_port()), "--store", store], tmp_path)
    assert "Redis at 127.0.0.1" in message
    assert "start Redis, or point --store" in message


def test_sqlite_file_held_by_another_server(holder: tuple[int, str], tmp_path: Path) -> None:
    message = fails_in_one_line(["--port", str(free_port()), "--store", holder[1]], tmp_path)
    assert "is in use by another process" in message
    assert "--store" in message


def test_version() -> None:
    result = subprocess.run(
        [*server_command(), "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout == f"conveyor-server {version('conveyor')}\n"


def test_without_the_server_extra_it_says_what_to_install() -> None:
    # What the console script runs, where only the SDK's dependencies are installed.
    blocked = textwrap.dedent(
        """
        import sys

        class NotInstalled:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {"grpc_health", "grpc_reflection", "redis"}:
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, NotInstalled())
        from conveyor_server._main import main
        sys.exit(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", blocked, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "conveyor-server: error: the server needs the server extra: "
        "pip install 'conveyor[server]'\n"
    )


@pytest.mark.parametrize("task_type", ["sleep", "stubborn"])
def test_second_ctrl_c_stops_at_once_and_keeps_the_task(tmp_path: Path, task_type: str) -> None:
    (tmp_path / "mytasks.py").write_text(HANDLERS)
    port, store = free_port(), f"sqlite:///{tmp_path / 'tasks.db'}"
    args = ["--port", str(port), "--store", store, "--tasks", "mytasks"]
    process = start(args, tmp_path)
    try:
        with Client(f"127.0.0.1:{port}", timeout=5) as client:
            handle = client.submit(task_type, {"seconds": 60}, max_attempts=1)
            for task in handle.watch():
                if task.state is TaskState.RUNNING:
                    break
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert process.poll() is None  # draining: the grace is 30 s
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        process.wait(timeout=5)
        assert time.monotonic() - started < 3
        assert process.returncode == 128 + signal.SIGINT
    finally:
        stderr = stop(process)
    assert "second signal: handing running tasks back to the queue now" in stderr
    assert "handed 1 unfinished tasks back to the queue" in stderr

    # Handed back, not lost: the next server runs it again, without the
    # interrupted attempt counting against its one attempt.
    process = start(args, tmp_path)
    try:
        with Client(f"127.0.0.1:{port}", timeout=5) as client:
            for task in client.watch(handle.id):
                if task.state is TaskState.RUNNING:
                    break
            assert task.state is TaskState.RUNNING, task
            assert task.error is None  # handed back, not recovered as INTERRUPTED
            client.cancel(handle.id)
    finally:
        stop(process)
