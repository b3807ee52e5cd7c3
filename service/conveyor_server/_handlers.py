"""Task handlers: plain functions registered under a task type."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from conveyor_server._limits import declared_limits
from conveyor_server.stores import TypeLimits

if TYPE_CHECKING:
    from conveyor_server._context import TaskContext

JSONValue = Any
"""What a handler may return: None, bool, int, float, str, lists and dicts
of those with string keys."""

TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")


class TaskHandler(Protocol):
    """`handler(ctx, payload) -> JSON-compatible result`, run on a worker
    thread; or `async def handler(ctx, payload)`, run on the runner's loop
    for async handlers."""

    def __call__(self, ctx: TaskContext, payload: dict[str, Any], /) -> JSONValue: ...


class PayloadValidator(Protocol):
    """Checks a payload at submit time; raises InvalidPayload to refuse it."""

    def __call__(self, payload: Mapping[str, Any], /) -> None: ...


class NonRetryableError(Exception):
    """Raise from a handler to fail the task at once, without further attempts."""


class InvalidPayload(NonRetryableError):
    """The payload cannot be processed; the message says what to fix.

    Raised by a payload validator, it refuses the submit with
    INVALID_ARGUMENT; raised by a handler it fails the task for good.
    `field` names the part of the payload at fault (`to[1]`), so that the
    field violation points at it (`payload.to[1]`).
    """

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Registration:
    type: str
    handler: TaskHandler
    validate: PayloadValidator | None = None
    # A payload to show callers (ListTaskTypes, `conveyor types`).
    example: Mapping[str, Any] | None = None
    # The limits the handler declares: every process that runs it writes
    # them to the store at start, as the type's defaults.
    limits: TypeLimits = field(default_factory=TypeLimits)

    @property
    def is_async(self) -> bool:
        """True for an `async def` handler, run on the runner's handler loop."""
        return is_async_handler(self.handler)

    @property
    def description(self) -> str:
        """The first paragraph of the handler's docstring, on one line."""
        doc = inspect.getdoc(self.handler) or ""
        return " ".join(doc.split("\n\n", 1)[0].split())


def is_async_handler(handler: Callable[..., Any]) -> bool:
    """True for an `async def` function, or an object whose `__call__` is one."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - the method, not callability
    )


H = TypeVar("H", bound=TaskHandler)


class HandlerRegistry:
    """Maps task types to handlers.

    >>> registry = HandlerRegistry()
    >>> @registry.task("greet")
    ... def greet(ctx, payload):
    ...     return f"hello {payload['name']}"
    """

    def __init__(self) -> None:
        self._registrations: dict[str, Registration] = {}

    def register(
        self,
        type: str,
        handler: TaskHandler,
        *,
        validate: PayloadValidator | None = None,
        example: Mapping[str, Any] | None = None,
        max_running: int | None = None,
        max_running_per_key: int | None = None,
        max_starts_per_second: float | None = None,
        burst: int | None = None,
    ) -> None:
        """Register `handler` for `type`; the limits are the type's defaults
        (see `task`). A ValueError says what is wrong."""
        if not TYPE_NAME.fullmatch(type):
            raise ValueError(
                f"task type {type!r} must start with a letter or underscore and use only "
                "letters, digits and . _ : - (at most 128 characters)"
            )
        limits = declared_limits(
            type,
            {
                "max_running": max_running,
                "max_running_per_key": max_running_per_key,
                "max_starts_per_second": max_starts_per_second,
                "burst": burst,
            },
        )
        if example is not None:
            try:
                json.dumps(example)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"the example payload of task type {type!r} must be JSON-compatible: {exc}"
                ) from None
            if validate is not None:
                # An example the type's own check refuses would mislead.
                validate(example)
        self._add(Registration(type, handler, validate, example, limits))

    def _add(self, registration: Registration) -> None:
        if registration.type in self._registrations:
            raise ValueError(f"task type {registration.type!r} is already registered")
        self._registrations[registration.type] = registration

    def task(
        self,
        type: str,
        *,
        validate: PayloadValidator | None = None,
        example: Mapping[str, Any] | None = None,
        max_running: int | None = None,
        max_running_per_key: int | None = None,
        max_starts_per_second: float | None = None,
        burst: int | None = None,
    ) -> Callable[[H], H]:
        """Decorator form of `register`."""

        def decorate(handler: H) -> H:
            self.register(
                type,
                handler,
                validate=validate,
                example=example,
                max_running=max_running,
                max_running_per_key=max_running_per_key,
                max_starts_per_second=max_starts_per_second,
                burst=burst,
            )
            return handler

        return decorate

    def update(self, other: HandlerRegistry) -> None:
        for registration in other:
            self._add(registration)

    def get(self, type: str) -> Registration | None:
        return self._registrations.get(type)

    def __contains__(self, type: object) -> bool:
        return type in self._registrations

    def __iter__(self) -> Iterator[Registration]:
        return iter(list(self._registrations.values()))

    def types(self) -> list[str]:
        return sorted(self._registrations)


default_registry = HandlerRegistry()
"""Where `@task` registers; `conveyor-server --tasks module` imports the
module so its decorators run."""


def task(
    type: str,
    *,
    validate: PayloadValidator | None = None,
    example: Mapping[str, Any] | None = None,
    max_running: int | None = None,
    max_running_per_key: int | None = None,
    max_starts_per_second: float | None = None,
    burst: int | None = None,
) -> Callable[[H], H]:
    """Register a handler on the default registry.

    `validate` checks payloads where the handler code is: at submit on a
    server that has it, else when a worker claims the task. `example` is a
    payload shown to callers by ListTaskTypes; the handler's docstring is
    the type's description.

    The limits hold across every process of the store; a task over one
    waits PENDING, it never fails because of it. `max_running`: at most
    this many tasks of the type run at once. `max_running_per_key`: at most
    this many of one `concurrency_key` (within a tenant).
    `max_starts_per_second` with `burst`: a token bucket of `burst` starts
    (by default max(1, max_starts_per_second)) refilled at that rate. They
    are the type's defaults: UpdateTaskType changes them at run time.

    >>> from conveyor_server import task
    >>> @task("resize_image", example={"url": "https://example.com/a.png"}, max_running=4)
    ... def resize_image(ctx, payload):
    ...     "Resizes an image to a thumbnail."
    ...     ctx.report_progress(50, "resizing")
    ...     return {"ok": True}
    """
    return default_registry.task(
        type,
        validate=validate,
        example=example,
        max_running=max_running,
        max_running_per_key=max_running_per_key,
        max_starts_per_second=max_starts_per_second,
        burst=burst,
    )


def import_task_modules(modules: list[str]) -> None:
    """Import user modules whose `@task` decorators fill the default registry.

    The working directory is importable, as with `python -m`, so
    `conveyor-server --tasks mypkg.tasks` works from the project folder.
    """
    if modules and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"cannot import task module {name!r}: {exc}") from exc
