"""GET /v1/tasks/{id}/logs against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.http import Http
from tests.support.log_tasks import registry
from tests.support.server import ServerThread, test_config


@pytest.fixture(scope="module")
def log_server() -> Iterator[ServerThread]:
    server = ServerThread(test_config(), registry).start()
    yield server
    server.stop()


def test_logs_route_pages_as_get_task_logs_does(log_server: ServerThread) -> None:
    http = Http(log_server)
    task = http.post("/v1/tasks", {"type": "chatty", "payload": {"lines": 3}}).body["task"]
    http.wait_state(task["id"], "TASK_STATE_SUCCEEDED")

    first = http.get(f"/v1/tasks/{task['id']}/logs?page_size=2")
    assert first.status == 200, first.body
    assert [(line["attempt"], line["sequence"], line["level"]) for line in first.body["lines"]] == [
        (1, "1", "INFO"),
        (1, "2", "INFO"),
    ]
    assert first.body["lines"][0]["message"] == "attempt 1 line 1"
    assert first.body["lines"][0]["time"].endswith("Z")
    token = first.body["next_page_token"]
    rest = http.get(f"/v1/tasks/{task['id']}/logs?page_size=2&page_token={token}")
    assert [line["message"] for line in rest.body["lines"]] == ["attempt 1 line 3"]
    assert "next_page_token" not in rest.body or not rest.body["next_page_token"]


def test_logs_route_refuses_bad_input(log_server: ServerThread) -> None:
    http = Http(log_server)
    unknown = http.get("/v1/tasks/t_" + "0" * 26 + "/logs")
    assert unknown.status == 404
    assert unknown.body["code"] == 5  # NOT_FOUND
    bad = http.get("/v1/tasks/t_" + "0" * 26 + "/logs?limit=3")
    assert bad.status == 400
    assert "limit" in bad.body["message"] and "page_size" in bad.body["message"]
