"""The task options of `conveyor submit` that `conveyor schedule create`
shares: the payload (--payload, --payload-file) and --label."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO, Any

import click


def parse_labels(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        labels[key] = value
    return labels


label_option = click.option(
    "--label",
    "labels",
    multiple=True,
    callback=parse_labels,
    metavar="KEY=VALUE",
    help="A label; repeat for several.",
)


def read_payload(text: str | None, file: IO[str] | None) -> dict[str, Any] | None:
    """The payload given as --payload or --payload-file (not both), or None."""
    if text is not None and file is not None:
        raise click.UsageError("give --payload or --payload-file, not both")
    if file is not None:
        text, source = file.read(), "--payload-file"
    else:
        source = "--payload"
    if text is None:
        return None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=source) from None
    if not isinstance(payload, dict):
        raise click.BadParameter("the payload must be a JSON object", param_hint=source)
    return payload
