"""Worker processes on a shared Redis store: SIGKILL and SIGTERM mid-task,
and a checker over many runs with workers dying at random."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from conveyor import Client, ConveyorError, Task, TaskState
from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.checker import History, Runs
from tests.support.procs import Process, start_server, start_worker, wait_until
from tests.support.raw_api import TERMINAL, Api

pytestmark = pytest.mark.slow

LEASE = 2  # seconds; the reaper waits LEASE + MARGIN after the last renewal
MARGIN = "lease_margin=0.5"


def shared(redis_url: str) -> str:
    return f"{redis_url}&{MARGIN}"


def started_on(run_log: Path, task_id: str) -> int | None:
    for attempt, pid, event in Runs.read(run_log).of(task_id):
        if event == "start" and attempt >= 1:
            return pid
    return None


@pytest.fixture
def processes() -> list[Process]:
    started: list[Process] = []
    yield started  # type: ignore[misc]
    for process in started:
        process.stop()


def test_sigkill_of_a_worker_mid_task_reruns_it_elsewhere(
    redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    store, run_log = shared(redis_url), tmp_path / "runs.log"
    api, address = start_server("api", store, run_log, workers=0, lease_seconds=LEASE)
    processes.append(api)
    workers = [
        start_worker(f"worker-{n}", store, run_log, workers=2, lease_seconds=LEASE) for n in "ab"
    ]
    processes.extend(workers)
    with Client(address) as client:
        handle = client.submit("logged", {"seconds": 1.5}, max_attempts=3)
        wait_until(lambda: started_on(run_log, handle.id) is not None, 20, "the task to start")
        victim = next(w for w in workers if w.pid == started_on(run_log, handle.id))
        survivor = next(w for w in workers if w is not victim)
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        task = client.wait(handle.id, timeout=30)

    assert task.state is TaskState.SUCCEEDED, task
    assert task.attempt == 2
    assert task.result == {"pid": survivor.pid, "attempt": 2}
    events = Runs.read(run_log).of(handle.id)
    assert (1, victim.pid, "start") in events
    assert (1, victim.pid, "end") not in events
    assert events[-2:] == [(2, survivor.pid, "start"), (2, survivor.pid, "end")]
    history = History({handle.id: 3})
    assert history.problems({handle.id: task}, Runs.read(run_log)) == []


@pytest.mark.parametrize(
    ("grace", "seconds", "handed_back"),
    [(10.0, 2.0, False), (0.3, 4.0, True)],
    ids=["finishes-within-grace", "handed-back-after-grace"],
)
def test_sigterm_of_a_busy_worker_never_runs_its_task_twice_by_draining(
    redis_url: str,
    tmp_path: Path,
    processes: list[Process],
    grace: float,
    seconds: float,
    handed_back: bool,
) -> None:
    store, run_log = shared(redis_url), tmp_path / "runs.log"
    api, address = start_server("api", store, run_log, workers=0, lease_seconds=LEASE)
    processes.append(api)
    busy = start_worker(
        "busy", store, run_log, workers=1, lease_seconds=LEASE, shutdown_grace_seconds=grace
    )
    processes.append(busy)
    with Client(address) as client:
        handle = client.submit("logged", {"seconds": seconds}, max_attempts=1)
        wait_until(lambda: started_on(run_log, handle.id) == busy.pid, 20, "the task to start")
        # The idle worker joins only now, so the task cannot have started there.
        idle = start_worker("idle", store, run_log, workers=1, lease_seconds=LEASE)
        processes.append(idle)
        busy.signal(signal.SIGTERM)
        assert busy.wait(20) == 0, busy.log()
        task = client.wait(handle.id, timeout=30)

    assert task.state is TaskState.SUCCEEDED, task
    # No attempt is spent by a drain: max_attempts=1 still succeeds.
    assert task.attempt == 1
    events = Runs.read(run_log).of(handle.id)
    if handed_back:
        assert events == [
            (1, busy.pid, "start"),
            (1, busy.pid, "stopped"),
            (1, idle.pid, "start"),
            (1, idle.pid, "end"),
        ]
        assert busy.saw("handed 1 unfinished tasks back to the queue")
    else:
        assert events == [(1, busy.pid, "start"), (1, busy.pid, "end")]


def test_watch_and_cancel_cross_from_the_api_replica_to_the_worker(
    redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    store, run_log = shared(redis_url), tmp_path / "runs.log"
    api, address = start_server("api", store, run_log, workers=0, lease_seconds=LEASE)
    processes.append(api)
    worker = start_worker("worker", store, run_log, workers=2, lease_seconds=LEASE)
    processes.append(worker)
    with Client(address) as client:
        handle = client.submit("logged", {"seconds": 60})
        # The watcher is on the API replica; the handler runs in the worker.
        stream = client.watch(handle.id)
        running = next(t for t in stream if t.progress.percent == 50)
        assert running.state is TaskState.RUNNING
        assert running.progress.message == f"running in {worker.pid}"
        client.cancel(handle.id)
        rest = list(stream)
    assert rest[-1].state is TaskState.CANCELLED
    # The handler itself was stopped, in the worker, well before its 60 s.
    assert Runs.read(run_log).of(handle.id) == [
        (1, worker.pid, "start"),
        (1, worker.pid, "stopped"),
    ]


def test_a_reply_to_stream_on_the_api_replica_sees_tasks_finish_in_the_worker(
    redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    store, run_log = shared(redis_url), tmp_path / "runs.log"
    api, address = start_server("api", store, run_log, workers=0, lease_seconds=LEASE)
    processes.append(api)
    worker = start_worker("worker", store, run_log, workers=2, lease_seconds=LEASE)
    processes.append(worker)
    raw = Api(address)
    try:
        terminal = sorted(TERMINAL)
        stream = raw.stub.WatchTasks(
            pb.WatchTasksRequest(reply_to="client-1", states=terminal), timeout=60
        )
        stream.initial_metadata()
        other = raw.submit("logged", {"seconds": 0}, reply_to="client-2")
        raw.wait(other.id, timeout=30)
        mine = raw.submit("logged", {"seconds": 0.2}, reply_to="client-1")
        done = next(stream)
        stream.cancel()
    finally:
        raw.close()
    assert (done.task.id, done.task.state) == (mine.id, task_pb2.TASK_STATE_SUCCEEDED)
    assert done.task.result.struct_value.fields["pid"].number_value == worker.pid


def observe(client: Client, history: History, done: threading.Event) -> None:
    """Snapshots over time, to catch a task leaving a terminal state."""
    while not done.is_set():
        for task_id in list(history.acknowledged)[-50:]:
            with contextlib.suppress(ConveyorError):
                history.saw(client.get(task_id))
        time.sleep(0.05)


def test_checker_over_many_runs_with_workers_killed_at_random(
    redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    """Rounds of submits while workers are SIGKILLed and replaced at random;
    the invariants of checker.py hold after every round."""
    store, run_log = shared(redis_url), tmp_path / "runs.log"
    rng = random.Random(20261122)
    api, address = start_server("api", store, run_log, workers=0, lease_seconds=LEASE)
    processes.append(api)
    workers = [
        start_worker(f"w{n}", store, run_log, workers=4, lease_seconds=LEASE) for n in range(2)
    ]
    processes.extend(workers)
    history = History()
    with Client(address) as client:
        for round_number in range(3):
            done = threading.Event()

            observer = threading.Thread(target=observe, args=(client, history, done), daemon=True)
            observer.start()
            for n in range(60):
                max_attempts = rng.choice([1, 2, 3])
                seconds = rng.choice([0.0, 0.05, 0.3, 0.8])
                handle = client.submit("logged", {"seconds": seconds}, max_attempts=max_attempts)
                history.acknowledged[handle.id] = max_attempts
                if n % 20 == 10:
                    victim = workers.pop(rng.randrange(len(workers)))
                    victim.signal(signal.SIGKILL)
                    victim.wait(10)
                    replacement = start_worker(
                        f"w{round_number}-{n}", store, run_log, workers=4, lease_seconds=LEASE
                    )
                    processes.append(replacement)
                    workers.append(replacement)
                time.sleep(rng.uniform(0, 0.02))
            final: dict[str, Task | None] = {
                task_id: client.wait(task_id, timeout=60) for task_id in history.acknowledged
            }
            done.set()
            observer.join(5)
            for task in final.values():
                assert task is not None
                history.saw(task)
            problems = history.problems(final, Runs.read(run_log))
            assert problems == [], f"round {round_number}:\n" + "\n".join(problems)
    # Interrupted attempts were re-run or failed as INTERRUPTED, never lost.
    states = {task.state for task in final.values() if task is not None}
    assert states <= {TaskState.SUCCEEDED, TaskState.FAILED}
