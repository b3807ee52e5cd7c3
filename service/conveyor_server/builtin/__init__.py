"""Task types every server has: `sleep`, `csv_stats` and `image`, and
`send_email` where an SMTP server is configured.

The type modules are imported when registered, so that the configuration
can use `smtp_settings` without loading the image library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor_server._config import ServerConfig
    from conveyor_server._handlers import HandlerRegistry


def register_builtin_tasks(registry: HandlerRegistry, config: ServerConfig) -> None:
    from conveyor_server.builtin import csv_stats, sleep

    registry.register("sleep", sleep.sleep, validate=sleep.validate_sleep, example={"seconds": 2})
    registry.register(
        "csv_stats",
        csv_stats.csv_stats,
        validate=csv_stats.validate_csv_stats,
        example={"csv": "name,age\nada,36\nalan,41\n"},
    )
    from conveyor_server.builtin import image

    registry.register(
        "image",
        image.image_handler(config.max_result_bytes),
        validate=image.validate_image,
        example=image.EXAMPLE,
    )
    if config.smtp_url:
        # Without an SMTP server the type is not registered, rather than
        # registered to refuse: on a shared store an API replica without
        # --smtp-url then accepts send_email for the workers that have it.
        from conveyor_server.builtin import send_email, smtp_settings

        settings = smtp_settings.parse_smtp_settings(config.smtp_url, config.smtp_from)
        registry.register(
            "send_email",
            send_email.send_email_handler(settings),
            validate=send_email.validate_send_email,
            example=send_email.EXAMPLE,
        )
