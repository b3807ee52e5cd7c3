"""The shared result stream's decisions, written once for both clients.

A client serves every wait (`wait`, `result`, `wait_all`, `as_completed`)
from one `WatchTasks` stream, filtered to the terminal states. The client
names itself with a `reply_to` that every submit carries, and the stream
follows the tasks with that name: a task submitted while the stream follows
needs no change of the stream at all. Other tasks (an id from elsewhere, or
one submitted while no stream followed) are listed in `ids` (at most 1,000;
the rest queue for room) and caught up on by their snapshot
(`current_ids`); listing a new one reopens the stream from its cursor.
`ResultBook` keeps the bookkeeping and does no I/O: `_results_sync` drives
it with a reader thread, `_results_async` with a reader task, and both ask
it the same questions in the same places:

    request = book.next_request(keep)  # None: nobody waits, close the stream
    reopen = book.following(cursor, t) # the headers came; True: reopen
    reopen = book.received(message)    # True: reopen with next_request()
    delay = book.failed(error)         # seconds before reopening, or None: stop
    book.add(task_id, waiter)          # True: reopen the open stream to list it
    book.submitting() / book.submitted(handles, started_at)
"""

from __future__ import annotations

import copy
import itertools
import math
import time
import weakref
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
# The WatchTasks response header with the cursor the stream follows from.
CURSOR_HEADER = "conveyor-cursor"
# The stream serves waits that may last long: it rides out an outage of
# about 20 s (a server restart; backoff capped at 2 s) before failing its
# waiters, who have deadlines of their own.
_RETRY = _core.RetryPolicy(max_tries=15)
_NEW_RETRY = _core.RetryPolicy(max_tries=15, codes=_core.NEW_WATCH_RETRY.codes)
_MAX_BACKOFF = 2.0
# Ids past the limit join the stream in groups of at least this many (or
# all that queue), not one reopen per task that finishes.
_JOIN_AT_ONCE = MAX_IDS // 10
# Ends of own tasks kept for submits still under way, at most.
_MAX_ORPHANS = 10_000
# How long the stream stays open after the last wait, for the next one.
IDLE_SECONDS = 5.0


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


class Followed(Protocol):
    """What the book keeps on a handle of a task the client submitted."""

    _submitted_at: float
    _final: Task | None

    @property
    def task(self) -> Task: ...


