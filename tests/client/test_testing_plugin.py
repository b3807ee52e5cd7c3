"""The pytest plugin of conveyor.testing: its fixtures in a user's test
run, and its registration under the `pytest11` entry point."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from conveyor.testing import _plugin
from tests.support.plugin import plugin_arguments

USER_CONFTEST = """
import pytest
from conveyor_server import HandlerRegistry

registry = HandlerRegistry()

@registry.task("greet")
def greet(ctx, payload):
    if not payload.get("name"):
        raise ValueError("a greeting needs a name")
    return {"greeting": f"Hello, {payload['name']}!"}

@pytest.fixture
def conveyor_registry():
    return registry
"""

USER_TESTS = """
import pytest
from conveyor import TaskState

def test_greets(conveyor_server, conveyor_client):
    handle = conveyor_client.submit("greet", {"name": "Ada"})
    conveyor_server.run_until_idle()
    assert handle.get().result == {"greeting": "Hello, Ada!"}

def test_a_missing_name_fails(conveyor_server, conveyor_client):
    handle = conveyor_client.submit("greet", {})
    conveyor_server.run_until_idle()
    task = handle.get()
    assert task.state is TaskState.FAILED
    assert "needs a name" in task.error.message

@pytest.mark.asyncio
async def test_greets_from_async_code(conveyor_server, conveyor_async_client):
    handle = await conveyor_async_client.submit("greet", {"name": "Grace"})
    assert (await handle.result(timeout=10)) == {"greeting": "Hello, Grace!"}

def test_a_user_test_can_fail(conveyor_server, conveyor_client):
    handle = conveyor_client.submit("greet", {"name": "Ada"})
    conveyor_server.run_until_idle()
    assert handle.get().result == {"greeting": "Goodbye"}
"""


def test_the_fixtures_run_a_users_handlers(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_user=USER_TESTS)

    outcome = pytester.runpytest(*plugin_arguments(), "-p", "no:cacheprovider")

    outcome.assert_outcomes(passed=3, failed=1)
    outcome.stdout.fnmatch_lines(["*test_a_user_test_can_fail*", "*Goodbye*"])


def test_the_plugin_is_registered_with_pytest() -> None:
    pyproject = tomllib.loads(
        (Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    )
    assert pyproject["project"]["entry-points"]["pytest11"] == {"conveyor": _plugin.__name__}
