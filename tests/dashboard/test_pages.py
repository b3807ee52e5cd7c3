"""The dashboard in a real browser: submit, watch, cancel, retry, filter,
resume a dropped event stream."""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any

import pytest

from tests.dashboard.conftest import OpenPage, submit, wait_state
from tests.support.http import Http
from tests.support.server import ServerThread

pytestmark = pytest.mark.slow


def test_a_task_submitted_from_the_form_is_followed_to_its_result(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    page = open_page(dashboard_server, "#/submit")
    page.select_option("#type", "progress_steps")
    page.fill("#payload", '{"steps": 4, "interval": 0.3}')
    page.fill("#labels", "team=form")
    page.click("button[type=submit]")
    page.wait_for_url("**/#/tasks/*")
    bar = page.locator("#task-progress [role=progressbar]")
    # Seen part-way, then at 100%: the bar moves as the events arrive.
    page.wait_for_function(
        "() => { const v = Number(document.querySelector('#task-progress [role=progressbar]')"
        "?.getAttribute('aria-valuenow')); return v > 0 && v < 100; }"
    )
    wait_state(page, "SUCCEEDED")
    assert bar.get_attribute("aria-valuenow") == "100"
    assert page.locator("#task-result").inner_text().strip() == "4"
    assert "team=form" in page.locator("#task-facts").inner_text()
    assert page.errors == []


def test_the_form_shows_a_field_violation_beside_its_field(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    page = open_page(dashboard_server, "#/submit")
    page.select_option("#type", "sleep")
    assert '"seconds"' in page.input_value("#payload")  # the example payload
    page.fill("#payload", '{"seconds": "soon"}')
    page.fill("#max_attempts", "1000")
    page.click("button[type=submit]")
    page.wait_for_selector("#error-payload span")
    assert '"seconds" must be a number' in page.inner_text("#error-payload")
    assert "max_attempts" in page.inner_text("#error-max_attempts")
    assert page.inner_text("#error-type") == ""
    assert "#/submit" in page.url  # nothing was submitted


def test_a_csv_file_upload_fills_the_payload(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    page = open_page(dashboard_server, "#/submit")
    page.select_option("#type", "csv_stats")
    page.set_input_files(
        "#csv-file", files=[{"name": "p.csv", "mimeType": "text/csv", "buffer": b"x,y\n1,2\n3,4\n"}]
    )
    page.wait_for_function("() => document.querySelector('#payload').value.includes('x,y')")
    page.click("button[type=submit]")
    wait_state(page, "SUCCEEDED")
    assert '"rows": 2' in page.inner_text("#task-result")


def test_a_running_task_is_cancelled_from_its_page(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    task_id = submit(dashboard_server, {"type": "wait_for_cancel", "payload": {"seconds": 30}})
    page = open_page(dashboard_server, f"#/tasks/{task_id}")
    wait_state(page, "RUNNING")
    assert page.is_disabled("#retry")
    page.click("#cancel")
    wait_state(page, "CANCELLED")
    assert page.is_disabled("#cancel")
    assert Http(dashboard_server).get(f"/v1/tasks/{task_id}").body["task"]["state"] == (
        "TASK_STATE_CANCELLED"
    )


def test_a_failed_task_is_retried_from_its_page(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    task_id = submit(dashboard_server, {"type": "fail_once", "payload": {"key": uuid.uuid4().hex}})
    Http(dashboard_server).wait_state(task_id, "TASK_STATE_FAILED")
    page = open_page(dashboard_server, f"#/tasks/{task_id}")
    wait_state(page, "FAILED")
    assert "first run fails" in page.inner_text("#task-error")
    page.click("#retry")
    wait_state(page, "SUCCEEDED")
    assert '"ran": "again"' in page.inner_text("#task-result")


def test_submit_again_fills_the_form_from_the_task(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    task_id = submit(
        dashboard_server, {"type": "echo", "payload": {"word": "again"}, "labels": {"k": "v"}}
    )
    page = open_page(dashboard_server, f"#/tasks/{task_id}")
    wait_state(page, "SUCCEEDED")
    page.click("#submit-again")
    page.wait_for_url("**/#/submit")
    page.wait_for_function("() => document.querySelector('#payload').value.includes('again')")
    assert page.input_value("#type") == "echo"
    assert page.input_value("#labels") == "k=v"
    page.click("button[type=submit]")
    page.wait_for_url("**/#/tasks/*")
    assert task_id not in page.url
    wait_state(page, "SUCCEEDED")


def rows(page: Any) -> set[str]:
    return set(
        page.eval_on_selector_all("#task-rows tr[data-id]", "rs => rs.map(r => r.dataset.id)")
    )


def test_the_list_filters_by_state_type_and_label_and_finds_an_id(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    team = uuid.uuid4().hex[:8]
    http = Http(dashboard_server)
    echoed = submit(dashboard_server, {"type": "echo", "labels": {"team": team}})
    failed = submit(dashboard_server, {"type": "fail", "labels": {"team": team}})
    other = submit(dashboard_server, {"type": "echo", "labels": {"team": "other"}})
    http.wait_state(echoed, "TASK_STATE_SUCCEEDED")
    http.wait_state(failed, "TASK_STATE_FAILED")
    http.wait_state(other, "TASK_STATE_SUCCEEDED")
    page = open_page(dashboard_server, "#/tasks")
    page.wait_for_selector(f"#task-rows tr[data-id='{other}']")

    page.fill("#filter-label", f"team={team}")
    page.click("form[aria-label='Filter tasks'] button[type=submit]")
    page.wait_for_function(f"() => !document.querySelector(\"#task-rows tr[data-id='{other}']\")")
    assert rows(page) == {echoed, failed}

    page.select_option("#filter-state", "FAILED")
    page.wait_for_function(f"() => !document.querySelector(\"#task-rows tr[data-id='{echoed}']\")")
    assert rows(page) == {failed}

    page.select_option("#filter-state", "")
    page.select_option("#filter-type", "echo")
    page.wait_for_function(f"() => !document.querySelector(\"#task-rows tr[data-id='{failed}']\")")
    assert rows(page) == {echoed}

    page.fill("#search-id", other)
    page.click("form[aria-label='Find a task by id'] button[type=submit]")
    page.wait_for_url(f"**/#/tasks/{other}")
    page.go_back()
    page.fill("#search-id", "no-such-task-id")
    page.click("form[aria-label='Find a task by id'] button[type=submit]")
    page.wait_for_selector("#filter-error:has-text('No task has the id no-such-task-id')")


def test_the_list_shows_new_tasks_and_their_changes_without_a_reload(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    team = uuid.uuid4().hex[:8]
    page = open_page(dashboard_server, "#/tasks")
    page.fill("#filter-label", f"team={team}")
    page.click("form[aria-label='Filter tasks'] button[type=submit]")
    page.wait_for_selector("#task-rows:has-text('No tasks match')")
    # Pushed by GET /v1/tasks:watch, not polled.
    page.wait_for_selector("#live-status:has-text('pushed by the server')")
    task_id = submit(
        dashboard_server,
        {"type": "wait_for_cancel", "payload": {"seconds": 30}, "labels": {"team": team}},
    )
    row = f"#task-rows tr[data-id='{task_id}']"
    page.wait_for_selector(f"{row} [data-state='RUNNING']")
    Http(dashboard_server).post(f"/v1/tasks/{task_id}:cancel")
    page.wait_for_selector(f"{row} [data-state='CANCELLED']")


def test_the_list_pages(dashboard_server: ServerThread, open_page: OpenPage) -> None:
    team = uuid.uuid4().hex[:8]
    ids = [submit(dashboard_server, {"type": "echo", "labels": {"team": team}}) for _ in range(25)]
    page = open_page(dashboard_server, "#/tasks")
    page.fill("#filter-label", f"team={team}")
    page.click("form[aria-label='Filter tasks'] button[type=submit]")
    page.wait_for_selector(f"#task-rows tr[data-id='{ids[-1]}']")
    assert rows(page) == set(ids[5:])  # newest first, 20 a page
    page.click("#older")
    page.wait_for_selector(f"#task-rows tr[data-id='{ids[0]}']")
    assert rows(page) == set(ids[:5])
    assert page.is_disabled("#older")
    page.click("#newer")
    page.wait_for_selector(f"#task-rows tr[data-id='{ids[-1]}']")


def test_an_image_upload_fills_the_payload_and_the_result_is_shown(
    dashboard_server: ServerThread, open_page: OpenPage
) -> None:
    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(picture, format="PNG")
    page = open_page(dashboard_server, "#/submit")
    page.select_option("#type", "image")
    page.set_input_files(
        "#image-file",
        files=[{"name": "red.png", "mimeType": "image/png", "buffer": picture.getvalue()}],
    )
    encoded = base64.b64encode(picture.getvalue()).decode()
    page.wait_for_function(f"() => document.querySelector('#payload').value.includes('{encoded}')")
    page.click("button[type=submit]")
    wait_state(page, "SUCCEEDED")
    page.wait_for_selector("img.result-image")
    assert page.eval_on_selector("img.result-image", "img => img.naturalWidth") > 0
