"""The phases of bench/peers.py's client, written once for threads and for coroutines.

Each phase is a plan: a generator that yields the calls to make (`Submit`,
`Wait`) and receives their outcome, a handle or an exception. `drive` runs a
plan against a thread adapter, `drive_async` against a coroutine adapter, so
the decisions (order, deadlines, what counts as completed) are the same for
both.

Phases:
  warm-up     the first task with a long deadline (the workers may still be
              starting), then a small throughput round
  throughput  LANES threads (or coroutines) start together; each submits its
              share of the tasks one per call, then waits for each of them in
              submit order. Timed from the first submit to the last result.
  latency     one task in flight: submit, wait for its result, repeat.
  bulk        Conveyor only: `submit_batch` in batches of the server's
              largest size, then wait for every task.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from _peers_adapters import BenchFailure

MAX_BATCH = 1000
"""The most requests the server takes in one BatchSubmitTasks call."""


@dataclass(frozen=True, slots=True)
class Submit:
    index: int


@dataclass(frozen=True, slots=True)
class Wait:
    handle: Any
    index: int
    timeout: float


Step = Submit | Wait
Plan = Generator[Step, Any, None]


@dataclass
class Tally:
    completed: int = 0
    failures: int = 0
    failure_samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self) -> None:
        with self.lock:
            self.completed += 1

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            self.failures += 1
            if len(self.failure_samples) < 5:
                self.failure_samples.append(f"{type(exc).__name__}: {exc}"[:300])

    def report(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "failures": self.failures,
            "failure_samples": self.failure_samples,
        }


class Runner:
    """Advances a plan by the outcome of its last step; `step` is None once it ends."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self.step: Step | None = next(plan, None)

    def answer(self, reply: Any = None, error: BaseException | None = None) -> None:
        try:
            self.step = self._plan.send(reply) if error is None else self._plan.throw(error)
        except StopIteration:
            self.step = None


def call(adapter: Any, step: Step) -> Any:
    """The adapter's call for this step (a coroutine, for an asyncio adapter)."""
    if isinstance(step, Submit):
        return adapter.submit(step.index)
    return adapter.wait(step.handle, step.index, step.timeout)


def drive(plan: Plan, adapter: Any) -> None:
    runner = Runner(plan)
    while (step := runner.step) is not None:
        try:
            reply = call(adapter, step)
        except Exception as exc:
            runner.answer(error=exc)
        else:
            runner.answer(reply)


async def drive_async(plan: Plan, adapter: Any) -> None:
    runner = Runner(plan)
    while (step := runner.step) is not None:
        try:
            reply = await call(adapter, step)
        except Exception as exc:
            runner.answer(error=exc)
        else:
            runner.answer(reply)


def run_plans(plans: list[Plan], adapter: Any, loop: asyncio.AbstractEventLoop | None) -> None:
    """Runs the plans together: a thread each, or a coroutine each on `loop`."""
    if loop is not None:

        async def together() -> None:
            await asyncio.gather(*(drive_async(plan, adapter) for plan in plans))

        loop.run_until_complete(together())
        return
    errors: list[BaseException] = []

    def lane(plan: Plan) -> None:
        try:
            drive(plan, adapter)
        except BaseException as exc:  # raised again below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=lane, args=(plan,), daemon=True) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


# ---------------------------------------------------------------------------
# Plans


@dataclass
class LaneTimes:
    starts: list[float]
    submitted: list[float]
    ends: list[float]


def lane_plan(
    number: int, indexes: range, timeout: float, tally: Tally, times: LaneTimes, gate: Any
) -> Plan:
    """Submits every task of the lane, then waits for each in submit order."""
    gate()
    times.starts[number] = started = time.perf_counter()
    deadline = started + timeout
    handles = []
    try:
        for index in indexes:
            handles.append((index, (yield Submit(index))))
    except Exception as exc:  # counted: a submit that fails is a task not completed
        tally.fail(exc)
    times.submitted[number] = time.perf_counter()
    for index, handle in handles:
        left = deadline - time.perf_counter()
        if left <= 0:
            tally.fail(BenchFailure(f"phase time-out of {timeout:.0f}s reached"))
            break
        try:
            yield Wait(handle, index, left)
        except Exception as exc:
            tally.fail(exc)
        else:
            tally.done()
    times.ends[number] = time.perf_counter()


