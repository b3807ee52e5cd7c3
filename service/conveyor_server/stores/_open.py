"""Choosing a store by URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from conveyor_server._config import ServerConfig
from conveyor_server.stores._protocol import TaskStore
from conveyor_server.stores.memory import MemoryStore

SUPPORTED = ("memory://", "sqlite:///path/to/tasks.db", "redis://host:port/db")


def open_store(config: ServerConfig) -> TaskStore:
    url = urlsplit(config.store)
    if url.scheme == "memory":
        return MemoryStore(
            max_queue=config.max_queue,
            retention_count=config.retention_count,
            max_queue_per_tenant=config.max_queue_per_tenant or None,
        )
    if url.scheme == "sqlite":
        from conveyor_server.stores.sqlite.store import SqliteStore

        # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy
        # spells them; the query may set synchronous=full|normal.
        path = url.path[1:] if url.path.startswith("/") else url.path
        if not path:
            raise ValueError(f"store URL {config.store!r} names no database file")
        options = {k: v[-1] for k, v in parse_qs(url.query).items()}
        return SqliteStore(
            path,
            max_queue=config.max_queue,
            retention_count=config.retention_count,
            synchronous=options.get("synchronous", "full"),
            max_queue_per_tenant=config.max_queue_per_tenant or None,
        )
    if url.scheme in ("redis", "rediss"):
        from conveyor_server.stores.redis.store import RedisStore

        return RedisStore(
            config.store,
            max_queue=config.max_queue,
            retention_count=config.retention_count,
            lease_seconds=config.lease_seconds,
            max_queue_per_tenant=config.max_queue_per_tenant or None,
        )
    raise ValueError(f"unsupported store URL {config.store!r}; supported: {', '.join(SUPPORTED)}")
