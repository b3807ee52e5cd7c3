"""ServerConfig: defaults, environment variables, flags, and refusals."""

from __future__ import annotations

import re

import pytest

from conveyor_server import ServerConfig
from conveyor_server._main import config_from_args


def test_defaults_are_the_documented_ones() -> None:
    config = ServerConfig()
    assert (config.port, config.workers, config.max_queue) == (50051, 16, 100_000)
    assert config.max_payload_bytes == 256 * 1024
    assert config.store == "memory://"


def test_environment_mirrors_every_kind_of_field() -> None:
    config = ServerConfig.from_env(
        {
            "CONVEYOR_PORT": "6000",
            "CONVEYOR_MAX_QUEUE": "1_000",
            "CONVEYOR_RETENTION_SECONDS": "2.5",
            "CONVEYOR_UVLOOP": "off",
            "CONVEYOR_TASKS": "a.tasks, b.tasks",
            "CONVEYOR_HOST": "127.0.0.1",
        }
    )
    assert config.port == 6000
    assert config.max_queue == 1000
    assert config.retention_seconds == 2.5
    assert config.uvloop is False
    assert config.tasks == ("a.tasks", "b.tasks")
    assert config.host == "127.0.0.1"


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_WORKERS", "3")
    monkeypatch.setenv("CONVEYOR_PORT", "7000")
    config = config_from_args(["--workers", "5", "--tasks", "x.tasks", "--tasks", "y.tasks"])
    assert config.workers == 5
    assert config.port == 7000
    assert config.tasks == ("x.tasks", "y.tasks")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONVEYOR_WORKERS": "many"}, "CONVEYOR_WORKERS='many' is not a valid int"),
        ({"CONVEYOR_WORKERS": "-1"}, "workers must not be negative"),
        ({"CONVEYOR_WORKERS": "0"}, "workers=0 runs no tasks, which needs a shared store"),
        ({"CONVEYOR_LEASE_SECONDS": "0.5"}, "lease_seconds must be at least 1"),
        ({"CONVEYOR_PORT": "70000"}, "port must be 0-65535"),
        ({"CONVEYOR_UVLOOP": "maybe"}, "CONVEYOR_UVLOOP='maybe' is not a valid bool"),
        ({"CONVEYOR_STOP_GRACE_SECONDS": "-1"}, "stop_grace_seconds must not be negative"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ServerConfig.from_env(env)


def test_help_shows_each_real_default_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        config_from_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 50051)" in text
    assert "[CONVEYOR_MAX_QUEUE]" in text
    assert "(default: None)" not in text


def test_a_task_with_the_largest_payload_and_result_fits_in_a_message() -> None:
    assert ServerConfig().max_result_bytes == 1024 * 1024
    with pytest.raises(ValueError, match="raise max_message_bytes"):
        ServerConfig(max_result_bytes=16 * 1024 * 1024)
    ServerConfig(max_result_bytes=16 * 1024 * 1024, max_message_bytes=17 * 1024 * 1024)
