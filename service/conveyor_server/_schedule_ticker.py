"""ScheduleTicker: fires the store's schedules, in every process.

Every server and worker process ticks about once a second: it reads every
schedule of the store and submits the fires that fell since the schedule's
`fired_until`. Each fire is an ordinary submit whose idempotency key is the
schedule id and the fire time, so when several processes (or one process
restarted) submit the same fire, the store keeps one task; `fired_until`
only saves them the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from conveyor.v1 import schedule_service_pb2 as spb
from conveyor_server._core import TaskCore
from conveyor_server._errors import ServiceError
from conveyor_server._fire_times import FireTimes, rfc3339, to_millis
from conveyor_server._schedule_spec import (
    FIRE_TIME_LABEL,
    MAX_CATCH_UP_FIRES,
    catch_up_seconds,
    fire_request,
    fire_times,
)
from conveyor_server._schedules import latest_runs, read_spec
from conveyor_server.stores import (
    IdempotencyConflict,
    QueueFull,
    ScheduleRecord,
    State,
    StoreUnavailable,
)

logger = logging.getLogger(__name__)

_UNFINISHED = (State.PENDING, State.RUNNING)


class ScheduleTicker:
    """Submits the due fires of every schedule of the store, every `every`
    seconds (never, when 0), as read on `clock`.

    >>> ticker = ScheduleTicker(core, every=1.0)
    >>> ticker.start()
    >>> ...
    >>> await ticker.stop()
    """

    def __init__(
        self, core: TaskCore, every: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._core = core
        self._store = core.store
        self._every = every
        self.clock = clock
        # Schedules whose last fire was refused (queue full, type no longer
        # served): said once, not every tick, until a fire goes through.
        self._refused: set[tuple[str, str]] = set()
        # Per schedule, its next fire time as last computed, and the
        # (fired_until, update_time) it was computed from: until then, or
        # until either changes, a tick reads nothing more of it (no spec to
        # parse, no cron to walk), however many schedules the store holds.
        self._next: dict[tuple[str, str], tuple[float, float, int]] = {}
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._every > 0 and self._loop is None:
            self._loop = asyncio.create_task(self._run(), name="conveyor-schedules")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except StoreUnavailable as exc:
                logger.warning("schedules not fired this time: %s", exc)
            except Exception:
                logger.exception("schedule tick failed")
            await asyncio.sleep(self._every)

    async def tick(self) -> None:
        """Fire what is due now on the clock, for every unpaused schedule."""
        now = to_millis(self.clock())
        schedules = await self._store.list_schedules(None)
        if len(self._next) > len(schedules):
            # Forget deleted schedules.
            live = {(r.tenant, r.id) for r in schedules}
            self._next = {slot: at for slot, at in self._next.items() if slot in live}
        for record in schedules:
            if record.paused or self._not_yet(record, now):
                continue
            try:
                await self._fire_due(record, now)
            except StoreUnavailable:
                raise
            except Exception:
                # One broken schedule does not hold up the others.
                logger.exception("schedule %r of tenant %r failed", record.id, record.tenant)

    async def _fire_due(self, record: ScheduleRecord, now: int) -> None:
        """Submit the fires in (fired_until, now] that are within the
        catch-up window (the latest 100), skip the older ones, and record
        how far the schedule is handled."""
        fired_until = to_millis(record.fired_until)
        if now <= fired_until:
            return
        spec = read_spec(record)
        times = fire_times(spec, record.create_time)
        # A fire one tick late is on time, whatever the window.
        oldest = now - to_millis(catch_up_seconds(spec) + self._every)
        due = times.latest(max(fired_until, oldest - 1), now, MAX_CATCH_UP_FIRES)
        if not due and not _missed(times, fired_until, oldest):
            following = times.following(now, 1)
            if following:
                self._next[(record.tenant, record.id)] = (
                    record.fired_until,
                    record.update_time,
                    following[0],
                )
            return
        handled = now
        for fire in due:
            if not await self._fire(record, spec, fire):
                # Tried again next tick, while within the catch-up window.
                handled = fire - 1
                break
        await self._store.advance_schedule(record.tenant, record.id, handled / 1000)

    def _not_yet(self, record: ScheduleRecord, now: int) -> bool:
        """Whether the schedule's next fire, as computed at an earlier tick
        from the same stored state, is still ahead."""
        known = self._next.get((record.tenant, record.id))
        if known is None:
            return False
        fired_until, update_time, following = known
        return (
            fired_until == record.fired_until
            and update_time == record.update_time
            and now < following
        )

    async def _fire(self, record: ScheduleRecord, spec: spb.Schedule, fire: int) -> bool:
        """Submit one fire, or skip it by the overlap policy; False when the
        submit is refused."""
        if spec.overlap_policy != spb.OVERLAP_POLICY_ALLOW and await self._overlaps(record, fire):
            logger.info(
                "schedule %r skips its fire of %s: its last task is unfinished",
                record.id,
                rfc3339(fire),
                extra={"tenant": record.tenant},
            )
            return True
        slot = (record.tenant, record.id)
        try:
            await self._core.submit(fire_request(record.id, spec, fire), record.tenant)
        except IdempotencyConflict:
            # Another process fired it with the template of before an update.
            pass
        except (QueueFull, ServiceError) as exc:
            if slot not in self._refused:
                self._refused.add(slot)
                logger.warning(
                    "schedule %r could not submit its fire of %s (tried again each tick "
                    "within its catch-up window): %s",
                    record.id,
                    rfc3339(fire),
                    exc,
                    extra={"tenant": record.tenant},
                )
            return False
        self._refused.discard(slot)
        return True

    async def _overlaps(self, record: ScheduleRecord, fire: int) -> bool:
        """Whether the schedule's latest task, another fire's, is unfinished."""
        latest = await latest_runs(self._core, record.tenant, record.id, 1)
        if not latest or latest[0].state not in _UNFINISHED:
            return False
        return (latest[0].labels or {}).get(FIRE_TIME_LABEL) != rfc3339(fire)


def _missed(times: FireTimes, fired_until: int, oldest: int) -> bool:
    """Whether a fire after `fired_until` is older than the catch-up window."""
    return fired_until < oldest - 1 and bool(times.latest(fired_until, oldest - 1, 1))
