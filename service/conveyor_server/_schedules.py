"""ScheduleCore: the ScheduleService contract, whichever face calls it.

The gRPC servicer and the HTTP/JSON face both call these methods with the
contract's request messages and the caller's tenant, as they call TaskCore.
A schedule's tasks are submitted through TaskCore.submit, the path of every
SubmitTask: the same checks, quotas and metrics.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Awaitable, Callable

import grpc

from conveyor.v1 import schedule_service_pb2 as spb
from conveyor_server._core import TaskCore
from conveyor_server._errors import ServiceError, invalid_argument
from conveyor_server._fire_times import to_millis
from conveyor_server._page_token import BadPageToken
from conveyor_server._schedule_spec import (
    FIRE_TIME_LABEL,
    SCHEDULE_ID,
    SCHEDULE_LABEL,
    TRIGGER_LABEL,
    check_request_id,
    check_schedule_id,
    fire_request,
    fire_times,
    mask_paths,
    merged,
    schedule_id_problem,
    schedule_not_found_message,
    spec_of,
    spec_problems,
    template_problems,
    trigger_request,
)
from conveyor_server._validation import page_size
from conveyor_server.stores import (
    IdempotencyConflict,
    ListQuery,
    ScheduleExists,
    ScheduleRecord,
    TaskRecord,
)

NEXT_FIRE_TIMES = 5
RECENT_RUNS = 10
# Tries of a change that other changes of the same schedule keep overtaking.
CHANGE_ATTEMPTS = 5


def schedule_not_found(schedule_id: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, schedule_not_found_message(schedule_id))


def read_spec(record: ScheduleRecord) -> spb.Schedule:
    return spb.Schedule.FromString(record.spec)


async def latest_runs(
    core: TaskCore, tenant: str, schedule_id: str, count: int
) -> list[TaskRecord]:
    """The newest tasks a schedule submitted, newest first."""
    query = ListQuery(page_size=count, labels=((SCHEDULE_LABEL, schedule_id),), tenant=tenant)
    records, _ = await core.store.list_page(query)
    return records


class ScheduleCore:
    """The contract's operations on the schedules of one store."""

    def __init__(self, core: TaskCore, *, clock: Callable[[], float] = time.time) -> None:
        self._core = core
        self._store = core.store
        self.clock = clock

    def _now(self) -> float:
        # Whole milliseconds: the origin of interval fires, the same in
        # every process that reads it back.
        return to_millis(self.clock()) / 1000

    async def create(
        self, request: spb.CreateScheduleRequest, tenant: str
    ) -> spb.CreateScheduleResponse:
        schedule = request.schedule
        spec = spec_of(schedule)
        await self._check(spec, schedule.id, tenant)
        now = self._now()
        record = ScheduleRecord(
            id=schedule.id,
            tenant=tenant,
            spec=spec.SerializeToString(deterministic=True),
            paused=schedule.paused,
            create_time=now,
            update_time=now,
            fired_until=now,
        )
        try:
            await self._store.create_schedule(record)
        except ScheduleExists:
            raise ServiceError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"schedule {schedule.id!r} already exists; update it, or delete it first",
            ) from None
        response = spb.CreateScheduleResponse()
        await self._fill(response.schedule, record)
        return response

    async def get(self, request: spb.GetScheduleRequest, tenant: str) -> spb.GetScheduleResponse:
        record = await self._find(request.id, tenant)
        response = spb.GetScheduleResponse()
        await self._fill(response.schedule, record)
        return response

    async def list(
        self, request: spb.ListSchedulesRequest, tenant: str
    ) -> spb.ListSchedulesResponse:
        size = page_size(request.page_size)
        scope = f"schedules:{tenant}"
        found = await self._store.list_schedules(tenant)
        if request.page_token:
            try:
                after = self._core.page_tokens.read_after(request.page_token, scope)
            except BadPageToken as exc:
                raise invalid_argument([("page_token", str(exc))]) from None
            found = [record for record in found if record.id > after]
        response = spb.ListSchedulesResponse()
        for record in found[:size]:
            await self._fill(response.schedules.add(), record)
        if len(found) > size:
            response.next_page_token = self._core.page_tokens.mint_after(scope, found[size - 1].id)
        return response

    async def update(
        self, request: spb.UpdateScheduleRequest, tenant: str
    ) -> spb.UpdateScheduleResponse:
        schedule_id = request.schedule.id
        paths = mask_paths(request.update_mask.paths)

        async def change(record: ScheduleRecord) -> ScheduleRecord:
            spec = merged(read_spec(record), request.schedule, paths)
            await self._check(spec, schedule_id, tenant)
            return dataclasses.replace(
                record, spec=spec.SerializeToString(deterministic=True), update_time=self._now()
            )

        response = spb.UpdateScheduleResponse()
        await self._fill(
            response.schedule, await self._change(schedule_id, tenant, change, "schedule.id")
        )
        return response

    async def delete(
        self, request: spb.DeleteScheduleRequest, tenant: str
    ) -> spb.DeleteScheduleResponse:
        check_schedule_id(request.id)
        if not await self._store.delete_schedule(tenant, request.id):
            raise schedule_not_found(request.id)
        return spb.DeleteScheduleResponse()

    async def pause(
        self, request: spb.PauseScheduleRequest, tenant: str
    ) -> spb.PauseScheduleResponse:
        async def change(record: ScheduleRecord) -> ScheduleRecord | None:
            if record.paused:
                return None
            return dataclasses.replace(record, paused=True, update_time=self._now())

        response = spb.PauseScheduleResponse()
        await self._fill(response.schedule, await self._change(request.id, tenant, change))
        return response

    async def resume(
        self, request: spb.ResumeScheduleRequest, tenant: str
    ) -> spb.ResumeScheduleResponse:
        async def change(record: ScheduleRecord) -> ScheduleRecord | None:
            if not record.paused:
                return None
            now = self._now()
            # Fires that fell while paused are skipped: the schedule counts
            # as fired until now before it is seen unpaused.
            await self._store.advance_schedule(tenant, record.id, now)
            return dataclasses.replace(record, paused=False, update_time=now)

        response = spb.ResumeScheduleResponse()
        await self._fill(response.schedule, await self._change(request.id, tenant, change))
        return response

    async def trigger(
        self, request: spb.TriggerScheduleRequest, tenant: str
    ) -> spb.TriggerScheduleResponse:
        check_request_id(request.request_id)
        record = await self._find(request.id, tenant)
        request_id = request.request_id or secrets.token_hex(8)
        submit = trigger_request(record.id, read_spec(record), to_millis(self.clock()), request_id)
        response = spb.TriggerScheduleResponse()
        try:
            submitted = await self._core.submit(submit, tenant)
        except IdempotencyConflict:
            # The same request id again, at another time (another fire
            # time label): the task of the first call is the answer.
            earlier = await self._triggered(tenant, record.id, request_id)
            if earlier is None:
                raise
            await self._core.fill(response.task, earlier)
            return response
        response.task.CopyFrom(submitted.task)
        return response

    # -- helpers ----------------------------------------------------------------

    async def _find(self, schedule_id: str, tenant: str, field: str = "id") -> ScheduleRecord:
        check_schedule_id(schedule_id, field)
        record = await self._store.get_schedule(tenant, schedule_id)
        if record is None:
            raise schedule_not_found(schedule_id)
        return record

    async def _change(
        self,
        schedule_id: str,
        tenant: str,
        change: Callable[[ScheduleRecord], Awaitable[ScheduleRecord | None]],
        field: str = "id",
    ) -> ScheduleRecord:
        """Read the schedule, make `change` of it (None: nothing to change)
        and store it, unless another change was stored since the read: then
        read it again and make the change of that, so that a pause and an
        update made at once both hold. Returns the schedule as stored."""
        for _ in range(CHANGE_ATTEMPTS):
            record = await self._find(schedule_id, tenant, field)
            changed = await change(record)
            if changed is None:
                return record
            stored = await self._store.replace_schedule(changed, record.update_time)
            if stored is not None:
                return stored
        raise ServiceError(
            grpc.StatusCode.ABORTED,
            f"schedule {schedule_id!r} changed {CHANGE_ATTEMPTS} times while this change was "
            "made; try again",
        )

    async def _check(self, spec: spb.Schedule, schedule_id: str, tenant: str) -> None:
        """Refuse a schedule that could not fire: bad timing, or a task
        template that SubmitTask would refuse."""
        problems = spec_problems(spec, "schedule.")
        if SCHEDULE_ID.fullmatch(schedule_id) is None:
            problems.insert(0, ("schedule.id", schedule_id_problem(schedule_id)))
        if spec.HasField("task"):
            template = template_problems(spec.task, "schedule.task.")
            if not template:
                # The submit of a fire, as the ticker will make it.
                fire = fire_request(schedule_id, spec, to_millis(self.clock()))
                template = await self._core.submit_problems(fire, tenant, "schedule.task.")
            problems.extend(template)
        if problems:
            raise invalid_argument(problems)

    async def _triggered(self, tenant: str, schedule_id: str, request_id: str) -> TaskRecord | None:
        labels = tuple(sorted(((SCHEDULE_LABEL, schedule_id), (TRIGGER_LABEL, request_id))))
        records, _ = await self._store.list_page(
            ListQuery(page_size=1, labels=labels, tenant=tenant)
        )
        return records[0] if records else None

    async def _fill(self, message: spb.Schedule, record: ScheduleRecord) -> None:
        """Write a stored schedule and its output fields into `message`."""
        spec = read_spec(record)
        message.CopyFrom(spec)
        message.id = record.id
        message.paused = record.paused
        message.create_time.FromMilliseconds(to_millis(record.create_time))
        message.update_time.FromMilliseconds(to_millis(record.update_time))
        times = fire_times(spec, record.create_time)
        fired_until = to_millis(record.fired_until)
        for last in times.latest(to_millis(record.create_time), fired_until, 1):
            message.last_fire_time.FromMilliseconds(last)
        if not record.paused:
            after = max(fired_until, to_millis(self.clock()))
            for fire in times.following(after, NEXT_FIRE_TIMES):
                message.next_fire_times.add().FromMilliseconds(fire)
        for task in await latest_runs(self._core, record.tenant, record.id, RECENT_RUNS):
            run = message.recent_runs.add(
                task_id=task.id,
                state=task.state.value,
                triggered=TRIGGER_LABEL in (task.labels or {}),
            )
            _set_fire_time(run, task)


def _set_fire_time(run: spb.ScheduleRun, task: TaskRecord) -> None:
    label = (task.labels or {}).get(FIRE_TIME_LABEL)
    if label is None:
        return
    try:
        run.fire_time.FromJsonString(label)
    except ValueError:  # a label set by hand on a task of the schedule's
        run.ClearField("fire_time")
