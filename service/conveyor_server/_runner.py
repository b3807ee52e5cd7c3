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
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor

from conveyor_server._attempts import (
    HandlerReturned,
    ProgressPosted,
    RetryPolicy,
    RunningAttempt,
    log_ended,
    log_started,
    run_handler,
)
from conveyor_server._context import Dependency, TaskContext
from conveyor_server._handler_loop import HandlerLoop
from conveyor_server._handlers import HandlerRegistry, Registration
from conveyor_server._observer import NULL_OBSERVER, TaskObserver
from conveyor_server._task_logs import AttemptLines, LinesPosted
from conveyor_server.stores import (
    ErrorCode,
    LogBatch,
    Outcome,
    Progress,
    StoreError,
    StoreListener,
    TaskFailure,
    TaskRecord,
    TaskStore,
)

logger = logging.getLogger(__name__)

# How long a handler waits for the store to tell of its dependencies.
DEPENDENCY_READ_SECONDS = 30.0

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


class TaskRunner(StoreListener):
    """Claims due tasks from its store and runs their handlers.

    The store is the runner's only source of news (`StoreListener`): it
    says when work is due, when a running task is asked to stop, and when
    an attempt was lost to another process.
    """

    def __init__(
        self,
        store: TaskStore,
        registry: HandlerRegistry,
        *,
        workers: int,
        retry_policy: RetryPolicy,
        stop_grace: float,
        max_result_bytes: int,
        async_tasks: int = 500,
        clock: Callable[[], float] = time.time,
        observer: TaskObserver = NULL_OBSERVER,
    ) -> None:
        self._store = store
        self._observer = observer
        self._registry = registry
        # A runner claims only the types it has handlers for; other workers
        # on a shared store run the rest.
        self._types = tuple(registry.types())
        # `async def` handlers run on a loop of their own, up to a capacity
        # of their own: claimed apart from the thread pool's types, so
        # coroutines waiting on I/O never hold back sync handlers.
        self._async_types = frozenset(r.type for r in registry if r.is_async)
        self._sync_types = tuple(t for t in self._types if t not in self._async_types)
        self._handler_loop = HandlerLoop(
            capacity=async_tasks, post=self._post, max_result_bytes=max_result_bytes
        )
        self._workers = workers
        self._retry = retry_policy
        self._stop_grace = stop_grace
        self._max_result_bytes = max_result_bytes
        self._clock = clock
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="conveyor-task"
        )
        # Each executor thread runs one long-lived loop over this queue: a
        # put is far cheaper than a Future per task.
        self._jobs: queue.SimpleQueue[tuple[RunningAttempt, Registration, bytes] | None] = (
            queue.SimpleQueue()
        )
        self._due_timer: asyncio.TimerHandle | None = None
        self._due_at: float | None = None
        self._running: dict[str, RunningAttempt] = {}
        # Threads occupied by a handler; can exceed len(_running) while a
        # handler that was given up on (timeout, cancel) has not returned.
        self._busy = 0
        self._from_threads: deque[ProgressPosted | LinesPosted | HandlerReturned] = deque()
        self._signalled = False
        self._local_outcomes: list[Outcome] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        # A runner with no workers (an API-only replica) never claims.
        self._claiming = workers > 0
        self._stopped = False
        self._grace_ended = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._store_down = False
        # Callers of until_idle, released by the first quiet round.
        self._idle_waiters: list[asyncio.Future[None]] = []

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

    # -- what the store tells us (StoreListener) -------------------------

    def work_available(self, due_time: float | None = None) -> None:
        # A task due after the dispatcher's next wake-up needs no wake-up
        # of its own.
        if not self._claiming or (
            due_time is not None and self._due_at is not None and due_time >= self._due_at
        ):
            return
        self._wake.set()

    def cancel_requested(self, task_id: str) -> None:
        """Ask the local handler of a task to stop; finish it as CANCELLED
        when it returns, or after the stop grace at the latest."""
        running = self._running.get(task_id)
        if running is None or running.finished:
            return
        running.ctx.request_stop("cancelled")
        self._arm_stop_timer(running, Outcome(running.task_id, running.claim, cancelled=True))

    async def drain(self, grace: float) -> int:
        """Stop claiming, let running tasks finish for `grace` seconds, then
        hand the rest back to the queue without spending an attempt.
        Returns how many were handed back."""
        self._claiming = False
        deadline = time.monotonic() + grace
        while self._running and not self._grace_ended and time.monotonic() < deadline:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        handed_back = 0
        now = self._clock()
        for running in list(self._running.values()):
            running.ctx.request_stop("shutdown")
            self._handler_loop.cancel(running)
            self._finish_locally(running)
            try:
                if await self._store.requeue(running.task_id, running.claim, now) is not None:
                    handed_back += 1
            except StoreError:
                logger.exception(
                    "could not hand task %s back to the queue",
                    running.task_id,
                    extra=running.log_fields(),
                )
        return handed_back

    async def until_idle(self) -> None:
        """Return after a round that changed nothing, with nothing running
        and nothing posted by handler threads: every task this runner can
        claim now has run (a task due later stays pending). What a test
        waits for instead of sleeping (conveyor.testing)."""
        waiter = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        self._wake.set()
        await waiter

    def end_grace(self) -> None:
        """Stop waiting for running tasks: `drain` hands them back now."""
        self._grace_ended = True
        self._idle.set()

    async def close(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._dispatcher is not None:
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._due_timer is not None:
            self._due_timer.cancel()
        for waiter in self._idle_waiters:
            waiter.cancel()
        self._release_workers()
        # Threads of handlers that ignore their stop request are not joined:
        # the process must be able to exit.
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self._handler_loop.close()

    # -- attempts lost to another process ---------------------------------

    def attempt_lost(self, task_id: str, claim: int) -> None:
        """Another process owns this task now: stop the local handler and
        report nothing (the store would refuse it anyway)."""
        running = self._running.get(task_id)
        if running is None or running.finished or running.claim != claim:
            return
        logger.warning(
            "task %s attempt %d lost its lease; stopping it here",
            task_id,
            running.attempt,
            extra=running.log_fields(),
        )
        running.ctx.request_stop("lost")
        self._handler_loop.cancel(running)
        self._finish_locally(running)
        if not self._running:
            self._idle.set()

    # -- the dispatcher -------------------------------------------------

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopped:
            self._wake.clear()
            try:
                changed = await self._round()
                if self._idle_waiters:
                    self._release_idle_waiters(changed)
                due = await self._store.next_due_time() if self._claiming else None
                if self._store_down:
                    self._store_down = False
                    logger.info("the task store is reachable again")
            except StoreError as exc:
                # An outage is a state, not a bug: said once, with no
                # traceback, however long it lasts.
                if not self._store_down:
                    self._store_down = True
                    logger.warning("the task store failed (%s); retrying every 1s", exc)
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

    def _release_idle_waiters(self, changed: bool) -> None:
        """Release until_idle's callers once a round changed nothing; after
        a round that did, run one more, since what it settled may have made
        more work due."""
        if self._running or self._from_threads or self._local_outcomes or self._wake.is_set():
            return  # another round is coming
        if changed:
            self._wake.set()
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _due(self) -> None:
        self._due_timer = None
        self._due_at = None
        self._wake.set()

    async def _round(self) -> bool:
        """Apply what handler threads posted (progress, how attempts ended)
        and claim due tasks for the free threads: outcomes and the claim go
        to the store in one call, so a busy runner costs one store round
        trip per round however many tasks ended and started in it. Returns
        whether the round changed anything."""
        events = self._from_threads
        self._signalled = False
        outcomes, self._local_outcomes = self._local_outcomes, []
        progress: dict[str, tuple[str, int, Progress]] = {}
        lines: list[LogBatch] = []
        now = self._clock()
        while events:
            event = events.popleft()
            if isinstance(event, ProgressPosted):
                running = event.running
                running.progress_posted = False
                if running.progress is not None and not running.finished:
                    progress[running.task_id] = (running.task_id, running.claim, running.progress)
            elif isinstance(event, LinesPosted):
                if (batch := event.lines.take()) is not None:
                    lines.append(batch)
            else:
                outcome = self._on_thread_done(event, now)
                if outcome is not None:
                    progress.pop(outcome.task_id, None)
                    outcomes.append(outcome)
        # Counted after the outcomes above freed their threads.
        claims = self._claims()
        ended: list[TaskRecord] = []
        claimed: list[TaskRecord] = []
        try:
            # Before the outcomes: an attempt's lines are stored once it ends.
            # Like progress, lines a failed write held are dropped.
            if lines:
                await self._store.append_logs(lines)
            if progress:
                await self._store.set_progress(list(progress.values()), now)
            if claims:
                free, types = claims[0]
                ended, claimed = await self._store.settle(outcomes, free, now, types)
            elif outcomes:
                ended = await self._store.complete(outcomes, now)
        except StoreError:
            # Outcomes are kept for the next round: a store that is briefly
            # unreachable must not lose how a task ended. Progress is only a
            # snapshot and may be dropped.
            self._local_outcomes[:0] = outcomes
            raise
        if ended:
            self._observer.attempts_ended(ended, now)
            log_ended(ended)
        if claimed:
            self._start_claimed(claimed, now)
        # Sync and async types each fill a capacity of their own; tasks
        # claimed above run even if this claim fails.
        for free, types in claims[1:]:
            if claimed := await self._store.claim(free, now, types):
                self._start_claimed(claimed, now)
        if not self._running:
            self._idle.set()
        return bool(outcomes or progress or claimed)

    def _start_claimed(self, claimed: list[TaskRecord], now: float) -> None:
        self._observer.tasks_started(claimed, now)
        log_started(claimed)
        for record in claimed:
            self._start(record)

    def _claims(self) -> list[tuple[int, Collection[str]]]:
        """How many tasks of which types to claim now: the free threads for
        sync handlers, the free places on the handler loop for async ones."""
        if not self._claiming:
            return []
        claims: list[tuple[int, Collection[str]]] = []
        if self._sync_types and self._workers > self._busy:
            claims.append((self._workers - self._busy, self._sync_types))
        if self._async_types and self._handler_loop.free > 0:
            claims.append((self._handler_loop.free, self._async_types))
        return claims

    def _start(self, record: TaskRecord) -> None:
        ctx = TaskContext(
            task_id=record.id,
            type=record.type,
            attempt=record.attempt,
            max_attempts=record.max_attempts,
            labels=record.labels or {},
            on_progress=self._progress_from_thread,
            tenant=record.tenant,
            depends_on=record.depends_on or (),
            read_dependencies=self._dependencies_from_thread,
            lines=AttemptLines(record.id, record.attempt, self._lines_from_thread, self._clock),
        )
        running = RunningAttempt(record, ctx)
        registration = self._registry.get(record.type)
        if registration is None:
            # Claims take only registered types; a registry changed under a
            # running runner is the one way here.
            running.finished = True
            self._local_outcomes.append(
                Outcome(
                    record.id,
                    record.claim,
                    failure=TaskFailure(
                        ErrorCode.UNKNOWN_TASK_TYPE,
                        f"no handler is registered for task type {record.type!r} on this server",
                    ),
                )
            )
            self._wake.set()
            return
        self._running[record.id] = running
        if record.type in self._async_types:
            self._handler_loop.start(running, registration, record.payload)
        else:
            self._busy += 1
            self._jobs.put((running, registration, record.payload))
        if record.timeout is not None:
            assert self._loop is not None
            running.timeout_timer = self._loop.call_later(record.timeout, self._on_timeout, running)

    def _on_thread_done(self, done: HandlerReturned, now: float) -> Outcome | None:
        running, result, failure = done.running, done.result, done.failure
        if not self._handler_loop.returned(running):
            self._busy -= 1
        for timer in (running.timeout_timer, running.stop_timer):
            if timer is not None:
                timer.cancel()
        if running.finished:
            return None
        self._finish_locally(running)
        reason = running.ctx.stop_reason
        if reason == "cancelled":
            return Outcome(running.task_id, running.claim, cancelled=True)
        if reason == "timeout":
            return self._timeout_outcome(running, now)
        if failure is None:
            return Outcome(running.task_id, running.claim, result=result, progress=running.progress)
        retry_at = None
        if failure.code == ErrorCode.HANDLER_ERROR:
            retry_at = self._retry.retry_at(running.attempt, running.max_attempts, now)
        # Logged once the store has it (_log_ended), with timeouts and
        # attempts finished without their handler.
        return Outcome(
            running.task_id,
            running.claim,
            failure=failure,
            retry_at=retry_at,
            progress=running.progress,
        )

    def _finish_locally(self, running: RunningAttempt) -> None:
        running.finished = True
        if self._running.get(running.task_id) is running:
            del self._running[running.task_id]

    def _timeout_outcome(self, running: RunningAttempt, now: float) -> Outcome:
        failure = TaskFailure(
            ErrorCode.TIMEOUT,
            f"attempt {running.attempt} exceeded its execution timeout",
        )
        retry_at = self._retry.retry_at(running.attempt, running.max_attempts, now)
        return Outcome(running.task_id, running.claim, failure=failure, retry_at=retry_at)

    def _on_timeout(self, running: RunningAttempt) -> None:
        if running.finished:
            return
        running.ctx.request_stop("timeout")
        # A coroutine is cancelled at its timeout; a thread cannot be.
        self._handler_loop.cancel(running)
        self._arm_stop_timer(running, self._timeout_outcome(running, self._clock()))

    def _arm_stop_timer(self, running: RunningAttempt, outcome: Outcome) -> None:
        if running.stop_timer is not None:
            return
        assert self._loop is not None
        running.stop_timer = self._loop.call_later(
            self._stop_grace, self._give_up, running, outcome
        )

    def _give_up(self, running: RunningAttempt, outcome: Outcome) -> None:
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
        self._handler_loop.cancel(running)
        self._finish_locally(running)
        self._local_outcomes.append(outcome)
        self._wake.set()

    # -- handler threads ------------------------------------------------

    def _post(self, event: ProgressPosted | LinesPosted | HandlerReturned) -> None:
        self._from_threads.append(event)
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
            self._post(ProgressPosted(running))

    def _lines_from_thread(self, lines: AttemptLines) -> None:
        self._post(LinesPosted(lines))

    def _dependencies_from_thread(self, ctx: TaskContext) -> list[Dependency]:
        """A handler asks for its dependencies: read on the event loop, like
        every store call, while the handler's thread waits."""
        assert self._loop is not None
        reading = asyncio.run_coroutine_threadsafe(
            self._read_dependencies(ctx.depends_on, ctx.tenant), self._loop
        )
        return reading.result(DEPENDENCY_READ_SECONDS)

    async def _read_dependencies(self, ids: tuple[str, ...], tenant: str) -> list[Dependency]:
        records = await asyncio.gather(*(self._store.get(task_id, tenant) for task_id in ids))
        return [
            Dependency.of(task_id, record) for task_id, record in zip(ids, records, strict=True)
        ]

    def _worker_loop(self) -> None:
        get = self._jobs.get
        post = self._post
        limit = self._max_result_bytes
        while (job := get()) is not None:
            run_handler(*job, post, limit)

    def _release_workers(self) -> None:
        for _ in range(self._workers):
            self._jobs.put(None)
