"""A storm of watchers that vanish.

Ten times over, a client process opens 5,000 WatchTask streams on one
long-running task and disappears without reading to the end: it cancels
every call, or closes its channels with no grace, or is killed outright.
Afterwards the server holds no more than it did before: no watch stream,
no asyncio task, no thread, no file descriptor, and no memory beyond noise.
"""

from __future__ import annotations

import asyncio
import gc
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.fuzz import assert_healthy, eventually, wait_until
from tests.support.raw_api import Api
from tests.support.server import ServerThread

pytestmark = pytest.mark.slow

STREAMS = 5000
ROUNDS = 10
CHANNELS = 10
# Streams open 500 at a time, as many clients do; a burst of thousands at
# once is test_watch_burst's subject.
WAVE = 500
DROPS = ("cancel", "close", "kill")
CLIENT = Path(__file__).parents[1] / "support" / "watch_storm_client.py"

# The bounds on what may remain after 50,000 streams came and went.
# Python objects: a stream that left anything behind (its generator, its
# subscription, its call) would add 50,000 or more; 2,000 is room for
# caches that fill once (interned strings, logging, the allocator's lists).
OBJECTS_SLACK = 2000
# Resident memory, against the highest level after the first three rounds
# (one of each way of dropping): those raise the allocator's high-water mark
# (freed memory is kept for reuse, not returned to the system), and the level
# swings by some 30 MiB from round to round with it. A leak of 1 KiB per
# stream would add 34 MiB over the seven rounds that follow.
RSS_SLACK_MIB = 16


@dataclass(frozen=True)
class Usage:
    watchers: int
    loop_tasks: int
    threads: int
    fds: int
    objects: int
    rss_mib: float

    def __str__(self) -> str:
        return (
            f"watchers={self.watchers} loop_tasks={self.loop_tasks} threads={self.threads} "
            f"fds={self.fds} objects={self.objects} rss={self.rss_mib:.1f}MiB"
        )


def usage(thread: ServerThread) -> Usage:
    """What the server's process holds now (the clients live elsewhere)."""

    async def loop_tasks() -> int:
        return len(asyncio.all_tasks())

    gc.collect()
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return Usage(
        watchers=watchers(thread),
        loop_tasks=thread.call(loop_tasks),
        threads=threading.active_count(),
        fds=len(os.listdir("/proc/self/fd")),
        objects=len(gc.get_objects()),
        rss_mib=resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20,
    )


def watchers(thread: ServerThread) -> int:
    return thread.server.servicer.watchers  # type: ignore[union-attr,no-any-return]


class StormClient:
    """The client process, driven one command at a time."""

    def __init__(self, address: str, task_id: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CLIENT), address, task_id, str(CHANNELS), str(STREAMS), str(WAVE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def command(self, line: str, timeout: float) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        assert ready, f"the storm client did not answer {line!r} within {timeout:g}s"
        answer = self.process.stdout.readline().strip()
        assert answer, f"the storm client died on {line!r} (exit {self.process.poll()})"
        return answer

    def open(self, count: int) -> None:
        answer = self.command(f"open {count}", timeout=120)
        _, opened, error = answer.split(" ", 2)
        assert int(opened) == count, f"{opened} of {count} streams opened; first error: {error}"

    def kill(self) -> None:
        """Gone at once: the kernel closes its sockets, nobody says goodbye."""
        self.process.kill()
        self.process.wait(10)
        self._close_pipes()

    def end(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        # Our ends of its pipes are descriptors of this process, which the
        # test counts.
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


@pytest.fixture
def storm_clients() -> Iterator[Callable[[str, str], StormClient]]:
    """Starts storm clients and makes sure none outlives the test."""
    started: list[StormClient] = []

    def start(address: str, task_id: str) -> StormClient:
        client = StormClient(address, task_id)
        started.append(client)
        return client

    yield start
    for client in started:
        client.end()


# 50,000 streams opened and dropped take about a minute on two busy cores,
# more than the suite's default per-test limit.
@pytest.mark.timeout(300)
def test_watch_storm_leaves_nothing_behind(
    make_server: Callable[..., ServerThread],
    storm_clients: Callable[[str, str], StormClient],
    request: pytest.FixtureRequest,
) -> None:
    thread = make_server()
    api = Api(thread.address)
    request.addfinalizer(api.close)
    task = api.submit("wait_for_cancel", {"seconds": 3600})
    wait_until(lambda: api.get(task.id).progress.percent == 10, 20, "running")

    async def loop_tasks() -> int:
        return len(asyncio.all_tasks())

    idle_loop_tasks = thread.call(loop_tasks)

    def settled() -> bool:
        # Cheap enough to poll: the full usage() collects garbage first.
        return watchers(thread) == 0 and thread.call(loop_tasks) <= idle_loop_tasks

    # A small round first, so that what is built once on first use (gRPC's
    # buffers and pollers, a connection's structures) exists before the baseline.
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before_clients = open_fds()
    client = storm_clients(thread.address, task.id)
    client.open(WAVE)
    client.end()
    wait_until(settled, 30, "rid of the warm-up streams")
    wait_until(lambda: open_fds() <= before_clients, 30, "rid of the warm-up connections")
    baseline = usage(thread)

    started = time.monotonic()
    early: list[Usage] = []
    report = [f"baseline: {baseline}"]
    for number in range(ROUNDS):
        drop = DROPS[number % len(DROPS)]
        if client.process.poll() is not None:
            client = storm_clients(thread.address, task.id)
        round_start = time.monotonic()
        client.open(STREAMS)
        assert watchers(thread) == STREAMS
        opened = time.monotonic()
        if drop == "kill":
            client.kill()
        else:
            client.command(drop, timeout=60)
        wait_until(settled, 60, f"rid of the streams after {drop}")
        now = usage(thread)
        report.append(
            f"round {number + 1} ({drop}): open {opened - round_start:.1f}s, "
            f"freed {time.monotonic() - opened:.1f}s; {now}"
        )
        if number < len(DROPS):
            early.append(now)
    client.end()
    # The last client's connections close as it exits; then all is as before.
    eventually(
        lambda: open_fds() <= baseline.fds and threading.active_count() <= baseline.threads, 30
    )
    final = usage(thread)
    report.append(f"after {ROUNDS} rounds in {time.monotonic() - started:.1f}s: {final}")
    print("\n".join(report))

    summary = "\n".join(report)
    assert final.watchers == 0, summary
    assert final.loop_tasks == baseline.loop_tasks, summary
    assert final.threads == baseline.threads, summary
    assert final.fds == baseline.fds, summary
    assert final.objects - baseline.objects <= OBJECTS_SLACK, summary
    assert final.rss_mib - max(u.rss_mib for u in early) <= RSS_SLACK_MIB, summary

    # The task the storm watched is untouched, and a watcher still sees it end.
    assert api.get(task.id).state == task_pb2.TASK_STATE_RUNNING
    stream = api.stub.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=20)
    assert next(stream).task.state == task_pb2.TASK_STATE_RUNNING
    api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)
    assert [m.task.state for m in stream][-1] == task_pb2.TASK_STATE_CANCELLED
    assert_healthy(thread, api)
