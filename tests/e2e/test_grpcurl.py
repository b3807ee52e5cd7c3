"""End-to-end tests through grpcurl, as a person at a terminal would use the service.

grpcurl knows nothing of our code: it learns the contract from server reflection
and speaks JSON, so these tests pin what reflection, the JSON mapping of the
contract, the health service and the error codes look like from outside.
grpcurl prints fields by their proto names (`create_time`, not `createTime`),
and int64 fields such as `version` as JSON strings.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import pytest

from tests.support.server import grpcurl_path

pytestmark = pytest.mark.slow

SERVICE = "conveyor.v1.TaskService"
HEALTH = "grpc.health.v1.Health"
TIMEOUT_S = 30.0
METHODS = (
    "SubmitTask",
    "BatchSubmitTasks",
    "GetTask",
    "WatchTask",
    "ListTasks",
    "CancelTask",
    "RetryTask",
    "ListTaskTypes",
    "ListWorkers",
)


GRPCURL = grpcurl_path()


class Grpcurl:
    """Runs grpcurl in plaintext against one server address."""

    def __init__(self, address: str) -> None:
        self.address = address

    def run(self, *words: str, data: Any = None) -> subprocess.CompletedProcess[str]:
        """grpcurl -plaintext [-d DATA] ADDRESS WORDS..., as a person would type it."""
        cmd = [GRPCURL, "-plaintext"]
        if data is not None:
            cmd += ["-d", data if isinstance(data, str) else json.dumps(data)]
        cmd += [self.address, *words]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)

    def ok(self, *words: str, data: Any = None) -> str:
        done = self.run(*words, data=data)
        assert done.returncode == 0, f"grpcurl {' '.join(words)} failed:\n{done.stderr}"
        return done.stdout

    def call(self, method: str, data: Any = None) -> list[dict[str, Any]]:
        """Calls SERVICE/method (or a fully named method) and returns the JSON messages."""
        full = method if "/" in method else f"{SERVICE}/{method}"
        return parse_messages(self.ok(full, data=data if data is not None else {}))

    def call_one(self, method: str, data: Any = None) -> dict[str, Any]:
        messages = self.call(method, data)
        assert len(messages) == 1, messages
        return messages[0]

    def error(self, method: str, data: Any) -> str:
        """Calls a method that must fail; returns grpcurl's stderr."""
        done = self.run(f"{SERVICE}/{method}", data=data)
        assert done.returncode != 0, f"expected an error, got:\n{done.stdout}"
        return done.stderr


