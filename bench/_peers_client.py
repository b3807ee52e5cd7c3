"""Client side of bench/peers.py: drives one system, writes the result as JSON.

Run by peers.py, not by hand:

    python bench/_peers_client.py SYSTEM '{"tasks": 10000, ...}' RESULT.json

SYSTEM is conveyor, celery, rq or dramatiq. Each has an adapter with the same
two calls, made through that system's own client API: `submit(index)` sends one
no-op task and returns its handle; `wait(handle, index, timeout)` blocks until the
task's result is there and checks it. Each library is imported inside its
adapter's factory, so this module imports none of them.

Phases, all through the same adapter:
  warm-up     the first task with a long deadline (the worker may still be
              starting), then a small batch through the throughput harness
  throughput  LANES threads start together; each submits its share of the
              tasks one per call, then waits for each of them in submit order.
              Timed from the first submit to the last result observed.
  latency     one task in flight: submit, wait for its result, repeat.

During the throughput phase it also reads the CPU time of the system's
processes (their process groups), of itself, and of Redis when the system uses it.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

BENCH = Path(__file__).resolve().parent
INSTALL_HINT = "install the peers with: pip install -e '.[bench]'"


class BenchFailure(Exception):
    """A task that did not complete as it should (wrong result, failure, time-out)."""


class Adapter(Protocol):
    def submit(self, index: int) -> Any: ...

    def wait(self, handle: Any, index: int, timeout: float) -> None: ...

    def close(self) -> None: ...


def require(module: str) -> Any:
    """Imports a peer library, or fails with the command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SystemExit(f"{module} is not installed ({exc}); {INSTALL_HINT}") from None


# ---------------------------------------------------------------------------
# Adapters: one per system, each using only that system's ordinary API.


class ConveyorAdapter:
    """`Client.submit("sleep", {"seconds": 0})`, then `TaskHandle.wait()` (GetTask, then WatchTask if unfinished)."""

    def __init__(self, args: dict[str, Any]) -> None:
        conveyor = require("conveyor")
        self._state = conveyor.TaskState
        self._client = conveyor.Client(args["address"], timeout=30)

    def submit(self, index: int) -> Any:
        return self._client.submit("sleep", {"seconds": 0})

    def wait(self, handle: Any, index: int, timeout: float) -> None:
        task = handle.wait(timeout=timeout)
        if task.state is not self._state.SUCCEEDED or task.result != {"slept": 0.0}:
            raise BenchFailure(f"task {task.id} ended {task.state.name} with {task.result!r}")

    def close(self) -> None:
        self._client.close()


class CeleryAdapter:
    """`noop.delay(index)`, then `AsyncResult.get(timeout=...)` (Redis pub/sub)."""

    def __init__(self, args: dict[str, Any]) -> None:
        require("celery")
        sys.path.insert(0, str(BENCH))
        from _peers_celery_app import app, noop

        self._app = app
        self._noop = noop

    def submit(self, index: int) -> Any:
        return self._noop.delay(index)

    def wait(self, handle: Any, index: int, timeout: float) -> None:
        value = handle.get(timeout=timeout)
        if value != index:
            raise BenchFailure(f"task {handle.id} returned {value!r}, expected {index}")

    def close(self) -> None:
        self._app.close()


class RqAdapter:
    """`Queue.enqueue(noop, index)`, then `Job.latest_result(timeout=...)` (a blocking XREAD)."""

    def __init__(self, args: dict[str, Any]) -> None:
        rq = require("rq")
        redis = require("redis")
        sys.path.insert(0, str(BENCH))
        from _peers_rq_jobs import QUEUE, noop

        self._connection = redis.Redis.from_url(args["redis_url"])
        self._queue = rq.Queue(QUEUE, connection=self._connection)
        self._noop = noop
        self._successful = require("rq.results").Result.Type.SUCCESSFUL

    def submit(self, index: int) -> Any:
        return self._queue.enqueue(self._noop, index)

    def wait(self, handle: Any, index: int, timeout: float) -> None:
        # RQ blocks for whole seconds; at least one.
        result = handle.latest_result(timeout=max(1, round(timeout)))
        if result is None:
            raise BenchFailure(f"job {handle.id} has no result after {timeout:.0f}s")
        if result.type != self._successful or result.return_value != index:
            raise BenchFailure(
                f"job {handle.id} ended {result.type.name} with {result.return_value!r}"
            )

    def close(self) -> None:
        self._connection.close()


class DramatiqAdapter:
    """`noop.send(index)`, then `Message.get_result(block=True)` (a blocking BRPOPLPUSH)."""

    def __init__(self, args: dict[str, Any]) -> None:
        require("dramatiq")
        sys.path.insert(0, str(BENCH))
        from _peers_dramatiq_app import backend, broker, noop

        self._backend = backend
        self._broker = broker
        self._noop = noop

    def submit(self, index: int) -> Any:
        return self._noop.send(index)

    def wait(self, handle: Any, index: int, timeout: float) -> None:
        # Dramatiq takes milliseconds and blocks for whole seconds; at least one.
        timeout_ms = max(1000, round(timeout * 1000))
        value = handle.get_result(backend=self._backend, block=True, timeout=timeout_ms)
        if value != index:
            raise BenchFailure(f"message {handle.message_id} returned {value!r}, expected {index}")

    def close(self) -> None:
        self._broker.close()


ADAPTERS: dict[str, Callable[[dict[str, Any]], Adapter]] = {
    "conveyor": ConveyorAdapter,
    "celery": CeleryAdapter,
    "rq": RqAdapter,
    "dramatiq": DramatiqAdapter,
}


