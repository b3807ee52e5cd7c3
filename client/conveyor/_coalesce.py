"""Coalesced submits: the bookkeeping and the flows both clients share.

While one submit of a client is in flight, the submits that arrive queue up
here; when it returns, the queue goes out as one wave: one
`BatchSubmitTasks(partial_success=true)` call whose results are handed back
request by request. No timer: a lone submit goes out at once, as a plain
`SubmitTask`, so coalescing adds no latency. Each wave holds at most
`MAX_WAVE_REQUESTS` requests and `MAX_WAVE_BYTES` of serialized requests;
what does not fit waits for the next one.

`SubmitQueue` only keeps the books (who is queued, whether a call is in
flight, what the next wave holds); the drivers in `_coalesce_threads` and
`_coalesce_asyncio` do the waiting, with a lock or on the event loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

from conveyor import _core, _flows, _trace
from conveyor._errors import ConveyorError, from_status
from conveyor._types import Task, TaskSpec
from conveyor.v1 import task_service_pb2

__all__ = [
    "MAX_WAVE_BYTES",
    "MAX_WAVE_REQUESTS",
    "QueuedSubmit",
    "SubmitQueue",
    "send",
    "send_alone",
    "send_wave",
]

# The server takes at most 1,000 requests per BatchSubmitTasks.
MAX_WAVE_REQUESTS = 1000
# Well below the channel's 8 MiB message limit, whatever the payloads.
MAX_WAVE_BYTES = 2 * 1024 * 1024


class QueuedSubmit:
    """One caller's submit: its request, its deadline and, once answered,
    its outcome. A driver adds what it waits with."""

    __slots__ = ("deadline", "keyed", "outcome", "request", "rpc_timeout", "size")

    def __init__(
        self,
        spec: TaskSpec,
        rpc_timeout: float | None,
        default_timeout: float,
        now: float,
        reply_to: str = "",
    ) -> None:
        # Built in the caller, so a bad payload raises there, before queuing.
        self.request = _core.submit_request(spec, reply_to)
        # The caller's trace context goes in its own request: a wave carries
        # submits of several callers, and so of several traces.
        traceparent = _trace.current_traceparent()
        if traceparent is not None:
            self.request.traceparent = traceparent
        self.keyed = bool(spec.idempotency_key)
        self.rpc_timeout = rpc_timeout
        self.deadline = now + (default_timeout if rpc_timeout is None else rpc_timeout)
        self.size = self.request.ByteSize()
        self.outcome: Task | ConveyorError | None = None

    def result(self) -> Task:
        """The task, or the submit's error raised."""
        outcome = self.outcome
        if isinstance(outcome, Task):
            return outcome
        if outcome is None:
            raise RuntimeError("the submit has no outcome yet")
        raise outcome

    def fail(self, exc: BaseException) -> None:
        """Give an unanswered submit the error its wave's sender met."""
        if self.outcome is None:
            self.outcome = ConveyorError(f"the submit failed with the others sent with it: {exc!r}")


_S = TypeVar("_S", bound=QueuedSubmit)


class SubmitQueue(Generic[_S]):
    """Whether a submit is in flight, and the submits waiting behind it.

    Not thread-safe by itself: the thread driver holds a lock around every
    call, the asyncio driver runs on one loop.
    """

    def __init__(
        self, max_requests: int = MAX_WAVE_REQUESTS, max_bytes: int = MAX_WAVE_BYTES
    ) -> None:
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._waiting: deque[_S] = deque()
        self._busy = False

    def arrive(self, submit: _S) -> bool:
        """True when nothing is in flight: the caller sends its submit alone,
        now. Otherwise the submit is queued for a later wave."""
        if not self._busy:
            self._busy = True
            return True
        self._waiting.append(submit)
        return False

    def next_wave(self) -> list[_S]:
        """Called when a send ends: the submits to send next, oldest first
        and within the bounds (the first always goes, whatever its size).
        Empty when nobody waits, and then nothing is in flight any more."""
        wave: list[_S] = []
        size = 0
        waiting = self._waiting
        while waiting and len(wave) < self._max_requests:
            size += waiting[0].size
            if wave and size > self._max_bytes:
                break
            wave.append(waiting.popleft())
        if not wave:
            self._busy = False
        return wave

    def withdraw(self, submit: _S) -> bool:
        """Take a submit that is still queued out of the queue (its caller
        gave up); False when it was already sent, or is being sent."""
        try:
            self._waiting.remove(submit)
        except ValueError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._waiting)


