"""Subprocesses of bench/peers.py: started in their own process groups,
logged to files, and always stopped, on errors and Ctrl-C too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVICE_NAME = "conveyor.v1.TaskService"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """Every process the benchmark starts. Each gets a session (and process
    group) of its own, so stopping it also stops the children it forked (the
    Dramatiq master's worker process), and Ctrl-C in the terminal reaches only
    the benchmark, which then stops them in order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs: dict[int, Path] = {}

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_from(0)

    def start(
        self,
        name: str,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append((name, process))
        self.logs[process.pid] = log
        return process

    def groups(self) -> list[int]:
        """Process group ids of the processes running now (each is its leader's pid)."""
        return [process.pid for _, process in self.running if process.poll() is None]

    def log_of(self, process: subprocess.Popen[Any]) -> str:
        log = self.logs.get(process.pid)
        if log is None:
            return "(no log)"
        lines = log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-5:]) or "(empty log)"

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Stops, on the way out, every process started inside."""
        first = len(self.running)
        try:
            yield
        finally:
            self.stop_from(first)

    def check_alive(self) -> None:
        """Raises if a process that should still run has exited (a crashed worker)."""
        for name, process in self.running:
            if process.poll() is not None and not name.endswith("-client"):
                raise RuntimeError(
                    f"{name} exited with {process.returncode}: {self.log_of(process)}"
                )

    def stop_from(self, first: int, grace_s: float = 10.0) -> None:
        """Stops the processes started from index `first` on, newest first."""
        doomed = self.running[first:]
        del self.running[first:]
        for _, process in reversed(doomed):
            signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for _, process in reversed(doomed):
            exited_unreaped(process, deadline)
            # Then the whole group, before the process is reaped: until then
            # its group id cannot be reused, and a child may outlive it.
            signal_group(process, signal.SIGKILL)
            process.wait()


def exited_unreaped(process: subprocess.Popen[Any], deadline: float) -> bool:
    """Waits until the process has exited (or the deadline), leaving it unreaped."""
    if process.returncode is not None:
        return True
    while True:
        try:
            info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            return True
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def signal_group(process: subprocess.Popen[Any], signum: int) -> None:
    # The group id is the pid (start_new_session); a group already gone is fine.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def wait_serving(process: subprocess.Popen[Any], address: str, timeout_s: float) -> None:
    """Waits until the server's health service reports SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if (
                    health.Check(request, timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"server at {address} not SERVING after {timeout_s:.0f}s")
