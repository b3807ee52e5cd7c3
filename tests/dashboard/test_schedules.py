"""The schedules pages in a real browser: create from the form, a refusal
beside its field, one schedule's details, pause, resume, trigger and
delete."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.dashboard.conftest import OpenPage
from tests.support.http import Http
from tests.support.server import ServerThread

pytestmark = pytest.mark.slow


def new_id() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def test_a_schedule_created_from_the_form_shows_its_next_fires(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    schedule_id = new_id()
    page = open_page(dashboard_server, "#/schedules")
    page.wait_for_selector("#schedule-type option[value='echo']", state="attached")
    page.fill("#schedule-id", schedule_id)
    page.fill("#schedule-description", "the nightly report")
    page.fill("#schedule-cron", "30 3 * * *")
    page.fill("#schedule-time_zone", "Europe/Paris")
    page.select_option("#schedule-type", "echo")
    page.fill("#schedule-payload", '{"report": "nightly"}')
    page.select_option("#schedule-overlap_policy", "OVERLAP_POLICY_ALLOW")
    page.fill("#schedule-catch_up_window", "120")
    page.click("form[aria-labelledby='create-title'] button[type=submit]")
    page.wait_for_url(f"**/#/schedules/{schedule_id}")
    page.wait_for_selector("#schedule-state [data-paused='false']")
    facts = page.inner_text("#schedule-facts")
    assert "cron 30 3 * * * (Europe/Paris)" in facts
    assert "allow overlapping runs" in facts and "2 minutes" in facts
    assert "the nightly report" in facts
    assert page.locator("#next-fires li").count() == 5
    assert '"nightly"' in page.inner_text("#schedule-task")

    stored = Http(dashboard_server).get(f"/v1/schedules/{schedule_id}").body["schedule"]
    assert stored["cron"] == "30 3 * * *" and stored["time_zone"] == "Europe/Paris"
    assert stored["task"] == {"type": "echo", "payload": {"report": "nightly"}}
    assert stored["overlap_policy"] == "OVERLAP_POLICY_ALLOW"
    assert stored["catch_up_window"] == "120s"

    page.click("#nav a[href='#/schedules']")
    page.wait_for_selector(f"#schedule-rows tr[data-id='{schedule_id}']:has-text('Europe/Paris')")
    assert page.errors == []


def test_an_interval_schedule_is_created_and_a_bad_cron_is_refused_beside_its_field(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    page = open_page(dashboard_server, "#/schedules")
    page.wait_for_selector("#schedule-type option[value='echo']", state="attached")
    refused = new_id()
    page.fill("#schedule-id", refused)
    page.fill("#schedule-cron", "every now and then")
    page.click("form[aria-labelledby='create-title'] button[type=submit]")
    page.wait_for_selector("#error-schedule-cron span")
    assert "#/schedules" in page.url and refused not in page.url
    assert Http(dashboard_server).get(f"/v1/schedules/{refused}").status == 404

    created = new_id()
    page.fill("#schedule-id", created)
    page.check("#fires-interval")
    assert page.is_hidden("#schedule-cron")
    page.fill("#schedule-interval", "3600")
    page.click("form[aria-labelledby='create-title'] button[type=submit]")
    page.wait_for_url(f"**/#/schedules/{created}")
    page.wait_for_selector("#schedule-facts:has-text('every 1 hour')")


def create_schedule(server: ServerThread, schedule: dict[str, Any]) -> None:
    reply = Http(server).post("/v1/schedules", {"schedule": schedule})
    assert reply.status == 200, reply.body


def test_a_schedule_is_triggered_paused_resumed_and_deleted_from_its_page(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    schedule_id = new_id()
    http = Http(dashboard_server)
    create_schedule(
        dashboard_server,
        {"id": schedule_id, "interval": "3600s", "task": {"type": "echo", "payload": {"n": 1}}},
    )
    page = open_page(dashboard_server, f"#/schedules/{schedule_id}")
    page.wait_for_selector("#schedule-facts:has-text('every 1 hour')")
    assert page.is_disabled("#resume-schedule")

    page.click("#trigger-schedule")
    page.wait_for_selector("#schedule-status a")
    task_id = page.inner_text("#schedule-status a")
    # Its run is listed, and its state follows the task.
    page.wait_for_selector(f"#recent-runs tr[data-task='{task_id}'] [data-state='SUCCEEDED']")
    assert "(triggered)" in page.inner_text(f"#recent-runs tr[data-task='{task_id}']")

    page.click("#pause-schedule")
    page.wait_for_selector("#schedule-state [data-paused='true']")
    assert page.inner_text("#next-fires") == "none while paused"
    assert http.get(f"/v1/schedules/{schedule_id}").body["schedule"]["paused"] is True
    page.click("#resume-schedule")
    page.wait_for_selector("#schedule-state [data-paused='false']")
    page.wait_for_selector("#next-fires li:nth-child(5)")

    # The task's page links back to its schedule.
    page.click(f"#recent-runs tr[data-task='{task_id}'] a")
    page.wait_for_selector(f"#task-facts a[href='#/schedules/{schedule_id}']")
    page.go_back()
    page.wait_for_selector("#schedule-facts:has-text('every 1 hour')")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-schedule")
    page.wait_for_url("**/#/schedules")
    page.wait_for_selector("#schedule-rows tr")
    assert page.locator(f"#schedule-rows tr[data-id='{schedule_id}']").count() == 0
    assert http.get(f"/v1/schedules/{schedule_id}").status == 404
    assert http.get(f"/v1/tasks/{task_id}").status == 200  # its tasks stay
    assert page.errors == []


def test_an_unknown_schedule_is_said_to_be_unknown(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    page = open_page(dashboard_server, "#/schedules/no-such-schedule")
    page.wait_for_selector("h1:has-text('Schedule not found')")
    assert "No schedule has the id no-such-schedule" in page.inner_text("main")
