"""The schedules of a RedisStore, shared by every process on its prefix: a
hash per schedule and an index of them in (tenant, id) order, each read and
change one call of `lua/schedules.lua`, so that `advance` is an atomic
maximum however many processes fire the same schedule."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from conveyor_server.stores._errors import ScheduleExists
from conveyor_server.stores._records import ScheduleRecord
from conveyor_server.stores.redis.scripts import number, opt

# Runs the schedules script with these arguments after the prefix.
RunScript = Callable[[list[Any]], Awaitable[Any]]


def _flag(value: bool) -> bytes:
    return b"1" if value else b"0"


def _schedule(values: Sequence[bytes]) -> ScheduleRecord:
    """A ScheduleRecord from the script's {id, tenant, spec, paused,
    create_time, update_time, fired_until}."""
    schedule_id, tenant, spec, paused, created, updated, fired_until = values
    return ScheduleRecord(
        id=schedule_id.decode(),
        tenant=tenant.decode(),
        spec=spec,
        paused=paused == b"1",
        create_time=float(created),
        update_time=float(updated),
        fired_until=float(fired_until),
    )


class ScheduleBook:
    """`P:schedule:<n>:<tenant>:<id>` (a hash per schedule; n is the
    tenant's length) and `P:schedules` (their index, by tenant and id)."""

    def __init__(self, run: RunScript) -> None:
        self._run = run

    async def create(self, schedule: ScheduleRecord) -> None:
        created = await self._run(
            [
                "create",
                schedule.tenant,
                schedule.id,
                schedule.spec,
                _flag(schedule.paused),
                number(schedule.create_time),
                number(schedule.update_time),
                number(schedule.fired_until),
            ]
        )
        if not created:
            raise ScheduleExists(schedule.id)

    async def get(self, tenant: str, schedule_id: str) -> ScheduleRecord | None:
        found = await self._run(["get", tenant, schedule_id])
        return _schedule(found) if found else None

    async def find(self, tenant: str | None) -> list[ScheduleRecord]:
        """The schedules of `tenant` (of every tenant when None), by tenant and id."""
        return [_schedule(values) for values in await self._run(["list", opt(tenant)])]

    async def replace(
        self, schedule: ScheduleRecord, read_update_time: float
    ) -> ScheduleRecord | None:
        stored = await self._run(
            [
                "replace",
                schedule.tenant,
                schedule.id,
                schedule.spec,
                _flag(schedule.paused),
                number(schedule.update_time),
                number(read_update_time),
            ]
        )
        return _schedule(stored) if stored else None

    async def advance(self, tenant: str, schedule_id: str, fired_until: float) -> None:
        await self._run(["advance", tenant, schedule_id, number(fired_until)])

    async def delete(self, tenant: str, schedule_id: str) -> bool:
        return bool(await self._run(["delete", tenant, schedule_id]))
