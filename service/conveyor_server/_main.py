"""`conveyor-server`: run the service from the command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import fields
from typing import Any

from conveyor_server._config import ServerConfig, default_of, env_name, field_docs, parse_value
from conveyor_server._logging import configure_logging
from conveyor_server._server import ConveyorServer
from conveyor_server._worker import ConveyorWorker

logger = logging.getLogger("conveyor_server")


SERVER_DESCRIPTION = (
    "Run the Conveyor task service. `conveyor-server worker [flags]` runs a worker-only "
    "process instead: it runs tasks from a shared store (redis://) and serves no API. "
    "Every flag also reads an environment variable (shown in brackets); a flag wins."
)
WORKER_DESCRIPTION = (
    "Run a Conveyor worker: claim tasks from a shared store (redis://), run them, renew "
    "their leases, and re-queue the tasks of workers that died. Serves no API; --host and "
    "--port are not used. Every flag also reads an environment variable (shown in "
    "brackets); a flag wins."
)


def build_parser(worker: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor-server worker" if worker else "conveyor-server",
        description=WORKER_DESCRIPTION if worker else SERVER_DESCRIPTION,
        # No prefixes: `--auth-tokens SECRET` must not pass for --auth-tokens-file.
        allow_abbrev=False,
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


async def serve(server: ConveyorServer | ConveyorWorker) -> None:
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    logger.info("signal received")
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    worker = bool(args) and args[0] == "worker"
    config = config_from_args(args[1:] if worker else args, worker)
    configure_logging(config.log_level, config.log_format)
    try:
        server = ConveyorWorker(config) if worker else ConveyorServer(config)
    except (ImportError, ValueError) as exc:
        print(f"conveyor-server: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if config.uvloop:
        try:
            import uvloop
        except ImportError:
            logger.info("uvloop is not installed; using the default event loop")
        else:
            uvloop.run(serve(server))
            return
    asyncio.run(serve(server))


if __name__ == "__main__":
    main()
