"""The dashboard in a real browser: why a task waits and what it depends on,
the task types page (pause, resume, change and restore limits), and the
task list's cancel matching and retry matching."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.dashboard.conftest import OpenPage, submit, wait_state
from tests.support.http import Http
from tests.support.server import ServerThread

pytestmark = pytest.mark.slow


def accept_dialogs(page: Any) -> list[str]:
    """Answer yes to every confirm(); returns the questions asked."""
    questions: list[str] = []

    def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    return questions


def type_row(type_name: str) -> str:
    return f"#type-rows tr[data-type='{type_name}']"


def listed_type(server: ServerThread, name: str) -> dict[str, Any]:
    types = Http(server).get("/v1/taskTypes").body["task_types"]
    found: dict[str, Any] = next(t for t in types if t["name"] == name)
    return found


def test_a_pending_task_says_why_it_waits_and_links_what_it_depends_on(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    parent = submit(dashboard_server, {"type": "echo", "delay": "3600s"})
    child = submit(
        dashboard_server,
        {"type": "echo", "depends_on": [parent], "concurrency_key": "account-7"},
    )
    page = open_page(dashboard_server, f"#/tasks/{child}")
    page.wait_for_selector("#pending-reason[data-reason='DEPENDENCIES']")
    assert "Waiting for the tasks it depends on" in page.inner_text("#pending-reason")
    facts = page.inner_text("#task-facts")
    assert "account-7" in facts
    assert "cancelled if one fails" in facts

    page.click(f"#task-dependencies a:has-text('{parent}')")
    page.wait_for_url(f"**/#/tasks/{parent}")
    page.wait_for_selector("#pending-reason[data-reason='DELAYED']")
    assert "Delayed" in page.inner_text("#pending-reason")

    # A task that stops waiting says so: the notice goes.
    page.click("#cancel")
    wait_state(page, "CANCELLED")
    assert page.is_hidden("#pending-reason")
    assert page.errors == []


def test_a_type_is_paused_and_resumed_from_the_types_page(
    own_dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    server = own_dashboard_server
    page = open_page(server, "#/types")
    row = type_row("limited")
    page.wait_for_selector(f"{row}[data-paused='false']")
    page.click(f"{row} button.pause")
    page.wait_for_selector(f"{row}[data-paused='true'] .type-state:has-text('paused')")
    assert listed_type(server, "limited")["paused"] is True

    # Accepted while paused, but not started; the page says why.
    task_id = submit(server, {"type": "limited", "payload": {"word": "later"}})
    page.wait_for_selector(f"{row} [data-count='pending']:has-text('1')")
    page.goto(page.url.replace("#/types", f"#/tasks/{task_id}"))
    page.wait_for_selector("#pending-reason[data-reason='TYPE_PAUSED']")
    assert "paused" in page.inner_text("#pending-reason")

    page.go_back()
    page.click(f"{row}[data-paused='true'] button.pause")  # now Resume
    page.wait_for_selector(f"{row}[data-paused='false']")
    Http(server).wait_state(task_id, "TASK_STATE_SUCCEEDED")
    page.wait_for_selector(f"{row} [data-count='pending']:has-text('0')")
    assert page.errors == []


def test_limits_are_changed_and_restored_from_the_types_page(
    own_dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    server = own_dashboard_server
    page = open_page(server, "#/types")
    row = type_row("limited")
    page.wait_for_selector(f"{row} [data-limit='max_running']:has-text('2')")
    page.click(f"{row} button.edit-limits")
    assert page.input_value("#limit-max_running") == "2"
    assert page.inner_text("#declared-max_running") == "declared: 2"

    page.fill("#limit-max_running", "5")
    page.fill("#limit-max_starts_per_second", "1.5")
    page.click("#limits-editor button[type=submit]")
    page.wait_for_selector("#limits-status:has-text('Saved')")
    page.wait_for_selector(f"{row} [data-limit='max_running']:has-text('(declared: 2)')")
    assert page.inner_text(f"{row} [data-limit='max_running']").startswith("5")
    limits = listed_type(server, "limited")["limits"]
    assert limits["max_running"] == 5 and limits["max_starts_per_second"] == 1.5
    # Only what was changed is set: the others still follow the handler.
    assert "max_running_per_key" not in limits and "burst" not in limits

    page.fill("#limit-max_running", "-1")
    page.click("#limits-editor button[type=submit]")
    page.wait_for_selector("#error-limit-max_running span")
    assert listed_type(server, "limited")["limits"]["max_running"] == 5

    page.click("#restore-limits")
    page.wait_for_selector("#limits-status:has-text('declared limits are in force')")
    assert page.input_value("#limit-max_running") == "2"
    assert page.input_value("#limit-max_starts_per_second") == ""
    page.wait_for_function(
        "() => document.querySelector(\"#type-rows tr[data-type='limited'] "
        "[data-limit='max_running']\").textContent === '2'"
    )
    assert listed_type(server, "limited")["limits"] == {"max_running": 2}
    assert page.errors == []


def filter_by_label(page: Any, label: str) -> None:
    page.fill("#filter-label", label)
    page.click("form[aria-label='Filter tasks'] button[type=submit]")


def test_cancel_matching_and_retry_matching_act_on_the_filtered_tasks(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    team = uuid.uuid4().hex[:8]
    http = Http(dashboard_server)
    waiting = [
        submit(dashboard_server, {"type": "echo", "delay": "3600s", "labels": {"team": team}})
        for _ in range(3)
    ]
    other = submit(dashboard_server, {"type": "echo", "delay": "3600s", "labels": {"team": "x"}})
    page = open_page(dashboard_server, "#/tasks")
    questions = accept_dialogs(page)
    page.wait_for_selector(f"#task-rows tr[data-id='{other}']")
    # Not on the whole unfiltered list.
    assert page.is_disabled("#cancel-matching") and page.is_disabled("#retry-matching")

    filter_by_label(page, f"team={team}")
    page.wait_for_function("() => !document.querySelector('#cancel-matching').disabled")
    page.click("#cancel-matching")
    page.wait_for_selector("#batch-status:has-text('3 matched: 3 cancelled')")
    assert questions == [f"Cancel every unfinished task labelled team={team}?"]
    for task_id in waiting:
        page.wait_for_selector(f"#task-rows tr[data-id='{task_id}'] [data-state='CANCELLED']")
    assert http.get(f"/v1/tasks/{other}").body["task"]["state"] == "TASK_STATE_PENDING"

    page.select_option("#filter-state", "CANCELLED")
    page.wait_for_function(
        "() => document.querySelector('#retry-matching').title.includes('CANCELLED')"
    )
    page.click("#retry-matching")
    page.wait_for_selector("#batch-status:has-text('3 matched: 3 retried')")
    for task_id in waiting:
        http.wait_state(task_id, "TASK_STATE_SUCCEEDED")
    http.post(f"/v1/tasks/{other}:cancel")
    assert page.errors == []
