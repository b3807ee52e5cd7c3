"""The asyncio client, on grpc.aio."""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio

from conveyor import _core
from conveyor._errors import (
    ConveyorError,
    DeadlineExceeded,
    WaitTimeout,
    translate_rpc_errors,
)
from conveyor._handle import AsyncTaskHandle
from conveyor._types import Task, TaskSpec, TaskState
from conveyor.v1 import task_service_pb2, task_service_pb2_grpc

_log = logging.getLogger(__name__)

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class AsyncClient:
    """An asyncio client of the Conveyor task service, with the API of `Client`.

    Example::

        from conveyor import AsyncClient

        async with AsyncClient("localhost:50051") as client:
            handle = await client.submit("sleep", {"seconds": 2})
            async for task in handle.watch():
                print(task.state.name, task.progress.percent)

    Create it inside a running event loop. `credentials` and `token` work as
    they do for `Client`.
    """

    def __init__(
        self,
        target: str = _core.DEFAULT_TARGET,
        *,
        timeout: float = _core.DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        # Checked before the channel opens, so a bad token leaks nothing.
        self._metadata = _core.call_metadata(metadata, token)
        channel_options = _core.channel_options(options)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=channel_options)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=channel_options)
        self._stub = task_service_pb2_grpc.TaskServiceStub(self._channel)
        self._target = target
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"AsyncClient({self._target!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; streams still open are cancelled."""
        await self._channel.close()

    # --- calls ----------------------------------------------------------------------

    async def submit(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109 - the task's own timeout
        delay: float | timedelta | None = None,
        priority: int = 0,
        rpc_timeout: float | None = None,
    ) -> AsyncTaskHandle:
        """Submit one task and return its handle at once (the task is PENDING)."""
        spec = TaskSpec(
            type=type,
            payload=payload,
            labels=labels,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
            timeout=timeout,
            delay=delay,
            priority=priority,
        )
        response = await self._unary(
            self._stub.SubmitTask,
            _core.submit_request(spec),
            retry=_core.submit_retry([spec]),
            rpc_timeout=rpc_timeout,
        )
        return AsyncTaskHandle(self, _core.task_from_proto(response.task))

    async def submit_batch(
        self, specs: Sequence[TaskSpec], *, rpc_timeout: float | None = None
    ) -> builtins.list[AsyncTaskHandle]:
        """Submit several tasks at once: all are accepted, or none (the error says why)."""
        response = await self._unary(
            self._stub.BatchSubmitTasks,
            _core.batch_request(specs),
            retry=_core.submit_retry(specs),
            rpc_timeout=rpc_timeout,
        )
        return [AsyncTaskHandle(self, _core.task_from_proto(task)) for task in response.tasks]

    async def get(self, id: str, *, rpc_timeout: float | None = None) -> Task:
        """The current snapshot of a task; raises `TaskNotFound` for an unknown id."""
        response = await self._unary(
            self._stub.GetTask,
            task_service_pb2.GetTaskRequest(id=id),
            retry=_core.DEFAULT_RETRY,
            rpc_timeout=rpc_timeout,
        )
        return _core.task_from_proto(response.task)

    def watch(self, id: str, *, since_version: int = 0) -> AsyncIterator[Task]:
        """Yield the task's snapshots: the current one, then one per change.

        The iterator ends after the terminal snapshot. The stream has no
        deadline; after UNAVAILABLE it reopens from the last version seen.
        """
        return self._watch(id, since_version, deadline=None)

    # `timeout` mirrors Client.wait; it becomes the watch stream's deadline.
    async def wait(self, id: str, *, timeout: float | None = None) -> Task:  # noqa: ASYNC109
        """Wait until the task is finished and return its terminal snapshot.

        Raises `WaitTimeout` when `timeout` seconds pass first.
        """
        deadline = _core.deadline_after(timeout, time.monotonic())
        last: Task | None = None
        try:
            # A task that is already finished costs one unary call, far
            # cheaper than opening a stream; otherwise watch it.
            last = await self.get(id, rpc_timeout=_core.remaining(deadline, time.monotonic()))
            if last.is_terminal:
                return last
            async with aclosing(self._watch(id, 0, deadline=deadline)) as stream:
                async for task in stream:
                    last = task
                    if task.is_terminal:
                        return task
        except DeadlineExceeded as exc:
            if timeout is None:
                raise
            raise WaitTimeout(id, timeout, last) from exc
        # The stream ended without a terminal snapshot (a resumed stream can).
        task = await self.get(id)
        if task.is_terminal:
            return task
        raise _core.watch_ended_early(id)

    def list(
        self,
        *,
        states: Sequence[TaskState] | None = None,
        type: str | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[Task]:
        """Yield tasks, newest first, fetching further pages as needed.

        Filters combine: any of `states`, this `type`, every one of `labels`.
        `limit` caps the number of tasks yielded.
        """
        size = _core.list_page_size(page_size, limit)
        return self._list(states, type, labels, size, limit)

    async def cancel(self, id: str, *, rpc_timeout: float | None = None) -> Task:
        """Cancel a task: a pending one at once, a running one by asking it to stop.

        Raises `FailedPrecondition` when the task already SUCCEEDED or FAILED.
        """
        response = await self._unary(
            self._stub.CancelTask,
            task_service_pb2.CancelTaskRequest(id=id),
            retry=_core.DEFAULT_RETRY,
            rpc_timeout=rpc_timeout,
        )
        return _core.task_from_proto(response.task)

    async def retry(self, id: str, *, rpc_timeout: float | None = None) -> Task:
        """Run a FAILED or CANCELLED task again, with a fresh set of attempts."""
        response = await self._unary(
            self._stub.RetryTask,
            task_service_pb2.RetryTaskRequest(id=id),
            retry=_core.NO_RETRY,
            rpc_timeout=rpc_timeout,
        )
        return _core.task_from_proto(response.task)

    # --- I/O ------------------------------------------------------------------------

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        *,
        retry: _core.RetryPolicy,
        rpc_timeout: float | None,
    ) -> _Response:
        timeout = self._timeout if rpc_timeout is None else rpc_timeout
        tries = 0
        while True:
            tries += 1
            try:
                with translate_rpc_errors():
                    return await method(request, timeout=timeout, metadata=self._metadata)
            except ConveyorError as exc:
                delay = retry.backoff(exc.code, tries)
                if delay is None:
                    raise
                _log.debug("retrying after %s (try %d) in %.2f s", exc.code.name, tries, delay)
                await asyncio.sleep(delay)

    async def _watch(
        self, id: str, since_version: int, *, deadline: float | None
    ) -> AsyncGenerator[Task, None]:
        version = since_version
        failures = 0
        while True:
            call = self._stub.WatchTask(
                task_service_pb2.WatchTaskRequest(id=id, since_version=version),
                timeout=_core.remaining(deadline, time.monotonic()),
                metadata=self._metadata,
            )
            try:
                with translate_rpc_errors():
                    async for response in call:
                        task = _core.task_from_proto(response.task)
                        version = task.version
                        failures = 0
                        yield task
                return
            except ConveyorError as exc:
                failures += 1
                delay = _core.DEFAULT_RETRY.backoff(exc.code, failures)
                if delay is None:
                    raise
                _log.debug("reopening the watch of %s from version %d", id, version)
                left = _core.remaining(deadline, time.monotonic())
                await asyncio.sleep(delay if left is None else min(delay, left))
            finally:
                call.cancel()

    async def _list(
        self,
        states: Sequence[TaskState] | None,
        type: str | None,
        labels: Mapping[str, str] | None,
        page_size: int,
        limit: int | None,
    ) -> AsyncIterator[Task]:
        yielded = 0
        token = ""
        while limit is None or yielded < limit:
            request = _core.list_request(
                states=states, type=type, labels=labels, page_size=page_size, page_token=token
            )
            response = await self._unary(
                self._stub.ListTasks, request, retry=_core.DEFAULT_RETRY, rpc_timeout=None
            )
            for message in response.tasks:
                if limit is not None and yielded >= limit:
                    return
                yielded += 1
                yield _core.task_from_proto(message)
            token = response.next_page_token
            if not token:
                return
