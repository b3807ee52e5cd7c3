"""Server, worker and Redis processes for the fault tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.server import free_port, server_command

# The repository root: server processes import `tests.support.fault_tasks`.
ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process whose stderr is kept, for readiness checks and for
    the failure message of a test."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self.popen = subprocess.Popen(
            list(args),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.popen.stderr
        assert stream is not None
        with stream:
            for line in stream:
                self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return "\n".join(self.lines[-40:])

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait_for_line(self, text: str, timeout: float = 20) -> None:
        def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()}")
            return self.saw(text)

        wait_until(ready, timeout, f"{self.name} to log {text!r}")

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        self._reader.join(5)


def conveyor_env(run_log: Path, **settings: object) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["CONVEYOR_TEST_RUN_LOG"] = str(run_log)
    env["CONVEYOR_TASKS"] = "tests.support.fault_tasks"
    env["CONVEYOR_UVLOOP"] = "false"
    env["CONVEYOR_RETRY_BACKOFF_SECONDS"] = "0.05"
    env["CONVEYOR_RETRY_BACKOFF_MAX_SECONDS"] = "0.2"
    for name, value in settings.items():
        env["CONVEYOR_" + name.upper()] = str(value)
    return env


def start_server(name: str, store: str, run_log: Path, **settings: object) -> tuple[Process, str]:
    """A `conveyor-server` on a free port, started and healthy."""
    port = free_port()
    process = Process(
        name,
        [*server_command(), "--host", "127.0.0.1", "--port", str(port), "--store", store],
        conveyor_env(run_log, **settings),
    )
    address = f"127.0.0.1:{port}"

    def healthy() -> bool:
        if process.popen.poll() is not None:
            raise AssertionError(f"{name} exited early:\n{process.log()}")
        try:
            with grpc.insecure_channel(address) as channel:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False

    wait_until(healthy, 30, f"{name} to serve", interval=0.1)
    return process, address


def start_worker(name: str, store: str, run_log: Path, **settings: object) -> Process:
    """A `conveyor-server worker`, started and claiming."""
    process = Process(
        name, [*server_command(), "worker", "--store", store], conveyor_env(run_log, **settings)
    )
    process.wait_for_line("conveyor worker running")
    return process


class RedisServer:
    """A redis-server of the test's own, with AOF on, that can be killed and
    started again on the same port and directory."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_until(up, 20, "redis-server to answer")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
