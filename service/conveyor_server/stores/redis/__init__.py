"""`redis://host:port/db`: one store shared by several processes (see `store`)."""

from conveyor_server.stores.redis.store import RedisStore

__all__ = ["RedisStore"]
