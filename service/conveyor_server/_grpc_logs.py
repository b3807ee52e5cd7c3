"""Quiets a log line of gRPC's that any caller could repeat at will.

gRPC's Python server decodes every metadata value as UTF-8 before any
interceptor runs; when one is not (a Latin-1 header, say), it logs an ERROR
with a traceback on `grpc._cython.cygrpc` and goes on with the value read as
Latin-1. Every caller, authenticated or not, could so add a traceback to the
log with each call. A filter on that one logger drops those records and
says once a minute, without the value, how many calls it dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

GRPC_LOGGER = "grpc._cython.cygrpc"
_UNDECODABLE = "Invalid encoding on"
WARNING_INTERVAL_SECONDS = 60.0


class UndecodableMetadataFilter(logging.Filter):
    """Drops gRPC's traceback for metadata that is not UTF-8, and warns of
    such calls at most once per interval."""

    def __init__(
        self,
        interval: float = WARNING_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._next_warning: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(_UNDECODABLE)):
            return True
        now = self._clock()
        with self._lock:
            self._count += 1
            if self._next_warning is not None and now < self._next_warning:
                return False
            count, self._count = self._count, 0
            self._next_warning = now + self._interval
        logger.warning(
            "%d call%s carried metadata that is not UTF-8; served with the values read as "
            "Latin-1 (this line comes at most once every %g s)",
            count,
            "" if count == 1 else "s",
            self._interval,
        )
        return False


_install_lock = threading.Lock()


def quiet_undecodable_metadata() -> None:
    """Put the filter on gRPC's logger, once per process."""
    target = logging.getLogger(GRPC_LOGGER)
    with _install_lock:
        if not any(isinstance(f, UndecodableMetadataFilter) for f in target.filters):
            target.addFilter(UndecodableMetadataFilter())
