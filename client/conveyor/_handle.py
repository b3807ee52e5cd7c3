"""Handles on submitted tasks: follow one task without repeating its id."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from conveyor._errors import TaskFailed
from conveyor._types import JSONValue, Task, TaskState

if TYPE_CHECKING:
    from conveyor._async_client import AsyncClient
    from conveyor._client import Client


def _result_of(task: Task) -> JSONValue:
    if task.state is not TaskState.SUCCEEDED:
        raise TaskFailed(task)
    return task.result


class TaskHandle:
    """A submitted task. `task` is the snapshot that the submit returned.

    Example::

        handle = client.submit("sleep", {"seconds": 2})
        for task in handle.watch():
            print(task.state.name, task.progress.percent)
        print(handle.result())
    """

    __slots__ = ("__weakref__", "_client", "_final", "_submitted_at", "task")

    def __init__(self, client: Client, task: Task) -> None:
        self._client = client
        self.task = task
        # Set by the client's result stream: when the submit began, and
        # the terminal snapshot once it came.
        self._submitted_at = -math.inf
        self._final: Task | None = None

    @property
    def id(self) -> str:
        return self.task.id

    def __repr__(self) -> str:
        return f"TaskHandle(id={self.id!r}, type={self.task.type!r})"

    def get(self) -> Task:
        """The task's current snapshot."""
        return self._client.get(self.id)

    def watch(self, *, since_version: int = 0) -> Iterator[Task]:
        """Yield the task's snapshots until it is finished."""
        return self._client.watch(self.id, since_version=since_version)

    def wait(self, timeout: float | None = None) -> Task:
        """Block until the task is finished; raises `WaitTimeout` after `timeout` seconds."""
        return self._client._results.wait(self.id, timeout, self._final or self.task)

    def result(self, timeout: float | None = None) -> JSONValue:
        """Wait and return the task's result; raises `TaskFailed` if it FAILED or was CANCELLED."""
        return _result_of(self.wait(timeout))

    def cancel(self) -> Task:
        """Cancel the task."""
        return self._client.cancel(self.id)

    def retry(self) -> Task:
        """Run the FAILED or CANCELLED task again."""
        task = self._client.retry(self.id)
        self._final = None  # the end seen is not the new attempts' end
        return task


class AsyncTaskHandle:
    """A task submitted through `AsyncClient`; the same methods as `TaskHandle`, awaitable."""

    __slots__ = ("__weakref__", "_client", "_final", "_submitted_at", "task")

    def __init__(self, client: AsyncClient, task: Task) -> None:
        self._client = client
        self.task = task
        self._submitted_at = -math.inf
        self._final: Task | None = None

    @property
    def id(self) -> str:
        return self.task.id

    def __repr__(self) -> str:
        return f"AsyncTaskHandle(id={self.id!r}, type={self.task.type!r})"

    async def get(self) -> Task:
        """The task's current snapshot."""
        return await self._client.get(self.id)

    def watch(self, *, since_version: int = 0) -> AsyncIterator[Task]:
        """Yield the task's snapshots until it is finished."""
        return self._client.watch(self.id, since_version=since_version)

    # `timeout` mirrors TaskHandle.
    async def wait(self, timeout: float | None = None) -> Task:  # noqa: ASYNC109
        """Wait until the task is finished; raises `WaitTimeout` after `timeout` seconds."""
        return await self._client._results.wait(self.id, timeout, self._final or self.task)

    async def result(self, timeout: float | None = None) -> JSONValue:  # noqa: ASYNC109
        """Wait and return the task's result; raises `TaskFailed` if it FAILED or was CANCELLED."""
        return _result_of(await self.wait(timeout))

    async def cancel(self) -> Task:
        """Cancel the task."""
        return await self._client.cancel(self.id)

    async def retry(self) -> Task:
        """Run the FAILED or CANCELLED task again."""
        task = await self._client.retry(self.id)
        self._final = None  # the end seen is not the new attempts' end
        return task
