"""HTTP requests are counted like RPCs: by route and status."""

from __future__ import annotations

from collections.abc import Callable

from tests.ops.test_metrics import scrape, value
from tests.support.http import Http
from tests.support.server import ServerThread, free_port

TOKEN = "metrics-http-token-0123456789"


def test_requests_are_counted_and_timed_by_route_and_status(
    make_server: Callable[..., ServerThread],
) -> None:
    thread = make_server(metrics_port=free_port(), auth_tokens=f"{TOKEN}=team")
    assert thread.server is not None and thread.server.metrics_port is not None
    http = Http(thread, TOKEN)
    task_id = http.post("/v1/tasks", {"type": "echo"}).body["task"]["id"]
    http.post("/v1/tasks", {"type": "echo"})
    http.post("/v1/tasks", {"type": "no_such_type"})
    http.get(f"/v1/tasks/{task_id}")
    http.get("/v1/tasks/missing-task")
    Http(thread).get("/v1/tasks")  # no token
    http.get("/v1/no-such-route")
    stream = http.open_events(f"/v1/tasks/{task_id}:watch")
    stream.read()

    families = scrape(thread.server.metrics_port)
    counted = "conveyor_http_requests_handled_total"
    assert value(families, counted, route="POST /v1/tasks", status="200") == 2
    assert value(families, counted, route="POST /v1/tasks", status="400") == 1
    assert value(families, counted, route="GET /v1/tasks/{id}", status="200") == 1
    assert value(families, counted, route="GET /v1/tasks/{id}", status="404") == 1
    assert value(families, counted, route="GET /v1/tasks", status="401") == 1
    assert value(families, counted, route="GET /v1/tasks/{id}:watch", status="200") == 1
    assert value(families, counted, route="unmatched", status="404") == 1
    timed = "conveyor_http_request_duration_seconds_count"
    assert value(families, timed, route="POST /v1/tasks", status="200") == 2
    # Event streams are counted, not timed.
    assert value(families, timed, route="GET /v1/tasks/{id}:watch", status="200") == 0
    # The tasks are counted as the gRPC ones are.
    assert value(families, "conveyor_tasks_submitted_total", type="echo", tenant="team") == 2
    # No RPC was made.
    assert value(families, "conveyor_rpcs_handled_total", method="SubmitTask", code="OK") == 0
