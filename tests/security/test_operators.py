"""Task types are shared by every tenant: with tokens on, only the tenants
--operator-tenants names may change their limits or pause them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor import Client, PermissionDenied
from tests.support.http import Http
from tests.support.server import ServerThread


@pytest.fixture
def operated(make_server: Callable[..., ServerThread], tokens_file: Path) -> ServerThread:
    return make_server(auth_tokens_file=str(tokens_file), operator_tenants="team-a")


def test_only_operator_tenants_change_task_types(
    operated: ServerThread, tokens: dict[str, str]
) -> None:
    with (
        Client(operated.address, token=tokens["team-a"], timeout=5) as operator,
        Client(operated.address, token=tokens["team-b"], timeout=5) as tenant,
    ):
        for change in (
            lambda: tenant.update_task_type("echo", max_running=1),
            lambda: tenant.pause_task_type("echo"),
            lambda: tenant.resume_task_type("echo"),
        ):
            with pytest.raises(PermissionDenied, match="--operator-tenants"):
                change()
        assert operator.update_task_type("echo", max_running=3).limits.max_running == 3
        assert operator.pause_task_type("echo").paused
        # Every tenant sees the shared settings.
        [echo] = [t for t in tenant.task_types() if t.name == "echo"]
        assert echo.paused and echo.limits.max_running == 3
        assert not operator.resume_task_type("echo").paused

    refused = Http(operated, token=tokens["team-b"]).post("/v1/taskTypes/echo:pause")
    assert refused.status == 403
    assert "--operator-tenants" in refused.body["message"]
    allowed = Http(operated, token=tokens["team-a"]).call(
        "PATCH", "/v1/taskTypes/echo", {"limits": {"burst": 2}, "update_mask": "burst"}
    )
    assert allowed.status == 200 and allowed.body["task_type"]["limits"]["burst"] == 2


def test_with_tokens_and_no_operator_nobody_changes_task_types(
    make_server: Callable[..., ServerThread], tokens_file: Path, tokens: dict[str, str]
) -> None:
    server = make_server(auth_tokens_file=str(tokens_file))
    with Client(server.address, token=tokens["team-a"], timeout=5) as client:
        with pytest.raises(PermissionDenied):
            client.pause_task_type("echo")
        assert not next(t for t in client.task_types() if t.name == "echo").paused


def test_an_operator_tenant_name_is_checked(make_server: Callable[..., ServerThread]) -> None:
    with pytest.raises(ValueError, match="operator_tenants: tenant 'no way'"):
        make_server(operator_tenants="ops,no way")
