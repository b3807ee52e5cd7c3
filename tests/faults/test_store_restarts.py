"""Whole-process crashes: kill -9 of a SQLite server under submits, and a
restart of Redis (AOF on) under load."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from conveyor import Client, ConveyorError, Task
from tests.support.checker import History, Runs
from tests.support.procs import Process, RedisServer, start_server
from tests.support.server import need_server


class Submitter(threading.Thread):
    """Submits `logged` tasks one after another and keeps the ids of those
    acknowledged; counts refusals by status code."""

    def __init__(self, address: str, seconds: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.seconds = seconds
        self.history = History()
        self.refused: dict[str, int] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        with Client(self.address) as client:
            while not self.halt.is_set():
                try:
                    handle = client.submit(
                        "logged", {"seconds": self.seconds}, max_attempts=3, rpc_timeout=2
                    )
                except ConveyorError as exc:
                    name = exc.code.name
                    self.refused[name] = self.refused.get(name, 0) + 1
                    time.sleep(0.02)
                    continue
                self.history.acknowledged[handle.id] = 3

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def finish(address: str, history: History, run_log: Path) -> None:
    with Client(address) as client:
        final: dict[str, Task | None] = {}
        for task_id in history.acknowledged:
            try:
                final[task_id] = client.wait(task_id, timeout=60)
            except ConveyorError:
                final[task_id] = None
    problems = history.problems(final, Runs.read(run_log))
    assert problems == [], "\n".join(problems[:20])


def test_kill_9_of_a_sqlite_server_under_submits_loses_no_acknowledged_task(
    tmp_path: Path,
) -> None:
    store, run_log = f"sqlite:///{tmp_path}/tasks.db", tmp_path / "runs.log"
    first, address = start_server("first", store, run_log, workers=4)
    second: Process | None = None
    submitter = Submitter(address)
    try:
        submitter.start()
        time.sleep(1.5)
        first.signal(signal.SIGKILL)
        first.wait(10)
        submitter.stop()
        assert len(submitter.history.acknowledged) > 50
        second, address = start_server("second", store, run_log, workers=4)
        finish(address, submitter.history, run_log)
    finally:
        submitter.stop()
        first.stop()
        if second is not None:
            second.stop()


def test_redis_restart_under_load_is_unavailable_then_completes_everything(
    tmp_path: Path,
) -> None:
    if shutil.which("redis-server") is None:
        need_server("redis-server (to start a Redis of the test's own)")
    redis = RedisServer(tmp_path)
    redis.start()
    # A lease longer than the outage: running attempts keep their lease.
    store, run_log = f"{redis.url}?prefix=restart", tmp_path / "runs.log"
    server, address = start_server("server", store, run_log, workers=4, lease_seconds=10)
    submitter = Submitter(address)
    try:
        submitter.start()
        time.sleep(1.0)
        acknowledged_before = len(submitter.history.acknowledged)
        redis.kill()
        time.sleep(1.5)
        redis.start()
        time.sleep(1.5)
        submitter.stop()
        assert acknowledged_before > 20
        assert submitter.refused.get("UNAVAILABLE", 0) > 0, submitter.refused
        assert set(submitter.refused) == {"UNAVAILABLE"}, submitter.refused
        assert len(submitter.history.acknowledged) > acknowledged_before
        finish(address, submitter.history, run_log)
        assert server.popen.poll() is None, server.log()
    finally:
        submitter.stop()
        server.stop()
        redis.kill()


pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
