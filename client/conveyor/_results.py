"""The shared result stream's decisions, written once for both clients.

A client serves every wait (`wait`, `result`, `wait_all`, `as_completed`)
from one `WatchTasks` stream over the ids its callers wait on, filtered to
the terminal states. `ResultBook` keeps the bookkeeping: who waits on what,
which ids the open stream covers (at most 1,000; the rest queue for room),
the cursor to resume from, and which ids still need their current snapshot
(`current_ids`). It does no I/O: `_results_sync` drives it with a reader
thread, `_results_async` with a reader task, and both ask it the same
questions in the same places:

    request = book.next_request()      # None: nobody waits, close the stream
    reopen = book.received(message)    # True: reopen with next_request()
    delay = book.failed(error)         # seconds before reopening, or None: stop
    book.add(task_id, waiter)          # True: reopen the open stream to cover it
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

import grpc
from google.rpc import error_details_pb2

from conveyor import _core
from conveyor._errors import ConveyorError, TaskNotFound
from conveyor._types import Task
from conveyor.v1 import task_pb2, task_service_pb2

# The server's limit on the ids of one WatchTasks stream.
MAX_IDS = 1000
_TERMINAL = (
    task_pb2.TASK_STATE_SUCCEEDED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELLED,
)
_TASK_RESOURCE = "conveyor.v1.Task"
# The stream serves waits that may last long: it rides out an outage of
# about 20 s (a server restart; backoff capped at 2 s) before failing its
# waiters, who have deadlines of their own.
_RETRY = _core.RetryPolicy(max_tries=15)
_NEW_RETRY = _core.RetryPolicy(max_tries=15, codes=_core.NEW_WATCH_RETRY.codes)
_MAX_BACKOFF = 2.0
# Ids past the limit join the stream in groups of at least this many (or
# all that queue), not one reopen per task that finishes.
_JOIN_AT_ONCE = MAX_IDS // 10


class Waiter(Protocol):
    """One caller's interest in one task; told once, of its end or of an error."""

    def resolve(self, task: Task) -> None: ...

    def fail(self, error: ConveyorError) -> None: ...


W = TypeVar("W", bound=Waiter)
_F = TypeVar("_F", bound=Callable[..., Any])

# The docstrings of the clients' waiting methods, the same on both.
WAIT_DOC = """Wait until the task is finished and return its terminal snapshot.

    Raises `WaitTimeout` when `timeout` seconds pass first; its `task` is the
    last snapshot seen. Every wait of a client shares one `WatchTasks` stream
    over the tasks waited on, opened at the first wait and closed when
    nobody waits; it resumes by itself after the service was UNAVAILABLE.
    """
WAIT_ALL_DOC = """Wait until every task (handles or ids) is finished; their terminal
    snapshots, in the order given.

    A failed or cancelled task is returned, not raised. Raises `WaitTimeout`
    for the first task still unfinished when `timeout` seconds pass, and
    `TaskNotFound` for an unknown id.
    """
AS_COMPLETED_DOC = """Yield the terminal snapshot of each task (handles or ids) as it
    finishes, those already finished first.

    Raises `WaitTimeout` for an unfinished task when `timeout` seconds pass
    (counted from the call) before every task finished, as
    `concurrent.futures.as_completed` does, and `TaskNotFound` for an
    unknown id.
    """


def documented(doc: str) -> Callable[[_F], _F]:
    """Give a client method one of the docstrings above."""

    def decorate(method: _F) -> _F:
        method.__doc__ = doc
        return method

    return decorate


class StreamUnsupported(ConveyorError):
    """The service has no WatchTasks (UNIMPLEMENTED): waits fall back to a
    stream per task."""


def closed_error() -> ConveyorError:
    return ConveyorError(
        "the client was closed while waiting for the task", code=grpc.StatusCode.CANCELLED
    )


