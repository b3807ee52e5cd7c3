"""Opening a RedisStore's connections from its URL."""

from __future__ import annotations

import math
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

CONNECT_TIMEOUT_SECONDS = 3.0
READ_TIMEOUT_SECONDS = 5.0
DEFAULT_PREFIX = "conveyor"
DEFAULT_LEASE_MARGIN = 2.0
_KEEPALIVE: dict[int, int] = {
    option: value
    for option, value in (
        (getattr(socket, "TCP_KEEPIDLE", None), 10),
        (getattr(socket, "TCP_KEEPINTVL", None), 5),
        (getattr(socket, "TCP_KEEPCNT", None), 3),
    )
    if option is not None
}

# Redis cannot be reached, or cannot take writes now (full under a noeviction
# policy, a replica during failover): the call may be retried later.
DOWN = (RedisConnectionError, RedisTimeoutError, OSError, OutOfMemoryError, ReadOnlyError)


@dataclass(frozen=True, slots=True)
class Connection:
    """What a store URL opens: the key prefix, the lease margin, a client
    for scripts and one for pub/sub."""

    prefix: str
    lease_margin: float
    where: str
    redis: Redis
    pubsub_redis: Redis


def connect(url: str) -> Connection:
    """Parse the store URL (its own options: `prefix`, `lease_margin`; the
    rest go to the Redis client) and create the clients; nothing is sent
    until the first call."""
    parts = urlsplit(url)
    prefix = DEFAULT_PREFIX
    margin = DEFAULT_LEASE_MARGIN
    passed: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        elif name == "lease_margin":
            try:
                margin = float(value)
            except ValueError:
                margin = math.nan
            if not (math.isfinite(margin) and margin >= 0):
                raise ValueError(
                    f"store URL option lease_margin must be a number of seconds "
                    f"of 0 or more, got {value!r}"
                )
        else:
            passed.append((name, value))
    if not prefix:
        raise ValueError("store URL option prefix must not be empty")
    client_url = urlunsplit(parts._replace(query=urlencode(passed)))
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_timeout": READ_TIMEOUT_SECONDS,
        # Names the store's connections in CLIENT LIST (no spaces allowed).
        "client_name": "conveyor:" + re.sub(r"[^!-~]", "_", prefix),
        # A Redis host that vanishes without closing the connection is
        # noticed in about 25 s, not the system's default two hours: the
        # pub/sub listener blocks on its read with no timeout of its own.
        "socket_keepalive": True,
        "socket_keepalive_options": _KEEPALIVE,
    }
    return Connection(
        prefix=prefix,
        lease_margin=margin,
        where=f"Redis at {parts.hostname or 'localhost'}:{parts.port or 6379}",
        # One retry, on a fresh connection, for a pooled connection that
        # died (a Redis restart). The script may have run before the
        # connection dropped: the calls that must not act twice carry a key
        # that makes the repeat answer as the first (RedisStore._run).
        # Timeouts are not retried: a script may still be running.
        redis=Redis.from_url(
            client_url,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            **options,
        ),
        # Pub/sub on its own client that never reconnects by itself: the
        # listener must know of every reconnect, to catch up on what it missed.
        pubsub_redis=Redis.from_url(
            client_url, retry=Retry(NoBackoff(), 0), health_check_interval=10, **options
        ),
    )
