"""The `conveyor` command line's global options: where and how to connect,
and how to print.

They are accepted before the command (`conveyor --json list`) and after it
(`conveyor list --json`), since people type them in both places; given in
both, the one after the command wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import grpc
from click.core import ParameterSource
from rich.console import Console

from conveyor._client import Client
from conveyor._core import DEFAULT_TIMEOUT, call_metadata
from conveyor._tls import tls

DEFAULT_PORT = 50051
DEFAULT_ADDRESS = f"localhost:{DEFAULT_PORT}"
# Output to a file or a pipe is for reading whole: never cut a table at 80 columns.
_UNCUT_WIDTH = 10_000
# gRPC target schemes, which carry their own address syntax.
_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")


def with_default_port(address: str) -> str:
    """`address` with the service's port added when it names none: gRPC
    would dial `localhost` on port 443."""
    if address.startswith(_SCHEMES):
        return address
    if address.startswith("["):  # [::1] or [::1]:50051
        return address if "]:" in address else f"{address}:{DEFAULT_PORT}"
    colons = address.count(":")
    if colons == 1:
        return address
    if colons > 1:  # a bare IPv6 address
        return f"[{address}]:{DEFAULT_PORT}"
    return f"{address}:{DEFAULT_PORT}"


def console(stderr: bool = False) -> Console:
    """A rich console: as wide as the terminal, or uncut when not a terminal."""
    found = Console(stderr=stderr)
    if not found.is_terminal:
        found.width = _UNCUT_WIDTH
    return found


@dataclass(slots=True)
class Settings:
    """The global options as given; checked when the first call needs them."""

    address: str = DEFAULT_ADDRESS
    timeout: float = DEFAULT_TIMEOUT
    as_json: bool = False
    use_tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    token: str | None = None
    _client: Client | None = None

    @property
    def stdout(self) -> Console:
        return console()

    @property
    def stderr(self) -> Console:
        return console(stderr=True)

    def client(self) -> Client:
        if self._client is None:
            ctx = click.get_current_context()
            self._client = ctx.with_resource(
                Client(
                    with_default_port(self.address),
                    timeout=self.timeout,
                    credentials=self._credentials(),
                    token=self._token(),
                )
            )
        return self._client

    def _credentials(self) -> grpc.ChannelCredentials | None:
        if (self.cert is None) != (self.key is None):
            raise click.UsageError("give --cert and --key together")
        if self.use_tls or self.ca or self.cert:
            return tls(self.ca, cert=self.cert, key=self.key)
        return None

    def _token(self) -> str | None:
        token = self.token
        if token is None or not token.strip():
            return None
        try:
            call_metadata((), token)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--token") from None
        return token


def current_settings() -> Settings:
    """The settings of the command being run."""
    settings = click.get_current_context().find_object(Settings)
    if settings is None:  # only when a command is invoked without the group
        raise RuntimeError("conveyor commands run under the `cli` group")
    return settings


_pem_file = click.Path(exists=True, dir_okay=False, readable=True)

# (flags ending with the Settings field, click keyword arguments).
_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--address", "address"),
        {
            "envvar": "CONVEYOR_ADDRESS",
            "default": DEFAULT_ADDRESS,
            "show_default": True,
            "help": f"host:port of the Conveyor service; port {DEFAULT_PORT} when left out "
            "(env CONVEYOR_ADDRESS).",
        },
    ),
    (
        ("--timeout", "timeout"),
        {
            "type": click.FloatRange(min=0, min_open=True),
            "default": DEFAULT_TIMEOUT,
            "show_default": True,
            "help": "Deadline of each call, in seconds.",
        },
    ),
    (
        ("--json", "as_json"),
        {
            "is_flag": True,
            "help": "Print tasks as JSON (proto JSON mapping, field names as grpcurl prints them).",
        },
    ),
    (
        ("--tls", "use_tls"),
        {
            "is_flag": True,
            "envvar": "CONVEYOR_TLS",
            "help": "Connect with TLS, trusting the system's roots (env CONVEYOR_TLS). "
            "--ca, --cert and --key imply it.",
        },
    ),
    (
        ("--ca", "ca"),
        {
            "type": _pem_file,
            "envvar": "CONVEYOR_CA",
            "help": "PEM file of the CA that signed the server's certificate (env CONVEYOR_CA).",
        },
    ),
    (
        ("--cert", "cert"),
        {
            "type": _pem_file,
            "envvar": "CONVEYOR_CERT",
            "help": "PEM file of a client certificate, for mutual TLS (env CONVEYOR_CERT).",
        },
    ),
    (
        ("--key", "key"),
        {
            "type": _pem_file,
            "envvar": "CONVEYOR_KEY",
            "help": "PEM file of the client certificate's key (env CONVEYOR_KEY).",
        },
    ),
    (
        ("--token", "token"),
        {
            "envvar": "CONVEYOR_TOKEN",
            "help": "Bearer token sent with every call (env CONVEYOR_TOKEN, which keeps it "
            "out of the process list).",
        },
    ),
]

_F = TypeVar("_F", bound=Callable[..., Any])
# The environment and the defaults fill the group's options; after the
# command they would override what was typed before it.
_BEFORE_THE_COMMAND_ONLY = ("envvar", "default", "show_default")


def _after_the_command(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """A global option given after the command: it overrides the group's value."""
    typed = param.name and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
    settings = ctx.find_object(Settings)
    if typed and settings is not None:
        setattr(settings, str(param.name), value)


def group_options(function: _F) -> _F:
    """The global options on the `conveyor` group, with their defaults and
    environment variables; the group's callback receives them."""
    for flags, kwargs in reversed(_OPTIONS):
        function = click.option(*flags, **kwargs)(function)
    return function


def command_options(function: _F) -> _F:
    """The same options on a command, where only what is typed counts."""
    for flags, kwargs in reversed(_OPTIONS):
        typed_only = {k: v for k, v in kwargs.items() if k not in _BEFORE_THE_COMMAND_ONLY}
        option = click.option(*flags, expose_value=False, callback=_after_the_command, **typed_only)
        function = option(function)
    return function
