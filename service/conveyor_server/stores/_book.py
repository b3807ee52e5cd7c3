"""Type settings and schedules of a store of one process (memory, SQLite):
plain dicts. A store that keeps them on disk passes `save`, which gets every
change once made (a TypeSettings, a ScheduleRecord, or ("-", tenant, id)
for a deleted schedule)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping

from conveyor_server.stores._errors import ScheduleExists
from conveyor_server.stores._records import (
    LIMIT_NAMES,
    ScheduleRecord,
    TypeLimits,
    TypeSettings,
)

Deleted = tuple[str, str, str]
Saved = TypeSettings | ScheduleRecord | Deleted


class LocalBook:
    """Type settings by type; schedules by (tenant, id)."""

    __slots__ = ("_save", "schedules", "types")

    def __init__(self, save: Callable[[Saved], None] | None = None) -> None:
        self.types: dict[str, TypeSettings] = {}
        self.schedules: dict[tuple[str, str], ScheduleRecord] = {}
        self._save = save

    def load(self, saved: Iterable[TypeSettings | ScheduleRecord]) -> None:
        """Take in what a store saved, telling nobody."""
        for item in saved:
            if isinstance(item, TypeSettings):
                self.types[item.type] = item
            else:
                self.schedules[(item.tenant, item.id)] = item

    # -- task types -----------------------------------------------------------

    def declare_defaults(self, defaults: Mapping[str, TypeLimits], now: float) -> list[str]:
        """Record declared defaults; returns the types whose limits changed."""
        changed: list[str] = []
        for task_type, limits in defaults.items():
            current = self.types.get(task_type) or TypeSettings(task_type)
            if current.defaults == limits and task_type in self.types:
                continue
            self._put(dataclasses.replace(current, defaults=limits, update_time=now))
            changed.append(task_type)
        return changed

    def update(
        self,
        task_type: str,
        now: float,
        *,
        limits: Mapping[str, float] | None = None,
        restore: Collection[str] = (),
        paused: bool | None = None,
    ) -> TypeSettings:
        current = self.types.get(task_type) or TypeSettings(task_type)
        overrides = dict(current.overrides)
        for name in restore:
            overrides.pop(name, None)
        for name, value in (limits or {}).items():
            if name not in LIMIT_NAMES:
                raise ValueError(f"no limit {name!r}")
            overrides[name] = value
        settings = dataclasses.replace(
            current,
            overrides=tuple(sorted(overrides.items())),
            paused=current.paused if paused is None else paused,
            update_time=now,
        )
        self._put(settings)
        return settings

    def _put(self, settings: TypeSettings) -> None:
        self.types[settings.type] = settings
        if self._save is not None:
            self._save(settings)

    # -- schedules --------------------------------------------------------------

    def create_schedule(self, schedule: ScheduleRecord) -> None:
        slot = (schedule.tenant, schedule.id)
        if slot in self.schedules:
            raise ScheduleExists(schedule.id)
        self._put_schedule(schedule)

    def list_schedules(self, tenant: str | None) -> list[ScheduleRecord]:
        found = [s for s in self.schedules.values() if tenant is None or s.tenant == tenant]
        found.sort(key=lambda s: (s.tenant, s.id))
        return found

    def replace_schedule(
        self, schedule: ScheduleRecord, read_update_time: float
    ) -> ScheduleRecord | None:
        current = self.schedules.get((schedule.tenant, schedule.id))
        if current is None or current.update_time != read_update_time:
            return None
        stored = dataclasses.replace(
            current,
            spec=schedule.spec,
            paused=schedule.paused,
            update_time=schedule.update_time,
        )
        self._put_schedule(stored)
        return stored

    def advance_schedule(self, tenant: str, schedule_id: str, fired_until: float) -> None:
        current = self.schedules.get((tenant, schedule_id))
        if current is not None and fired_until > current.fired_until:
            self._put_schedule(dataclasses.replace(current, fired_until=fired_until))

    def delete_schedule(self, tenant: str, schedule_id: str) -> bool:
        if self.schedules.pop((tenant, schedule_id), None) is None:
            return False
        if self._save is not None:
            self._save(("-", tenant, schedule_id))
        return True

    def _put_schedule(self, schedule: ScheduleRecord) -> None:
        self.schedules[(schedule.tenant, schedule.id)] = schedule
        if self._save is not None:
            self._save(schedule)
