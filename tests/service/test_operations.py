"""Health, reflection and graceful shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.raw_api import Api
from tests.support.server import ServerThread, free_port, server_command

pytestmark = pytest.mark.slow

SERVICE = "conveyor.v1.TaskService"


def health_status(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


@pytest.mark.parametrize("service", ["", SERVICE])
def test_health_is_serving(server: ServerThread, service: str) -> None:
    assert health_status(server.address, service) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in response.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_graceful_stop_refuses_new_work_and_lets_tasks_finish(make_server) -> None:  # type: ignore[no-untyped-def]
    thread: ServerThread = make_server()
    api = Api(thread.address)
    task = api.submit("sleep", {"seconds": 0.5})
    api.wait(task.id, states={task_pb2.TASK_STATE_RUNNING})
    server = thread.server
    assert server is not None
    future = __import__("asyncio").run_coroutine_threadsafe(server.stop(5.0), thread.loop)
    deadline = time.monotonic() + 5
    while server.gate.open:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    with pytest.raises(grpc.RpcError) as caught:
        api.submit("echo", {})
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE,)
    assert "shutting down" in caught.value.details()
    assert health_status(thread.address, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    future.result(10)
    record = thread.call(lambda: server.store.get(task.id))
    assert record.state.name == "SUCCEEDED"
    api.close()
    thread.server = None  # already stopped


def test_unfinished_tasks_go_back_to_the_queue_without_spending_an_attempt(make_server) -> None:  # type: ignore[no-untyped-def]
    thread: ServerThread = make_server(stop_grace_seconds=0.1)
    api = Api(thread.address)
    task = api.submit("wait_for_cancel", {"seconds": 30}, max_attempts=2)
    api.wait(task.id, states={task_pb2.TASK_STATE_RUNNING})
    server = thread.server
    assert server is not None
    thread.call(lambda: server.stop(0.2))
    record = thread.call(lambda: server.store.get(task.id))
    assert record.state.name == "PENDING"
    assert record.attempt == 0
    api.close()
    thread.server = None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_and_exits_zero(signum: int) -> None:
    port = free_port()
    env = dict(os.environ, CONVEYOR_SHUTDOWN_GRACE_SECONDS="5")
    process = subprocess.Popen(
        [*server_command(), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if health_status(address, SERVICE) == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        api = Api(address)
        task = api.submit("sleep", {"seconds": 0.6})
        api.wait(task.id, states={task_pb2.TASK_STATE_RUNNING})
        stream = api.stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=10)
        next(stream)
        process.send_signal(signum)
        # While draining, new work is refused and the running task finishes.
        deadline = time.monotonic() + 5
        refused = None
        while refused is None:
            try:
                api.submit("sleep", {})
            except grpc.RpcError as exc:
                refused = exc
            assert time.monotonic() < deadline
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        states = [message.task.state for message in stream]
        assert states[-1] == task_pb2.TASK_STATE_SUCCEEDED
        api.close()
        assert process.wait(timeout=15) == 0
        stderr = process.stderr.read() if process.stderr else ""
        assert "shutting down" in stderr and "stopped" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_tasks_flag_imports_user_handlers(tmp_path: Path) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(
        "from conveyor_server import task\n\n"
        "@task('shout')\n"
        "def shout(ctx, payload):\n"
        "    ctx.report_progress(50, 'shouting')\n"
        "    return payload['text'].upper()\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [*server_command(), "--host", "127.0.0.1", "--port", str(port), "--tasks", "mypkg.tasks"],
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
    )
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                health_status(address, SERVICE)
                break
            except grpc.RpcError:
                assert process.poll() is None, "server exited"
                assert time.monotonic() < deadline
                time.sleep(0.1)
        api = Api(address)
        done = api.wait(api.submit("shout", {"text": "hello"}).id)
        assert done.result.string_value == "HELLO"
        api.close()
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_bad_flag_is_a_usage_error() -> None:
    result = subprocess.run(
        [*server_command(), "--workers", "many"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "--workers" in result.stderr


def test_unknown_store_url_is_refused() -> None:
    result = subprocess.run(
        [*server_command(), "--store", "mongodb://x", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unsupported store URL" in result.stderr


def test_missing_task_module_is_reported() -> None:
    result = subprocess.run(
        [*server_command(), "--tasks", "no_such_module_here", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot import task module 'no_such_module_here'" in result.stderr


def test_get_after_submit_on_another_connection(server: ServerThread) -> None:
    one, two = Api(server.address), Api(server.address)
    task = one.submit("echo", {})
    assert two.get(task.id).id == task.id
    one.close()
    two.close()
    assert pb.GetTaskRequest(id=task.id).id == task.id


def test_process_exits_even_if_the_server_was_never_stopped(tmp_path: Path) -> None:
    script = tmp_path / "forgetful.py"
    script.write_text(
        "import asyncio\n"
        "from conveyor_server import ConveyorServer, ServerConfig\n"
        "async def main():\n"
        "    server = ConveyorServer(ServerConfig(host='127.0.0.1', port=0, http_port=0))\n"
        "    await server.start()\n"
        "asyncio.run(main())\n"
        "print('returned')\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert "returned" in result.stdout
