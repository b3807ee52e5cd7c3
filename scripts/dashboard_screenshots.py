"""Take the dashboard's screenshots in docs/images/ with headless Chromium.

    python scripts/dashboard_screenshots.py

Starts a server on free ports with the test task types, submits a few tasks
of each kind, sets a limit, pauses a type and makes a schedule, and
photographs the overview, one task's page, the task list, the task types and
the schedule with Playwright driving Debian's chromium (apt-get install
chromium).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "client"), str(ROOT / "service")]

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.support.http import Http  # noqa: E402
from tests.support.server import ServerThread, test_config  # noqa: E402

IMAGES = ROOT / "docs" / "images"


def main() -> None:
    server = ServerThread(test_config()).start()
    try:
        http = Http(server)
        for team in ("billing", "reports", "billing"):
            http.post(
                "/v1/tasks", {"type": "echo", "payload": {"team": team}, "labels": {"team": team}}
            )
        http.post(
            "/v1/tasks", {"type": "csv_stats", "payload": {"csv": "name,age\nada,36\nalan,41\n"}}
        )
        http.post(
            "/v1/tasks", {"type": "fail", "payload": {"message": "the report source is down"}}
        )
        http.post("/v1/tasks", {"type": "wait_for_cancel", "payload": {"seconds": 60}})
        task = http.post(
            "/v1/tasks",
            {
                "type": "progress_steps",
                "payload": {"steps": 10, "interval": 0.5},
                "labels": {"team": "reports"},
            },
        ).body["task"]
        http.call(
            "PATCH",
            "/v1/taskTypes/csv_stats",
            {"limits": {"max_running": 4, "max_starts_per_second": 10}},
        )
        http.post("/v1/taskTypes/flaky:pause")
        http.post(
            "/v1/schedules",
            {
                "schedule": {
                    "id": "nightly-report",
                    "cron": "30 3 * * *",
                    "time_zone": "Europe/Paris",
                    "description": "the figures of the day, for the morning",
                    "task": {"type": "csv_stats", "payload": {"csv": "name,age\nada,36\n"}},
                }
            },
        )
        http.post("/v1/schedules/nightly-report:trigger", {})
        base = f"http://127.0.0.1:{server.server.http_port}/"  # type: ignore[union-attr]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(base + "#/")
            page.wait_for_selector("#workers table")
            time.sleep(1)
            page.screenshot(path=str(IMAGES / "dashboard-overview.png"))
            page.goto(base + f"#/tasks/{task['id']}")
            page.wait_for_function(
                "() => Number(document.querySelector('#task-progress [role=progressbar]')"
                "?.getAttribute('aria-valuenow')) >= 60"
            )
            page.screenshot(path=str(IMAGES / "dashboard-task.png"))
            page.goto(base + "#/tasks")
            page.wait_for_selector("#task-rows tr[data-id]")
            page.screenshot(path=str(IMAGES / "dashboard-tasks.png"))
            page.goto(base + "#/types")
            page.wait_for_selector("#type-rows tr[data-type='flaky'][data-paused='true']")
            page.screenshot(path=str(IMAGES / "dashboard-types.png"))
            page.goto(base + "#/schedules/nightly-report")
            page.wait_for_selector("#recent-runs [data-state='SUCCEEDED']")
            page.screenshot(path=str(IMAGES / "dashboard-schedule.png"))
            browser.close()
    finally:
        server.stop()
    print(f"screenshots written to {IMAGES.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
