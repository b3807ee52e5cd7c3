"""A real headless Chromium driven by Playwright, against a real server.

The browser is Debian's `chromium` (scripts/dev.py installs it): Playwright
cannot download its own builds on these machines. Without it the tests skip,
and under CI=true they fail, as the Redis tests do.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor_server import HandlerRegistry, NonRetryableError, TaskContext
from tests.support.http import Http
from tests.support.server import ServerThread, need_server, test_config, test_registry

CHROMIUM = Path(os.environ.get("CONVEYOR_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# How long a page may take to show what a test waits for.
WAIT_MS = 15_000

OpenPage = Callable[[ServerThread, str], Any]


# One browser per module, not per session: Playwright's sync API keeps an
# event loop running in this thread while it lives, and every asyncio test
# after it would fail to start its own.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        need_server(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[ServerThread, str], Any]]:
    """open_page(server, "#/tasks"): a page in a fresh browser context (its
    own cookies), at that place of the server's dashboard."""
    contexts: list[Any] = []

    def open_(server: ServerThread, fragment: str = "#/") -> Any:
        assert server.server is not None
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.errors = errors
        page.goto(f"{dashboard_url(server)}/{fragment}")
        return page

    yield open_
    for context in contexts:
        context.close()


def submit(server: ServerThread, request: dict[str, Any]) -> str:
    """Submit over HTTP; the new task's id."""
    reply = Http(server).post("/v1/tasks", request)
    assert reply.status == 200, reply.body
    task_id: str = reply.body["task"]["id"]
    return task_id


def wait_state(page: Any, state: str) -> None:
    """Wait until a task's page shows the task in `state`."""
    page.wait_for_selector(f"#task-state [data-state='{state}']", timeout=WAIT_MS)


def dashboard_url(server: ServerThread) -> str:
    assert server.server is not None
    return f"http://127.0.0.1:{server.server.http_port}"


# Which tasks already failed once, by their payload's "key".
_failed_once: set[str] = set()
_failed_lock = threading.Lock()

dashboard_registry = HandlerRegistry()
dashboard_registry.update(test_registry)


@dashboard_registry.task("fail_once")
def fail_once(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Fails the first time it runs for a key, succeeds after: a task to retry."""
    with _failed_lock:
        first = payload["key"] not in _failed_once
        _failed_once.add(payload["key"])
    if first:
        raise NonRetryableError("the first run fails on purpose")
    return {"key": payload["key"], "ran": "again"}


@dashboard_registry.task("limited", max_running=2, example={"word": "hello"})
def limited(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Echoes its payload; declares a limit, for the pages that show,
    change and pause a type's limits."""
    return payload


@pytest.fixture(scope="module")
def dashboard_server() -> Iterator[ServerThread]:
    """A server shared by a module's browser tests, with the test types."""
    thread = ServerThread(test_config(), registry=dashboard_registry).start()
    yield thread
    thread.stop()


@pytest.fixture
def own_dashboard_server() -> Iterator[ServerThread]:
    """A server of one test's own, with the test types: for a test that
    pauses a type or changes its limits, which the next test must not see."""
    thread = ServerThread(test_config(), registry=dashboard_registry).start()
    yield thread
    thread.stop()