def latency_plan(
    tasks: int, warmup: int, timeout: float, tally: Tally, samples: list[float]
) -> Plan:
    deadline = time.perf_counter() + timeout
    for index in range(warmup + tasks):
        left = deadline - time.perf_counter()
        if left <= 0:
            tally.fail(BenchFailure(f"phase time-out of {timeout:.0f}s reached"))
            return
        started = time.perf_counter()
        try:
            yield Wait((yield Submit(index)), index, min(left, 30.0))
        except Exception as exc:
            tally.fail(exc)
            continue
        if index >= warmup:
            samples.append(round((time.perf_counter() - started) * 1000, 4))
            tally.done()


def first_task_plan(timeout: float) -> Plan:
    """One task; its failure ends the run (the workers did not come up)."""
    yield Wait((yield Submit(-1)), -1, timeout)


# ---------------------------------------------------------------------------
# Phases


def throughput(
    adapter: Any,
    tasks: int,
    lanes: int,
    timeout: float,
    loop: asyncio.AbstractEventLoop | None,
    meter: Any = None,
) -> dict[str, Any]:
    """LANES lanes; each submits its share one per call, then waits for each in order."""
    lanes = max(1, min(lanes, tasks))
    times = LaneTimes([0.0] * lanes, [0.0] * lanes, [0.0] * lanes)
    tally = Tally()
    # Threads start together at a barrier; coroutines start together anyway.
    gate = threading.Barrier(lanes).wait if loop is None else (lambda: None)
    plans = [
        lane_plan(n, range(n, tasks, lanes), timeout, tally, times, gate) for n in range(lanes)
    ]
    cpu_before = meter.snapshot() if meter else None
    run_plans(plans, adapter, loop)
    cpu = meter.per_task_ms(cpu_before, tasks) if meter and cpu_before else None
    first_submit = min(times.starts)
    seconds = max(times.ends) - first_submit
    return {
        "cpu_ms_per_task": cpu,
        "tasks": tasks,
        "lanes": lanes,
        **tally.report(),
        "seconds": seconds,
        "submit_seconds": max(times.submitted) - first_submit,
        "rate": tally.completed / seconds if seconds > 0 else None,
    }


def latency(
    adapter: Any, tasks: int, warmup: int, timeout: float, loop: asyncio.AbstractEventLoop | None
) -> dict[str, Any]:
    """One task in flight: submit, wait for its result with the system's own wait call."""
    samples: list[float] = []
    tally = Tally()
    run_plans([latency_plan(tasks, warmup, timeout, tally, samples)], adapter, loop)
    return {"tasks": tasks, "warmup": warmup, **tally.report(), "samples_ms": samples}


def warm_up(
    adapter: Any, args: dict[str, Any], loop: asyncio.AbstractEventLoop | None
) -> dict[str, Any]:
    """One task with a long deadline (proves the workers are up), then a small round."""
    started = time.perf_counter()
    run_plans([first_task_plan(args["startup_timeout"])], adapter, loop)
    first = time.perf_counter() - started
    batch = throughput(adapter, args["warmup_tasks"], args["lanes"], args["phase_timeout"], loop)
    if batch["completed"] != batch["tasks"]:
        raise BenchFailure(f"warm-up completed {batch['completed']} of {batch['tasks']} tasks")
    return {"first_task_seconds": first, "batch": batch}


def bulk(adapter: Any, tasks: int, timeout: float, meter: Any = None) -> dict[str, Any]:
    """`submit_batch` of MAX_BATCH tasks at a time from one thread, then every result."""
    tally = Tally()
    cpu_before = meter.snapshot() if meter else None
    started = time.perf_counter()
    deadline = started + timeout
    handles: list[Any] = []
    for first in range(0, tasks, MAX_BATCH):
        handles += adapter.submit_batch(min(MAX_BATCH, tasks - first))
    submitted = time.perf_counter() - started
    for handle in handles:
        left = deadline - time.perf_counter()
        if left <= 0:
            tally.fail(BenchFailure(f"phase time-out of {timeout:.0f}s reached"))
            break
        try:
            adapter.wait(handle, -1, left)
        except Exception as exc:
            tally.fail(exc)
        else:
            tally.done()
    seconds = time.perf_counter() - started
    return {
        "cpu_ms_per_task": meter.per_task_ms(cpu_before, tasks) if meter and cpu_before else None,
        "tasks": tasks,
        "batch_size": MAX_BATCH,
        **tally.report(),
        "submit_seconds": submitted,
        "submit_rate": len(handles) / submitted if submitted > 0 else None,
        "seconds": seconds,
        "rate": tally.completed / seconds if seconds > 0 else None,
    }
