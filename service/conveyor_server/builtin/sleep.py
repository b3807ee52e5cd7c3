"""The `sleep` task type: waits, reporting progress; a test and demo type."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from conveyor_server._context import TaskContext
from conveyor_server._handlers import InvalidPayload

MAX_SLEEP_SECONDS = 24 * 3600.0
# Progress is reported at most this often while sleeping.
SLEEP_TICK_SECONDS = 0.1


def validate_sleep(payload: Mapping[str, Any]) -> None:
    seconds = payload.get("seconds", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidPayload(f'"seconds" must be a number, got {type(seconds).__name__}')
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise InvalidPayload(f'"seconds" must be between 0 and {MAX_SLEEP_SECONDS:g}')
    unknown = set(payload) - {"seconds"}
    if unknown:
        raise InvalidPayload(f'sleep takes only "seconds"; unknown: {", ".join(sorted(unknown))}')


def sleep(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Wait `seconds`, reporting progress; stop early when cancelled.

    The payload was checked by `validate_sleep` before the handler runs."""
    seconds = float(payload.get("seconds", 0))
    if seconds <= 0:
        return {"slept": 0.0}
    start = time.monotonic()
    deadline = start + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if ctx.wait(min(SLEEP_TICK_SECONDS, remaining)):
            break
        elapsed = time.monotonic() - start
        ctx.report_progress(
            min(100.0, 100.0 * elapsed / seconds), f"slept {elapsed:.1f}s of {seconds:g}s"
        )
    return {"slept": round(time.monotonic() - start, 3)}
