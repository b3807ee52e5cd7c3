"""ScheduleService through grpcurl: reflection knows it, and a schedule is
created and listed in plain JSON, as docs/schedules.md shows."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.e2e.test_grpcurl import Grpcurl
from tests.support.server import ServerThread

pytestmark = pytest.mark.slow

SERVICE = "conveyor.v1.ScheduleService"


def test_reflection_lists_the_schedule_service(server: ServerThread) -> None:
    assert SERVICE in Grpcurl(server.address).ok("list").split()


def test_create_then_list_a_schedule(server: ServerThread) -> None:
    grpcurl = Grpcurl(server.address)
    schedule_id = f"grpcurl-{uuid.uuid4().hex[:8]}"
    created = json.loads(
        grpcurl.ok(
            f"{SERVICE}/CreateSchedule",
            data={
                "schedule": {
                    "id": schedule_id,
                    "cron": "0 3 * * *",
                    "time_zone": "Europe/Paris",
                    "task": {"type": "echo", "payload": {"report": "daily"}},
                }
            },
        )
    )["schedule"]
    assert created["id"] == schedule_id
    assert len(created["next_fire_times"]) == 5
    listed = json.loads(grpcurl.ok(f"{SERVICE}/ListSchedules"))["schedules"]
    assert schedule_id in [item["id"] for item in listed]
    refused = grpcurl.run(
        f"{SERVICE}/CreateSchedule",
        data={"schedule": {"id": schedule_id, "interval": "60s", "task": {"type": "echo"}}},
    )
    assert refused.returncode != 0
    assert "AlreadyExists" in refused.stderr