class ResultBook(Generic[W]):
    """Who waits on which task, and what the shared stream asks for next.

    The stream follows every task the client submitted by its `reply_to`,
    with no id listed, once it is known to follow (its response headers came)
    since before the submit began; other tasks (an id from elsewhere, a task
    submitted while no stream followed) are listed in `ids`, at most 1,000,
    and caught up on by their snapshot (`current_ids`). A task that ends
    while nobody waits leaves its terminal snapshot on its handle.
    """

    def __init__(self, reply_to: str) -> None:
        self.reply_to = reply_to
        # Every waited id, in the order first waited on, with its waiters.
        self._waiters: dict[str, list[W]] = {}
        # Handles of unfinished tasks submitted with this reply_to.
        self._own: weakref.WeakValueDictionary[str, Followed] = weakref.WeakValueDictionary()
        # Ends of own tasks whose submit is still under way (no handle yet).
        self._orphans: dict[str, Task] = {}
        self._evicted_at = -math.inf
        self._submitting = 0
        # Since when the stream follows every change (None: it does not).
        self._following_since: float | None = None
        # The ids the open stream (or the one being opened) lists.
        self._listed: set[str] = set()
        # Waited ids it neither lists nor follows by reply_to: the next
        # stream lists them.
        self._queued: set[str] = set()
        # Listed ids whose current snapshot the stream has not yet been seen
        # to send: they go in current_ids whenever the stream is opened.
        self._unconfirmed: set[str] = set()
        self._cursor = ""
        # Tasks this client retried: the version the retry made. An end of
        # an older version, still on its way, is the end of the attempts
        # before the retry.
        self._floors: dict[str, int] = {}
        self._open = False
        self._reopen = False
        # Waiters came while the stream was opening that it does not list.
        self._relist = False
        self._messages = 0  # of the open stream
        self._failures = 0  # in a row, with no message between
        # When the last wait ended (None: one is under way).
        self._idle_since: float | None = None
        self.unsupported = False
        self.closed = False

    # --- the submitters' side ---------------------------------------------------------

    def retried(self, task_id: str, version: int) -> None:
        """The client queued the task again (RetryTask), making `version`:
        its ends of older versions are ignored from now on."""
        floors = self._floors
        if len(floors) >= _MAX_ORPHANS and task_id not in floors:
            del floors[next(iter(floors))]
        floors[task_id] = version

    def submitting(self) -> None:
        """A submit begins: ends of tasks not yet handed out are kept for it."""
        self._submitting += 1

    def submitted(self, handles: Iterable[Followed], started_at: float) -> None:
        """A submit that began at `started_at` ended with these handles (none
        when it failed)."""
        self._submitting -= 1
        for handle in handles:
            task = handle.task
            # Another reply_to (an earlier task's idempotency key) or none (an
            # older service): the stream does not follow it by name.
            if task.raw.reply_to != self.reply_to or not self.reply_to:
                continue
            handle._submitted_at = started_at
            final = self._orphans.pop(task.id, None)
            if final is not None:
                handle._final = final
            elif not task.is_terminal:
                self._own[task.id] = handle
        if not self._submitting:
            self._orphans.clear()

    # --- the callers' side ------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        return bool(self._waiters)

    def add(self, task_id: str, waiter: W) -> bool:
        """Note a waiter. True when the open stream must be reopened to
        list its task (the driver cancels the current call)."""
        if self.closed:
            waiter.fail(closed_error())
            return False
        self._idle_since = None
        waiters = self._waiters.get(task_id)
        if waiters is not None:
            waiters.append(waiter)
            return False
        self._waiters[task_id] = [waiter]
        if self._covered(task_id) or task_id in self._listed:
            return False
        self._queued.add(task_id)
        if len(self._listed) >= MAX_IDS:
            return False
        if not self._open or self._following_since is None:
            # No stream, or one still opening: the next request lists it,
            # or the opening one is reopened once its headers come (see
            # `following`), from the cursor they carry.
            self._relist = self._open
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
            self._queued.discard(task_id)
            if task_id not in self._own:
                self._unconfirmed.discard(task_id)

    # --- the stream's idle spell -----------------------------------------------------

    def became_idle(self, now: float) -> bool:
        """True when nobody waits since just now: the driver arms a timer
        for `idle_left`."""
        if self._waiters or self._idle_since is not None:
            return False
        self._idle_since = now
        return True

    def idle_left(self, now: float) -> float | None:
        """Seconds until the stream is to close (<= 0: now), or None when
        someone waits."""
        since = self._idle_since
        return None if since is None else since + IDLE_SECONDS - now

    def keeping(self, now: float) -> bool:
        """Whether the stream stays open with nobody waiting."""
        left = self.idle_left(now)
        return left is not None and left > 0

    def close(self) -> None:
        """Fail every waiter: the client is closing."""
        self.closed = True
        self._fail(list(self._waiters), lambda _: closed_error())

    def _covered(self, task_id: str) -> bool:
        """Whether the stream follows the task by its reply_to, with no gap
        since before its submit began (and no end of it dropped since)."""
        handle = self._own.get(task_id)
        since = self._following_since
        if handle is None or since is None:
            return False
        return since <= handle._submitted_at and self._evicted_at < handle._submitted_at

    # --- the reader's side ------------------------------------------------------------

    def next_request(self, keep: bool = False) -> task_service_pb2.WatchTasksRequest | None:
        """The request of the stream to open now, or None when nobody waits
        and `keep` is not asked (the reader closes the stream)."""
        self._open = False
        self._reopen = False
        self._relist = False
        if self.closed or not (self._waiters or keep):
            self._following_since = None
            self._cursor = ""
            self._listed.clear()
            self._queued.clear()
            self._unconfirmed.clear()
            return None
        if not self._cursor:
            # A fresh stream: nothing is followed until its headers come.
            self._following_since = None
        ids: list[str] = []
        listed: set[str] = set()
        # Waited ids first, then the client's other unfinished tasks that
        # the stream does not follow by name: a reopen catches up on all.
        for task_id in itertools.chain(self._waiters, list(self._own.keys())):
            if len(ids) == MAX_IDS:
                break
            if task_id not in listed and not self._covered(task_id):
                ids.append(task_id)
                listed.add(task_id)
        if self._cursor:
            self._unconfirmed = (self._unconfirmed | (listed - self._listed)) & listed
        else:
            self._unconfirmed = set(listed)
        self._listed = listed
        self._queued = {
            task_id
            for task_id in self._waiters
            if task_id not in listed and not self._covered(task_id)
        }
        self._open = True
        self._messages = 0
        return task_service_pb2.WatchTasksRequest(
            ids=ids,
            states=_TERMINAL,
            cursor=self._cursor,
            current_ids=sorted(self._unconfirmed),
            reply_to=self.reply_to,
        )

    def following(self, cursor: str, now: float) -> bool:
        """The open stream's headers came: it follows every change from
        `cursor` on. True when waiters came meanwhile that it does not list
        (the driver reopens it, from that cursor)."""
        if not self._cursor:
            self._cursor = cursor
        if self._following_since is None and self._cursor:
            self._following_since = now
        relist, self._relist = self._relist, False
        if not relist or not self._cursor:
            return False
        self._reopen = any(not self._covered(task_id) for task_id in self._queued)
        return self._reopen

    def received(self, message: task_service_pb2.WatchTasksResponse) -> bool:
        """Take a message of the open stream; True when the stream must be
        reopened now (a reset, or room for queued ids)."""
        self._messages += 1
        self._failures = 0
        if message.reset:
            # Changes may have been missed: catch up on every id afresh.
            self._cursor = ""
            self._following_since = None
            return True
        self._cursor = message.cursor
        if not message.current:
            # Every snapshot asked for comes before the first change.
            self._unconfirmed.clear()
        task_id = message.task.id
        self._unconfirmed.discard(task_id)
        floor = self._floors.get(task_id)
        if floor is not None:
            if message.task.version < floor:
                return self._room_for_queued()
            del self._floors[task_id]
        # Its end is read: waited on again, it needs its snapshot again.
        self._listed.discard(task_id)
        handle = self._own.pop(task_id, None)
        waiters = self._waiters.pop(task_id, None)
        if handle is None and waiters is None:
            if self._submitting and message.task.reply_to == self.reply_to:
                # Its submit may not have returned yet: kept for its handle.
                self._keep_orphan(_core.task_from_proto(message.task))
        else:
            task = _core.task_from_proto(message.task)
            if handle is not None:
                handle._final = task
            self._queued.discard(task_id)
            for waiter in waiters or ():
                waiter.resolve(task)
        return self._room_for_queued()

    def _room_for_queued(self) -> bool:
        """Whether queued ids should join the stream now: once there is room
        for a good share of them, and only once this stream's snapshots are
        in (a reopen would read again those not yet sent). Asked after every
        message: the last one may be a change of a task already resolved by
        its snapshot."""
        queued = len(self._queued)
        if not queued or self._unconfirmed:
            return False
        return MAX_IDS - len(self._listed) >= min(queued, _JOIN_AT_ONCE)

    def close_idle(self) -> None:
        """The driver closes the stream: nobody waited for a while."""
        self._reopen = True

    def _keep_orphan(self, task: Task) -> None:
        orphans = self._orphans
        if len(orphans) >= _MAX_ORPHANS:
            del orphans[next(iter(orphans))]
            self._evicted_at = time.monotonic()
        orphans[task.id] = task

    def failed(self, error: ConveyorError) -> float | None:
        """The open stream failed: seconds to wait before reopening it, or
        None when the reader stops (the waiters concerned have been failed)."""
        if self._reopen or self.closed:
            # The driver cancelled the call to reopen it, or to close.
            return 0.0
        if error.code is grpc.StatusCode.UNIMPLEMENTED:
            self.unsupported = True
            self._following_since = None
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
            self._following_since = None
            self._cursor = ""
            self._fail(list(self._waiters), lambda _: copy.copy(error))
            return None
        return min(delay, _MAX_BACKOFF)

    def _fail(self, task_ids: Iterable[str], error: Callable[[str], ConveyorError]) -> None:
        """Fail the waiters of these ids, each with an error of its own."""
        for task_id in task_ids:
            self._unconfirmed.discard(task_id)
            self._queued.discard(task_id)
            for waiter in self._waiters.pop(task_id, ()):
                waiter.fail(error(task_id))


def cursor_header(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The cursor a WatchTasks stream's headers say it follows from ("" from
    a service that does not send it)."""
    for key, value in metadata or ():
        if key == CURSOR_HEADER:
            return str(value)
    return ""


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
    _final: Task | None

    @property
    def task(self) -> Task: ...


def targets(items: Iterable[str | _Handle]) -> list[tuple[str, Task | None]]:
    """(id, snapshot known so far) of each handle or id, in order."""
    found: list[tuple[str, Task | None]] = []
    for item in items:
        if isinstance(item, str):
            found.append((item, None))
        else:
            found.append((item.task.id, item._final or item.task))
    return found