# ---------------------------------------------------------------------------
# CPU accounting: on a shared machine, CPU seconds per task are steadier than
# tasks/s, and they show where the work goes.

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(groups: set[int]) -> float:
    """User + system CPU of every live process in these process groups."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) in groups:  # pgrp; utime and stime follow at 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


class CpuMeter:
    """CPU seconds of the system's processes, of this client, and of Redis if it is used."""

    def __init__(self, args: dict[str, Any]) -> None:
        import redis

        self._groups = set(args["process_groups"])
        # Only for systems that use Redis: for the others its CPU is other work.
        self._redis = redis.Redis.from_url(args["redis_url"]) if args["uses_redis"] else None

    def snapshot(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = {
            "workers": group_cpu_seconds(self._groups),
            "client": usage.ru_utime + usage.ru_stime,
        }
        if self._redis is not None:
            info = self._redis.info("cpu")
            cpu["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return cpu

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


def cpu_per_task_ms(
    before: dict[str, float], after: dict[str, float], tasks: int
) -> dict[str, float]:
    return {name: round((after[name] - before[name]) * 1000 / tasks, 4) for name in before}


# ---------------------------------------------------------------------------
# Phases


@dataclass
class Tally:
    completed: int = 0
    failures: int = 0
    failure_samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            self.failures += 1
            if len(self.failure_samples) < 5:
                self.failure_samples.append(f"{type(exc).__name__}: {exc}"[:300])


def throughput(
    adapter: Adapter, tasks: int, lanes: int, timeout: float, meter: CpuMeter | None = None
) -> dict[str, Any]:
    """LANES threads; each submits its share one per call, then waits for each in order."""
    lanes = max(1, min(lanes, tasks))
    barrier = threading.Barrier(lanes)
    starts = [0.0] * lanes
    submitted = [0.0] * lanes
    ends = [0.0] * lanes
    tally = Tally()

    def lane(number: int) -> None:
        indexes = range(number, tasks, lanes)
        barrier.wait()
        starts[number] = time.perf_counter()
        deadline = starts[number] + timeout
        handles = []
        try:
            for index in indexes:
                handles.append((index, adapter.submit(index)))
        except Exception as exc:  # counted: a submit that fails is a task not completed
            tally.fail(exc)
        submitted[number] = time.perf_counter()
        for index, handle in handles:
            left = deadline - time.perf_counter()
            if left <= 0:
                tally.fail(BenchFailure(f"phase time-out of {timeout:.0f}s reached"))
                break
            try:
                adapter.wait(handle, index, left)
            except Exception as exc:
                tally.fail(exc)
            else:
                with tally.lock:
                    tally.completed += 1
        ends[number] = time.perf_counter()

    threads = [threading.Thread(target=lane, args=(n,), daemon=True) for n in range(lanes)]
    cpu_before = meter.snapshot() if meter else None
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu = cpu_per_task_ms(cpu_before, meter.snapshot(), tasks) if meter and cpu_before else None
    first_submit = min(starts)
    seconds = max(ends) - first_submit
    return {
        "cpu_ms_per_task": cpu,
        "tasks": tasks,
        "lanes": lanes,
        "completed": tally.completed,
        "failures": tally.failures,
        "failure_samples": tally.failure_samples,
        "seconds": seconds,
        "submit_seconds": max(submitted) - first_submit,
        "rate": tally.completed / seconds if seconds > 0 else None,
    }


def latency(adapter: Adapter, tasks: int, warmup: int, timeout: float) -> dict[str, Any]:
    """One task in flight: submit, wait for its result with the system's own wait call."""
    samples: list[float] = []
    tally = Tally()
    deadline = time.perf_counter() + timeout
    for index in range(warmup + tasks):
        left = deadline - time.perf_counter()
        if left <= 0:
            tally.fail(BenchFailure(f"phase time-out of {timeout:.0f}s reached"))
            break
        started = time.perf_counter()
        try:
            adapter.wait(adapter.submit(index), index, min(left, 30.0))
        except Exception as exc:
            tally.fail(exc)
            continue
        elapsed_ms = (time.perf_counter() - started) * 1000
        if index >= warmup:
            samples.append(round(elapsed_ms, 4))
            tally.completed += 1
    return {
        "tasks": tasks,
        "warmup": warmup,
        "completed": tally.completed,
        "failures": tally.failures,
        "failure_samples": tally.failure_samples,
        "samples_ms": samples,
    }


def warm_up(adapter: Adapter, args: dict[str, Any]) -> dict[str, Any]:
    """One task with a long deadline (proves the worker is up), then a small batch."""
    started = time.perf_counter()
    adapter.wait(adapter.submit(-1), -1, args["startup_timeout"])
    first = time.perf_counter() - started
    batch = throughput(adapter, args["warmup_tasks"], args["lanes"], args["phase_timeout"])
    if batch["completed"] != batch["tasks"]:
        raise BenchFailure(f"warm-up completed {batch['completed']} of {batch['tasks']} tasks")
    return {"first_task_seconds": first, "batch": batch}


def run(system: str, args: dict[str, Any]) -> dict[str, Any]:
    adapter = ADAPTERS[system](args)
    meter = CpuMeter(args)
    try:
        result: dict[str, Any] = {"warmup": warm_up(adapter, args)}
        result["throughput"] = throughput(
            adapter, args["tasks"], args["lanes"], args["phase_timeout"], meter
        )
        result["latency"] = latency(
            adapter, args["latency_tasks"], args["latency_warmup"], args["phase_timeout"]
        )
        return result
    finally:
        meter.close()
        adapter.close()


def main() -> None:
    system, raw, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    try:
        result = run(system, json.loads(raw))
    except SystemExit as exc:
        out.write_text(json.dumps({"error": str(exc)}))
        raise
    except Exception as exc:
        out.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        traceback.print_exc()
        raise SystemExit(1) from None
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