class ResultBook(Generic[W]):
    """Who waits on which task, and what the shared stream asks for next."""

    def __init__(self) -> None:
        # Every waited id, in the order first waited on, with its waiters.
        self._waiters: dict[str, list[W]] = {}
        # The ids the open stream (or the one being opened) covers.
        self._streamed: set[str] = set()
        # Ids whose current snapshot the stream has not yet been seen to
        # send: they go in current_ids whenever the stream is opened.
        self._unconfirmed: set[str] = set()
        self._cursor = ""
        self._open = False
        self._reopen = False
        self._messages = 0  # of the open stream
        self._failures = 0  # in a row, with no message between
        self.unsupported = False
        self.closed = False

    # --- the callers' side ------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        return bool(self._waiters)

    def add(self, task_id: str, waiter: W) -> bool:
        """Note a waiter. True when the open stream must be reopened to
        cover its task (the driver cancels the current call)."""
        if self.closed:
            waiter.fail(closed_error())
            return False
        waiters = self._waiters.get(task_id)
        if waiters is not None:
            waiters.append(waiter)
            return False
        self._waiters[task_id] = [waiter]
        if not self._open or task_id in self._streamed or len(self._streamed) >= MAX_IDS:
            return False
        # A reopen already asked for covers it too.
        reopen, self._reopen = not self._reopen, True
        return reopen

    def discard(self, task_id: str, waiter: W) -> None:
        """Forget a waiter that stopped waiting (a timeout, a cancelled
        coroutine). Its task stays on the open stream until the next reopen."""
        waiters = self._waiters.get(task_id)
        if waiters is None:
            return
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            del self._waiters[task_id]
            self._unconfirmed.discard(task_id)

    def close(self) -> None:
        """Fail every waiter: the client is closing."""
        self.closed = True
        self._fail(list(self._waiters), lambda _: closed_error())

    # --- the reader's side ------------------------------------------------------------

    def next_request(self) -> task_service_pb2.WatchTasksRequest | None:
        """The request of the stream to open now, or None when nobody waits
        (the reader closes the stream and ends)."""
        self._open = False
        self._reopen = False
        if self.closed or not self._waiters:
            return None
        ids: list[str] = []
        for task_id in self._waiters:
            if len(ids) == MAX_IDS:
                break
            ids.append(task_id)
        # Ids the cursor did not follow before catch up with their snapshot.
        self._unconfirmed.update(task_id for task_id in ids if task_id not in self._streamed)
        self._streamed = set(ids)
        if not self._cursor:
            self._unconfirmed = set(ids)
        self._unconfirmed &= self._streamed
        self._open = True
        self._messages = 0
        if len(self._unconfirmed) == len(ids):
            # Every id catches up by its snapshot: replaying the changes
            # since the cursor would only cost the server.
            self._cursor = ""
        return task_service_pb2.WatchTasksRequest(
            ids=ids,
            states=_TERMINAL,
            cursor=self._cursor,
            current_ids=sorted(self._unconfirmed),
        )

    def received(self, message: task_service_pb2.WatchTasksResponse) -> bool:
        """Take a message of the open stream; True when the stream must be
        reopened now (a reset, or room for queued ids)."""
        self._messages += 1
        self._failures = 0
        if message.reset:
            # Changes may have been missed: catch up on every id afresh.
            self._cursor = ""
            return True
        self._cursor = message.cursor
        if not message.current:
            # Every snapshot asked for comes before the first change.
            self._unconfirmed.clear()
        task_id = message.task.id
        self._unconfirmed.discard(task_id)
        # Its end is read: waited on again, it needs its snapshot again.
        self._streamed.discard(task_id)
        waiters = self._waiters.pop(task_id, None)
        if waiters is None:
            return False
        task = _core.task_from_proto(message.task)
        for waiter in waiters:
            waiter.resolve(task)
        if not self._waiters:
            return True
        # Queued ids join once there is room for a good share of them, and
        # only once this stream's snapshots are in (a reopen would read
        # again those not yet sent).
        if self._unconfirmed:
            return False
        covered = len(self._streamed & self._waiters.keys())
        queued = len(self._waiters) - covered
        return queued > 0 and MAX_IDS - covered >= min(queued, _JOIN_AT_ONCE)

    def failed(self, error: ConveyorError) -> float | None:
        """The open stream failed: seconds to wait before reopening it, or
        None when the reader stops (the waiters concerned have been failed)."""
        if self._reopen or self.closed:
            # The driver cancelled the call to reopen it, or to close.
            return 0.0
        if error.code is grpc.StatusCode.UNIMPLEMENTED:
            self.unsupported = True
            self._fail(
                list(self._waiters), lambda _: StreamUnsupported(error.message, code=error.code)
            )
            return None
        if error.code is grpc.StatusCode.NOT_FOUND:
            missing = _missing_ids(error.details) & self._waiters.keys()
            if missing:
                self._fail(sorted(missing), lambda task_id: _not_found(task_id, error))
                return 0.0
        self._failures += 1
        # A stream shed before its first message is as safe to open again.
        policy = _NEW_RETRY if self._messages == 0 else _RETRY
        delay = policy.backoff(error.code, self._failures)
        if delay is None:
            self._failures = 0
            self._fail(list(self._waiters), lambda _: copy.copy(error))
            return None
        return min(delay, _MAX_BACKOFF)

    def _fail(self, task_ids: Iterable[str], error: Callable[[str], ConveyorError]) -> None:
        """Fail the waiters of these ids, each with an error of its own."""
        for task_id in task_ids:
            self._unconfirmed.discard(task_id)
            for waiter in self._waiters.pop(task_id, ()):
                waiter.fail(error(task_id))


def _not_found(task_id: str, error: ConveyorError) -> TaskNotFound:
    return TaskNotFound(f"task {task_id} not found", code=error.code, details=error.details)


def _missing_ids(details: Iterable[object]) -> set[str]:
    """The tasks a NOT_FOUND names in its google.rpc.ResourceInfo details."""
    return {
        detail.resource_name
        for detail in details
        if isinstance(detail, error_details_pb2.ResourceInfo)
        and detail.resource_type == _TASK_RESOURCE
    }


class _Handle(Protocol):
    @property
    def task(self) -> Task: ...


def targets(items: Iterable[str | _Handle]) -> list[tuple[str, Task | None]]:
    """(id, snapshot known so far) of each handle or id, in order."""
    found: list[tuple[str, Task | None]] = []
    for item in items:
        if isinstance(item, str):
            found.append((item, None))
        else:
            found.append((item.task.id, item.task))
    return found
