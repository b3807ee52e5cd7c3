"""Clients of the real in-process server (the `server` fixture of tests/conftest.py)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from conveyor import AsyncClient, Client
from conveyor.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc


@pytest.fixture
def client(server: Any) -> Iterator[Client]:
    with Client(server.address, timeout=5.0) as client:
        yield client


@pytest.fixture
async def aclient(server: Any) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.address, timeout=5.0) as client:
        yield client


@pytest.fixture
def run_label() -> dict[str, str]:
    """A label unique to the test, so list filters see only the test's own tasks."""
    return {"run": uuid.uuid4().hex}


class ScriptedService(task_service_pb2_grpc.TaskServiceServicer):
    """A stand-in service that fails on purpose, to test retries, resumes and deadlines.

    - GetTask: UNAVAILABLE for the first `unavailable_gets` calls; id "slow" sleeps 1 s.
    - SubmitTask: always UNAVAILABLE.
    - WatchTask: versions 1 and 2 then UNAVAILABLE; resumed, the terminal version 3.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.unavailable_gets = 2
        self.watch_since: list[int] = []

    def GetTask(self, request: Any, context: Any) -> Any:
        self.calls["GetTask"] += 1
        if request.id == "slow":
            time.sleep(1)
        if self.calls["GetTask"] <= self.unavailable_gets:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        # Ids starting with "running" are unfinished when read.
        done = not request.id.startswith("running")
        return task_service_pb2.GetTaskResponse(task=_task(request.id, 1, done=done))

    def SubmitTask(self, request: Any, context: Any) -> Any:
        self.calls["SubmitTask"] += 1
        context.abort(grpc.StatusCode.UNAVAILABLE, "draining")

    def WatchTask(self, request: Any, context: Any) -> Iterator[Any]:
        self.calls["WatchTask"] += 1
        self.watch_since.append(request.since_version)
        if request.since_version == 0:
            yield task_service_pb2.WatchTaskResponse(task=_task(request.id, 1, done=False))
            yield task_service_pb2.WatchTaskResponse(task=_task(request.id, 2, done=False))
            context.abort(grpc.StatusCode.UNAVAILABLE, "moving")
        yield task_service_pb2.WatchTaskResponse(task=_task(request.id, 3, done=True))


def _task(task_id: str, version: int, *, done: bool) -> task_pb2.Task:
    state = task_pb2.TASK_STATE_SUCCEEDED if done else task_pb2.TASK_STATE_RUNNING
    return task_pb2.Task(id=task_id, type="echo", state=state, version=version)


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedService, str]]:
    """A ScriptedService on a plain gRPC server; yields it and its address."""
    service = ScriptedService()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(service, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield service, f"127.0.0.1:{port}"
    grpc_server.stop(None)
