"""The Logs tab of a task's page, in a real browser: the lines of a
running task appear as they are logged, and the finished task's are all
shown."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from tests.dashboard.conftest import OpenPage, wait_state
from tests.support.http import Http
from tests.support.log_tasks import gates, registry
from tests.support.server import ServerThread, test_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def log_server() -> Iterator[ServerThread]:
    server = ServerThread(test_config(), registry).start()
    yield server
    server.stop()


def test_the_logs_tab_follows_a_task_to_its_end(
    log_server: ServerThread, open_page: OpenPage
) -> None:
    gate = gates[name := uuid.uuid4().hex] = threading.Event()
    reply = Http(log_server).post("/v1/tasks", {"type": "gated", "payload": {"gate": name}})
    task_id = reply.body["task"]["id"]
    page = open_page(log_server, f"#/tasks/{task_id}")
    assert page.is_hidden("#logs-panel")  # the Overview tab is shown first
    page.click("#tab-logs")
    assert page.get_attribute("#tab-logs", "aria-selected") == "true"
    assert page.is_hidden("#task-facts")
    page.wait_for_selector("#task-logs li[data-sequence='1']")
    assert "started" in page.inner_text("#task-logs")
    assert "Following" in page.inner_text("#task-logs-status")
    gate.set()
    wait_state(page, "SUCCEEDED")
    page.wait_for_selector("#task-logs li[data-sequence='2']")
    items = page.query_selector_all("#task-logs li")
    assert [item.get_attribute("data-level") for item in items] == ["INFO", "INFO"]
    assert "finishing" in items[1].inner_text()
    page.wait_for_selector("#task-logs-status:has-text('2 lines.')")
    assert page.errors == []


def test_the_logs_tab_says_what_was_dropped(log_server: ServerThread, open_page: OpenPage) -> None:
    http = Http(log_server)
    task_id = http.post("/v1/tasks", {"type": "chatty", "payload": {"lines": 1003}}).body["task"][
        "id"
    ]
    http.wait_state(task_id, "TASK_STATE_SUCCEEDED")
    page = open_page(log_server, f"#/tasks/{task_id}")
    page.click("#tab-logs")
    page.wait_for_selector("#task-logs-status:has-text('1000 lines.')")
    assert "attempt 1: 3 earliest lines dropped" in page.inner_text("#task-logs-dropped")
    assert page.errors == []
