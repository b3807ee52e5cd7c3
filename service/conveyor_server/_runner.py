"""TaskRunner: claims due tasks and runs their handlers on a thread pool.

One dispatcher coroutine owns every state change the runner makes. Handler
threads never touch the store: they post events (progress, completion) to a
deque and wake the dispatcher, which applies them in batches. That keeps the
event loop free of handler work and the store free of threads, and it folds
a burst of completions into one store call.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import queue
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from conveyor_server._context import TaskCancelled, TaskContext
from conveyor_server._convert import ResultNotJSON, payload_to_python, result_to_bytes
from conveyor_server._handlers import HandlerRegistry, InvalidPayload, NonRetryableError
from conveyor_server._logging import task_fields
from conveyor_server._observer import NULL_OBSERVER, TaskObserver
from conveyor_server.stores import (
    ErrorCode,
    Outcome,
    Progress,
    State,
    StoreError,
    TaskFailure,
    TaskRecord,
    TaskStore,
)

logger = logging.getLogger(__name__)

# Worker loops block on their queue, so ThreadPoolExecutor's own exit hook,
# which joins its threads, would wait forever for a runner nobody closed.
# concurrent.futures stops its threads through threading's exit hooks; ours
# is registered after it and so runs first, releasing every live runner's
# loops. (threading._register_atexit is what concurrent.futures itself uses.)
_live_runners: weakref.WeakSet[TaskRunner] = weakref.WeakSet()


def _release_all_workers() -> None:
    for runner in list(_live_runners):
        runner._release_workers()


getattr(threading, "_register_atexit", atexit.register)(_release_all_workers)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff: float
    backoff_max: float

    def retry_at(self, attempt: int, max_attempts: int, now: float) -> float | None:
        """When to run the next attempt after `attempt` failed, or None."""
        if attempt >= max_attempts:
            return None
        ceiling = min(self.backoff_max, self.backoff * 2.0 ** (attempt - 1))
        # Equal jitter: at least half the delay, so retries neither stampede
        # nor collapse to zero.
        return now + ceiling * random.uniform(0.5, 1.0)


class _Running:
    """One attempt in flight on this runner."""

    __slots__ = (
        "attempt",
        "ctx",
        "finished",
        "max_attempts",
        "progress",
        "progress_posted",
        "stop_timer",
        "task_id",
        "tenant",
        "timeout_timer",
    )

    def __init__(self, record: TaskRecord, ctx: TaskContext) -> None:
        self.task_id = record.id
        self.tenant = record.tenant
        self.attempt = record.attempt
        self.max_attempts = record.max_attempts
        self.ctx = ctx
        # Set once the store has been told how the attempt ended, perhaps
        # before the handler's thread returns (timeout, cancel, shutdown).
        self.finished = False
        self.progress: Progress | None = None
        self.progress_posted = False
        self.timeout_timer: asyncio.TimerHandle | None = None
        self.stop_timer: asyncio.TimerHandle | None = None

    def log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "task_id": self.task_id,
            "task_type": self.ctx.type,
            "attempt": self.attempt,
        }
        if self.tenant:
            fields["tenant"] = self.tenant
        return fields


def _log_started(records: Sequence[TaskRecord]) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        for record in records:
            logger.debug(
                "task %s attempt %d started", record.id, record.attempt, extra=task_fields(record)
            )


def _log_ended(records: Sequence[TaskRecord]) -> None:
    """One line per attempt the store recorded the end of: DEBUG for a
    success (thousands a second would flood INFO), INFO otherwise."""
    debug = logger.isEnabledFor(logging.DEBUG)
    for record in records:
        state = record.state
        if state is State.SUCCEEDED:
            if debug:
                logger.debug(
                    "task %s attempt %d succeeded",
                    record.id,
                    record.attempt,
                    extra=task_fields(record),
                )
        elif state is State.CANCELLED:
            logger.info(
                "task %s cancelled in attempt %d",
                record.id,
                record.attempt,
                extra=task_fields(record),
            )
        elif state is State.FAILED or state is State.PENDING:
            error = record.error
            logger.info(
                "task %s attempt %d failed: %s: %s%s",
                record.id,
                record.attempt,
                error.code if error is not None else "",
                error.message if error is not None else "",
                "; will retry" if state is State.PENDING else "",
                extra=task_fields(record),
            )


# What a handler thread reports: (running, result bytes, failure)
_Done = tuple[_Running, bytes | None, TaskFailure | None]


class TaskRunner:
    def __init__(
        self,
        store: TaskStore,
        registry: HandlerRegistry,
        *,
        workers: int,
        retry_policy: RetryPolicy,
        stop_grace: float,
        clock: Callable[[], float] = time.time,
        observer: TaskObserver = NULL_OBSERVER,
    ) -> None:
        self._store = store
        self._observer = observer
        self._registry = registry
        self._workers = workers
        self._retry = retry_policy
        self._stop_grace = stop_grace
        self._clock = clock
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="conveyor-task"
        )
        # Each executor thread runs one long-lived loop over this queue: a
        # put is far cheaper than a Future per task.
        self._jobs: queue.SimpleQueue[tuple[_Running, Any, bytes] | None] = queue.SimpleQueue()
        self._due_timer: asyncio.TimerHandle | None = None
        self._due_at: float | None = None
        self._running: dict[str, _Running] = {}
        # Threads occupied by a handler; can exceed len(_running) while a
        # handler that was given up on (timeout, cancel) has not returned.
        self._busy = 0
        self._from_threads: deque[tuple[str, Any]] = deque()
        self._signalled = False
        self._local_outcomes: list[Outcome] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        # A runner with no workers (an API-only replica) never claims.
        self._claiming = workers > 0
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._leases: asyncio.Task[None] | None = None

    @property
    def running_count(self) -> int:
        return len(self._running)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        _live_runners.add(self)
        self._store.attach(self)
        for _ in range(self._workers):
            self._executor.submit(self._worker_loop)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="conveyor-dispatcher")
        if self._store.lease_seconds is not None:
            self._leases = asyncio.create_task(self._keep_leases(), name="conveyor-leases")

    # -- what the store tells us (StoreListener) -------------------------

    def work_available(self) -> None:
        if self._claiming:
            self._wake.set()

    def cancel_requested(self, task_id: str) -> None:
        self.cancel_running(task_id)

    def notify(self, due: float | None = None) -> None:
        """New work is due at `due` (now when None); called on the loop after
        submit and retry. A task due after the dispatcher's next wake-up
        needs no wake-up of its own."""
        if due is not None and self._due_at is not None and due >= self._due_at:
            return
        self._wake.set()

    def cancel_running(self, task_id: str) -> None:
        """Ask the local handler of a task to stop; finish it as CANCELLED
        when it returns, or after the stop grace at the latest."""
        running = self._running.get(task_id)
        if running is None or running.finished:
            return
        running.ctx.request_stop("cancelled")
        self._arm_stop_timer(running, Outcome(running.task_id, running.attempt, cancelled=True))

    async def drain(self, grace: float) -> int:
        """Stop claiming, let running tasks finish for `grace` seconds, then
        hand the rest back to the queue without spending an attempt.
        Returns how many were handed back."""
        self._claiming = False
        deadline = time.monotonic() + grace
        while self._running and time.monotonic() < deadline:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        handed_back = 0
        now = self._clock()
        for running in list(self._running.values()):
            running.ctx.request_stop("shutdown")
            self._finish_locally(running)
            try:
                if await self._store.requeue(running.task_id, running.attempt, now) is not None:
                    handed_back += 1
            except StoreError:
                logger.exception(
                    "could not hand task %s back to the queue",
                    running.task_id,
                    extra=running.log_fields(),
                )
        return handed_back

    async def close(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._leases is not None:
            self._leases.cancel()
            await asyncio.gather(self._leases, return_exceptions=True)
        if self._dispatcher is not None:
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._due_timer is not None:
            self._due_timer.cancel()
        self._release_workers()
        # Threads of handlers that ignore their stop request are not joined:
        # the process must be able to exit.
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- leases of a shared store ---------------------------------------

    async def _keep_leases(self) -> None:
        """Renew the leases of running attempts every third of a lease, and
        reap attempts of dead processes every lease."""
        lease = self._store.lease_seconds
        assert lease is not None
        interval = lease / 3
        next_reap = 0.0
        while True:
            await asyncio.sleep(interval)
            try:
                held = [(r.task_id, r.attempt) for r in self._running.values()]
                if held:
                    report = await self._store.renew(held, self._clock())
                    for task_id in report.lost:
                        self._lose(task_id)
                    for task_id in report.cancel_requested:
                        self.cancel_running(task_id)
                if time.monotonic() >= next_reap:
                    # Jittered, so replicas do not all reap at once.
                    next_reap = time.monotonic() + lease * random.uniform(0.5, 1.0)
                    if await self._store.reap(self._clock()):
                        self._wake.set()
            except StoreError:
                logger.warning("could not renew leases; the store is unavailable")
            except Exception:
                logger.exception("lease upkeep failed")

    def _lose(self, task_id: str) -> None:
        """Another process owns this task now: stop the local handler and
        report nothing (the store would refuse it anyway)."""
        running = self._running.get(task_id)
        if running is None or running.finished:
            return
        logger.warning(
            "task %s attempt %d lost its lease; stopping it here",
            task_id,
            running.attempt,
            extra=running.log_fields(),
        )
        running.ctx.request_stop("lost")
        self._finish_locally(running)
        if not self._running:
            self._idle.set()

    # -- the dispatcher -------------------------------------------------

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopped:
            self._wake.clear()
            try:
                await self._apply_events()
                if self._claiming:
                    free = self._workers - self._busy
                    if free > 0:
                        now = self._clock()
                        claimed = await self._store.claim(free, now)
                        if claimed:
                            self._observer.tasks_started(claimed, now)
                            _log_started(claimed)
                        for record in claimed:
                            self._start(record)
                due = await self._store.next_due_time() if self._claiming else None
                poll = self._store.poll_interval
                if poll is not None and self._claiming:
                    # A shared store: look again soon even with no news, in
                    # case a notification from another process was lost.
                    due = (
                        min(due, self._clock() + poll) if due is not None else self._clock() + poll
                    )
            except StoreError:
                logger.exception("store call failed; retrying in 1s")
                due = self._clock() + 1.0
            except Exception:
                logger.exception("dispatcher step failed; retrying in 1s")
                due = self._clock() + 1.0
            if due != self._due_at:
                # The timer is kept while the earliest due time stays the same.
                if self._due_timer is not None:
                    self._due_timer.cancel()
                    self._due_timer = None
                self._due_at = due
                if due is not None:
                    self._due_timer = loop.call_at(
                        loop.time() + max(0.0, due - self._clock()), self._due
                    )
            if self._wake.is_set() or self._stopped:
                continue
            await self._wake.wait()

    def _due(self) -> None:
        self._due_timer = None
        self._due_at = None
        self._wake.set()

    async def _apply_events(self) -> None:
        events = self._from_threads
        self._signalled = False
        if not events and not self._local_outcomes:
            return
        outcomes, self._local_outcomes = self._local_outcomes, []
        progress: dict[str, tuple[str, int, Progress]] = {}
        now = self._clock()
        while events:
            kind, item = events.popleft()
            if kind == "progress":
                running: _Running = item
                running.progress_posted = False
                if running.progress is not None and not running.finished:
                    progress[running.task_id] = (running.task_id, running.attempt, running.progress)
            else:
                outcome = self._on_thread_done(item, now)
                if outcome is not None:
                    progress.pop(outcome.task_id, None)
                    outcomes.append(outcome)
        ended: list[TaskRecord] = []
        try:
            if progress:
                await self._store.set_progress(list(progress.values()), now)
            if outcomes:
                ended = await self._store.complete(outcomes, now)
        except StoreError:
            # Outcomes are kept for the next round: a store that is briefly
            # unreachable must not lose how a task ended. Progress is only a
            # snapshot and may be dropped.
            self._local_outcomes[:0] = outcomes
            raise
        if ended:
            self._observer.attempts_ended(ended, now)
            _log_ended(ended)
        if not self._running:
            self._idle.set()

    def _start(self, record: TaskRecord) -> None:
        ctx = TaskContext(
            task_id=record.id,
            type=record.type,
            attempt=record.attempt,
            max_attempts=record.max_attempts,
            labels=record.labels or {},
            on_progress=self._progress_from_thread,
        )
        running = _Running(record, ctx)
        registration = self._registry.get(record.type)
        if registration is None:
            # Possible when a store outlives a deployment that knew the type.
            running.finished = True
            self._local_outcomes.append(
                Outcome(
                    record.id,
                    record.attempt,
                    failure=TaskFailure(
                        ErrorCode.UNKNOWN_TASK_TYPE,
                        f"no handler is registered for task type {record.type!r} on this server",
                    ),
                )
            )
            self._wake.set()
            return
        self._running[record.id] = running
        self._busy += 1
        self._jobs.put((running, registration.handler, record.payload))
        if record.timeout is not None:
            assert self._loop is not None
            running.timeout_timer = self._loop.call_later(record.timeout, self._on_timeout, running)

    def _on_thread_done(self, done: _Done, now: float) -> Outcome | None:
        running, result, failure = done
        self._busy -= 1
        for timer in (running.timeout_timer, running.stop_timer):
            if timer is not None:
                timer.cancel()
        if running.finished:
            return None
        self._finish_locally(running)
        reason = running.ctx.stop_reason
        if reason == "cancelled":
            return Outcome(running.task_id, running.attempt, cancelled=True)
        if reason == "timeout":
            return self._timeout_outcome(running, now)
        if failure is None:
            return Outcome(
                running.task_id, running.attempt, result=result, progress=running.progress
            )
        retry_at = None
        if failure.code == ErrorCode.HANDLER_ERROR:
            retry_at = self._retry.retry_at(running.attempt, running.max_attempts, now)
        # Logged once the store has it (_log_ended), with timeouts and
        # attempts finished without their handler.
        return Outcome(
            running.task_id,
            running.attempt,
            failure=failure,
            retry_at=retry_at,
            progress=running.progress,
        )

    def _finish_locally(self, running: _Running) -> None:
        running.finished = True
        if self._running.get(running.task_id) is running:
            del self._running[running.task_id]

    def _timeout_outcome(self, running: _Running, now: float) -> Outcome:
        failure = TaskFailure(
            ErrorCode.TIMEOUT,
            f"attempt {running.attempt} exceeded its execution timeout",
        )
        retry_at = self._retry.retry_at(running.attempt, running.max_attempts, now)
        return Outcome(running.task_id, running.attempt, failure=failure, retry_at=retry_at)

    def _on_timeout(self, running: _Running) -> None:
        if running.finished:
            return
        running.ctx.request_stop("timeout")
        self._arm_stop_timer(running, self._timeout_outcome(running, self._clock()))

    def _arm_stop_timer(self, running: _Running, outcome: Outcome) -> None:
        if running.stop_timer is not None:
            return
        assert self._loop is not None
        running.stop_timer = self._loop.call_later(
            self._stop_grace, self._give_up, running, outcome
        )

    def _give_up(self, running: _Running, outcome: Outcome) -> None:
        """The handler did not stop within the grace: finish without it."""
        if running.finished:
            return
        logger.warning(
            "task %s attempt %d did not stop within %gs; finishing it without its handler",
            running.task_id,
            running.attempt,
            self._stop_grace,
            extra=running.log_fields(),
        )
        self._finish_locally(running)
        self._local_outcomes.append(outcome)
        self._wake.set()

    # -- handler threads ------------------------------------------------

    def _post(self, kind: str, item: Any) -> None:
        self._from_threads.append((kind, item))
        if not self._signalled:
            self._signalled = True
            assert self._loop is not None
            # RuntimeError: the loop is closed, the server is gone.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)

    def _progress_from_thread(self, ctx: TaskContext, progress: Progress) -> None:
        running = self._running.get(ctx.task_id)
        if running is None or running.ctx is not ctx:
            return
        running.progress = progress
        if not running.progress_posted:
            running.progress_posted = True
            self._post("progress", running)

    def _worker_loop(self) -> None:
        get = self._jobs.get
        run = self._run
        while (job := get()) is not None:
            run(*job)

    def _release_workers(self) -> None:
        for _ in range(self._workers):
            self._jobs.put(None)

    def _run(self, running: _Running, handler: Any, payload: bytes) -> None:
        result: bytes | None = None
        failure: TaskFailure | None = None
        try:
            value = handler(running.ctx, payload_to_python(payload))
            result = result_to_bytes(value)
        except InvalidPayload as exc:
            failure = TaskFailure(ErrorCode.INVALID_PAYLOAD, str(exc), type(exc).__name__)
        except NonRetryableError as exc:
            failure = TaskFailure(ErrorCode.NON_RETRYABLE, str(exc), type(exc).__name__)
        except TaskCancelled as exc:
            failure = TaskFailure(ErrorCode.INTERRUPTED, str(exc), type(exc).__name__)
        except ResultNotJSON as exc:
            failure = TaskFailure(ErrorCode.INVALID_RESULT, str(exc), type(exc).__name__)
        except Exception as exc:
            running.ctx.logger.info("handler raised %s", type(exc).__name__, exc_info=True)
            message = str(exc) or type(exc).__name__
            failure = TaskFailure(ErrorCode.HANDLER_ERROR, message[:4096], type(exc).__name__)
        finally:
            self._post("done", (running, result, failure))
