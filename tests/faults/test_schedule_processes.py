"""Schedules on one Redis shared by two API replicas and two workers, every
process ticking: each fire time makes exactly one task, and processes
started again do not fire again what was fired."""

from __future__ import annotations

import itertools
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from conveyor import Client, OverlapPolicy
from tests.support.procs import Process, start_server, start_worker, wait_until

pytestmark = pytest.mark.slow

TASKS = "tests.support.fault_tasks"


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def fire_counts(client: Client) -> Counter[str]:
    return Counter(
        task.labels["conveyor.fire_time"]
        for task in client.list(labels={"conveyor.schedule": "tick"})
    )


def assert_each_fire_once(counts: Counter[str]) -> None:
    assert counts and max(counts.values()) == 1, counts.most_common(3)
    times = sorted(datetime.fromisoformat(label).timestamp() for label in counts)
    # One task per second, none missed between the first and the last.
    assert [round(b - a) for a, b in itertools.pairwise(times)] == [1] * (len(times) - 1)


def test_every_fire_makes_one_task_across_replicas_workers_and_restarts(
    redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    run_log = tmp_path / "runs.log"
    processes += [start_worker(f"worker-{n}", redis_url, run_log, workers=2) for n in "ab"]
    apis = [start_server(f"api-{n}", redis_url, run_log, workers=0, tasks=TASKS) for n in "ab"]
    processes += [process for process, _ in apis]
    address = apis[0][1]
    with Client(address, timeout=5) as client:
        client.create_schedule(
            "tick", "logged", interval=1, overlap=OverlapPolicy.ALLOW, catch_up_window=600
        )
        wait_until(lambda: len(fire_counts(client)) >= 6, 30, "six fires")
    for process in processes:
        process.signal(signal.SIGTERM)
    for process in processes:
        assert process.wait(30) == 0, process.log()
    processes.clear()
    # Started again: the fires of the downtime are caught up, none twice.
    processes.append(start_worker("worker-c", redis_url, run_log, workers=2))
    api, address = start_server("api-c", redis_url, run_log, workers=0, tasks=TASKS)
    processes.append(api)
    with Client(address, timeout=5) as client:
        before = len(fire_counts(client))
        wait_until(lambda: len(fire_counts(client)) >= before + 3, 30, "three more fires")
        client.pause_schedule("tick")
        assert_each_fire_once(fire_counts(client))
