"""The baseline for bench/core.py: a bare grpc.aio server that echoes request bytes.

Run by core.py, not by hand:  python bench/_core_echo_server.py PORT

It uses Conveyor's own gRPC server options and event loop (from
`conveyor_server.ServerConfig` and `conveyor_server.grpc_server_options`), so the
only difference from Conveyor is the work done per call. Prints one JSON line
describing the settings once it is listening.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import grpc

ECHO_METHOD = "/bench.Echo/Echo"


def conveyor_settings() -> tuple[list[tuple[str, Any]], bool, str]:
    """(server options, use uvloop, where they came from)."""
    try:
        from conveyor_server import ServerConfig, grpc_server_options
    except ImportError as exc:
        return [], False, f"gRPC defaults (conveyor_server settings unavailable: {exc})"
    config = ServerConfig()
    return list(grpc_server_options(config)), bool(getattr(config, "uvloop", False)), "conveyor"


def identity(data: bytes) -> bytes:
    return data


async def echo(request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def serve(port: int, options: list[tuple[str, Any]], source: str, uvloop_on: bool) -> None:
    server = grpc.aio.server(options=options)
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                echo, request_deserializer=identity, response_serializer=identity
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    # grpc's threads keep the default SIGTERM action from ending the process.
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(
        json.dumps({"options": options, "source": source, "uvloop": uvloop_on}, default=str),
        flush=True,
    )
    await stop.wait()
    await server.stop(None)


def main() -> None:
    port = int(sys.argv[1])
    options, uvloop_on, source = conveyor_settings()
    coroutine = serve(port, options, source, uvloop_on)
    if uvloop_on:
        import uvloop

        uvloop.run(coroutine)
    else:
        asyncio.run(coroutine)


if __name__ == "__main__":
    main()
