"""`conveyor-server`: run the service from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from dataclasses import fields
from importlib import metadata
from typing import TYPE_CHECKING, Any

# Only modules that need no server extra, so that a missing one is reported
# in one line (see `main`) instead of a traceback.
from conveyor_server._config import ServerConfig, default_of, env_name, field_docs, parse_value

if TYPE_CHECKING:
    from conveyor_server._server import ConveyorServer
    from conveyor_server._worker import ConveyorWorker

logger = logging.getLogger("conveyor_server")

# What `pip install '.[server]'` adds to the SDK's dependencies, by import name.
_SERVER_EXTRA_MODULES = frozenset(
    {"aiohttp", "grpc_health", "grpc_reflection", "prometheus_client", "redis", "hiredis", "PIL"}
)
MISSING_SERVER_EXTRA = (
    "conveyor-server: error: the server needs the server extra: pip install 'conveyor[server]'"
)


def package_version() -> str:
    try:
        return metadata.version("conveyor")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


SERVER_DESCRIPTION = (
    "Run the Conveyor task service. `conveyor-server worker [flags]` runs a worker-only "
    "process instead: it runs tasks from a shared store (redis://) and serves no API. "
    "Every flag also reads an environment variable (shown in brackets); a flag wins."
)
WORKER_DESCRIPTION = (
    "Run a Conveyor worker: claim tasks from a shared store (redis://), run them, renew "
    "their leases, and re-queue the tasks of workers that died. Serves no API; --host, "
    "--port and the --http-* flags are not used. Every flag also reads an environment variable (shown in "
    "brackets); a flag wins."
)


def build_parser(worker: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor-server worker" if worker else "conveyor-server",
        description=WORKER_DESCRIPTION if worker else SERVER_DESCRIPTION,
        # No prefixes: `--auth-tokens SECRET` must not pass for --auth-tokens-file.
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version", action="version", version=f"conveyor-server {package_version()}"
    )
    docs = field_docs()
    env_only = []
    for f in fields(ServerConfig):
        if f.metadata.get("env_only"):
            env_only.append(f"{env_name(f.name)}: {docs.get(f.name, '')}")
            continue
        default = default_of(f.name)
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{docs.get(f.name, '')} [{env_name(f.name)}]"
        if isinstance(default, bool):
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text + f" (default: {default})",
            )
        elif isinstance(default, tuple):
            parser.add_argument(
                flag,
                dest=f.name,
                action="append",
                default=None,
                metavar="MODULE",
                help=help_text + " (repeatable)",
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                default=None,
                metavar=type(default).__name__.upper(),
                help=help_text + f" (default: {default if default != '' else 'none'})",
            )
    if env_only:
        parser.epilog = "Set in the environment only: " + " ".join(env_only)
    return parser


def config_from_args(argv: list[str] | None = None, worker: bool = False) -> ServerConfig:
    parser = build_parser(worker)
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    for f in fields(ServerConfig):
        if f.metadata.get("env_only"):
            continue
        value = getattr(args, f.name)
        if value is None:
            continue
        default = default_of(f.name)
        if isinstance(default, tuple):
            overrides[f.name] = tuple(
                part.strip() for item in value for part in item.split(",") if part.strip()
            )
        elif isinstance(default, bool):
            overrides[f.name] = value
        else:
            try:
                overrides[f.name] = parse_value(f.name, value, default)
            except ValueError:
                parser.error(
                    f"--{f.name.replace('_', '-')}: {value!r} is not a valid "
                    f"{type(default).__name__}"
                )
    try:
        return ServerConfig.from_env(**overrides)
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: error() exits


class StartupError(Exception):
    """The server could not start; the message says what to do."""


async def serve(server: ConveyorServer | ConveyorWorker) -> int:
    """Run until a signal; returns the exit status.

    The first SIGTERM or SIGINT stops gracefully. A second one (Ctrl-C
    again) ends the grace at once: running tasks are handed back to the
    queue, as the graceful stop does when the grace runs out.
    """
    try:
        await server.start()
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await server.engine.close()
        message = startup_failure(exc, server.config)
        if message is None:
            raise
        raise StartupError(message) from exc
    stopping = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            stopping.set()
            return
        logger.warning("second signal: handing running tasks back to the queue now")
        server.engine.end_grace()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await stopping.wait()
    logger.info(
        "%s received: stopping within %gs; send it again to stop at once",
        signal.Signals(received[0]).name,
        server.config.shutdown_grace_seconds,
    )
    await server.stop()
    return 0 if len(received) == 1 else 128 + received[-1]


def startup_failure(exc: BaseException, config: ServerConfig) -> str | None:
    """One line saying what to do about a failed start, for the failures
    people meet (ports in use, a store out of reach); None for the others."""
    from conveyor_server.stores import StoreUnavailable

    if isinstance(exc, StoreUnavailable):
        if config.store.startswith("redis"):
            hint = "start Redis, or point --store (CONVEYOR_STORE) at one that runs"
        else:
            hint = "give --store (CONVEYOR_STORE) a file that no other server holds"
        return f"{str(exc).rstrip('.')}; {hint}"
    if isinstance(exc, OSError):
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    worker = bool(args) and args[0] == "worker"
    config = config_from_args(args[1:] if worker else args, worker)
    try:
        from conveyor_server._logging import configure_logging
        from conveyor_server._server import ConveyorServer
        from conveyor_server._worker import ConveyorWorker
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in _SERVER_EXTRA_MODULES:
            raise
        print(MISSING_SERVER_EXTRA, file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(config.log_level, config.log_format)
    try:
        server = ConveyorWorker(config) if worker else ConveyorServer(config)
    except (ImportError, ValueError) as exc:
        print(f"conveyor-server: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as exc:
        message = startup_failure(exc, config)
        if message is None:
            raise
        print(f"conveyor-server: error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        status = run(serve(server), config.uvloop)
    except StartupError as exc:
        print(f"conveyor-server: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if status != 0:
        # Stopped at once: handlers that ignore their stop request must not
        # hold the process (Python joins their threads at exit). Their tasks
        # are back in the queue already.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(status)


def run(main: Coroutine[Any, Any, int], use_uvloop: bool) -> int:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            logger.info("uvloop is not installed; using the default event loop")
        else:
            return int(uvloop.run(main))
    return asyncio.run(main)


if __name__ == "__main__":
    main()
