"""The shared result stream of `Client`: one daemon reader thread per client,
started at a wait and ended a few seconds after the last or by `close()`, drives the `ResultBook` of
`_results`; waiters block on queues of their own. A waiter whose task the open stream does not cover
cancels the call from its own thread, and the reader opens the next one. The stream stays open a
few seconds after the last wait ends, so that the next wait finds its task followed already."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import grpc

from conveyor import _core
from conveyor._errors import ConveyorError, Unavailable, WaitTimeout, from_rpc_error
from conveyor._results import IDLE_SECONDS, Followed, ResultBook, StreamUnsupported, cursor_header
from conveyor._types import Task
from conveyor.v1 import task_service_pb2


class _Call(Protocol):
    def __iter__(self) -> Iterator[Any]: ...

    def cancel(self) -> bool: ...

    def initial_metadata(self) -> Any: ...


OpenStream = Callable[[task_service_pb2.WatchTasksRequest], _Call]
# The per-task wait, for a service without WatchTasks: (id, timeout) -> Task.
Fallback = Callable[[str, float | None], Task]
# The task's current snapshot, or None when it cannot be read.
Snapshot = Callable[[str], Task | None]


# (position in the caller's list, terminal snapshot or None, error or None)
_Outcome = tuple[int, Task | None, ConveyorError | None]


class _Waiter:
    """One task a caller waits on: its end goes to the caller's queue."""

    __slots__ = ("_queue", "position")

    def __init__(self, outcomes: queue.SimpleQueue[_Outcome], position: int) -> None:
        self._queue = outcomes
        self.position = position

    def resolve(self, task: Task) -> None:
        self._queue.put((self.position, task, None))

    def fail(self, error: ConveyorError) -> None:
        self._queue.put((self.position, None, error))


