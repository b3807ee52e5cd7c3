"""The dashboard's event streams survive a dropped connection, and a tenant
logged in through the page sees only its own tasks."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.conftest import dashboard_registry
from tests.support.http import Http
from tests.support.server import ServerThread, test_config

pytestmark = pytest.mark.slow

OpenPage = Callable[[ServerThread, str], Any]


def drop_http_connections(server: ServerThread) -> int:
    """Close every open HTTP connection from the server's side, as a proxy
    or a network fault would; returns how many were closed."""
    assert server.server is not None and server.server.http is not None
    runner = server.server.http._runner
    assert runner is not None and runner.server is not None
    web_server = runner.server

    async def drop() -> int:
        connections = list(web_server.connections)
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
        return len(connections)

    dropped: int = server.call(drop)
    return dropped


def open_watches(server: ServerThread) -> int:
    assert server.server is not None and server.server.core is not None
    return server.server.core.watchers


def wait_until(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_dropped_task_stream_resumes_with_no_gap_and_no_duplicate(
    make_server: Callable[..., ServerThread], open_page: OpenPage
) -> None:
    dashboard_server = make_server()
    http = Http(dashboard_server)
    task_id = http.post("/v1/tasks", {"type": "wait_for_cancel", "payload": {"seconds": 30}}).body[
        "task"
    ]["id"]
    http.wait_state(task_id, "TASK_STATE_RUNNING")
    page = open_page(dashboard_server, f"#/tasks/{task_id}")
    page.wait_for_selector("#live-status:has-text('Live')")
    assert open_watches(dashboard_server) == 1
    assert drop_http_connections(dashboard_server) >= 1
    page.wait_for_selector("#live-status:has-text('Reconnecting')")
    wait_until(lambda: open_watches(dashboard_server) == 0)
    # The browser is back (it waits a few seconds), before the next change:
    # a reconnect without Last-Event-ID would get the RUNNING snapshot again.
    wait_until(lambda: open_watches(dashboard_server) == 1)
    # Changes made while the page is away: it must get the latest on return.
    http.post(f"/v1/tasks/{task_id}:cancel")
    page.wait_for_selector("#task-state [data-state='CANCELLED']")
    events = page.eval_on_selector_all(
        "#task-events li", "items => items.map(i => [Number(i.dataset.version), i.dataset.state])"
    )
    versions = [version for version, _ in events]
    states = [state for _, state in events]
    assert versions == sorted(set(versions)), events  # nothing twice, in order
    assert states[0] == "RUNNING" and states[-1] == "CANCELLED", events
    final = http.get(f"/v1/tasks/{task_id}").body["task"]
    assert versions[-1] == int(final["version"])


TOKENS = {"team-a": "dashboard-token-of-team-a-0123", "team-b": "dashboard-token-of-team-b-4567"}


@pytest.fixture
def tenant_server(tmp_path: Path) -> Any:
    path = tmp_path / "tokens"
    hashed = hashlib.sha256(TOKENS["team-b"].encode()).hexdigest()
    path.write_text(f"{TOKENS['team-a']} team-a\nsha256:{hashed} team-b\n")
    thread = ServerThread(
        test_config(auth_tokens_file=str(path)), registry=dashboard_registry
    ).start()
    yield thread
    thread.stop()


def log_in(page: Any, token: str) -> None:
    page.wait_for_selector("#token")
    assert page.is_hidden("#nav")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#tenant")


def test_a_second_tenant_sees_none_of_the_first_tenants_tasks(
    tenant_server: ServerThread, open_page: OpenPage
) -> None:
    first = open_page(tenant_server, "#/submit")
    first.wait_for_selector("#token")
    first.fill("#token", "not-a-token-anyone-was-given")
    first.click("button[type=submit]")
    first.wait_for_selector("#login-error:has-text('not valid')")
    log_in(first, TOKENS["team-a"])
    assert first.inner_text("#tenant") == "Tenant: team-a"
    # The form writes with the session's CSRF token.
    first.select_option("#type", "echo")
    first.fill("#payload", '{"secret": "of team a"}')
    first.click("button[type=submit]")
    first.wait_for_selector("#task-state [data-state='SUCCEEDED']")
    task_id = first.url.rsplit("/", 1)[1]
    first.goto(first.url.split("#")[0] + "#/tasks")
    first.wait_for_selector(f"#task-rows tr[data-id='{task_id}']")

    second = open_page(tenant_server, "#/tasks")
    log_in(second, TOKENS["team-b"])
    assert second.inner_text("#tenant") == "Tenant: team-b"
    second.wait_for_selector("#task-rows:has-text('No tasks match')")
    second.goto(second.url.split("#")[0] + f"#/tasks/{task_id}")
    second.wait_for_selector("h1:has-text('Task not found')")
    second.goto(second.url.split("#")[0] + "#/")
    second.wait_for_selector("#count-SUCCEEDED")
    assert second.inner_text("#count-SUCCEEDED .number") == "0"

    second.click("#logout")
    second.wait_for_selector("#token")
    second.reload()
    second.wait_for_selector("#token")  # the cookie is gone
