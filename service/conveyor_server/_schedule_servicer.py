"""ScheduleService: the gRPC face of ScheduleCore."""

from __future__ import annotations

from typing import Any

import grpc
from grpc import aio

from conveyor.v1 import schedule_service_pb2 as spb
from conveyor.v1 import schedule_service_pb2_grpc as spb_grpc
from conveyor_server._auth import current_tenant
from conveyor_server._observer import TaskObserver
from conveyor_server._schedules import ScheduleCore
from conveyor_server._servicer import bound_handlers

Context = aio.ServicerContext[Any, Any]


class ScheduleServicer(spb_grpc.ScheduleServiceServicer):
    def __init__(self, core: ScheduleCore) -> None:
        self.core = core

    async def CreateSchedule(
        self, request: spb.CreateScheduleRequest, context: Context
    ) -> spb.CreateScheduleResponse:
        return await self.core.create(request, current_tenant())

    async def GetSchedule(
        self, request: spb.GetScheduleRequest, context: Context
    ) -> spb.GetScheduleResponse:
        return await self.core.get(request, current_tenant())

    async def ListSchedules(
        self, request: spb.ListSchedulesRequest, context: Context
    ) -> spb.ListSchedulesResponse:
        return await self.core.list(request, current_tenant())

    async def UpdateSchedule(
        self, request: spb.UpdateScheduleRequest, context: Context
    ) -> spb.UpdateScheduleResponse:
        return await self.core.update(request, current_tenant())

    async def DeleteSchedule(
        self, request: spb.DeleteScheduleRequest, context: Context
    ) -> spb.DeleteScheduleResponse:
        return await self.core.delete(request, current_tenant())

    async def PauseSchedule(
        self, request: spb.PauseScheduleRequest, context: Context
    ) -> spb.PauseScheduleResponse:
        return await self.core.pause(request, current_tenant())

    async def ResumeSchedule(
        self, request: spb.ResumeScheduleRequest, context: Context
    ) -> spb.ResumeScheduleResponse:
        return await self.core.resume(request, current_tenant())

    async def TriggerSchedule(
        self, request: spb.TriggerScheduleRequest, context: Context
    ) -> spb.TriggerScheduleResponse:
        return await self.core.trigger(request, current_tenant())


def schedule_service_handler(
    servicer: ScheduleServicer, observer: TaskObserver
) -> grpc.GenericRpcHandler:
    """The ScheduleService handlers, bound to `servicer`, with the same
    refusals, counting and timing as TaskService's."""
    return bound_handlers(servicer, spb, "ScheduleService", observer)
