"""The leases of the attempts a RedisStore's process claimed: renewed while
they run, reaped when their process died."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from conveyor_server.stores._errors import StoreUnavailable
from conveyor_server.stores._protocol import StoreListener
from conveyor_server.stores._records import TaskRecord

logger = logging.getLogger("conveyor_server.stores.redis.store")

POLL_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class LeaseReport:
    """What `RedisStore.renew` found out about the attempts it renewed."""

    # Tasks whose claim this process no longer holds (the lease lapsed and
    # the task was re-queued or finished elsewhere).
    lost: list[str] = field(default_factory=list)
    # Attempts whose task has a cancel request.
    cancel_requested: list[str] = field(default_factory=list)


# -- the store ------------------------------------------------------------------


class _LeasedStore(Protocol):
    """What the keeper needs of its store."""

    @property
    def lease_seconds(self) -> float: ...

    @property
    def where(self) -> str: ...

    async def renew(self, leases: Sequence[tuple[str, int]], now: float) -> LeaseReport: ...

    async def reap(self, now: float) -> int: ...

    async def work_is_due(self) -> bool: ...


class LeaseKeeper:
    """Keeps the claims of one process alive once its store is attached to
    a runner: renews the leases of the attempts it holds every third of a
    lease, reaps attempts of dead processes about every lease (jittered, so
    replicas do not all reap at once), and every poll interval tells the
    listener if work is due, in case a word of new work was lost. Tells the
    listener of cancel requests and of attempts lost to another process."""

    def __init__(self, store: _LeasedStore, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        # Task id -> claim number of the attempts this process claimed and
        # has not reported the end of: their leases are renewed while they run.
        self._held: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self, listener: StoreListener) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._keep_up(listener), name="conveyor-redis-leases")

    def hold(self, records: Iterable[TaskRecord]) -> None:
        """These attempts were claimed here."""
        for record in records:
            self._held[record.id] = record.claim

    def release(self, task_id: str, claim: int) -> None:
        """The end of a held attempt was reported: its lease needs no renewal."""
        if self._held.get(task_id) == claim:
            del self._held[task_id]

    async def close(self, wait_seconds: float) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=wait_seconds)
            self._task = None

    async def _keep_up(self, listener: StoreListener) -> None:
        interval = min(self._store.lease_seconds / 3, POLL_INTERVAL_SECONDS)
        # A claim comes with a whole lease: the first renewal is due a third
        # of a lease later.
        next_renew = time.monotonic() + self._store.lease_seconds / 3
        next_reap = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                if time.monotonic() >= next_renew and self._held:
                    next_renew = time.monotonic() + self._store.lease_seconds / 3
                    held = list(self._held.items())
                    report = await self._store.renew(held, self._clock())
                    claims = dict(held)
                    for task_id in report.lost:
                        if self._held.get(task_id) == claims[task_id]:
                            del self._held[task_id]
                        listener.attempt_lost(task_id, claims[task_id])
                    for task_id in report.cancel_requested:
                        listener.cancel_requested(task_id)
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + self._store.lease_seconds * random.uniform(
                        0.5, 1.0
                    )
                    if await self._store.reap(self._clock()):
                        listener.work_available()
                if await self._store.work_is_due():
                    listener.work_available()
            except StoreUnavailable:
                logger.warning("could not renew leases; %s is unavailable", self._store.where)
            except Exception:
                logger.exception("lease upkeep failed")
