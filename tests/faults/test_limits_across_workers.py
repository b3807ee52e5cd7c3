"""A type's max_running holds across worker processes on one Redis: the
count of running tasks lives in the store, not in a process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from conveyor_server.stores import RedisStore, TypeCounts
from tests.support.procs import Process, start_worker
from tests.support.stores import new_task, struct_bytes

pytestmark = pytest.mark.slow


def most_at_once(run_log: Path) -> int:
    """The most tasks that ran at once, by the log's start and end lines."""
    running = most = 0
    for line in run_log.read_text().splitlines():
        event = line.split()[-1]
        running += 1 if event == "start" else -1 if event == "end" else 0
        most = max(most, running)
    return most


async def test_a_limit_of_two_holds_across_two_worker_processes(
    redis_url: str, tmp_path: Path
) -> None:
    run_log = tmp_path / "runs.log"
    store = RedisStore(redis_url, max_queue=1000, retention_count=1000, lease_seconds=30.0)
    workers: list[Process] = []
    try:
        await store.update_type("logged", time.time(), limits={"max_running": 2})
        # Each process alone could run four at once.
        workers += [start_worker(f"worker-{n}", redis_url, run_log, workers=4) for n in (1, 2)]
        payload = struct_bytes(seconds=0.2)
        await store.create([new_task("logged", payload=payload) for _ in range(12)], time.time())

        deadline = time.monotonic() + 60
        while (await store.type_counts()).get("logged", TypeCounts()) != TypeCounts():
            assert time.monotonic() < deadline, "the tasks did not all finish"
            assert all(w.popen.poll() is None for w in workers), [w.log() for w in workers]
            await asyncio.sleep(0.05)
    finally:
        for worker in workers:
            worker.stop()
        await store.close()

    lines = run_log.read_text().splitlines()
    assert sum(line.endswith(" end") for line in lines) == 12
    assert most_at_once(run_log) == 2