# --- the flows: what is sent, and the retry policy of a lone submit per request ----


def send_alone(submit: QueuedSubmit) -> _flows.Flow[Task]:
    """A submit sent on its own: a plain SubmitTask, retried after
    UNAVAILABLE only with an idempotency key, as `Client.submit` always did."""
    retry = _core.DEFAULT_RETRY if submit.keyed else _core.NO_RETRY
    response = yield from _flows._unary("SubmitTask", submit.request, retry, submit.rpc_timeout)
    return _core.task_from_proto(response.task)


def send(wave: Sequence[QueuedSubmit]) -> _flows.Flow[None]:
    """Send a wave and set each submit's outcome: a wave of one as a plain
    SubmitTask (`send_alone`), a larger one with `send_wave`."""
    if len(wave) > 1:
        yield from send_wave(wave)
        return
    [submit] = wave
    try:
        submit.outcome = yield from send_alone(submit)
    except ConveyorError as exc:
        submit.outcome = exc


def send_wave(wave: Sequence[QueuedSubmit]) -> _flows.Flow[None]:
    """Send a wave as BatchSubmitTasks(partial_success) and set each submit's
    outcome: its task, or the error SubmitTask would have raised for it.

    The retry policy of a lone submit holds per request: after UNAVAILABLE
    (of the whole call, or of one request), the submits with an idempotency
    key are sent again, and the others fail. The call's deadline is the
    latest of the wave's, so no submit fails before its own deadline would
    have failed it.
    """
    pending = list(wave)
    tries = 0
    while True:
        tries += 1
        request = task_service_pb2.BatchSubmitTasksRequest(
            requests=[submit.request for submit in pending], partial_success=True
        )
        rpc_timeout = max(submit.deadline for submit in pending) - time.monotonic()
        try:
            response = yield _flows.Call("BatchSubmitTasks", request, max(rpc_timeout, 0.0))
        except ConveyorError as exc:
            for submit in pending:
                submit.outcome = _copy(exc)
        else:
            _answer(pending, response)
        delay: float | None = None
        again: list[QueuedSubmit] = []
        for submit in pending:
            outcome = submit.outcome
            if isinstance(outcome, ConveyorError) and submit.keyed:
                backoff = _core.DEFAULT_RETRY.backoff(outcome.code, tries)
                if backoff is not None:
                    delay = backoff
                    again.append(submit)
        if delay is None:
            return
        for submit in again:
            submit.outcome = None
        pending = again
        yield _flows.Sleep(delay)


def _answer(
    pending: Sequence[QueuedSubmit], response: task_service_pb2.BatchSubmitTasksResponse
) -> None:
    results = response.results
    if len(results) == len(pending):
        for submit, result in zip(pending, results, strict=True):
            if result.HasField("task"):
                submit.outcome = _core.task_from_proto(result.task)
            else:
                submit.outcome = from_status(result.error)
        return
    # A server that predates partial_success answered all or nothing.
    if len(response.tasks) == len(pending):
        for submit, task in zip(pending, response.tasks, strict=True):
            submit.outcome = _core.task_from_proto(task)
        return
    error = ConveyorError(
        f"the service answered {len(results)} results for {len(pending)} requests"
    )
    for submit in pending:
        submit.outcome = _copy(error)


def _copy(exc: ConveyorError) -> ConveyorError:
    """An exception of its own for each caller: one raised in several
    threads would collect all their tracebacks."""
    return type(exc)(exc.message, code=exc.code, details=exc.details)
