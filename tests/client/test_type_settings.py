"""Task type limits and pause: the update mask the SDK builds, then both
clients against a fresh real server (its settings are the test's own)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from conveyor import Client, InvalidArgument, PendingReason, TaskState, TaskTypeLimits
from conveyor._type_settings import update_request

Connect = Callable[..., AbstractContextManager[Client]]
UNSET: dict[Any, float | None] = {
    "max_running": None,
    "max_running_per_key": None,
    "max_starts_per_second": None,
    "burst": None,
}

# --- the update mask, without a server --------------------------------------------------


def test_the_mask_names_exactly_the_limits_given() -> None:
    request = update_request("email", {**UNSET, "max_running": 4, "burst": 0}, False)
    assert sorted(request.update_mask.paths) == ["burst", "max_running"]
    assert (request.limits.max_running, request.limits.burst) == (4, 0)
    assert not request.restore_defaults


def test_restoring_every_default_sends_an_empty_mask() -> None:
    request = update_request("email", UNSET, True)
    assert request.restore_defaults
    assert list(request.update_mask.paths) == []


def test_restoring_some_defaults_names_them() -> None:
    request = update_request("email", UNSET, ["max_running", "burst"])
    assert request.restore_defaults
    assert list(request.update_mask.paths) == ["max_running", "burst"]


def test_an_update_that_names_nothing_is_refused() -> None:
    # An empty mask would set all four limits to 0 on the service.
    with pytest.raises(ValueError, match="at least one limit"):
        update_request("email", UNSET, False)


def test_setting_and_restoring_at_once_is_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        update_request("email", {**UNSET, "max_running": 1}, True)


def test_an_unknown_limit_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown limits"):
        update_request("email", UNSET, ["max_workers"])  # type: ignore[list-item]


# --- both clients against a fresh server ------------------------------------------------


@pytest.fixture
def fresh(make_server: Callable[..., Any], connect: Connect) -> Iterator[Client]:
    """Either client, on a server of the test's own."""
    with connect(make_server().address, timeout=5.0) as client:
        yield client


def _echo(client: Client) -> Any:
    [echo] = [t for t in client.task_types() if t.name == "echo"]
    return echo


def test_update_task_type_changes_only_the_limits_given(fresh: Client) -> None:
    updated = fresh.update_task_type("echo", max_running=2, max_starts_per_second=5.5)
    assert updated.limits == TaskTypeLimits(max_running=2, max_starts_per_second=5.5)
    assert updated.default_limits == TaskTypeLimits()
    updated = fresh.update_task_type("echo", burst=3)
    assert updated.limits == TaskTypeLimits(max_running=2, max_starts_per_second=5.5, burst=3)
    assert _echo(fresh).limits == updated.limits

    restored = fresh.update_task_type("echo", restore_defaults=["max_running"])
    assert restored.limits == TaskTypeLimits(max_starts_per_second=5.5, burst=3)
    assert fresh.update_task_type("echo", restore_defaults=True).limits == TaskTypeLimits()


def test_a_negative_limit_is_invalid_argument(fresh: Client) -> None:
    with pytest.raises(InvalidArgument) as caught:
        fresh.update_task_type("echo", max_running=-1)
    assert any("max_running" in field for field, _ in caught.value.field_violations)


def test_pause_holds_new_tasks_until_resume(fresh: Client) -> None:
    assert fresh.pause_task_type("echo").paused
    handle = fresh.submit("echo", {"n": 1})
    waiting = fresh.get(handle.id)
    assert waiting.state is TaskState.PENDING
    assert waiting.pending_reason is PendingReason.TYPE_PAUSED
    assert _echo(fresh).paused
    assert _echo(fresh).pending == 1

    assert not fresh.resume_task_type("echo").paused
    assert handle.result(timeout=10) == {"n": 1}
    assert _echo(fresh).pending == 0
