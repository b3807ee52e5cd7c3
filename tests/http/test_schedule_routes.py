"""The schedule routes of the HTTP/JSON API against a real server."""

from __future__ import annotations

import uuid

from tests.support.http import Http
from tests.support.server import ServerThread


def _new_id() -> str:
    return f"http-{uuid.uuid4().hex[:8]}"


def test_create_get_update_pause_resume_trigger_delete(server: ServerThread) -> None:
    http = Http(server)
    schedule_id = _new_id()
    body = {"schedule": {"id": schedule_id, "interval": "3600s", "task": {"type": "echo"}}}
    created = http.post("/v1/schedules", body)
    assert created.status == 200, created.body
    assert created.body["schedule"]["interval"] == "3600s"
    assert http.post("/v1/schedules", body).status == 409
    got = http.call("GET", f"/v1/schedules/{schedule_id}")
    assert got.body["schedule"]["id"] == schedule_id
    patched = http.call(
        "PATCH",
        f"/v1/schedules/{schedule_id}",
        {"schedule": {"description": "hourly"}, "update_mask": "description"},
    )
    assert patched.status == 200, patched.body
    assert patched.body["schedule"]["description"] == "hourly"
    paused = http.post(f"/v1/schedules/{schedule_id}:pause", None)
    assert paused.body["schedule"]["paused"] is True
    assert "next_fire_times" not in paused.body["schedule"]
    resumed = http.post(f"/v1/schedules/{schedule_id}:resume", None)
    assert "paused" not in resumed.body["schedule"]
    triggered = http.post(f"/v1/schedules/{schedule_id}:trigger", {"request_id": "r-1"})
    assert triggered.body["task"]["labels"]["conveyor.trigger"] == "r-1"
    assert http.post(f"/v1/schedules/{schedule_id}:trigger", None).status == 200
    assert http.call("DELETE", f"/v1/schedules/{schedule_id}").status == 200
    gone = http.call("GET", f"/v1/schedules/{schedule_id}")
    assert gone.status == 404
    assert schedule_id in gone.body["message"]


def test_list_pages_with_a_token(server: ServerThread) -> None:
    http = Http(server)
    for _ in range(3):
        body = {"schedule": {"id": _new_id(), "interval": "60s", "task": {"type": "echo"}}}
        assert http.post("/v1/schedules", body).status == 200
    first = http.call("GET", "/v1/schedules?page_size=2")
    assert len(first.body["schedules"]) == 2
    token = first.body["next_page_token"]
    rest = http.call("GET", f"/v1/schedules?page_size=1000&page_token={token}")
    ids = [s["id"] for s in first.body["schedules"] + rest.body["schedules"]]
    assert ids == sorted(ids)
    bad = http.call("GET", "/v1/schedules?page_token=forged&labels=a=b")
    assert bad.status == 400
    fields = {v["field"] for v in bad.body["details"][0]["field_violations"]}
    assert fields == {"labels"}


def test_bad_requests_name_the_field(server: ServerThread) -> None:
    http = Http(server)
    refused = http.post(
        "/v1/schedules", {"schedule": {"id": _new_id(), "cron": "nope", "task": {"type": "echo"}}}
    )
    assert refused.status == 400
    fields = [v["field"] for v in refused.body["details"][0]["field_violations"]]
    assert fields == ["schedule.cron"]
    mismatch = http.call("PATCH", "/v1/schedules/a", {"schedule": {"id": "b"}})
    assert mismatch.status == 400
    assert http.post("/v1/schedules/a:explode", None).status == 404
