"""Helpers shared by the store tests: requests, a recording listener, and
waits with a bound for what crosses processes."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

from google.protobuf import struct_pb2

from conveyor_server.stores import (
    ErrorCode,
    ListQuery,
    NewTask,
    TaskFailure,
    TaskRecord,
    TaskStore,
    TaskSubscription,
)

# How long a notification that travels through a server (Redis pub/sub) may take.
NOTICE_SECONDS = 5.0
BOOM = TaskFailure(ErrorCode.HANDLER_ERROR, "boom", "RuntimeError")


def struct_bytes(**fields: Any) -> bytes:
    message = struct_pb2.Struct()
    message.update(fields)
    return message.SerializeToString()


def value_bytes(text: str) -> bytes:
    return struct_pb2.Value(string_value=text).SerializeToString()


# The task types the store tests' claims take: every type they create.
TYPES = ("echo", "sleep")


def new_task(
    type: str = "echo",
    *,
    payload: bytes | None = None,
    labels: dict[str, str] | None = None,
    max_attempts: int = 1,
    priority: int = 0,
    timeout: float | None = None,
    delay: float = 0.0,
    key: str | None = None,
    request: str = "first",
    tenant: str = "",
    reply_to: str | None = None,
    concurrency_key: str | None = None,
    depends_on: tuple[str, ...] = (),
    depends_on_requests: tuple[int, ...] = (),
    run_on_dependency_failure: bool = False,
) -> NewTask:
    """A validated submit request; `request` stands for the rest of the
    request, so a different one under the same key is a conflict."""
    fingerprint = hashlib.sha256(f"{type}/{request}".encode()).digest() if key else None
    return NewTask(
        type=type,
        payload=struct_bytes(n=1) if payload is None else payload,
        labels=labels,
        max_attempts=max_attempts,
        priority=priority,
        timeout=timeout,
        delay=delay,
        idempotency_key=key,
        fingerprint=fingerprint,
        tenant=tenant,
        reply_to=reply_to,
        concurrency_key=concurrency_key,
        depends_on=depends_on,
        depends_on_requests=depends_on_requests,
        run_on_dependency_failure=run_on_dependency_failure,
    )


class RecordingListener:
    """A StoreListener that remembers what it was told."""

    def __init__(self) -> None:
        self.work = 0
        self.cancels: list[str] = []
        self.lost: list[tuple[str, int]] = []

    def work_available(self, due_time: float | None = None) -> None:
        self.work += 1

    def cancel_requested(self, task_id: str) -> None:
        self.cancels.append(task_id)

    def attempt_lost(self, task_id: str, attempt: int) -> None:
        self.lost.append((task_id, attempt))


async def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + NOTICE_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {NOTICE_SECONDS} s: {what}")
        await asyncio.sleep(0.01)


async def next_change(subscription: TaskSubscription) -> TaskRecord:
    return await asyncio.wait_for(subscription.next(), NOTICE_SECONDS)


async def current(store: TaskStore, task_id: str, tenant: str = "") -> TaskRecord:
    record = await store.get(task_id, tenant)
    assert record is not None, f"task {task_id} is gone"
    return record


async def ids_of(store: TaskStore, query: ListQuery) -> list[str]:
    page, _ = await store.list_page(query)
    return [record.id for record in page]