class ResultStreamThread:
    """Waits of one `Client`, all served by one WatchTasks stream."""

    def __init__(
        self, open_stream: OpenStream, fallback: Fallback, snapshot: Snapshot, reply_to: str
    ) -> None:
        self._open_stream = open_stream
        self._fallback = fallback
        self._snapshot = snapshot
        self._lock = threading.Lock()
        # The reader sleeps on it while nobody waits.
        self._wake = threading.Condition(self._lock)
        self._book: ResultBook[_Waiter] = ResultBook(reply_to)
        self._call: _Call | None = None
        self._reader: threading.Thread | None = None
        # Closes the stream once nobody waited for IDLE_SECONDS.
        self._idle_timer: threading.Timer | None = None

    @property
    def reply_to(self) -> str:
        return self._book.reply_to

    @contextlib.contextmanager
    def submitting(self) -> Iterator[list[Followed]]:
        """Around a submit: the handles it hands out go in the list this
        yields, for the stream to follow them from the submit's start."""
        with self._lock:
            self._book.submitting()
        started = time.monotonic()
        handles: list[Followed] = []
        try:
            yield handles
        finally:
            with self._lock:
                self._book.submitted(handles, started)

    def retried(self, task: Task) -> None:
        """The client retried the task: its ends from before are stale."""
        with self._lock:
            self._book.retried(task.id, task.version)

    def wait(self, task_id: str, timeout: float | None, known: Task | None = None) -> Task:
        [task] = self.wait_all([(task_id, known)], timeout)
        return task

    def wait_all(
        self, items: Iterable[tuple[str, Task | None]], timeout: float | None
    ) -> list[Task]:
        found: dict[int, Task] = {}
        listed = list(items)
        for position, task in self._outcomes(listed, timeout):
            found[position] = task
        return [found[position] for position in range(len(listed))]

    def as_completed(
        self, items: Iterable[tuple[str, Task | None]], timeout: float | None
    ) -> Iterator[Task]:
        for _, task in self._outcomes(list(items), timeout):
            yield task

    def _outcomes(
        self, listed: list[tuple[str, Task | None]], timeout: float | None
    ) -> Iterator[tuple[int, Task]]:
        """(position, terminal snapshot) of each task as it finishes; the
        first error or timeout is raised at once."""
        deadline = _core.deadline_after(timeout, time.monotonic())
        outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        waiters = []
        left = set()
        for i, (task_id, known) in enumerate(listed):
            if known is not None and known.is_terminal:
                # Its end came with the handle, or on the stream since.
                outcomes.put((i, known, None))
            else:
                waiters.append((task_id, _Waiter(outcomes, i)))
            left.add(i)
        if waiters:
            self._add(waiters)
        try:
            while left:
                try:
                    position, task, error = outcomes.get(
                        timeout=_core.remaining(deadline, time.monotonic())
                    )
                except queue.Empty:
                    task_id, known = listed[min(left)]
                    raise self._timed_out(task_id, timeout, known) from None
                left.discard(position)
                yield position, self._outcome(listed[position][0], task, error, deadline)
        finally:
            if waiters:
                self._discard(waiters)

    def close(self) -> None:
        """Fail every waiter and end the stream."""
        with self._lock:
            self._book.close()
            if self._call is not None:
                self._call.cancel()
            self._wake.notify()

    # --- the waiters' side ------------------------------------------------------------

    def _add(self, waiters: Iterable[tuple[str, _Waiter]]) -> None:
        with self._lock:
            if self._book.unsupported:
                for _, waiter in waiters:
                    waiter.fail(StreamUnsupported("", code=grpc.StatusCode.UNIMPLEMENTED))
                return
            reopen = False
            for task_id, waiter in waiters:
                reopen = self._book.add(task_id, waiter) or reopen
            if reopen and self._call is not None:
                self._call.cancel()
            if self._reader is None:
                self._reader = threading.Thread(
                    target=self._read, name="conveyor-results", daemon=True
                )
                self._reader.start()
            elif self._call is None:
                self._wake.notify()

    def _discard(self, waiters: Iterable[tuple[str, _Waiter]]) -> None:
        with self._lock:
            for task_id, waiter in waiters:
                self._book.discard(task_id, waiter)
            self._note_idle()

    def _note_idle(self) -> None:
        if self._book.became_idle(time.monotonic()) and self._idle_timer is None:
            self._arm_idle_timer(IDLE_SECONDS)

    def _arm_idle_timer(self, seconds: float) -> None:
        timer = self._idle_timer = threading.Timer(seconds, self._idle)
        timer.daemon = True
        timer.start()

    def _idle(self) -> None:
        """Close the stream once nobody waited for IDLE_SECONDS (one timer
        at a time, armed again while waits come and go)."""
        with self._lock:
            self._idle_timer = None
            left = self._book.idle_left(time.monotonic())
            if left is None or self._call is None:
                return
            if left > 0:
                self._arm_idle_timer(left)
                return
            self._book.close_idle()
            self._call.cancel()

    def _outcome(
        self,
        task_id: str,
        task: Task | None,
        error: ConveyorError | None,
        deadline: float | None,
    ) -> Task:
        if isinstance(error, StreamUnsupported):
            return self._fallback(task_id, _core.remaining(deadline, time.monotonic()))
        if error is not None:
            raise error
        assert task is not None
        return task

    def _timed_out(self, task_id: str, timeout: float | None, known: Task | None) -> WaitTimeout:
        assert timeout is not None
        return WaitTimeout(task_id, timeout, known or self._snapshot(task_id))

    # --- the reader thread ------------------------------------------------------------

    def _read(self) -> None:
        book = self._book
        while True:
            with self._lock:
                # Between waits the stream is closed and the thread idles
                # here a while: starting a thread per wait would cost more
                # than the wait's stream.
                while (request := book.next_request(book.keeping(time.monotonic()))) is None:
                    self._call = None
                    idle = book.closed or not self._wake.wait(IDLE_SECONDS)
                    if idle and (book.closed or not book.waiting):
                        self._reader = None
                        return
                call = self._call = self._open_stream(request)
                if not book.waiting and self._idle_timer is None:
                    self._arm_idle_timer(IDLE_SECONDS)
            error: ConveyorError = _ended_early()
            try:
                cursor = cursor_header(call.initial_metadata())
                with self._lock:
                    reopen = book.following(cursor, time.monotonic())
                if reopen:
                    call.cancel()
                for message in call:
                    with self._lock:
                        reopen = book.received(message)
                        self._note_idle()
                    if reopen:
                        call.cancel()
                        break
                else:
                    # A stream without a deadline ends only on failure.
                    raise _ended_early()
                continue
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
            except ConveyorError as exc:
                error = exc
            with self._lock:
                delay = book.failed(error)
            if delay:
                time.sleep(delay)


def _ended_early() -> Unavailable:
    return Unavailable("the result stream ended", code=grpc.StatusCode.UNAVAILABLE)
