"""Worker pools with different task types on one Redis: each claims only
the types it has handlers for, and API replicas need no handler code."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import Client, InvalidArgument, TaskSpec, TaskState
from tests.support.procs import Process, start_server, start_worker

pytestmark = pytest.mark.slow

GPU, CPU = "tests.support.gpu_tasks", "tests.support.cpu_tasks"


@pytest.fixture
def processes() -> list[Process]:
    started: list[Process] = []
    yield started  # type: ignore[misc]
    for process in started:
        process.stop()


def start_pools(redis_url: str, run_log: Path, processes: list[Process]) -> tuple[Process, Process]:
    gpu = start_worker("gpu-pool", redis_url, run_log, workers=2, tasks=GPU)
    cpu = start_worker("cpu-pool", redis_url, run_log, workers=2, tasks=CPU)
    processes += [gpu, cpu]
    return gpu, cpu


def test_two_pools_run_only_their_own_types_and_fail_none_for_want_of_a_handler(
    redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    run_log = tmp_path / "runs.log"
    # This API replica has the code of both pools, and so validates both.
    api, address = start_server("api", redis_url, run_log, workers=0, tasks=f"{GPU},{CPU}")
    processes.append(api)
    gpu, cpu = start_pools(redis_url, run_log, processes)
    with Client(address) as client:
        specs = [
            TaskSpec("gpu_infer", {"model": f"m{n}"}) if n % 2 else TaskSpec("cpu_resize", {})
            for n in range(40)
        ]
        handles = client.submit_batch(specs)
        tasks = [client.wait(handle.id, timeout=30) for handle in handles]

    assert [t.state for t in tasks] == [TaskState.SUCCEEDED] * 40, [t.error for t in tasks]
    for task in tasks:
        assert isinstance(task.result, dict)
        pool = gpu if task.type == "gpu_infer" else cpu
        assert task.result["pid"] == pool.pid, task
        assert task.attempt == 1


def test_an_api_replica_without_handler_code_accepts_a_type_only_a_worker_serves(
    redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    run_log = tmp_path / "runs.log"
    api, address = start_server("api", redis_url, run_log, workers=0, tasks="")
    processes.append(api)
    gpu, _ = start_pools(redis_url, run_log, processes)
    with Client(address) as client:
        task = client.submit("gpu_infer", {"model": "resnet"}).wait(timeout=30)
        # The payload check runs where the code is: in the worker, at claim.
        invalid = client.submit("gpu_infer", {"model": 3}, max_attempts=3).wait(timeout=30)

    assert task.state is TaskState.SUCCEEDED, task
    assert task.result == {"pool": "gpu", "pid": gpu.pid, "model": "resnet"}
    assert invalid.state is TaskState.FAILED
    assert invalid.error is not None
    assert invalid.error.code == "INVALID_PAYLOAD"
    assert '"model" is required' in invalid.error.message
    assert invalid.attempt == 1  # not retried


def test_a_type_nobody_serves_is_refused_naming_the_served_types(
    redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    run_log = tmp_path / "runs.log"
    api, address = start_server("api", redis_url, run_log, workers=0, tasks="")
    processes.append(api)
    start_pools(redis_url, run_log, processes)
    with Client(address) as client, pytest.raises(InvalidArgument) as refused:
        client.submit("render_video", {})

    message = refused.value.message
    assert "no live worker serves task type 'render_video'" in message
    assert "cpu_resize" in message
    assert "gpu_infer" in message
    assert "--accept-unserved-types" in message
