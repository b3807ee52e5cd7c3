"""The core benchmark's harness: the report, server and client processes.

Used by `core.py`; not run by itself.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.v1 import task_pb2, task_service_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SERVER_BIN = Path(sys.executable).with_name("conveyor-server")
SERVICE_NAME = "conveyor.v1.TaskService"
STARTUP_TIMEOUT_S = 30.0
TERMINAL = (
    task_pb2.TASK_STATE_SUCCEEDED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELLED,
)

# Server flags by concept; the first spelling that `conveyor-server --help` lists is used.
FLAG_SPELLINGS = {
    "port": ("--port",),
    "host": ("--host", "--bind"),
    "workers": ("--workers",),
    "max_queue": ("--max-queue", "--max-queue-depth", "--queue-depth"),
    "retention_count": ("--retention-count",),
    "retention_period": ("--retention-period", "--retention-seconds", "--retention"),
    "max_watchers": ("--max-watchers",),
}


@dataclass(frozen=True)
class Scale:
    warmup_s: float
    duration_s: float
    single_tasks: int
    batched_tasks: int
    latency_tasks: int
    latency_warmup: int
    idle_streams: int
    fanout_watchers: int
    fanout_sleep_s: float
    retained_tasks: int
    rounds: int


FULL = Scale(1.0, 5.0, 20_000, 200_000, 2_000, 100, 10_000, 1_000, 5.0, 1_000_000, 3)
QUICK = Scale(0.5, 2.0, 1_000, 10_000, 100, 10, 500, 50, 2.0, 50_000, 2)


@dataclass
class Row:
    part: str
    metric: str
    value: float | None
    unit: str
    target: str = ""
    passed: bool | None = None
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        part: str,
        metric: str,
        value: float | None,
        unit: str,
        *,
        at_least: float | None = None,
        at_most: float | None = None,
        note: str = "",
    ) -> None:
        target, passed = "", None
        if at_least is not None:
            target = f">= {at_least:,g} {unit}"
            passed = value is not None and value >= at_least
        elif at_most is not None:
            target = f"<= {at_most:,g} {unit}"
            passed = value is not None and value <= at_most
        self.rows.append(Row(part, metric, value, unit, target, passed, note))
        shown = "n/a" if value is None else f"{value:,.3f}"
        print(f"  [{part}] {metric}: {shown} {unit} {target} {note}".rstrip(), flush=True)

    def markdown(self) -> str:
        lines = [
            "| part | metric | result | target | verdict | note |",
            "| --- | --- | ---: | --- | --- | --- |",
        ]
        for row in self.rows:
            result = "n/a" if row.value is None else f"{format_value(row.value)} {row.unit}"
            verdict = {True: "pass", False: "**miss**", None: ""}[row.passed]
            lines.append(
                f"| {row.part} | {row.metric} | {result} | {row.target} | {verdict} | {row.note} |"
            )
        return "\n".join(lines)


def format_value(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


# ---------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def stop_process(process: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# Every subprocess this run started, so that all of them are stopped on the way out.
STARTED: list[subprocess.Popen[Any]] = []


def popen(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    process = subprocess.Popen(cmd, cwd=ROOT, **kwargs)
    STARTED.append(process)
    return process


def stop_all() -> None:
    for process in reversed(STARTED):
        stop_process(process, grace_s=3.0)


def server_flags() -> set[str]:
    if not SERVER_BIN.exists():
        return set()
    done = subprocess.run(
        [str(SERVER_BIN), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    return set(re.findall(r"--[a-z][a-z0-9-]*", done.stdout + done.stderr))


@dataclass
class Server:
    process: subprocess.Popen[Any]
    address: str
    log: Path

    @property
    def rss_kib(self) -> int:
        return rss_kib(self.process.pid)


class Conveyor:
    """Starts conveyor-server subprocesses with the flags it has."""

    def __init__(self, log_dir: Path, extra_args: list[str]) -> None:
        self.log_dir = log_dir
        self.extra_args = extra_args
        self.flags = server_flags()
        self.missing: set[str] = set()
        self.started = 0

    def flag(self, concept: str) -> str | None:
        for spelling in FLAG_SPELLINGS[concept]:
            if spelling in self.flags:
                return spelling
        self.missing.add(concept)
        return None

    @contextmanager
    def run(self, **settings: Any) -> Iterator[Server]:
        if not SERVER_BIN.exists():
            raise RuntimeError(f"{SERVER_BIN} is missing: install the project first")
        port = free_port()
        cmd = [str(SERVER_BIN)]
        for concept, value in {"port": port, "host": "127.0.0.1", **settings}.items():
            spelling = self.flag(concept)
            if spelling is not None and value is not None:
                cmd += [spelling, str(value)]
        cmd += self.extra_args
        self.started += 1
        log = self.log_dir / f"conveyor-{self.started}.log"
        with log.open("w") as sink:
            process = popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
        server = Server(process, f"127.0.0.1:{port}", log)
        try:
            wait_serving(server, SERVICE_NAME)
            yield server
        finally:
            stop_process(process)


def wait_serving(server: Server, service: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {server.process.returncode}; log:\n"
                    + server.log.read_text()[-3000:]
                )
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"server at {server.address} not SERVING after {STARTUP_TIMEOUT_S}s")


@contextmanager
def echo_server(log_dir: Path) -> Iterator[tuple[Server, dict[str, Any]]]:
    port = free_port()
    log = log_dir / "echo.log"
    with log.open("w") as sink:
        process = popen(
            [sys.executable, str(BENCH / "_core_echo_server.py"), str(port)],
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("echo server failed to start; log:\n" + log.read_text())
        yield Server(process, f"127.0.0.1:{port}", log), json.loads(line)
    finally:
        stop_process(process)


def start_client(workload: str, args: dict[str, Any]) -> subprocess.Popen[str]:
    # The result goes to a file: stdout also carries the READY line, read
    # line by line, and a read-ahead buffer would swallow part of a long result.
    fd, result_path = tempfile.mkstemp(prefix="bench-result-", suffix=".json")
    os.close(fd)
    process = popen(
        [
            sys.executable,
            str(BENCH / "_core_client.py"),
            workload,
            json.dumps(args),
            result_path,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    RESULT_PATHS[process.pid] = Path(result_path)
    return process


RESULT_PATHS: dict[int, Path] = {}


def client_result(process: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    result_path = RESULT_PATHS.pop(process.pid)
    try:
        try:
            process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise RuntimeError(f"client did not finish within {timeout_s:.0f}s") from None
        text = result_path.read_text()
        if process.returncode != 0 or not text.strip():
            raise RuntimeError(f"client failed with exit code {process.returncode}")
        result: dict[str, Any] = json.loads(text)
        return result
    finally:
        result_path.unlink(missing_ok=True)


def run_client(workload: str, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    return client_result(start_client(workload, args), timeout_s)


def wait_ready(process: subprocess.Popen[str], timeout_s: float) -> int:
    """Waits for a client's `READY n` line; returns n."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    stream: IO[str] = process.stdout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise RuntimeError(f"client exited ({process.wait()}) before opening its streams")
        if line.startswith("READY"):
            return int(line.split()[1])
    raise RuntimeError("client not ready in time")


def stub_for(server: Server) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(server.address)
    return channel, task_service_pb2_grpc.TaskServiceStub(channel)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def settle(seconds: float = 2.0) -> None:
    time.sleep(seconds)


# ---------------------------------------------------------------------------
# Parts


def machine_facts(echo_settings: dict[str, Any] | None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "grpcio": grpc.__version__,
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
    }
    try:
        from conveyor_server import ServerConfig

        facts["server_uvloop"] = bool(getattr(ServerConfig(), "uvloop", False))
    except ImportError:
        facts["server_uvloop"] = "unknown (conveyor_server.ServerConfig missing)"
    try:
        facts["client_loop"] = f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        facts["client_loop"] = "asyncio"
    if echo_settings is not None:
        facts["echo_server_settings"] = echo_settings
    return facts


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