def parse_messages(text: str) -> list[dict[str, Any]]:
    """grpcurl prints each message as one JSON object, back to back."""
    decoder = json.JSONDecoder()
    messages: list[dict[str, Any]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        message, position = decoder.raw_decode(text, position)
        messages.append(message)
        while position < len(text) and text[position].isspace():
            position += 1
    return messages


def error_code(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.strip().startswith("Code:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no status code in grpcurl output:\n{stderr}")


def error_message(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.strip().startswith("Message:"):
            return line.split(":", 1)[1].strip()
    return ""


def other_id_like(task_id: str) -> str:
    """An id of the same shape as task_id that no task has: its first alphanumeric changed.

    The first, not the last: the last character of an encoding may carry padding bits.
    """
    chars = list(task_id)
    for index, char in enumerate(chars):
        for family in ("0123456789", "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
            if char in family:
                chars[index] = family[(family.index(char) + 1) % len(family)]
                return "".join(chars)
    raise AssertionError(f"cannot derive an unknown id from {task_id!r}")


@pytest.fixture
def grpcurl(server: Any) -> Grpcurl:
    return Grpcurl(server.address)


def submit(grpcurl: Grpcurl, request: dict[str, Any]) -> dict[str, Any]:
    task: dict[str, Any] = grpcurl.call_one("SubmitTask", request)["task"]
    return task


def watch_to_end(grpcurl: Grpcurl, task_id: str) -> list[dict[str, Any]]:
    return [message["task"] for message in grpcurl.call("WatchTask", {"id": task_id})]


def test_list_shows_the_task_and_health_services(grpcurl: Grpcurl) -> None:
    services = grpcurl.ok("list").split()

    assert SERVICE in services
    assert HEALTH in services


def test_describe_shows_every_method(grpcurl: Grpcurl) -> None:
    text = grpcurl.ok("describe", SERVICE)

    for method in METHODS:
        assert f"rpc {method} (" in text, text
    assert "returns ( stream .conveyor.v1.WatchTaskResponse )" in text


def test_describe_a_message_shows_its_fields(grpcurl: Grpcurl) -> None:
    text = grpcurl.ok("describe", "conveyor.v1.Task")

    for field in ("id", "state", "payload", "progress", "version", "update_time"):
        assert f" {field} = " in text, text


def test_submit_with_json_returns_a_pending_task(grpcurl: Grpcurl) -> None:
    task = submit(grpcurl, {"type": "sleep", "payload": {"seconds": 0.2}})

    assert task["id"]
    assert task["type"] == "sleep"
    assert task["state"] == "TASK_STATE_PENDING"
    assert task["payload"] == {"seconds": 0.2}
    assert "create_time" in task


def test_watch_streams_to_success_then_get_agrees(grpcurl: Grpcurl) -> None:
    task_id = submit(grpcurl, {"type": "sleep", "payload": {"seconds": 0.5}})["id"]

    snapshots = watch_to_end(grpcurl, task_id)

    assert len(snapshots) >= 2, snapshots
    versions = [int(snapshot["version"]) for snapshot in snapshots]
    assert versions == sorted(set(versions)), versions
    assert all(snapshot["id"] == task_id for snapshot in snapshots)
    assert snapshots[-1]["state"] == "TASK_STATE_SUCCEEDED"
    assert all(snapshot["state"] != "TASK_STATE_SUCCEEDED" for snapshot in snapshots[:-1])
    final = grpcurl.call_one("GetTask", {"id": task_id})["task"]
    assert final["state"] == "TASK_STATE_SUCCEEDED"
    assert int(final["version"]) == versions[-1]
    assert "end_time" in final


def test_watch_of_csv_stats_delivers_the_result(grpcurl: Grpcurl) -> None:
    task_id = submit(grpcurl, {"type": "csv_stats", "payload": {"csv": "a,b\n1,x\n2,y\n"}})["id"]

    last = watch_to_end(grpcurl, task_id)[-1]

    assert last["state"] == "TASK_STATE_SUCCEEDED", last
    assert "result" in last


@pytest.mark.parametrize("service", ["", SERVICE])
def test_health_check_is_serving(grpcurl: Grpcurl, service: str) -> None:
    reply = grpcurl.call_one(f"{HEALTH}/Check", {"service": service})

    assert reply == {"status": "SERVING"}


def test_unknown_task_type_is_invalid_argument(grpcurl: Grpcurl) -> None:
    stderr = grpcurl.error("SubmitTask", {"type": "no_such_type", "payload": {}})

    assert error_code(stderr) == "InvalidArgument", stderr
    assert "no_such_type" in error_message(stderr), stderr


def test_unknown_id_is_not_found(grpcurl: Grpcurl) -> None:
    known = submit(grpcurl, {"type": "echo", "payload": {}})["id"]
    unknown = other_id_like(known)

    for method in ("GetTask", "CancelTask", "RetryTask", "WatchTask"):
        stderr = grpcurl.error(method, {"id": unknown})
        assert error_code(stderr) == "NotFound", (method, stderr)


@pytest.mark.parametrize("bad_id", ["", "not an id!", "../" + "x" * 300])
def test_malformed_id_is_invalid_argument(grpcurl: Grpcurl, bad_id: str) -> None:
    stderr = grpcurl.error("GetTask", {"id": bad_id})

    assert error_code(stderr) == "InvalidArgument", stderr
    assert error_message(stderr), stderr


def test_cancel_of_a_succeeded_task_is_failed_precondition(grpcurl: Grpcurl) -> None:
    task_id = submit(grpcurl, {"type": "echo", "payload": {"hello": "world"}})["id"]
    assert watch_to_end(grpcurl, task_id)[-1]["state"] == "TASK_STATE_SUCCEEDED"

    stderr = grpcurl.error("CancelTask", {"id": task_id})

    assert error_code(stderr) == "FailedPrecondition", stderr


def test_cancel_of_a_running_task_ends_cancelled(grpcurl: Grpcurl) -> None:
    task_id = submit(grpcurl, {"type": "sleep", "payload": {"seconds": 30}})["id"]

    grpcurl.call_one("CancelTask", {"id": task_id})

    assert watch_to_end(grpcurl, task_id)[-1]["state"] == "TASK_STATE_CANCELLED"


def test_list_tasks_filters_by_label_state_and_type(grpcurl: Grpcurl) -> None:
    run_label = {"e2e-run": uuid.uuid4().hex}
    echo_ids = [
        submit(grpcurl, {"type": "echo", "payload": {"n": n}, "labels": run_label})["id"]
        for n in range(3)
    ]
    sleeper = submit(grpcurl, {"type": "sleep", "payload": {"seconds": 30}, "labels": run_label})
    for task_id in echo_ids:
        assert watch_to_end(grpcurl, task_id)[-1]["state"] == "TASK_STATE_SUCCEEDED"
    try:
        everything = grpcurl.call_one("ListTasks", {"labels": run_label})
        listed = [task["id"] for task in everything["tasks"]]
        # Newest first.
        assert listed == [sleeper["id"], *reversed(echo_ids)], listed

        succeeded = grpcurl.call_one(
            "ListTasks", {"labels": run_label, "states": ["TASK_STATE_SUCCEEDED"]}
        )
        assert sorted(task["id"] for task in succeeded["tasks"]) == sorted(echo_ids)

        sleeps = grpcurl.call_one("ListTasks", {"labels": run_label, "type": "sleep"})
        assert [task["id"] for task in sleeps["tasks"]] == [sleeper["id"]]

        first_page = grpcurl.call_one("ListTasks", {"labels": run_label, "page_size": 2})
        assert len(first_page["tasks"]) == 2
        token = first_page["next_page_token"]
        second_page = grpcurl.call_one(
            "ListTasks", {"labels": run_label, "page_size": 2, "page_token": token}
        )
        paged = [task["id"] for task in first_page["tasks"] + second_page["tasks"]]
        assert paged == listed
        assert not second_page.get("next_page_token")
    finally:
        grpcurl.call_one("CancelTask", {"id": sleeper["id"]})
