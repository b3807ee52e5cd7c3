"""Coalesced submits for the blocking `Client`: the waiting, with threads.

The thread whose submit finds nothing in flight sends it at once. When a
send ends, the sender takes the next wave from the queue and hands it to the
first caller in it, which sends it for all of them and hands on in turn, so
no caller sends more than its own wave.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from conveyor._coalesce import QueuedSubmit, SubmitQueue, send
from conveyor._errors import DeadlineExceeded
from conveyor._flows import Flow
from conveyor._types import Task, TaskSpec

__all__ = ["ThreadSubmitter"]


class _Waiting(QueuedSubmit):
    __slots__ = ("ready", "wave")

    def __init__(
        self, spec: TaskSpec, rpc_timeout: float | None, default_timeout: float, reply_to: str
    ) -> None:
        super().__init__(spec, rpc_timeout, default_timeout, time.monotonic(), reply_to)
        # Set when the outcome is in, or when this caller is to send `wave`.
        self.ready = threading.Event()
        self.wave: list[_Waiting] | None = None


class ThreadSubmitter:
    """Coalesces the submits of one `Client` from any number of threads."""

    def __init__(
        self, run: Callable[[Flow[Any]], Any], default_timeout: float, reply_to: str = ""
    ) -> None:
        self._run = run
        self._reply_to = reply_to
        self._timeout = default_timeout
        self._lock = threading.Lock()
        self._queue: SubmitQueue[_Waiting] = SubmitQueue()

    def submit(self, spec: TaskSpec, rpc_timeout: float | None) -> Task:
        submit = _Waiting(spec, rpc_timeout, self._timeout, self._reply_to)
        with self._lock:
            alone = self._queue.arrive(submit)
        if alone:
            self._send([submit])
            return submit.result()
        if not submit.ready.wait(max(0.0, submit.deadline - time.monotonic())):
            with self._lock:
                withdrawn = self._queue.withdraw(submit)
                chosen = submit.wave is not None
            if withdrawn:
                raise _expired(
                    "still queued behind other submits of this client; the task was not created",
                )
            if not chosen and not submit.ready.is_set():
                raise _expired(
                    "sent with other submits of this client and not yet "
                    "answered; the task may have been created",
                )
        if submit.wave is not None:
            self._send(submit.wave)
        return submit.result()

    def _send(self, wave: list[_Waiting]) -> None:
        try:
            self._run(send(wave))
        except BaseException as exc:
            for submit in wave:
                submit.fail(exc)
            raise
        finally:
            for submit in wave:
                submit.ready.set()
            self._hand_on()

    def _hand_on(self) -> None:
        with self._lock:
            wave = self._queue.next_wave()
            if wave:
                # Chosen under the lock, so a caller whose wait just ran out
                # knows whether it is to send.
                wave[0].wave = wave
                wave[0].ready.set()


def _expired(why: str) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"deadline exceeded: the submit was {why}", code=grpc.StatusCode.DEADLINE_EXCEEDED
    )
