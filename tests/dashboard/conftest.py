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


@pytest.fixture(scope="module")
def dashboard_server() -> Iterator[ServerThread]:
    """A server shared by a module's browser tests, with the test types."""
    thread = ServerThread(test_config(), registry=dashboard_registry).start()
    yield thread
    thread.stop()
