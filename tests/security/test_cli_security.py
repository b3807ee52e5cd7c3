"""The `conveyor` command line over TLS, mutual TLS and with a token."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conveyor._cli_commands import cli
from tests.support.server import ServerThread


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["--timeout", "5", *args], env=env)


def tls_options(pki: Any) -> list[str]:
    return ["--ca", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key)]


def test_submit_and_get_over_mtls_with_a_token(
    secure_server: ServerThread, pki: Any, tokens: dict[str, str]
) -> None:
    options = ["--address", secure_server.address, *tls_options(pki), "--token", tokens["team-a"]]

    submitted = run(*options, "--json", "submit", "echo", "--payload", '{"a": 1}', "--wait")
    assert submitted.exit_code == 0, submitted.output
    task = json.loads(submitted.stdout)
    assert task["state"] == "TASK_STATE_SUCCEEDED"

    listed = run(*options, "--json", "list")
    assert listed.exit_code == 0, listed.output
    assert task["id"] in [t["id"] for t in json.loads(listed.stdout)]


def test_settings_come_from_the_environment(
    secure_server: ServerThread, pki: Any, tokens: dict[str, str]
) -> None:
    env = {
        "CONVEYOR_ADDRESS": secure_server.address,
        "CONVEYOR_CA": str(pki.ca),
        "CONVEYOR_CERT": str(pki.client_cert),
        "CONVEYOR_KEY": str(pki.client_key),
        "CONVEYOR_TOKEN": tokens["team-b"],
    }

    result = run("submit", "echo", env=env)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip()


def test_tls_flag_alone_uses_the_system_roots(
    make_server: Any, tls_settings: dict[str, str]
) -> None:
    server = make_server(**tls_settings)

    # The test CA is not among the system's roots: the handshake fails.
    result = run("--address", server.address, "--tls", "list")

    assert result.exit_code == 1
    assert "error: UNAVAILABLE" in result.stderr


def test_without_a_token_the_error_says_what_to_send(secure_server: ServerThread, pki: Any) -> None:
    result = run("--address", secure_server.address, *tls_options(pki), "list")

    assert result.exit_code == 1
    assert "error: UNAUTHENTICATED" in result.stderr
    assert "authorization: Bearer <token>" in result.stderr


def test_another_tenants_task_is_not_found(
    secure_server: ServerThread, pki: Any, tokens: dict[str, str]
) -> None:
    base = ["--address", secure_server.address, *tls_options(pki)]
    task_id = run(*base, "--token", tokens["team-a"], "submit", "echo").stdout.strip()

    result = run(*base, "--token", tokens["team-b"], "get", task_id)

    assert result.exit_code == 1
    assert "error: NOT_FOUND" in result.stderr


def test_mtls_without_a_client_certificate_fails(
    secure_server: ServerThread, pki: Any, tokens: dict[str, str]
) -> None:
    result = run(
        "--address", secure_server.address, "--ca", str(pki.ca), "--token", tokens["team-a"], "list"
    )

    assert result.exit_code == 1
    assert "error: UNAVAILABLE" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cert", "{cert}"], "give --cert and --key together"),
        (["--ca", "/no/such/ca.pem"], "does not exist"),
        (["--token", "two words"], "printable ASCII"),
    ],
)
def test_bad_security_options_are_usage_errors(pki: Any, args: list[str], message: str) -> None:
    args = [arg.format(cert=pki.client_cert) for arg in args]

    result = run("--address", "127.0.0.1:1", *args, "list")

    assert result.exit_code == 2
    assert message in result.stderr
