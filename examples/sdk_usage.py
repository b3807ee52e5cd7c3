"""Using the Conveyor SDK from another service, sync and asyncio.

Run a server first (`conveyor-server`), then: python examples/sdk_usage.py
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from conveyor import (
    AsyncClient,
    BatchRetryResult,
    Client,
    InvalidArgument,
    JSONValue,
    PendingReason,
    Task,
    TaskFailed,
    TaskSpec,
    TaskState,
    WaitTimeout,
)

ADDRESS = "localhost:50051"


def summarize_csv(client: Client, csv_text: str) -> JSONValue:
    handle = client.submit("csv_stats", {"csv": csv_text}, labels={"team": "reports"})
    return handle.result(timeout=30)


def sleep_with_progress(client: Client) -> Task:
    handle = client.submit("sleep", {"seconds": 2}, idempotency_key="example-sleep-1")
    for task in handle.watch():
        print(f"{task.state.name:<9} {task.progress.percent:5.1f}% {task.progress.message}")
    return handle.task


def chain_and_limits(client: Client) -> None:
    extract = TaskSpec("sleep", {"seconds": 0.2}, concurrency_key="account-42")
    report = TaskSpec("csv_stats", {"csv": "a\n1\n"}, depends_on=[extract])
    first, second = client.submit_batch([extract, report])
    waiting = client.get(second.id)
    if waiting.pending_reason is PendingReason.DEPENDENCIES:
        print("waits:", waiting.pending_message)
    after = client.submit("sleep", {"seconds": 0}, depends_on=[first, second.id])
    print("chain:", after.result(timeout=30))

    limited = client.update_task_type("csv_stats", max_running=4, max_starts_per_second=10)
    print("limits:", limited.limits, "declared:", limited.default_limits)
    client.update_task_type("csv_stats", restore_defaults=["max_running", "max_starts_per_second"])
    client.pause_task_type("sleep")
    client.resume_task_type("sleep")

    since = datetime.now(UTC) - timedelta(days=1)
    retried: BatchRetryResult = client.batch_retry(
        type="csv_stats", states=[TaskState.FAILED], created_after=since
    )
    print("retried", retried.retried, "of", retried.matched)


def run_sync() -> None:
    with Client(ADDRESS, timeout=5.0) as client:
        print("csv:", summarize_csv(client, "name,age\nada,36\nalan,41\n"))
        sleep_with_progress(client)
        chain_and_limits(client)

        handles = client.submit_batch(
            [TaskSpec("sleep", {"seconds": 0.5}, priority=priority) for priority in (1, 2, 3)]
        )
        finished: list[Task] = [handle.wait(timeout=30) for handle in handles]
        print("batch:", [task.state.name for task in finished])

        slow = client.submit("sleep", {"seconds": 60})
        try:
            slow.wait(timeout=0.5)
        except WaitTimeout as exc:
            print("still running:", exc.task.state.name if exc.task else "unknown")
            slow.cancel()
        try:
            slow.result(timeout=10)
        except TaskFailed as exc:
            print("ended", exc.task.state.name)

        try:
            client.submit("no_such_type")
        except InvalidArgument as exc:
            for field, description in exc.field_violations:
                print(f"rejected: {field}: {description}")

        for task in client.list(states=[TaskState.SUCCEEDED], labels={"team": "reports"}, limit=5):
            print(task.id, task.type, task.end_time)


async def run_async() -> None:
    async with AsyncClient(ADDRESS) as client:
        handle = await client.submit("sleep", {"seconds": 1})
        async for task in handle.watch():
            print("async:", task.state.name, task.progress.percent)
        final = await client.wait(handle.id, timeout=10)
        recent = [task.id async for task in client.list(type="sleep", limit=3)]
        print("async done:", final.state.name, recent)
        cancelled = await client.batch_cancel([handle])
        print("async cancel counts:", cancelled.matched, cancelled.cancelled)


if __name__ == "__main__":
    run_sync()
    asyncio.run(run_async())
